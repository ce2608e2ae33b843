#!/usr/bin/env bash
# monitor-tls-certs.sh - check TLS certificate expiry and export Prometheus metrics.
#
# Usage: monitor-tls-certs.sh [--warn-days N] [--crit-days N] [--metrics-file FILE] CERT [CERT...]
#   --warn-days N       warning threshold in days (default 30)
#   --crit-days N       critical threshold in days (default 7)
#   --metrics-file FILE Prometheus textfile to write (default $TLS_METRICS_FILE,
#                       else /var/lib/node-exporter/textfile/tls_certs.prom)
#
# Status per certificate:
#   ok        days_left >= warn
#   warning   crit <= days_left < warn
#   critical  days_left < crit (an expired certificate has negative days_left)
#   error     missing, unreadable or not a PEM certificate
# Exit code: 0 all ok, 1 worst is warning, 2 worst is critical, 3 any error
#            (also when the metrics file cannot be written), 64 usage error.
#
# stdout, one line per certificate:
#   <path>: cn=<cn> expires=<ISO 8601 UTC> days_left=<N> status=<status>
#   <path>: status=error reason=<why>   (missing, unreadable, not a certificate, not valid yet)
#
# Metrics file (Prometheus text format, written atomically: temp file in the
# same directory, chmod 0644, mv), all gauges:
#   tls_cert_expiry_timestamp_seconds{path,cn,issuer}  notAfter (unix seconds)
#   tls_cert_days_left{path,cn,issuer}                 floor((notAfter-now)/86400)
#   tls_cert_status{path,cn,issuer}                    0 ok, 1 warning, 2 critical
#   tls_cert_check_success{path}                       1 parsed, 0 error
#   tls_cert_last_check_timestamp_seconds              time of this run
# cn is the subject CN, issuer the issuer DN in RFC 2253 form. Label values are
# escaped per the text format (\\, \", \n).
#
# Requires bash 4.2+, openssl and GNU coreutils (date, timeout, mktemp); runs the
# same on the host and in the tls-monitor container (every 6 hours there, via
# ai-stack/compose/tls-monitor/run-monitor.sh, fed to node-exporter's textfile
# collector).
set -uo pipefail
export TZ=UTC  # printf's %(...)T formats below are UTC

PROG="${0##*/}"
OPENSSL_TIMEOUT=10

usage() {
  echo "Usage: $PROG [--warn-days N] [--crit-days N] [--metrics-file FILE] CERT [CERT...]"
}
usage_error() { echo "$PROG: $*" >&2; usage >&2; exit 64; }

warn_days=30
crit_days=7
metrics_file="${TLS_METRICS_FILE:-/var/lib/node-exporter/textfile/tls_certs.prom}"
certs=()

is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }

while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --warn-days|--crit-days|--metrics-file)
      (($# >= 2)) || usage_error "$1 needs a value"
      case "$1" in
        --warn-days) is_int "$2" || usage_error "--warn-days: not a non-negative integer: $2"; warn_days=$((10#$2)) ;;
        --crit-days) is_int "$2" || usage_error "--crit-days: not a non-negative integer: $2"; crit_days=$((10#$2)) ;;
        --metrics-file) [[ -n "$2" ]] || usage_error "--metrics-file: empty"; metrics_file="$2" ;;
      esac
      shift 2 ;;
    --warn-days=*|--crit-days=*|--metrics-file=*)
      opt="${1%%=*}"; val="${1#*=}"; shift; set -- "$opt" "$val" "$@" ;;
    --) shift; certs+=("$@"); break ;;
    -?*) usage_error "unknown option: $1" ;;
    *) certs+=("$1"); shift ;;
  esac
done
((${#certs[@]})) || usage_error "no certificate given"
command -v openssl >/dev/null 2>&1 || { echo "$PROG: openssl not found" >&2; exit 3; }

# Prometheus label value escaping: backslash, double quote, newline.
esc() {
  local s="${1//\\/\\\\}"
  s="${s//\"/\\\"}"
  s="${s//$'\n'/\\n}"
  printf '%s' "$s"
}

# First CN= attribute of an RFC 2253 DN (handles escaped commas), unescaped, into $cn.
# (Bash only: this runs for every certificate, and a subshell or sed each time costs more than the rest.)
cn_of() {
  local dn="$1" rdn="" c i rest
  cn=""
  local -a rdns=()
  for ((i = 0; i < ${#dn}; i++)); do
    c="${dn:i:1}"
    if [[ "$c" == "\\" ]]; then rdn+="$c${dn:i+1:1}"; ((i++)); continue; fi
    if [[ "$c" == "," || "$c" == "+" ]]; then rdns+=("$rdn"); rdn=""; continue; fi
    rdn+="$c"
  done
  rdns+=("$rdn")
  for rest in "${rdns[@]}"; do
    if [[ "$rest" == CN=* ]]; then
      rest="${rest#CN=}"
      # unescape RFC 2253 backslash escapes for display
      for ((i = 0; i < ${#rest}; i++)); do
        c="${rest:i:1}"
        if [[ "$c" == "\\" && i+1 -lt ${#rest} ]]; then ((i++)); c="${rest:i:1}"; fi
        cn+="$c"
      done
      return 0
    fi
  done
  return 0
}

printf -v now '%(%s)T' -1
worst=0          # 0 ok, 1 warning, 2 critical
any_error=0
m_expiry=() m_days=() m_status=() m_success=()

for cert in "${certs[@]}"; do
  reason=""
  if [[ ! -e "$cert" ]]; then
    reason="missing"
  elif [[ -d "$cert" ]]; then
    reason="is a directory"
  elif [[ ! -r "$cert" ]]; then
    reason="unreadable"
  else
    # one openssl run for the four fields (each run loads OpenSSL's configuration and providers)
    fields="$(timeout "$OPENSSL_TIMEOUT" openssl x509 -in "$cert" -noout -nameopt RFC2253 \
      -subject -issuer -startdate -enddate 2>/dev/null)" || reason="not a PEM certificate (openssl x509 failed)"
  fi
  if [[ -z "$reason" ]]; then
    subject="" issuer="" startdate="" enddate=""
    while IFS= read -r line; do  # RFC 2253 escapes control characters: one line per field
      case "$line" in
        subject=*) subject="${line#subject=}" ;;
        issuer=*) issuer="${line#issuer=}" ;;
        notBefore=*) startdate="${line#notBefore=}" ;;
        notAfter=*) enddate="${line#notAfter=}" ;;
      esac
    done <<<"$fields"
    # both dates in one date run, one line each (a line date cannot parse prints nothing)
    mapfile -t stamps < <(date -u -f - +%s 2>/dev/null <<<"$enddate"$'\n'"$startdate")
    not_after="${stamps[0]:-}" not_before="${stamps[1]:-}"
  fi
  # a certificate that is not valid yet is refused by every client, whatever its days left
  if [[ -z "$reason" ]]; then
    if ((${#stamps[@]} != 2)); then
      reason="cannot parse notAfter '$enddate' or notBefore '$startdate'"
    elif ((not_before > now)); then
      printf -v reason 'not valid yet (notBefore %(%Y-%m-%dT%H:%M:%SZ)T)' "$not_before"
    fi
  fi
  if [[ -n "$reason" ]]; then
    any_error=1
    echo "$cert: status=error reason=$reason"
    m_success+=("tls_cert_check_success{path=\"$(esc "$cert")\"} 0")
    continue
  fi
  subject="${subject# }"; issuer="${issuer# }"
  cn_of "$subject"
  diff=$((not_after - now))
  days_left=$((diff / 86400))
  if ((diff < 0 && diff % 86400 != 0)); then days_left=$((days_left - 1)); fi
  if ((days_left < crit_days)); then
    status=critical; code=2
  elif ((days_left < warn_days)); then
    status=warning; code=1
  else
    status=ok; code=0
  fi
  ((code > worst)) && worst=$code
  printf -v expires '%(%Y-%m-%dT%H:%M:%SZ)T' "$not_after"
  echo "$cert: cn=$cn expires=$expires days_left=$days_left status=$status"
  labels="path=\"$(esc "$cert")\",cn=\"$(esc "$cn")\",issuer=\"$(esc "$issuer")\""
  m_expiry+=("tls_cert_expiry_timestamp_seconds{$labels} $not_after")
  m_days+=("tls_cert_days_left{$labels} $days_left")
  m_status+=("tls_cert_status{$labels} $code")
  m_success+=("tls_cert_check_success{path=\"$(esc "$cert")\"} 1")
done

write_metrics() {
  local dir tmp
  [[ "$metrics_file" == */* ]] && dir="${metrics_file%/*}" || dir=.
  dir="${dir:-/}"
  [[ -d "$dir" ]] || mkdir -p -- "$dir" 2>/dev/null || true
  tmp="$(mktemp "$dir/.tls_certs.prom.XXXXXX" 2>/dev/null)" || return 1
  {
    echo "# HELP tls_cert_expiry_timestamp_seconds Certificate notAfter as a unix timestamp."
    echo "# TYPE tls_cert_expiry_timestamp_seconds gauge"
    ((${#m_expiry[@]})) && printf '%s\n' "${m_expiry[@]}"
    echo "# HELP tls_cert_days_left Whole days until the certificate expires (negative when expired)."
    echo "# TYPE tls_cert_days_left gauge"
    ((${#m_days[@]})) && printf '%s\n' "${m_days[@]}"
    echo "# HELP tls_cert_status Certificate status: 0 ok, 1 warning, 2 critical."
    echo "# TYPE tls_cert_status gauge"
    ((${#m_status[@]})) && printf '%s\n' "${m_status[@]}"
    echo "# HELP tls_cert_check_success 1 if the certificate file was read and parsed, 0 on error."
    echo "# TYPE tls_cert_check_success gauge"
    printf '%s\n' "${m_success[@]}"
    echo "# HELP tls_cert_last_check_timestamp_seconds Unix time of the last certificate check run."
    echo "# TYPE tls_cert_last_check_timestamp_seconds gauge"
    echo "tls_cert_last_check_timestamp_seconds $now"
  } >"$tmp" || { rm -f -- "$tmp"; return 1; }
  chmod 0644 "$tmp" && mv -f -- "$tmp" "$metrics_file" || { rm -f -- "$tmp"; return 1; }
}

if ! write_metrics; then
  echo "$PROG: cannot write metrics file $metrics_file" >&2
  exit 3
fi

((any_error)) && exit 3
exit "$worst"
