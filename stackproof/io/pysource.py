"""Python source of the stack, parsed with `ast` (never run), for the readers that look for declarations in it.

Hand-written around `ast.parse` because a stack's file is untrusted: besides a SyntaxError, CPython's parser
raises MemoryError when its own stack overflows (`x = ----…1`) and its AST builder RecursionError on a deep
expression (`1+1+…`, `a.b.b.…`), a few hundred KB each. Such a file declares nothing a reader can use, and must
not end a run: it is read as no module at all.
"""

from __future__ import annotations

import ast


def parse_python(source: str) -> ast.Module | None:
    """The module `source` parses to, or None when it does not parse (bad syntax, a NUL, or nesting past the
    parser's limits)."""
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
