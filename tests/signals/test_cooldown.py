"""Cooldowns run in candle time and only emitted signals start them."""

from __future__ import annotations

from engine.signals.cooldown import Cooldowns, cooldown_key


def test_blocks_inside_window_and_releases_after() -> None:
    cd = Cooldowns()
    key = cooldown_key("psar", "ETH/BTC", "5m", "LONG")
    assert not cd.blocked(key, 1000.0)
    cd.start(key, 1000.0, 600)
    assert cd.blocked(key, 1000.0)  # the same bar evaluated again after a restart
    assert cd.blocked(key, 1599.0)
    assert not cd.blocked(key, 1600.0)
    assert not cd.blocked(cooldown_key("psar", "ETH/BTC", "5m", "SHORT"), 1200.0)


def test_zero_cooldown_never_blocks_and_prune_forgets_expired() -> None:
    cd = Cooldowns()
    cd.start("a", 1000.0, 0)
    assert not cd.blocked("a", 1000.0)
    cd.start("b", 1000.0, 100)
    cd.prune(1200.0)
    assert len(cd) == 0


def test_snapshot_round_trip() -> None:
    cd = Cooldowns()
    cd.start("k", 50.0, 10)
    again = Cooldowns(cd.snapshot())
    assert again.blocked("k", 55.0)
