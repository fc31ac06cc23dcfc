#!/usr/bin/env bash
# Opt-in (not CI): build the image from the Dockerfile without Docker or a registry, then run its
# entrypoint on a read-only root filesystem as its user, with only /tmp writable.
#
# No base image can be pulled here, so a stand-in for python:3.11-slim-bookworm is made from
# Debian packages (debootstrap; Python 3.11 with pip in /usr/local, like the official image).
# Needs root, buildah, podman, debootstrap (apt-get install -y buildah podman debootstrap).
# Usage: deploy/docker/image-check.sh [WORKDIR]   (default: build/image, kept between runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=$(realpath -m "${1:-build/image}")
STORE=(--root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs)
BASE=localhost/posture-base:3.11-bookworm
IMAGE=localhost/posture-daemon:check
mkdir -p "$WORK"

if ! podman "${STORE[@]}" image exists "$BASE"; then
  mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$WORK/rootfs" "${mirror:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log"
  # pip and setuptools in /usr/local from Debian's bundled wheels, as the official image has them
  rm -f "$WORK"/rootfs/usr/lib/python3.*/EXTERNALLY-MANAGED
  chroot "$WORK/rootfs" /bin/sh -c 'cd /usr/share/python-wheels && pip=$(ls pip-*.whl) &&
    python3 "$pip/pip" install -q --no-index --root-user-action=ignore "$pip" setuptools-*.whl'
  # trust the same certificate authorities as this machine (e.g. a TLS-inspecting proxy to PyPI)
  cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$WORK/rootfs/etc/pip.conf"
  tar -C "$WORK/rootfs" -c . | podman "${STORE[@]}" import - "$BASE" >/dev/null
fi

buildah "${STORE[@]}" bud --isolation chroot --pull=never --layers=false --format docker \
  --build-arg PYTHON_IMAGE="$BASE" --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  -t "$IMAGE" -f Dockerfile . >"$WORK/build.log"
echo "built $IMAGE (log: $WORK/build.log)"

container=$(buildah "${STORE[@]}" from --pull=never "$IMAGE")
trap 'buildah "${STORE[@]}" rm "$container" >/dev/null' EXIT
rootfs=$(buildah "${STORE[@]}" mount "$container")
user=$(buildah "${STORE[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# In a private mount namespace: the image's root read-only, a tmpfs on /tmp, then its entrypoint
# as its user. AWS is unreachable: the daemon must still start, serve health and stop cleanly.
unshare -m --propagation private /bin/bash -euc '
  root=$(mktemp -d)
  mount --bind "$1" "$root" && mount -o remount,bind,ro "$root"
  mount -t tmpfs -o size=64m,mode=1777 tmpfs "$root/tmp"
  mount --rbind /dev "$root/dev" && mount -t proc proc "$root/proc"
  printf "version: 1\nscope:\n  accounts: {static: [{id: \"111111111111\"}]}\n  regions: [us-east-1]\n" >"$root/tmp/policy.yaml"
  exec env -i PATH=/opt/posture-daemon/bin:/usr/local/bin:/usr/bin:/bin HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 POSTURE_LOG__FORMAT=json POSTURE_POLICY_FILE=/tmp/policy.yaml \
    POSTURE_HTTP__HOST=127.0.0.1 POSTURE_HTTP__PORT="$2" POSTURE_AWS__MAX_ATTEMPTS=1 \
    AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_REGION=us-east-1 AWS_ENDPOINT_URL=http://127.0.0.1:1 \
    "$4" --userspec="$3" "$root" posture-daemon run
' _ "$rootfs" "$port" "$user" "$(command -v chroot)" >"$WORK/run.log" 2>&1 &
daemon=$!

ok=""
for _ in $(seq 100); do
  if curl -fs "http://127.0.0.1:$port/livez" >/dev/null; then ok=1; break; fi
  sleep 0.2
done
kill -TERM "$daemon" 2>/dev/null || true
wait "$daemon" && status=0 || status=$?
# the unshare wrapper execs into the daemon, so its exit status is the daemon's
if [[ -z "$ok" || "$status" -ne 0 ]]; then
  echo "image check FAILED (live=${ok:-no}, exit=$status):" >&2
  cat "$WORK/run.log" >&2
  exit 1
fi
echo "image check passed: $IMAGE served /livez as user $user on a read-only root, and stopped cleanly"
