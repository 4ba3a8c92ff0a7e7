"""The table printed at the end of a run, and each figure checked against the issue's target."""

from __future__ import annotations

from typing import Any

TARGETS = {
    "ingest_ratio": ("ingest rps, daemon / baseline", ">=", 0.6),
    "ingest_p99_ms": ("ingest p99 at 32 connections (ms)", "<=", 25.0),
    "e2e_p50_ms": ("end-to-end p50 at 50/s (ms)", "<=", 15.0),
    "e2e_p99_ms": ("end-to-end p99 at 50/s (ms)", "<=", 60.0),
    "drain_per_s": ("backlog drain (deliveries/s)", ">=", 500.0),
    "rss_idle_mb": ("RSS idle (MB)", "<=", 80.0),
    "rss_peak_mb": ("RSS peak, end of drain (MB)", "<=", 200.0),
    "growth_worst_ratio": ("growth, worst cost ratio vs 10^3 rows", "<=", 1.2),
    # issue #26, against the Express handler in the same run
    "versus_p50_ratio": ("versus: p50 at 50/s, daemon / Express", "<=", 1.2),
    "versus_p99_ratio": ("versus: p99 at 50/s, daemon / Express", "<=", 1.0),
    "versus_cpu_ratio": ("versus: CPU per order, daemon / Express", "<=", 0.7),
    "versus_rate_ratio": ("versus: orders/s, daemon / Express", ">=", 1.5),
    "versus_rss_idle_mb": ("versus: daemon RSS idle (MB)", "<=", 75.0),
}


def _figures(results: dict[str, Any]) -> dict[str, float]:
    figures: dict[str, float] = {}
    if "ingest" in results:
        figures["ingest_ratio"] = results["ingest"]["ratio"]
        figures["ingest_p99_ms"] = results["ingest"]["daemon"]["p99_ms"]
    if "e2e" in results:
        figures["e2e_p50_ms"] = results["e2e"]["p50_ms"]
        figures["e2e_p99_ms"] = results["e2e"]["p99_ms"]
        figures["rss_idle_mb"] = results["e2e"]["rss_idle_kb"] / 1024
    if "drain" in results:
        figures["drain_per_s"] = results["drain"]["deliveries_per_s"]
        figures["rss_peak_mb"] = results["drain"]["rss_peak_kb"] / 1024
    if "growth" in results:
        figures["growth_worst_ratio"] = results["growth"]["worst_ratio"]
    express = results.get("versus", {}).get("ratios", {}).get("express")
    if express:
        figures["versus_p50_ratio"] = express["p50_at_50"]
        figures["versus_p99_ratio"] = express["p99_at_50"]
        figures["versus_cpu_ratio"] = express["cpu_ms_per_order"]
        figures["versus_rate_ratio"] = express["delivered_per_s"]
    if "daemon" in results.get("versus", {}):
        figures["versus_rss_idle_mb"] = results["versus"]["daemon"]["rss_idle_kb"] / 1024
    return figures


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each measured figure with its target and whether it was met."""
    out = {}
    for key, value in _figures(results).items():
        label, op, limit = TARGETS[key]
        met = value >= limit if op == ">=" else value <= limit
        out[key] = {"label": label, "value": value, "target": f"{op} {limit:g}", "met": met}
    return out


def render_table(results: dict[str, Any]) -> str:
    lines = []
    m = results["machine"]
    lines.append(
        f"machine: {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, event loop {m['event_loop']}, parser "
        f"{m['http_parser']}, load average at start {m['loadavg_at_start'][0]:.1f}"
        + ("   [SMOKE: sizes too small for the figures to mean anything]" if results["smoke"] else "")
    )
    if "ingest" in results:
        ing = results["ingest"]
        lines.append(
            f"\ningest ({ing['tool']}, {ing['connections']} connections, {ing['rounds']} x "
            f"{ing['duration_s']:g} s each, medians)"
        )
        lines.append(
            f"  {'server':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"
            f"{'CPU µs/request: loop':>22}{'other threads':>15}"
        )
        for name in ("baseline", "daemon", "unstored"):
            r = ing[name]
            lines.append(
                f"  {name:<10}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['errors']:>8}"
                f"{r['event_loop_us_per_request']:>22.0f}{r['other_threads_us_per_request']:>15.0f}"
            )
        lines.append(
            f"  ratio daemon/baseline: {ing['ratio']:.2f}   (unstored/baseline: {ing['unstored_ratio']:.2f};"
            " unstored = the daemon's receiver storing nothing, bench only)"
        )
    if "e2e" in results:
        e = results["e2e"]
        lines.append(
            f"\nend-to-end at {e['rate']:g} orders/s, {e['n']} orders: p50 {e['p50_ms']:.1f} ms, "
            f"p99 {e['p99_ms']:.1f} ms, max {e['max_ms']:.1f} ms"
        )
    if "drain" in results:
        d = results["drain"]
        lines.append(
            f"\ndrain of {d['jobs']} jobs: {d['deliveries_per_s']:.0f} deliveries/s "
            f"({d['drain_s']:.1f} s; backlog taken in at {d['jobs'] / d['queue_fill_s']:.0f}/s); daemon CPU "
            f"per order {d['event_loop_ms_per_order']:.2f} ms on its event loop + "
            f"{d['other_threads_ms_per_order']:.2f} ms on its other threads"
        )
    if "versus" in results:
        lines.extend(_versus_lines(results["versus"]))
    if "growth" in results:
        g = results["growth"]
        lines.append(f"\ngrowth (ms per operation, median of {g['repeats']}; ratio to the first row)")
        lines.append(f"  {'rows':>9}{'enqueue FULL':>15}{'claim FULL':>14}{'enqueue OFF':>15}{'claim OFF':>14}")
        for row in g["rows"]:
            cells = [
                f"{row[k]:.3f} ({row[k + '_ratio']:.2f})"
                for k in ("enqueue_ms_full", "claim_ms_full", "enqueue_ms_off", "claim_ms_off")
            ]
            lines.append(f"  {row['rows']:>9}{cells[0]:>15}{cells[1]:>14}{cells[2]:>15}{cells[3]:>14}")
    if "pg" in results:
        lines.extend(_pg_lines(results["pg"]))
    lines.append("\ntargets")
    for item in results["targets"].values():
        mark = "met" if item["met"] else "NOT met"
        lines.append(f"  {item['label']:<42}{item['value']:>10.2f}  {item['target']:<8} {mark}")
    return "\n".join(lines)


def _pg_lines(pg: dict[str, Any]) -> list[str]:
    if "skipped" in pg:
        return [f"\npostgresql: skipped ({pg['skipped']})"]
    lines = [
        f"\npostgresql (fsync on; ingest {pg['connections']} connections split over the replicas, "
        f"{pg['duration_s']:g} s; drain of {pg['jobs']} jobs)",
        f"  {'replicas':>8}{'ingest req/s':>14}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'drain /s':>10}",
    ]
    for row in pg["rows"]:
        ing, dr = row["ingest"], row["drain"]
        lines.append(
            f"  {row['replicas']:>8}{ing['rps']:>14.0f}{ing['p50_ms']:>9.2f}{ing['p99_ms']:>9.2f}"
            f"{ing['errors']:>8}{dr['deliveries_per_s']:>10.0f}"
        )
    return lines


def _versus_lines(v: dict[str, Any]) -> list[str]:
    pinned = "each system on one core" if v["pinned"] else "NOT pinned (fewer than 2 cores or no taskset)"
    lines = [
        f"\nversus the inline handlers ({pinned}; {v['orders']} orders over 32 connections, then 50/s and 10/s "
        f"for {v['open_loop_s']:g} s; medians of {len(v['rounds'])} round(s))",
        f"  {'system':<9}{'orders/s':>10}{'CPU ms/order':>14}{'p50/p99 at 50/s':>18}{'p50/p99 at 10/s':>18}"
        f"{'RSS idle MB':>13}{'other core':>12}",
    ]
    for name in ("daemon", "base", "express", "inline"):
        if name == "base" and not v.get("base_checkout"):
            continue
        if name not in v:
            lines.append(f"  {name:<9}skipped: {v['skipped'].get(name, '?')}")
            continue
        r = v[name]
        at50, at10 = r["open_50"], r["open_10"]
        lines.append(
            f"  {name:<9}{r['closed_loop']['delivered_per_s']:>10.0f}{r['closed_loop']['cpu_ms_per_order']:>14.2f}"
            f"{at50['p50_ms']:>10.1f}/{at50['p99_ms']:<7.1f}{at10['p50_ms']:>10.1f}/{at10['p99_ms']:<7.1f}"
            f"{r['rss_idle_kb'] / 1024:>13.0f}{r['closed_loop'].get('other_core_busy', 0.0):>11.0%}"
        )
    lines.append(
        "  other core: how busy the marketplace and the load kept it in the closed loop (near 100 %: they bound it)"
    )
    for name in ("daemon", "base"):
        split = (v.get(name) or {}).get("open_50", {}).get("split_p50_ms")
        if split:
            lines.append(f"  {name} at 50/s, medians (ms): " + ", ".join(f"{k} {x:.2f}" for k, x in split.items()))
    for peer, ratio in v["ratios"].items():
        lines.append(
            f"  daemon / {peer}: orders/s {ratio['delivered_per_s']:.2f}, CPU/order {ratio['cpu_ms_per_order']:.2f}, "
            f"p50 {ratio['p50_at_50']:.2f}, p99 {ratio['p99_at_50']:.2f}, RSS idle {ratio['rss_idle']:.2f}"
        )
    return lines
