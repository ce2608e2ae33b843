"""API-key rotation scripts in generated house styles, for the property test of init's interface reading.

Each style is a correct rotation (what the rotation check demands of any: a new random key that differs
from the old one, put in place by a rename so that no reader sees it half-written, the old mode kept, a
0400 backup of the old key, one audit line with fingerprints only, no key material printed) with its own
command line: the key by name (an operand, the secrets dir by flag or variable) or by path (a flag or a
variable), the audit log by flag, by variable or fixed beside the key, the backup's place, the source of
its random bytes, and how it asks for confirmation. Its usage text documents all of it as such scripts do.
`defect` plants one behaviour defect the reference stack's defect tests plant in its own rotation."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

DEFECTS = {  # defect -> what the rotation check's failure says of it
    "not-atomic": "the key file was seen empty or partial",  # it empties the key file, then writes into it
    "backup-0600": "backup of the old key is not 0400",
    "key-0644": "key left with mode 0644",
    "logs-key": "the audit log holds key material",  # the new key in its audit line
    "prints-key": "the script printed key material",
    "same-key": "the new key equals the old one",  # it writes the old key back
}


@dataclass(frozen=True)
class RotateStyle:
    key_input: tuple[str, str]  # ("operand", "NAME"), ("flag", "--key-file") or ("env", "KEY_FILE")
    dir_input: tuple[str, str]  # with a key by name: ("flag", "--secrets-dir") or ("env", "SECRETS_DIR")
    audit_input: tuple[str, str]  # ("flag", "--audit-log"), ("env", "ROTATION_AUDIT") or ("fixed", "<file name>")
    backup: str  # where the old key goes, relative to the key's dir ({name}, {stamp})
    random: str  # od, head-base64 or openssl
    confirm: str  # "--yes" or "--force" (a flag the synopsis shows), "prompt" (reads y from stdin), "none"

    @property
    def by_name(self) -> bool:
        return self.key_input[0] == "operand"


def styles() -> st.SearchStrategy[RotateStyle]:
    return st.builds(
        RotateStyle,
        key_input=st.sampled_from([("operand", "NAME"), ("operand", "SECRET"), ("flag", "--key-file"),
                                   ("flag", "--file"), ("env", "KEY_FILE")]),
        dir_input=st.sampled_from([("flag", "--secrets-dir"), ("flag", "--dir"), ("env", "SECRETS_DIR")]),
        audit_input=st.sampled_from([("flag", "--audit-log"), ("env", "ROTATION_AUDIT"),
                                     ("fixed", ".rotation-audit.log")]),
        backup=st.sampled_from(["backups/{name}.{stamp}", ".previous/{name}.{stamp}", "{name}.bak.{stamp}"]),
        random=st.sampled_from(["od", "head-base64", "openssl"]),
        confirm=st.sampled_from(["--yes", "--force", "prompt", "none"]),
    )


def usage(style: RotateStyle) -> str:
    """The script's header: synopsis, option and variable lines, where it backs up and logs."""
    synopsis, options, env = ["Usage: keyrotate"], [], []
    if style.confirm in ("--yes", "--force"):
        synopsis.append(f"[{style.confirm}]")
        options.append(f"  {style.confirm}  do not ask before rotating")
    kind, name = style.audit_input
    if kind == "flag":
        synopsis.append(f"[{name} LOG]")
        options.append(f"  {name} LOG  audit log to append one line to")
    elif kind == "env":
        env.append(f"  {name}  audit log to append one line to")
    if style.by_name:
        kind, flag = style.dir_input
        if kind == "flag":
            synopsis.append(f"[{flag} DIR]")
            options.append(f"  {flag} DIR  directory holding the keys")
        else:
            env.append(f"  {flag}  directory holding the keys")
        synopsis.append(style.key_input[1])
    elif style.key_input[0] == "flag":
        synopsis.append(f"{style.key_input[1]} PATH")
        options.append(f"  {style.key_input[1]} PATH  the key file to replace")
    else:
        env.append(f"  {style.key_input[1]}  the key file to replace")
    text = [" ".join(synopsis), "Options:", *options]
    if env:
        text += ["Environment:", *env]
    text.append(f"The old key is kept as {style.backup.format(name='<key>', stamp='<time>')} beside the key (0400).")
    if style.audit_input[0] == "fixed":
        text.append(f"Each rotation appends one line to {style.audit_input[1]} beside the key.")
    if style.confirm == "prompt":
        text.append("Asks for confirmation: answer y [y/N].")
    return "\n".join(f"# {line}" for line in text)


RANDOM = {
    "od": "od -An -vtx1 -N32 /dev/urandom | tr -d ' \\n'",
    "head-base64": "head -c 48 /dev/urandom | base64 -w0",
    "openssl": "openssl rand -hex 32",
}


def script(style: RotateStyle, defect: str | None = None) -> str:
    """The rotation's bash source."""
    parse = []
    if style.confirm in ("--yes", "--force"):
        parse.append(f"    {style.confirm}) sure=1; shift ;;")
    if style.audit_input[0] == "flag":
        parse.append(f'    {style.audit_input[1]}) audit="$2"; shift 2 ;;')
    if style.by_name and style.dir_input[0] == "flag":
        parse.append(f'    {style.dir_input[1]}) dir="$2"; shift 2 ;;')
    if style.key_input[0] == "flag":
        parse.append(f'    {style.key_input[1]}) key="$2"; shift 2 ;;')
    operand = 'name="$1"; shift ;;' if style.by_name else 'echo "unexpected argument: $1" >&2; exit 64 ;;'
    env_lines = []
    if style.audit_input[0] == "env":
        env_lines.append(f'audit="${{{style.audit_input[1]}:-}}"')
    if style.by_name and style.dir_input[0] == "env":
        env_lines.append(f'dir="${{{style.dir_input[1]}:-}}"')
    if style.key_input[0] == "env":
        env_lines.append(f'key="${{{style.key_input[1]}:-}}"')
    if style.by_name:
        locate = '[[ -n "$dir" && -n "$name" ]] || { echo "usage: missing key name or dir" >&2; exit 64; }\nkey="$dir/$name"'
    else:
        locate = ('[[ -n "$key" ]] || { echo "usage: missing key file" >&2; exit 64; }\n'
                  'dir="${key%/*}"; [[ "$key" == */* ]] || dir=.; name="${key##*/}"')
    audit_default = f'audit="$dir/{style.audit_input[1]}"' if style.audit_input[0] == "fixed" else \
        '[[ -n "$audit" ]] || { echo "usage: missing audit log" >&2; exit 64; }'
    if style.confirm == "prompt":
        confirm = 'read -r answer || answer=""\n[[ "$answer" == [yY]* ]] || { echo "not confirmed, nothing changed"; exit 1; }'
    elif style.confirm in ("--yes", "--force"):
        confirm = f'((sure)) || {{ echo "refusing without {style.confirm}" >&2; exit 2; }}'
    else:
        confirm = ""
    backup_mode = "0600" if defect == "backup-0600" else "0400"
    key_mode = "0644" if defect == "key-0644" else '"$mode"'
    new_key = 'cat -- "$key"' if defect == "same-key" else RANDOM[style.random]
    if defect == "not-atomic":
        replace = ('chmod u+w -- "$key"; : >"$key"; sleep 0.2; cat -- "$tmp" >"$key"; chmod "$mode" -- "$key"; '
                   'rm -f -- "$tmp"')
    else:
        replace = 'mv -f -- "$tmp" "$key"'
    logged = ' new_key=$(cat -- "$key")' if defect == "logs-key" else ""
    printed = 'echo "rotated: $(cat -- "$key")"' if defect == "prints-key" else 'echo "rotated $name"'
    backup = style.backup.format(name="$name", stamp="$stamp")
    return f"""#!/usr/bin/env bash
{usage(style)}
set -euo pipefail
umask 077
sure=0 audit="" dir="" name="" key=""
{chr(10).join(env_lines)}
while (($#)); do
  case "$1" in
{chr(10).join(parse)}
    -*) echo "unknown option: $1" >&2; exit 64 ;;
    *) {operand}
  esac
done
{locate}
{audit_default}
[[ -f "$key" ]] || {{ echo "no key file: $key" >&2; exit 1; }}
{confirm}
sum() {{ sha256sum | cut -c1-12; }}
old=$(sum <"$key")
mode=$(stat -c '%a' "$key")
stamp=$(date -u +%Y%m%dT%H%M%S.%N)
backup="$dir/{backup}"
mkdir -p -- "${{backup%/*}}"
cp -- "$key" "$backup.tmp" && chmod {backup_mode} "$backup.tmp" && mv -- "$backup.tmp" "$backup"
tmp=$(mktemp "$dir/.rotate.XXXXXX")
{new_key} >"$tmp"
chmod {key_mode} "$tmp"
{replace}
new=$(sum <"$key")
printf '%s rotate key=%s old=%s new=%s%s\\n' "$(date -u +%FT%TZ)" "$name" "$old" "$new" "{logged}" >>"$audit"
{printed}
"""
