"""Control 2: Docker secrets mode.

Every secret a service mounts must be declared with mode 0400, and, what the
declaration alone cannot prove, be 0400 and owned by the service's user inside
the running container. A credential the stack could hand over as a secret must not be
in a container's environment as a literal instead.
"""

import pytest

from stackproof.target.open_credentials import open_credentials

pytestmark = pytest.mark.control("docker_secrets_mode")


ENGINE_NOTES = {
    "swarm": "target engine swarm applies the declared mode, uid and gid to the secret in each task",
    "compose": "non-swarm Compose ignores the declared mode: the container sees the host file's mode and owner",
    "podman": "Podman (compose) ignores the declared mode: the container sees the host file's mode and owner",
    None: "engine not given (--engine): swarm applies the declared mode, non-swarm Compose and Podman ignore it",
}


def _mode(value):
    return "not declared" if value is None else f"{value:04o}"


@pytest.mark.static
@pytest.mark.remediation("high",
                         "Use the long syntax for each secret a service mounts: `- source: <secret>` with `mode: "
                         "0400` (and `uid`/`gid` of the service's user).")
def test_secret_references_declare_mode(stack, evidence, target_engine):
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
    evidence.note(ENGINE_NOTES.get(target_engine, ENGINE_NOTES["compose"]))
    assert refs, f"{stack.rel(compose.files[0])}: no service mounts a secret"
    wrong: dict[str, list[str]] = {}  # the compose file that writes the reference -> what is wrong there
    for name, ref in refs:
        if ref.mode != wanted:
            place = stack.locate_secret_reference(name, ref.source)
            evidence.locate(place)
            wrong.setdefault(place.path, []).append(f"{name} → {ref.source} mode {_mode(ref.mode)}")
    assert not wrong, "; ".join(f"{file}: secret mode is not {wanted:04o}: {', '.join(items)}" for file, items in wrong.items())


@pytest.mark.static
@pytest.mark.remediation("critical",
                         "Move the credential into a Docker secret and point the image's `<NAME>_FILE` variable at "
                         "`/run/secrets/<secret>`; remove the literal from `environment:`, the env_file or the "
                         "committed .env, and rotate it.")
def test_no_credential_in_environment(stack, evidence):
    """A credential is passed as a secret file, not as a literal in a container's environment.

    Where the image reads a NAME_FILE variant or the stack already has a secret for the value, a literal in
    `environment:`, an `env_file` or a committed `.env` is in `docker inspect`, in every child process's
    environment and, when committed, in every clone. A `${VAR}` taken from an uncommitted environment is not a literal."""
    found = open_credentials(stack)
    evidence.record(
        test="credential-named variables in the services' environment:, their env_files and committed .env files",
        expected="none with a literal value where a _FILE variant or a secret exists",
        result="; ".join(finding.describe() for finding in found) or "none",
    )
    evidence.locate(*(stack.locate(stack.root / finding.file) for finding in found))
    assert not found, f"credential in the open: {'; '.join(finding.describe() for finding in found)}"


@pytest.mark.live
@pytest.mark.remediation("critical",
                         "Deploy so the container sees 0400 and the declared owner: swarm applies "
                         "`mode`/`uid`/`gid`; with non-swarm Compose make the host file 0400 and owned by the "
                         "service's uid.")
def test_effective_secret_mode_in_containers(stack, live, evidence):
    """Inside every running container, every /run/secrets/* target has the mode and owner it was deployed
    with (swarm's service spec; compose's declaration, which non-swarm engines do not apply) and 0400."""
    wanted = stack.profile["secrets"]["mode"]
    seen: dict[str, dict[str, list[str]]] = {}  # service -> container -> what its mounts show
    wrong = []
    for container in live.containers:
        facts = live.containers.probe(container)
        shown = seen.setdefault(live.containers.service_of(container), {}).setdefault(container.name, [])
        for mount in live.containers.secret_mounts(container):
            target = mount.target
            file = facts.file(target)
            if not file.exists:
                shown.append(f"{target} missing")
                wrong.append(f"{container.name}:{target} missing")
                continue
            mode, uid, gid = file.mode, str(file.uid), str(file.gid)
            shown.append(f"{target} {mode:04o} {uid}:{gid}")
            problems = []
            if mount.mode is not None and mode != mount.mode:
                problems.append(f"mode {mode:04o}, declared {mount.mode:04o}")
            elif mode != wanted:
                problems.append(f"mode {mode:04o}, expected {wanted:04o}")
            if mount.uid and uid != mount.uid:
                problems.append(f"owner uid {uid}, declared {mount.uid}")
            if mount.gid and gid != mount.gid:
                problems.append(f"group gid {gid}, declared {mount.gid}")
            if mount.source is None:
                problems.append(f"not declared in {mount.declared_by}")
            if problems:
                wrong.append(f"{container.name}:{target} {', '.join(problems)}")
    evidence.record(
        test=f"stat of every /run/secrets/* mount in the {live.engine.name} project's containers",
        expected=f"mode {wanted:04o}, and the mode and owner it was deployed with",
        result=_by_service(seen) or "no secret mounts",
    )
    assert any(mounts for containers in seen.values() for mounts in containers.values()) or live.containers.unreached, \
        f"{live.engine.name} project {live.project}: no container mounts a secret"
    assert not wrong, f"effective secret mode differs from its declaration: {'; '.join(wrong)}"
    live.containers.require_every("secret modes")


def _by_service(seen: dict[str, dict[str, list[str]]]) -> str:
    """The evidence, one entry per service when all its containers show the same (a service scaled to
    20 is one line, with its count), else one per container."""
    parts = []
    for service, containers in sorted(seen.items()):
        shown = {tuple(sorted(mounts)) for mounts in containers.values()}
        if not any(shown):
            continue
        if len(containers) > 1 and len(shown) == 1:
            parts.append(f"{service} ({len(containers)} containers): {', '.join(next(iter(shown)))}")
        else:
            parts += [f"{name}: {', '.join(mounts)}" for name, mounts in sorted(containers.items()) if mounts]
    return "; ".join(parts)
