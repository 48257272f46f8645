# mlsvc-discover: the long-running agent (default) or one cycle (`discover --once`, for CronJobs).
#
#   docker build -t mlsvc-discover .
#   docker run --rm -v "$PWD/config.yaml:/etc/mlsvc-discover/config.yaml:ro" \
#       -e OPENMETADATA_JWT_TOKEN -p 8080:8080 mlsvc-discover
#
# Runtime dependencies only (no mlflow, no boto3: see pyproject.toml), at the exact versions of
# constraints.txt, so the image runs what the tests ran.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLSVC_DISCOVER_CONFIG=/etc/mlsvc-discover/config.yaml

WORKDIR /opt/mlsvc-discover
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src

# The source tree is only needed to build the wheel; the installed package is in site-packages.
# A numeric UID lets Kubernetes verify runAsNonRoot without a passwd lookup.
RUN pip install --no-cache-dir -c constraints.txt . \
    && rm -rf /opt/mlsvc-discover/src \
    && groupadd --system --gid 10001 mlsvc \
    && useradd --system --uid 10001 --gid mlsvc --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin mlsvc \
    && mkdir -p /etc/mlsvc-discover /var/lib/mlsvc-discover \
    && chown 10001:10001 /var/lib/mlsvc-discover

# state.path for `sync` deletes lives here; mount a volume to keep it across restarts.
VOLUME ["/var/lib/mlsvc-discover"]

USER 10001:10001

# /healthz, /readyz and /metrics (server.address in the config).
EXPOSE 8080

# No curl in the slim image; Python is there anyway. Only meaningful for the long-running mode.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["mlsvc-discover"]
CMD ["discover"]
