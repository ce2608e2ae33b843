#!/usr/bin/env bash
# up.sh - bring the reference stack up on one engine: setup.sh (secrets, cert, .env), the base
# image (images/build-base.sh, reused when present), the service images (build cache reused),
# then the stack, and wait until it is healthy. Every step is bounded by a timeout.
#
#   up.sh [--engine compose|swarm|podman] [--wait-timeout SECONDS]
#
#   compose  `docker-compose up -d --wait`, project ai-stack, ports 127.0.0.1:8443/9090/9093
#   swarm    `docker stack deploy` (swarm initialised on 127.0.0.1 if the engine is not in one),
#            stack ai-stack-swarm, with docker-compose.swarm.yml: no published ports (swarm's
#            ingress cannot bind 127.0.0.1; the suite reaches the tasks on docker_gwbridge)
#   podman   rootful Podman through its Docker-compatible socket (`podman system service`, started
#            if needed), images copied from Docker (`docker save | podman load`), project
#            ai-stack-podman, ports 127.0.0.1:18443/19090/19093
# STACK_PROJECT overrides the project/stack name; STACK_HTTPS_PORT, STACK_PROMETHEUS_PORT,
# STACK_ALERTMANAGER_PORT the host ports; STACK_IMAGE_TAG the images' tag (default local).
set -euo pipefail
STACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_DIR="$STACK_DIR/ai-stack/compose"
COMPOSE_FILE="$COMPOSE_DIR/docker-compose.yml"
WAIT_TIMEOUT=180
ENGINE=compose
die() { echo "up: ERROR: $*" >&2; exit 1; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wait-timeout) WAIT_TIMEOUT="${2:?--wait-timeout SECONDS}"; shift 2 ;;
    --engine) ENGINE="${2:?--engine compose|swarm|podman}"; shift 2 ;;
    *) die "unknown argument: $1 (usage: up.sh [--engine compose|swarm|podman] [--wait-timeout SECONDS])" ;;
  esac
done
# shellcheck source=engine.sh
source "$STACK_DIR/scripts/engine.sh"

command -v docker >/dev/null || die "docker CLI not found"
command -v docker-compose >/dev/null || die "docker-compose not found"
timeout 20 docker info >/dev/null 2>&1 || die "no Docker engine reachable (is dockerd running?)"

"$STACK_DIR/scripts/setup.sh"
timeout 900 "$STACK_DIR/images/build-base.sh"
echo "up: building service images"
start=$(date +%s)
timeout 900 docker-compose -p "$PROJECT" -f "$COMPOSE_FILE" build || die "image build failed"
echo "up: images built in $(( $(date +%s) - start ))s"
start=$(date +%s)

case "$ENGINE" in
  compose|podman)
    DC=(docker-compose -p "$PROJECT" -f "$COMPOSE_FILE")
    if [[ $ENGINE == podman ]]; then
      start_podman
      copy_images_to_podman
      export DOCKER_HOST="$PODMAN_HOST"
      DC+=(-f "$COMPOSE_DIR/docker-compose.podman.yml")
      start_podman_healthchecks
    fi
    # docker-compose can exit 0 when the engine refused to start a container (seen with Podman):
    # the stack is up when every service has a running, healthy container
    if ! timeout $((WAIT_TIMEOUT + 60)) "${DC[@]}" up -d --wait --wait-timeout "$WAIT_TIMEOUT" \
       || [[ "$(timeout 30 "${DC[@]}" ps --status running --format '{{.Health}}' | grep -cx healthy)" \
             -ne "$(timeout 30 "${DC[@]}" config --services | wc -l)" ]]; then
      timeout 30 "${DC[@]}" ps -a || true
      timeout 30 "${DC[@]}" logs --tail 30 || true
      die "stack did not become healthy within ${WAIT_TIMEOUT}s"
    fi
    echo "up: healthy in $(( $(date +%s) - start ))s"
    timeout 30 "${DC[@]}" ps
    echo "up: https://127.0.0.1:$STACK_HTTPS_PORT/health  prometheus http://127.0.0.1:$STACK_PROMETHEUS_PORT" \
         " alertmanager http://127.0.0.1:$STACK_ALERTMANAGER_PORT${DOCKER_HOST:+ (engine $DOCKER_HOST)}" ;;
  swarm)
    if [[ "$(timeout 20 docker info --format '{{.Swarm.LocalNodeState}}')" != active ]]; then
      echo "up: initialising a single-node swarm on 127.0.0.1"
      timeout 60 docker swarm init --advertise-addr 127.0.0.1 >/dev/null || die "docker swarm init failed"
    fi
    deploy_file="$(mktemp "$COMPOSE_DIR/.swarm-stack.XXXXXX.json")"
    trap 'rm -f "$deploy_file"' EXIT
    timeout 60 docker-compose -p "$PROJECT" -f "$COMPOSE_FILE" -f "$COMPOSE_DIR/docker-compose.swarm.yml" \
      config --format json | python3 "$STACK_DIR/scripts/swarm-config.py" >"$deploy_file" \
      || die "cannot resolve the compose files for swarm"
    timeout 120 docker stack deploy --prune --resolve-image never -c "$deploy_file" "$PROJECT" >/dev/null \
      || die "docker stack deploy failed"
    wait_swarm_healthy "$WAIT_TIMEOUT" || die "stack $PROJECT did not become healthy within ${WAIT_TIMEOUT}s"
    echo "up: healthy in $(( $(date +%s) - start ))s"
    timeout 30 docker stack services "$PROJECT"
    echo "up: swarm stack $PROJECT (no published ports; check it with: pytest suites --live --engine swarm --compose-project $PROJECT)" ;;
esac
