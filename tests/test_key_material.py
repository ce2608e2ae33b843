"""What counts as key material in the stack's outputs (resources/keys.py KeyMaterial), by class: every form of a
key written whole is found, as is or cut into pieces; ordinary output that happens to share a short run with a
form is not. The class of false finding seen: a backup file's microsecond stamp, eight digits, equal to eight
digits of a hex key's hex form (mostly digits), once in a few thousand rotations."""

from __future__ import annotations

import random

import pytest

from stackproof.resources.keys import LEAK_WINDOW, STRONG_WINDOW, KeyMaterial

KEYS = [random.Random(seed).randbytes(32).hex() for seed in range(40)]  # the same in every xdist worker


def hex_form(key: str) -> str:
    """The key's text as `od -An -tx1` writes it, spaces removed: for a hex key, digits for the most part."""
    return key.encode().hex()


@pytest.mark.parametrize("key", KEYS[:10])
def test_every_whole_form_is_found(key):
    material = KeyMaterial(key.encode())
    for written in (key, key.upper(), hex_form(key), " ".join(key[i:i + 4] for i in range(0, 64, 4)),
                    "\n".join(f"piece {hex_form(key)[i:i + 5]}" for i in range(0, 128, 5)),
                    ":".join(key[::-1][i:i + 5] for i in range(0, 64, 5))):
        assert material.form_in(f"rotated; {written}; done\n") is not None, written


@pytest.mark.parametrize("key", KEYS)
def test_a_short_run_of_digits_or_of_joined_pieces_is_not_key_material(key):
    """Eight digits of the hex form in a timestamp, or three short pieces that join into eight characters
    of the key: ordinary output, not a leak. Sixteen are."""
    material = KeyMaterial(key.encode())
    digits = next(hex_form(key)[i:i + LEAK_WINDOW] for i in range(0, 120) if hex_form(key)[i:i + LEAK_WINDOW].isdigit())
    stamp = f"backup stack_api_key.20261204T125830.{digits}Z, audit logs/key-rotation.log\n"
    assert material.form_in(stamp) is None, stamp
    pieces = f"ids {key[:3]} {key[3:6]} {key[6:9]} ok\n"
    assert material.form_in(pieces) is None, pieces
    long_digits = next((hex_form(key)[i:i + STRONG_WINDOW] for i in range(0, 112)
                        if hex_form(key)[i:i + STRONG_WINDOW].isdigit()), None)
    if long_digits is not None:
        assert material.form_in(f"stamp {long_digits}\n") is not None
    assert material.form_in(" ".join(key[i:i + 3] for i in range(0, 18, 3))) is not None  # 18 characters in pieces


def test_a_window_of_the_key_as_is_still_counts_from_eight_characters():
    key = "9f2c7e1a5b3d8f4e6a0c2b7d9e1f3a5c" * 2
    assert KeyMaterial(key.encode()).form_in(f"token={key[10:10 + LEAK_WINDOW]}") is not None
