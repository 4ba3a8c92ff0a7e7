"""``pattern``: random licence keys drawn from ``secrets``, shaped like ``XXXXX-XXXXX-XXXXX-XXXXX-XXXXX``.

Shape the key either with ``pattern`` (every ``X`` becomes one character of the charset; every other character is
copied as is) or with ``groups`` * ``group_length`` joined by ``separator``. ``prefix`` is put in front. With
``check: luhn``, one more character — the Luhn mod N check character over the charset — ends the key, so an
application can reject a mistyped key offline (:func:`luhn_valid`). The default charset leaves out look-alike
characters (0/O, 1/I/L, 5/S, 2/Z, 8/B) so buyers can type the key from a screen.
"""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from delivery_daemon.generators.contract import Generated, OrderContext

UNAMBIGUOUS = "ACDEFGHJKMNPQRTUVWXY34679"
MIN_SYMBOLS = 8


def luhn_character(body: str, charset: str) -> str:
    """The Luhn mod N check character of ``body`` (characters outside ``charset`` are ignored).

    Luhn mod N folds a doubled value as ``v // N + v % N``, which is one-to-one only for an even N; for an odd N
    (the default charset has 25 symbols) the doubled value is kept as ``2v mod N`` instead, which is one-to-one
    because 2 and N are coprime. Either way every single-character typo is caught; with an odd N every swap of two
    adjacent symbols too (with an even N all but one pair, like decimal Luhn's 0/9).
    """
    n = len(charset)
    total, factor = 0, 2
    for ch in reversed([c for c in body if c in charset]):
        addend = factor * charset.index(ch)
        total += addend // n + addend % n if n % 2 == 0 else addend % n
        factor = 1 if factor == 2 else 2
    return charset[(n - total % n) % n]


def draw(charset: str, count: int) -> str:
    """``count`` characters of ``charset``, each uniformly and independently from the OS's CSPRNG.

    One ``secrets.token_bytes`` call per batch instead of one ``secrets.choice`` (an ``os.urandom`` call) per
    character; bytes at or above the largest multiple of ``len(charset)`` are dropped so that ``byte % len`` is
    uniform (rejection sampling). Charsets longer than 256 symbols fall back to ``secrets.choice``.
    """
    n = len(charset)
    if n > 256:
        return "".join(secrets.choice(charset) for _ in range(count))
    limit = 256 - 256 % n
    out: list[str] = []
    while len(out) < count:
        out.extend(charset[b % n] for b in secrets.token_bytes(count - len(out) + 8) if b < limit)
    return "".join(out[:count])


def luhn_valid(key: str, charset: str = UNAMBIGUOUS) -> bool:
    """True when the last character of ``key`` is the Luhn mod N check character of the rest."""
    return bool(key) and key[-1] in charset and luhn_character(key[:-1], charset) == key[-1]


class PatternOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Field order matters: each validator sees the fields declared above it.
    groups: int | None = Field(default=None, ge=1, le=32, description="instead of pattern: number of groups")
    group_length: int = Field(default=5, ge=1, le=64)
    pattern: str = Field(
        default="XXXXX-XXXXX-XXXXX-XXXXX-XXXXX",
        min_length=1,
        max_length=256,
        json_schema_extra={
            "expected": f"a pattern with at least {MIN_SYMBOLS} X placeholders (each becomes a random character)"
        },
    )
    separator: str = Field(default="-", max_length=4)
    charset: str = Field(
        default=UNAMBIGUOUS, min_length=2, json_schema_extra={"expected": "at least 2 characters, none repeated"}
    )
    prefix: str = Field(default="", max_length=64)
    check: Literal["none", "luhn"] = "none"

    @field_validator("group_length")
    @classmethod
    def _enough_groups(cls, value: int, info: ValidationInfo) -> int:
        groups = info.data.get("groups")
        if groups is not None and groups * value < MIN_SYMBOLS:
            raise ValueError(f"groups * group_length must be at least {MIN_SYMBOLS} to be unguessable")
        return value

    @field_validator("pattern")
    @classmethod
    def _enough_placeholders(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("groups") is None and value.count("X") < MIN_SYMBOLS:
            raise ValueError(f"needs at least {MIN_SYMBOLS} 'X' placeholders to be unguessable")
        return value

    @field_validator("charset")
    @classmethod
    def _distinct(cls, value: str) -> str:
        if len(set(value)) != len(value):
            raise ValueError("characters must not repeat")
        return value

    def shape(self) -> str:
        if self.groups is None:
            return self.pattern
        return self.separator.join("X" * self.group_length for _ in range(self.groups))


class PatternGenerator:
    """Random keys from a pattern; never the same key twice in practice (≥ 8 symbols of ≥ 1 bit each)."""

    name = "pattern"
    Options = PatternOptions

    def __init__(self, options: PatternOptions) -> None:
        self.options = options
        self.shape = options.shape()

    def key(self) -> str:
        charset = self.options.charset
        symbols = iter(draw(charset, self.shape.count("X")))
        body = "".join(next(symbols) if ch == "X" else ch for ch in self.shape)
        if self.options.check == "luhn":
            body += luhn_character(body, charset)
        return self.options.prefix + body

    async def generate(self, order: OrderContext) -> Generated:
        # async although it does no I/O: a key takes microseconds, less than handing the call to a thread and back
        # (which a sync generate gets, docs/plugins.md), so it runs on the event loop.
        return Generated(keys=[self.key() for _ in range(order.quantity)])
