"""Facts about a key that the evidence may show: strength, fingerprints, leaks. Never its value."""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import secrets
import string
from collections import Counter
from dataclasses import dataclass

from stackproof import redact

LEAK_WINDOW = 8  # this many consecutive characters of a key in a log or output count as key material


@dataclass(frozen=True)
class KeyStrength:
    """What the evidence may say about a key: never its value."""

    fingerprint: str
    encoding: str
    random_bytes: int
    entropy: float

    def describe(self) -> str:
        return (f"{self.fingerprint}, {self.encoding}, {self.random_bytes} bytes decoded, "
                f"entropy {self.entropy:.2f} bits/byte")


def decode_key(data: bytes) -> tuple[str, bytes]:
    """The key's random bytes: hex, else base64/base64url if it decodes cleanly, else the raw bytes."""
    text = data.strip()
    if text and len(text) % 2 == 0 and re.fullmatch(rb"[0-9a-fA-F]+", text):
        return "hex", bytes.fromhex(text.decode())
    padded = text + b"=" * (-len(text) % 4)
    for encoding, altchars in (("base64", None), ("base64url", b"-_")):
        try:
            decoded = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if decoded:
            return encoding, decoded
    return "raw", data


def shannon_entropy(data: bytes) -> float:
    """Empirical Shannon entropy of the byte distribution, in bits per byte."""
    if not data:
        return 0.0
    return sum(n / len(data) * math.log2(len(data) / n) for n in Counter(data).values())


def key_strength(data: bytes, redactor: redact.Redactor) -> KeyStrength:
    encoding, decoded = decode_key(data)
    return KeyStrength(redactor.fingerprint(data), encoding, len(decoded), shannon_entropy(decoded))


def strength_problem(strength: KeyStrength, cfg: dict) -> str | None:
    if strength.random_bytes < cfg["min_random_bytes"]:
        return f"{strength.random_bytes} random bytes ({strength.encoding}), need >= {cfg['min_random_bytes']}"
    if strength.entropy < cfg["min_entropy_bits"]:
        return (f"low-entropy key: {strength.entropy:.2f} bits/byte over {strength.random_bytes} bytes, "
                f"need >= {cfg['min_entropy_bits']}")
    return None


class KeyMaterial:
    """Finds a key in what the stack's code wrote: LEAK_WINDOW consecutive characters of any form the
    redactor knows (as is, reversed, hex, base64, URL-encoded, escaped), in any letter case, also when
    the form is cut into pieces (`ab12cd 34ef56`, one piece per line, `piece ab12` lines): the pieces
    that are fragments of a form are joined, whatever lies between them. The stack's outputs are thus
    scanned with the forms that guard the report, and a hit is named by its form, never its value.
    A key shorter than the window cannot be told from ordinary text (and fails the randomness check)."""

    def __init__(self, key: bytes):
        text = redact.text_of(key.strip())
        self._windows: dict[str, str] = {}
        self._fragments: set[str] = set()
        for form, name in redact.named_forms(text).items():
            low = form.lower()
            for start in range(len(low)):
                self._windows.setdefault(low[start:start + LEAK_WINDOW], name)
                self._fragments.update(low[start:start + size] for size in range(MIN_PIECE, LEAK_WINDOW + 1))
        self._windows = {window: name for window, name in self._windows.items() if len(window) == LEAK_WINDOW}

    def form_in(self, data: bytes | str) -> str | None:
        """The form in which `data` holds key material, or None."""
        low = redact.text_of(data).lower()
        pieces = [piece for piece in _SEPARATORS.split(low) if piece in self._fragments]
        for text, how in ((low, ""), (_SEPARATORS.sub("", low), ", split into pieces"),
                          ("".join(pieces), ", split into pieces")):
            for start in range(len(text) - LEAK_WINDOW + 1):
                name = self._windows.get(text[start:start + LEAK_WINDOW])
                if name is not None:
                    return name + how
        return None


MIN_PIECE = 3  # shorter pieces of a key are not told from ordinary text, even in sequence
_SEPARATORS = re.compile(r"[\s,;:|.\-'\"`()\[\]{}<>]+")


def leaks(text: bytes, secret: bytes) -> bool:
    """Whether `text` holds key material in any form (see KeyMaterial)."""
    return KeyMaterial(secret).form_in(text) is not None


def canary_like(key: bytes) -> bytes:
    """A synthetic key of the same shape as `key`: as long, drawn from the same character classes
    (hex stays hex, base64 stays base64), the same trailing newline. The stack's scripts run on it,
    never on the stack's key: whatever they do with it, they hold nothing worth taking."""
    body = key.rstrip(b"\r\n")
    text = redact.text_of(body)
    if text and all(ch in string.hexdigits for ch in text):
        alphabet = "0123456789abcdef" if text == text.lower() else "0123456789ABCDEF"
    else:
        classes = (string.ascii_lowercase, string.ascii_uppercase, string.digits)
        alphabet = "".join(c for c in classes if any(ch in c for ch in text))
        alphabet += "".join(sorted({ch for ch in text if ch.isascii() and ch.isprintable() and not ch.isalnum()}))
        alphabet = alphabet or string.ascii_letters + string.digits
    fake = "".join(secrets.choice(alphabet) for _ in text)
    return fake.encode() + key[len(body):]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def modes_text(modes) -> str:
    return "/".join(f"{m:04o}" for m in modes)
