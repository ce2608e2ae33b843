"""Control 6: progressive disclosure.

An agent starts with the small responses (health, discovery info, quickstart) and
loads the full docs only when it needs them. Tokens are counted with tiktoken in
the profile's encoding (cl100k_base), never estimated from the length.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stackproof.compare import at_least
from stackproof.errors import NotDeclared, StackError, not_applicable
from stackproof.io.files import read_stack_file
from stackproof.resources.tokens import count_tokens, encoding

pytestmark = pytest.mark.control("progressive_disclosure")

MAX_RESPONSE_BYTES = 4 * 1024 * 1024


# --- what is checked (plain functions, reused by the live checks) -----------------


def read_text(stack, path: Path) -> str:
    """A recorded response or the docs, as text; missing, huge or binary files are stack errors."""
    name = stack.rel(path)
    try:
        return read_stack_file(path, name, MAX_RESPONSE_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise StackError(f"{name}: not UTF-8 text") from None


def token_budget(counts: dict[str, int], full: int) -> tuple[int, float]:
    """(progressive total, fraction saved against loading the full docs)."""
    total = sum(counts.values())
    return total, 1 - total / full


def describe(counts: dict[str, int]) -> str:
    return " + ".join(f"{name} {count}" for name, count in counts.items()) + f" = {sum(counts.values())} tokens"


class RecordedResponses:
    """The responses recorded in the profile, read from the stack's files (static)."""

    kind = "recorded responses"

    def __init__(self, stack):
        self.stack, self.cfg = stack, stack.profile["disclosure"]

    def recorded(self) -> bool:
        """Whether the stack keeps recorded responses at all (a missing one among others is a defect)."""
        return any(self.stack.profile.stack_path(p, f"disclosure.responses.{name}").exists()
                   for name, p in self.cfg["responses"].items())

    def places(self) -> dict[str, str]:
        return dict(self.cfg["responses"])

    def text(self, name: str) -> str:
        return read_text(self.stack, self.stack.profile.stack_path(self.cfg["responses"][name], f"disclosure.responses.{name}"))

    def full_docs(self) -> tuple[str, str]:
        """(where the full docs are, their text)."""
        if not self.cfg["full_docs"]:
            raise NotDeclared("no recorded full docs to compare the responses with: looked for disclosure.full_docs "
                              "(stackproof init: the full docs beside the recorded responses)")
        path = self.stack.profile.stack_path(self.cfg["full_docs"], "disclosure.full_docs")
        return self.stack.rel(path), read_text(self.stack, path)


class LiveResponses:
    """The same levels fetched from the running endpoints through nginx (live); the full docs with the key."""

    kind = "live responses"

    def __init__(self, stack, live):
        self.stack, self.live, self.cfg = stack, live, stack.profile["disclosure"]

    def places(self) -> dict[str, str]:
        return {name: f"GET {path}" for name, path in self.cfg["endpoints"].items()}

    def text(self, name: str) -> str:
        return self._fetch(self.cfg["endpoints"][name])

    def full_docs(self) -> tuple[str, str]:
        path = self.cfg["full_docs_endpoint"]
        headers = {self.stack.profile["live"]["api_key_header"]: self.live.http.api_key()}
        return f"GET {path}", self._fetch(path, headers)

    def _fetch(self, path: str, headers: dict[str, str] | None = None) -> str:
        """The body of a 200 response through nginx, as text."""
        response = self.live.http.https(path, headers)
        service = self.stack.roles.name("tls_terminator")
        if response.status != 200:
            raise StackError(f"service {service} GET {path}: HTTP {response.status} (expected 200)")
        if len(response.body) > MAX_RESPONSE_BYTES:
            raise StackError(f"service {service} GET {path}: {len(response.body)} bytes, larger than {MAX_RESPONSE_BYTES}")
        return response.body.decode("utf-8", errors="replace")


SOURCES = [
    pytest.param("recorded", marks=pytest.mark.static, id="recorded"),
    pytest.param("live", marks=pytest.mark.live, id="live"),
]


@pytest.fixture
def responses(request, stack):
    """Where the disclosure levels are read from: the recorded files, or the running endpoints."""
    if request.param == "recorded":
        recorded = RecordedResponses(stack)
        if not recorded.recorded():
            places = ", ".join(recorded.places().values()) or "none declared"
            not_applicable(f"the stack keeps no recorded disclosure responses (disclosure.responses: {places}); "
                           "a live run measures the running endpoints instead")
        return recorded
    return LiveResponses(stack, request.getfixturevalue("live"))


def token_counts(responses) -> dict[str, int]:
    encoding_name = responses.cfg["encoding"]
    return {name: count_tokens(responses.text(name), encoding_name) for name in responses.places()}


# --- checks (static and live) ---------------------------------------------------------


@pytest.mark.parametrize("responses", SOURCES, indirect=True)
@pytest.mark.remediation("medium",
                         "Trim the health, discovery and quickstart responses (fewer fields, shorter texts, links to "
                         "the full docs) until they total less than the profile's `disclosure.max_tokens`.")
def test_progressive_total(responses, evidence):
    """The first three levels together must stay small enough to load on every agent start."""
    cfg = responses.cfg
    counts = token_counts(responses)
    total = sum(counts.values())
    places = responses.places()
    evidence.record(
        test=f"{cfg['encoding']} tokens of the {responses.kind} ({', '.join(places.values())})",
        expected=f"< {cfg['max_tokens']} tokens",
        result=describe(counts),
    )
    evidence.note(f"tiktoken encoding {encoding(cfg['encoding']).name}")
    largest = max(counts, key=counts.get)
    assert total < cfg["max_tokens"], (
        f"{responses.kind}: {describe(counts)}, not under {cfg['max_tokens']} (largest: {largest}, {places[largest]})"
    )


@pytest.mark.parametrize("responses", SOURCES, indirect=True)
@pytest.mark.remediation("medium",
                         "Move detail from the first three levels into the full docs, so the first levels save at "
                         "least the profile's `disclosure.min_savings` of the full docs' tokens.")
def test_savings_vs_full_docs(responses, evidence):
    """Progressive disclosure is only worth it if it saves most of the full docs' tokens."""
    cfg = responses.cfg
    counts = token_counts(responses)
    docs, text = responses.full_docs()
    full = count_tokens(text, cfg["encoding"])
    if full == 0:
        raise StackError(f"{docs}: empty full docs")
    total, saved = token_budget(counts, full)
    enough = at_least(cfg["min_savings"], show="{:.1%} saved".format, bound_text=f"{cfg['min_savings']:.0%} saved")
    evidence.expect(f"{cfg['encoding']} tokens: {responses.kind} vs full docs ({docs})",
                    f"{docs}: progressive {total} vs full docs {full} tokens:", saved, enough,
                    result=f"{total} vs {full} tokens: {saved:.1%} saved")


@pytest.mark.live
@pytest.mark.remediation("high",
                         "Require the API key on the full-docs endpoint (`disclosure.full_docs_endpoint`): without "
                         "it, answer 401.")
def test_live_full_docs_need_key(stack, live, evidence):
    """The full docs are the protected level: without the key they must not be served."""
    path = stack.profile["disclosure"]["full_docs_endpoint"]
    service = stack.roles.name("tls_terminator")
    response = live.http.https(path)
    evidence.record(test=f"GET {path} through {service} without the API key", expected="HTTP 401",
                    result=f"HTTP {response.status}")
    assert response.status == 401, f"service {service} GET {path} without a key: HTTP {response.status} (expected 401)"
