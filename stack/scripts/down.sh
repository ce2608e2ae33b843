#!/usr/bin/env bash
# down.sh - stop the reference stack and remove its containers, networks and
# volumes (database, Prometheus data, TLS metrics). Images, secrets and certs stay.
set -euo pipefail
STACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE="$STACK_DIR/ai-stack/compose/docker-compose.yml"
ENV_FILE="$STACK_DIR/ai-stack/compose/.env"
command -v docker-compose >/dev/null || { echo "down: docker-compose not found" >&2; exit 1; }
timeout 20 docker info >/dev/null 2>&1 || { echo "down: no Docker engine reachable" >&2; exit 1; }
# compose needs STACK_UID/GID to parse the file even to tear it down
if [[ ! -f "$ENV_FILE" ]]; then export STACK_UID="${STACK_UID:-0}" STACK_GID="${STACK_GID:-0}"; fi
timeout 180 docker-compose -p ai-stack -f "$COMPOSE_FILE" down -v --remove-orphans --timeout 20
left="$(timeout 20 docker ps -aq --filter label=com.docker.compose.project=ai-stack)"
if [[ -n "$left" ]]; then
  echo "down: containers still present: $left" >&2
  exit 1
fi
echo "down: ai-stack stopped, nothing left running"
