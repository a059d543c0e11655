#!/usr/bin/env bash
# Builds `piste-demo/busybox:1`, the image of the demo pipeline, from Debian's busybox-static:
# no registry is needed (FROM scratch). Idempotent.
set -euo pipefail
IMAGE=piste-demo/busybox:1
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
	exit 0
fi
# Debian's busybox-static installs a static /bin/busybox: it runs in an empty image.
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || { echo "install busybox-static first (scripts/deps.sh)" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$BUSYBOX" "$ctx/busybox"
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/usr/local/bin:/usr/bin:/bin
DOCKERFILE
DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$ctx" >/dev/null 2>&1 || docker build -q -t "$IMAGE" "$ctx" >/dev/null
echo "built $IMAGE" >&2
