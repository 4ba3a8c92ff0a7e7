"""``python -m bench.memory [--venv DIR] [--python PY] [--settle S] [--out FILE]``: the daemon's idle memory as a
seller's install has it (issue #26, item 5: idle RSS ≤ 75 MB).

The test venv holds more than a seller's: the test extras (``rich``, ``pygments``, …) are imported by ``httpx``
for its CLI when installed, and they alone add ~3.5 MB. So this builds a lean venv, production dependencies
only (``pip install -c constraints.txt .``), in ``--venv`` (reused when it exists; default: a new temporary one),
and starts ``python -m bench.serve daemon`` with that interpreter and this checkout's code first on the path (an
installed copy, stale or not, is shadowed), on the configuration the other scenarios measure
(:func:`bench.scenarios.daemon_spec`), on loopback. ``--python`` measures another interpreter instead (the test
venv's, to compare). After ``--settle`` seconds it reports, as JSON: VmRSS and VmHWM, RssAnon and RssFile
(``/proc/<pid>/status``), Pss_Anon and Pss_File (``/proc/<pid>/smaps_rollup``), all in KiB, and the census: how
many modules of each top-level package the daemon had imported when it stopped, just after. It installs packages:
CI's smoke never runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .processes import ROOT, start_process
from .scenarios import daemon_spec

STATUS_KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
ROLLUP_KEYS = ("Rss", "Pss_Anon", "Pss_File")


def lean_python(venv: Path) -> Path:
    """The interpreter of a venv holding this checkout's production dependencies; created on first use."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        install = [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), str(ROOT)]
        subprocess.run(install, check=True)
    return python


def kib_fields(text: str, keys: tuple[str, ...]) -> dict[str, int]:
    """``key: <n> kB`` lines of a ``/proc`` file (``status``, ``smaps_rollup``) → ``{key: n}`` for ``keys``."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            found[key] = int(value.split()[0])
    return found


def measure(python: Path, workdir: Path, settle: float) -> dict[str, Any]:
    """Start the daemon with ``python`` in ``workdir``; its memory ``settle`` seconds after it is ready."""
    spec = daemon_spec(workdir, "memory", "http://127.0.0.1:9/api/v1", "k" * 40)  # nothing listens: it idles
    spec["census_file"] = str(workdir / "census.json")
    path = workdir / "memory.json"
    path.write_text(json.dumps(spec))
    command = [str(python), "-m", "bench.serve", "daemon", str(path)]
    with start_process("daemon", command, {**os.environ, "PYTHONPATH": str(ROOT)}, ROOT) as daemon:
        time.sleep(settle)
        with open(f"/proc/{daemon.pid}/status") as handle:
            figures = kib_fields(handle.read(), STATUS_KEYS)
        with open(f"/proc/{daemon.pid}/smaps_rollup") as handle:
            figures |= kib_fields(handle.read(), ROLLUP_KEYS)
    census: dict[str, int] = json.loads((workdir / "census.json").read_text())  # written as it stopped
    return {
        "python": str(python),
        "settle_s": settle,
        "kib": figures,
        "modules": sum(census.values()),
        "census": census,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--venv", type=Path, help="lean venv to build or reuse (default: a temporary one)")
    parser.add_argument("--python", type=Path, help="measure this interpreter instead of a lean venv's")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after start (default 1, as versus)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        python = args.python or lean_python(args.venv or Path(tmp) / "venv")
        workdir = Path(tmp) / "run"
        workdir.mkdir()
        result = measure(python, workdir, args.settle)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
