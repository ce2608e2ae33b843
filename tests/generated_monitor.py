"""TLS monitor scripts in generated house styles, for the property test of init's interface reading.

Each style is a correct monitor (the reference monitor's behaviour: expiry metrics per certificate,
ok/warning/critical/error by whole days left, an error for a missing, unparsable or not yet valid
certificate) with its own command line: flag names, inputs by flag, argument or environment variable,
thresholds by flag or fixed inside, metric and label names, exit codes, a status line or none. Its usage
text documents all of it as such scripts do. `defect` plants one behaviour defect the reference
stack's defect tests plant in its own monitor."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

DEFECTS = {
    "exit-zero": "always exits 0",
    "days-rounded-up": "rounds days left up",
    "not-yet-valid-is-ok": "takes a certificate that is not valid yet as valid",
}


@dataclass(frozen=True)
class MonitorStyle:
    warn_flag: str | None  # None: fixed inside, at fixed[0] days
    crit_flag: str | None  # None: fixed inside, at fixed[1] days
    metrics_input: tuple[str, str]  # ("flag", "--textfile") or ("env", "PROM_FILE")
    cert_input: tuple[str, str]  # ("argument", "CERT"), ("flag", "--cert") or ("env", "CERT_FILE")
    prefix: str
    names: tuple[str, str, str, str]  # suffixes of the expiry, days-left, status and success metrics
    labels: tuple[str, str]  # the certificate's path label, its CN label (the issuer's is `issuer`)
    codes: tuple[int, int, int, int]  # ok, warning, critical, error
    status_line: bool
    fixed: tuple[int, int] = (30, 7)  # the warning and critical days a threshold without a flag is fixed at

    def metric(self, role: int) -> str:
        return self.prefix + self.names[role]


def styles() -> st.SearchStrategy[MonitorStyle]:
    return st.builds(
        MonitorStyle,
        warn_flag=st.sampled_from([None, "--warn-days", "--warning", "-w"]),
        crit_flag=st.sampled_from([None, "--crit-days", "--critical", "-c"]),
        metrics_input=st.sampled_from([("flag", "--metrics-file"), ("flag", "--textfile"), ("flag", "-o"),
                                       ("env", "PROM_FILE"), ("env", "TEXTFILE_PATH")]),
        cert_input=st.sampled_from([("argument", "CERT"), ("flag", "--cert"), ("env", "CERT_FILE")]),
        prefix=st.sampled_from(["tls_cert_", "ssl_", "x509_cert_", "certmon_"]),
        names=st.sampled_from([("expiry_timestamp_seconds", "days_left", "status", "check_success"),
                               ("not_after_seconds", "days_remaining", "state", "probe_ok")]),
        labels=st.sampled_from([("path", "cn"), ("file", "common_name"), ("cert", "domain")]),
        codes=st.sampled_from([(0, 1, 2, 3), (0, 10, 20, 5), (0, 1, 2, 4)]),
        status_line=st.booleans(),
    )


def usage(style: MonitorStyle) -> str:
    """The script's header: synopsis, option and variable lines, exit codes, metrics."""
    synopsis = ["Usage: certcheck"]
    lines = []
    for flag, what in ((style.warn_flag, "DAYS  warning threshold in days"), (style.crit_flag, "DAYS  critical threshold in days")):
        if flag:
            synopsis.append(f"[{flag} DAYS]")
            lines.append(f"  {flag} {what}")
    kind, name = style.metrics_input
    if kind == "flag":
        synopsis.append(f"[{name} FILE]")
        lines.append(f"  {name} FILE  Prometheus textfile to write (metrics)")
    kind, cert = style.cert_input
    if kind == "flag":
        synopsis.append(f"{cert} PEM")
        lines.append(f"  {cert} PEM  the certificate file to check")
    elif kind == "argument":
        synopsis.append("CERT")
    env = []
    if style.metrics_input[0] == "env":
        env.append(f"  {style.metrics_input[1]}  Prometheus textfile to write (metrics)")
    if style.cert_input[0] == "env":
        env.append(f"  {style.cert_input[1]}  the certificate file to check")
    fixed = [f"{what} fixed at {days} days" for flag, what, days in
             ((style.warn_flag, "warning", style.fixed[0]), (style.crit_flag, "critical", style.fixed[1])) if not flag]
    ok, warning, critical, error = style.codes
    path_label, cn_label = style.labels
    text = [" ".join(synopsis), "Options:", *lines]
    if env:
        text += ["Environment:", *env]
    if fixed:
        text.append("Thresholds: " + "; ".join(fixed))
    text += ["Exit codes:", f"  {ok}  ok", f"  {warning}  warning", f"  {critical}  critical", f"  {error}  error",
             "Metrics:",
             f"  {style.metric(0)}{{{path_label},{cn_label},issuer}}",
             f"  {style.metric(1)}{{{path_label},{cn_label},issuer}}",
             f"  {style.metric(2)}{{{path_label},{cn_label},issuer}}",
             f"  {style.metric(3)}{{{path_label}}}"]
    if style.status_line:
        text += ["Prints one line per certificate:", "  <path>: status=<status>"]
    return "\n".join(f"# {line}" for line in text)


def script(style: MonitorStyle, defect: str | None = None) -> str:
    """The monitor's bash source."""
    ok, warning, critical, error = style.codes
    path_label, cn_label = style.labels
    parse = []
    for flag, var in ((style.warn_flag, "warn"), (style.crit_flag, "crit")):
        if flag:
            parse.append(f'    {flag}) {var}="$2"; shift 2 ;;')
    if style.metrics_input[0] == "flag":
        parse.append(f'    {style.metrics_input[1]}) out="$2"; shift 2 ;;')
    if style.cert_input[0] == "flag":
        parse.append(f'    {style.cert_input[1]}) cert="$2"; shift 2 ;;')
    env_out = f'out="${{{style.metrics_input[1]}:-}}"' if style.metrics_input[0] == "env" else 'out=""'
    env_cert = f'cert="${{{style.cert_input[1]}:-}}"' if style.cert_input[0] == "env" else 'cert=""'
    positional = 'cert="$1"; shift ;;' if style.cert_input[0] == "argument" else 'echo "unexpected argument: $1" >&2; exit 64 ;;'
    days_expr = "(diff + 86399) / 86400" if defect == "days-rounded-up" else "diff / 86400"
    future_check = "false" if defect == "not-yet-valid-is-ok" else '((not_before > now))'
    exit_line = "exit 0" if defect == "exit-zero" else 'exit "$code"'
    status_print = 'echo "$cert: status=$status"' if style.status_line else 'echo "checked $cert"'
    return f"""#!/usr/bin/env bash
{usage(style)}
set -uo pipefail
warn={style.fixed[0]} crit={style.fixed[1]}
{env_out}
{env_cert}
while (($#)); do
  case "$1" in
{chr(10).join(parse)}
    -*) echo "unknown option: $1" >&2; exit 64 ;;
    *) {positional}
  esac
done
[[ -n "$out" && -n "$cert" ]] || {{ echo "usage: missing certificate or metrics file" >&2; exit 64; }}
esc() {{ local s="${{1//\\\\/\\\\\\\\}}"; s="${{s//\\"/\\\\\\"}}"; printf '%s' "${{s//$'\\n'/\\\\n}}"; }}
cn_of() {{  # the first CN of an RFC 2253 DN, unescaped
  local dn="$1" rdn="" c i
  cn=""
  for ((i = 0; i <= ${{#dn}}; i++)); do
    c="${{dn:i:1}}"
    if [[ "$c" == "\\\\" ]]; then rdn+="${{dn:i+1:1}}"; ((i++)); continue; fi
    if [[ -z "$c" || "$c" == "," || "$c" == "+" ]]; then
      [[ "$rdn" == CN=* && -z "$cn" ]] && cn="${{rdn#CN=}}"
      rdn=""; continue
    fi
    rdn+="$c"
  done
}}
now=$(date -u +%s)
status=error code={error}
fields=""
[[ -f "$cert" ]] && fields="$(openssl x509 -in "$cert" -noout -nameopt RFC2253 -subject -issuer -startdate -enddate 2>/dev/null)"
subject="" issuer="" start="" end=""
while IFS= read -r line; do
  case "$line" in
    subject=*) subject="${{line#subject=}}" ;; issuer=*) issuer="${{line#issuer=}}" ;;
    notBefore=*) start="${{line#notBefore=}}" ;; notAfter=*) end="${{line#notAfter=}}" ;;
  esac
done <<<"$fields"
metrics=""
if [[ -n "$end" ]]; then
  not_after=$(date -u -d "$end" +%s) not_before=$(date -u -d "$start" +%s)
  if ! {future_check}; then
    diff=$((not_after - now)) days=$(({days_expr}))
    ((diff < 0 && diff % 86400 != 0)) && days=$((days - 1))
    if ((days < crit)); then status=critical code={critical} value=2
    elif ((days < warn)); then status=warning code={warning} value=1
    else status=ok code={ok} value=0; fi
    cn_of "$subject"
    l="{path_label}=\\"$(esc "$cert")\\",{cn_label}=\\"$(esc "$cn")\\",issuer=\\"$(esc "${{issuer# }}")\\""
    metrics="# TYPE {style.metric(0)} gauge
{style.metric(0)}{{$l}} $not_after
# TYPE {style.metric(1)} gauge
{style.metric(1)}{{$l}} $days
# TYPE {style.metric(2)} gauge
{style.metric(2)}{{$l}} $value
"
  fi
fi
ok=0; [[ "$status" != error ]] && ok=1
printf '%s# TYPE {style.metric(3)} gauge\\n{style.metric(3)}{{{path_label}="%s"}} %s\\n' "$metrics" "$(esc "$cert")" "$ok" \
  >"$out" || exit {error}
{status_print}
{exit_line}
"""
