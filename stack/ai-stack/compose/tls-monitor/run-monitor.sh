#!/usr/bin/env bash
# tls-monitor loop: check the certificates once at start, then every
# TLS_CHECK_INTERVAL_SECONDS (default 21600 = 6 hours). A check that finds a
# warning/critical/error certificate is logged; the loop keeps running (the
# alerting happens in Prometheus from the metrics file).
set -uo pipefail
interval="${TLS_CHECK_INTERVAL_SECONDS:-21600}"
read -r -a certs <<<"${TLS_CERTS:-/certs/server.crt}"
while :; do
  /usr/local/bin/monitor-tls-certs.sh "${certs[@]}"
  rc=$?
  echo "tls-monitor: check finished rc=$rc at $(date -u +%Y-%m-%dT%H:%M:%SZ); next in ${interval}s"
  sleep "$interval" & wait $!
done
