"""Facts about a key that the evidence may show: strength, fingerprints, leaks. Never its value."""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
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


def leaks(text: bytes, secret: bytes) -> bool:
    """Whether `text` holds key material: any LEAK_WINDOW consecutive bytes of the (stripped) secret.
    A key shorter than that cannot be told from ordinary text (and fails the randomness check)."""
    secret = secret.strip()
    return any(secret[i:i + LEAK_WINDOW] in text for i in range(len(secret) - LEAK_WINDOW + 1))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def modes_text(modes) -> str:
    return "/".join(f"{m:04o}" for m in modes)
