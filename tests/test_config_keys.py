"""Every ``mcdask.*`` setting the code reads is declared, with its default, in mcdask/mcdask.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: ``config.get("mcdask.a.b"`` and ``config.get(f"mcdask.a.{key}"`` (then the section ``mcdask.a``)
READ = re.compile(r"""config\.get\(\s*f?["'](mcdask\.[A-Za-z0-9_.-]*)""")


def keys_read() -> dict[str, str]:
    """key -> the file that reads it, over the project's code."""
    found = {}
    for folder in ("mcdask", "workloads", "cluster", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for key in READ.findall(path.read_text()):
                found[key.rstrip(".")] = str(path.relative_to(ROOT))
    return found


def declared(key: str) -> bool:
    node = yaml.safe_load((ROOT / "mcdask" / "mcdask.yaml").read_text())
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_the_reader_finds_the_keys_the_code_reads():
    found = keys_read()
    assert {"mcdask.profile.cache-dir", "mcdask.stream.depth", "mcdask.controller"} <= set(found)
    assert not declared("mcdask.no-such-setting")


def test_every_key_the_code_reads_is_declared_in_the_yaml():
    missing = {key: where for key, where in keys_read().items() if not declared(key)}
    assert missing == {}, f"read but not in mcdask/mcdask.yaml: {missing}"
