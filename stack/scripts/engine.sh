# engine.sh - sourced by up.sh and down.sh: the engine's project name, ports and helpers.
# Expects ENGINE (compose|swarm|podman) and STACK_DIR; sets PROJECT, the STACK_*_PORT defaults,
# PODMAN_HOST. Every command is bounded by a timeout.
case "$ENGINE" in
  compose) PROJECT="${STACK_PROJECT:-ai-stack}"; port_base=0 ;;
  swarm) PROJECT="${STACK_PROJECT:-ai-stack-swarm}"; port_base=0 ;;
  # podman's stack can run beside the compose one: other default host ports
  podman) PROJECT="${STACK_PROJECT:-ai-stack-podman}"; port_base=10000 ;;
  *) echo "engine: unknown engine $ENGINE (compose, swarm or podman)" >&2; exit 64 ;;
esac
export STACK_HTTPS_PORT="${STACK_HTTPS_PORT:-$((8443 + port_base))}"
export STACK_PROMETHEUS_PORT="${STACK_PROMETHEUS_PORT:-$((9090 + port_base))}"
export STACK_ALERTMANAGER_PORT="${STACK_ALERTMANAGER_PORT:-$((9093 + port_base))}"
PODMAN_SOCKET=/run/podman/podman.sock
PODMAN_HOST="unix://$PODMAN_SOCKET"
PODMAN_PIDFILE=/run/stackproof-podman.pid
# the network backend the stack needs (see podman-containers.conf), for every podman command here
[[ $ENGINE == podman ]] && export CONTAINERS_CONF="$STACK_DIR/scripts/podman-containers.conf"

podman_backend() {
  timeout 20 podman --url "$PODMAN_HOST" info --format '{{.Host.NetworkBackend}}' 2>/dev/null
}

ours_podman_service() {
  # the `podman system service` an earlier start_podman left running (its pid, still that command)
  [[ -f $PODMAN_PIDFILE ]] \
    && tr '\0' ' ' <"/proc/$(cat "$PODMAN_PIDFILE")/cmdline" 2>/dev/null | grep -q '^podman system service'
}

start_podman() {
  # Rootful Podman's Docker-compatible API; started once, left running (like dockerd). With
  # `any-backend` (down.sh: removing a project needs no DNS) a running service is used as it is.
  command -v podman >/dev/null || { echo "up: podman not found (apt-get install podman uidmap slirp4netns netavark aardvark-dns)" >&2; return 1; }
  if timeout 10 docker -H "$PODMAN_HOST" version >/dev/null 2>&1; then
    [[ ${1:-} == any-backend ]] && return 0
    if ours_podman_service; then
      # an earlier version started it on CNI, or from a checkout since deleted: conmon, which it
      # starts in its working directory, then fails every container ("write child: broken pipe")
      if [[ "$(podman_backend)" == netavark && "$(readlink "/proc/$(cat "$PODMAN_PIDFILE")/cwd")" == / ]]; then
        return 0
      fi
      echo "up: restarting the podman system service an earlier run started (not on netavark, or not in /)"
      kill "$(cat "$PODMAN_PIDFILE")"; sleep 1
    elif [[ "$(podman_backend)" == netavark ]]; then
      return 0
    else
      echo "up: the podman service on $PODMAN_SOCKET does not use the netavark network backend, whose DNS" \
           "the stack needs (see scripts/podman-containers.conf); restart it with CONTAINERS_CONF set to that file" >&2
      return 1
    fi
  fi
  [[ -x /usr/lib/podman/netavark ]] || { echo "up: netavark not found (apt-get install netavark aardvark-dns)" >&2; return 1; }
  mkdir -p "$(dirname "$PODMAN_SOCKET")"
  # A daemon outlives this checkout: it runs in /, with its own copy of the configuration
  local conf=/run/stackproof-podman-containers.conf
  cp "$CONTAINERS_CONF" "$conf"
  echo "up: starting podman system service on $PODMAN_SOCKET (log: /var/log/stackproof-podman.log)"
  (cd / && CONTAINERS_CONF="$conf" exec nohup podman system service --time=0 "$PODMAN_HOST" \
     >/var/log/stackproof-podman.log 2>&1) &
  echo $! >"$PODMAN_PIDFILE"
  for _ in $(seq 1 30); do
    timeout 5 docker -H "$PODMAN_HOST" version >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "up: podman system service did not answer within 30 s" >&2; return 1
}

copy_images_to_podman() {
  # The images are built by Docker; Podman has its own storage: copy the ones it lacks or holds in
  # another build (an image's ID, the digest of its config, survives the copy), in one `docker save`
  # so the shared base layers travel once.
  local images missing=() image docker_id
  mapfile -t images < <(timeout 60 docker-compose -p "$PROJECT" -f "$STACK_DIR/ai-stack/compose/docker-compose.yml" config --images)
  for image in "${images[@]}"; do
    docker_id="$(timeout 30 docker image inspect -f '{{.Id}}' "$image")"
    [[ "$(timeout 30 podman image inspect -f '{{.Id}}' "$image" 2>/dev/null)" == "${docker_id#sha256:}" ]] || missing+=("$image")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "up: copying ${#missing[@]} image(s) from Docker to Podman"
  timeout 900 bash -c 'docker save "$@" | podman load -q >/dev/null' _ "${missing[@]}"
}

start_podman_healthchecks() {
  # one healthcheck loop per project (see podman-healthchecks.sh), left running like the project
  local pidfile="/run/stackproof-podman-health-$PROJECT.pid"
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then return 0; fi
  (cd / && exec nohup "$STACK_DIR/scripts/podman-healthchecks.sh" "$PROJECT" >/dev/null 2>&1) &
  echo $! >"$pidfile"
}

wait_swarm_healthy() {
  # every service of the stack has all its replicas running, and every task container is healthy
  local deadline=$(( $(date +%s) + $1 )) pending
  while (( $(date +%s) < deadline )); do
    pending="$(timeout 20 docker stack services "$PROJECT" --format '{{.Replicas}}' | awk -F/ '$1 != $2' | wc -l)"
    if [[ "$pending" -eq 0 ]] && ! timeout 20 docker ps --filter "label=com.docker.stack.namespace=$PROJECT" \
         --format '{{.Status}}' | grep -qv '(healthy)'; then
      return 0
    fi
    sleep 2
  done
  timeout 30 docker stack ps --no-trunc "$PROJECT" | tail -20 >&2 || true
  return 1
}
