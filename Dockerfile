# syntax=docker/dockerfile:1
# Production image: the daemon alone, static, on a distroless base, as the non-root user 65532.
#   make image                    (docker build --target adapter with VERSION, COMMIT, DATE)
#   make image-emulator           the emulator, in an image of its own (demos, tests)
# The build stage runs `make build`, the same command line as a local build; deploy/test runs it
# too and checks the binary is static and reports the stamped version.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# .git is not in the build context (.dockerignore): the build identity comes from these.
ARG VERSION=v0.0.0-dev
ARG COMMIT=unknown
ARG DATE=unknown
RUN make build VERSION="${VERSION}" COMMIT="${COMMIT}" DATE="${DATE}"
# The journal directory, owned by the runtime user: distroless has no shell to create it later,
# and a non-root process cannot create it under /var/lib.
RUN mkdir -p -m 0700 /var/lib/certprov

FROM gcr.io/distroless/static-debian12:nonroot AS emulator
ARG VERSION=v0.0.0-dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="certprov-emulator" \
      org.opencontainers.image.description="Emulator of Google's Certificate Provisioning and Verified Access APIs, for demos and tests" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/certprov/certprov-adapter" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /src/bin/certprov-emulator /usr/local/bin/certprov-emulator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/certprov-emulator"]
CMD ["serve"]

# The last stage is the default target: the production image.
FROM gcr.io/distroless/static-debian12:nonroot AS adapter
ARG VERSION=v0.0.0-dev
ARG COMMIT=unknown
ARG DATE=unknown
LABEL org.opencontainers.image.title="certprov-adapter" \
      org.opencontainers.image.description="ChromeOS client-certificate provisioning adapter: Google's Certificate Provisioning API and Verified Access to your CA" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/certprov/certprov-adapter" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${DATE}"
COPY --from=build --chown=65532:65532 /var/lib/certprov /var/lib/certprov
COPY --from=build /src/bin/certprov-adapter /usr/local/bin/certprov-adapter
USER 65532:65532
ENV CERTPROV_CONFIG=/etc/certprov/adapter.yaml \
    CERTPROV_OPS_LISTEN=:9090
# Journal (SQLite) and the local CA's ledger: keep it on a volume, or a restart forgets every
# claimed process.
VOLUME ["/var/lib/certprov"]
# 9090: ops listener (/healthz, /readyz, /metrics, /status); 8443: Verified Access enrollment.
EXPOSE 9090 8443
ENTRYPOINT ["/usr/local/bin/certprov-adapter"]
CMD ["run"]
