# The production image: the cropq binary, for every subcommand (worker, api,
# enqueue, status, wait, env). The local stand-ins (the API emulator, `dev`)
# are not in it: they are cmd/cropq-dev, imaged by Dockerfile.dev.
# Build: docker build -t cropq:1.0.0 .

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static, reproducible, no cgo: runs on distroless/static.
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/cropq ./cmd/cropq

# distroless/static: CA certificates and tzdata, no shell, runs as nonroot (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cropq /usr/local/bin/cropq
USER 65532:65532
# Worker health/metrics, API.
EXPOSE 9090 8080
ENTRYPOINT ["/usr/local/bin/cropq"]
CMD ["worker"]
