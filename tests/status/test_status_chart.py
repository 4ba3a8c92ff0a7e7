"""The latency chart's geometry: bars scale to the largest value, all-zero data draws flat bars, a text alternative."""

from __future__ import annotations

from delivery_daemon.status.chart import HEIGHT, TOP, bar_chart


def test_bars_scale_to_the_largest_value_and_describe_themselves() -> None:
    """The tallest bar fills the plot height, the others are in proportion; the description lists every bar."""
    chart = bar_chart([("< 1 s", 4), ("1-5 s", 2), ("≥ 2 h", 0)], title="Latency")
    tallest, half, empty = chart.bars
    assert tallest.height == chart.baseline - TOP
    assert half.height == tallest.height / 2 and half.y == chart.baseline - half.height
    assert empty.height == 0 and empty.y == chart.baseline
    assert tallest.x < half.x < empty.x and chart.baseline < HEIGHT
    assert chart.description == "< 1 s: 4; 1-5 s: 2; ≥ 2 h: 0"


def test_no_deliveries_draw_flat_bars() -> None:
    """With every count 0 (no deliveries yet) the chart still renders, with no bar above the baseline."""
    chart = bar_chart([("a", 0), ("b", 0)], title="Latency")
    assert [bar.height for bar in chart.bars] == [0, 0]
