#!/usr/bin/env bash
# Installs micromdm's SCEP server (scepserver), the real CA the SCEP connector's tests run against.
#
#   bash deploy/local/servers/scepserver.sh
#
# It builds the pinned version with the Go toolchain from the Go module proxy, in a scratch
# directory (the repository's go.mod is never touched), into
# ${CERTPROV_TEST_BIN_DIR:-$HOME/.cache/certprov-test-bin}/scepserver, and writes a version stamp
# beside it. A second run finds the stamp and does nothing, so CI and developers can run it
# every time. A cold build takes about a minute.
set -euo pipefail

module=github.com/micromdm/scep/v2
version=v2.3.0
pkg=$module/cmd/scepserver
name=scepserver

dir=${CERTPROV_TEST_BIN_DIR:-$HOME/.cache/certprov-test-bin}
bin=$dir/$name
stamp=$dir/$name.version
want="$pkg@$version"

log() { echo "$name.sh: $*" >&2; }

if [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
	log "$want already installed in $bin"
	exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
mkdir -p "$dir"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/$name-build.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

log "building $want (about a minute when the module cache is cold)"
# go install pkg@version builds in module mode from the module's own go.mod, whatever directory
# it runs in; running it from the scratch directory keeps any surrounding module out of the way.
# GOFLAGS is cleared so that a caller's -mod setting cannot interfere; cgo is not needed.
(
	cd "$scratch"
	GOFLAGS= GOBIN="$scratch/bin" CGO_ENABLED=0 GOTOOLCHAIN=local go install "$want"
)
# Move into place in one step, so that a concurrent test never sees half a binary.
mv -f "$scratch/bin/$name" "$bin.tmp.$$"
mv -f "$bin.tmp.$$" "$bin"
echo "$want" >"$stamp"
log "installed $bin"
