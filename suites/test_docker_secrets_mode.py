"""Control 2: Docker secrets mode.

Every secret a service mounts must be declared with mode 0400, and, what the
declaration alone cannot prove, be 0400 and owned by the service's user inside
the running container.
"""

import pytest

pytestmark = pytest.mark.control("docker_secrets_mode")


def _mode(value):
    return "not declared" if value is None else f"{value:04o}"


@pytest.mark.static
def test_secret_references_declare_mode(stack, evidence):
    """Each service's secret uses the long syntax with mode 0400."""
    compose = stack.compose
    wanted = stack.profile["secrets"]["mode"]
    refs = [(name, ref) for name, svc in compose.services.items() for ref in svc.secrets]
    evidence.record(
        test=f"services.*.secrets[].mode in {stack.rel(compose.files[0])}",
        expected=f"every reference: mode {wanted:04o}",
        result="; ".join(f"{name} → {ref.source} → {_mode(ref.mode)}" for name, ref in refs) or "no secret references",
    )
    evidence.note(f"compose model read by {compose.loader}")
    assert refs, f"{stack.rel(compose.files[0])}: no service mounts a secret"
    wrong = [f"{name} → {ref.source} mode {_mode(ref.mode)}" for name, ref in refs if ref.mode != wanted]
    assert not wrong, f"{stack.rel(compose.files[0])}: secret mode is not {wanted:04o}: {', '.join(wrong)}"
