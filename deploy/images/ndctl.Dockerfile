# syntax=docker/dockerfile:1.7
# ndctl: the operator and member CLI, for running it from a cluster (Jobs, debugging pods).
# Build from the repository root: docker build -f deploy/images/ndctl.Dockerfile .

# Rust as the workspace's rust-version (1.95) on bookworm, the Debian release the distroless
# runtime below is built from, so the glibc the binary links against is the one it runs on.
FROM rust:1.95.0-bookworm AS build
# The Debian packages scripts/install-deps.sh installs for the build: clang + libclang-dev
# (librocksdb-sys's bindgen), libssl-dev + pkg-config (the openssl crate, built vendored).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang libclang-dev libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The target directory is a cache mount, so the binary is copied out of it in the same step.
RUN --mount=type=cache,id=neurodata-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=neurodata-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=neurodata-target,sharing=locked,target=/src/target \
    cargo build --release --locked -p ndctl --bin ndctl \
 && install -D -m 0755 target/release/ndctl /out/ndctl

# `ldd ndctl`: libstdc++.so.6, libgcc_s, libm, libc. distroless/cc carries exactly glibc, libgcc
# and libstdc++, and no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.source="https://example.invalid/neurodata" \
      org.opencontainers.image.title="ndctl" \
      org.opencontainers.image.description="NeuroData's operator and member CLI" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ndctl /usr/local/bin/ndctl
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/ndctl"]
