"""Row classes: ``from_row`` builds one from a complete row only; each class's fields are its table's columns."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import MISSING, fields
from typing import Any

import pytest

from delivery_daemon.storage.models import Attempt, Job, Revocation, from_row, table_of


def job_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 7,
        "store": "shop",
        "order_id": "o-7",
        "marketplace": "softstore",
        "product_id": "p1",
        "state": "running",
        "payload": '{"token":"t"}',
        "quantity": None,
        "buyer_email": None,
        "content": None,
        "attempts": 2,
        "received": 1,
        "due_at": 10.5,
        "lease_owner": "w1",
        "lease_until": 40.5,
        "last_error": None,
        "created_at": 1.0,
        "updated_at": 2.0,
        "delivered_at": None,
        "flag": None,
        "issue": 0,
    }
    return {**row, **changes}


def test_from_row_holds_the_row_as_given() -> None:
    """Every field is the row's value, unconverted, and the instance equals one built by keyword."""
    row = job_row()
    built = from_row(Job, row)
    assert {f.name: getattr(built, f.name) for f in fields(Job)} == row
    assert built == Job(**row)


def test_from_row_instance_takes_assignments() -> None:
    """Attributes set later (the worker sets content, quantity) read back; unknown ones are refused (slots)."""
    job = from_row(Job, job_row())
    job.content, job.quantity = '{"keys":["K"]}', 3
    assert (job.content, job.quantity) == ('{"keys":["K"]}', 3)
    with pytest.raises(AttributeError):
        job.contents = "typo"  # type: ignore[attr-defined]  # the misspelling is what this test pins


def test_from_row_in_a_fresh_process() -> None:
    """The first instance in a process is assignable too (no set-up on first use is needed)."""
    code = (
        "from delivery_daemon.storage.models import Attempt, from_row\n"
        "a = from_row(Attempt, {'id': 1, 'job_id': 2, 'at': 3.0, 'step': 'deliver', 'outcome': 'delivered',"
        " 'state': 'delivered', 'http_status': 200, 'error': None, 'duration_ms': 1.5})\n"
        "a.error = 'x'\n"
        "print(a.error, a.http_status)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "x 200"), result.stderr


@pytest.mark.parametrize(
    ("row", "named"),
    [
        ({k: v for k, v in job_row().items() if k != "delivered_at"}, "missing ['delivered_at']"),
        (job_row(extra=1), "unknown ['extra']"),
    ],
)
def test_from_row_refuses_a_partial_or_foreign_row(row: dict[str, Any], named: str) -> None:
    """A row without every column (or with another) is a ValueError naming the column, not a half-built job."""
    with pytest.raises(ValueError, match=r"Job row needs every column of jobs") as caught:
        from_row(Job, row)
    assert named in str(caught.value)


def test_from_row_for_attempts() -> None:
    """Any row class works: the attempt history is built the same way."""
    row: dict[str, Any] = {
        "id": 1,
        "job_id": 2,
        "at": 3.0,
        "step": "deliver",
        "outcome": "delivered",
        "state": "delivered",
        "http_status": 200,
        "error": None,
        "duration_ms": 1.5,
    }
    assert from_row(Attempt, row) == Attempt(**row)


@pytest.mark.parametrize("row_class", [Job, Attempt, Revocation])
def test_row_class_fields_are_its_tables_columns(row_class: type[Any]) -> None:
    """A row class has its table's columns as fields, in order; a field's default is the column's default (or the
    database's), and a field without one is a NOT NULL column without one: the two declarations cannot drift."""
    table = table_of(row_class)
    assert [f.name for f in fields(row_class)] == table.columns.keys()
    for f in fields(row_class):
        column = table.columns[f.name]
        default, server_default = getattr(column.default, "arg", None), getattr(column.server_default, "arg", None)
        if f.default is MISSING:
            assert not column.nullable and default is None and server_default is None, f.name
        elif f.default is None:
            assert (column.nullable or column.primary_key) and default is None and server_default is None, f.name
        else:
            assert f.default == default or str(f.default) == str(server_default), f.name


ISOLATED_IMPORT = """
import sys
import delivery_daemon.storage.engine, delivery_daemon.storage.jobs, delivery_daemon.storage.transfer
print(sorted(name for name in sys.modules if name.split(".")[0] == "sqlmodel" or name.startswith("sqlalchemy.orm")))
"""


def test_storage_imports_neither_sqlmodel_nor_the_orm() -> None:
    """The tables and their rows are Core and dataclasses: a clean interpreter that imports the schema, the queue's
    row helpers and the copy loads neither SQLModel nor SQLAlchemy's ORM (issue #26, item 5: ~6.8 MB idle)."""
    result = subprocess.run([sys.executable, "-c", ISOLATED_IMPORT], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr
