# Image for `fly deploy` (fly.toml [build]). Builds the release binary, then runs it alone on a
# slim Debian; the data directory lives on the volume mounted at /data.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin seawall

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/seawall /usr/local/bin/seawall
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/seawall"]
