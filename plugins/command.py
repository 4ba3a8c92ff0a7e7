"""``command``: delegate to the seller's own key program.

The program (``argv``, no shell) gets the order as JSON on stdin — ``store``, ``marketplace``, ``order_id``,
``product_id``, ``quantity``, ``buyer_email``, ``idempotency_key`` — and answers on stdout with either one key per
line, or a JSON object ``{"keys": [...], "text": ..., "download": ...}``. Its exit status says what happened:

* ``0`` — the keys are on stdout;
* ``69`` (``EX_UNAVAILABLE``) — out of stock: the order waits for a refill (``delivery-daemon`` requeues it when
  ``stock import`` or an operator retry wakes it);
* ``65`` (``EX_DATAERR``) — permanent: the order is never delivered;
* anything else, or no answer within ``timeout`` seconds (the program is killed) — retried later.

Make the program idempotent on ``idempotency_key``: a retried order must get the same keys.

Revocation (optional, ``revoke_argv``): when a content the program made is taken back (refund, dispute,
cancellation, ``orders revoke`` or ``orders reissue``), ``revoke_argv`` runs the same way with the revocation as JSON
on stdin — ``store``, ``marketplace``, ``order_id``, ``product_id``, ``quantity``, ``buyer_email``, ``keys``,
``reason``, ``sent``, ``issue``, ``idempotency_key`` (the keys are on stdin only, never in the arguments). Exit ``0``
= done, never run again for that content; ``65`` = given up; anything else, or no answer within ``timeout`` = retried.

The program runs with a minimal environment — ``PATH``, ``LANG``, ``LANGUAGE``, ``LC_*``, ``TZ``, ``HOME`` and
``TMPDIR``, those the daemon has — plus the configured ``env``. Nothing else of the daemon's environment (marketplace
API keys, the encryption key, the status-page password) reaches it; pass what it needs through ``env``
(``${VAR}`` works there as anywhere in the configuration).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from delivery_daemon.generators.contract import (
    Dead,
    Generated,
    OrderContext,
    OutOfStock,
    Retry,
    RevocationContext,
    parse_generated,
)

EX_DATAERR = 65
EX_UNAVAILABLE = 69

PASSED_ON = ("PATH", "LANG", "LANGUAGE", "TZ", "HOME", "TMPDIR")
"""The daemon's variables the program gets (when set), besides ``LC_*``: what a program needs to run, no secrets."""


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """The program's environment: the daemon's :data:`PASSED_ON` and ``LC_*`` variables, then the configured ``env``."""
    passed = {name: value for name, value in os.environ.items() if name in PASSED_ON or name.startswith("LC_")}
    return {**passed, **extra}


class CommandOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(
        min_length=1,
        description="the program and its arguments (no shell)",
        examples=[["/usr/local/bin/keygen", "--product", "pro"]],
        json_schema_extra={"expected": "a list: the program, then its arguments (no shell)"},
    )
    timeout: float = Field(default=10.0, gt=0, le=300)
    env: dict[str, str] = Field(
        default_factory=dict,
        description="extra environment variables",
        examples=[{"KEYGEN_DB": "/var/lib/keygen/keys.db"}],
    )
    revoke_argv: list[str] | None = Field(
        default=None,
        min_length=1,
        description="the program run for a revocation, with its arguments (no shell); none: nothing is run",
        examples=[["/usr/local/bin/keygen", "revoke"]],
        json_schema_extra={"expected": "a list: the program, then its arguments (no shell)"},
    )

    @field_validator("argv", "revoke_argv")
    @classmethod
    def _program_exists(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and shutil.which(value[0]) is None:
            raise ValueError(f"program {value[0]!r} not found or not executable")
        return value


def _last_line(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:200] if lines else ""


class CommandGenerator:
    """Keys from a program the seller already has."""

    name = "command"
    Options = CommandOptions

    def __init__(self, options: CommandOptions) -> None:
        self.options = options

    async def _run(self, argv: list[str], data: dict[str, Any]) -> tuple[int | None, bytes, bytes]:
        """Run ``argv`` with ``data`` as JSON on stdin, killed after ``timeout`` (Retry); its status and output."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_environment(self.options.env),
        )
        try:
            async with asyncio.timeout(self.options.timeout):
                stdout, stderr = await process.communicate(json.dumps(data).encode())
        except TimeoutError:
            raise Retry(f"{argv[0]} gave no answer within {self.options.timeout:g} s") from None
        finally:
            if process.returncode is None:  # timed out or cancelled by the daemon's budget: never leave it running
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return process.returncode, stdout, stderr

    async def revoke(self, revocation: RevocationContext) -> None:
        """Run ``revoke_argv`` with the revocation on stdin (see the module docstring); nothing without it."""
        if self.options.revoke_argv is None:
            return
        program = self.options.revoke_argv[0]
        status, _stdout, stderr = await self._run(self.options.revoke_argv, revocation.to_dict())
        if status == EX_DATAERR:
            raise Dead(f"{program} refused the revocation: {_last_line(stderr)}".rstrip(": "))
        if status != 0:
            raise Retry(f"{program} exited with status {status}: {_last_line(stderr)}".rstrip(": "))

    async def generate(self, order: OrderContext) -> Generated:
        program = self.options.argv[0]
        status, stdout, stderr = await self._run(self.options.argv, order.to_dict())
        # stderr is the program's own diagnostics; stdout (the keys) never goes into a reason or a log line.
        if status == EX_UNAVAILABLE:
            raise OutOfStock(f"{program} is out of stock: {_last_line(stderr)}".rstrip(": "))
        if status == EX_DATAERR:
            raise Dead(f"{program} refused the order: {_last_line(stderr)}".rstrip(": "))
        if status != 0:
            raise Retry(f"{program} exited with status {status}: {_last_line(stderr)}".rstrip(": "))
        text = stdout.decode("utf-8", "replace")
        if text.lstrip().startswith("{"):
            try:
                return parse_generated(json.loads(text))
            except ValueError as exc:
                raise Retry(f"{program} printed unusable JSON: {exc}") from None
        return Generated(keys=[line.strip() for line in text.splitlines() if line.strip()])
