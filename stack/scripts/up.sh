#!/usr/bin/env bash
# up.sh - bring the reference stack up: setup.sh (secrets, cert, .env), the base
# image (images/build-base.sh, reused when present), the service images (build
# cache reused) and `docker-compose up -d --wait`. Prints the service status.
# Every step is bounded by a timeout. Usage: up.sh [--wait-timeout SECONDS]
set -euo pipefail
STACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE="$STACK_DIR/ai-stack/compose/docker-compose.yml"
WAIT_TIMEOUT=180
[[ "${1:-}" == --wait-timeout && -n "${2:-}" ]] && WAIT_TIMEOUT="$2"
die() { echo "up: ERROR: $*" >&2; exit 1; }
DC=(docker-compose -p ai-stack -f "$COMPOSE_FILE")

command -v docker >/dev/null || die "docker CLI not found"
command -v docker-compose >/dev/null || die "docker-compose not found"
timeout 20 docker info >/dev/null 2>&1 || die "no Docker engine reachable (is dockerd running?)"

"$STACK_DIR/scripts/setup.sh"
timeout 900 "$STACK_DIR/images/build-base.sh"
echo "up: building service images"
start=$(date +%s)
timeout 900 "${DC[@]}" build || die "image build failed"
echo "up: images built in $(( $(date +%s) - start ))s"
start=$(date +%s)
if ! timeout $((WAIT_TIMEOUT + 60)) "${DC[@]}" up -d --wait --wait-timeout "$WAIT_TIMEOUT"; then
  timeout 30 "${DC[@]}" ps -a || true
  timeout 30 "${DC[@]}" logs --tail 30 || true
  die "stack did not become healthy within ${WAIT_TIMEOUT}s"
fi
echo "up: healthy in $(( $(date +%s) - start ))s"
timeout 30 "${DC[@]}" ps
echo "up: https://127.0.0.1:8443/health  prometheus http://127.0.0.1:9090  alertmanager http://127.0.0.1:9093"
