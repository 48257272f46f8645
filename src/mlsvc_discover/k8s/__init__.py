"""Kubernetes parts for discoverers: label selectors, endpoint choice, and the API client.

- :mod:`mlsvc_discover.k8s.selectors`: :func:`parse_selector` -> :class:`LabelSelector`
  (kubectl syntax; ``matches(labels)``). Pure.
- :mod:`mlsvc_discover.k8s.endpoints`: :func:`choose_endpoint` (published URI and where to
  probe it), :func:`ingress_routes`, :func:`pick_port`, the ``mlsvc-discover.io/*`` annotation
  names. Pure.
- :mod:`mlsvc_discover.k8s.api`: :class:`KubeApi` (lists and Secrets with a total deadline per
  call) and :class:`KubernetesApiError`. It imports lightkube, so this package does not import it:
  import it where it is used, when it is used.
"""

from __future__ import annotations
