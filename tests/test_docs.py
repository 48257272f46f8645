"""The README and the example configs stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mlsvc_discover._configdoc import END, START, render
from mlsvc_discover.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "config").glob("*.yaml") if not p.name.startswith("k8s-"))


def test_readme_config_reference_matches_the_models() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index(START) : readme.index(END) + len(END)]
    assert section == render(), "README reference is stale: run python -m mlsvc_discover._configdoc --write README.md"


def test_every_config_key_has_a_description() -> None:
    for line in render().splitlines():
        if line.startswith("| `"):
            assert line.rstrip(" |").split("|")[-1].strip(), f"no description: {line}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    # Every variable the example references, set to a placeholder (comments mention ${VAR} too).
    env = dict.fromkeys(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text), "placeholder-value")
    env["OPENMETADATA_HOST"] = "http://openmetadata:8585/api"
    config = parse_config(yaml.safe_load(text), env)
    assert config.discoverers, f"{path.name} declares no discoverer"
