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


def _declared_owner(service, ref):
    """The numeric uid, gid compose asks the secret to have: the reference's, else the service's user
    (a user given by name cannot be compared with a stat and is left out)."""
    user = (service.user or "").split(":")
    uid = ref.uid or (user[0] if user and user[0] else None)
    gid = ref.gid or (user[1] if len(user) > 1 else None)
    return tuple(value if value and value.isdigit() else None for value in (uid, gid))


@pytest.mark.live
def test_effective_secret_mode_in_containers(stack, live, evidence):
    """Inside every running container, every /run/secrets/* target has the declared mode and owner."""
    wanted = stack.profile["secrets"]["mode"]
    declared = {
        (name, ref.target): (svc, ref) for name, svc in stack.compose.services.items() for ref in svc.secrets
    }
    seen, wrong = [], []
    for container in live.containers:
        service = live.service_of(container)
        host = live.host(service)
        for mount in live.secret_mounts(container):
            target = mount["Destination"]
            facts = host.file(target)
            mode, uid, gid = facts.mode, str(facts.uid), str(facts.gid)
            svc, ref = declared.get((service, target), (None, None))
            declared_mode = ref.mode if ref else None
            want_uid, want_gid = _declared_owner(svc, ref) if ref else (None, None)
            seen.append(f"{container.name}:{target} {mode:04o} {uid}:{gid}")
            problems = []
            if declared_mode is not None and mode != declared_mode:
                problems.append(f"mode {mode:04o}, declared {declared_mode:04o}")
            elif mode != wanted:
                problems.append(f"mode {mode:04o}, expected {wanted:04o}")
            if want_uid and uid != want_uid:
                problems.append(f"owner uid {uid}, declared {want_uid}")
            if want_gid and gid != want_gid:
                problems.append(f"group gid {gid}, declared {want_gid}")
            if ref is None:
                problems.append("not declared in compose")
            if problems:
                wrong.append(f"{container.name}:{target} {', '.join(problems)}")
    evidence.record(
        test="stat of every /run/secrets/* mount in the project's containers",
        expected=f"mode {wanted:04o}, and the mode and owner compose declares",
        result="; ".join(seen) or "no secret mounts",
    )
    assert seen, f"compose project {live.project}: no container mounts a secret"
    assert not wrong, f"effective secret mode differs from compose: {'; '.join(wrong)}"
