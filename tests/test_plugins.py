"""A discoverer from another package is found through the entry-point group, with no change here."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlsvc_discover._errors import ConfigError
from mlsvc_discover.agent import Agent
from mlsvc_discover.config import parse_config
from mlsvc_discover.discoverers import registry

PLUGIN = """
from typing import Literal
from pydantic import Field
from mlsvc_discover import Discoverer, DiscovererConfig, DiscoveryResult, Finding, ServiceType, ScopeOutcome

class AzureMlConfig(DiscovererConfig):
    type: Literal["azureml"] = Field(description="Always `azureml`.")
    workspaces: list[str] = Field(description="Workspace ids to look at.")

class AzureMlDiscoverer(Discoverer[AzureMlConfig]):
    config_model = AzureMlConfig

    async def discover(self) -> DiscoveryResult:
        result = DiscoveryResult(source=self.name, scopes=[ScopeOutcome(self.root_scope, True)])
        for ws in self.config.workspaces:
            result.findings.append(Finding(
                kind=ServiceType.CUSTOM, source=self.name, scope=(*self.root_scope, ws), key=ws,
                attributes={"connection": {"sourcePythonClass": "my_package.AzureMlSource"}},
                labels={"workspace": ws}, metadata=self.config.defaults,
                name_template=self.config.name_template or "azureml-{workspace}"))
        return result
"""


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An installed distribution (package + dist-info with entry_points.txt) on sys.path."""
    (tmp_path / "my_package").mkdir()
    (tmp_path / "my_package" / "__init__.py").write_text("")
    (tmp_path / "my_package" / "azureml.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "my_package-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-package\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[mlsvc_discover.discoverers]\nazureml = my_package.azureml:AzureMlDiscoverer\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._entry_points.cache_clear()
    yield
    registry._entry_points.cache_clear()
    # Each test installs the package afresh in its own tmp_path; forget the previous one.
    for name in [m for m in sys.modules if m == "my_package" or m.startswith("my_package.")]:
        del sys.modules[name]


def test_plugin_discoverer_is_configured_and_run_like_a_builtin(installed_plugin: None) -> None:
    assert "azureml" in registry.available()
    config = parse_config({"discoverers": [{"type": "azureml", "name": "az", "workspaces": ["ws1", "ws2"]}]}, {})

    async def cycle() -> list[str]:
        async with Agent(config) as agent:
            report = await agent.run_once(dry_run=True)
        assert report.plan is not None
        for change in report.plan.create:
            assert change.body is not None
            assert change.body["serviceType"] == change.body["connection"]["config"]["type"] == "CustomMlModel"
        return sorted(c.name for c in report.plan.create)

    assert asyncio.run(cycle()) == ["azureml-ws1", "azureml-ws2"]


def test_plugin_config_keeps_unknown_keys_forbidden(installed_plugin: None) -> None:
    with pytest.raises(ConfigError, match=r"discoverers\[0\]\.colour: unknown key"):
        parse_config({"discoverers": [{"type": "azureml", "name": "az", "workspaces": [], "colour": 1}]}, {})


def test_unknown_type_lists_the_installed_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"discoverers\[0\]\.type: unknown discoverer type 'nope'.*mlflow, sagemaker, static"
    ):
        parse_config({"discoverers": [{"type": "nope", "name": "x"}]}, {})


def test_a_crashing_discoverer_never_stops_the_others(installed_plugin: None, tmp_path: Path) -> None:
    broken = tmp_path / "my_package" / "broken.py"
    broken.write_text(
        "from typing import Literal\n"
        "from my_package.azureml import AzureMlConfig, AzureMlDiscoverer\n"
        "class BrokenConfig(AzureMlConfig):\n"
        "    type: Literal['broken']\n"
        "class Broken(AzureMlDiscoverer):\n"
        "    config_model = BrokenConfig\n"
        "    async def discover(self):\n"
        "        raise RuntimeError('bug in a plugin')\n"
    )
    eps = tmp_path / "my_package-1.0.dist-info" / "entry_points.txt"
    eps.write_text(eps.read_text() + "broken = my_package.broken:Broken\n")
    registry._entry_points.cache_clear()
    config = parse_config(
        {
            "discoverers": [
                {"type": "broken", "name": "bad", "workspaces": ["x"]},
                {"type": "azureml", "name": "good", "workspaces": ["ws1"]},
            ]
        },
        {},
    )

    async def cycle() -> Any:
        async with Agent(config) as agent:
            return await agent.run_once(dry_run=True)

    report = asyncio.run(cycle())
    assert report.exit_code == 1
    assert report.discoverers["bad"].ok is False
    assert [f.reason for f in report.failures] == ["discoverer crashed: RuntimeError: bug in a plugin"]
    assert report.plan is not None
    assert [c.name for c in report.plan.create] == ["azureml-ws1"]
