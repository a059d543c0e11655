#!/usr/bin/env bash
# `piste run` benchmarks (issue 3), each against its target, ratios computed in the same run.
# Usage: benches/run.sh [path/to/piste]    (needs Docker and scripts/demo-image.sh for the docker rows)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PISTE=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/piste}")
IMAGE=piste-demo/busybox:1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

project() { # name, pipeline text
	local dir=$WORK/$1
	mkdir -p "$dir"
	printf '%s' "$2" >"$dir/.gitlab-ci.yml"
	git -C "$dir" init -q -b main
	git -C "$dir" -c user.name=b -c user.email=b@b add -A
	git -C "$dir" -c user.name=b -c user.email=b@b commit -qm bench
	echo "$dir"
}

# time_run DIR ARGS... → median wall ms of 5 runs (after 1 warm-up), and peak RSS (KiB) of one run.
time_run() {
	local dir=$1; shift
	(cd "$dir" && "$PISTE" run "$@" >/dev/null 2>&1) || { echo "piste run failed in $dir" >&2; exit 1; }
	local t=()
	for _ in 1 2 3 4 5; do
		local s; s=$(ms)
		(cd "$dir" && "$PISTE" run "$@" >/dev/null 2>&1)
		t+=($(( $(ms) - s )))
	done
	local rss; rss=$(cd "$dir" && /usr/bin/time -f '%M' -o "$WORK/rss" "$PISTE" run "$@" >/dev/null 2>&1; cat "$WORK/rss")
	echo "$(printf '%s\n' "${t[@]}" | median) $rss"
}

chain=""; prev=""
for i in $(seq 1 50); do
	chain+="j$i:
  script: [\"true\"]
"
	[[ -n $prev ]] && chain+="  needs: [$prev]
"
	prev=j$i
done
independent=""
for i in $(seq 1 100); do independent+="j$i:
  script: [\"true\"]
"; done

# The floor: 50 bare process starts, measured in the same run.
t=()
for _ in 1 2 3 4 5; do
	s=$(ms)
	for _ in $(seq 50); do sh -c true; done
	t+=($(( $(ms) - s )))
done
bare_ms=$(printf '%s\n' "${t[@]}" | median)
read -r chain_ms chain_rss < <(time_run "$(project chain "$chain")" --executor shell --jobs 2)
read -r ind_ms ind_rss < <(time_run "$(project independent "$independent")" --executor shell --jobs 2)
printf '%-58s %8s ms   50x sh -c true: %s ms   ratio %s (target <= 2.5)   peak %6s KiB (target < 32 MiB)\n' \
	"shell: 50 jobs chained by needs, running true" "$chain_ms" "$bare_ms" "$(echo "scale=2; $chain_ms / $bare_ms" | bc)" "$chain_rss"
printf '%-58s %8s ms   %s x the floor   peak %6s KiB\n' "shell: 100 independent jobs running true" "$ind_ms" "$(echo "scale=2; $ind_ms / $bare_ms" | bc)" "$ind_rss"

# 1 GiB of output through the log pipeline (masking, file), to disk.
big=$(project bigout 'big:
  script:
    - yes "piste log line of about 80 characters so that the file has realistic lines ......" | head -c 1073741824 || true
')
s=$(ms)
rss=$(cd "$big" && /usr/bin/time -f '%M' -o "$WORK/rss" "$PISTE" run --executor shell --quiet >/dev/null 2>&1; cat "$WORK/rss")
e=$(( $(ms) - s ))
bytes=$(stat -c %s "$big"/.piste/pipelines/1/big.log)
printf '%-58s %8s ms   %6s MB/s (target >= 200)   peak %6s KiB\n' "shell: a job printing 1 GiB, streamed to its log file" "$e" "$(( bytes / 1000 / e ))" "$rss"

# A warm 500 MB cache: restored before the job, and nothing after it when the job changed none
# of its files ("up to date"). The same job with `policy: pull` (restore only) is the floor.
cache_job() { # policy
	printf '%s' "warm:
  cache:
    key: bench
    policy: $1
    paths: [data/]
  script:
    - test -f data/49 || { mkdir -p data; for i in \$(seq 0 49); do head -c 10000000 /dev/urandom > data/\$i; done; }
"
}
warm=$(project warm "$(cache_job pull-push)")
pull=$(project pull "$(cache_job pull)")
(cd "$warm" && "$PISTE" run --executor shell --quiet >/dev/null 2>&1) || { echo "the cache job failed" >&2; exit 1; }
mkdir -p "$pull/.piste" && cp -r "$warm/.piste/cache" "$pull/.piste/"
read -r warm_ms warm_rss < <(time_run "$warm" --executor shell --quiet)
read -r pull_ms _ < <(time_run "$pull" --executor shell --quiet)
printf '%-58s %8s ms   restore only (policy: pull): %s ms   ratio %s (target ~1.0)   peak %6s KiB\n' \
	"shell: warm 500 MB cache, job changes nothing" "$warm_ms" "$pull_ms" "$(echo "scale=2; $warm_ms / $pull_ms" | bc)" "$warm_rss"

if docker info >/dev/null 2>&1; then
	bash "$ROOT/scripts/demo-image.sh"
	dchain=""; prev=""
	for i in $(seq 1 10); do
		dchain+="d$i:
  image: $IMAGE
  script: [\"true\"]
"
		[[ -n $prev ]] && dchain+="  needs: [$prev]
"
		prev=d$i
	done
	read -r d_ms _ < <(time_run "$(project dchain "$dchain")" --executor docker)
	t=()
	for _ in 1 2 3; do
		s=$(ms)
		for _ in $(seq 10); do docker run --rm "$IMAGE" true >/dev/null; done
		t+=($(( $(ms) - s )))
	done
	bare=$(printf '%s\n' "${t[@]}" | median)
	printf '%-58s %8s ms   10x docker run --rm: %s ms   ratio %s (target <= 1.25)\n' "docker: 10 trivial jobs chained by needs" "$d_ms" "$bare" "$(echo "scale=2; $d_ms / $bare" | bc)"
else
	echo "docker: Docker Engine not reachable, docker rows skipped" >&2
	exit 1
fi
