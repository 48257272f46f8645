"""Properties over generated inputs: names, URIs and plans hold their rules for any input.

The mapper turns whatever discovery reports (host names, ports, account ids, regions, label
values from config, name templates from config) into OpenMetadata names; the plan decides what
to write and delete. Both are pure, so hypothesis can throw arbitrary input at them: every name
is valid or the finding fails with a MappingError (never another exception, which would sink
the whole cycle), distinct findings never silently share a name, a tracking URI's password
never survives into anything published, and no plan ever touches a service it does not own or
deletes outside ``policy: sync``.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlsvc_discover._errors import ConfigError, MappingError
from mlsvc_discover.agent import describe
from mlsvc_discover.config import parse_config
from mlsvc_discover.discoverers.base import Finding, ServiceType
from mlsvc_discover.discoverers.mlflow import normalise_tracking_uri, redact_uri
from mlsvc_discover.mapper import DEFAULT_TEMPLATES, DesiredService, map_finding, map_findings, owner_tag_fqn
from mlsvc_discover.openmetadata.entities import CurrentService
from mlsvc_discover.openmetadata.models import NAME_MAX
from mlsvc_discover.plan import compute_plan, scope_succeeded

OWNER = owner_tag_fqn("mlsvc-discover", "props")
FOREIGN = owner_tag_fqn("mlsvc-discover", "someone-else")
# 200 examples keep the suite fast; MLSVC_PROPERTY_EXAMPLES=5000 digs deeper before a release.
PROPS = settings(
    max_examples=int(os.environ.get("MLSVC_PROPERTY_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def assert_valid_name(name: str) -> None:
    assert 1 <= len(name) <= NAME_MAX, len(name)
    assert "::" not in name
    assert not _CONTROL.search(name), repr(name)


# --- strategies ---------------------------------------------------------------------------------------

# Anything at all, and the shapes real values take, so both the edges and the common paths are hit.
anything = st.text(max_size=300)
hosts = st.one_of(
    anything,
    st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}\.){0,4}[a-z]{2,6}\Z"),
    st.sampled_from(["::1", "[::1]", "127.0.0.1", "mlflow..internal", "a::b", "x" * 300]),
)
ports = st.one_of(st.integers(min_value=-1, max_value=70000).map(str), anything)
accounts = st.one_of(st.from_regex(r"\A\d{12}\Z"), anything)
regions = st.one_of(st.from_regex(r"\A[a-z]{2}(-[a-z]+)+-\d\Z"), anything)
label_maps = st.dictionaries(st.sampled_from(["team", "env", "path", "scheme", "x"]), anything, max_size=4)

_placeholder = st.builds(
    lambda name, tail: "{" + name + tail + "}",
    st.sampled_from(["host", "port", "account", "region", "team", "key", "discoverer", "nope", "0", "", "a.b", "x[0]"]),
    st.sampled_from(["", "", "", "!r", "!s", "!x", ":d", ":>20", ":.5", ":^300", ":{port}", ":>999999999", "!"]),
)
templates = st.one_of(
    st.none(),
    st.sampled_from(list(DEFAULT_TEMPLATES.values())),
    anything,
    st.lists(st.one_of(_placeholder, st.text(max_size=12)), min_size=1, max_size=6).map("".join),
)


@st.composite
def findings(draw: st.DrawFn) -> Finding:
    """A finding as a discoverer would report it, with hostile labels, templates and names."""
    source = draw(st.sampled_from(["fleet", "aws", "declared"]))
    extra = draw(label_maps)
    if draw(st.booleans()):
        host, port = draw(hosts), draw(ports)
        uri = draw(st.one_of(st.just(f"http://{host}:{port}"), anything))
        return Finding(
            kind=ServiceType.MLFLOW,
            source=source,
            scope=("mlflow", source, uri),
            key=uri,
            attributes={"tracking_uri": uri, "registry_uri": uri},
            labels={"host": host, "port": port, "scheme": "http", "path": "", "discoverer": source, **extra},
            name=draw(st.one_of(st.none(), st.none(), anything)),
            name_template=draw(templates),
        )
    account, region = draw(accounts), draw(regions)
    return Finding(
        kind=ServiceType.SAGEMAKER,
        source=source,
        scope=("sagemaker", source, account, region),
        key=f"{account}/{region}",
        attributes={"account_id": account, "region": region},
        labels={"account": account, "region": region, "discoverer": source, **extra},
        name=draw(st.one_of(st.none(), st.none(), anything)),
        name_template=draw(templates),
    )


# --- names ---------------------------------------------------------------------------------------------


@PROPS
@given(findings())
def test_any_finding_maps_to_a_valid_name_or_a_clear_mapping_error(finding: Finding) -> None:
    try:
        desired = map_finding(finding, owner_tag=OWNER)
    except MappingError as exc:
        message = str(exc)
        assert message
        assert "\n" not in message or "name template" in message
        return
    assert_valid_name(desired.name)
    assert desired.body()["name"] == desired.name
    # Deterministic: the same finding always gets the same name.
    assert map_finding(finding, owner_tag=OWNER).name == desired.name


def _identity(f: Finding) -> tuple[str, str, str]:
    return (f.kind.value, f.key, f.source)


# Small alphabets, so that distinct findings often squeeze into the same name.
_tiny = st.sampled_from(["a", "b", "a b", "a-b", "a/b", "A", "a.b", "x" * 250, "x" * 251])


@st.composite
def crowded_findings(draw: st.DrawFn) -> Finding:
    host, port = draw(_tiny), draw(st.sampled_from(["1", "2"]))
    uri = f"http://{host}:{port}"
    return Finding(
        kind=draw(st.sampled_from([ServiceType.MLFLOW, ServiceType.CUSTOM])),
        source=draw(st.sampled_from(["s1", "s2"])),
        scope=("x",),
        key=draw(st.sampled_from([uri, host])),
        attributes={"tracking_uri": uri, "registry_uri": uri} if draw(st.booleans()) else {"connection": {}},
        labels={"host": host, "port": port},
        name=draw(st.one_of(st.none(), st.none(), st.sampled_from(["svc", "svc-2"]))),
        name_template=draw(st.sampled_from([None, "m-{host}", "m-{host}-{port}", "fixed"])),
    )


@PROPS
@given(st.lists(crowded_findings(), max_size=12))
def test_distinct_findings_never_silently_share_a_name(items: list[Finding]) -> None:
    result = map_findings(items, owner_tag=OWNER)
    collided = {(f.source, f.item) for f in result.failures if f.kind == "name_collision"}
    names: list[str | None] = []
    for f in items:
        try:
            names.append(map_finding(f, owner_tag=OWNER).name)
        except MappingError:
            names.append(None)
    for i, a in enumerate(items):
        for j in range(i + 1, len(items)):
            b = items[j]
            if names[i] is None or names[i] != names[j] or _identity(a) == _identity(b):
                continue
            # Both reported, neither registered: never one server under the other's name.
            assert (a.source, a.key) in collided
            assert (b.source, b.key) in collided
            assert names[i] not in result.desired
            assert names[i] in result.protected
    for name, desired in result.desired.items():
        claimants = {_identity(f) for f, n in zip(items, names, strict=True) if n == name}
        assert claimants == {(desired.request.serviceType, desired.key, desired.source)}
    # Nothing is dropped without a word: each finding is desired, or failed with a reason.
    reported = {(f.source, f.item) for f in result.failures}
    for f, named in zip(items, names, strict=True):
        assert (named is not None and named in result.desired) or (f.source, f.key) in reported


# --- tracking URIs and their credentials -------------------------------------------------------------

MARK = "S3cr3tPW"  # every generated password contains it; nothing else can (see the alphabets)
_user = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
_password = st.builds(
    lambda a, b: a + MARK + b,
    st.text(alphabet="abc:/@#?%!$&'()*+,;=~ ", max_size=6),
    st.text(alphabet="abc:/@#?%!$&'()*+,;=~ ", max_size=6),
)
_host = st.one_of(
    st.from_regex(r"\A[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){0,2}\Z"), st.sampled_from(["[::1]", "127.0.0.1"])
)
_path = st.text(alphabet="abcdefghijklmnopqrstuvwxyz/-_.", max_size=12)


@st.composite
def uris_with_credentials(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "ftp", ""]))
    port = draw(st.sampled_from(["", ":5000", ":0", ":99999", ":x"]))
    path = draw(_path)
    return f"{scheme}://{draw(_user)}:{draw(_password)}@{draw(_host)}{port}{'/' + path if path else ''}"


@PROPS
@given(uris_with_credentials())
def test_a_tracking_uri_password_never_survives_into_a_key_a_name_or_an_error(uri: str) -> None:
    assert MARK not in redact_uri(uri)
    try:
        clean, _, _ = normalise_tracking_uri(uri)
    except ValueError as exc:
        shown = str(exc)  # a config error: exit 2, and the message is printed
    else:
        # What the agent publishes and names the service after is that clean URI.
        assert "@" not in clean.split("://", 1)[1].split("/", 1)[0]
        shown = clean
    assert MARK not in shown


@PROPS
@given(uris_with_credentials(), st.booleans())
def test_a_config_error_about_a_tracking_uri_never_echoes_its_password(uri: str, as_mapping: bool) -> None:
    # The mapping form also sets `auth`, so a URI that is fine still fails (credentials twice).
    item: Any = {"uri": uri, "auth": {"token": "t0ken"}} if as_mapping else uri
    raw = {"discoverers": [{"type": "mlflow", "name": "m", "tracking_uris": [item]}]}
    try:
        config = parse_config(raw, env={})
    except ConfigError as exc:
        shown = str(exc)
    else:
        assert not as_mapping
        shown = describe_redacted(config)
    assert MARK not in shown


def describe_redacted(config: Any) -> str:
    """What ``validate-config`` prints for ``config``."""
    return json.dumps(describe(config))


# --- plans -------------------------------------------------------------------------------------------

NAMES = ["s0", "s1", "s2", "s3", "s4", "s5"]
SCOPES: list[tuple[str, ...]] = [("mlflow", "m"), ("mlflow", "m", "u1"), ("mlflow", "m", "u2"), ("aws", "a", "1")]


def _desired(name: str, scope: tuple[str, ...]) -> DesiredService:
    finding = Finding(
        kind=ServiceType.CUSTOM,
        source=scope[1],
        scope=scope,
        key=name,
        attributes={"connection": {"sourcePythonClass": f"pkg.{name}"}},
        name=name,
    )
    return map_finding(finding, owner_tag=OWNER)


def _held(name: str, tags: list[str], deleted: bool, same: bool) -> CurrentService:
    config: dict[str, Any] = {"type": "CustomMlModel", "sourcePythonClass": f"pkg.{name}" if same else "old.Class"}
    return CurrentService.from_entity(
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            "name": name,
            "serviceType": "CustomMlModel",
            "deleted": deleted,
            "connection": {"config": config},
            "tags": [
                {"tagFQN": t, "source": "Classification", "labelType": "Automated", "state": "Confirmed"} for t in tags
            ],
        }
    )


@st.composite
def plan_inputs(draw: st.DrawFn) -> dict[str, Any]:
    wanted = draw(st.lists(st.sampled_from(NAMES), unique=True))
    held_names = draw(st.lists(st.sampled_from(NAMES), unique=True))
    tag_sets = st.sampled_from([[OWNER], [FOREIGN], [], [OWNER, FOREIGN], ["PII.Sensitive"]])
    return {
        "desired": {n: _desired(n, draw(st.sampled_from(SCOPES))) for n in wanted},
        "current": {n: _held(n, draw(tag_sets), draw(st.booleans()), draw(st.booleans())) for n in held_names},
        "policy": draw(st.sampled_from(["upsert-only", "create-only", "sync"])),
        "stale_after": draw(st.integers(1, 4)),
        "max_delete_fraction": draw(st.floats(0, 1)),
        "outcomes": draw(st.dictionaries(st.sampled_from(SCOPES), st.booleans(), max_size=4)),
        "all_scopes_ok": draw(st.booleans()),
        "misses": draw(st.dictionaries(st.sampled_from(NAMES), st.integers(0, 6))),
        "known_scopes": draw(st.dictionaries(st.sampled_from(NAMES), st.sampled_from(SCOPES))),
        "protected": frozenset(draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=2))),
    }


@PROPS
@given(plan_inputs())
def test_a_plan_never_deletes_or_writes_what_it_does_not_own_and_deletes_only_under_sync(args: dict[str, Any]) -> None:
    plan = compute_plan(owner_tag=OWNER, **args)
    current: dict[str, CurrentService] = args["current"]
    owned = [c for c in current.values() if OWNER in c.tag_fqns and not c.deleted]

    for change in plan.delete:
        held = current[change.name]
        assert OWNER in held.tag_fqns, "deleted a service without the owner tag"
        assert not held.deleted
        assert change.name not in args["desired"]
        assert change.name not in args["protected"]
        assert change.service_id == held.id
        scope = args["known_scopes"].get(change.name)
        assert scope_succeeded(scope, args["outcomes"], all_ok=args["all_scopes_ok"])
        assert args["misses"].get(change.name, 0) + 1 >= args["stale_after"]
    if args["policy"] != "sync":
        assert plan.delete == ()
    assert len(plan.delete) <= math.floor(args["max_delete_fraction"] * len(owned) + 1e-9)

    for change in plan.writes:
        written = current.get(change.name)
        assert change.name in args["desired"]
        if written is not None:
            assert OWNER in written.tag_fqns, "wrote over a service it does not own"
        assert change.body is not None
        assert OWNER in {t["tagFQN"] for t in change.body["tags"]}
    for change in plan.create:
        assert change.name not in current
    if args["policy"] == "create-only":
        assert plan.update == ()
    for name in args["desired"]:
        present = current.get(name)
        if present is not None and OWNER not in present.tag_fqns:
            assert name in {c.name for c in plan.conflicts}
