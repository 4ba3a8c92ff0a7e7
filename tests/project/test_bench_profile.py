"""bench/profile.py folds py-spy's raw samples into each thread's share and the owners of its CPU."""

from __future__ import annotations

import pytest

from bench.profile import owner, split

RAW = "\n".join(
    [
        # The database thread: SQLite's commit (its fsync inside libc) is SQLite's, not SQLAlchemy's.
        "thread (0x1f): db;run (threading.py:975);do_commit (sqlalchemy/engine/default.py:700);"
        "sqlite3_step (libsqlite3.so.0.8.6);fdatasync (libc.so.6) 6",
        # The event loop: a C call from a Python line counts for that line's package.
        "thread (0x1e): MainThread;_run_once (asyncio/base_events.py:1922);scrub (delivery_daemon/logs.py:114);"
        "Py_DECREF (object.h:537);0x7f79a48a3f16 (libc.so.6) 3",
        "thread (0x1e): MainThread;_run_once (asyncio/base_events.py:1922) 2",
        "thread (0x1e): MainThread;_find_and_load (<frozen importlib._bootstrap>:1176) 1",
        "not a sample line",
    ]
)


def test_each_thread_gets_its_share_and_its_owners() -> None:
    """Samples are summed per thread; each thread's owners are shares of that thread's samples."""
    folded = split(RAW)
    assert folded["samples"] == 12
    db, loop = folded["threads"]["db"], folded["threads"]["MainThread"]
    assert (db["samples"], db["share"], db["owners"]) == (6, 0.5, {"libsqlite3": 1.0})
    assert loop["samples"] == 6
    assert loop["owners"] == pytest.approx({"delivery_daemon": 0.5, "asyncio": 2 / 6, "import": 1 / 6})


def test_owners_past_the_top_are_summed_as_other() -> None:
    """Only the ``top`` owners are named; the rest of the thread's samples are ``other``."""
    loop = split(RAW, top=1)["threads"]["MainThread"]
    assert loop["owners"] == pytest.approx({"delivery_daemon": 0.5, "other": 0.5})


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        (["f (aiohttp/client.py:1)", "send (libc.so.6)"], "aiohttp"),
        (["f (ssl.py:1)", "SSL_write (libssl.so.3)", "memcpy (libc.so.6)"], "libssl"),
        (["f (json/encoder.py:1)", "gc_collect_main (libpython3.11.so.1.0)"], "json"),
        (["__init__ (<string>:3)"], "generated code"),
        (["0x7f00 (libc.so.6)"], "unknown"),
    ],
)
def test_the_owner_is_the_innermost_foreign_library_or_python_module(frames: list[str], expected: str) -> None:
    """A library other than the interpreter and libc owns its time; otherwise the innermost Python frame does."""
    assert owner(frames) == expected
