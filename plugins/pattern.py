"""``pattern``: random licence keys drawn from ``secrets``, shaped like ``XXXXX-XXXXX-XXXXX-XXXXX-XXXXX``.

Every ``X`` in the pattern becomes one character of the charset; every other character is copied as is. The default
charset leaves out look-alike characters (0/O, 1/I/L, 5/S, 2/Z, 8/B) so buyers can type the key from a screen.
"""

from __future__ import annotations

import secrets

from pydantic import BaseModel, ConfigDict, Field, field_validator

from delivery_daemon.generator import Generated, OrderContext

UNAMBIGUOUS = "ACDEFGHJKMNPQRTUVWXY34679"


class PatternOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(default="XXXXX-XXXXX-XXXXX-XXXXX-XXXXX", min_length=1, max_length=256)
    charset: str = Field(default=UNAMBIGUOUS, min_length=2)
    prefix: str = ""

    @field_validator("pattern")
    @classmethod
    def _has_placeholder(cls, value: str) -> str:
        if value.count("X") < 8:
            raise ValueError("needs at least 8 'X' placeholders to be unguessable")
        return value

    @field_validator("charset")
    @classmethod
    def _distinct(cls, value: str) -> str:
        if len(set(value)) != len(value):
            raise ValueError("characters must not repeat")
        return value


class PatternGenerator:
    """Random keys from a pattern; never the same key twice in practice (≥ 8 symbols of ≥ 2 bits each)."""

    name = "pattern"
    Options = PatternOptions

    def __init__(self, options: PatternOptions) -> None:
        self.options = options

    def key(self) -> str:
        body = "".join(secrets.choice(self.options.charset) if ch == "X" else ch for ch in self.options.pattern)
        return self.options.prefix + body

    def generate(self, order: OrderContext) -> Generated:
        return Generated(keys=[self.key() for _ in range(order.quantity)])
