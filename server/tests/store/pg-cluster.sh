#!/bin/sh
# A throwaway PostgreSQL cluster for the store tests (server/tests/store/), shared by every
# test process of a run: nextest runs each test in its own process, and starting a cluster per
# test would cost seconds each.
#
#   pg-cluster.sh start   start the cluster unless it runs (initdb the first time); print its URL
#   pg-cluster.sh stop    stop it now
#
# It lives in $PISTE_TEST_PG_DIR (default /tmp/piste-test-pg), listens on 127.0.0.1 port
# $PISTE_TEST_PG_PORT (default 55432) with trust authentication, and is tuned for tests, not
# for keeping data (fsync off; PISTE_TEST_PG_DURABLE=1 keeps PostgreSQL's durable defaults, for
# benchmarks). Run as root, the server runs as the `postgres` user (initdb
# refuses root). A watchdog started with the server stops it once it has had no client and no
# `start` for $PISTE_TEST_PG_IDLE seconds (default 120), so a test run leaves nothing running
# for long; `stop` does it at once. Every step holds a lock on $DIR/lock: concurrent test
# processes start one cluster, and the watchdog never stops it under a starting test.
set -eu

DIR=${PISTE_TEST_PG_DIR:-/tmp/piste-test-pg}
PORT=${PISTE_TEST_PG_PORT:-55432}
IDLE=${PISTE_TEST_PG_IDLE:-120}
if [ "${PISTE_TEST_PG_DURABLE:-0}" = 1 ]; then
	FAST=""
else
	FAST="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
fi
URL="postgres://postgres@127.0.0.1:$PORT/postgres"
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bindir" ] || [ ! -x "$bindir/pg_ctl" ] || [ ! -x "$bindir/initdb" ]; then
	echo "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin:" \
		"install Debian's \`postgresql\` package (\`apt-get install -y postgresql\`)," \
		"or point PISTE_TEST_POSTGRES_URL at a server" >&2
	exit 3
fi

if [ "$(id -u)" = 0 ]; then
	as_pg() { runuser -u postgres -- "$@"; }
else
	as_pg() { "$@"; }
fi

running() { as_pg "$bindir/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; }

mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && chown postgres: "$DIR"

case ${1:-start} in
start)
	exec 9>>"$DIR/lock"
	flock 9
	touch "$DIR/last-use"
	if ! running; then
		if [ ! -f "$DIR/data/PG_VERSION" ]; then
			rm -rf "$DIR/data"
			as_pg "$bindir/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
				>"$DIR/initdb.log" 2>&1 9>&- || { cat "$DIR/initdb.log" >&2; exit 1; }
		fi
		# The descriptors closed here (9: the lock; 1 and 2: the caller's pipes) must not be
		# inherited by processes that outlive this script.
		as_pg "$bindir/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
			-o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$DIR -c max_connections=300 $FAST" \
			start </dev/null >"$DIR/pg_ctl.log" 2>&1 9>&- || { cat "$DIR/pg_ctl.log" "$DIR/server.log" >&2; exit 1; }
		(cd / && setsid sh "$SELF" watch </dev/null >/dev/null 2>&1 9>&- &)
	fi
	echo "$URL"
	;;
stop)
	exec 9>>"$DIR/lock"
	flock 9
	if running; then as_pg "$bindir/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null; fi
	;;
watch)
	while sleep 10; do
		running || exit 0
		(
			flock -n 9 || exit 0
			idle=$(($(date +%s) - $(stat -c %Y "$DIR/last-use")))
			[ "$idle" -ge "$IDLE" ] || exit 0
			clients=$("$bindir/psql" "$URL" -Atc \
				"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()") || exit 0
			[ "$clients" = 0 ] || exit 0
			as_pg "$bindir/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null
		) 9>>"$DIR/lock" || true
	done
	;;
*)
	echo "usage: $0 start|stop" >&2
	exit 2
	;;
esac
