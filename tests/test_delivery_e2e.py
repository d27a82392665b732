"""Nothing is lost: `engine run` against a webhook receiver that is down, then up after a restart.

Every journal record of the first run must end up either delivered or in the dead-letter file;
after the restart, the dead letters are redelivered (signed) and the file is emptied.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from engine.clock import RealClock
from tests.support.webhook_server import SECRET, WebhookReceiver

ROOT = Path(__file__).resolve().parents[1]
BARS = 900


def setup(tmp: Path, url: str, *, exit_at_end: bool) -> tuple[Path, Path]:
    data, config = tmp / "data", tmp / "config"
    if not data.exists():
        data.mkdir()
        lines = (ROOT / "data" / "sample" / "binance_ETH-BTC_5m.csv").read_text().splitlines()
        (data / "binance_ETH-BTC_5m.csv").write_text("\n".join(lines[: BARS + 1]) + "\n")
    (config / "strategies").mkdir(parents=True, exist_ok=True)
    (config / "engine.toml").write_text(
        f"""
[engine]
log_level = "INFO"
[market]
source = "replay"
data_dir = "{data}"
speed = 0
exit_at_end = {"true" if exit_at_end else "false"}
[server]
enabled = false
[sinks.console]
enabled = false
[sinks.webhook]
enabled = true
url = "{url}"
max_attempts = 1
timeout_seconds = 2
"""
    )
    (config / "strategies" / "psar.toml").write_text('symbols = ["ETH/BTC"]\ncooldown = 0\n')
    return config, tmp / "state"


async def engine(config: Path, state: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "ENGINE_WEBHOOK_SECRET": SECRET}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli",
        "run",
        "--config",
        str(config),
        "--state",
        str(state),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


def lines(path: Path) -> list[dict]:  # type: ignore[type-arg]
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


async def test_outage_dead_letters_everything_and_restart_redelivers(tmp_path: Path) -> None:
    async with WebhookReceiver(RealClock()) as hook:
        hook.outage = True
        config, state = setup(tmp_path, hook.url, exit_at_end=True)
        proc = await engine(config, state)
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()[-2000:]

        journal = lines(state / "signals.jsonl")
        dead = lines(state / "dead-letter.jsonl")
        assert journal, "the slice must produce signals"
        assert hook.received == []
        assert len(dead) == len(journal)  # every record: journaled and, undeliverable, dead-lettered
        assert all(d["sink"] == "webhook" for d in dead)
        assert SECRET not in (state / "dead-letter.jsonl").read_text()
        first_ids = {r.get("id") or (r["signal_id"], r["event"]) for r in journal}

        hook.outage = False
        config, state = setup(tmp_path, hook.url, exit_at_end=False)
        proc = await engine(config, state)
        try:

            async def redelivered() -> None:
                while True:
                    got = {
                        b["record"].get("id") or (b["record"]["signal_id"], b["record"]["event"])
                        for b in hook.received
                    }
                    if first_ids <= got:
                        return
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(redelivered(), 60)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert hook.bad_signatures == 0
        assert any(h.get("X-Redelivery") == "1" for h in hook.headers)
        assert lines(state / "dead-letter.jsonl") == []
