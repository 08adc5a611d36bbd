# syntax=docker/dockerfile:1.7
# neurodata-worker and trainer in one image: a run pod executes `neurodata-worker pod-run`, which
# execs `trainer` (found on PATH, or NEURODATA_TRAINER), so both binaries ship together and at
# the same commit.
# Build from the repository root: docker build -f deploy/images/worker.Dockerfile .

# Rust as the workspace's rust-version (1.95) on bookworm, the Debian release the distroless
# runtime below is built from, so the glibc the binaries link against is the one they run on.
FROM rust:1.95.0-bookworm AS build
# The Debian packages scripts/install-deps.sh installs for the build: clang + libclang-dev
# (librocksdb-sys's bindgen), libssl-dev + pkg-config (the openssl crate, built vendored).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang libclang-dev libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The target directory is a cache mount, so the binaries are copied out of it in the same step.
RUN --mount=type=cache,id=neurodata-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=neurodata-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=neurodata-target,sharing=locked,target=/src/target \
    cargo build --release --locked \
      -p neurodata-worker --bin neurodata-worker \
      -p neurodata-trainer --bin trainer \
 && install -D -m 0755 target/release/neurodata-worker /out/neurodata-worker \
 && install -D -m 0755 target/release/trainer /out/trainer

# `ldd neurodata-worker`: libstdc++.so.6, libgcc_s, libm, libc; `ldd trainer`: libgcc_s, libm,
# libc. distroless/cc carries exactly glibc, libgcc and libstdc++, and no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.source="https://example.invalid/neurodata" \
      org.opencontainers.image.title="neurodata-worker" \
      org.opencontainers.image.description="NeuroData's training worker and verifier, with the deterministic trainer" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/neurodata-worker /usr/local/bin/neurodata-worker
COPY --from=build /out/trainer /usr/local/bin/trainer
ENV NEURODATA_TRAINER=/usr/local/bin/trainer
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/neurodata-worker"]
