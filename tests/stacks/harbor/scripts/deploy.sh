#!/usr/bin/env bash
# deploy.sh - run docker compose on the production file set of harbor.
#
# Usage: scripts/deploy.sh COMPOSE_ARGS...     e.g. scripts/deploy.sh up -d --wait
#
# Production is compose/base.yml + compose/prod.yml, project "harbor", variables from
# compose/.env (scripts/setup.sh writes it). compose/dev.yml is for laptops (make dev).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f compose/.env ]] || { echo "deploy.sh: run scripts/setup.sh first" >&2; exit 1; }
exec docker compose --project-name harbor --env-file compose/.env \
  -f compose/base.yml -f compose/prod.yml "$@"
