# Flowplane: one process serving the REST API (8080) and xDS over gRPC (18000).
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 flowplane
WORKDIR /app
COPY pyproject.toml README.md ./
COPY flowplane ./flowplane
RUN pip install --no-cache-dir . && mkdir -p /data && chown flowplane /data

USER flowplane
ENV FLOWPLANE_DATABASE_URL=sqlite:////data/flowplane.db \
    FLOWPLANE_API_ADDRESS=0.0.0.0:8080 \
    FLOWPLANE_XDS_ADDRESS=0.0.0.0:18000
VOLUME ["/data"]
# 8080: REST API (/api/v1, /openapi.json, /swagger-ui, /healthz, /readyz, /metrics)
# 18000: xDS (ADS, state-of-the-world and delta) for Envoy
EXPOSE 8080 18000
STOPSIGNAL SIGTERM
ENTRYPOINT ["flowplane"]
CMD ["serve"]
