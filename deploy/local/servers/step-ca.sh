#!/usr/bin/env bash
# Builds smallstep's step-ca server and step CLI at pinned versions for the stepca connector's
# integration tests (internal/ca/stepca), into the shared test-server directory:
#
#   bash deploy/local/servers/step-ca.sh
#
# Idempotent: when both binaries and the version stamp for these pins are present it does nothing,
# so CI and developers can run it every time. A cold build takes 2–6 minutes.
#
# Both come from the Go module proxy with the Go toolchain (nothing else is downloaded), built
# with CGO_ENABLED=0 so that step-ca does not need libpcsclite. The build runs in a scratch
# directory outside the repository, so the repository's go.mod is never touched.
#
# Environment: CERTPROV_TEST_BIN_DIR (install directory, default ~/.cache/certprov-test-bin).
set -euo pipefail

step_ca_version=v0.30.2 # github.com/smallstep/certificates
step_cli_version=v0.29.0 # github.com/smallstep/cli

dir=${CERTPROV_TEST_BIN_DIR:-$HOME/.cache/certprov-test-bin}
stamp_file=$dir/step-ca.version
stamp="step-ca $step_ca_version step $step_cli_version"

log() { echo "step-ca.sh: $*" >&2; }

installed() {
	[ -x "$dir/step-ca" ] && [ -x "$dir/step" ] && [ -f "$stamp_file" ] &&
		[ "$(cat "$stamp_file")" = "$stamp" ]
}

if installed; then
	log "$stamp already in $dir"
	exit 0
fi

command -v go >/dev/null || { log "the Go toolchain is required (go not on PATH)"; exit 1; }
mkdir -p "$dir"

# Two runs at once (parallel CI jobs, two engineers) would build twice and race on the files.
exec 9>"$dir/.step-ca.lock"
if command -v flock >/dev/null; then
	flock 9
	if installed; then
		log "$stamp installed by a concurrent run"
		exit 0
	fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/certprov-step-ca.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
# A scratch module so that no go.mod or go.work of the caller's tree is consulted.
go mod init certprov.local/stepca-build >/dev/null 2>&1

build() { # build PACKAGE VERSION
	log "building $1@$2 (CGO_ENABLED=0)"
	CGO_ENABLED=0 GOWORK=off GOTOOLCHAIN=local GOBIN="$work/bin" GOFLAGS=-buildvcs=false go install "$1@$2"
}
build github.com/smallstep/certificates/cmd/step-ca "$step_ca_version"
build github.com/smallstep/cli/cmd/step "$step_cli_version"

# Move into place only complete binaries, then write the stamp last: an interrupted run leaves no
# stamp and the next one builds again.
rm -f "$stamp_file"
for b in step-ca step; do
	install -m 0755 "$work/bin/$b" "$dir/.$b.new"
	mv -f "$dir/.$b.new" "$dir/$b"
done
echo "$stamp" >"$stamp_file"
log "installed $stamp into $dir"
