"""Soak (issue 7; not CI): `engine run` live against the exchange emulator for N minutes while
the exchange misbehaves on a schedule and the webhook receiver fails part of the time.

At the end every signal in the journal must have been delivered or be in the dead-letter file,
the emulator must have answered zero 418s, and the engine's RSS must stay flat.

    .venv/bin/python -m bench.soak --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.clock import RealClock
from tests.support.emulator import SAMPLE_DIR, BinanceEmulator, MarketBook
from tests.support.emulator.__main__ import USDT_BASES, csv_shift
from tests.support.webhook_server import SECRET, WebhookReceiver

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", status)
    return int(match.group(1)) / 1024 if match else 0.0


def write_config(d: Path, api_url: str, hook_url: str, symbols: list[str]) -> Path:
    cfg = d / "config"
    (cfg / "strategies").mkdir(parents=True)
    (cfg / "engine.toml").write_text(
        f"""
[engine]
log_level = "WARNING"
close_delay_seconds = 1
[market]
source = "exchange"
api_url = "{api_url}"
timeout_seconds = 3
max_retries = 2
[server]
enabled = false
[sinks.console]
enabled = false
[sinks.webhook]
enabled = true
url = "{hook_url}"
max_attempts = 2
timeout_seconds = 2
"""
    )
    syms = "[" + ", ".join(f'"{s}"' for s in symbols) + "]"
    # 1m candles: a close every minute gives the soak many ticks; cooldown 0 gives many signals
    for name in ("candlestick", "strat", "psar", "most", "volume"):
        (cfg / "strategies" / f"{name}.toml").write_text(
            f'symbols = {syms}\ntimeframe = "1m"\ncooldown = 0\n'
        )
    return cfg


async def fault_schedule(emu: BinanceEmulator, minutes: float, log: list[str]) -> None:
    """Outage, 429 storm, slow answers, malformed data: each for a while, in turn."""
    slot = minutes * 60 / 5
    await asyncio.sleep(slot)
    log.append(f"{time.strftime('%H:%M:%S')} outage (connections refused) for {slot / 2:.0f} s")
    await emu.go_down()
    await asyncio.sleep(slot / 2)
    await emu.come_back()
    await asyncio.sleep(slot / 2)
    log.append(f"{time.strftime('%H:%M:%S')} 429 storm: next 30 requests answer 429 Retry-After 5")
    emu.faults.fail_status, emu.faults.retry_after, emu.faults.fail_next_n = 429, 5.0, 30
    await asyncio.sleep(slot)
    emu.faults.fail_next_n = 0
    log.append(f"{time.strftime('%H:%M:%S')} slow answers (4 s, over the 3 s timeout) for {slot / 2:.0f} s")
    emu.faults.delay_s = 4.0
    await asyncio.sleep(slot / 2)
    emu.faults.delay_s = 0.0
    await asyncio.sleep(slot / 2)
    log.append(f"{time.strftime('%H:%M:%S')} malformed answers: next 20 truncated")
    emu.faults.malformed, emu.faults.malformed_next_n = "truncated", 20


async def flaky_receiver(hook: WebhookReceiver, stop: asyncio.Event) -> None:
    """The receiver fails about a third of the time, in bursts."""
    rng = random.Random(3)
    while not stop.is_set():
        hook.outage = rng.random() < 0.33
        await asyncio.sleep(5 + rng.random() * 10)
    hook.outage = False


async def soak(minutes: float) -> int:
    clock = RealClock()
    probe = MarketBook(clock, SAMPLE_DIR, seed=7)
    shift = csv_shift(probe.csv_range_ms()[0], int(clock.now() * 1000))
    spot = (*sorted(probe.csv_symbols), *(f"{b}/USDT" for b in USDT_BASES))
    # the bundled CSV markets are 5m only; the synthetic USDT markets serve any timeframe
    watched = [f"{b}/USDT" for b in USDT_BASES]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        async with BinanceEmulator(clock, spot, csv_shift_ms=shift) as emu, WebhookReceiver(clock) as hook:
            cfg = write_config(tmp, emu.url, hook.url, watched)
            state = tmp / "state"
            env = {**os.environ, "ENGINE_WEBHOOK_SECRET": SECRET}
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "engine.cli",
                "run",
                "--config",
                str(cfg),
                "--state",
                str(state),
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            events: list[str] = []
            stop = asyncio.Event()
            faults = asyncio.create_task(fault_schedule(emu, minutes, events))
            flaky = asyncio.create_task(flaky_receiver(hook, stop))
            samples: list[tuple[float, float]] = []
            t0 = time.monotonic()
            while time.monotonic() - t0 < minutes * 60:
                await asyncio.sleep(10)
                samples.append((time.monotonic() - t0, rss_mb(proc.pid)))
            stop.set()
            faults.cancel()
            await flaky
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 120)
            journal = [json.loads(x) for x in (state / "signals.jsonl").read_text().splitlines() if x.strip()]
            dead_path = state / "dead-letter.jsonl"
            dead = [json.loads(x) for x in dead_path.read_text().splitlines()] if dead_path.exists() else []

    def key(rec: dict[str, Any]) -> Any:
        return rec.get("id") or (rec.get("signal_id"), rec.get("event"))

    delivered = {key(b["record"]) for b in hook.received}
    dead_keys = {key(d["record"]) for d in dead if d.get("sink") == "webhook"}
    records = {key(r) for r in journal}
    missing = records - delivered - dead_keys
    first, last = samples[len(samples) // 5][1], samples[-1][1]
    print(f"soak: {minutes:g} min live against the emulator, {len(watched)} markets x 5 strategies on 1m")
    for line in events:
        print(f"  fault: {line}")
    print(f"  engine exit code {proc.returncode}")
    print(
        f"  journal records {len(records)}: delivered {len(records & delivered)}, "
        f"dead-lettered {len(records & dead_keys)}, neither {len(missing)} (target 0)"
    )
    print(
        f"  emulator answers: {dict(sorted(emu.statuses.items()))}; "
        f"418s: {emu.statuses.get(418, 0)} (target 0)"
    )
    print(
        f"  engine RSS: {samples[0][1]:.0f} MB at {samples[0][0]:.0f} s, {first:.0f} MB after warm-up, "
        f"{last:.0f} MB at the end, max {max(s for _, s in samples):.0f} MB"
    )
    if proc.returncode != 0:
        print(err.decode()[-2000:])
    return 0 if not missing and emu.statuses.get(418, 0) == 0 and proc.returncode == 0 else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args(argv)
    raise SystemExit(asyncio.run(soak(args.minutes)))


if __name__ == "__main__":
    main()
