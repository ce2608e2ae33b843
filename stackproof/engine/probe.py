"""The file probe: every file fact a run needs from one container, in one exec.

A live run asks the same containers the same questions from several checks (the mode, owner
and readability of every secret, who the service's process is). Asked one `docker exec` at a
time that is dozens of round trips; here each container gets one exec of a small POSIX `sh`
script that answers all of them in machine-readable lines, the containers are probed
concurrently (bounded pool), and the result is kept for the whole run (`LiveStack.probes`).

Hand-written because no library probes a container over `docker exec` in one call: testinfra
(used for local files) spends one exec per fact. The script uses only POSIX sh and `ls -lnLd`
(with `stat` and `sha256sum` where the image has them), so it runs in minimal images too.

Output lines, tab-separated; paths are never echoed back, only their index in the arguments:
    id      <exec uid> <exec gid>                who the probe ran as
    proc    <pid 1 uid> <pid 1 gid>              the service's process (effective ids of PID 1)
    file    <i> missing
    file    <i> error                            it exists, but neither stat nor ls could read it
    file    <i> stat <raw mode, hex> <uid> <gid> <readable 0|1> <sha256 or ->
    file    <i> ls <ls -lnLd mode string> <uid> <gid> <readable 0|1> <sha256 or ->
"""

from __future__ import annotations

import stat as statmod
from dataclasses import dataclass

from stackproof.errors import StackError

PROBE_SCRIPT = r"""
set -u
printf 'id\t%s\t%s\n' "$(id -u)" "$(id -g)"
pid1() { while IFS= read -r line; do case $line in Uid:*) set -- $line; u=$3;; Gid:*) set -- $line; g=$3;; esac; done </proc/1/status; printf 'proc\t%s\t%s\n' "${u:--}" "${g:--}"; }
pid1 2>/dev/null || printf 'proc\t-\t-\n'
i=0
for arg in "$@"; do
  i=$((i+1)); p=$arg
  if [ ! -e "$p" ]; then printf 'file\t%s\tmissing\n' "$i"; continue; fi
  r=0; [ -r "$p" ] && r=1
  h=-
  if [ $r = 1 ] && [ -f "$p" ] && command -v sha256sum >/dev/null 2>&1; then h=$(sha256sum <"$p" 2>/dev/null); h=${h%% *}; fi
  if s=$(stat -L -c '%f %u %g' -- "$p" 2>/dev/null); then
    set -- $s; printf 'file\t%s\tstat\t%s\t%s\t%s\t%s\t%s\n' "$i" "$1" "$2" "$3" "$r" "${h:--}"
  elif s=$(ls -lnLd -- "$p" 2>/dev/null) && [ -n "$s" ]; then
    set -- $s; printf 'file\t%s\tls\t%s\t%s\t%s\t%s\t%s\n' "$i" "$1" "$3" "$4" "$r" "${h:--}"
  else
    printf 'file\t%s\terror\n' "$i"
  fi
done
"""


@dataclass(frozen=True)
class FileFacts:
    """One path as the container sees it."""

    path: str
    exists: bool
    mode: int = 0  # permission bits (07777)
    is_file: bool = False
    uid: int | None = None
    gid: int | None = None
    readable: bool = False  # by the user the probe ran as (see ContainerProbe.readable_by_process)
    sha256: str | None = None  # of the content, when readable and the image has sha256sum


@dataclass
class ContainerProbe:
    """What one container answered: who its process is, and the facts of every probed path."""

    container: str
    exec_ids: tuple[int, int]
    process_ids: tuple[int, int] | None
    files: dict[str, FileFacts]
    process_view: dict[str, FileFacts] | None = None  # the same paths probed as the process's user, when it differs

    def file(self, path: str) -> FileFacts:
        try:
            return self.files[path]
        except KeyError:
            raise StackError(f"container {self.container}: {path} was not probed") from None

    def readable_by_process(self, path: str) -> bool:
        """Whether the service's process (PID 1's effective ids) can read `path`: the probe's own `test -r`
        when it ran as that user, else the answer of the probe run as that user."""
        view = self.files if self.process_view is None else self.process_view
        return view[path].readable


def parse(container: str, paths: list[str], output: bytes) -> ContainerProbe:
    """Read the probe's lines; anything unexpected is one StackError naming the container."""
    exec_ids, process_ids, files = None, None, {}
    for raw in output.decode("utf-8", errors="replace").splitlines():
        fields = raw.split("\t")
        try:
            if fields[0] == "id":
                exec_ids = (int(fields[1]), int(fields[2]))
            elif fields[0] == "proc":
                process_ids = None if "-" in fields[1:3] else (int(fields[1]), int(fields[2]))
            elif fields[0] == "file":
                path = paths[int(fields[1]) - 1]
                if fields[2] == "error":
                    raise StackError(f"container {container}: {path} exists but cannot be stat'ed")
                files[path] = _file_facts(path, fields[2:])
        except (IndexError, ValueError):
            raise StackError(f"container {container}: unreadable probe line {raw[:80]!r}") from None
    if exec_ids is None or set(files) != set(paths):
        raise StackError(f"container {container}: the file probe did not answer for every path "
                         f"({len(files)} of {len(paths)})")
    return ContainerProbe(container, exec_ids, process_ids, files)


def _file_facts(path: str, fields: list[str]) -> FileFacts:
    if fields[0] == "missing":
        return FileFacts(path, exists=False)
    kind, mode_text, uid, gid, readable, digest = fields[:6]
    if kind == "stat":
        raw = int(mode_text, 16)
    else:
        raw = _mode_from_ls(mode_text)
    return FileFacts(path, True, statmod.S_IMODE(raw), statmod.S_ISREG(raw), int(uid), int(gid),
                     readable == "1", None if digest == "-" else digest)


def _mode_from_ls(text: str) -> int:
    """st_mode from `ls -l`'s mode string (e.g. `-r--------`, `drwxrwxrwt`, `-rwsr-x---`)."""
    kinds = {"-": statmod.S_IFREG, "d": statmod.S_IFDIR, "l": statmod.S_IFLNK, "c": statmod.S_IFCHR,
             "b": statmod.S_IFBLK, "p": statmod.S_IFIFO, "s": statmod.S_IFSOCK}
    mode = kinds.get(text[:1], 0)
    bits = text[1:10]
    for char, bit in zip(bits, (0o400, 0o200, 0o100, 0o40, 0o20, 0o10, 0o4, 0o2, 0o1), strict=False):
        if char in "rwxst":  # s/t: the special bit over an execute bit; S/T: without it
            mode |= bit
    for index, bit, chars in ((2, statmod.S_ISUID, "sS"), (5, statmod.S_ISGID, "sS"), (8, statmod.S_ISVTX, "tT")):
        if len(bits) > index and bits[index] in chars:
            mode |= bit
    return mode
