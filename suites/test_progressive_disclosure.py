"""Control 6: progressive disclosure.

An agent starts with the small responses (health, discovery info, quickstart) and
loads the full docs only when it needs them. Tokens are counted with tiktoken in
the profile's encoding (cl100k_base), never estimated from the length.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from plugins.errors import StackError
from plugins.tokens import count_tokens, encoding

pytestmark = pytest.mark.control("progressive_disclosure")

MAX_RESPONSE_BYTES = 4 * 1024 * 1024


# --- what is checked (plain functions, reused by the live checks) -----------------


def read_text(stack, path: Path) -> str:
    """A recorded response or the docs, as text; missing, huge or binary files are stack errors."""
    name = stack.rel(path)
    try:
        size = path.stat().st_size
        if size > MAX_RESPONSE_BYTES:
            raise StackError(f"{name}: {size} bytes, larger than the {MAX_RESPONSE_BYTES}-byte limit")
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise StackError(f"{name}: file not found") from None
    except UnicodeDecodeError:
        raise StackError(f"{name}: not UTF-8 text") from None
    except OSError as exc:
        raise StackError(f"{name}: cannot read ({exc.strerror})") from None


def token_budget(counts: dict[str, int], full: int) -> tuple[int, float]:
    """(progressive total, fraction saved against loading the full docs)."""
    total = sum(counts.values())
    return total, 1 - total / full


def describe(counts: dict[str, int]) -> str:
    return " + ".join(f"{name} {count}" for name, count in counts.items()) + f" = {sum(counts.values())} tokens"


def recorded_counts(stack) -> dict[str, int]:
    cfg = stack.profile["disclosure"]
    return {
        name: count_tokens(read_text(stack, stack.profile.stack_path(rel)), cfg["encoding"])
        for name, rel in cfg["responses"].items()
    }


def full_docs_count(stack) -> tuple[int, str]:
    cfg = stack.profile["disclosure"]
    path = stack.profile.stack_path(cfg["full_docs"])
    count = count_tokens(read_text(stack, path), cfg["encoding"])
    if count == 0:
        raise StackError(f"{stack.rel(path)}: empty")
    return count, stack.rel(path)


# --- static checks ------------------------------------------------------------------


@pytest.mark.static
def test_recorded_progressive_total(stack, evidence):
    """The first three levels together must stay small enough to load on every agent start."""
    cfg = stack.profile["disclosure"]
    counts = recorded_counts(stack)
    total = sum(counts.values())
    evidence.record(
        test=f"{cfg['encoding']} tokens of the recorded responses ({', '.join(cfg['responses'].values())})",
        expected=f"< {cfg['max_tokens']} tokens",
        result=describe(counts),
    )
    evidence.note(f"tiktoken encoding {encoding(cfg['encoding']).name}")
    largest = max(counts, key=counts.get)
    assert total < cfg["max_tokens"], (
        f"recorded responses: {describe(counts)}, not under {cfg['max_tokens']} "
        f"(largest: {largest}, {cfg['responses'][largest]})"
    )


@pytest.mark.static
def test_recorded_savings_vs_full_docs(stack, evidence):
    """Progressive disclosure is only worth it if it saves most of the full docs' tokens."""
    cfg = stack.profile["disclosure"]
    counts = recorded_counts(stack)
    full, docs = full_docs_count(stack)
    total, saved = token_budget(counts, full)
    evidence.record(
        test=f"{cfg['encoding']} tokens: recorded responses vs full docs ({docs})",
        expected=f">= {cfg['min_savings']:.0%} saved",
        result=f"{total} vs {full} tokens: {saved:.1%} saved",
    )
    assert saved >= cfg["min_savings"], (
        f"{docs}: progressive {total} vs full docs {full} tokens saves {saved:.1%} (expected >= {cfg['min_savings']:.0%})"
    )


# --- live checks ----------------------------------------------------------------------


def fetch_text(live, path: str, headers: dict[str, str] | None = None) -> str:
    """The body of a 200 response through nginx, as text."""
    response = live.https(path, headers)
    service = live.stack.profile["live"]["nginx_service"]
    if response.status != 200:
        raise StackError(f"service {service} GET {path}: HTTP {response.status} (expected 200)")
    if len(response.body) > MAX_RESPONSE_BYTES:
        raise StackError(f"service {service} GET {path}: {len(response.body)} bytes, larger than {MAX_RESPONSE_BYTES}")
    return response.body.decode("utf-8", errors="replace")


def live_counts(live) -> dict[str, int]:
    cfg = live.stack.profile["disclosure"]
    return {name: count_tokens(fetch_text(live, path), cfg["encoding"]) for name, path in cfg["endpoints"].items()}


@pytest.mark.live
def test_live_progressive_total(stack, live, evidence):
    """What agents really receive at start-up must stay under the token budget."""
    cfg = stack.profile["disclosure"]
    counts = live_counts(live)
    total = sum(counts.values())
    evidence.record(
        test=f"{cfg['encoding']} tokens of GET {', '.join(cfg['endpoints'].values())} through nginx",
        expected=f"< {cfg['max_tokens']} tokens",
        result=describe(counts),
    )
    largest = max(counts, key=counts.get)
    assert total < cfg["max_tokens"], (
        f"live responses: {describe(counts)}, not under {cfg['max_tokens']} "
        f"(largest: {largest}, {cfg['endpoints'][largest]})"
    )


@pytest.mark.live
def test_live_savings_vs_full_docs(stack, live, evidence):
    """The live full docs (with the key) against the live progressive responses."""
    cfg = stack.profile["disclosure"]
    counts = live_counts(live)
    headers = {stack.profile["live"]["api_key_header"]: live.api_key()}
    full = count_tokens(fetch_text(live, cfg["full_docs_endpoint"], headers), cfg["encoding"])
    if full == 0:
        raise StackError(f"service {stack.profile['live']['nginx_service']} GET {cfg['full_docs_endpoint']}: empty body")
    total, saved = token_budget(counts, full)
    evidence.record(
        test=f"{cfg['encoding']} tokens: live responses vs GET {cfg['full_docs_endpoint']} (with the API key)",
        expected=f">= {cfg['min_savings']:.0%} saved",
        result=f"{total} vs {full} tokens: {saved:.1%} saved",
    )
    assert saved >= cfg["min_savings"], (
        f"GET {cfg['full_docs_endpoint']}: progressive {total} vs full docs {full} tokens saves {saved:.1%} "
        f"(expected >= {cfg['min_savings']:.0%})"
    )


@pytest.mark.live
def test_live_full_docs_need_key(stack, live, evidence):
    """The full docs are the protected level: without the key they must not be served."""
    path = stack.profile["disclosure"]["full_docs_endpoint"]
    service = stack.profile["live"]["nginx_service"]
    response = live.https(path)
    evidence.record(test=f"GET {path} through {service} without the API key", expected="HTTP 401",
                    result=f"HTTP {response.status}")
    assert response.status == 401, f"service {service} GET {path} without a key: HTTP {response.status} (expected 401)"
