"""`policy: sync` from cron-style `--once` runs: misses kept in the state file, dry runs show deletes
with their reasons and change nothing, a soft-deleted service that comes back is restored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsvc_discover.cli import main
from testing.openmetadata import OpenMetadataStandIn


def run(capsys: pytest.CaptureFixture[str], path: Path, *flags: str) -> dict[str, Any]:
    code = main(["discover", "--once", "--config", str(path), "--output", "json", *flags])
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert code == 0, report
    return report


def write(path: Path, standin: OpenMetadataStandIn, token: str, names: list[str]) -> Path:
    config = {
        "owner_id": "cron",
        "policy": "sync",
        "stale_after": 2,
        "max_delete_fraction": 1.0,
        "state": {"path": str(path.parent / "state.json")},
        "openmetadata": {"host": standin.base_url, "token": token},
        "discoverers": [
            {"type": "static", "name": "decl", "services": [{"name": n, "service_type": "Sklearn"} for n in names]}
        ],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_sync_from_once_runs_deletes_after_stale_after_runs_and_restores_on_return(
    tmp_path: Path, om_standin: OpenMetadataStandIn, om_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    all_names = ["s1", "s2", "s3"]
    write(path, om_standin, om_token, all_names)
    assert run(capsys, path)["outcomes"] == {"created": 3}
    original_id = om_standin.services["s3"]["id"]

    write(path, om_standin, om_token, ["s1", "s2"])
    first_miss = run(capsys, path)
    assert first_miss["plan"]["delete"] == []
    assert json.loads((tmp_path / "state.json").read_text())["misses"] == {"s3": 1}

    om_standin.reset_log()
    preview = run(capsys, path, "--dry-run")
    assert [(c["name"], c["action"]) for c in preview["plan"]["delete"]] == [("s3", "delete")]
    assert "not found for 2 consecutive cycles" in preview["plan"]["delete"][0]["reason"]
    assert om_standin.writes() == []
    assert json.loads((tmp_path / "state.json").read_text())["misses"] == {"s3": 1}, "a dry run must not count"

    assert run(capsys, path)["outcomes"] == {"deleted": 1, "unchanged": 2}
    assert om_standin.get_service("s3") is None or om_standin.services["s3"]["deleted"] is True

    write(path, om_standin, om_token, all_names)
    back = run(capsys, path)
    assert back["outcomes"] == {"restored": 1, "unchanged": 2}
    restored = om_standin.services["s3"]
    assert restored["deleted"] is False
    assert restored["id"] == original_id
    assert sorted(om_standin.services) == all_names
