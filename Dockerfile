# delivery-daemon: the same `delivery-daemon serve` as the console script, as a non-root user,
# with the database on the /data volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY delivery_daemon ./delivery_daemon
COPY plugins ./plugins
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /data delivery && mkdir -p /data /etc/delivery-daemon \
    && chown delivery /data
USER delivery
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"

ENTRYPOINT ["delivery-daemon"]
CMD ["serve", "--config", "/etc/delivery-daemon/config.yaml"]
