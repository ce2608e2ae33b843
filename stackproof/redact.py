"""Keeping secrets and hostile text out of every output.

Evidence names a secret by `fingerprint()`, never by value. As a second line of
defence the `Redactor` knows every secret value the suite has seen and scrubs it
from report text and from pytest's own failure output. `clean()` makes any value
from the stack safe to put in a report: text only, no control characters, bounded.
"""

from __future__ import annotations

import hashlib
import re

MAX_TEXT = 2000
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
MIN_SECRET_LEN = 6


def fingerprint(value: bytes | str) -> str:
    """A secret's identity for evidence: sha256 prefix and length, never the value."""
    data = value.encode() if isinstance(value, str) else value
    return f"sha256:{hashlib.sha256(data).hexdigest()[:12]} ({len(data)} bytes)"


def clean(value: object, limit: int = MAX_TEXT) -> str:
    """Text safe for any report: decoded, ANSI and control characters removed, cut at `limit`."""
    if isinstance(value, bytes):
        text = value.decode("utf-8", errors="replace")
    else:
        text = str(value)
    text = _CONTROL.sub("", _ANSI.sub("", text))
    if len(text) > limit:
        text = f"{text[:limit]}… [cut: {len(text) - limit} more characters]"
    return text


class Redactor:
    """Replaces every known secret value in a text by its fingerprint."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def add(self, value: bytes | str) -> None:
        text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
        for candidate in {text, text.strip()}:
            if len(candidate) >= MIN_SECRET_LEN:
                self._values[candidate] = f"[redacted {fingerprint(candidate)}]"

    def scrub(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, self._values[value])
        return text

    def __bool__(self) -> bool:
        return bool(self._values)
