#!/usr/bin/env bash
# Installs what cropq's tests, lint and dev stack need, into .tools/bin (and
# redis-server from Debian's packages when it is missing). Idempotent: a tool
# already present is left alone. Versions are pinned here.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/.tools/bin"
mkdir -p "$bin"
export GOBIN="$bin" GOFLAGS="${GOFLAGS:-} -buildvcs=false"

MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"
STATICCHECK_VERSION="v0.8.2"
GOVULNCHECK_VERSION="v1.9.0"

have() { command -v "$1" >/dev/null 2>&1 || [ -x "$bin/$1" ]; }

if ! have redis-server; then
  echo "install-tools: redis-server (Debian package redis-server)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  # The package starts a service on 6379; the tests start their own servers.
fi

if [ ! -x "$bin/minio" ] && ! command -v minio >/dev/null 2>&1; then
  echo "install-tools: minio $MINIO_VERSION (go install; takes a few minutes)"
  go install "github.com/minio/minio@$MINIO_VERSION"
fi

if [ ! -x "$bin/staticcheck" ]; then
  echo "install-tools: staticcheck $STATICCHECK_VERSION"
  go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi

if [ ! -x "$bin/govulncheck" ]; then
  echo "install-tools: govulncheck $GOVULNCHECK_VERSION"
  go install "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION"
fi

echo "install-tools: ok ($(ls "$bin" | tr '\n' ' '))"
