#!/usr/bin/env bash
# Builds GlobalSign's EST server (RFC 7030), which the EST connector tests run against.
#
#   bash deploy/local/servers/estserver.sh
#
# Installs "estserver" into ${CERTPROV_TEST_BIN_DIR:-$HOME/.cache/certprov-test-bin} at a pinned
# version and writes estserver.version beside it; a second run with the same version does
# nothing. `go install …@v1.0.6` is refused by the module proxy's version listing, so the server
# is built from a scratch module in a temporary directory: the repository's go.mod is never
# touched. Only the Go toolchain and the Go module proxy are used.
set -euo pipefail

module=github.com/globalsign/est
version=v1.0.6
name=estserver

bin_dir=${CERTPROV_TEST_BIN_DIR:-$HOME/.cache/certprov-test-bin}
stamp="$bin_dir/$name.version"
want="$module@$version"

log() { echo "estserver.sh: $*" >&2; }

if [ -x "$bin_dir/$name" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
	log "$name $version already installed in $bin_dir"
	exit 0
fi

mkdir -p "$bin_dir"
work=$(mktemp -d "${TMPDIR:-/tmp}/estserver-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

log "building $module/cmd/$name@$version in $work"
(
	cd "$work"
	# GOFLAGS from the caller (e.g. -mod=vendor) must not leak into the scratch module.
	export GOFLAGS=-buildvcs=false GOWORK=off CGO_ENABLED=0
	go mod init certprov.test/estserver-build 2>/dev/null || { echo "estserver.sh: go mod init failed in $work" >&2; exit 1; }
	go get "$module/cmd/$name@$version" >&2
	# Build to a temporary name and rename, so that an interrupted build never leaves a
	# half-written binary under the final name.
	go build -trimpath -o "$bin_dir/.$name.tmp" "$module/cmd/$name"
)
mv -f "$bin_dir/.$name.tmp" "$bin_dir/$name"
echo "$want" >"$stamp"
log "installed $bin_dir/$name ($version)"
