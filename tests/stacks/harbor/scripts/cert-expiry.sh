#!/usr/bin/env bash
# cert-expiry.sh - days until a certificate expires, for node-exporter's textfile collector.
#
# Usage: cert-expiry.sh [-w DAYS] [-c DAYS] [-o FILE] CERT
#   -w DAYS   warning below DAYS days left (default 30)
#   -c DAYS   critical below DAYS days left (default 7)
#   -o FILE   metrics file to write (default /textfile/cert_expiry.prom)
#
# Prints one line, Nagios style: OK|WARNING|CRITICAL|UNKNOWN - <cert>: <what>
# Exit: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (no such file, not a certificate)
#
# Metrics (gauges; written to a temp file, then renamed over FILE):
#   ssl_cert_not_after{cert,cn,issuer}     notAfter, unix time
#   ssl_cert_days_left{cert,cn,issuer}     whole days left, negative once expired
#   ssl_cert_status{cert,cn,issuer}        0 ok, 1 warning, 2 critical
#   ssl_cert_read_success{cert}            1 read, 0 could not read it
set -uo pipefail

warn=30 crit=7 out=/textfile/cert_expiry.prom
while getopts "w:c:o:h" opt; do
  case "$opt" in
    w) warn="$OPTARG" ;;
    c) crit="$OPTARG" ;;
    o) out="$OPTARG" ;;
    h) sed -n '2,17p' "$0" | cut -c3-; exit 0 ;;
    *) echo "UNKNOWN - usage: cert-expiry.sh [-w DAYS] [-c DAYS] [-o FILE] CERT" >&2; exit 3 ;;
  esac
done
shift $((OPTIND - 1))
(($# == 1)) || { echo "UNKNOWN - usage: cert-expiry.sh [-w DAYS] [-c DAYS] [-o FILE] CERT" >&2; exit 3; }
cert="$1"

q() { local s="${1//\\/\\\\}"; s="${s//\"/\\\"}"; printf '%s' "${s//$'\n'/\\n}"; }
write() {
  local tmp
  tmp="$(mktemp "${out%/*}/.cert_expiry.XXXXXX")" || exit 3
  printf '%s\n' "$@" >"$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$out" || { rm -f "$tmp"; exit 3; }
}
unknown() {
  write "# TYPE ssl_cert_read_success gauge" "ssl_cert_read_success{cert=\"$(q "$cert")\"} 0"
  echo "UNKNOWN - $cert: $1"
  exit 3
}

[[ -r "$cert" ]] || unknown "no readable file"
end="$(openssl x509 -in "$cert" -noout -enddate 2>/dev/null)" || unknown "not a PEM certificate"
subject="$(openssl x509 -in "$cert" -noout -subject -nameopt RFC2253 2>/dev/null)" || unknown "no subject"
issuer="$(openssl x509 -in "$cert" -noout -issuer -nameopt RFC2253 2>/dev/null)" || unknown "no issuer"
not_after="$(date -u -d "${end#notAfter=}" +%s)" || unknown "unreadable notAfter"
subject="${subject#subject=}"; subject="${subject# }"
issuer="${issuer#issuer=}"; issuer="${issuer# }"
cn="$(sed -nE 's/^(.*,)?CN=(([^,\\]|\\.)*).*$/\2/p' <<<"$subject" | sed -E 's/\\(.)/\1/g')"

left=$((not_after - $(date -u +%s)))
days=$((left / 86400))
((left < 0 && left % 86400 != 0)) && days=$((days - 1))
if ((days < crit)); then status=2 word=CRITICAL code=2
elif ((days < warn)); then status=1 word=WARNING code=1
else status=0 word=OK code=0; fi

labels="cert=\"$(q "$cert")\",cn=\"$(q "$cn")\",issuer=\"$(q "$issuer")\""
write "# TYPE ssl_cert_not_after gauge" "ssl_cert_not_after{$labels} $not_after" \
  "# TYPE ssl_cert_days_left gauge" "ssl_cert_days_left{$labels} $days" \
  "# TYPE ssl_cert_status gauge" "ssl_cert_status{$labels} $status" \
  "# TYPE ssl_cert_read_success gauge" "ssl_cert_read_success{cert=\"$(q "$cert")\"} 1"
echo "$word - $cert: $cn expires in $days days ($(date -u -d "@$not_after" +%F))"
exit "$code"
