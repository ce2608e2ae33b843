"""What a service's Dockerfile copies from its build context into its image (`COPY`, `ADD`).

A config file that no volume mounts may still be the one a service reads: its Dockerfile bakes it into the image.
Only what the final stage holds counts: its copies from the build context, and those an earlier stage made that it
takes with `COPY --from=<stage>`, each with the image path it lands at (a relative destination is under the last
`WORKDIR`).

Hand-written rather than dockerfile-parse: that library reads and writes the file at a path of its own (its
`content` setter writes the Dockerfile back), outside stackproof/io, which alone reads a stack's files, bounded; and
the part needed here, the sources and destination of one instruction, is a split of its arguments.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from stackproof.errors import StackError
from stackproof.io.files import read_stack_text

MAX_DOCKERFILE_BYTES = 256 * 1024
INSTRUCTION = re.compile(r"^\s*(COPY|ADD|WORKDIR|FROM)\s+(.*)$", re.I)


@dataclass(frozen=True)
class ImageCopy:
    """One source of a COPY or ADD, on the host, and where it lands in the image."""

    source: Path
    target: str  # the image path of the source (a dir's contents land under it)
    line: int

    def image_path_of(self, path: Path) -> str | None:
        """Where a host file lands in the image through this copy, None when the copy does not take it."""
        path = Path(posixpath.normpath(str(path)))
        if path == self.source:
            return self.target
        if self.source in path.parents:
            return posixpath.join(self.target, path.relative_to(self.source).as_posix())
        return None


def image_copies(stack, svc) -> list[ImageCopy]:
    """The copies a service's Dockerfile makes from its build context (inside the stack dir only), in order."""
    context = svc.build_context
    if context is None or not stack.inside(context):
        return []
    dockerfile = context / (svc.dockerfile or "Dockerfile")
    if not stack.inside(dockerfile) or not dockerfile.is_file():
        return []
    try:
        text = read_stack_text(dockerfile, stack.rel(dockerfile), MAX_DOCKERFILE_BYTES)
    except StackError:
        return []
    stages: dict[str, list[ImageCopy]] = {}  # each stage's copies from the context, by its name and number
    copies: list[ImageCopy] = []
    workdir = "/"
    for line, instruction in _instructions(text):
        match = INSTRUCTION.match(instruction)
        if match is None:
            continue
        keyword, arguments = match.group(1).upper(), match.group(2).strip()
        if keyword == "FROM":  # a new stage: what the image holds is the last stage's
            words = arguments.split()
            copies, workdir = [], "/"
            stages[str(len(stages))] = copies
            if len(words) >= 3 and words[-2].upper() == "AS":
                stages[words[-1]] = copies
            continue
        if keyword == "WORKDIR":
            workdir = posixpath.join(workdir, arguments.strip("\"'"))
            continue
        words = _arguments(arguments)
        stage = next((word.split("=", 1)[1] for word in words if word.startswith("--from=")), None)
        paths = [word for word in words if not word.startswith("--")]
        if len(paths) < 2:
            continue
        *sources, destination = paths
        destination = posixpath.join(workdir, destination)
        into_dir = destination.endswith("/") or len(sources) > 1
        if stage is not None:  # another stage's files: those of them it copied from the context come along
            for source in sources:
                for earlier in stages.get(stage, []):
                    moved = _moved(earlier.target, posixpath.join("/", source), destination, into_dir)
                    if moved is not None:
                        copies.append(ImageCopy(earlier.source, moved, line))
            continue
        for source in sources:
            host = Path(posixpath.normpath(str(context / source)))
            if not stack.inside(host) or any(ch in source for ch in "*?["):
                continue  # outside the context, or a pattern: not followed
            lands = posixpath.join(destination, host.name) if into_dir and not host.is_dir() else destination
            copies.append(ImageCopy(host, posixpath.normpath(lands), line))
    return copies


def _moved(path: str, source: str, destination: str, into_dir: bool) -> str | None:
    """Where an earlier stage's image path lands through `COPY --from=<stage> source destination`."""
    path, source = posixpath.normpath(path), posixpath.normpath(source)
    if path == source:
        return posixpath.join(destination, posixpath.basename(path)) if into_dir else posixpath.normpath(destination)
    if path.startswith(source.rstrip("/") + "/"):
        return posixpath.normpath(posixpath.join(destination, path[len(source.rstrip("/")) + 1:]))
    return None


def _instructions(text: str) -> list[tuple[int, str]]:
    """(first line, instruction) with backslash continuations joined and comments left out."""
    found, current, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if not current:
            start = number
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        found.append((start, current + stripped))
        current = ""
    if current:
        found.append((start, current))
    return found


def _arguments(text: str) -> list[str]:
    """An instruction's arguments: the JSON array form, else split as a shell would (flags kept)."""
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            return []
        return [str(word) for word in parsed] if isinstance(parsed, list) else []
    try:
        return shlex.split(text)
    except ValueError:
        return []


def copied_into_image(stack, svc, path: Path) -> tuple[str, str] | None:
    """(the image path, where the Dockerfile says it) when the service's image holds the host file `path`."""
    for copy in image_copies(stack, svc):
        target = copy.image_path_of(path)
        if target is not None:
            dockerfile = (svc.build_context / (svc.dockerfile or "Dockerfile"))
            return target, f"{stack.rel(dockerfile)}:{copy.line}"
    return None
