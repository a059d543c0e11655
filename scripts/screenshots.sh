#!/usr/bin/env bash
# Screenshots of the project, pipeline and job pages for the README: starts a `piste serve`
# and a shell runner in a temporary folder, pushes a demo project five times (four pipelines
# on `main`, the last with a failing test, and one on a branch), waits for them, then takes
# the pages with headless Chromium. Writes docs/screenshots/{project,pipeline,job}.png.
#
#   scripts/screenshots.sh              # builds piste (release) first
#   PISTE=target/debug/piste scripts/screenshots.sh
#   HOLD=1 scripts/screenshots.sh       # then keeps the server up to look around (Ctrl-C ends)
#
# Needs chromium, git and curl (scripts/deps.sh installs them). Leaves nothing running.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/docs/screenshots}
if [[ -z ${PISTE:-} ]]; then
	cargo build --release --bin piste --manifest-path "$root/Cargo.toml" >&2
	PISTE="$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')/release/piste"
fi
PISTE=$(cd "$(dirname "$PISTE")" && pwd)/$(basename "$PISTE")
chromium=$(command -v chromium || command -v chromium-browser) || { echo "chromium is needed (scripts/deps.sh)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18080)
url=http://127.0.0.1:$port

# The demo project: a build, tests with a JUnit report and coverage, a lint, a manual deploy.
git init -q --bare app.git
git clone -q app.git app 2>/dev/null
cat >app/.gitlab-ci.yml <<'YAML'
stages: [build, test, deploy]
default:
  before_script:
    - . ci/sections.sh

compile:
  stage: build
  script:
    - section_start deps "Fetching dependencies"
    - for c in serde tokio axum hyper tracing; do echo "  Downloaded $c"; sleep 0.2; done
    - section_end deps
    - printf '\033[32;1m   Compiling\033[0m shop v1.4.2\n'
    - sleep "$(cat .build-seconds)"
    - mkdir -p dist && echo "shop 1.4.2" > dist/VERSION && head -c 180000 /dev/urandom > dist/shop && cp README.md dist/
    - printf '\033[32;1m    Finished\033[0m release profile [optimized] in 1.6s\n'
  artifacts:
    paths: [dist/]

docs:
  stage: build
  script:
    - echo "Rendering 12 pages"
    - sleep 0.8
    - mkdir -p site && echo '<h1>shop</h1>' > site/index.html

unit-tests:
  stage: test
  needs: [compile]
  coverage: '/^coverage: (\d+\.\d+)%/'
  script:
    - section_start db "Starting the test database"
    - echo "database shop_test ready on 127.0.0.1:5432"
    - sleep 1
    - section_end db
    - section_start tests "Running the tests"
    - sh run-tests.sh
    - section_end tests
  artifacts:
    when: always
    paths: [reports/]
    reports:
      junit: reports/junit.xml

lint:
  stage: test
  needs: [compile]
  script:
    - echo "Checking 48 files"
    - sleep 0.6
    - printf '\033[32;1mok\033[0m no warnings\n'

deploy-staging:
  stage: deploy
  needs: [unit-tests, lint]
  when: manual
  script:
    - echo "deploying dist/shop to staging"
YAML
mkdir app/ci
# GitLab's custom collapsible sections, as its documentation writes them.
cat >app/ci/sections.sh <<'SH'
section_start() { printf '\033[0Ksection_start:%s:%s[collapsed=true]\r\033[0K\033[36;1m%s\033[0m\n' "$(date +%s)" "$1" "$2"; }
section_end() { printf '\033[0Ksection_end:%s:%s\r\033[0K\n' "$(date +%s)" "$1"; }
SH
cat >app/run-tests.sh <<'SH'
set -e
mkdir -p reports
failed=0
cases=""
for t in cart::adds_items cart::removes_items cart::totals checkout::applies_coupon checkout::rejects_expired_card \
	orders::lists_recent orders::paginates payments::refunds; do
	sleep 0.15
	if [ -e FAIL ] && [ "$t" = checkout::applies_coupon ]; then
		printf 'test %s ... \033[31mFAILED\033[0m\n' "$t"
		failed=1
		cases="$cases<testcase classname=\"shop.${t%%::*}\" name=\"${t#*::}\"><failure message=\"expected total 90.00, got 100.00\">assertion failed: total == 90.00 at src/checkout.rs:88</failure></testcase>"
	else
		printf 'test %s ... \033[32mok\033[0m\n' "$t"
		cases="$cases<testcase classname=\"shop.${t%%::*}\" name=\"${t#*::}\"/>"
	fi
done
echo "<testsuite name=\"shop\" tests=\"8\">$cases</testsuite>" > reports/junit.xml
if [ "$failed" = 1 ]; then
	printf '\nfailures:\n    checkout::applies_coupon: expected total 90.00, got 100.00\n'
	printf '\033[31merror: test failed\033[0m, 7 passed, 1 failed\n'
	exit 1
fi
echo "coverage: 87.4%"
printf '\033[32mtest result: ok\033[0m. 8 passed; 0 failed\n'
SH
printf '# shop\n\nA small shop, built by piste.\n' >app/README.md
commit() { git -C app add -A && git -C app -c user.name=dev -c user.email=dev@example.test commit -qm "$1"; }
push() { git -C app push -q origin "HEAD:refs/heads/$1"; }

cat >piste.toml <<TOML
listen = "127.0.0.1:$port"
data_dir = "data"
runner_registration_token = "demo-registration-token"
[[project]]
name = "shop"
repo = "app.git"
webhook_secret = "demo-webhook-secret"
visibility = "public"
TOML
"$PISTE" serve --config piste.toml 2>serve.log &
pids+=($!)
until curl -sf "$url/healthz" >/dev/null; do sleep 0.2; done
"$PISTE" runner register --url "$url" --token demo-registration-token --name builder-1 --config runner.toml >/dev/null
"$PISTE" runner run --config runner.toml --executor shell 2>runner.log &
pids+=($!)

# A GitLab push hook for the branch's head; prints the pipeline's id.
hook() {
	local sha before=0000000000000000000000000000000000000000
	sha=$(git -C app rev-parse HEAD)
	curl -sf "$url/api/v1/webhooks/shop" -H 'Content-Type: application/json' -H 'X-Gitlab-Event: Push Hook' \
		-H "X-Gitlab-Event-UUID: $2" -H 'X-Gitlab-Token: demo-webhook-secret' \
		-d '{"object_kind":"push","ref":"refs/heads/'"$1"'","before":"'$before'","after":"'"$sha"'","checkout_sha":"'"$sha"'","user_username":"dev","commits":[{"id":"'"$sha"'","message":"'"$3"'"}]}' |
		sed 's/.*"pipeline":\([0-9]*\).*/\1/'
}
# Waits until pipeline $1 is finished (success, failed or canceled).
wait_done() {
	for _ in $(seq 1 600); do
		status=$(curl -sf "$url/api/v1/pipelines/$1" | grep -o '"status":"[a-z]*"' | head -1 | cut -d'"' -f4)
		case $status in success | failed | canceled) return 0 ;; esac
		sleep 0.2
	done
	echo "pipeline $1 did not finish (last status: $status)" >&2
	cat serve.log runner.log >&2
	exit 1
}

# Four pipelines on main whose builds take more or less time (the project page charts them),
# the last with a failing test, and one on a branch.
n=0
for change in "1.0 Cart and checkout" "2.5 Orders list" "1.5 Search" "feature 1.2 Refunds" "3.0 Coupons"; do
	n=$((n + 1))
	branch=main
	if [[ $change == feature* ]]; then
		branch=feature/refunds
		change=${change#feature }
		git -C app checkout -q -b "$branch"
	fi
	echo "${change%% *}" >app/.build-seconds
	echo "${change#* }" >>app/README.md
	[[ $n == 5 ]] && touch app/FAIL
	commit "${change#* }"
	push "$branch"
	last=$(hook "$branch" "push-$n" "${change#* }")
	wait_done "$last"
	git -C app checkout -q main
done
job=$(curl -sf "$url/api/v1/pipelines/$last" | grep -o '"id":[0-9]*,"name":"unit-tests"' | head -1 | sed 's/"id":\([0-9]*\).*/\1/')

mkdir -p "$out"
shot() {
	"$chromium" --headless=new --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
		--user-data-dir="$work/chromium" --timeout=15000 --window-size="$2" \
		--screenshot="$out/$1.png" "$3" >/dev/null 2>&1
	echo "$out/$1.png" >&2
}
shot project 1280,900 "$url/projects/shop"
shot pipeline 1280,1100 "$url/pipelines/$last"
shot job 1280,1000 "$url/jobs/$job"
if [[ -n ${HOLD:-} ]]; then
	echo "the demo server stays up at $url (project page: $url/projects/shop); Ctrl-C ends it" >&2
	wait "${pids[0]}"
fi
