# syntax=docker/dockerfile:1
# Static build of both binaries (the same as `make build`), shipped on a distroless base that
# runs as non-root. Build: docker build -t certprov-adapter .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/ ./cmd/certprov-adapter ./cmd/certprov-emulator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/certprov-adapter /out/certprov-emulator /usr/local/bin/
USER nonroot:nonroot
ENV CERTPROV_CONFIG=/etc/certprov/adapter.yaml
ENTRYPOINT ["/usr/local/bin/certprov-adapter"]
CMD ["run"]
