"""Where a process's CPU goes, by thread and by owner: a py-spy profile folded for the versus report (issue #26).

``python -m bench --only versus --versus-profile`` runs the daemon's closed loop of the first round once more under
py-spy (``pip install py-spy``; it must be allowed to read the process's memory, as root or with
``CAP_SYS_PTRACE``) and stores :func:`split` of the samples in the result (``profiled``), next to the figures they
explain. A second loop, because py-spy pauses the process for each sample of native stacks: the measured figures
stay unprofiled.

Without ``--idle`` py-spy records a thread only while it runs, so the shares are shares of the process's CPU. Each
sample goes to one owner, found from its innermost frame outwards:

* a native frame of a shared library other than the interpreter and libc (``libsqlite3``, ``libssl``, …) is that
  library: SQLite's commit is SQLite's, not that of the Python line that called it;
* otherwise the innermost Python frame names it: its top-level package or standard-library module (``asyncio``,
  ``sqlalchemy``, ``delivery_daemon``, …); the interpreter's and libc's own frames (the garbage collector, malloc,
  a system call) count for the Python code that caused them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .processes import profile_command

_THREAD = re.compile(r"^thread \((?:0x)?[0-9a-fA-F]+\): (?P<name>.*)$")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<where>[^()]*)\)$")
_PYTHON_FILE = re.compile(r"^(?P<path>.+\.py|<frozen [^>]+>|<string>):\d+$")
_HOST = ("libc.so", "libpython", "ld-linux", "libpthread", "libm.so", "python3")
"""Native code that is the interpreter's or the C library's own: its time counts for the Python code above it."""


def available() -> bool:
    """Whether py-spy is installed next to this interpreter."""
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) is not None


@dataclass
class Spy:
    """A running py-spy (:func:`start`) and the file it writes."""

    process: subprocess.Popen[bytes]
    out: Path
    seconds: float

    def finish(self) -> dict[str, Any]:
        """Wait for py-spy to end: :func:`split` of its samples, or ``{"error": …}`` with the end of what it said."""
        _, errors = self.process.communicate(timeout=self.seconds + 60)
        if self.process.returncode == 0:
            return split(self.out.read_text())
        return {"error": errors.decode(errors="replace")[-400:]}


def start(pid: int, seconds: float, out: Path) -> Spy:
    """py-spy sampling every thread of ``pid`` for ``seconds``, native frames included, into ``out`` (raw stacks)."""
    command = profile_command(pid, seconds, out, native=True)
    return Spy(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out, seconds)


def owner(frames: list[str]) -> str:
    """The owner of one sample, ``frames`` outermost first (see the module's docstring)."""
    for frame in reversed(frames):
        match = _FRAME.match(frame)
        if match is None:
            continue
        where = match["where"]
        python = _PYTHON_FILE.match(where)
        if python is not None:
            path = python["path"]
            if path.startswith("<"):
                return "import" if path.startswith("<frozen") else "generated code"
            return path.split("/", 1)[0].removesuffix(".py")
        if "/" in where or ":" in where:
            continue  # a C header or source line of the interpreter (Py_DECREF (object.h:537))
        if not where.startswith(_HOST):
            return where.split(".so", 1)[0]  # libsqlite3.so.0.8.6 -> libsqlite3
    return "unknown"


def split(raw: str, *, top: int = 12) -> dict[str, Any]:
    """Fold py-spy's raw output (``--threads``: each line ``thread (ID): NAME;frame;…;frame COUNT``) into each
    thread's share of the samples and, per thread, the ``top`` owners' shares of that thread's samples (the rest
    summed as ``other``)."""
    threads: Counter[str] = Counter()
    owners: dict[str, Counter[str]] = {}
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        first, *frames = stack.split(";")
        thread = _THREAD.match(first)
        name = thread["name"] if thread is not None else "unknown"
        threads[name] += int(count)
        owners.setdefault(name, Counter())[owner(frames if thread is not None else [first, *frames])] += int(count)
    total = sum(threads.values())
    result: dict[str, Any] = {"samples": total, "threads": {}}
    for name, samples in threads.most_common():
        named = owners[name].most_common(top)
        shares = {who: n / samples for who, n in named}
        rest = samples - sum(n for _, n in named)
        if rest:
            shares["other"] = rest / samples
        result["threads"][name] = {"share": samples / total, "samples": samples, "owners": shares}
    return result
