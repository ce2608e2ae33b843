#!/usr/bin/env python3
"""certcheck - expiry check of TLS certificates, in the manner of a Nagios plugin.

usage: certcheck.py [-h] [-w DAYS] [-c DAYS] [--textfile PATH] CERT [CERT ...]

Reads each PEM certificate (the live one is /etc/letsencrypt/live/<domain>/fullchain.pem,
a symlink certbot moves at each renewal), prints one Nagios line per certificate and writes
the metrics for node-exporter's textfile collector (to a temporary file, then renamed).

  -w, --warning DAYS   WARNING when fewer days are left (default 30: certbot renews then)
  -c, --critical DAYS  CRITICAL when fewer days are left (default 7)
  --textfile PATH      metrics file (default /textfile/certcheck.prom)

Exit status (the worst certificate): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (missing file,
not a certificate).

Metrics:
  certcheck_expiry_timestamp_seconds{path,domain}  notAfter, unix time
  certcheck_days_remaining{path,domain}            whole days left (negative once expired)
  certcheck_status{path,domain}                    0 OK, 1 WARNING, 2 CRITICAL
  certcheck_success{path}                          1 read, 0 UNKNOWN
"""

import argparse
import math
import os
import ssl
import sys
import tempfile
import time

import _ssl

WORDS = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}
RANK = {0: 0, 3: 1, 1: 2, 2: 3}  # which code wins for several certificates: CRITICAL, WARNING, UNKNOWN, OK


def label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def check(path: str, warning: int, critical: int) -> tuple[int, str, list[str]]:
    """(Nagios code, message, metric lines) for one certificate."""
    try:
        info = _ssl._test_decode_cert(path)  # notAfter, subject of the first certificate of the file
        not_after = int(ssl.cert_time_to_seconds(info["notAfter"]))
    except (OSError, ValueError, KeyError) as exc:
        return 3, f"{path}: cannot read a certificate ({exc.__class__.__name__})", [
            f'certcheck_success{{path="{label(path)}"}} 0']
    domain = next((value for rdn in info["subject"] for key, value in rdn if key == "commonName"), "")
    days = math.floor((not_after - time.time()) / 86400)
    code = 2 if days < critical else 1 if days < warning else 0
    labels = f'path="{label(path)}",domain="{label(domain)}"'
    return code, f"{domain}: {days} days left ({path})", [
        f"certcheck_expiry_timestamp_seconds{{{labels}}} {not_after}",
        f"certcheck_days_remaining{{{labels}}} {days}",
        f"certcheck_status{{{labels}}} {code}",
        f'certcheck_success{{path="{label(path)}"}} 1']


def write_textfile(path: str, lines: list[str]) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".certcheck.", dir=directory)
    with os.fdopen(fd, "w") as out:
        for name in ("certcheck_expiry_timestamp_seconds", "certcheck_days_remaining", "certcheck_status",
                     "certcheck_success"):
            out.write(f"# TYPE {name} gauge\n")
            out.writelines(line + "\n" for line in lines if line.startswith(name + "{"))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(prog="certcheck.py")
    parser.add_argument("-w", "--warning", type=int, default=30, metavar="DAYS")
    parser.add_argument("-c", "--critical", type=int, default=7, metavar="DAYS")
    parser.add_argument("--textfile", default="/textfile/certcheck.prom", metavar="PATH")
    parser.add_argument("certs", nargs="+", metavar="CERT")
    args = parser.parse_args()
    worst, lines = 0, []
    for path in args.certs:
        code, message, metrics = check(path, args.warning, args.critical)
        print(f"CERTCHECK {WORDS[code]} - {message}")
        lines += metrics
        worst = max(worst, code, key=RANK.get)
    try:
        write_textfile(args.textfile, lines)
    except OSError as exc:
        print(f"CERTCHECK UNKNOWN - cannot write {args.textfile}: {exc}")
        return 3
    return worst


if __name__ == "__main__":
    sys.exit(main())
