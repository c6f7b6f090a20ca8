# Flowplane: one process serving the REST API (8080) and xDS over gRPC (18000).
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 flowplane
WORKDIR /app
COPY pyproject.toml README.md ./
COPY flowplane ./flowplane
# (the second install puts back the OpenTelemetry protocol files xds-protos overwrites: README)
RUN pip install --no-cache-dir . \
    && pip install --no-cache-dir --no-deps --force-reinstall opentelemetry-proto==1.45.2 \
    && mkdir -p /data && chown flowplane /data

# Runs as uid 10001. A named volume on /data is writable by it; a host directory mounted there
# must be too (`chown 10001 <dir>`, or `docker run --user "$(id -u):$(id -g)"`): otherwise the
# server stops at start with a message naming the directory, its owner and this uid.
USER flowplane
# FLOWPLANE_XDS_ADVERTISE_ADDRESS is what bootstraps tell Envoy to connect to; unset, that is
# 127.0.0.1:18000, which only works for Envoys on this container's host with the port published.
# Envoys on other hosts: `-e FLOWPLANE_XDS_ADVERTISE_ADDRESS=<host name or IP they reach>:18000`.
ENV FLOWPLANE_DATABASE_URL=sqlite:////data/flowplane.db \
    FLOWPLANE_API_ADDRESS=0.0.0.0:8080 \
    FLOWPLANE_XDS_ADDRESS=0.0.0.0:18000
VOLUME ["/data"]
# 8080: REST API (/api/v1, /openapi.json, /swagger-ui, /healthz, /readyz, /metrics)
# 18000: xDS (ADS, state-of-the-world and delta) for Envoy
EXPOSE 8080 18000
# Healthy = /readyz answers 200 (storage reachable, first snapshot built); no curl in the image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "flowplane.cli.healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["flowplane"]
CMD ["serve"]
