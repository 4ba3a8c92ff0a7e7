"""The deployment files: the systemd unit passes ``systemd-analyze verify``; the Dockerfile parses (BuildKit's own
parser) and keeps its promises; the image's entry command runs from a fresh ``pip install .`` in a clean venv.

No Docker engine runs here, so the image itself is not built: the clean-venv test does what the build stage does
(install the files the Dockerfile copies) and then runs the ENTRYPOINT + CMD the final stage would run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
import venv
from pathlib import Path

import dockerfile
import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "delivery-daemon.service"
DOCKERFILE = ROOT / "Dockerfile"


def _analyzable_unit(tmp_path: Path) -> tuple[str, Path]:
    """systemd-analyze and a copy of the unit with ExecStart pointed at this checkout's script and the commented
    ``LoadCredential=`` example switched on (so both forms are checked)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install -y systemd)")
    script = Path(sys.executable).with_name("delivery-daemon")
    assert script.exists(), "install the package first (pip install -e .)"
    text = UNIT.read_text()
    assert "ExecStart=/opt/delivery-daemon/bin/delivery-daemon serve" in text
    assert "\n#LoadCredential=softstore-api-key:/etc/delivery-daemon/credentials/softstore-api-key\n" in text
    unit = tmp_path / "delivery-daemon.service"
    unit.write_text(
        text.replace("/opt/delivery-daemon/bin/delivery-daemon", str(script)).replace(
            "\n#LoadCredential=", "\nLoadCredential="
        )
    )
    return analyze, unit


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit with no warning (ExecStart pointed at this checkout's script)."""
    analyze, unit = _analyzable_unit(tmp_path)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120, check=False)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "delivery-daemon.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_systemd_unit_security_exposure(tmp_path: Path) -> None:
    """`systemd-analyze security` rates the unit 1.2 ("OK") or better, credentials included."""
    analyze, unit = _analyzable_unit(tmp_path)
    result = subprocess.run(
        [analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True, timeout=120, check=False
    )
    if "--offline" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    found = re.search(r"Overall exposure level for delivery-daemon\.service: (\d+\.\d+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) <= 1.2, result.stdout


def test_systemd_unit_leaves_a_config_error_stopped() -> None:
    """Exit 2 (a configuration error, one line in the journal) is not restarted: restarting cannot fix it."""
    lines = UNIT.read_text().splitlines()
    assert "RestartPreventExitStatus=2" in lines and "Restart=on-failure" in lines


def test_systemd_unit_hardening() -> None:
    """The unit has the isolation the issue asks for: own user, state dir, read-only system, restart on failure."""
    settings = [line.split("=", 1)[0] for line in UNIT.read_text().splitlines() if "=" in line and line[0] != "#"]
    for key in (
        "DynamicUser",
        "StateDirectory",
        "ProtectSystem",
        "NoNewPrivileges",
        "PrivateTmp",
        "RestrictAddressFamilies",
        "Restart",
        "EnvironmentFile",
        "ExecReload",
        "TimeoutStopSec",
    ):
        assert key in settings, key


def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def test_dockerfile_parses_and_is_non_root_with_volume_and_healthcheck() -> None:
    """The Dockerfile parses; final stage is slim, runs as a non-root user, with a volume and a /healthz check."""
    commands = instructions()
    final = commands[max(i for i, c in enumerate(commands) if c.cmd == "FROM") :]
    by_cmd = {c.cmd: c for c in final}
    assert by_cmd["FROM"].value[0].endswith("-slim")
    assert by_cmd["USER"].value[0] not in ("root", "0")
    assert by_cmd["VOLUME"].value == ("/var/lib/delivery-daemon",)
    assert "/healthz" in " ".join(by_cmd["HEALTHCHECK"].value)
    assert by_cmd["ENTRYPOINT"].value == ("delivery-daemon",)  # the console script, as pip installs it
    assert by_cmd["CMD"].value[0] == "serve"


@pytest.mark.skipif(
    not (os.environ.get("CI") or os.environ.get("DD_DEPLOY_TESTS")),
    reason="installs the package into a fresh venv (~15 s); runs in CI or with DD_DEPLOY_TESTS=1",
)
def test_image_entry_command_runs_from_clean_install(tmp_path: Path) -> None:
    """`pip install .` of exactly what the Dockerfile copies, in a clean venv, gives a daemon that serves /healthz
    and stops with exit 0 on SIGTERM (the image's ENTRYPOINT + CMD)."""
    context = tmp_path / "src"
    context.mkdir()
    commands = instructions()
    for copy in (c for c in commands if c.cmd == "COPY" and not c.flags):
        *sources, _dest = copy.value
        for source in sources:
            if not (ROOT / source).exists():
                pytest.skip(f"{source} (copied by the Dockerfile) is not in this checkout yet")
            target = context / source
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / source, target)
    # As the build stage's RUN does: the default EXTRAS, every package at the release constraints.txt pins.
    [install] = [c.value[0] for c in commands if c.cmd == "RUN" and "pip install" in c.value[0]]
    assert '-c constraints.txt ".${EXTRAS:+[$EXTRAS]}"' in install
    [extras] = [c.value[0].split("=", 1)[1] for c in commands if c.cmd == "ARG" and c.value[0].startswith("EXTRAS=")]
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    subprocess.run(
        [
            env_dir / "bin" / "pip",
            "install",
            "-q",
            "-c",
            str(context / "constraints.txt"),
            f"{context}[{extras}]" if extras else str(context),
        ],
        check=True,
        timeout=600,
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        f"database: {{url: 'sqlite:///{tmp_path / 'data' / 'd.db'}'}}\nserver: {{host: 127.0.0.1, port: 0}}\n"
    )
    cmd = [c for c in commands if c.cmd == "CMD"][-1].value
    args = [a.replace("/etc/delivery-daemon/config.yaml", str(config)) for a in cmd]
    proc = subprocess.Popen(
        [env_dir / "bin" / "delivery-daemon", *args], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "daemon.started":
                break
        url = event["webhooks"].removesuffix("/webhooks/<store>")
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
