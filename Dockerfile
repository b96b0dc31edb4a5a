# The demo server (the user guide's example application), in a slim image.
#   docker build -t cache-middleware .
#   docker run -p 8000:8000 cache-middleware

# --- build ---
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so that a change of the project's own code does not rebuild them.
COPY Cargo.toml Cargo.lock ./
# Declared bench targets must exist for cargo to read the manifest, and so must the workspace's
# Python member (a stub: it is not built here).
COPY benches ./benches
COPY python/Cargo.toml ./python/Cargo.toml
RUN mkdir -p src/demo python/src \
    && echo 'fn main() {}' > src/main.rs \
    && echo '' > src/lib.rs \
    && echo '' > python/src/lib.rs \
    && cargo build --release --locked --bin cache-middleware \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin cache-middleware \
    && strip target/release/cache-middleware

# --- run ---
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /src/target/release/cache-middleware /usr/local/bin/cache-middleware
USER app
ENV HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000
# The binary probes itself: no curl in the image.
HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["cache-middleware", "healthcheck"]
CMD ["cache-middleware"]
