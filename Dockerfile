# syntax=docker/dockerfile:1
# delivery-daemon in a container: slim, non-root, the database on a volume, health-checked on /healthz.
#   docker build -t delivery-daemon .
#   docker run -d --name delivery-daemon -p 8080:8080 \
#     -v delivery-daemon-data:/var/lib/delivery-daemon \
#     -v "$PWD/config.yaml:/etc/delivery-daemon/config.yaml:ro" --env-file secrets.env delivery-daemon
# The config must listen on 0.0.0.0:8080 (server.host/server.port) and keep the database under
# /var/lib/delivery-daemon, e.g. database.url: sqlite:////var/lib/delivery-daemon/delivery-daemon.db
# `docker stop` sends SIGTERM: deliveries in flight finish within worker.shutdown_grace (keep it below the stop
# timeout, 10 s by default: use `docker stop -t 30` or `stop_grace_period` in compose for a longer grace).

FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# EXTRAS: the optional dependencies to install; "postgres" (psycopg) lets the image use a postgresql:// database.
# `--build-arg EXTRAS=` builds without it (SQLite only). constraints.txt pins every package to the tested release.
ARG EXTRAS=postgres
COPY pyproject.toml README.md constraints.txt ./
COPY delivery_daemon ./delivery_daemon
COPY plugins ./plugins
RUN python -m venv /opt/delivery-daemon && /opt/delivery-daemon/bin/pip install -c constraints.txt ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.12-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/delivery-daemon --shell /usr/sbin/nologin \
        delivery-daemon \
    && install -d -o delivery-daemon -g delivery-daemon -m 0700 /var/lib/delivery-daemon \
    && install -d -m 0755 /etc/delivery-daemon
COPY --from=build /opt/delivery-daemon /opt/delivery-daemon
ENV PATH=/opt/delivery-daemon/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER delivery-daemon
WORKDIR /var/lib/delivery-daemon
VOLUME ["/var/lib/delivery-daemon"]
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["delivery-daemon"]
CMD ["serve", "--config", "/etc/delivery-daemon/config.yaml", "--log-format", "json"]
