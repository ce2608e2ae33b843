#!/usr/bin/env bash
# down.sh - stop the reference stack and remove its containers, networks and volumes (database,
# Prometheus data, TLS metrics). Images, secrets and certs stay.
#
#   down.sh [--engine compose|swarm|podman]
#
# swarm: `docker stack rm` and the stack's volumes; the swarm itself stays (`docker swarm leave
# --force` ends it). podman: the project on Podman's socket; `podman system service` keeps running.
set -euo pipefail
STACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE="$STACK_DIR/ai-stack/compose/docker-compose.yml"
ENV_FILE="$STACK_DIR/ai-stack/compose/.env"
ENGINE=compose
[[ "${1:-}" == --engine && -n "${2:-}" ]] && ENGINE="$2"
# shellcheck source=engine.sh
source "$STACK_DIR/scripts/engine.sh"
command -v docker-compose >/dev/null || { echo "down: docker-compose not found" >&2; exit 1; }
if [[ $ENGINE == podman ]]; then start_podman any-backend >&2 || exit 1; export DOCKER_HOST="$PODMAN_HOST"; fi
timeout 20 docker info >/dev/null 2>&1 || { echo "down: no ${ENGINE/compose/Docker} engine reachable" >&2; exit 1; }

if [[ $ENGINE == swarm ]]; then
  label="com.docker.stack.namespace=$PROJECT"
  if [[ "$(timeout 20 docker info --format '{{.Swarm.LocalNodeState}}')" == active ]]; then
    timeout 60 docker stack rm "$PROJECT" >/dev/null
  fi
  for _ in $(seq 1 60); do  # tasks stop asynchronously; their volumes are free once they are gone
    [[ -z "$(timeout 20 docker ps -aq --filter "label=$label")" ]] && break
    sleep 1
  done
  volumes="$(timeout 20 docker volume ls -q --filter "label=$label")"
  [[ -n "$volumes" ]] && timeout 60 docker volume rm $volumes >/dev/null
else
  label="com.docker.compose.project=$PROJECT"
  # compose needs STACK_UID/GID to parse the file even to tear it down
  if [[ ! -f "$ENV_FILE" ]]; then export STACK_UID="${STACK_UID:-0}" STACK_GID="${STACK_GID:-0}"; fi
  timeout 180 docker-compose -p "$PROJECT" -f "$COMPOSE_FILE" down -v --remove-orphans --timeout 20
fi
left="$(timeout 20 docker ps -aq --filter "label=$label")"
if [[ -n "$left" ]]; then
  echo "down: containers still present: $left" >&2
  exit 1
fi
echo "down: $PROJECT ($ENGINE) stopped, nothing left running"
