"""Runs of the suite's own pure tools, made once per content in a process.

promtool checking or unit-testing rule files gives a result that depends only on its command line
and the bytes of the files it reads. A process that runs the suite many times over copies of one
stack (the self-tests run it hundreds of times in one worker, most copies with the same rules)
would start the same Go program on the same bytes each time, about 0.1 s of CPU a run. Here such a
run is keyed by the tool (its path, size and mtime), the command and every file it reads, by name
as seen from its working directory and by content, and its result kept for the process. A single
`stackproof validate` gains nothing and loses nothing.

Only for our tools and only with every file they read named: never for the stack's own code, whose
result may depend on the clock or on what an earlier run left behind. A file that cannot be read
whole (gone, not a regular file, too large) makes the run uncached, and the tool says what is wrong.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

from stackproof.errors import StackError
from stackproof.io import proc
from stackproof.io.files import read_stack_file

KEPT = 512  # results kept (least recently used dropped first); each a tool's short output
_results: OrderedDict[str, subprocess.CompletedProcess] = OrderedDict()


def run(cmd: Sequence[str], *, reads: Sequence[Path], cwd: Path, timeout: float, where: str) -> subprocess.CompletedProcess:
    """`proc.run(cmd, cwd=cwd)`, or the result of the same run on the same bytes made earlier in this process.
    `reads`: every file the tool reads (absolute paths); a run that fails or is stopped is not kept."""
    key = _key(cmd, reads, cwd)
    if key is not None and key in _results:
        _results.move_to_end(key)
        return _results[key]
    done = proc.run(list(cmd), timeout=timeout, cwd=cwd, where=where)
    if key is not None:
        _results[key] = done
        while len(_results) > KEPT:
            _results.popitem(last=False)
    return done


def _key(cmd: Sequence[str], reads: Sequence[Path], cwd: Path) -> str | None:
    """The run's identity, None when it has none (the tool not found, an input not readable whole)."""
    tool = shutil.which(cmd[0])
    if tool is None:
        return None
    digest = hashlib.sha256()
    info = os.stat(tool)
    digest.update(repr((tool, info.st_size, info.st_mtime_ns, list(cmd))).encode())
    for path in sorted(set(reads)):
        name = os.path.relpath(path, cwd)  # as the tool finds it from its working directory
        try:
            content = read_stack_file(path, name)
        except StackError:
            return None
        digest.update(repr((name, len(content))).encode())
        digest.update(content)
    return digest.hexdigest()
