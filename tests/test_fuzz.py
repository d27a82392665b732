"""Hypothesis fuzzing of the edges where outside data enters: the config loader, every plugin's
parameters, candle rows, and trade / order-book / ticker / funding structures.

Every input must give either a valid result or a clean, located error — never an unhandled
exception.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import load_config
from engine.errors import BadResponse, ConfigProblem
from engine.market.ccxt_parse import to_funding, to_order_book, to_ticker, to_trades
from engine.market.validate import validate_rows
from engine.metrics import Metrics
from engine.plugins.instance import build_instances
from engine.plugins.registry import Registry

KEYS = st.sampled_from(
    [
        "engine",
        "market",
        "server",
        "consensus",
        "sinks",
        "risk",
        "outcomes",
        "symbols",
        "timeframe",
        "period",
        "cooldown",
        "params",
        "enabled",
        "plugin",
        "port",
        "host",
        "speed",
        "weights",
        "source",
        "api_url",
        "threshold",
        "x",
        "state_dir",
        "log_level",
        "telegram",
        "webhook",
        "chat_id",
        "url",
    ]
)
SCALARS = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=20),
    st.sampled_from(
        ["5m", "15m", "candle", "ETH/BTC", "replay", "http://127.0.0.1:1", "psar", "orb", "mtf", "most"]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=12,
)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "0.0"
    if isinstance(v, str):
        return '"' + v.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f'"{k}" = {toml_value(x)}' for k, x in v.items()) + "}"


def toml_doc(d: dict[str, Any]) -> str:
    return "\n".join(f'"{k}" = {toml_value(v)}' for k, v in d.items()) + "\n"


REGISTRY = Registry.discover()


def check(config_dir: Path) -> None:
    config, problems = load_config(config_dir)
    if config is None:
        assert problems and all(isinstance(p, ConfigProblem) and p.file for p in problems)
        return
    assert problems == []
    # then what `engine check` does next: every plugin's own params model and constructor
    instances, inst_problems = build_instances(config, REGISTRY, include_disabled=True)
    assert all(isinstance(p, ConfigProblem) and p.file for p in inst_problems)
    assert len(instances) + len({p.file for p in inst_problems}) == len(config.strategies)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(engine=st.dictionaries(KEYS, VALUES, max_size=5), strategy=st.dictionaries(KEYS, VALUES, max_size=6))
def test_config_loader_never_crashes_on_structured_input(
    engine: dict[str, Any], strategy: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "strategies").mkdir()
        (root / "engine.toml").write_text(toml_doc(engine))
        (root / "strategies" / "fuzz.toml").write_text(toml_doc(strategy))
        check(root)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_config_loader_never_crashes_on_garbage_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "strategies").mkdir()
        (root / "engine.toml").write_bytes(raw)
        (root / "strategies" / "x.toml").write_bytes(raw[::-1])
        check(root)


CELL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**63), 2**63),
    st.none(),
    st.text(max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(CELL, min_size=0, max_size=8), max_size=30))
def test_candle_rows_give_valid_candles_or_nothing(rows: list[list[Any]]) -> None:
    candles = validate_rows(rows, "binance", "ETH/BTC", "5m", Metrics(), logging.getLogger("fuzz"))
    n = len(candles)
    if n:
        arrays = (candles.open, candles.high, candles.low, candles.close, candles.volume)
        assert all(np.isfinite(a).all() for a in arrays)
        assert (np.diff(candles.ts) > 0).all()
        assert (candles.high >= np.maximum(candles.open, candles.close)).all()
        assert (candles.low <= np.minimum(candles.open, candles.close)).all()
        assert (candles.volume >= 0).all()


PARAM_KEYS = st.sampled_from(
    [
        "warmup",
        "window",
        "adx_threshold",
        "stages",
        "lookback",
        "atr_mode",
        "ema_period",
        "atr_mult",
        "preset",
        "min_base_conf",
        "higher_timeframes",
        "pivot_length",
        "profile_bins",
        "acceleration",
        "maximum",
        "bogus",
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plugin=st.sampled_from(sorted(REGISTRY.names())),
    params=st.dictionaries(PARAM_KEYS, VALUES, max_size=4),
    timeframe=st.sampled_from(["1m", "5m", "15m", "1h", "4h", "1d", "7m"]),
)
def test_every_plugin_validates_arbitrary_params_cleanly(
    plugin: str, params: dict[str, Any], timeframe: str
) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "strategies").mkdir()
        body = f'plugin = "{plugin}"\nsymbols = ["ETH/BTC"]\ntimeframe = "{timeframe}"\n'
        if params:
            body += "[params]\n" + toml_doc(params)
        (root / "strategies" / "fuzz.toml").write_text(body)
        check(root)


ANY = st.recursive(
    st.one_of(CELL, st.booleans(), st.sampled_from(["buy", "sell", "NaN", "1e308", "-1", "0.1"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
TRADE = st.fixed_dictionaries(
    {"timestamp": CELL, "price": CELL, "amount": CELL, "side": st.sampled_from(["buy", "sell", None, "x"])}
)
LEVEL = st.lists(CELL, min_size=0, max_size=3)


@pytest.mark.filterwarnings("error")  # a numpy cast warning is a silently wrong value
@settings(max_examples=300, deadline=None)
@given(st.one_of(ANY, st.lists(st.one_of(TRADE, ANY), max_size=20)))
def test_trades_parse_to_clean_arrays_or_a_bad_response(raw: Any) -> None:
    try:
        trades, dropped = to_trades(raw, "fuzz")
    except BadResponse:
        return
    assert dropped >= 0
    assert np.isfinite(trades.price).all() and (trades.price > 0).all() and (trades.amount >= 0).all()
    assert (np.diff(trades.ts) >= 0).all()


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        ANY,
        st.fixed_dictionaries(
            {"bids": st.lists(LEVEL, max_size=8), "asks": st.lists(LEVEL, max_size=8), "timestamp": CELL}
        ),
    ),
    st.integers(1, 10),
)
def test_order_book_parses_to_a_sane_book_or_a_bad_response(raw: Any, depth: int) -> None:
    try:
        book, _ = to_order_book(raw, depth, "fuzz")
    except BadResponse:
        return
    for side in (book.bids, book.asks):
        assert side.shape[0] <= depth and np.isfinite(side).all() and (side > 0).all()
    assert (np.diff(book.bids[:, 0]) <= 0).all() and (np.diff(book.asks[:, 0]) >= 0).all()
    if len(book.bids) and len(book.asks):
        assert book.bids[0, 0] < book.asks[0, 0]


@settings(max_examples=200, deadline=None)
@given(ANY)
def test_ticker_and_funding_parse_or_raise_bad_response(raw: Any) -> None:
    for parse in (to_ticker, to_funding):
        with contextlib.suppress(BadResponse):
            parse(raw, "fuzz")
