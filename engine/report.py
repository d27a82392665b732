"""Replay reports: the console table, the JSON document and a self-contained HTML page.

The HTML has no external assets (inline SVG, inline CSS) so it can be mailed or opened
offline; charts are drawn here rather than pulling a plotting stack into the install.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from engine.replay import ReplayResult
from engine.signals.model import iso_utc

KEYS = ("signals", "tp1", "tp2", "tp3", "sl", "expired", "win_rate", "avg_r")
COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
)


def expectancy(result: ReplayResult) -> dict[str, float | None]:
    """Mean PnL % per closed signal, by strategy (R says how good; this says how much)."""
    closed = result.result >= 0
    out: dict[str, float | None] = {}
    for code in np.unique(result.strategy[closed]).tolist():
        pnl = result.pnl[closed & (result.strategy == code)]
        out[result.names[code]] = float(pnl.sum()) / len(pnl)
    return out


def summary(result: ReplayResult, names: list[str]) -> dict[str, Any]:
    """The `--json` document (issue 6 schema) without its `signals` list (see `write_json`)."""
    exp = expectancy(result)

    def row(name: str) -> dict[str, Any]:
        st = result.stats.get(name, {})
        out = {k: st.get(k, 0 if k not in ("win_rate", "avg_r") else None) for k in KEYS}
        out["expectancy_pct"] = None if exp.get(name) is None else round(exp[name] or 0.0, 6)
        out["skipped"] = result.skipped.get(name)
        return out

    return {
        "strategies": {n: row(n) for n in names},
        "consensus": row("consensus"),
        "evaluations": result.evaluations,
    }


def write_json(path: Path, doc: dict[str, Any], result: ReplayResult) -> None:
    """`doc` with the replay's `signals` list (its spooled records), as one JSON document."""
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    result.write_document(path, head[:-1] + b',"signals":[', b"]}\n")


def table(doc: dict[str, Any]) -> str:
    """The console table of a replay summary: one row per strategy plus consensus, skips explained."""
    head = ("STRATEGY", "SIGNALS", "TP1", "TP2", "TP3", "SL", "EXPIRED", "WIN%", "AVG R", "EXP %")
    rows = [head]
    entries = [*doc["strategies"].items(), ("consensus", doc["consensus"])]
    for name, r in entries:
        if r.get("skipped"):
            rows.append((name, "skipped: " + str(r["skipped"]), "", "", "", "", "", "", "", ""))
            continue
        wr = "-" if r["win_rate"] is None else f"{100 * r['win_rate']:.1f}"
        ar = "-" if r["avg_r"] is None else f"{r['avg_r']:+.2f}"
        ex = "-" if r["expectancy_pct"] is None else f"{r['expectancy_pct']:+.3f}"
        rows.append(
            (
                name,
                str(r["signals"]),
                str(r["tp1"]),
                str(r["tp2"]),
                str(r["tp3"]),
                str(r["sl"]),
                str(r["expired"]),
                wr,
                ar,
                ex,
            )
        )
    widths = [max(len(r[i]) for r in rows if not r[1].startswith("skipped")) for i in range(len(head))]
    lines = []
    for r in rows:
        if r[1].startswith("skipped"):
            lines.append(f"{r[0].ljust(widths[0])}  {r[1]}")
        else:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _date(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _polyline_chart(series: dict[str, list[tuple[int, float]]], title: str, y_label: str) -> str:
    w, h, pad = 900, 320, 50
    pts = [p for s in series.values() for p in s]
    if not pts:
        return f"<p>{html.escape(title)}: nothing to draw.</p>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(0.0, *(p[1] for p in pts)), max(0.0, *(p[1] for p in pts))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def sx(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (w - 2 * pad)

    def sy(y: float) -> float:
        return h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad)

    parts = [
        f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>{html.escape(title)}</title>',
        f'<line x1="{pad}" y1="{sy(0):.1f}" x2="{w - pad}" y2="{sy(0):.1f}" '
        'stroke="#999" stroke-dasharray="4"/>',
        f'<text x="{pad}" y="{pad - 10}" font-size="12">{html.escape(y_label)} ({y0:.2f} … {y1:.2f})</text>',
        f'<text x="{pad}" y="{h - 10}" font-size="12">{_date(x0)}</text>',
        f'<text x="{w - pad}" y="{h - 10}" font-size="12" text-anchor="end">{_date(x1)}</text>',
    ]
    legend = []
    for n, (name, s) in enumerate(sorted(series.items())):
        color = COLORS[n % len(COLORS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>')
        legend.append(f'<span style="color:{color}">■</span> {html.escape(name)}')
    parts.append("</svg>")
    return "".join(parts) + '<div class="legend">' + " &nbsp; ".join(legend) + "</div>"


def cumulative_r(result: ReplayResult) -> dict[str, list[tuple[int, float]]]:
    """Running R total per strategy in closing order, for the report's cumulative chart."""
    closed = np.flatnonzero(result.result >= 0)
    closed = closed[np.argsort(result.closed_ms[closed], kind="stable")]
    series: dict[str, list[tuple[int, float]]] = {}
    for code in np.unique(result.strategy[closed]).tolist():
        rows = closed[result.strategy[closed] == code]
        series[result.names[code]] = list(
            zip(result.closed_ms[rows].tolist(), np.cumsum(result.r[rows]).tolist(), strict=True)
        )
    return series


def price_chart(result: ReplayResult, symbol: str) -> str:
    """Inline SVG of one symbol's closes with signal markers, so the report needs no plotting library."""
    if symbol not in result.charts:
        return f"<p>No candles for {html.escape(symbol)}.</p>"
    xs, ys, lo, hi = result.charts[symbol]
    w, h, pad = 900, 360, 50
    x0, x1 = xs[0], xs[-1] or 1
    hi = hi if hi > lo else lo + 1

    def sx(x: float) -> float:
        return pad + (x - x0) / max(1, x1 - x0) * (w - 2 * pad)

    def sy(y: float) -> float:
        return h - pad - (y - lo) / (hi - lo) * (h - 2 * pad)

    parts = [
        f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">'
        f"<title>{html.escape(symbol)}</title>",
        '<polyline fill="none" stroke="#444" stroke-width="1" points="'
        + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys, strict=True))
        + '"/>',
    ]
    code = result.symbols.index(symbol)
    rows = np.flatnonzero((result.symbol == code) & ~result.kind)
    for t, name, sign, entry in zip(
        result.t[rows].tolist(),
        result.strategy[rows].tolist(),
        result.sign[rows].tolist(),
        result.entry[rows].tolist(),
        strict=True,
    ):
        x, y = sx(t), sy(entry)
        up = sign > 0
        color = "#2ca02c" if up else "#d62728"
        tri = (
            f"{x:.1f},{y - 6:.1f} {x - 4:.1f},{y + 2:.1f} {x + 4:.1f},{y + 2:.1f}"
            if up
            else f"{x:.1f},{y + 6:.1f} {x - 4:.1f},{y - 2:.1f} {x + 4:.1f},{y - 2:.1f}"
        )
        side = "LONG" if up else "SHORT"
        tip = html.escape(f"{iso_utc(t)} {result.names[name]} {side} @ {entry:g}")
        parts.append(f'<polygon points="{tri}" fill="{color}"><title>{tip}</title></polygon>')
    parts.append(
        f'<text x="{pad}" y="{pad - 10}" font-size="12">{html.escape(symbol)} close '
        f"({lo:.8g} … {hi:.8g}); ▲ LONG, ▼ SHORT</text></svg>"
    )
    return "".join(parts)


def render_html(result: ReplayResult, doc: dict[str, Any], symbol: str | None) -> str:
    """The self-contained HTML report (inline CSS and SVG) that can be mailed or opened offline."""
    syms = sorted(result.charts)
    symbol = symbol if symbol in syms else (syms[0] if syms else None)
    rows = []
    for name, r in [*doc["strategies"].items(), ("consensus", doc["consensus"])]:
        if r.get("skipped"):
            rows.append(
                f"<tr><td>{html.escape(name)}</td>"
                f"<td colspan=9>skipped: {html.escape(r['skipped'])}</td></tr>"
            )
            continue
        cells = [
            r["signals"],
            r["tp1"],
            r["tp2"],
            r["tp3"],
            r["sl"],
            r["expired"],
            "-" if r["win_rate"] is None else f"{100 * r['win_rate']:.1f}%",
            "-" if r["avg_r"] is None else f"{r['avg_r']:+.2f}",
            "-" if r["expectancy_pct"] is None else f"{r['expectancy_pct']:+.3f}%",
        ]
        rows.append(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    period = ""
    if result.start_ms is not None:
        period = f"from {_date(result.start_ms)}" + (f" to {_date(result.end_ms)}" if result.end_ms else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Replay report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:960px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}
.legend{{font-size:13px;margin:4px 0 24px}}</style></head><body>
<h1>Replay report</h1>
<p>{html.escape(period)} · {result.n_signals} signals, {result.n_consensus} consensus ·
{doc["evaluations"]:,} candle·strategy evaluations</p>
<h2>Per strategy</h2>
<table><tr><th>strategy</th><th>signals</th><th>TP1</th><th>TP2</th><th>TP3</th><th>SL</th><th>expired</th>
<th>win rate</th><th>avg R</th><th>expectancy</th></tr>{"".join(rows)}</table>
<h2>Cumulative R by strategy</h2>
{_polyline_chart(cumulative_r(result), "Cumulative R", "cumulative R")}
<h2>{html.escape(symbol or "")} with signals</h2>
{price_chart(result, symbol) if symbol else "<p>No data.</p>"}
</body></html>
"""
