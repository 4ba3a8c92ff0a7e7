"""SQL on the jobs and attempts tables lives in delivery_daemon/storage/ alone (issue #21).

Other layers call storage's functions and methods; they may import the ``Job``/``Attempt`` models and ``JobState``
as types, but never build a statement on the tables, reach for the table objects, or send SQL text naming them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import delivery_daemon_plugins

import delivery_daemon

PACKAGE = Path(delivery_daemon.__file__).parent
STORAGE = PACKAGE / "storage"
PLUGINS = Path(delivery_daemon_plugins.__file__).parent

TABLE_NAMES = {"JOBS", "ATTEMPTS"}
"""The table objects (``storage.jobs``)."""
MODELS = {"Job", "Attempt"}
"""Their row classes: a statement naming one (``select(Job)``), ``table_of(Job)`` or ``Job.__table__`` is one too."""
STATEMENTS = {"select", "update", "insert", "delete", "select_from", "table_of"}
"""Calls on a table or model: statements, and ``table_of`` (storage.models), which hands out the table."""
RAW_SQL = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE)\s+(?:jobs|attempts)\b")
"""SQL text naming the tables (keywords in capitals, as the code writes them; prose says "from jobs" in lower case)."""


def _names(node: ast.AST) -> set[str]:
    return {inner.id for inner in ast.walk(node) if isinstance(inner, ast.Name)}


def violations(source: str, where: str = "<source>") -> list[str]:
    """Each place in ``source`` that works on the jobs or attempts table: ``where:line what``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        what = None
        if isinstance(node, ast.Call):
            name = (
                node.func.id
                if isinstance(node.func, ast.Name)
                else (node.func.attr if isinstance(node.func, ast.Attribute) else "")
            )
            touched = set().union(*(_names(arg) for arg in node.args)) if node.args else set()
            if name in STATEMENTS and touched & (TABLE_NAMES | MODELS):
                what = f"{name}() on {', '.join(sorted(touched & (TABLE_NAMES | MODELS)))}"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in TABLE_NAMES and node.attr in ("c", "columns"):
                what = f"{node.value.id}.{node.attr}"
            elif node.value.id in MODELS and node.attr == "__table__":
                what = f"{node.value.id}.__table__"
        elif isinstance(node, ast.ImportFrom) and {alias.name for alias in node.names} & TABLE_NAMES:
            what = f"imports {', '.join(sorted({alias.name for alias in node.names} & TABLE_NAMES))}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (sql := RAW_SQL.search(node.value)):
            what = f"SQL text {sql.group(0)!r}"
        if what is not None:
            found.append(f"{where}:{getattr(node, 'lineno', '?')} {what}")
    return found


def _outside_storage() -> list[Path]:
    files = [path for path in sorted(PACKAGE.rglob("*.py")) if not path.is_relative_to(STORAGE)]
    return files + sorted(PLUGINS.rglob("*.py"))


def test_no_sql_on_jobs_or_attempts_outside_storage() -> None:
    """No module outside storage/ builds a statement on jobs/attempts, takes their tables or sends SQL naming them."""
    found = [
        hit
        for path in _outside_storage()
        for hit in violations(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    ]
    assert found == []


def test_the_scan_sees_every_form_of_sql_on_the_tables() -> None:
    """The scan flags each way the tree once queried the tables outside storage/, so the check above can fail."""
    samples = {
        "select(func.min(JOBS.c.created_at)).where(JOBS.c.state.not_in(FINAL))": "select() on JOBS",
        "update(JOBS).values(state='queued')": "update() on JOBS",
        "insert(ATTEMPTS)": "insert() on ATTEMPTS",
        "sa.delete(ATTEMPTS)": "delete() on ATTEMPTS",
        "select(func.count()).select_from(JOBS)": "select_from() on JOBS",
        "select(Job).where(Job.id == 1)": "select() on Job",
        "jobs = Job.__table__": "Job.__table__",
        "jobs = table_of(Job)": "table_of() on Job",
        "jobs.c.state": None,  # a local name the scan cannot know: caught where it was taken (Job.__table__)
        "from delivery_daemon.storage.jobs import JOBS, QueueError": "imports JOBS",
        "conn.execute(text('SELECT state, count(*) FROM jobs GROUP BY state'))": "SQL text 'FROM jobs'",
        "q = 'SELECT count(*) FROM attempts WHERE job_id NOT IN (SELECT id FROM jobs)'": "SQL text 'FROM attempts'",
    }
    for source, expected in samples.items():
        found = violations(source)
        if expected is None:
            assert found == [], source
        else:
            assert any(hit.endswith(expected) for hit in found), (source, found)
    assert violations('"""Jobs come from jobs the receiver stored; select(a job) by id."""\nfrom x import Job') == []


def test_the_scan_finds_the_sql_that_storage_holds() -> None:
    """Run on storage/ itself the scan finds the queue's statements: it reads the real tree, not an empty one."""
    found = [
        hit for path in sorted(STORAGE.rglob("*.py")) for hit in violations(path.read_text(encoding="utf-8"), path.name)
    ]
    assert any(hit.startswith("leases.py:") and "update() on JOBS" in hit for hit in found)
    assert any(hit.startswith("integrity.py:") and "SQL text" in hit for hit in found)
