"""Real components on loopback that the tests, ``bench/`` and ``demo/`` share (not shipped in the wheel).

``testing.openmetadata``: the OpenMetadata stand-in (a package split by concern; its vendored
schemas in ``testing/openmetadata/schemas/``). ``aws_fake``: moto's server app behind a fake of
SageMaker's MLflow calls. ``fake_k8s`` and ``k8s_world``: fake Kubernetes API servers.
``hostile``: servers that trickle or never answer. ``om_fixtures``, ``mlflow_fixtures``,
``moto_fixtures`` and ``browser``: the pytest fixtures ``tests/conftest.py`` loads, with the
process helpers (the ``mlflow server`` command line, moto processes) the benchmark reuses.
"""
