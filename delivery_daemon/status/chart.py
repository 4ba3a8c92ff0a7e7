"""A bar chart drawn on the server as inline SVG geometry, so the page needs no JavaScript to show it.

:func:`bar_chart` only computes coordinates; ``templates/_chart.html`` turns them into ``<svg>`` (Jinja escapes
every label). The chart has a title and a text alternative, and the same numbers are also shown as a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 640
HEIGHT = 220
AXIS = 40  # room under the bars for the labels
TOP = 20  # room above the tallest bar for its count


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    x: float
    y: float
    width: float
    height: float
    label_x: float


@dataclass(frozen=True)
class BarChart:
    title: str
    bars: list[Bar]
    width: int
    height: int
    baseline: float

    @property
    def description(self) -> str:
        """The chart as one sentence, for screen readers."""
        return "; ".join(f"{bar.label}: {bar.value}" for bar in self.bars)


def bar_chart(data: Sequence[tuple[str, int]], *, title: str) -> BarChart:
    """Geometry for one bar per (label, value), scaled to the largest value (an empty chart has flat bars)."""
    peak = max((value for _, value in data), default=0) or 1
    slot = WIDTH / max(1, len(data))
    baseline = HEIGHT - AXIS
    bars = []
    for index, (label, value) in enumerate(data):
        height = (baseline - TOP) * value / peak
        x = index * slot + slot * 0.15
        bars.append(
            Bar(
                label=label,
                value=value,
                x=round(x, 1),
                y=round(baseline - height, 1),
                width=round(slot * 0.7, 1),
                height=round(height, 1),
                label_x=round(x + slot * 0.35, 1),
            )
        )
    return BarChart(title=title, bars=bars, width=WIDTH, height=HEIGHT, baseline=baseline)
