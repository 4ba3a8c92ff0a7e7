"""bench/memory.py's reading of /proc figures (the measurement itself installs packages: never run in tests)."""

from __future__ import annotations

from bench.memory import ROLLUP_KEYS, kib_fields


def test_kib_fields_reads_the_named_kb_lines_only() -> None:
    """``key: n kB`` lines of smaps_rollup become ``{key: n}`` for the keys asked, other lines are skipped."""
    text = (
        "55c8e1a4d000-7ffd2b1f4000 ---p 00000000 00:00 0                          [rollup]\n"
        "Rss:               80476 kB\nPss:               69236 kB\nPss_Anon:          55624 kB\n"
        "Pss_File:          13612 kB\nPss_Shmem:             0 kB\n"
    )
    assert kib_fields(text, ROLLUP_KEYS) == {"Rss": 80476, "Pss_Anon": 55624, "Pss_File": 13612}
