#!/usr/bin/env bash
# Build and run the CPU image without a container registry or a Docker engine.
#
#   1. debootstrap a minimal Debian bookworm with Python 3.11 into a root filesystem;
#   2. make it a base image: buildah from scratch, copy the rootfs in, commit;
#   3. build the Dockerfile's cpu target on it (PYTHON_IMAGE build argument);
#   4. run it with podman (host network), get a prediction, then SIGTERM it under load
#      and check the drain: exit status 0 and no accepted request left unanswered.
#
# Needs root, debootstrap, buildah, podman and runc (Debian: apt-get install -y debootstrap
# buildah podman runc), Debian's package mirror for step 1 and the Python package index
# for step 3 (pip runs in the build, on the host's network).
#
#   deploy/build-local.sh            # everything; the rootfs is cached in $WORK
#   PORT=8123 WORK=/var/tmp/ks WORKERS=2 deploy/build-local.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/var/tmp/keras-serve-build}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
BASE=${BASE:-localhost/keras-serve-base:$SUITE}
IMAGE=${IMAGE:-localhost/keras-serve:cpu}
PORT=${PORT:-8123}
NAME=keras-serve-local-$$
# runc, where installed: crun refuses hosts whose cgroups are in hybrid mode (v1 controllers
# mounted) with "cgroups in hybrid mode not supported, drop all controllers from cgroupv2"
OCI=${OCI:-$(command -v runc >/dev/null && echo runc || echo crun)}
# a container gets the caller's open-file limits: podman's default (1048576) needs
# CAP_SYS_RESOURCE to set, which a root without it lacks ("setrlimit RLIMIT_NOFILE");
# its HEALTHCHECK needs systemd timers (absent in a plain VM or container): the script
# polls /health/ready itself
ULIMIT="--ulimit nofile=$(ulimit -Sn):$(ulimit -Hn)"
RUN_ULIMIT="$ULIMIT --ulimit nproc=32768:32768"

log() { printf '\n== %s\n' "$*" >&2; }

# ---- 1. the root filesystem
if [ ! -x "$WORK/rootfs/usr/bin/python3" ]; then
    log "debootstrap $SUITE into $WORK/rootfs"
    mkdir -p "$WORK"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python-is-python3,ca-certificates \
        "$SUITE" "$WORK/rootfs" "$MIRROR"
    rm -rf "$WORK/rootfs/var/lib/apt/lists/"* "$WORK/rootfs/var/cache/apt/"*.bin
fi
# the host's CA bundle, so that pip in the build trusts what the host trusts
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt"
fi

# ---- 2. the base image
log "base image $BASE"
ctr=$(buildah from scratch)
mnt=$(buildah mount "$ctr")
cp -a "$WORK/rootfs/." "$mnt/"
buildah umount "$ctr" >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$ctr"
buildah commit --rm "$ctr" "$BASE" >/dev/null
probe=$(buildah from "$BASE")
buildah run --runtime "$OCI" --network host "$probe" -- python --version
buildah rm "$probe" >/dev/null

# ---- 3. the cpu target on it
log "build $IMAGE (cpu target)"
started=$(date +%s)
buildah bud --runtime "$OCI" $ULIMIT --format docker --layers --network host \
    --build-arg "PYTHON_IMAGE=$BASE" --target cpu -t "$IMAGE" "$ROOT"
log "built in $(( $(date +%s) - started )) s; $(podman image inspect "$IMAGE" --format '{{.Size}}') bytes"

# ---- 4. run, predict, drain
log "run $IMAGE on port $PORT"
podman --runtime "$OCI" run $RUN_ULIMIT --no-healthcheck -d --name "$NAME" --network host -e PORT="$PORT" -e HOST=127.0.0.1 -e WORKERS="${WORKERS:-1}" "$IMAGE" >/dev/null
trap 'podman rm -f "$NAME" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 120); do
    curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null && break
    sleep 1
done
curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null || { podman logs "$NAME"; exit 1; }
answer=$(curl -fs "http://127.0.0.1:$PORT/models/iris/predict" -H 'content-type: application/json' \
    -d '{"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}')
echo "prediction: $answer"
echo "$answer" | grep -q '"label":"versicolor"'

log "SIGTERM under load"
results=$WORK/drain-results
rm -f "$results"
for i in $(seq 1 16); do
    ( while :; do
          code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 \
              "http://127.0.0.1:$PORT/models/iris/predict" -H 'content-type: application/json' \
              -d '{"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}') \
              && rc=0 || rc=$?
          echo "$code $rc" >> "$results"
          [ "$code" = 200 ] || break
      done ) &
done
sleep 2
podman --runtime "$OCI" stop -t 30 "$NAME" >/dev/null   # SIGTERM, SIGKILL after 30 s
wait
status=$(podman inspect "$NAME" --format '{{.State.ExitCode}}')
answered=$(grep -c '^200 ' "$results" || true)
turned_away=$(grep -c '^503 ' "$results" || true)  # answered 503 + Retry-After while draining
refused=$(grep -c ' 7$' "$results" || true)        # curl 7: connection refused, never accepted
other=$(grep -vc -e '^200 ' -e '^503 ' -e ' 7$' "$results" || true)  # reset, timed out...
echo "exit status $status; answered 200: $answered; answered 503: $turned_away;" \
    "refused (never accepted): $refused; unanswered: $other"
podman logs "$NAME" 2>&1 | grep -v ' app.access ' | tail -8
if [ "$status" != 0 ] || [ "$other" != 0 ] || [ "$answered" = 0 ]; then
    log "FAILED"
    exit 1
fi
log "ok"
