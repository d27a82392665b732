"""Crash consistency: SIGKILL the engine again and again while it writes state; it always
restarts on a loadable state file and never loses the cooldowns it had saved."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.state import StateStore
from tests.support.running import ROOT

ROUNDS = 6


def config(d: Path) -> Path:
    (d / "strategies").mkdir(parents=True)
    (d / "engine.toml").write_text(
        f'[market]\nsource = "replay"\ndata_dir = "{ROOT / "data" / "sample"}"\nspeed = 0\n'
        "[server]\nenabled = false\n[consensus]\nthreshold = 1.5\n[sinks.console]\nenabled = false\n"
    )
    syms = '["ETH/BTC", "LTC/BTC", "XMR/BTC", "ADA/BTC"]'
    # a long cooldown, so every signal leaves a cooldown that must survive every crash
    (d / "strategies" / "candlestick.toml").write_text(f"symbols = {syms}\ncooldown = 2592000\n")
    (d / "strategies" / "psar.toml").write_text(f"symbols = {syms}\ncooldown = 2592000\n")
    return d


def test_repeated_sigkill_during_state_writes(tmp_path: Path) -> None:
    cfg, state = config(tmp_path / "config"), tmp_path / "state"
    rng = random.Random(7)
    seen: dict[str, float] = {}
    for _ in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "--config", str(cfg), "--state", str(state)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # full-speed replay: signals (and so state saves) come every few milliseconds
        time.sleep(1.5 + rng.random() * 1.5)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
        assert "moved aside" not in err and "corrupt" not in err.lower(), err[-2000:]

        store = StateStore(state)
        loaded = store.load()  # must parse: never half-written, never moved aside
        assert not list(state.glob("engine.json.corrupt-*"))
        for key, until in seen.items():
            assert loaded.cooldowns.get(key, 0.0) >= until, f"cooldown {key} lost after a crash"
        seen.update(loaded.cooldowns)
        # the journal is append-only: every line but possibly a torn last one parses
        lines = (
            (state / "signals.jsonl").read_text().splitlines() if (state / "signals.jsonl").exists() else []
        )
        for line in lines[:-1]:
            json.loads(line)
    assert seen, "the runs must have produced cooldowns for the test to mean anything"
