# blast in a container: `docker build -t blast .`, then `docker run --rm blast URL [OPTIONS]`.
# blast needs no io_uring and no locked memory, so Docker's default seccomp profile is enough.

# Build stage: Debian 12 (bookworm), the same C library as the runtime image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/blast /blast

# Runtime: glibc and libgcc only, no shell, running as a non-root user (uid 65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /blast /usr/local/bin/blast
USER nonroot
ENTRYPOINT ["/usr/local/bin/blast"]
CMD ["--help"]
