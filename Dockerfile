# syntax=docker/dockerfile:1
# Image of nuclia-token-operator: build with cargo, run on distroless (glibc, no shell), non-root.
#   docker build -t nuclia-token-operator:0.1.0 .

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin nuclia-token-operator \
 && install -D -m 0755 target/release/nuclia-token-operator /out/nuclia-token-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="nuclia-token-operator" \
      org.opencontainers.image.description="Kubernetes operator that mints, rotates and revokes Nuclia credentials as Secrets" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/nuclia-token-operator /usr/local/bin/nuclia-token-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/nuclia-token-operator"]
