#!/usr/bin/env bash
# rotate-api-key.sh - rotate a file secret (default: the stack API key) atomically.
#
# Usage: rotate-api-key.sh [--secrets-dir DIR] [--audit-log FILE] [--yes] [--restart] [SECRET_NAME]
#   SECRET_NAME     secret file name in the secrets dir (default stack_api_key)
#   --secrets-dir   default <stack>/ai-stack/compose/secrets
#   --audit-log     default <stack>/ai-stack/compose/logs/key-rotation.log
#                   (directory created 0700, file 0600)
#   --yes           do not ask; without it the script asks on a tty and refuses
#                   (exit 2) when stdin is not a tty
#   --restart       afterwards restart the compose services that mount the secret
#                   (docker-compose -p ai-stack -f <compose file> restart SERVICE...)
#
# What it does, under an exclusive lock on the secrets dir (flock):
#   1. backs up the old value to <secrets-dir>/backups/<name>.<UTC timestamp, to the microsecond>
#      (dir 0700, file 0400);
#   2. writes 32 random bytes of /dev/urandom as hex (always different from
#      the old value) to a temp file in the same directory, sets the old mode
#      (0400, or 0600 if it was 0600) and, as root, the old owner, then renames it
#      over the key with mv -f: a reader never sees an empty or partial key;
#   3. appends one audit line (fingerprints only, never key material):
#      <ISO8601 UTC> action=rotate secret=<name> user=<user> old_sha256=<12 hex> new_sha256=<12 hex> backup=<path>
# Works as any unprivileged user who owns the secrets dir.
#
# Containers: Compose bind-mounts file secrets, and a bind mount keeps the old
# inode after the rename, so running services keep seeing the OLD key until
# they are restarted. Use --restart (or restart them yourself) after rotating.
#
# Exit: 0 rotated, 1 failure, 2 refused (no tty and no --yes), 64 usage error.
# Never prints a key.
set -euo pipefail
umask 077
export TZ=UTC  # the printf %(...)T timestamps below are UTC

# Bash builtins where a builtin does the job: each program started costs more than the rest of the work.
PROG="${0##*/}"
here="${BASH_SOURCE[0]}"
[[ "$here" == */* ]] && here="${here%/*}" || here=.
STACK_DIR="$(cd "${here:-/}/.." && pwd)"
COMPOSE_FILE="${AI_STACK_COMPOSE_FILE:-$STACK_DIR/ai-stack/compose/docker-compose.yml}"
secrets_dir="$STACK_DIR/ai-stack/compose/secrets"
audit_log="$STACK_DIR/ai-stack/compose/logs/key-rotation.log"
assume_yes=0
restart=0
name=""
T=30

usage() { echo "Usage: $PROG [--secrets-dir DIR] [--audit-log FILE] [--yes] [--restart] [SECRET_NAME]"; }
usage_error() { echo "$PROG: $*" >&2; usage >&2; exit 64; }
die() { echo "$PROG: ERROR: $*" >&2; exit 1; }

while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    -y|--yes) assume_yes=1; shift ;;
    --restart) restart=1; shift ;;
    --secrets-dir|--audit-log)
      (($# >= 2)) && [[ -n "$2" ]] || usage_error "$1 needs a value"
      [[ "$1" == --secrets-dir ]] && secrets_dir="$2" || audit_log="$2"
      shift 2 ;;
    --secrets-dir=*) secrets_dir="${1#*=}"; shift ;;
    --audit-log=*) audit_log="${1#*=}"; shift ;;
    -?*) usage_error "unknown option: $1" ;;
    *) [[ -z "$name" ]] || usage_error "only one SECRET_NAME"; name="$1"; shift ;;
  esac
done
name="${name:-stack_api_key}"
[[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || usage_error "bad secret name: $name"

key="$secrets_dir/$name"
[[ -d "$secrets_dir" ]] || die "secrets dir not found: $secrets_dir"
[[ -f "$key" && ! -L "$key" ]] || die "secret not found (or not a regular file): $key"
[[ -r "$key" ]] || die "cannot read $key as $(id -un 2>/dev/null || id -u)"
[[ -w "$secrets_dir" ]] || die "cannot write to $secrets_dir as $(id -un 2>/dev/null || id -u)"
for c in od sha256sum flock; do command -v "$c" >/dev/null || die "$c not found"; done

if ((!assume_yes)); then
  if [[ ! -t 0 ]]; then
    echo "$PROG: refusing to rotate $name: stdin is not a tty (pass --yes to confirm)" >&2
    exit 2
  fi
  read -r -p "Rotate secret '$name' in $secrets_dir? Clients using the old value will get 401. [y/N] " answer
  [[ "$answer" =~ ^[Yy]([Ee][Ss])?$ ]] || { echo "$PROG: aborted, nothing changed"; exit 1; }
fi

# audit log must be writable before anything changes
[[ "$audit_log" == */* ]] && audit_dir="${audit_log%/*}" || audit_dir=.
audit_dir="${audit_dir:-/}"
if [[ ! -d "$audit_dir" ]]; then
  mkdir -p -- "$audit_dir" || die "cannot create audit log dir $audit_dir"
  chmod 0700 "$audit_dir"
fi
if [[ ! -e "$audit_log" ]]; then
  (umask 077; : >>"$audit_log") || die "cannot create audit log $audit_log"
  chmod 0600 "$audit_log"
fi
[[ -w "$audit_log" ]] || die "audit log not writable: $audit_log"

# serialise rotations of this secrets dir (lock on the directory itself: no extra file)
exec 9<"$secrets_dir"
flock -w "$T" 9 || die "another rotation holds the lock on $secrets_dir"

fp() { local sum; sum="$(sha256sum)"; printf '%s' "${sum:0:12}"; }
old_fp="$(fp <"$key")"
old_mode="$(stat -c '%a' "$key")"
[[ "$old_mode" == 600 ]] && new_mode=0600 || new_mode=0400

# 1. backup
backups="$secrets_dir/backups"
mkdir -p "$backups"; chmod 0700 "$backups"
now="$EPOCHREALTIME"  # seconds.microseconds
printf -v stamp '%(%Y%m%dT%H%M%S)T.%s000Z' "${now%.*}" "${now#*.}"
backup="$backups/$name.$stamp"
n=0
while [[ -e "$backup" ]]; do n=$((n + 1)); backup="$backups/$name.$stamp.$n"; done
tmpb="$(mktemp "$backups/.$name.XXXXXX")"
cat -- "$key" >"$tmpb" && chmod 0400 "$tmpb" && mv -f -- "$tmpb" "$backup" \
  || { rm -f -- "$tmpb"; die "backup failed"; }

# 2. new key, atomically
tmpk="$(mktemp "$secrets_dir/.$name.XXXXXX")"
trap 'rm -f -- "$tmpk"' EXIT
for _ in 1 2 3; do
  # od, not `openssl rand -hex 32`: the same kernel random bytes, without loading OpenSSL (16 ms a run)
  timeout 10 od -An -vtx1 -N32 /dev/urandom | tr -d ' \n' >"$tmpk" || die "reading /dev/urandom failed"
  new_key=""; read -r new_key <"$tmpk" || true
  [[ ${#new_key} -eq 64 ]] || die "generated key has the wrong length"
  new_fp="$(fp <"$tmpk")"
  [[ "$new_fp" == "$old_fp" ]] || break
done
cmp -s -- "$tmpk" "$key" && die "could not generate a different key"
chmod "$new_mode" "$tmpk"
if ((EUID == 0)); then chown --reference="$key" "$tmpk"; fi
mv -f -- "$tmpk" "$key" || die "could not replace $key"
trap - EXIT

# 3. audit (fingerprints only)
user="$(id -un 2>/dev/null || echo "uid$(id -u)")"
printf -v now '%(%Y-%m-%dT%H:%M:%SZ)T' -1
printf '%s action=rotate secret=%s user=%s old_sha256=%s new_sha256=%s backup=%s\n' \
  "$now" "$name" "$user" "$old_fp" "$new_fp" "$backup" >>"$audit_log"
exec 9<&-

echo "$PROG: rotated $name (old_sha256=$old_fp new_sha256=$new_fp), backup $backup, audit $audit_log"

if ((restart)); then
  command -v docker-compose >/dev/null || die "--restart: docker-compose not found"
  services="$(timeout "$T" docker-compose -p ai-stack -f "$COMPOSE_FILE" config --format json 2>/dev/null \
    | python3 -c '
import json, sys
name = sys.argv[1]
cfg = json.load(sys.stdin)
for svc, spec in sorted(cfg.get("services", {}).items()):
    for s in spec.get("secrets") or []:
        if (s.get("source") if isinstance(s, dict) else s) == name:
            print(svc)
            break
' "$name")" || die "--restart: cannot read $COMPOSE_FILE"
  if [[ -z "$services" ]]; then
    echo "$PROG: no service mounts $name, nothing to restart"
  else
    # shellcheck disable=SC2086
    timeout 180 docker-compose -p ai-stack -f "$COMPOSE_FILE" restart $services \
      || die "--restart: restart of $(echo $services) failed"
    # wait (bounded) until the restarted services report healthy again
    deadline=$((SECONDS + 120))
    for svc in $services; do
      cid="$(timeout "$T" docker-compose -p ai-stack -f "$COMPOSE_FILE" ps -q "$svc" 2>/dev/null | head -1)"
      [[ -n "$cid" ]] || continue
      while :; do
        health="$(timeout 10 docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$cid" 2>/dev/null || echo unknown)"
        [[ "$health" == healthy || "$health" == running ]] && break
        ((SECONDS < deadline)) || die "--restart: $svc not healthy after restart (status $health)"
        sleep 1
      done
    done
    echo "$PROG: restarted $(echo $services) so they read the new $name (healthy)"
  fi
else
  echo "$PROG: running containers keep the old key until restarted (bind mounts pin the old inode); use --restart"
fi
