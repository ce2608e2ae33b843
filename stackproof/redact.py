"""Keeping secrets and hostile text out of every output.

Evidence names a secret by `Redactor.fingerprint()`, never by value. As a second line
of defence the `Redactor` knows every secret value the suite has seen and scrubs it
from every output: not only the value itself but every encoding of it (base64 and
base64url at any alignment, base32, hex, URL-encoding, backslash/JSON/HTML escaping, any
letter case; for a hex or base64 value also the bytes it stands for, encoded again) and every run of `MIN_SECRET_LEN` or more of its characters, so a value
cut at a length limit or split across lines does not leak its parts. Passwords in
URLs (`scheme://user:password@host`) are scrubbed even when nobody registered them.

`Redactor.clean()` makes any value from the stack safe to put in a report: text only
(lone surrogates and invalid UTF-8 replaced), no ANSI or control characters, scrubbed
after that cleaning (a key split by an escape sequence is joined first), then cut.

Why hand-written: the scrub looks for fixed-length windows of known values in any
text; a sliding lookup in a set of windows is a few lines and needs no dependency.
The windows are bounded by count (`MAX_WINDOWS`): each character of a secret costs five to
seventeen of them across its forms (`WINDOWS_PER_CHARACTER`: base64 keys, the dearest), some
200 bytes each, so 2.6 MB of secret files would take gigabytes and minutes. A secret past the budget is not learned and raises
`RedactionBudgetExceeded`: the run says which, rather than exhaust its memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
from functools import lru_cache
from urllib.parse import quote, quote_plus

from stackproof.errors import StackError

MAX_TEXT = 2000
MIN_SECRET_LEN = 12  # shorter values fail the key-strength check; they are too short to scrub safely
MAX_WINDOWS = 150_000  # scrub windows a run may learn: about 30 MB, 9,000 characters of base64 secrets
WINDOWS_PER_CHARACTER = 17  # what a character of a base64 key costs across its forms (see above)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Unicode format characters (category Cf): bidirectional overrides and isolates (U+202A-U+202E,
# U+2066-U+2069), zero-width spaces and joiners, the BOM, invisible operators, tag characters.
# Invisible, they make a reason read other than it is ("Trojan Source"): removed like control characters.
_FORMAT = re.compile("[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
                     "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
                     "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]")
# a URL's scheme is short (RFC 3986 sets no bound; 32 covers every registered one): unbounded, a long run of
# scheme characters made the pattern quadratic on any output
_URL_CREDENTIAL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,31}://[^\s/:@'\"<>]*:)([^\s@/'\"<>]+)(@)")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_PEM_ARMOR = re.compile(r"^-----(BEGIN|END) [A-Z0-9 ]+-----$")


def text_of(value: object) -> str:
    """Any value as valid text: bytes decoded as UTF-8, lone surrogates (undecodable file names) replaced."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace")
    return text


def strip_controls(text: str) -> str:
    """ANSI escape sequences, control characters and invisible format characters (bidi, zero-width)
    removed; newlines and tabs kept."""
    return _FORMAT.sub("", _CONTROL.sub("", _ANSI.sub("", text)))


def cut(text: str, limit: int = MAX_TEXT) -> str:
    return f"{text[:limit]}… [cut: {len(text) - limit} more characters]" if len(text) > limit else text


def clean(value: object, limit: int = MAX_TEXT) -> str:
    """Text safe for any report (no redaction: see Redactor.clean): decoded, ANSI and control
    characters removed, cut at `limit`."""
    return cut(strip_controls(text_of(value)), limit)


@lru_cache(maxsize=1)
def _dictionary() -> frozenset[str]:
    """zxcvbn's frequency lists (common passwords, English words, names): a maintained dictionary."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(word for words in FREQUENCY_LISTS.values() for word in words)


# zxcvbn's estimate below which a value of MIN_SECRET_LEN or more is a guessable pattern ("mysecretpassword",
# "changeme123456", "sk-1234567890abcdef"); a random string of 12 characters is estimated at 10^12
MIN_GUESSES_LOG10 = 10
# zxcvbn costs 2 ms a value of 16 characters and 18 ms one of 64 (a stack of 2,000 tokens: 36 s); the patterns it
# catches are typed by hand, short: longer values are not estimated
MAX_ESTIMATED_LEN = 24
MAX_SCRUB_REPEATED = 2  # a value of one or two distinct characters ("000...0", "abab...") is not scrubbed
# fewer distinct characters than this (or than a quarter of the length, plus one) is a pattern, not randomness:
# none of 200,000 random hex strings of 12 to 22 characters has so few
MIN_DISTINCT = 6
MAX_PLACEHOLDER_WORDS = 3  # "super-secret-key": up to three common words joined; four random words are a passphrase
WORD_SEPARATORS = re.compile(r"[-_.\s]+")


def too_weak_to_scrub(value: str | bytes) -> str | None:
    """Why a secret value cannot be scrubbed from output without scrubbing ordinary text (too short, a dictionary
    word), or None: every other value, weak or not, is learned and scrubbed."""
    text = text_of(value).strip()
    if len(text) < MIN_SECRET_LEN:
        return f"{len(text)} characters, fewer than {MIN_SECRET_LEN}"
    if text.lower() in _dictionary():
        return "a dictionary word or common password"
    if len(set(text)) <= MAX_SCRUB_REPEATED:  # 64 zeros: scrubbing it would scrub every run of 12 zeros
        return f"{len(set(text))} distinct character(s) repeated"
    return None


def weakness(value: str | bytes) -> str | None:
    """Why a secret value is too weak to be a secret, or None: too weak to scrub, two or three dictionary words
    joined (a template's placeholder), or a pattern zxcvbn guesses early."""
    if (reason := too_weak_to_scrub(value)) is not None:
        return reason
    text = text_of(value).strip()
    if len(set(text)) < min(MIN_DISTINCT, len(text) // 4 + 1):
        return f"only {len(set(text))} distinct characters"
    lowered = text.lower()
    words = [word for word in WORD_SEPARATORS.split(lowered) if word]
    if 2 <= len(words) <= MAX_PLACEHOLDER_WORDS and all(word in _dictionary() for word in words):
        return f"{len(words)} common words joined, a placeholder's shape"
    if len(text) <= MAX_ESTIMATED_LEN:
        from zxcvbn import zxcvbn

        guesses = zxcvbn(text)["guesses_log10"]
        if guesses < MIN_GUESSES_LOG10:
            return f"a guessable pattern: about 10^{guesses:.0f} guesses (zxcvbn)"
    return None


def named_forms(text: str) -> dict[str, str]:
    """Every form in which `text` may show up in an output, with the encoding's name."""
    data = text.encode("utf-8", errors="surrogatepass")
    forms: dict[str, str] = {}  # the first name wins: a hex key is shown "as is", not "hex-escaped"
    for form, name in ((text, "as is"), (text[::-1], "reversed"), (data.hex(), "hex"),
                       (quote(text, safe=""), "URL-encoded"), (quote(text), "URL-encoded"),
                       (quote_plus(text), "URL-encoded"), (html.escape(text), "HTML-escaped"),
                       (json.dumps(text)[1:-1], "JSON-escaped"), (json.dumps(text, ensure_ascii=False)[1:-1], "JSON-escaped"),
                       (repr(text)[1:-1], "escaped"), (repr(data)[2:-1], "escaped"), (text.replace("\\", "\\\\"), "escaped")):
        forms.setdefault(form, name)
    _add_base64(forms, data, "")
    forms.setdefault(base64.b32encode(data).decode().rstrip("="), "base32")
    decoded, encoding = decoded_value(text)
    if decoded:  # a hex or base64 key is also written as its bytes, encoded again (`xxd -r -p | base64`)
        of = f" of the {encoding}-decoded value"
        forms.setdefault(decoded.hex(), "hex" + of)
        _add_base64(forms, decoded, of)
        forms.setdefault(base64.b32encode(decoded).decode().rstrip("="), "base32" + of)
    return forms


def _add_base64(forms: dict[str, str], data: bytes, of: str) -> None:
    """base64 and base64url of `data` at each alignment inside a longer encoded text."""
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        inner = encoded[4 if offset else 0:-4]  # the quanta made of the value's bytes only
        for variant in (inner, encoded) if offset == 0 else (inner,):
            forms.setdefault(variant, "base64" + of)
            forms.setdefault(variant.replace("+", "-").replace("/", "_"), "base64url" + of)


_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){6,}")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")


def decoded_value(text: str) -> tuple[bytes, str]:
    """The bytes a hex or base64 secret stands for, and which encoding: (b"", "") for other text. A key made
    by `openssl rand -hex 32` is 32 bytes; its own code may hand those on, in any encoding."""
    if _HEX.fullmatch(text):
        return bytes.fromhex(text), "hex"
    if _BASE64.fullmatch(text) and len(text) % 4 == 0 and not text.isalpha() and not text.islower():
        try:  # not a word, nor a lower-case passphrase: as base64 keys are (length a multiple of 4, mixed)
            return base64.b64decode(text, altchars=b"-_" if "-" in text or "_" in text else None, validate=True), "base64"
        except ValueError:
            pass
    return b"", ""


def encoded_forms(text: str) -> set[str]:
    """Every form of `text` long enough to scrub."""
    return {form for form in named_forms(text) if len(form) >= MIN_SECRET_LEN}


class RedactionBudgetExceeded(StackError):
    """A secret the redactor cannot learn within `MAX_WINDOWS`: nothing could keep it out of an output."""


class Redactor:
    """Replaces every known secret value, in any form or part, by its fingerprint.

    `key` keys the fingerprints (HMAC-SHA256): random per run, so a fingerprint in a
    report cannot be looked up in a hash table, while equal values compare equal within
    the run. Under xdist the controller hands its key to the workers.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or secrets.token_bytes(32)
        self._windows: dict[str, str] = {}  # every MIN_SECRET_LEN-long run of every form, lower-cased -> label

    def fingerprint(self, value: bytes | str) -> str:
        """A secret's identity for evidence: a keyed hash prefix and the length, never the value."""
        data = value.encode("utf-8", errors="surrogatepass") if isinstance(value, str) else value
        return f"{self.fingerprint_of_sha256(hashlib.sha256(data).hexdigest())} ({len(data)} bytes)"

    def fingerprint_of_sha256(self, sha256_hex: str) -> str:
        """The fingerprint of a value known only by its sha256 (computed in a container): the same
        keyed prefix as `fingerprint(value)`, so the two compare equal."""
        try:
            digest = bytes.fromhex(sha256_hex)
        except ValueError:  # not a digest (a hostile container's answer): keyed all the same
            digest = sha256_hex.encode("utf-8", errors="replace")
        return "hmac:" + hmac.new(self.key, digest, hashlib.sha256).hexdigest()[:12]

    def add(self, value: bytes | str) -> None:
        """Learn a secret. A value too weak to scrub (see `too_weak_to_scrub`) is left out: the key-strength
        check fails it instead of the scrub removing a common word from every sentence. A value whose
        windows would pass `MAX_WINDOWS` raises RedactionBudgetExceeded, none of it learned."""
        text = text_of(value).strip()
        if _PEM_ARMOR.match(text.splitlines()[0] if text else ""):  # a PEM key: its body lines are the secret
            parts = [line.strip() for line in text.splitlines() if not _PEM_ARMOR.match(line.strip())]
        else:
            parts = [text]
        learned = [(part, encoded_forms(part)) for part in parts if not too_weak_to_scrub(part)]
        needed = sum(len(form) - MIN_SECRET_LEN + 1 for _, forms in learned for form in forms)
        if len(self._windows) + needed > MAX_WINDOWS:
            raise RedactionBudgetExceeded(f"{len(text)} characters: past the run's redaction budget ({MAX_WINDOWS:,} "
                                          f"scrub windows, about {MAX_WINDOWS // WINDOWS_PER_CHARACTER:,} characters of secrets), not learned")
        for part, forms in learned:
            label = f"[redacted {self.fingerprint(part)}]"
            for form in forms:
                low = form.translate(_ASCII_LOWER)
                for start in range(len(low) - MIN_SECRET_LEN + 1):
                    self._windows.setdefault(low[start:start + MIN_SECRET_LEN], label)

    def scrub(self, text: str) -> str:
        """`text` with every run of MIN_SECRET_LEN+ characters of a known secret (any form) and every
        URL password replaced."""
        text = _URL_CREDENTIAL.sub(r"\1[redacted]\3", text)
        windows, size = self._windows, MIN_SECRET_LEN
        if not windows or len(text) < size:
            return text
        low = text.translate(_ASCII_LOWER)
        spans: list[list] = []
        for start in range(len(low) - size + 1):
            label = windows.get(low[start:start + size])
            if label is None:
                continue
            if spans and start <= spans[-1][1]:
                spans[-1][1] = start + size
            else:
                spans.append([start, start + size, label])
        for start, end, label in reversed(spans):
            text = text[:start] + label + text[end:]
        return text

    def clean(self, value: object, limit: int = MAX_TEXT) -> str:
        """`clean()` with the scrub after the cleaning: decoded, stripped, scrubbed, then cut."""
        return cut(self.scrub(strip_controls(text_of(value))), limit)

    def __bool__(self) -> bool:
        return bool(self._windows)


class ScrubbingFilter(logging.Filter):
    """Scrubs every log record before any handler writes it: live logging (`log_cli`) goes straight to
    the terminal, and `--log-file` to a file, without passing through a test report."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: its template only
            message = str(record.msg)
        record.msg, record.args = self.redactor.scrub(strip_controls(text_of(message))), None
        return True
