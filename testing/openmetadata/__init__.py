"""A faithful fake of the OpenMetadata 2.0.7 ML model service API, served over real HTTP on loopback.

No OpenMetadata server can run on these machines, so the client is tested against this stand-in
instead. It follows the API contract read from the upstream server's source (summarised in the
README's "Connecting to OpenMetadata") and validates every request and every response body
against the OpenMetadata 2.0.7 JSON Schemas vendored in ``testing/openmetadata/schemas``, so a client
that passes here sends what the real server accepts and copes with what it answers. What it
cannot know (the *(inferred)* points of the README) is chosen as the README infers.

By default it behaves as a real server does: no bulk route (``PUT /bulk`` answers 500 "An
exception with message [HTTP 405 Method Not Allowed] ..."; ``no_bulk_status`` 405 or 404 as
options, ``bulk_enabled=True`` for the seed's bulk route), tags, domains and owners a request
names must exist (404 "tag instance for X not found"), optional fields listed only when named in
``fields`` (400 on unknown names), a non-empty service's delete refused, and the bot update rules
below. ``server_version`` below 1.8 makes it an old server: ``fields=domains`` and a body with
``domains`` are 400.

Routes (under ``/api``): ``GET /v1/system/version`` (no token needed, as upstream's JwtFilter
excludes it); ``GET|PUT|POST /v1/classifications``, ``GET /v1/classifications/name/{name}``,
``PUT|POST /v1/tags``, ``GET /v1/tags/name/{fqn}``, ``GET /v1/domains/name/{fqn}``,
``GET /v1/users/{id}``, ``GET /v1/teams/{id}``; and under ``/v1/services/mlmodelServices``:
``PUT`` and ``POST`` (create a service), ``PUT /bulk`` (option), ``GET`` (list),
``GET /name/{fqn}``, ``GET /{id}``, ``DELETE /{id}``, ``DELETE /name/{fqn}`` and
``PUT /restore``. Anything else is 404; a known path with a method it lacks is 405.

PUT semantics (create-or-update by name), as upstream's ``EntityRepository`` applies them:

* A field that is absent or ``null`` in the body keeps its stored value, except
  ``ingestionRunner``, which is cleared.
* ``owners`` are replaced by a non-empty sent list; an empty or absent list keeps them.
* ``tags`` are merged: the stored ones stay, the sent ones are added.
* A PUT by a bot principal does not overwrite a non-empty stored ``description``,
  ``displayName``, ``domains`` or ``dataProducts``; a bulk PUT with ``overrideMetadata=true`` does.
* ``connection``, when sent, replaces the stored connection, except that a secret field
  (``awsConfig.awsSecretAccessKey``, Vertex ``privateKey``) sent as the nine-asterisk mask keeps
  the stored secret: that is how the UI round-trips a connection it was shown masked.
* A PUT on a soft-deleted name restores it (``deleted`` false) and counts as a change.
* Any change bumps ``version`` by 0.1 and sets ``updatedAt``/``updatedBy``; a PUT that changes
  nothing keeps both and answers ``X-OpenMetadata-Change: entityNoChange``.
* No ``changeDescription`` is produced: clients must not depend on it, and it would need the
  secret masking rules applied to old and new values as well.

Stored ``domains`` and ``dataProducts`` are entity references (the request carries FQN strings),
with a stable uuid per FQN. Stored owners get a ``name`` (``<type>-<first 8 of id>`` unless one
was sent). Secret fields are shown in plain text to bots and as ``*********`` to other principals.

Tests drive it directly: ``tokens`` maps bearer tokens to :class:`Principal` (revocable at run
time), ``requests`` records every request, :meth:`OpenMetadataStandIn.inject` adds a
:class:`FaultRule` (status, ``Retry-After``, delay, connection reset, a reset half way through a
bulk, per-item bulk failures), ``latency`` slows every answer, and ``put_entity`` / ``edit``
seed and change the store as a person in the UI would. Any exception inside the server,
including a response that fails schema validation, answers 500 and is kept in
``internal_errors`` so the fixture teardown can fail the test.

Its parts, one concern each: ``server.py`` (the :class:`OpenMetadataStandIn` class, lifecycle,
tokens, the request log, routing, one HTTP exchange and the HTTP plumbing), ``services.py`` (the
ML model service store and routes), ``references.py`` (classifications, tags, domains, owners),
``faults.py`` (:class:`FaultRule` and the fault book), ``schemas.py`` (validation against the
vendored schemas in ``schemas/``), ``pipelines.py`` (the ingestion pipeline routes) and
``_common.py`` (paths, value types, the shared state and request helpers).

Run it by hand for demos::

    python -m testing.openmetadata --port 8585 --token TOKEN [--bulk]
"""

from testing.openmetadata._common import (
    API_PREFIX,
    NAME_PATTERN_MESSAGE,
    SECRET_MASK,
    SERVICES_PATH,
    Principal,
    RecordedRequest,
    fqn_of,
)
from testing.openmetadata.faults import FaultRule
from testing.openmetadata.pipelines import PIPELINES_PATH, PipelineRoutes, pipeline_validator
from testing.openmetadata.schemas import SCHEMA_DIR, schema_validator
from testing.openmetadata.server import OpenMetadataStandIn

__all__ = [
    "API_PREFIX",
    "NAME_PATTERN_MESSAGE",
    "PIPELINES_PATH",
    "SCHEMA_DIR",
    "SECRET_MASK",
    "SERVICES_PATH",
    "FaultRule",
    "OpenMetadataStandIn",
    "PipelineRoutes",
    "Principal",
    "RecordedRequest",
    "fqn_of",
    "pipeline_validator",
    "schema_validator",
]
