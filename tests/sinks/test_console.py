"""The console line: everything a user needs to act on a signal, aligned, one line each."""

from __future__ import annotations

import io
from typing import Any

from engine.signals.model import Direction, Signal
from engine.sinks.base import SinkEvent
from engine.sinks.console import ConsoleSink, format_consensus, format_signal


def make_signal(**overrides: Any) -> Signal:
    fields: dict[str, Any] = {
        "id": "0123456789abcdef",
        "strategy": "psar",
        "symbol": "ETH/BTC",
        "direction": Direction.LONG,
        "timeframe": "5m",
        "exchange": "binance",
        "entry": 0.095012,
        "stop_loss": 0.094101,
        "take_profits": (0.0959, 0.0963, 0.0968),
        "created_at": "2018-01-12T10:35:00Z",
        "bar_close_ms": 1_515_753_300_000,
    }
    fields.update(overrides)
    return Signal(**fields)


def test_signal_line_has_what_a_user_acts_on() -> None:
    line = format_signal(make_signal())
    assert line.startswith("2018-01-12T10:35:00Z  psar ")
    for part in (
        "ETH/BTC",
        " 5m ",
        "LONG",
        "entry 0.095012",
        "SL 0.094101",
        "TP 0.095900 / 0.096300 / 0.096800",
    ):
        assert part in line
    # R:R to TP1: (0.0959 - 0.095012) / (0.095012 - 0.094101)
    assert "R:R 0.97" in line
    assert "conf" not in line
    assert "\n" not in line


def test_confidence_is_shown_when_known() -> None:
    assert "conf 0.75" in format_signal(make_signal(confidence=0.75))


def test_columns_line_up_across_strategies_and_directions() -> None:
    a = format_signal(make_signal())
    b = format_signal(
        make_signal(strategy="most", symbol="BTC/USDT", direction=Direction.SHORT, timeframe="15m")
    )
    assert a.index("entry") == b.index("entry")


def test_prices_keep_eight_significant_digits_without_float_noise() -> None:
    line = format_signal(
        make_signal(entry=43251.52345, stop_loss=42100.0, take_profits=(0.1 + 0.2 + 44000.0,)),
    )
    assert "entry 43251.523" in line
    assert "SL 42100.000" in line
    assert "TP 44000.300" in line
    tiny = format_signal(make_signal(entry=0.000012345678, stop_loss=0.0000121, take_profits=(0.0000126,)))
    assert "entry 0.000012345678" in tiny
    assert "e-0" not in tiny


FLAT_CONSENSUS: dict[str, Any] = {
    "symbol": "ETH/BTC",
    "direction": "LONG",
    "timeframe": "5m",
    "score": 3.75,
    "label": "HIGH",
    "entry": 0.095012,
    "stop_loss": 0.094101,
    "take_profits": [0.0959, 0.0963],
    "contributors": [
        {"strategy": "psar", "weight": 0.75, "age_minutes": 3},
        {"strategy": "most", "weight": 0.75, "age_minutes": 10.2},
        {"strategy": "harmonic", "weight": 2.0, "age_minutes": 0},
    ],
    "kind": "new",
}


def test_consensus_line() -> None:
    line = format_consensus(FLAT_CONSENSUS)
    assert line.startswith("CONSENSUS ETH/BTC 5m LONG HIGH score 3.75")
    assert "entry 0.095012  SL 0.094101  TP 0.095900 / 0.096300" in line
    assert line.endswith("← psar(0.75, 3m), most(0.75, 10m), harmonic(2, 0m)")


def test_consensus_update_is_marked() -> None:
    assert format_consensus({**FLAT_CONSENSUS, "kind": "update"}).startswith("CONSENSUS UPDATE ETH/BTC")


def test_consensus_signal_record_shape_is_understood() -> None:
    """The aggregator emits a consensus Signal; its record keeps score and contributors in metadata."""
    record = make_signal(
        strategy="consensus",
        kind="consensus",
        take_profits=(0.0959, 0.0963),
        confidence=53.6,
        metadata={
            "alert": "update",
            "score": 3.75,
            "label": "HIGH",
            "contributors": FLAT_CONSENSUS["contributors"][:2],
        },
    ).to_record()
    line = format_consensus(record)
    assert line.startswith("2018-01-12T10:35:00Z  CONSENSUS UPDATE ETH/BTC 5m LONG HIGH score 3.75")
    assert "← psar(0.75, 3m), most(0.75, 10m)" in line


def test_consensus_with_missing_fields_does_not_raise() -> None:
    assert format_consensus({"symbol": "ETH/BTC"}).startswith("CONSENSUS ETH/BTC ? ?")


async def test_console_sink_prints_one_flushed_line_per_event() -> None:
    class Recording(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1
            super().flush()

    out = Recording()
    sink = ConsoleSink(out)
    sig = make_signal()
    await sink.send(SinkEvent("signal", sig.to_record(), format_signal(sig)))
    await sink.send(SinkEvent("outcome", {"id": sig.id}, "OUTCOME psar ETH/BTC\nTP1 hit"))
    await sink.close()
    lines = out.getvalue().splitlines()
    assert lines == [format_signal(sig), "OUTCOME psar ETH/BTC TP1 hit"]
    assert out.getvalue().endswith("\n")
    assert out.flushes >= 2
    assert sink.name == "console"


def test_outcome_line_says_what_was_hit_and_the_r() -> None:
    from engine.sinks.console import format_outcome

    line = format_outcome(
        {
            "at": "2018-01-12T05:00:00Z",
            "strategy": "psar",
            "symbol": "ETH/BTC",
            "timeframe": "5m",
            "direction": "LONG",
            "event": "SL",
            "result": "TP1",
            "final": True,
            "price": 0.0951,
            "r_multiple": 2.0,
            "pnl_percent": -1.5,
        }
    )
    assert line.startswith("2018-01-12T05:00:00Z  OUTCOME psar ETH/BTC 5m LONG")
    assert "SL (result TP1) at 0.0951" in line and "+2.00R" in line and "(closed)" in line
