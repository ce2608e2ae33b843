"""A hostile check, added to a suite run by tests/test_redaction.py: it pushes every secret it is given
(SELFTEST_LEAK_VALUES, a JSON list, so the suite's own discovery cannot be what picks them) in every form
down every output path: captured stdout and stderr, log records, evidence (report rows), an assertion
explanation and, with `-l`, its locals. Not collected by `pytest tests` (no test_ prefix)."""

import base64
import json
import logging
import os
import sys
from urllib.parse import quote

import pytest

pytestmark = pytest.mark.control("api_key_permissions")


def leaked_forms(secret: str) -> list[str]:
    """The forms test_redaction.py searches for, and the traps: split by ANSI codes, cut by a length limit."""
    data = secret.encode()
    ansi_split = "".join(f"\x1b[3{n % 8}m{secret[n:n + 5]}" for n in range(0, len(secret), 5)) + "\x1b[0m"
    return [secret, secret.upper(), secret.lower(), base64.b64encode(data).decode(),
            base64.urlsafe_b64encode(b"x" + data).decode(), data.hex().upper(), data.hex(), quote(secret, safe=""),
            json.dumps(secret), json.dumps({"k": secret}), secret.replace("\\", "\\\\"), repr(data), ansi_split,
            "x" * 1980 + secret, "y" * 190 + secret]


@pytest.mark.static
def test_leaky_check(stack, evidence):
    """A check that leaks every secret it knows, in every form."""
    secrets = json.loads(os.environ["SELFTEST_LEAK_VALUES"])
    forms = [form for secret in secrets for form in leaked_forms(secret)]
    for form in forms:
        print(form)
        print(form, file=sys.stderr)
        logging.getLogger("leaky").warning("value %s", form)
        evidence.note(form)
    evidence.record(test=forms[0], expected=forms[1], result=forms[-1])
    joined = " ".join(forms)
    assert joined == secrets[0], forms[3]
