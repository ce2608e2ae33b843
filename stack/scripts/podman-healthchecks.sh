#!/usr/bin/env bash
# podman-healthchecks.sh PROJECT - run the healthchecks of a Podman compose project's containers.
# Podman runs healthchecks from systemd timers; where systemd is not PID 1 (containers, CI), nothing
# runs them and `docker-compose up --wait` waits forever. up.sh --engine podman starts this loop in
# the background (one per project); it ends by itself once the project has no container left (down.sh).
set -uo pipefail
project="${1:?usage: podman-healthchecks.sh PROJECT}"
seen=0 started=$(date +%s)
while true; do
  mapfile -t ids < <(timeout 20 podman ps -q --filter "label=com.docker.compose.project=$project")
  if [[ ${#ids[@]} -eq 0 ]]; then
    (( seen || $(date +%s) - started > 600 )) && exit 0   # gone, or never came up
  else
    seen=1
  fi
  for id in "${ids[@]}"; do
    timeout 30 podman healthcheck run "$id" >/dev/null 2>&1 &
  done
  wait
  sleep 3
done
