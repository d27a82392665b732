"""Live: between candle closes the engine checks open signals against the ticker (real ccxt,
the exchange emulator on loopback), so a target hit is reported without waiting for the close."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import orjson

from engine.app import Engine
from engine.clock import RealClock
from engine.config import load_config
from engine.plugins.instance import build_instances
from engine.plugins.registry import Registry
from tests.support.emulator import BinanceEmulator


async def test_open_signal_hits_its_target_on_the_ticker(tmp_path: Path) -> None:
    async with BinanceEmulator(RealClock(), ("BTC/USDT", "ETH/USDT")) as emu:
        url = f"{emu.url}/api/v3/ticker/24hr"
        async with aiohttp.ClientSession() as http, http.get(url, params={"symbol": "BTCUSDT"}) as r:
            last = float((await r.json())["lastPrice"])
        probes = sum(n for path, n in emu.requests.items() if "ticker" in path)
        cfg, state = tmp_path / "config", tmp_path / "state"
        (cfg / "strategies").mkdir(parents=True)
        (cfg / "engine.toml").write_text(
            f'[market]\nsource = "exchange"\napi_url = "{emu.url}"\n[server]\nenabled = false\n'
            "[outcomes]\nticker_seconds = 0.5\n[sinks.console]\nenabled = false\n"
        )
        # a 1h strategy: no candle closes during the test, only the ticker can move the signal
        (cfg / "strategies" / "psar.toml").write_text('symbols = ["ETH/USDT"]\ntimeframe = "1h"\n')
        state.mkdir(mode=0o700)
        now_ms = int(RealClock().now() * 1000)
        position = {
            "signal_id": "abc123",
            "strategy": "psar",
            "symbol": "BTC/USDT",
            "timeframe": "1h",
            "direction": "LONG",
            "entry": last * 0.99,
            "stop_loss": last * 0.9,
            "take_profits": [last * 0.995, last * 2],
            "opened_ms": now_ms,  # opened now: no candle closed since, only the ticker can move it
            "last_seen_ms": now_ms,
            "reached": 0,
        }
        doc = {"version": 1, "saved_at": 0.0, "open_signals": [position]}
        (state / "engine.json").write_bytes(orjson.dumps(doc))
        (state / "engine.json").chmod(0o600)

        config, problems = load_config(cfg)
        assert config is not None and not problems
        instances, _ = build_instances(config, Registry.discover())
        engine = Engine(config, instances, state_dir=state)
        run = asyncio.create_task(engine.run())
        journal = state / "signals.jsonl"

        async def outcome() -> dict:  # type: ignore[type-arg]
            while True:
                if journal.exists():
                    for line in journal.read_text().splitlines():
                        rec = json.loads(line)
                        if rec.get("kind") == "outcome":
                            return rec  # type: ignore[no-any-return]
                await asyncio.sleep(0.1)

        try:
            rec = await asyncio.wait_for(outcome(), 20)
        finally:
            engine.request_stop()
            await asyncio.wait_for(run, 30)
        assert rec["signal_id"] == "abc123" and rec["event"] == "TP1" and rec["final"] is False, rec
        assert rec["bar_close_ms"] >= now_ms  # reported between closes, at the time of the ticker
        assert sum(n for path, n in emu.requests.items() if "ticker" in path) > probes, emu.requests
