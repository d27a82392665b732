"""ccxt's unified ticker, trades, order book and funding structures, as engine snapshots.

ccxt fills a missing or unparsable field with None (or NaN for "NaN" strings) rather than
raising, so every field a strategy relies on is checked here, at the boundary: a snapshot
without a usable price is an unusable response (BadResponse, which the breaker counts), and
individual broken trades or book levels are dropped and counted, as candles are, so a strategy
never sees them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine.errors import BadResponse
from engine.market.candles import FloatArray
from engine.market.snapshots import Funding, OrderBook, Ticker, Trades

# timestamps beyond year 2262 do not fit int64 nanoseconds elsewhere; no exchange sends them
_MAX_MS = 2**53


def to_ticker(raw: object, where: str) -> Ticker:
    """`last` must be a positive finite price; bid and ask are optional (futures have none)."""
    data = _mapping(raw, where, "ticker")
    last = _number(data.get("last"))
    if last is None or last <= 0:
        raise BadResponse(f"{where}: ticker has no usable last price ({data.get('last')!r})")
    bid = _number(data.get("bid"))
    ask = _number(data.get("ask"))
    return Ticker(
        last=last,
        bid=bid if bid is not None and bid > 0 else None,
        ask=ask if ask is not None and ask > 0 else None,
        ts_ms=_int(data.get("timestamp"), where, "ticker timestamp"),
    )


def to_trades(raw: object, where: str) -> tuple[Trades, int]:
    """Trades oldest first, and how many rows were dropped for lacking a usable price, amount or side."""
    if not isinstance(raw, list):
        raise BadResponse(f"{where}: trades are not a list")
    ts: list[float] = []
    price: list[float] = []
    amount: list[float] = []
    buyer: list[bool] = []
    dropped = 0
    for item in raw:
        row = item if isinstance(item, Mapping) else {}
        t, p, a = _number(row.get("timestamp")), _number(row.get("price")), _number(row.get("amount"))
        side = row.get("side")
        if t is None or not 0 <= t < _MAX_MS or p is None or a is None or p <= 0 or a < 0:
            dropped += 1
            continue
        if side not in ("buy", "sell"):
            dropped += 1
            continue
        ts.append(t)
        price.append(p)
        amount.append(a)
        buyer.append(side == "buy")
    order = np.argsort(np.asarray(ts, dtype=np.float64), kind="stable")
    trades = Trades(
        ts=np.asarray(ts, dtype=np.float64)[order].astype(np.int64),
        price=np.asarray(price, dtype=np.float64)[order],
        amount=np.asarray(amount, dtype=np.float64)[order],
        buyer_taker=np.asarray(buyer, dtype=np.bool_)[order],
    )
    return trades, dropped


def to_order_book(raw: object, depth: int, where: str) -> tuple[OrderBook, int]:
    """The best `depth` levels per side and how many levels were dropped; a crossed book is unusable."""
    data = _mapping(raw, where, "order book")
    bids, bad_bids = _levels(data.get("bids"), descending=True)
    asks, bad_asks = _levels(data.get("asks"), descending=False)
    if not bids.shape[0] and not asks.shape[0]:
        raise BadResponse(f"{where}: order book has no levels")
    if bids.shape[0] and asks.shape[0] and bids[0, 0] >= asks[0, 0]:
        raise BadResponse(f"{where}: crossed order book (bid {bids[0, 0]} >= ask {asks[0, 0]})")
    ts = data.get("timestamp")
    book = OrderBook(
        bids=np.ascontiguousarray(bids[:depth]),
        asks=np.ascontiguousarray(asks[:depth]),
        ts_ms=_int(ts, where, "order book timestamp") if ts is not None else 0,
    )
    return book, bad_bids + bad_asks


def to_funding(raw: object, where: str) -> Funding:
    """The current funding rate (a fraction) and, when the exchange says, the next funding time."""
    data = _mapping(raw, where, "funding rate")
    rate = _number(data.get("fundingRate"))
    if rate is None:
        raise BadResponse(f"{where}: funding rate missing ({data.get('fundingRate')!r})")
    upcoming = data.get("fundingTimestamp") or data.get("nextFundingTimestamp")
    return Funding(
        rate=rate,
        ts_ms=_int(data.get("timestamp"), where, "funding timestamp"),
        next_funding_ms=_int(upcoming, where, "next funding time") if upcoming is not None else None,
    )


def _levels(raw: object, descending: bool) -> tuple[FloatArray, int]:
    """(price, amount) rows best first; non-finite, non-positive price or amount rows dropped (an
    empty level is a deletion in a diff stream, never liquidity in a snapshot)."""
    rows: list[tuple[float, float]] = []
    dropped = 0
    for level in raw if isinstance(raw, Sequence) and not isinstance(raw, str) else ():
        price = _number(level[0]) if isinstance(level, Sequence) and len(level) >= 2 else None
        amount = _number(level[1]) if price is not None else None
        if price is None or amount is None or price <= 0 or amount <= 0:
            dropped += 1
            continue
        rows.append((price, amount))
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    order = np.argsort(-arr[:, 0] if descending else arr[:, 0], kind="stable")
    return arr[order], dropped


def _mapping(raw: object, where: str, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise BadResponse(f"{where}: {what} is not an object")
    return raw


def _number(value: object) -> float | None:
    """A finite float, or None for anything else (None, NaN, text, bool)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: object, where: str, what: str) -> int:
    number = _number(value)
    if number is None:
        raise BadResponse(f"{where}: {what} missing ({value!r})")
    return int(number)
