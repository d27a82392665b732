"""Faults a test switches on before a call: what a misbehaving exchange looks like on the wire.

A test sets fields on `emulator.faults`; each applies to the requests that follow (only to
`path` when it is set) until it is used up or reset:

    fail_next_n, fail_status, retry_after   next N requests answer that status (a 418 also bans)
    malformed_next_n, malformed            next N answers are truncated JSON, HTML or wrong-shaped
    delay_s                                real delay before answering (the client's timeout is real)
    candles                                open time → what is wrong with that kline row
    outage = "503"                         every request answers 503 (`go_down()` refuses connections)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

CandleFault = Literal["nan", "gap", "duplicate", "out_of_order", "high_below_low", "negative_volume"]
Malformed = Literal["truncated", "html", "wrong_shape"]


@dataclass
class Faults:
    path: str | None = None
    fail_next_n: int = 0
    fail_status: int = 500
    retry_after: float | None = None
    malformed_next_n: int = 0
    malformed: Malformed = "truncated"
    delay_s: float = 0.0
    candles: dict[int, CandleFault] = field(default_factory=dict)
    outage: Literal["503"] | None = None

    def applies(self, path: str) -> bool:
        return self.path is None or self.path == path


def apply_candle_faults(rows: list[list[Any]], faults: dict[int, CandleFault]) -> list[list[Any]]:
    """Kline rows with the requested damage; rows keep Binance's string fields."""
    if not faults:
        return rows
    out: list[list[Any]] = []
    held: list[Any] | None = None
    for row in rows:
        fault = faults.get(int(row[0]))
        if fault == "gap":
            continue
        if fault == "nan":
            row = [row[0], row[1], "NaN", row[3], "NaN", *row[5:]]
        elif fault == "high_below_low":
            row = [row[0], row[1], f"{float(row[3]) * 0.5:.8f}", *row[3:]]
        elif fault == "negative_volume":
            row = [*row[:5], f"{-float(row[5]):.8f}", *row[6:]]
        elif fault == "out_of_order":
            if held is not None:
                out.append(held)
            held = row  # sent after the next row
            continue
        out.append(row)
        if fault == "duplicate":
            out.append(list(row))
        if held is not None and held is not row:
            out.append(held)
            held = None
    if held is not None:
        out.append(held)
    return out


def malformed_body(kind: Malformed, real: bytes) -> tuple[str, str]:
    """(body, content type) of a broken answer built from the real one."""
    if kind == "truncated":
        return real[: max(1, len(real) // 2)].decode(errors="replace"), "application/json"
    if kind == "html":
        return "<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"
    return json.dumps({"unexpected": True, "data": None}), "application/json"
