"""Everything that speaks OpenMetadata, in one place.

- :mod:`.models`: the wire models of ``CreateMlModelServiceRequest`` (what the agent sends).
- :mod:`.entities`: reading a listed ``MlModelService`` (:class:`.entities.CurrentService`) and
  masking secrets in what the agent shows.
- :mod:`.client`: the HTTP client (listing, bulk probe and per-item writes, the ownership tag,
  retries, deadlines and bounded answers).
- :mod:`.pipelines`: the ingestion-pipeline routes (list, create or update, deploy, trigger,
  delete) over the same client.

The plan (:mod:`mlsvc_discover.plan`) only compares; it imports the entity type from here.
"""
