#!/usr/bin/env bash
# The server benchmark (benches/serve.rs) with the queue in PostgreSQL and logs and artifacts in
# S3: starts a PostgreSQL cluster with its durable defaults (fsync on, unlike the tests' cluster)
# and moto's S3 server, both on 127.0.0.1, runs `cargo bench --bench serve` against them, and
# stops both whatever happens. Arguments go to the bench (`rss` runs the memory part only).
#   bash benches/pg-s3.sh            (or `make bench-server-pg-s3`)
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
moto_pid=
cleanup() {
	[ -n "$moto_pid" ] && kill -- "-$moto_pid" 2>/dev/null || true
	sh "$pg" stop >/dev/null 2>&1 || true
	rm -f "$moto_log"
}
trap cleanup EXIT

url=$(sh "$pg" start)
command -v moto_server >/dev/null || { echo "moto_server is missing: run scripts/deps.sh" >&2; exit 1; }
setsid moto_server -H 127.0.0.1 -p "$moto_port" >/dev/null 2>"$moto_log" &
moto_pid=$!
for _ in $(seq 1 600); do
	curl -sf "http://127.0.0.1:$moto_port/" >/dev/null && break
	kill -0 "$moto_pid" 2>/dev/null || { cat "$moto_log" >&2; exit 1; }
	sleep 0.1
done
curl -sf -X PUT "http://127.0.0.1:$moto_port/piste-bench" >/dev/null

export PISTE_BENCH_DATABASE=$url PISTE_BENCH_S3_PID=$moto_pid
export PISTE_BENCH_STORAGE=s3://piste-bench/serve
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
export AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
echo "PostgreSQL (durable defaults) at $url, S3 (moto) at $AWS_ENDPOINT_URL"
cargo bench --bench serve -- "$@"
# What the whole run asked of object storage (moto logs one line per request).
echo "S3 requests over the whole run, by method: $(grep -oE '"(GET|PUT|POST|HEAD|DELETE) ' "$moto_log" | sort | uniq -c | tr -s ' \n' ' ')"
