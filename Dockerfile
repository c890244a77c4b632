# pycache-server, multi-stage: build with the Rust toolchain, run on a slim Debian.
#   docker build -t pycache-server .
#   docker run -p 8437:8437 -v pycache-data:/data pycache-server
# The build stage runs exactly `cargo build --release --locked -p pycache-server`, the same
# command that works natively from the repository root.

FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace (every member of Cargo.toml, or cargo cannot load it: .ci/run checks this
# list) and the migrations, which the server embeds at compile time.
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY pyc pyc
COPY server server
COPY client client
COPY testkit testkit
COPY migrations migrations
RUN cargo build --release --locked -p pycache-server \
    && cp target/release/pycache-server /usr/local/bin/pycache-server

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /data --create-home pycache
COPY --from=build /usr/local/bin/pycache-server /usr/local/bin/pycache-server
USER pycache
# SQLite in /data by default; set PYCACHE_DATABASE_URL=postgres://… to use PostgreSQL. Uploads
# are spooled on the same volume while they arrive.
ENV PYCACHE_DATA_DIR=/data \
    PYCACHE_SPOOL_DIR=/data/spool \
    PYCACHE_LISTEN=0.0.0.0:8437
VOLUME /data
EXPOSE 8437
ENTRYPOINT ["pycache-server"]
CMD ["serve"]
