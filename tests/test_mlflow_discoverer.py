"""The mlflow discoverer against real MLflow servers and hostile fakes on loopback."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mlsvc_discover._errors import ConfigError
from mlsvc_discover.config import parse_config
from mlsvc_discover.discoverers.base import DiscoveryResult, ItemFailure, ServiceMetadata, ServiceType
from mlsvc_discover.discoverers.mlflow import (
    MlflowDiscoverer,
    MlflowDiscovererConfig,
    normalise_tracking_uri,
    redact_uri,
)
from mlsvc_discover.discoverers.registry import discoverer_class
from mlsvc_discover.mlflow_probe import HttpProbeError, MlflowProber, ProbeResult, ProbeSettings, ProbeTarget
from testing.mlflow_fixtures import (
    FakeServer,
    MlflowServer,
    TlsMaterial,
    drip,
    huge_body,
    mlflow_like,
    redirect,
    status,
)

FakeFactory = Callable[..., FakeServer]
API = "/api/2.0/mlflow/experiments/search"


def config(**values: Any) -> MlflowDiscovererConfig:
    # A generous deadline unless the test is about deadlines: the suite shares two cores with
    # MLflow servers whose basic-auth app hashes the password on every request.
    return MlflowDiscovererConfig.model_validate({"type": "mlflow", "name": "ml", "timeout": "20s", **values})


async def discover_once(cfg: MlflowDiscovererConfig) -> DiscoveryResult:
    discoverer = MlflowDiscoverer(cfg)
    try:
        return await discoverer.discover()
    finally:
        await discoverer.aclose()


def run(cfg: MlflowDiscovererConfig) -> DiscoveryResult:
    return asyncio.run(discover_once(cfg))


def key(url: str) -> str:
    return normalise_tracking_uri(url)[0]


def failure(result: DiscoveryResult, url: str) -> ItemFailure:
    matches = [f for f in result.failures if f.item == key(url)]
    assert len(matches) == 1, result
    return matches[0]


def found_keys(result: DiscoveryResult) -> set[str]:
    return {f.key for f in result.findings}


def scope_ok(result: DiscoveryResult, url: str) -> bool:
    (outcome,) = [s for s in result.scopes if s.scope == ("mlflow", "ml", key(url))]
    return outcome.ok


# --- real servers ----------------------------------------------------------------------------


@pytest.mark.slow
def test_real_server_is_found_with_its_facts_labels_and_scope(mlflow_server: MlflowServer) -> None:
    result = run(
        config(tracking_uris=[mlflow_server.url + "/"], name_template="mlflow-{host}-{port}", read_version=True)
    )

    assert result.ok, result
    (finding,) = result.findings
    port = mlflow_server.url.rsplit(":", 1)[1]
    assert finding.kind is ServiceType.MLFLOW
    assert finding.key == mlflow_server.url
    assert finding.scope == ("mlflow", "ml", mlflow_server.url)
    assert finding.attributes == {
        "tracking_uri": mlflow_server.url,
        "registry_uri": mlflow_server.url,
        "registry_available": True,
        "mlflow_version": "3.17.2",
    }
    assert finding.labels == {
        "host": "127.0.0.1",
        "port": port,
        "scheme": "http",
        "path": "",
        "discoverer": "ml",
        "mlflow_version": "3.17.2",
    }
    assert finding.name is None
    assert finding.name_template == "mlflow-{host}-{port}"
    assert [s.scope for s in result.scopes] == [("mlflow", "ml"), ("mlflow", "ml", mlflow_server.url)]


@pytest.mark.slow
def test_target_name_labels_metadata_and_registry_uri_reach_the_finding(mlflow_server: MlflowServer) -> None:
    cfg = config(
        defaults={"description": "from defaults", "domains": ["ml"]},
        tracking_uris=[
            {
                "uri": mlflow_server.url.upper().replace("HTTP://", "http://"),
                "name": "team-a-mlflow",
                "registry_uri": "postgresql://reg:pg-secret@db.internal:5432/registry",
                "metadata": {"description": "team A"},
                "labels": {"team": "a", "discoverer": "overridden"},
            }
        ],
    )
    result = run(cfg)

    (finding,) = result.findings
    assert finding.name == "team-a-mlflow"
    assert finding.attributes["registry_uri"] == "postgresql://db.internal:5432/registry"
    assert finding.metadata == ServiceMetadata(description="team A", domains=("ml",))
    assert finding.labels["team"] == "a"
    assert finding.labels["discoverer"] == "overridden"
    assert "pg-secret" not in repr(result)


@pytest.mark.slow
def test_basic_auth_server_without_credentials_is_unauthorized(mlflow_auth_server: MlflowServer) -> None:
    result = run(config(tracking_uris=[mlflow_auth_server.url]))

    fail = failure(result, mlflow_auth_server.url)
    assert fail.kind == "unauthorized"
    assert fail.reason.startswith("HTTP 401: unauthorized")
    assert not result.findings
    assert not scope_ok(result, mlflow_auth_server.url)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["in_uri", "per_uri_auth", "discoverer_auth"])
def test_basic_auth_server_is_found_with_credentials_given(mlflow_auth_server: MlflowServer, where: str) -> None:
    server = mlflow_auth_server
    assert server.username
    assert server.password
    auth = {"username": server.username, "password": server.password}
    host_port = server.url.removeprefix("http://")
    item: Any = {
        "in_uri": f"http://{server.username}:{server.password}@{host_port}",
        "per_uri_auth": {"uri": server.url, "auth": auth},
        "discoverer_auth": server.url,
    }[where]
    cfg = config(tracking_uris=[item], auth=auth if where == "discoverer_auth" else None, read_version=True)
    result = run(cfg)

    assert result.ok, result
    (finding,) = result.findings
    assert finding.attributes["tracking_uri"] == server.url
    assert finding.attributes["mlflow_version"] == "3.17.2"
    assert finding.attributes["registry_available"] is True
    assert server.password not in repr(result)


@pytest.mark.slow
def test_wrong_password_says_to_check_the_credentials(mlflow_auth_server: MlflowServer) -> None:
    cfg = config(tracking_uris=[{"uri": mlflow_auth_server.url, "auth": {"username": "admin", "password": "nope"}}])
    result = run(cfg)

    assert failure(result, mlflow_auth_server.url).reason == (
        "HTTP 401: unauthorized; check the credentials for this URI"
    )


def test_refused_port_fails_fast_as_connection_refused(refused_url: str) -> None:
    started = time.monotonic()
    result = run(config(tracking_uris=[refused_url], timeout="5s"))

    assert time.monotonic() - started < 1.0
    fail = failure(result, refused_url)
    assert (fail.reason, fail.kind) == ("connection refused", "unreachable")
    assert result.scopes[0].ok, "a failed URI must not fail the root scope"


@pytest.mark.slow
def test_silent_host_times_out_and_the_whole_discover_stays_within_the_deadline(
    blackhole_url: str, mlflow_server: MlflowServer, refused_url: str
) -> None:
    cfg = config(tracking_uris=[blackhole_url, mlflow_server.url, refused_url], timeout="3s")
    started = time.monotonic()
    result = run(cfg)
    elapsed = time.monotonic() - started

    assert elapsed < 4.0
    assert failure(result, blackhole_url).reason == "timed out after 3.0s"
    assert failure(result, blackhole_url).kind == "timeout"
    assert failure(result, refused_url).reason == "connection refused"
    assert found_keys(result) == {mlflow_server.url}


# --- uris_file -------------------------------------------------------------------------------


@pytest.mark.slow
def test_uris_file_is_read_again_every_cycle(tmp_path: Path, mlflow_server: MlflowServer, refused_url: str) -> None:
    uris = tmp_path / "uris.txt"
    uris.write_text(f"# first cycle\n\n{refused_url}   # nothing listens here\n")
    discoverer = MlflowDiscoverer(config(uris_file=uris))

    async def two_cycles() -> tuple[DiscoveryResult, DiscoveryResult]:
        try:
            first = await discoverer.discover()
            uris.write_text(f"{mlflow_server.url}\n")
            return first, await discoverer.discover()
        finally:
            await discoverer.aclose()

    first, second = asyncio.run(two_cycles())

    assert failure(first, refused_url).reason == "connection refused"
    assert not first.findings
    assert found_keys(second) == {mlflow_server.url}
    assert not second.failures
    assert [s.scope for s in second.scopes] == [("mlflow", "ml"), ("mlflow", "ml", mlflow_server.url)]


@pytest.mark.slow
def test_missing_uris_file_fails_the_root_scope_but_inline_uris_are_found(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    missing = tmp_path / "nope.txt"
    result = run(config(uris_file=missing, tracking_uris=[mlflow_server.url]))

    root = result.scopes[0]
    assert root.scope == ("mlflow", "ml")
    assert not root.ok
    assert root.error == f"cannot read uris_file {missing}: No such file or directory"
    assert found_keys(result) == {mlflow_server.url}


def test_bad_line_in_uris_file_fails_the_root_scope_and_good_lines_are_probed(
    tmp_path: Path, fake_mlflow: FakeFactory
) -> None:
    good = fake_mlflow(mlflow_like())
    uris = tmp_path / "uris.txt"
    uris.write_text(f"ftp://user:hunter2@files.example\n{good.url}\n{good.url}/\n")
    result = run(config(uris_file=uris))

    assert not result.scopes[0].ok
    assert "uris_file line 1" in (result.scopes[0].error or "")
    assert [f.item for f in result.failures] == [f"{uris}:1"]
    assert found_keys(result) == {key(good.url)}
    assert [(s.item, s.kind) for s in result.ignored] == [(key(good.url), "duplicate")]
    assert "hunter2" not in repr(result)


# --- hostile and broken servers --------------------------------------------------------------


def _redirect_to_other_host(make: FakeFactory) -> tuple[str, str, str]:
    other = make(mlflow_like())
    first = make(redirect(lambda path: f"http://localhost:{other.port}{path}"))
    return first.url, f"redirect to another host (localhost:{other.port}) refused", "redirect"


def _chain(make: FakeFactory) -> tuple[str, str, str]:
    server = make(redirect(lambda path: "/hop" + path))
    return server.url, "too many redirects (more than 3)", "redirect"


HARDENING: dict[str, Callable[[FakeFactory], tuple[str, str, str]]] = {
    "http_500": lambda make: (make(status(500, b"oops", "text/plain")).url, "HTTP 500 from server", "server_error"),
    "html_login_page": lambda make: (
        make(status(200, b"<html><form>login</form></html>", "text/html; charset=utf-8")).url,
        "not an MLflow tracking server: response is not JSON (text/html)",
        "not_mlflow",
    ),
    "http_404": lambda make: (
        make(status(404, b"<h1>nope</h1>", "text/html")).url,
        "not an MLflow tracking server: HTTP 404",
        "not_mlflow",
    ),
    "invalid_json": lambda make: (
        make(status(200, b'{"experiments": [')).url,
        "not an MLflow tracking server: invalid JSON",
        "not_mlflow",
    ),
    "json_list": lambda make: (
        make(status(200, b"[1, 2]")).url,
        "not an MLflow tracking server: JSON list instead of an object",
        "not_mlflow",
    ),
    # Issue 8: servers that answer the same JSON to every path pass a JSON-shape check alone.
    "empty_json_object_everywhere": lambda make: (
        make(status(200, b"{}")).url,
        "not an MLflow tracking server: HTTP 200 for a missing experiment, not MLflow's 404 RESOURCE_DOES_NOT_EXIST",
        "not_mlflow",
    ),
    "mlflow_like_json_everywhere": lambda make: (
        make(status(200, b'{"experiments": [{"experiment_id": "0", "name": "Default"}]}')).url,
        "not an MLflow tracking server: HTTP 200 for a missing experiment, not MLflow's 404 RESOURCE_DOES_NOT_EXIST",
        "not_mlflow",
    ),
    "experiments_that_are_not_experiments": lambda make: (
        make(status(200, b'{"experiments": [1, {"name": "x"}]}')).url,
        "not an MLflow tracking server: experiments without an experiment_id",
        "not_mlflow",
    ),
    "json_without_experiments": lambda make: (
        make(status(200, b'{"status": "ok"}')).url,
        "not an MLflow tracking server: JSON without an experiments list",
        "not_mlflow",
    ),
    "streamed_50mb_body": lambda make: (
        make(huge_body(50 * 2**20, declare_length=False)).url,
        "response larger than 65536 bytes",
        "too_large",
    ),
    "declared_50mb_body": lambda make: (
        make(huge_body(50 * 2**20, declare_length=True)).url,
        "response larger than 65536 bytes",
        "too_large",
    ),
    "redirect_loop": lambda make: (
        make(redirect(lambda path: path)).url,
        f"redirect loop at {API}",
        "redirect",
    ),
    "too_many_redirects": _chain,
    "redirect_to_other_host": _redirect_to_other_host,
    "not_http": lambda make: (
        make(lambda req: req.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\nfoo\r\n\r\n")).url,
        "not an MLflow tracking server: invalid HTTP response",
        "not_mlflow",
    ),
    "hang_up_without_answer": lambda make: (
        make(lambda req: None).url,
        "server closed the connection without answering",
        "unreachable",
    ),
    "http_403_host_header": lambda make: (
        make(status(403, b"Invalid Host header", "text/plain")).url,
        "HTTP 403: the server refuses this host name; add it to the server's --allowed-hosts",
        "unauthorized",
    ),
    "http_403": lambda make: (
        make(status(403, b"denied", "text/plain")).url,
        "HTTP 403: forbidden; the credentials lack permission on this server",
        "unauthorized",
    ),
    "drip_one_byte_per_second": lambda make: (make(drip(1.0)).url, "timed out after 3.0s", "timeout"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(HARDENING))
def test_broken_server_fails_with_its_reason_and_the_real_server_is_still_found(
    case: str, fake_mlflow: FakeFactory, mlflow_server: MlflowServer
) -> None:
    url, reason, kind = HARDENING[case](fake_mlflow)
    cfg = config(tracking_uris=[url, mlflow_server.url], timeout="3s", max_response_bytes=65536)
    started = time.monotonic()
    result = run(cfg)

    assert time.monotonic() - started < 4.0
    fail = failure(result, url)
    assert (fail.reason, fail.kind) == (reason, kind)
    assert not scope_ok(result, url)
    assert found_keys(result) == {mlflow_server.url}
    assert scope_ok(result, mlflow_server.url)


@pytest.mark.slow
def test_all_broken_servers_at_once_leave_the_real_ones_found(
    fake_mlflow: FakeFactory, mlflow_server: MlflowServer, blackhole_url: str, refused_url: str
) -> None:
    cases = {name: build(fake_mlflow) for name, build in HARDENING.items()}
    good_fake = fake_mlflow(mlflow_like())
    urls = [url for url, _, _ in cases.values()] + [blackhole_url, refused_url, mlflow_server.url, good_fake.url]
    started = time.monotonic()
    result = run(config(tracking_uris=urls, timeout="3s", max_response_bytes=65536))

    assert time.monotonic() - started < 4.0
    assert {name: failure(result, url).reason for name, (url, _, _) in cases.items()} == {
        name: reason for name, (_, reason, _) in cases.items()
    }
    assert found_keys(result) == {mlflow_server.url, key(good_fake.url)}
    assert len(result.scopes) == 1 + len(urls)


def test_streamed_huge_body_is_abandoned_at_the_limit_with_bounded_memory(fake_mlflow: FakeFactory) -> None:
    total = 50 * 2**20
    behaviour = huge_body(total, declare_length=False)
    server = fake_mlflow(behaviour)
    tracemalloc.start()
    try:
        result = run(config(tracking_uris=[server.url], max_response_bytes=65536))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert failure(result, server.url).reason == "response larger than 65536 bytes"
    assert peak < 8 * 2**20, f"peak {peak} bytes while reading a 50 MB body"
    deadline = time.monotonic() + 5
    while behaviour.sent < 65536 and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    assert behaviour.sent < total // 2, "the client kept reading past the limit"  # type: ignore[attr-defined]


def test_registry_is_unavailable_when_the_server_has_none(fake_mlflow: FakeFactory) -> None:
    server = fake_mlflow(mlflow_like(registry=False, version="2.9.0"))
    result = run(config(tracking_uris=[server.url], read_version=True))

    (finding,) = result.findings
    assert finding.attributes["registry_available"] is False
    assert finding.attributes["mlflow_version"] == "2.9.0"


def test_check_registry_off_never_asks_for_the_registry(fake_mlflow: FakeFactory) -> None:
    server = fake_mlflow(mlflow_like())
    result = run(config(tracking_uris=[server.url], check_registry=False))

    assert result.findings[0].attributes["registry_available"] is False
    assert not [r for r in server.requests if "registered-models" in r.path]


def test_junk_version_text_is_not_reported(fake_mlflow: FakeFactory) -> None:
    server = fake_mlflow(mlflow_like(version="<script>alert(1)</script>"))
    result = run(config(tracking_uris=[server.url], read_version=True))

    assert result.findings[0].attributes["mlflow_version"] is None
    assert result.findings[0].labels["mlflow_version"] == "unknown"


# --- TLS -------------------------------------------------------------------------------------


def test_tls_with_unknown_ca_fails_verification_by_default(fake_mlflow: FakeFactory, tls_material: TlsMaterial) -> None:
    server = fake_mlflow(mlflow_like(), tls=tls_material)
    result = run(config(tracking_uris=[server.url]))

    fail = failure(result, server.url)
    assert fail.kind == "tls"
    assert fail.reason.startswith("TLS certificate verify failed: ")


def test_tls_succeeds_with_the_ca_bundle(fake_mlflow: FakeFactory, tls_material: TlsMaterial) -> None:
    server = fake_mlflow(mlflow_like(), tls=tls_material)
    result = run(config(tracking_uris=[server.url], ca_bundle=str(tls_material.ca_path)))

    assert result.ok, result
    assert result.findings[0].labels["scheme"] == "https"


def test_unreadable_ca_bundle_fails_every_scope_with_the_reason(tmp_path: Path, fake_mlflow: FakeFactory) -> None:
    server = fake_mlflow(mlflow_like())
    result = run(config(tracking_uris=[server.url], ca_bundle=str(tmp_path / "missing.pem")))

    assert all(not s.ok for s in result.scopes)
    assert failure(result, server.url).reason.startswith(f"cannot load ca_bundle {tmp_path / 'missing.pem'}")
    assert not server.requests


# --- redirects and credentials ---------------------------------------------------------------


def test_redirect_to_another_host_never_sends_the_credentials_there(fake_mlflow: FakeFactory) -> None:
    other = fake_mlflow(mlflow_like())
    first = fake_mlflow(redirect(lambda path: f"http://localhost:{other.port}{path}"))
    same_host_other_port = fake_mlflow(redirect(lambda path: f"http://127.0.0.1:{other.port}{path}"))
    result = run(config(tracking_uris=[first.url, same_host_other_port.url], auth={"token": "tok-123456"}))

    assert failure(result, first.url).reason == f"redirect to another host (localhost:{other.port}) refused"
    assert failure(result, same_host_other_port.url).reason == (
        f"redirect to another host (127.0.0.1:{other.port}) refused"
    )
    assert first.requests[0].headers.get("Authorization") == "Bearer tok-123456"
    assert other.requests == []


def test_redirect_within_the_same_origin_is_followed_with_credentials(fake_mlflow: FakeFactory) -> None:
    behaviour = mlflow_like()

    def moved(req: Any) -> None:
        if req.path.startswith("/new/"):
            behaviour(req)
        else:
            redirect(lambda path: "/new" + path, code=308)(req)

    server = fake_mlflow(moved)
    result = run(config(tracking_uris=[server.url], auth={"token": "tok-123456"}))

    assert result.ok, result
    assert result.findings[0].attributes["tracking_uri"] == key(server.url)
    followed = [r for r in server.requests if r.path.startswith("/new/")]
    assert followed
    assert all(r.headers.get("Authorization") == "Bearer tok-123456" for r in followed)


def test_no_secret_appears_anywhere_in_the_result(tmp_path: Path, fake_mlflow: FakeFactory, refused_url: str) -> None:
    ok_server = fake_mlflow(mlflow_like())
    denied = fake_mlflow(status(401, b"who are you?", "text/plain"))
    uris = tmp_path / "uris.txt"
    uris.write_text(f"http://filer:file-pass-1@{refused_url.removeprefix('http://')}\n")
    cfg = config(
        uris_file=uris,
        auth={"token": "default-token-1"},
        tracking_uris=[
            f"http://alice:uri-pass-1@{ok_server.url.removeprefix('http://')}/",
            {"uri": denied.url, "auth": {"username": "bob", "password": "target-pass-1"}},
            {"uri": f"{refused_url}/x", "registry_uri": "mysql://r:reg-pass-1@db/reg"},
        ],
    )
    discoverer = MlflowDiscoverer(cfg)

    async def once() -> DiscoveryResult:
        try:
            return await discoverer.discover()
        finally:
            await discoverer.aclose()

    result = asyncio.run(once())
    text = f"{result!s} {result!r}"

    secrets = ["default-token-1", "uri-pass-1", "target-pass-1", "reg-pass-1", "file-pass-1"]
    for secret in secrets:
        assert secret not in text
    assert set(secrets) <= set(discoverer.secrets())
    assert found_keys(result) == {key(ok_server.url)}
    assert ok_server.requests[0].headers["Authorization"].startswith("Basic ")
    assert failure(result, denied.url).reason == "HTTP 401: unauthorized; check the credentials for this URI"


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"tracking_uris": ["ftp://u:pw-secret@host:21"]}, "tracking_uris", "must start with http:// or https://"),
        ({"tracking_uris": ["http://"]}, "tracking_uris", "has no host"),
        ({"tracking_uris": ["mlflow.example.com:5000"]}, "tracking_uris", "must start with http:// or https://"),
        ({"tracking_uris": ["http://host/?token=pw-secret"]}, "tracking_uris", "must not have a query"),
        ({"tracking_uris": ["http://u@host"]}, "tracking_uris", "incomplete credentials"),
        ({"tracking_uris": [{"uri": "https://"}]}, "tracking_uris.0.target.uri", "has no host"),
        (
            {"tracking_uris": ["http://Host:80/", "HTTP://host"]},
            "<root>",
            "tracking_uris lists http://host:80 twice",
        ),
        (
            {"tracking_uris": ["http://h"], "auth": {"token": "pw-secret", "password": "pw-secret", "username": "u"}},
            "auth",
            "set either token, or username and password, not both",
        ),
        ({"tracking_uris": ["http://h"], "auth": {"username": "u"}}, "auth", "username and password go together"),
        (
            {"tracking_uris": [{"uri": "http://u:pw-secret@h", "auth": {"token": "t"}}]},
            "tracking_uris.0.target",
            "credentials in the URI and in auth",
        ),
        ({}, "<root>", "nothing to probe"),
        ({"tracking_uris": ["http://h"], "verify_tls": False, "ca_bundle": "/ca.pem"}, "<root>", "ca_bundle is set"),
        ({"tracking_uris": ["http://h"], "timeout": 0}, "timeout", "greater than 0"),
        ({"tracking_uris": ["http://h"], "bogus": 1}, "bogus", "Extra inputs"),
        (
            {"tracking_uris": [{"uri": "http://h", "name": "a::b"}]},
            "tracking_uris.0.target.name",
            "must not contain '::'",
        ),
    ],
)
def test_invalid_config_is_rejected_naming_the_field(values: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        config(**values)

    error = info.value.errors()[0]
    assert (".".join(str(p) for p in error["loc"]) or "<root>") == field
    assert message in error["msg"]
    assert "pw-secret" not in str(info.value)


def test_config_loader_reports_the_bad_uri_key_without_its_password() -> None:
    raw = {"discoverers": [{"type": "mlflow", "name": "ml", "tracking_uris": ["gopher://me:pw-secret@h"]}]}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, env={})

    assert info.value.key == "discoverers[0].tracking_uris"
    assert "gopher://me:***@h" in str(info.value)
    assert "pw-secret" not in str(info.value)


def test_config_loader_builds_the_mlflow_config_with_env_credentials() -> None:
    raw = {
        "discoverers": [
            {
                "type": "mlflow",
                "name": "ml",
                "tracking_uris": ["http://mlflow:5000"],
                "auth": {"token": "${MLFLOW_TOKEN}"},
                "timeout": "2s",
            }
        ]
    }
    loaded = parse_config(raw, env={"MLFLOW_TOKEN": "env-token"}).discoverers[0]

    assert isinstance(loaded, MlflowDiscovererConfig)
    assert loaded.timeout == 2.0
    assert loaded.auth is not None
    assert "env-token" not in repr(loaded)
    assert MlflowDiscoverer(loaded).secrets() == ("env-token",)


def test_entry_point_names_the_mlflow_discoverer() -> None:
    assert discoverer_class("mlflow") is MlflowDiscoverer


def test_example_config_in_repo_is_valid() -> None:
    path = Path(__file__).resolve().parents[1] / "config" / "mlflow.example.yaml"
    loaded = parse_config(
        yaml.safe_load(path.read_text()),
        env={"MLFLOW_TRACKING_TOKEN": "t", "MLFLOW_TEAM_B_PASSWORD": "p"},
    )

    assert [type(d) for d in loaded.discoverers] == [MlflowDiscovererConfig]


# --- URI helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://127.0.0.1:5000", ("http://127.0.0.1:5000", None, None)),
        ("HTTPS://MLflow.Example.COM/", ("https://mlflow.example.com:443", None, None)),
        ("http://host/prefix/mlflow//", ("http://host:80/prefix/mlflow", None, None)),
        ("http://[::1]:5000/", ("http://[::1]:5000", None, None)),
        # One address, one key: IPv6 hosts in their compressed, lower-case form.
        ("http://[0:0::1]:5000", ("http://[::1]:5000", None, None)),
        ("http://[0000:0000:0000:0000:0000:0000:0000:0001]:5000/", ("http://[::1]:5000", None, None)),
        ("https://[2001:DB8:0::1]/", ("https://[2001:db8::1]:443", None, None)),
        # The path prefix is kept as written (case included); only trailing slashes go.
        ("http://Host:5000/Team-A/MLflow/", ("http://host:5000/Team-A/MLflow", None, None)),
        ("https://host:443", ("https://host:443", None, None)),
        ("http://al%40ice:p%3Ass@host:8080", ("http://host:8080", "al@ice", "p:ss")),
    ],
)
def test_normalise_tracking_uri(uri: str, expected: tuple[str, str | None, str | None]) -> None:
    assert normalise_tracking_uri(uri) == expected


def test_two_spellings_of_one_ipv6_host_are_one_server_in_config() -> None:
    uris = ["http://[::1]:5000", "http://[0:0::1]:5000/"]
    with pytest.raises(ConfigError, match=r"lists http://\[::1\]:5000 twice"):
        parse_config({"discoverers": [{"type": "mlflow", "name": "m", "tracking_uris": uris}]}, env={})


def test_ipv6_server_is_found_with_a_bracketed_key_and_a_bare_host_label(fake_mlflow: FakeFactory) -> None:
    server = fake_mlflow(mlflow_like(), host="::1")
    result = run(config(tracking_uris=[server.url + "/"]))

    (finding,) = result.findings
    assert finding.key == f"http://[::1]:{server.port}"
    assert finding.labels["host"] == "::1"


@pytest.mark.parametrize(
    ("uri", "redacted"),
    [
        ("http://u:secret@host:5000/x", "http://u:***@host:5000/x"),
        ("http://u@host", "http://u@host"),
        ("u:secret@host", "u:***@host"),
        ("http://host/x?token=secret#frag", "http://host/x?***#frag"),
        ("not a uri", "not a uri"),
    ],
)
def test_redact_uri_hides_passwords_and_queries(uri: str, redacted: str) -> None:
    assert redact_uri(uri) == redacted


_label = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)


@given(
    scheme=st.sampled_from(["http", "HTTP", "https", "Https"]),
    host=st.lists(_label, min_size=1, max_size=3).map(".".join),
    port=st.none() | st.integers(1, 65535),
    path=st.lists(_label, max_size=3).map("/".join),
    slash=st.booleans(),
    password=st.none() | st.text("abcXYZ019-_.~%!$", min_size=1, max_size=12),
)
def test_normalised_uri_is_stable_and_credential_free(
    scheme: str, host: str, port: int | None, path: str, slash: bool, password: str | None
) -> None:
    userinfo = f"user:{password}@" if password else ""
    uri = f"{scheme}://{userinfo}{host}{f':{port}' if port else ''}/{path}{'/' if slash else ''}"
    clean, user, _ = normalise_tracking_uri(uri)

    assert normalise_tracking_uri(clean) == (clean, None, None)
    assert "@" not in clean
    assert not clean.endswith("/")
    assert user == ("user" if password else None)


def test_version_is_not_asked_for_unless_configured(fake_mlflow: FakeFactory) -> None:
    server = fake_mlflow(mlflow_like(version="2.9.0"))
    result = run(config(tracking_uris=[server.url]))

    assert result.findings[0].attributes["mlflow_version"] is None
    assert result.findings[0].labels["mlflow_version"] == "unknown"
    # Issue 8: the registry is now asked for a missing model (MLflow's 404 also proves MLflow).
    assert [r.path.split("?")[0] for r in server.requests] == [
        "/api/2.0/mlflow/experiments/search",
        "/api/2.0/mlflow/registered-models/get",
    ]


# --- the prober on its own (the seam other discoverers call) ---------------------------------


def test_the_prober_finds_mlflow_and_refuses_a_server_answering_empty_json_everywhere(
    fake_mlflow: FakeFactory,
) -> None:
    prober = MlflowProber(ProbeSettings(timeout=10.0))
    real = fake_mlflow(mlflow_like())
    catch_all = fake_mlflow(status(200, b"{}"))

    async def probe(url: str) -> ProbeResult:
        return await prober.probe(ProbeTarget.from_uri(url + "/"))

    found = asyncio.run(probe(real.url))
    assert found == ProbeResult(tracking_uri=key(real.url), registry_available=True, mlflow_version=None)
    with pytest.raises(HttpProbeError) as refused:
        asyncio.run(probe(catch_all.url))
    assert refused.value.kind == "not_mlflow"
    # The missing experiment's name is random per probe: no fixed answer can fake MLflow's 404.
    asked = [r.path for r in catch_all.requests if "get-by-name" in r.path]
    assert len(asked) == 1
    assert asked[0].startswith("/api/2.0/mlflow/experiments/get-by-name?experiment_name=mlsvc-discover-probe-")
