"""Each defect of the progressive disclosure control fails that control, and only it."""

import pytest
from harness import assert_only_control_fails

DIR = "ai-stack/mcp-servers/aidb/disclosure"
BLOAT = " ".join(f"Release {n}: connection pooling, breaker tuning and discovery changes." for n in range(40))


def bloat_discovery(stack):
    path = stack / DIR / "discovery.json"
    path.write_text(path.read_text().replace('"service": "aidb",', f'"service": "aidb", "changelog": "{BLOAT}",', 1))


def shrink_full_docs(stack):
    """Half the docs: the progressive total stays under budget, but the savings fall below 60 %."""
    path = stack / DIR / "full-docs.md"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))


def remove_quickstart(stack):
    (stack / DIR / "quickstart.json").unlink()


def garbage_health(stack):
    (stack / DIR / "health.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary")


# (id, how to break the stack copy, fragments the failure reason must name)
DEFECTS = [
    ("bloated-discovery", bloat_discovery, ["recorded responses:", "not under 750", "largest: discovery"]),
    ("full-docs-shrunk", shrink_full_docs, ["full-docs.md: progressive", "saved, expected >= 60% saved"]),
    ("response-missing", remove_quickstart, [f"{DIR}/quickstart.json: file not found"]),
    ("response-binary", garbage_health, [f"{DIR}/health.json: not UTF-8 text"]),
]


@pytest.mark.parametrize("inject, fragments", [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_defect_fails_progressive_disclosure(stack_copy, run_static, inject, fragments):
    inject(stack_copy)
    assert_only_control_fails(run_static(stack_copy), "progressive_disclosure", *fragments)
