"""Facts about a key that the evidence may show: strength, fingerprints, leaks. Never its value."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import math
import random
import re
import secrets
import string
import time
import zlib
from collections import Counter
from dataclasses import dataclass, replace

from zxcvbn import matching as zxcvbn_matching

from stackproof import redact

LEAK_WINDOW = 8  # this many consecutive characters of a key in a log or output count as key material
# ...except where ordinary output is dense with random-looking runs: a window of digits only (a timestamp's
# microseconds, a counter; the hex form of a hex key is digits for the most part) or one made by joining
# pieces across separators must be this long. With 8, a backup file's microsecond stamp matched a digits-only
# window of a hex key's hex form about once in a few thousand rotations.
STRONG_WINDOW = 2 * LEAK_WINDOW


@dataclass(frozen=True)
class KeyStrength:
    """What the evidence may say about a key: never its value."""

    fingerprint: str
    encoding: str
    random_bytes: int
    entropy: float
    structure: "Structure | None" = None  # the longest run a simple generator explains
    compression: float = 1.0  # compressed size against that of random keys of the same length and alphabet

    def describe(self) -> str:
        return (f"{self.fingerprint}, {self.encoding}, {self.random_bytes} bytes decoded, "
                f"entropy {self.entropy:.2f} bits/byte, compresses to {self.compression:.0%} of a random key's"
                + (f"; longest structure: {self.structure.describe()}" if self.structure else ""))


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


def key_strength(data: bytes, redactor: redact.Redactor, written_at: float | None = None) -> KeyStrength:
    """`written_at`: when the key was made (its file's mtime), where a clock-made key's timestamp would point."""
    encoding, decoded = decode_key(data)
    text = data.strip()[:ANALYSED_LENGTH]
    structure = longest_structure(text, written_at) or decoded_structure(decoded[:ANALYSED_LENGTH], encoding)
    return KeyStrength(redactor.fingerprint(data), encoding, len(decoded), shannon_entropy(decoded),
                       structure, compression_ratio(text, encoding))


def strength_problem(strength: KeyStrength, cfg: dict) -> str | None:
    if strength.random_bytes < cfg["min_random_bytes"]:
        return f"{strength.random_bytes} random bytes ({strength.encoding}), need >= {cfg['min_random_bytes']}"
    if strength.entropy < cfg["min_entropy_bits"]:
        return (f"low-entropy key: {strength.entropy:.2f} bits/byte over {strength.random_bytes} bytes, "
                f"need >= {cfg['min_entropy_bits']}")
    if strength.structure is not None:
        return f"predictable key: {strength.structure.describe()}"
    if strength.compression < MIN_COMPRESSION:
        return (f"predictable key: compresses to {strength.compression:.0%} of a random key's size "
                f"(need >= {MIN_COMPRESSION:.0%})")
    return None


class KeyMaterial:
    """Finds a key in what the stack's code wrote: LEAK_WINDOW consecutive characters of any form the
    redactor knows (as is, reversed, hex, base64, base32, URL-encoded, escaped; a hex or base64 key's bytes
    encoded again, or written raw), in any letter case, also when
    the form is cut into pieces (`ab12cd 34ef56`, one piece per line, `piece ab12` lines): the pieces
    that are fragments of a form are joined, whatever lies between them. Joined pieces, and a window of
    digits only, count from STRONG_WINDOW characters (weaker evidence). The stack's outputs are thus
    scanned with the forms that guard the report, and a hit is named by its form, never its value.
    A key shorter than the window cannot be told from ordinary text (and fails the randomness check)."""

    def __init__(self, key: bytes):
        text = redact.text_of(key.strip())
        decoded, encoding = redact.decoded_value(text)  # a hex or base64 key's bytes, written as they are
        self._raw = {decoded[i:i + LEAK_WINDOW]: f"the {encoding}-decoded key's bytes"
                     for i in range(len(decoded) - LEAK_WINDOW + 1)}
        self._windows: dict[str, str] = {}
        self._strong: dict[str, str] = {}
        self._fragments: set[str] = set()
        for form, name in redact.named_forms(text).items():
            low = form.lower()
            for start in range(len(low)):
                self._windows.setdefault(low[start:start + LEAK_WINDOW], name)
                self._strong.setdefault(low[start:start + STRONG_WINDOW], name)
                self._fragments.update(low[start:start + size] for size in range(MIN_PIECE, LEAK_WINDOW + 1))
        self._windows = {window: name for window, name in self._windows.items() if len(window) == LEAK_WINDOW}
        self._strong = {window: name for window, name in self._strong.items() if len(window) == STRONG_WINDOW}

    def form_in(self, data: bytes | str) -> str | None:
        """The form in which `data` holds key material, or None."""
        if isinstance(data, bytes) and self._raw:
            for start in range(len(data) - LEAK_WINDOW + 1):
                name = self._raw.get(data[start:start + LEAK_WINDOW])
                if name is not None:
                    return name
        low = redact.text_of(data).lower()
        pieces = [piece for piece in _SEPARATORS.split(low) if piece in self._fragments]
        for text, how in ((low, ""), (_SEPARATORS.sub("", low), ", split into pieces"),
                          ("".join(pieces), ", split into pieces")):
            for start in range(len(text) - LEAK_WINDOW + 1):
                window = text[start:start + LEAK_WINDOW]
                name = self._windows.get(window)
                if name is not None and (how or window.isdigit()):  # weak evidence: the longer window must match
                    name = self._strong.get(text[start:start + STRONG_WINDOW])
                if name is not None:
                    return name + how
        return None


MIN_PIECE = 3  # shorter pieces of a key are not told from ordinary text, even in sequence
_SEPARATORS = re.compile(r"[\s,;:|.\-'\"`()\[\]{}<>]+")


# --- randomness by measure: what simple generators explain, and what a compressor saves -----------------
#
# A key can be long, decode to many bytes and use many distinct symbols, and still be made by a
# counter, a clock or a repeated block. Each generator below explains a run of the key's text; a
# run covering a quarter of the key (at least STRUCTURE_MIN characters) is structure no random
# generator produces by chance (for 64 random hex characters the likeliest, a 16-digit clock reading
# within CLOCK_WINDOW of the key's writing or of now, has a chance near 1e-6). Only kinds, offsets and
# lengths are reported, never text.

STRUCTURE_MIN = 12
KEYBOARD_WALK_MIN = 20  # see keyboard_walks
ANALYSED_LENGTH = 256  # characters measured: a key is far shorter; a 64 KB file must not cost quadratic time
STRUCTURE_FRACTION = 0.25
MIN_COMPRESSION = 0.8  # random 64-character hex keys compress to 0.9-1.1 of each other
_COUNTING_STEPS = (1, 2, 3, 4, 5, 8, 10, 16, -1)
CLOCK_WINDOW = 2 * 86400  # seconds around the key's writing (or now) a clock reading in it points to
_EPOCH_SCALES = {10: (1, "seconds"), 13: (1e3, "milliseconds"), 16: (1e6, "microseconds"), 19: (1e9, "nanoseconds")}
_DATE_FORMATS = {14: "%Y%m%d%H%M%S", 12: "%Y%m%d%H%M", 8: "%Y%m%d"}


@dataclass(frozen=True)
class Structure:
    """A run of the key a simple generator explains: what kind, where, how long (never the text)."""

    kind: str
    start: int
    length: int
    total: int
    unit: str = "characters"  # "bytes": found in what the key's text decodes to

    def describe(self) -> str:
        return f"{self.kind} over {self.length} of {self.total} {self.unit} (from offset {self.start})"


def longest_structure(text: bytes, written_at: float | None = None) -> Structure | None:
    """The longest run of `text` a simple generator explains, if it is long enough to count (see above)."""
    if not text:
        return None
    moments = [time.time()] + ([written_at] if written_at else [])
    return _longest([*repeats(text), *arithmetic_runs(text), *counting_runs(text), *small_integer_runs(text),
                     *timestamps(text, moments), *keyboard_walks(text)], len(text))


def decoded_structure(decoded: bytes, encoding: str) -> Structure | None:
    """The longest run of the bytes a hex or base64 key decodes to that a repeated block or a constant step
    explains. In the text the encoding hides it: base64 of the bytes 0, 1, 2... reads `AAECAwQFBgcI`, and
    hex of bytes stepping by 7 (`00070e151c23`) is no counting sequence of its digits."""
    if encoding == "raw" or not decoded:
        return None
    found = [replace(run, kind=f"{run.kind.replace('character', 'byte')} in the {encoding}-decoded key", unit="bytes")
             for run in (*repeats(decoded), *arithmetic_runs(decoded))]
    return _longest(found, len(decoded))


def _longest(found: list[Structure], total: int) -> Structure | None:
    """The longest run, if it is long enough to count (see above)."""
    if not found:
        return None
    best = max(found, key=lambda s: (s.length, -s.start))
    return best if best.length >= max(STRUCTURE_MIN, math.ceil(total * STRUCTURE_FRACTION)) else None


def repeats(text: bytes):
    """Periodic runs: a block of `period` characters written again (the first copy counted in the run)."""
    n = len(text)
    for period in range(1, n // 2 + 1):
        run = 0
        for i in range(period, n + 1):
            if i < n and text[i] == text[i - period]:
                run += 1
                continue
            if run >= period:
                yield Structure(f"a block of {period} character(s) repeated", i - run - period, run + period, n)
            run = 0


def arithmetic_runs(text: bytes):
    """Runs whose character codes step by a constant (abcdef, 13579, zyxw)."""
    n, start = len(text), 0
    for i in range(2, n + 1):
        if i == n or text[i] - text[i - 1] != text[i - 1] - text[i - 2]:
            if i - start >= 3 and text[start + 1] != text[start]:
                yield Structure(f"characters stepping by {text[start + 1] - text[start]}", start, i - start, n)
            start = i - 1


def keyboard_walks(text: bytes):
    """Runs typed along a keyboard (qwertyuiop, 1qaz2wsx, a keypad's 789456): zxcvbn's adjacency graphs
    (qwerty, dvorak, keypads) find the walks, and walks that touch or overlap form one run. Random keys have
    short walks by chance, and chained ones too (at most 13 characters in 6,000 random 64-character hex and
    base64url keys): only runs of KEYBOARD_WALK_MIN characters count."""
    spans: list[tuple[int, int]] = sorted((match["i"], match["j"] + 1)
                                          for match in zxcvbn_matching.spatial_match(text.decode("latin-1")))
    begin, end = -1, -1  # the run being chained (none yet)
    for i, j in [*spans, (len(text) + 2, len(text) + 2)]:  # a sentinel closes the last run
        if begin >= 0 and i <= end:
            end = max(end, j)
            continue
        if begin >= 0 and end - begin >= KEYBOARD_WALK_MIN:
            yield Structure("a keyboard walk", begin, end - begin, len(text))
        begin, end = i, j


def _render(number: int, base: int, width: int) -> bytes:
    if number < 0:
        return b""
    digits = f"{number:x}" if base == 16 else str(number)
    return digits.rjust(width, "0").encode()


def counting_runs(text: bytes):
    """Consecutive numbers written one after the other, decimal or hex, zero-padded or not (123456789101112,
    0001000200030004, 00000001000000020000000300000004), stepping by a small constant.

    The step is read off the second number (a zero-padded one has the first's width; an unpadded one is
    one digit shorter, as long, or one longer) rather than tried from every step: a key is measured in
    every run, and trying nine steps at every offset cost a tenth of a static run."""
    n, lowered = len(text), text.lower()  # rendered numbers are lower case: one lowering, then startswith
    steps = set(_COUNTING_STEPS)
    for base, alphabet in ((10, b"0123456789"), (16, b"0123456789abcdef")):
        for start in range(n):
            if lowered[start] not in alphabet:
                continue
            for width in (0, 2, 4, 8):
                for first_len in ((width,) if width else range(1, 7)):
                    head = lowered[start:start + first_len]
                    if len(head) < first_len or any(c not in alphabet for c in head):
                        break
                    first = int(head, base)
                    if _render(first, base, width) != head:
                        continue
                    after = start + first_len
                    for second_len in ((width,) if width else (first_len - 1, first_len, first_len + 1)):
                        second = lowered[after:after + second_len]
                        if second_len < 1 or len(second) < second_len or any(c not in alphabet for c in second):
                            continue
                        step = int(second, base) - first
                        if step not in steps or _render(first + step, base, width) != second:
                            continue
                        pos, value, terms = after + second_len, first + 2 * step, 2
                        while True:
                            piece = _render(value, base, width)
                            if not piece or not lowered.startswith(piece, pos):
                                break
                            pos, value, terms = pos + len(piece), value + step, terms + 1
                        if terms >= 3:
                            kind = "hex" if base == 16 else "decimal"
                            yield Structure(f"a {kind} counting sequence (step {step})", start, pos - start, n)


def small_integer_runs(text: bytes):
    """Fixed-width hex words whose upper half is zero: small integers rendered in hex (000000a3000000170000004f)."""
    n = len(text)
    for width in (4, 8, 16):
        for offset in range(width):
            run_start, pos = None, offset
            while pos + width <= n + width:
                word = text[pos:pos + width]
                small = len(word) == width and re.fullmatch(rb"[0-9a-fA-F]+", word) and set(word[:width // 2]) == {48}
                if small and run_start is None:
                    run_start = pos
                if not small:
                    if run_start is not None and pos - run_start >= 2 * width:
                        yield Structure(f"hex of small integers ({width}-digit words)", run_start, pos - run_start, n)
                    run_start = None
                    if pos + width > n:
                        break
                pos += width


def timestamps(text: bytes, moments: list[float]):
    """Clock readings within CLOCK_WINDOW of one of `moments`: Unix times in seconds to nanoseconds, compact
    dates (20240115093000), ISO dates; adjacent readings form one run."""
    n, spans = len(text), []

    def near(when: float) -> bool:
        return any(abs(when - moment) <= CLOCK_WINDOW for moment in moments)

    for match in re.finditer(rb"\d{4}-\d{2}-\d{2}(?:[T _]\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?)?", text):
        try:
            day = dt.datetime.fromisoformat(match.group()[:10].decode()).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
        if near(day.timestamp() + 43200):
            spans.append((match.start(), match.end(), "an ISO date"))
    for match in re.finditer(rb"\d{8,}", text):
        digits, at = match.group(), match.start()
        i = 0
        while i < len(digits):
            hit = _clock_at(digits[i:], near)
            if hit is None:
                i += 1
                continue
            length, kind = hit
            spans.append((at + i, at + i + length, kind))
            i += length
    spans.sort()
    merged: list[list] = []
    for begin, end, kind in spans:
        if merged and begin <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            if kind not in merged[-1][2]:
                merged[-1][2].append(kind)
        else:
            merged.append([begin, end, [kind]])
    for begin, end, kinds in merged:
        yield Structure(f"timestamps ({', '.join(kinds)})", begin, end - begin, n)


def _clock_at(digits: bytes, near) -> tuple[int, str] | None:
    """(length, kind) of the clock reading `digits` starts with (the longest first) that is `near` a moment."""
    for length in sorted({*_EPOCH_SCALES, *_DATE_FORMATS}, reverse=True):
        if len(digits) < length:
            continue
        if length in _EPOCH_SCALES:
            scale, unit = _EPOCH_SCALES[length]
            if near(int(digits[:length]) / scale):
                return length, f"Unix time in {unit}"
        if length in _DATE_FORMATS:
            try:
                when = dt.datetime.strptime(digits[:length].decode(), _DATE_FORMATS[length])
            except ValueError:
                continue
            if near(when.replace(tzinfo=dt.timezone.utc).timestamp() + (43200 if length == 8 else 0)):
                return length, "a compact date"
    return None


def _alphabet(text: bytes, encoding: str) -> bytes:
    """The symbols a random key of this encoding is drawn from."""
    if encoding == "hex":
        return b"0123456789ABCDEF" if text.isupper() else b"0123456789abcdef"
    if encoding in ("base64", "base64url"):
        return (string.ascii_letters + string.digits + ("-_" if encoding == "base64url" else "+/")).encode()
    if all(32 < c < 127 for c in text):
        return bytes(range(33, 127))
    return bytes(range(256))


def compression_ratio(text: bytes, encoding: str) -> float:
    """zlib's size of the key against the mean size of random keys of the same length and alphabet
    (drawn from a fixed seed: the measure is the same run after run); about 1 for a random key."""
    if not text:
        return 1.0
    alphabet = _alphabet(text, encoding)
    draw = random.Random(len(text))
    samples = [bytes(draw.choice(alphabet) for _ in text) for _ in range(8)]
    baseline = sum(len(zlib.compress(sample, 9)) for sample in samples) / len(samples)
    return len(zlib.compress(text, 9)) / baseline


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
