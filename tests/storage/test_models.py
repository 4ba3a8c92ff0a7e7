"""Table models: ``from_row`` builds the same instance validation would, from a complete row only."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from delivery_daemon.storage.models import Attempt, Job, from_row


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


def test_from_row_equals_the_validated_instance() -> None:
    """Every field, the dump and the set of given fields are those of ``model_validate`` on the same row."""
    row = job_row()
    built, validated = from_row(Job, row), Job.model_validate(row)
    assert built == validated
    assert built.model_dump() == validated.model_dump() == row
    assert built.model_fields_set == validated.model_fields_set


def test_from_row_instance_takes_assignments() -> None:
    """Attributes set later (the worker sets content, quantity) read back and show in the dump."""
    job = from_row(Job, job_row())
    job.content, job.quantity = '{"keys":["K"]}', 3
    assert (job.content, job.quantity) == ('{"keys":["K"]}', 3)
    assert job.model_dump()["quantity"] == 3


def test_from_row_in_a_fresh_process() -> None:
    """The first instance in a process is assignable too (SQLAlchemy's mapper set-up runs on first use)."""
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
    """Any table model works: the attempt history is built the same way."""
    row = {
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
    assert from_row(Attempt, row) == Attempt.model_validate(row)
