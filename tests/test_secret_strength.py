"""The strength of a stack's secret values (redact.weakness): the class of guessable values, not a list of them.
Too short or a dictionary word (which the scrub cannot remove either); two or three common words joined, the shape
of a template's placeholder; a pattern zxcvbn guesses early (a keyboard walk, a repeat, a word with digits). Random
keys of the usual shapes and four-word passphrases are strong. A weak value that is long enough is still scrubbed."""

from __future__ import annotations

import base64
import random
import string

import pytest

from stackproof.redact import Redactor, too_weak_to_scrub, weakness

WEAK = {
    "administrator": "a dictionary word",
    "short-9chr": "fewer than 12",
    "super-secret-key": "common words joined",
    "change_me_now": "common words joined",
    "mysecretpassword": "guessable pattern",
    "changeme123456": "guessable pattern",
    "sk-1234567890abcdef": "guessable pattern",
    "qwertyuiopasdfgh": "guessable pattern",
    "abcabcabcabcabcabc": "distinct characters",
}


@pytest.mark.parametrize("value, why", WEAK.items(), ids=list(WEAK))
def test_guessable_values_are_weak(value, why):
    assert why in (weakness(value) or ""), weakness(value)


@pytest.mark.parametrize("seed", range(20))
def test_random_keys_and_passphrases_are_strong(seed):
    rng = random.Random(seed)
    raw = bytes(rng.getrandbits(8) for _ in range(32))
    words = ["tundra", "magnet", "oyster", "velvet", "quarry", "lantern", "saddle", "orbit", "meadow", "copper"]
    for value in (raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("="),
                  "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(12)),
                  "-".join(rng.sample(words, 4))):
        assert weakness(value) is None, value


def test_a_long_weak_value_is_still_scrubbed_from_output():
    """Weak to the strength check, but long enough to scrub without touching ordinary words: never printed."""
    redactor = Redactor()
    for value in ("mysecretpassword", "super-secret-key"):
        assert too_weak_to_scrub(value) is None
        redactor.add(value)
        assert value not in redactor.scrub(f"the value is {value}.")


@pytest.mark.parametrize("value", ["0" * 64, "ab" * 16, "aaaa1111bbbb2222"], ids=["zeros", "two-repeated", "blocks"])
def test_few_distinct_characters_are_weak_and_one_or_two_are_not_scrubbed(value):
    """A template's all-zero key is weak; scrubbing a run of one or two characters would scrub ordinary text."""
    assert "distinct character" in (weakness(value) or ""), weakness(value)
    assert (too_weak_to_scrub(value) is not None) == (len(set(value)) <= 2)


def test_a_credentials_compose_default_is_judged_when_the_env_files_leave_it_unset(tmp_path, run_static):
    """`SALT: ${SALT:-mysalt}`: with no SALT in the env files, the service gets the default, which is judged and
    named as such (never printed); set in .env, the .env's value is judged instead."""
    import yaml
    stack = tmp_path / "stack"
    stack.mkdir()
    (stack / "compose.yml").write_text(yaml.safe_dump({"services": {
        "web": {"image": "example/web:1", "environment": {"SALT": "${SALT:-mysalt}",
                                                           "ENCRYPTION_KEY": "${ENCRYPTION_KEY:-" + "0" * 64 + "}"}}}}))
    (stack / "stackproof.yml").write_text("roles:\n  api_services: [web]\n")
    run = run_static(stack, "-k", "secret_values_strength")
    [reason] = run.reasons("api_key_permissions")
    assert "compose.yml: service web: SALT (its default ${SALT:-...}, unset in the env files) (6 characters" in reason
    assert "ENCRYPTION_KEY (its default ${ENCRYPTION_KEY:-...}" in reason and "distinct character" in reason
    assert "mysalt" not in reason and "0" * 12 not in reason
    (stack / ".env").write_text("SALT=Zq8vLw3mRt6yKp1nXc4b\nENCRYPTION_KEY=" + "9f3a1c7e5b2d8064" * 4 + "\n")
    run = run_static(stack, "-k", "secret_values_strength")
    assert run.reasons("api_key_permissions") == [], run.reasons("api_key_permissions")


def test_the_same_weak_setting_of_several_services_is_one_finding_naming_them(tmp_path, run_static):
    import yaml
    stack = tmp_path / "stack"
    stack.mkdir()
    shared = {"REDIS_AUTH": "${REDIS_AUTH:-myredissecret}"}
    (stack / "compose.yml").write_text(yaml.safe_dump({"services": {
        "web": {"image": "example/web:1", "environment": shared},
        "worker": {"image": "example/worker:1", "environment": shared}}}))
    (stack / "stackproof.yml").write_text("roles:\n  api_services: [web]\n")
    [reason] = run_static(stack, "-k", "secret_values_strength").reasons("api_key_permissions")
    assert reason == ("weak secret value: compose.yml: REDIS_AUTH of services web, worker (its default "
                      "${REDIS_AUTH:-...}, unset in the env files) (a guessable pattern: about 10^9 guesses (zxcvbn))"), reason


def test_an_env_file_above_the_compose_dir_is_named_from_the_stack_dir(tmp_path, run_static):
    """`env_file: ../env/app.env` of compose/app.yml: the finding names env/app.env, not compose/../env/app.env."""
    import yaml
    stack = tmp_path / "stack"
    (stack / "compose").mkdir(parents=True)
    (stack / "env").mkdir()
    (stack / "env/app.env").write_text("ADMIN_PASSWORD=change-me-please\n")
    (stack / "compose/app.yml").write_text(yaml.safe_dump({"services": {
        "web": {"image": "example/web:1", "env_file": ["../env/app.env"]}}}))
    (stack / "stackproof.yml").write_text("paths:\n  compose: compose/app.yml\nroles:\n  api_services: [web]\n")
    [reason] = run_static(stack, "-k", "secret_values_strength").reasons("api_key_permissions")
    assert reason.startswith("weak secret value: env/app.env (env_file of service web): ADMIN_PASSWORD"), reason
