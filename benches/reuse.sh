#!/usr/bin/env bash
# Reuse of job results (issue 12): a second `piste run --reuse` on the same tree vs the first,
# measured in the same run, on fresh projects whose jobs take measurable time (`sleep 0.3`).
# Usage: benches/reuse.sh [path/to/piste]
set -euo pipefail
cd "$(dirname "$0")/.."
PISTE=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/piste}")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# 3 stages, 9 jobs, each sleeping 0.3 s and passing artifacts and a dotenv report on.
pipeline() {
	echo "stages: [build, test, package]"
	for c in api web worker; do
		printf 'build-%s:\n  stage: build\n  script:\n    - sleep 0.3\n    - mkdir -p out && cat %s/main.txt > out/%s.txt\n    - echo %s_VERSION=1 > %s.env\n  artifacts:\n    paths: [out/]\n    reports: {dotenv: %s.env}\n' "$c" "$c" "$c" "${c^^}" "$c" "$c"
		printf 'test-%s:\n  stage: test\n  rules:\n    - changes: [%s/**/*]\n  script:\n    - sleep 0.3\n    - test -s out/%s.txt\n' "$c" "$c" "$c"
		printf 'package-%s:\n  stage: package\n  script:\n    - sleep 0.3\n    - test "$%s_VERSION" = 1\n' "$c" "${c^^}"
	done
}

first=(); second=()
for i in 1 2 3; do
	dir=$WORK/p$i
	mkdir -p "$dir"
	pipeline >"$dir/.gitlab-ci.yml"
	for c in api web worker; do mkdir -p "$dir/$c" && echo "$c" >"$dir/$c/main.txt"; done
	git -C "$dir" init -q -b main
	git -C "$dir" -c user.name=b -c user.email=b@b add -A
	git -C "$dir" -c user.name=b -c user.email=b@b commit -qm bench
	s=$(ms); (cd "$dir" && "$PISTE" run --executor shell -j 2 --reuse >/dev/null 2>&1); first+=($(( $(ms) - s )))
	s=$(ms); (cd "$dir" && "$PISTE" run --executor shell -j 2 --reuse --format json >"$WORK/second.json" 2>/dev/null); second+=($(( $(ms) - s )))
	reused=$(grep -c '"reused_from"' "$WORK/second.json" || true)
	[ "$reused" = 9 ] || { echo "second run reused $reused of 9 jobs" >&2; exit 1; }
done
f=$(printf '%s\n' "${first[@]}" | median); s=$(printf '%s\n' "${second[@]}" | median)
echo "first pipeline (9 jobs × sleep 0.3, -j 2): ${f} ms (runs: ${first[*]})"
echo "second pipeline, same tree, 9 of 9 reused: ${s} ms (runs: ${second[*]})"
awk -v f="$f" -v s="$s" 'BEGIN { printf "ratio: %.1f %% (target < 10 %%)\n", 100 * s / f }'
