#!/usr/bin/env bash
# `piste lint` of the 1,000-job fixture, whole process (start-up, read, load, plan, print):
# median of 20 runs. Usage: benches/lint-cli.sh [path/to/piste]
set -euo pipefail
cd "$(dirname "$0")/.."
PISTE=${1:-${CARGO_TARGET_DIR:-target}/release/piste}
FILE=fixtures/large/1000-jobs.gitlab-ci.yml
"$PISTE" lint -f "$FILE" --branch main >/dev/null
times=()
for _ in $(seq 20); do
	s=$(date +%s%N)
	"$PISTE" lint -f "$FILE" --branch main >/dev/null
	e=$(date +%s%N)
	times+=($(((e - s) / 1000)))
done
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 10p)
rss=$(/usr/bin/time -f '%M' -o /dev/stdout "$PISTE" lint -f "$FILE" --branch main 2>/dev/null | tail -1)
printf 'piste lint, 1,000 jobs (whole process)   median %6.1f ms   peak RSS %s KiB\n' "$(echo "$median / 1000" | bc -l)" "$rss"
