"""Every lint or type-check ignore names what it silences and says why, on its own line (issue #21 item 6).

``# noqa: S324 (the marketplace's scheme)`` and ``# type: ignore[attr-defined]  # reason`` pass; a bare ``# noqa``,
a ``# type: ignore`` without a code, or a code without a reason fails. A reason is at least :data:`REASON_WORDS`
words after the codes. (mypy takes the reason of a ``type: ignore`` only as a second ``#`` comment.)
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("delivery_daemon", "plugins", "tests", "bench", "examples")

REASON_WORDS = 3
PRAGMA = re.compile(
    r"#\s*(?:(?:ruff|flake8)\s*:\s*)?noqa\b(?P<noqa>\s*:\s*[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*)?(?P<noqa_rest>.*)"
    r"|#\s*type\s*:\s*ignore\b(?P<ignore>\[[^\]]*\])?(?P<ignore_rest>.*)",
    re.IGNORECASE,
)
"""A ``noqa`` (also ruff's and flake8's file-wide form) or a ``type: ignore``: its codes, then the rest of the line."""
WORD = re.compile(r"[^\W\d_][\w'.-]*")
"""A word of a reason; it starts with a letter, so separators (``#``, ``-``, ``(``) do not count."""


def pragmas(source: str) -> Iterator[tuple[int, str, str, str]]:
    """Each ignore in a comment of ``source``: (line, the pragma as written, its codes or "", the text after them)."""
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT or not (match := PRAGMA.search(token.string)):
            continue  # one pragma per comment: its reason may mention another
        kind = "noqa" if match.group("noqa_rest") is not None else "ignore"
        rest = match.group(f"{kind}_rest")
        yield token.start[0], match.group(0)[: len(match.group(0)) - len(rest)].strip(), match.group(kind) or "", rest


def problems(source: str, where: str = "<source>") -> list[str]:
    """Each ignore in ``source`` without a code or without a reason: ``where:line problem``."""
    found = []
    for line, pragma, codes, rest in pragmas(source):
        if not codes:
            found.append(f"{where}:{line} {pragma!r} names no code")
        elif len(WORD.findall(rest)) < REASON_WORDS:
            found.append(f"{where}:{line} {pragma!r} gives no reason (at least {REASON_WORDS} words after the codes)")
    return found


def _sources() -> Iterator[tuple[str, str]]:
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")


def test_every_ignore_has_a_code_and_a_reason() -> None:
    """In the package, the shipped plugins, the tests, the benchmark and the examples, no ignore goes unexplained."""
    assert [hit for where, source in _sources() for hit in problems(source, where)] == []


def test_the_scan_reads_the_ignores_of_the_tree() -> None:
    """The scan finds the tree's ignores (of both kinds), so the check above is not passing on nothing."""
    found = [pragma for _, source in _sources() for _, pragma, _, _ in pragmas(source)]
    assert sum("noqa" in pragma for pragma in found) >= 10 and sum("ignore" in pragma for pragma in found) >= 10


def test_the_scan_tells_an_explained_ignore_from_an_unexplained_one() -> None:
    """Bare ignores, codes without a reason and too short a reason fail; each accepted form passes."""
    bad = [
        "import os  # noqa",
        "import os  # noqa: F401",
        "import os  # noqa: F401, E501",
        "import os  # noqa: F401 (unused)",
        "x = 1  # NOQA:E501",
        "# ruff: noqa",
        "# ruff: noqa: E501",
        "x = f()  # type: ignore",
        "x = f()  # type: ignore  # no code given here",
        "x = f()  # type: ignore[attr-defined]",
        "x = f()  # type: ignore[attr-defined]  # untyped",
    ]
    good = [
        "import os  # noqa: F401 (imported to register tables)",
        "import os  # noqa: F401  (imported to register tables)",
        "h = sha1(k)  # noqa: S324 - the documented scheme",
        "h = sha1(k)  # noqa: S324, S303 (the marketplace's scheme)",
        "x = f()  # type: ignore[attr-defined]  # SQLModel sets it, undeclared",
        "x = f()  # type: ignore[assignment,misc]  # absent: callers check for None",
        's = "# noqa"  # a string, not a comment',
        "x = 1  # a comment without a pragma",
    ]
    for source in bad:
        assert len(problems(source)) == 1, source
    for source in good:
        assert problems(source) == [], source
