#!/usr/bin/env bash
# Initialise the cluster on first start (empty volume), then exec postgres.
# The superuser password and the aidb role password come from the secret file;
# they are never printed.
set -euo pipefail
: "${PGDATA:?}" "${POSTGRES_USER:=aidb}" "${POSTGRES_DB:=aidb}"
: "${POSTGRES_PASSWORD_FILE:=/run/secrets/postgres_password}"
if [[ ! -r "$POSTGRES_PASSWORD_FILE" ]]; then
  echo "pg-entrypoint: cannot read $POSTGRES_PASSWORD_FILE (uid $(id -u))" >&2
  exit 1
fi
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  echo "pg-entrypoint: initialising $PGDATA"
  mkdir -p "$PGDATA"; chmod 0700 "$PGDATA"
  pwfile="$(mktemp /tmp/pwfile.XXXXXX)"
  trap 'rm -f "$pwfile"' EXIT
  tr -d '\n' <"$POSTGRES_PASSWORD_FILE" >"$pwfile"; echo >>"$pwfile"
  initdb -D "$PGDATA" -U postgres --pwfile="$pwfile" --auth-local=scram-sha-256 \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
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
  pw="$(tr -d '\n' <"$POSTGRES_PASSWORD_FILE")"
  [[ "$pw" =~ ^[A-Za-z0-9]+$ ]] || { echo "pg-entrypoint: password must be alphanumeric" >&2; exit 1; }
  printf "CREATE ROLE %s LOGIN PASSWORD '%s';\n" "$POSTGRES_USER" "$pw" \
    | postgres --single -D "$PGDATA" -c unix_socket_directories=/tmp postgres >/dev/null
  printf "CREATE DATABASE %s OWNER %s;\n" "$POSTGRES_DB" "$POSTGRES_USER" \
    | postgres --single -D "$PGDATA" -c unix_socket_directories=/tmp postgres >/dev/null
  unset pw
  rm -f "$pwfile"; trap - EXIT
  echo "pg-entrypoint: cluster ready (role $POSTGRES_USER, database $POSTGRES_DB)"
fi
exec "$@" -D "$PGDATA"
