#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for the journal tests.
#
#   eval "$(deploy/local/postgres.sh start)"   # prints: export CERTPROV_TEST_POSTGRES_DSN=…
#   go test -race ./internal/journal/...
#   deploy/local/postgres.sh stop              # stops the cluster and deletes its data
#
# start is idempotent: a cluster it already started is reused. It installs Debian's postgresql
# package when no server binaries are found (as root, e.g. in CI). Trust authentication on
# 127.0.0.1 only: never point this at data you care about.
#
# Environment: CERTPROV_PG_DIR (data directory, default /tmp/certprov-postgres),
# CERTPROV_PG_PORT (preferred port, default 55432; the next free one is used if taken).
# Only the export line goes to stdout; progress goes to stderr.
set -euo pipefail

dir=${CERTPROV_PG_DIR:-${TMPDIR:-/tmp}/certprov-postgres}
port=${CERTPROV_PG_PORT:-55432}
db=certprov_test

log() { echo "postgres.sh: $*" >&2; }
die() { log "$*"; exit 1; }

bindir() {
	local d
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	[ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

install_postgres() {
	[ "$(id -u)" -eq 0 ] || die "PostgreSQL is not installed; run as root or: sudo apt-get install -y postgresql"
	log "installing postgresql (apt-get)"
	{
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
	} >&2
}

# as_owner runs a command as the cluster's owner: initdb and postgres refuse to run as root.
as_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		if command -v runuser >/dev/null; then
			runuser -u postgres -- "$@"
		else
			su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
		fi
	else
		"$@"
	fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running() { [ -f "$dir/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; }

print_dsn() {
	echo "export CERTPROV_TEST_POSTGRES_DSN=postgres://postgres@127.0.0.1:$(cat "$dir/certprov-port")/$db?sslmode=disable"
}

start() {
	bin=$(bindir) || true
	if [ -z "$bin" ]; then
		install_postgres
		bin=$(bindir) || die "no PostgreSQL server binaries under /usr/lib/postgresql after installing"
	fi
	if [ "$(id -u)" -eq 0 ]; then
		id postgres >/dev/null 2>&1 || die "no postgres OS user to run the cluster as"
	fi
	if running && [ -f "$dir/certprov-port" ]; then
		log "reusing the cluster in $dir"
		print_dsn
		return
	fi
	if [ ! -f "$dir/PG_VERSION" ]; then
		rm -rf "$dir"
		mkdir -p "$dir"
		chmod 700 "$dir"
		if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
		log "initdb $dir ($bin)"
		as_owner "$bin/initdb" -D "$dir" -U postgres -A trust -E UTF8 --locale=C >"$dir.initdb.log" 2>&1 ||
			{ cat "$dir.initdb.log" >&2; die "initdb failed"; }
		rm -f "$dir.initdb.log"
	fi
	while port_in_use "$port"; do
		port=$((port + 1))
	done
	echo "$port" >"$dir/certprov-port"
	log "starting on 127.0.0.1:$port"
	# The socket directory is the data directory, so no system directory is needed.
	as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
		-o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200" start >&2 ||
		{ cat "$dir/server.log" >&2; die "the server did not start"; }
	if [ -z "$(as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
		as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db"
	fi
	print_dsn
}

stop() {
	bin=$(bindir) || true
	if [ -n "$bin" ] && running; then
		log "stopping the cluster in $dir"
		as_owner "$bin/pg_ctl" -D "$dir" -m fast -w stop >&2
	fi
	rm -rf "$dir"
}

status() {
	bin=$(bindir) || die "PostgreSQL is not installed"
	if running && [ -f "$dir/certprov-port" ]; then
		print_dsn
	else
		log "not running"
		return 1
	fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*)
	echo "usage: $0 start|stop|status" >&2
	exit 2
	;;
esac
