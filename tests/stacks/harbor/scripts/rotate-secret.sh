#!/usr/bin/env bash
# rotate-secret.sh - replace one of harbor's secrets with a fresh random value.
#
# Usage: rotate-secret.sh [-y] NAME
#   NAME  a file of secrets/: master_key or postgres_password
#   -y    do not ask for confirmation
#
# The old value is kept as secrets/.previous/NAME.<UTC time> (mode 0400): a rollback is one mv.
# One line per rotation goes to logs/secret-rotation.log (name and sha256 prefixes, never a value).
# Running containers keep the old value until recreated: make rotate-master-key does both.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
yes=0
while getopts "yh" opt; do
  case "$opt" in
    y) yes=1 ;;
    h) sed -n '2,12p' "$0" | cut -c3-; exit 0 ;;
    *) exit 64 ;;
  esac
done
shift $((OPTIND - 1))
(($# == 1)) || { echo "usage: rotate-secret.sh [-y] NAME" >&2; exit 64; }
name="$1" dir="$root/secrets"
case "$name" in
  master_key) new() { printf 'sk-harbor-%s' "$(openssl rand -hex 32)"; } ;;
  postgres_password) new() { openssl rand -base64 33 | tr -d '\n'; } ;;
  *) echo "rotate-secret.sh: cannot rotate $name" >&2; exit 64 ;;
esac
[[ -f "$dir/$name" ]] || { echo "rotate-secret.sh: $dir/$name not found (scripts/setup.sh)" >&2; exit 1; }
if ((!yes)); then
  read -r -p "Rotate $name? [y/N] " answer || answer=""
  [[ "$answer" == [yY]* ]] || { echo "not rotated"; exit 1; }
fi

umask 077
mkdir -p "$dir/.previous" "$root/logs"
stamp="$(date -u +%Y%m%dT%H%M%S.%N)"
old_sum="$(sha256sum "$dir/$name" | cut -c1-12)"
cp "$dir/$name" "$dir/.previous/$name.$stamp"
chmod 0400 "$dir/.previous/$name.$stamp"
tmp="$(mktemp "$dir/.$name.XXXXXX")"
new >"$tmp"
chmod 0400 "$tmp"
mv -f "$tmp" "$dir/$name"
printf '%s rotated=%s by=%s old=%s new=%s\n' "$(date -u +%FT%TZ)" "$name" "$(id -un 2>/dev/null || id -u)" \
  "$old_sum" "$(sha256sum "$dir/$name" | cut -c1-12)" >>"$root/logs/secret-rotation.log"
echo "rotated $name; recreate the services that mount it (scripts/deploy.sh up -d --force-recreate)"
