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

# Debian packages: redis-server for the tests' own servers (the package also
# starts one on 6379, which the tests do not use), chromium for the browser
# test of the operators' UI.
apt_pkgs=()
have redis-server || apt_pkgs+=(redis-server)
have redis-cli || apt_pkgs+=(redis-tools) # the Redis Cluster tests join nodes with it
have chromium || apt_pkgs+=(chromium)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  echo "install-tools: ${apt_pkgs[*]} (Debian packages)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
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
