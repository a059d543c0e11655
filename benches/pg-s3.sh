#!/usr/bin/env bash
# The server benchmark (benches/serve.rs) with the queue in PostgreSQL and logs and artifacts in
# S3: starts a PostgreSQL cluster with its durable defaults (fsync on, unlike the tests' cluster)
# and moto's S3 server, both on 127.0.0.1, runs `cargo bench --bench serve` against them, and
# stops both whatever happens. Arguments go to the bench (`rss` runs the memory part only).
#   bash benches/pg-s3.sh            (or `make bench-server-pg-s3`)
#
# Object storage, `PISTE_BENCH_S3_SERVER`:
#   gunicorn (the default): moto's S3 application under gunicorn (PyPI, scripts/deps.sh), one
#     worker process (moto's buckets live in its memory) with 4 threads, connections kept alive;
#   moto_server: moto's own server, werkzeug's development server, which closes the connection
#     after every response (a TCP connection and a thread per request) and, through moto's
#     dispatcher of all its services, lists moto's package folder on every request to find the
#     service: it cost twice the CPU per PUT (2.15 vs 1.25 ms, `py-spy`), none of it piste's;
#   none: no object storage (logs in files), to compare with PostgreSQL alone.
set -euo pipefail
cd "$(dirname "$0")/.."

export PISTE_TEST_PG_DIR=${PISTE_BENCH_PG_DIR:-/tmp/piste-bench-pg}
export PISTE_TEST_PG_PORT=${PISTE_BENCH_PG_PORT:-55433}
export PISTE_TEST_PG_DURABLE=1 PISTE_TEST_PG_IDLE=600
# Build first: the cluster's watchdog stops it when it has had no client for a while.
cargo bench --bench serve --no-run
pg=server/tests/store/pg-cluster.sh
moto_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_log=$(mktemp)
PISTE_BENCH_S3_COUNTS=$(mktemp)
export PISTE_BENCH_S3_COUNTS
moto_pid=
cleanup() {
	[ -n "$moto_pid" ] && kill -- "-$moto_pid" 2>/dev/null || true
	sh "$pg" stop >/dev/null 2>&1 || true
	rm -f "$moto_log" "$PISTE_BENCH_S3_COUNTS"
}
trap cleanup EXIT

url=$(sh "$pg" start)
export PISTE_BENCH_DATABASE=$url
PISTE_BENCH_PG_PID=$(head -n 1 "$PISTE_TEST_PG_DIR/data/postmaster.pid")
export PISTE_BENCH_PG_PID
s3_server=${PISTE_BENCH_S3_SERVER:-gunicorn}
if [ "$s3_server" = none ]; then
	echo "PostgreSQL (durable defaults) at $url, no object storage"
	cargo bench --bench serve -- "$@"
	exit
fi
command -v moto_server >/dev/null || { echo "moto_server is missing: run scripts/deps.sh" >&2; exit 1; }
case $s3_server in
gunicorn)
	command -v gunicorn >/dev/null || { echo "gunicorn is missing: run scripts/deps.sh" >&2; exit 1; }
	setsid gunicorn --config benches/pg-s3-gunicorn.py --bind "127.0.0.1:$moto_port" \
		'moto.moto_server.werkzeug_app:create_backend_app("s3")' >/dev/null 2>"$moto_log" &
	;;
moto_server) setsid moto_server -H 127.0.0.1 -p "$moto_port" >/dev/null 2>"$moto_log" & ;;
*) echo "PISTE_BENCH_S3_SERVER=$s3_server: use gunicorn, moto_server or none" >&2; exit 1 ;;
esac
moto_pid=$!
for _ in $(seq 1 600); do
	curl -sf "http://127.0.0.1:$moto_port/" >/dev/null && break
	kill -0 "$moto_pid" 2>/dev/null || { cat "$moto_log" >&2; exit 1; }
	sleep 0.1
done
curl -sf -X PUT "http://127.0.0.1:$moto_port/piste-bench" >/dev/null
# The process serving S3, whose CPU the bench reads: gunicorn's one worker, or moto_server.
s3_pid=$moto_pid
[ "$s3_server" = gunicorn ] && s3_pid=$(pgrep -P "$moto_pid" | head -1)

export PISTE_BENCH_S3_PID=$s3_pid
export PISTE_BENCH_STORAGE=s3://piste-bench/serve
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
export AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
echo "PostgreSQL (durable defaults) at $url, S3 (moto under $s3_server) at $AWS_ENDPOINT_URL"
cargo bench --bench serve -- "$@"
# What the whole run asked of object storage: gunicorn's worker writes its counts as it stops;
# moto_server logs one line per request.
if [ "$s3_server" = gunicorn ]; then
	kill -TERM "$moto_pid" && wait "$moto_pid" || true
	moto_pid=
	counts=$(cat "$PISTE_BENCH_S3_COUNTS")
else
	counts=$(grep -oE '"(GET|PUT|POST|HEAD|DELETE) ' "$moto_log" | sort | uniq -c | tr -s ' \n"' ' ')
fi
echo "S3 requests over the whole run, by method (the bench's own bucket creation and readiness check included): $counts"
