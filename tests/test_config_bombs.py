"""Config bombs are config errors: exit 2, in bounded time, with a message naming the problem.

Each case runs the installed CLI in a subprocess with a time bound, as an operator would.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from mlsvc_discover.config import MAX_CONFIG_BYTES, parse_yaml
from tests.helpers import CLI

BOUND = 20.0  # seconds, start-up on a loaded machine included; an unbounded case runs for minutes


def billion_laughs() -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "owner_id: bomb\n" + "\n".join(lines) + "\n"


BOMBS: dict[str, tuple[str | bytes, str]] = {
    "billion-laughs": (billion_laughs(), "values once YAML aliases are expanded (an alias bomb?)"),
    "alias-bomb-in-a-known-key": (
        "a: &a {x: 1, y: 2, z: 3, w: 4}\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
        "discoverers: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
        "an alias bomb",
    ),
    "recursive-alias-list": ("owner_id: x\nloop: &loop [1, *loop]\n", "recursive alias"),
    "recursive-alias-mapping": ("owner_id: x\nloop: &loop {self: *loop}\n", "recursive alias"),
    "oversized": (
        "owner_id: x\n" + "# padding\n" * (MAX_CONFIG_BYTES // 10 + 1),
        f"larger than {MAX_CONFIG_BYTES} bytes",
    ),
    "deep-flow-nesting": ("a: " + "[" * 500_000 + "]" * 500_000 + "\n", "nested more than 64 levels deep"),
    "deep-block-nesting": (
        "".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n",
        "nested more than",
    ),
    "not-utf8": (b"owner_id: \xff\xfe\n", "is not UTF-8 text"),
}


@pytest.mark.parametrize("command", [["discover", "--once"], ["validate-config"]])
@pytest.mark.parametrize("bomb", list(BOMBS), ids=list(BOMBS))
def test_a_config_bomb_exits_2_in_bounded_time_naming_the_problem(
    bomb: str, command: list[str], tmp_path: Path
) -> None:
    content, message = BOMBS[bomb]
    path = tmp_path / "config.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")

    started = time.monotonic()
    proc = subprocess.run(
        [str(CLI), *command, "--config", str(path)], capture_output=True, text=True, timeout=BOUND, check=False
    )
    took = time.monotonic() - started

    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.startswith("mlsvc-discover: config error: ")
    assert "Traceback" not in proc.stderr
    assert took < BOUND


def test_anchors_and_merge_keys_of_a_normal_config_still_work() -> None:
    text = (
        "defaults: &defaults {timeout: 5s, max_concurrency: 4}\n"
        "discoverers:\n"
        "  - {<<: *defaults, type: mlflow, name: a, tracking_uris: [http://127.0.0.1:1]}\n"
        "  - {<<: *defaults, type: mlflow, name: b, tracking_uris: [http://127.0.0.1:2]}\n"
    )
    raw = parse_yaml(text)
    assert raw["discoverers"][0]["timeout"] == "5s"
    assert raw["discoverers"][1]["max_concurrency"] == 4
