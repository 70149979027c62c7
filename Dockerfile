# syntax=docker/dockerfile:1
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/tallyfy-deleter ./cmd/tallyfy-deleter

# distroless/static: CA certificates and tzdata, no shell, runs as nonroot.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tallyfy-deleter /usr/local/bin/tallyfy-deleter
USER nonroot:nonroot
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/tallyfy-deleter", "run"]
