#!/usr/bin/env bash
# Initialise the cluster on first start (empty volume), set the passwords from the
# secret file on every start, then exec postgres. Passwords are never printed.
set -euo pipefail
: "${PGDATA:?}" "${POSTGRES_USER:=aidb}" "${POSTGRES_DB:=aidb}"
: "${POSTGRES_PASSWORD_FILE:=/run/secrets/postgres_password}"
if [[ ! -r "$POSTGRES_PASSWORD_FILE" ]]; then
  echo "pg-entrypoint: cannot read $POSTGRES_PASSWORD_FILE (uid $(id -u))" >&2
  exit 1
fi
pw="$(tr -d '\n' <"$POSTGRES_PASSWORD_FILE")"
[[ "$pw" =~ ^[A-Za-z0-9]+$ ]] || { echo "pg-entrypoint: password must be alphanumeric" >&2; exit 1; }
single() { postgres --single -D "$PGDATA" -c unix_socket_directories=/tmp postgres >/dev/null; }
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  echo "pg-entrypoint: initialising $PGDATA"
  mkdir -p "$PGDATA"; chmod 0700 "$PGDATA"
  pwfile="$(mktemp /tmp/pwfile.XXXXXX)"
  trap 'rm -f "$pwfile"' EXIT
  printf '%s\n' "$pw" >"$pwfile"
  initdb -D "$PGDATA" -U postgres --pwfile="$pwfile" --auth-local=scram-sha-256 \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"; trap - EXIT
  {
    echo "listen_addresses = '*'"
    echo "password_encryption = 'scram-sha-256'"
  } >>"$PGDATA/postgresql.conf"
  cat >"$PGDATA/pg_hba.conf" <<'HBA'
# TYPE  DATABASE  USER  ADDRESS    METHOD
local   all       all              scram-sha-256
host    all       all   127.0.0.1/32 scram-sha-256
host    all       all   ::1/128    scram-sha-256
host    all       all   all        scram-sha-256
HBA
  printf "CREATE ROLE %s LOGIN;\n" "$POSTGRES_USER" | single
  printf "CREATE DATABASE %s OWNER %s;\n" "$POSTGRES_DB" "$POSTGRES_USER" | single
  echo "pg-entrypoint: cluster ready (role $POSTGRES_USER, database $POSTGRES_DB)"
fi
# Every start: the secret file is the source of truth for the passwords, so a regenerated
# or rotated postgres_password takes effect with a restart (the volume keeps the old one).
printf "ALTER ROLE postgres PASSWORD '%s'; ALTER ROLE %s PASSWORD '%s';\n" "$pw" "$POSTGRES_USER" "$pw" | single
unset pw
exec "$@" -D "$PGDATA"
