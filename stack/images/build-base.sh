#!/usr/bin/env bash
# Build the base image every reference-stack service is built FROM.
# No registry is reachable here, so the base is a Debian bookworm rootfs made by
# mmdebstrap from Debian's packages and imported into the local engine.
# Reuses the image when it is already present (pass --force to rebuild).
set -euo pipefail
IMAGE="${STACK_BASE_IMAGE:-ai-stack-base:bookworm}"
PACKAGES=(
  postgresql-15 prometheus prometheus-alertmanager prometheus-node-exporter
  nginx-light python3-fastapi python3-uvicorn python3-sqlalchemy python3-psycopg2
  python3-prometheus-client python3-yaml cron openssl ca-certificates procps tini
)
if [[ "${1:-}" != "--force" ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE present, reusing it"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "mmdebstrap missing: apt-get install -y mmdebstrap" >&2; exit 1; }
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
echo "building $IMAGE with mmdebstrap (about 70-120 s)..."
include="$(IFS=,; echo "${PACKAGES[*]}")"
timeout 900 mmdebstrap --variant=apt --include="$include" \
  --customize-hook='rm -f "$1"/etc/ssl/private/ssl-cert-snakeoil.key' \
  bookworm "$workdir/rootfs.tar"
docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "$workdir/rootfs.tar" "$IMAGE" >/dev/null
echo "base image $IMAGE built"
