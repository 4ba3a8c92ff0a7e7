"""The CLI's plain-text tables (``delivery_daemon.tables``), the demo's output, and the package without ``rich``."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from delivery_daemon.reference.demo import Row, _Progress, _table
from delivery_daemon.tables import Column, cell_width, render_table

ROOT = Path(__file__).resolve().parents[2]


def test_width_from_content_and_numbers_right_justified() -> None:
    """Each column is as wide as its widest header or cell; right-justified columns align header and numbers right."""
    text = render_table(
        [Column("id"), Column("qty", "right"), Column("state")],
        [("a", 1, "queued"), ("bbbbbb", 10, "delivered")],
        title="orders",
    )
    assert text == textwrap.dedent("""\
        orders
        id      qty  state
        ------  ---  ---------
        a         1  queued
        bbbbbb   10  delivered""")


def test_long_id_is_never_truncated() -> None:
    """A 300-character id is printed whole on one line, whatever the terminal width, so it can be grepped."""
    long_id = "ord-" + "0123456789abcdef" * 18 + "-end"
    lines = render_table(["job", "order", "state"], [(1, long_id, "dead")]).splitlines()
    assert [line for line in lines if long_id in line] == [f"1    {long_id}  dead"]


def test_grid_without_header_and_none_as_empty() -> None:
    """show_header=False prints only the rows (the key/value grid of `orders show`); None is an empty cell."""
    text = render_table(("key", "value"), [("job", 7), ("last_error", None), ("store", "demo")], show_header=False)
    assert text.splitlines() == ["job         7", "last_error", "store       demo"]


def test_multiline_cells_and_control_characters() -> None:
    """A cell with line breaks spans lines; an escape sequence is printed as \\x1b; trailing spaces are stripped."""
    text = render_table(["step", "error"], [("deliver", "HTTP 500\nbody: \x1b[31mred\tx"), ("lease", "")])
    assert text.splitlines() == [
        "step     error",
        "-------  -------------------",
        "deliver  HTTP 500",
        "         body: \\x1b[31mred x",
        "lease",
    ]
    assert "\x1b" not in text


def test_wide_characters_take_two_cells() -> None:
    """East Asian wide characters count two terminal cells, so the columns after them still line up."""
    assert cell_width("注文") == 4 and cell_width("e\u0301") == 1
    lines = render_table(["product", "qty"], [("注文", 1), ("abcdef", 2)], show_header=False).splitlines()
    assert lines == ["注文    1", "abcdef  2"]


def test_row_with_wrong_number_of_cells_is_refused() -> None:
    """A row whose cell count differs from the columns' is a ValueError, not a misaligned table."""
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        render_table(["a", "b", "c"], [("1", "2")])


def test_demo_table_plain_text() -> None:
    """The demo's table keeps its columns and wording, in plain text without colour codes."""
    rows = [
        Row("0123456789abcdef", "win11-pro", 3, 1.0, keys=3, accepted=1, latency_ms=151.4),
        Row("fedcba9876543210", "office-2024", 1, 1.0, keys=0, accepted=2),
    ]
    assert _table(rows).splitlines() == [
        "delivery-daemon demo",
        "order          product      quantity  keys  latency  result",
        "-------------  -----------  --------  ----  -------  --------------",
        "0123456789ab…  win11-pro           3     3   151 ms  delivered once",
        "fedcba987654…  office-2024         1     0        -  accepted 2x",
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_demo_progress_lines_on_a_pipe_and_counter_on_a_terminal() -> None:
    """Progress is a line per change of the delivered count on a pipe; on a terminal a \\r counter, then erased."""
    pipe = io.StringIO()
    progress = _Progress(pipe, 3)
    for done in (0, 0, 1, 3, 3):
        progress.update(done)
    progress.close()
    assert [line.split(" after ")[0] for line in pipe.getvalue().splitlines()] == [
        "delivering 0/3",
        "delivering 1/3",
        "delivering 3/3",
    ]
    terminal = _Terminal()
    progress = _Progress(terminal, 3)
    progress.update(0)
    progress.update(3)
    progress.close()
    written = terminal.getvalue()
    assert "\n" not in written and written.count("\r") == 4 and "delivering 3/3" in written
    assert written.endswith("\r") and written.rsplit("\r", 2)[1].strip() == ""


BLOCKED = r"""
import sys
sys.modules["rich"] = None
sys.modules["pygments"] = None
import time
from pathlib import Path

import delivery_daemon.compose
import delivery_daemon.cli
from sqlalchemy import insert

from delivery_daemon.cli import main
from delivery_daemon.storage.engine import create_db_engine, create_schema
from delivery_daemon.storage.models import ATTEMPTS, JOBS

url = "sqlite:///" + str(Path(sys.argv[1]) / "daemon.db")
engine = create_db_engine(url)
create_schema(engine)
now = time.time()
with engine.begin() as conn:
    job_id = conn.execute(insert(JOBS).values(
        store="demo", order_id=sys.argv[2], marketplace="softstore", product_id="win11-pro", payload="{}",
        state="dead", quantity=2, attempts=1, due_at=now, created_at=now, updated_at=now,
        last_error="HTTP 422 from the marketplace")).inserted_primary_key[0]
    conn.execute(insert(ATTEMPTS).values(job_id=job_id, at=now, step="deliver", outcome="dead", state="dead",
                                         http_status=422, error="HTTP 422 from the marketplace", duration_ms=12.3))
engine.dispose()
for argv in (["orders", "list"], ["orders", "show", sys.argv[2]]):
    print(f"=== {' '.join(argv[:2])}", flush=True)
    assert main([*argv, "--database", url]) == 0, argv
print("=== demo", flush=True)
assert main(["demo", "--orders", "3"]) == 0
loaded = sorted(name for name, module in sys.modules.items()
                if name.split(".")[0] in ("rich", "pygments") and module is not None)
assert not loaded, loaded
"""


def test_package_works_without_rich_and_pygments(tmp_path: Path) -> None:
    """With rich and pygments unimportable, the app and CLI import, and `orders list|show` and `demo` print tables."""
    order_id = "ord-" + "a1b2c3d4" * 12  # longer than rich's old 80-column terminal
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED, str(tmp_path), order_id],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    _, listed, shown, demo = done.stdout.split("=== ")
    title, header, rule, row = listed.splitlines()[1:]
    assert title == "orders (newest first, at most 50)"
    assert re.split(r"\s{2,}", header.strip()) == [
        "job",
        "store",
        "order",
        "product",
        "qty",
        "state",
        "tries",
        "created",
        "last error",
    ]
    assert header.index("order") == row.index(order_id) and set(rule) == {"-", " "}
    assert re.fullmatch(
        rf"  1  demo   {order_id}  win11-pro    2  dead       1  \S+Z  HTTP 422 from the marketplace", row
    )
    assert re.search(rf"^order_id +{order_id}$", shown, re.MULTILINE)
    assert "deliver  dead     dead   422   12  HTTP 422 from the marketplace" in shown
    assert "delivered content: none stored" in shown
    assert "delivering 3/3 after " in demo and "delivery-daemon demo" in demo
    assert demo.splitlines()[-1] == "all 3 orders delivered exactly once"
    assert "\x1b" not in done.stdout
