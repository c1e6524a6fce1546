# syntax=docker/dockerfile:1
# Image of nuclia-token-operator: build with cargo, run on distroless (glibc, no shell), non-root.
# For builders that can pull base images (BuildKit):
#   docker build -t nuclia-token-operator:0.1.0 .
# The tag is the chart's default (image.repository:appVersion). Without a daemon or a registry,
# images/build.sh builds the same image FROM scratch with buildah (README, "The image").
#
# The crate is edition 2024 with rust-version 1.89: the toolchain image must be at least that
# (edition 2024 needs Rust 1.85). `1` is the newest stable 1.x on Debian 12, whose glibc (2.36)
# is the runtime image's; pin one with --build-arg RUST_VERSION=1.95.
ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target dir between builds (BuildKit). The binary is
# stripped (13.5 MB -> 10.7 MB).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin nuclia-token-operator \
 && install -D -s -m 0755 target/release/nuclia-token-operator /out/nuclia-token-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="nuclia-token-operator" \
      org.opencontainers.image.description="Kubernetes operator that mints, rotates and revokes Nuclia credentials as Secrets" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/nuclia-token-operator /usr/local/bin/nuclia-token-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/nuclia-token-operator"]
