"""A throw-away PostgreSQL server for tests: ``initdb`` in a temporary directory, listening on a free loopback port.

The binaries come from Debian's ``postgresql`` package (``/usr/lib/postgresql/<version>/bin``); ``.ci/run`` installs
it. initdb refuses to run as root, so when the tests run as root the server runs as the ``postgres`` user the
package creates (through ``runuser``). Authentication is ``trust`` on loopback only: the server lives for one test
session, in a directory nobody else uses.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from delivery_daemon.reference.chaos.harness import restart_port


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL ``bin`` directory that has initdb and pg_ctl, or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0))
    for bindir in reversed(candidates):
        if (Path(bindir) / "initdb").exists() and (Path(bindir) / "pg_ctl").exists():
            return Path(bindir)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable_reason() -> str | None:
    """Why a server cannot be started here, or None when it can."""
    if find_bindir() is None:
        return "PostgreSQL binaries (initdb, pg_ctl) not found; install Debian's postgresql package (.ci/run does)"
    if os.geteuid() == 0 and (shutil.which("runuser") is None or _uid("postgres") is None):
        return "running as root without a 'postgres' user for initdb"
    return None


def _uid(name: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


@dataclass
class PgServer:
    """A running server; :meth:`create_database` hands each test its own database."""

    host: str
    port: int
    user: str
    control: Callable[[str], None] | None = field(default=None, repr=False)
    """``pg_ctl start`` / ``stop`` of this server (set by :func:`running_server`)."""

    def stop(self) -> None:
        """Stop the server now (fast shutdown: open connections are cut), keeping its data for :meth:`start`."""
        assert self.control is not None, "not started by running_server()"
        self.control("stop")

    def start(self) -> None:
        """Start a stopped server again on the same port; returns once it accepts connections."""
        assert self.control is not None, "not started by running_server()"
        self.control("start")
        _wait_ready(self)

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def running_server(*, durable: bool = False) -> Iterator[PgServer]:
    """Start a server, yield it, stop it (fast shutdown) and remove its files.

    ``durable=False`` (tests) turns fsync off; ``durable=True`` keeps PostgreSQL's durable defaults (fsync,
    synchronous commit, full-page writes): what the benchmark measures, as a seller's server would run.
    """
    bindir = find_bindir()
    assert bindir is not None, unavailable_reason()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    user = "postgres" if as_root else "tester"
    base = Path(tempfile.mkdtemp(prefix="dd-pg-"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    if as_root:
        uid = _uid("postgres")
        assert uid is not None
        for path in (base, sockets):
            os.chown(path, uid, -1)
    port = restart_port()
    log = base / "server.log"
    try:
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
        )
        # fsync off: a test server's data is disposable, and the suite runs on a busy 2-core machine.
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sockets} -c max_connections=200"
        )
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        pg_ctl = str(bindir / "pg_ctl")

        def control(action: str) -> None:
            mode = ["-o", options, "-t", "60"] if action == "start" else ["-m", "fast"]
            subprocess.run(
                [*prefix, pg_ctl, "-D", str(data), "-l", str(log), *mode, "-w", action], check=True, capture_output=True
            )

        control("start")
        server = PgServer(host="127.0.0.1", port=port, user=user, control=control)
        _wait_ready(server)
        yield server
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace")
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"could not start PostgreSQL: {detail}\n{tail}") from exc
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                check=False,
            )
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(server: PgServer, limit: float = 60.0) -> None:
    import psycopg

    deadline = time.monotonic() + limit
    while True:
        try:
            with psycopg.connect(
                host=server.host, port=server.port, user=server.user, dbname="postgres", connect_timeout=5
            ):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def postgres_server() -> contextlib.AbstractContextManager[PgServer]:
    """A new PostgreSQL server on a free loopback port (:func:`running_server`); skips the test when the
    binaries are absent."""
    import pytest  # here, not at the top: bench/pg.py imports this module without pytest's fixtures

    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("DELIVERY_DAEMON_REQUIRE_POSTGRES"):  # set by .ci/run: CI must not skip these silently
            pytest.fail(reason)
        pytest.skip(reason)
    return running_server()
