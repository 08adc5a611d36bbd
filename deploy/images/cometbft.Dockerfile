# syntax=docker/dockerfile:1.7
# CometBFT, the version tools/go.mod pins, built the way scripts/build-cometbft.sh builds it.
# Build from the repository root: docker build -f deploy/images/cometbft.Dockerfile .

# The version tools/go.mod requires; the build below fails if the two disagree, and
# deploy/tests/images.rs checks it too, so a bump of go.mod cannot ship a stale label.
ARG COMETBFT_VERSION=v0.38.26

# tools/go.mod says `go 1.22.11`; any later Go builds it (no toolchain line to switch to).
FROM golang:1.24-bookworm AS build
ARG COMETBFT_VERSION
WORKDIR /src/tools
# Only the module that pins CometBFT: its go.mod and go.sum decide every dependency's version.
COPY tools/go.mod tools/go.sum tools/tools.go ./
RUN --mount=type=cache,id=neurodata-gomod,target=/go/pkg/mod \
    test "$(go list -m -f '{{.Version}}' github.com/cometbft/cometbft)" = "$COMETBFT_VERSION" \
 && go mod download github.com/cometbft/cometbft
# As scripts/build-cometbft.sh: no cgo (a static binary), -trimpath (no build paths in it).
RUN --mount=type=cache,id=neurodata-gomod,target=/go/pkg/mod \
    --mount=type=cache,id=neurodata-gobuild,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -o /out/cometbft github.com/cometbft/cometbft/cmd/cometbft

# CGO_ENABLED=0: a static binary that needs no libc, so distroless/static (no shell either).
FROM gcr.io/distroless/static-debian12:nonroot
ARG COMETBFT_VERSION
LABEL org.opencontainers.image.source="https://example.invalid/neurodata" \
      org.opencontainers.image.title="cometbft" \
      org.opencontainers.image.description="CometBFT as pinned by NeuroData's tools/go.mod" \
      org.opencontainers.image.version="${COMETBFT_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/cometbft /usr/local/bin/cometbft
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/cometbft"]
