#!/usr/bin/env bash
# setup.sh - generate what harbor's repository never keeps (see secrets/README.md):
# secrets/{master_key,postgres_password,slack_webhook_url}, nginx/certs/harbor.{crt,key}
# and compose/.env. Existing files are kept; run it again after a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 077
mkdir -p secrets nginx/certs
chmod 0700 secrets

make_secret() {  # NAME COMMAND...: the command prints the value
  local name="$1"; shift
  if [[ ! -s "secrets/$name" ]]; then
    "$@" >"secrets/$name.tmp" && mv "secrets/$name.tmp" "secrets/$name"
  fi
  chmod 0400 "secrets/$name"
}
make_secret master_key sh -c 'printf "sk-harbor-%s" "$(openssl rand -hex 32)"'
make_secret postgres_password sh -c 'openssl rand -base64 33 | tr -d "\n"'
# Production puts the real incoming-webhook URL here (ops vault); a placeholder elsewhere.
make_secret slack_webhook_url sh -c 'printf "https://hooks.slack.com/services/T0HARBOR/B0ALERTS/%s" "$(openssl rand -hex 12)"'

if [[ ! -s nginx/certs/harbor.crt ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 397 -subj "/CN=gateway.harbor.internal" \
    -addext "subjectAltName=DNS:gateway.harbor.internal" \
    -keyout nginx/certs/harbor.key -out nginx/certs/harbor.crt 2>/dev/null
fi
chmod 0600 nginx/certs/harbor.key
chmod 0644 nginx/certs/harbor.crt

# The services that read them run as their owner (compose bind-mounts file secrets as they
# are on the host): as root, a dedicated uid/gid 10001 owns them; else the caller.
owner_uid="$(id -u)" owner_gid="$(id -g)"
if ((owner_uid == 0)); then
  owner_uid=10001 owner_gid=10001
  chown "$owner_uid:$owner_gid" secrets secrets/master_key secrets/postgres_password \
    secrets/slack_webhook_url nginx/certs/harbor.key
fi
printf 'HARBOR_UID=%s\nHARBOR_GID=%s\n' "$owner_uid" "$owner_gid" >compose/.env
chmod 0644 compose/.env
echo "setup.sh: secrets/, nginx/certs/ and compose/.env ready"
