"""Fleet-scale benchmark of mlsvc-discover against a naive sequential approach.

Run ``python -m bench.run`` from the repository root; see ``bench/README.md``.
"""
