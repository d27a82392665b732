"""`engine run` as a user runs it: a subprocess on a replay config, probed over HTTP, stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from tests.support.running import DATA, ROOT, free_port, get, journal, wait_for


def write_config(d: Path, port: int) -> None:
    (d / "strategies").mkdir(parents=True)
    (d / "engine.toml").write_text(
        f"""
[engine]
log_level = "INFO"
shutdown_grace_seconds = 5
[market]
source = "replay"
data_dir = "{DATA}"
speed = 6000
[server]
port = {port}
[consensus]
threshold = 1.5
"""
    )
    syms = '["ETH/BTC", "LTC/BTC", "XMR/BTC"]'
    (d / "strategies" / "psar.toml").write_text(f"symbols = {syms}\ncooldown = 86400\n")
    (d / "strategies" / "most.toml").write_text(f"symbols = {syms}\n")
    # a plugin that is not installed: reported and skipped, the others still run
    (d / "strategies" / "ghost.toml").write_text('plugin = "ghost_plugin"\nsymbols = ["ETH/BTC"]\n')


def start(config: Path, state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", "--config", str(config), "--state", str(state)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def test_run_probe_stop_restart(tmp_path: Path) -> None:
    port = free_port()
    config, state = tmp_path / "config", tmp_path / "state"
    write_config(config, port)
    base = f"http://127.0.0.1:{port}"

    proc = start(config, state)
    try:
        wait_for(lambda: get(base + "/health")[0] == 200, 30, "/health 200")
        code, body = wait_for(lambda: (r := get(base + "/ready"))[0] == 200 and r, 30, "/ready 200")
        ready = json.loads(body)
        assert ready["ready"] is True and ready["instances"] == 2
        signals = wait_for(
            lambda: [r for r in journal(state) if r["strategy"] == "psar"], 60, "a psar signal"
        )
        first = signals[0]
        assert first["direction"] in ("LONG", "SHORT") and first["symbol"] in (
            "ETH/BTC",
            "LTC/BTC",
            "XMR/BTC",
        )
        assert first["entry"] > 0 and len(first["take_profits"]) >= 2
        code, metrics = get(base + "/metrics")
        assert code == 200
        assert 'engine_plugin_runs_total{plugin="psar"}' in metrics
        assert "engine_signals_total" in metrics
        assert 'engine_plugin_load_errors_total{plugin="ghost"} 1.0' in metrics
    finally:
        rc, out, err = stop(proc)
    assert rc == 0, err[-3000:]
    assert "engine stopped cleanly" in err
    assert "skipping" in err and "ghost_plugin" in err
    assert "psar" in out and ("LONG" in out or "SHORT" in out)  # readable console lines

    state_file = state / "engine.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    saved = json.loads(state_file.read_text())
    cooldowns = {k: v for k, v in saved["cooldowns"].items() if k.startswith("psar|")}
    assert cooldowns, "psar signals must have left cooldowns in the state file"
    n_before = len(journal(state))
    stats = subprocess.run(
        [sys.executable, "-m", "engine.cli", "stats", "--config", str(config), "--state", str(state)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stats.returncode == 0, stats.stderr
    header, *rows = stats.stdout.splitlines()
    assert header.split()[:3] == ["STRATEGY", "SIGNALS", "OPEN"]
    psar_row = next(r.split() for r in rows if r.startswith("psar"))
    assert int(psar_row[1]) == sum(
        1 for r in journal(state) if r.get("strategy") == "psar" and r.get("kind") == "signal"
    )

    # Restart: the replay starts over from the same bar; cooldowns restored from state must keep
    # psar from repeating any signal inside its 1-day cooldown.
    proc = start(config, state)
    try:
        wait_for(lambda: get(base + "/ready")[0] == 200, 30, "/ready after restart")
        time.sleep(2)
    finally:
        rc, out, err = stop(proc)
    assert rc == 0, err[-3000:]
    assert "restored" in err and "cooldowns" in err
    after = json.loads(state_file.read_text())
    # outcome statistics and tracked signals survive the restart (they are only ever added to)
    before_stats, after_stats = saved["outcomes"]["stats"]["psar"], after["outcomes"]["stats"]["psar"]
    assert after_stats["signals"] >= before_stats["signals"] > 0
    closed = ("tp1", "tp2", "tp3", "sl", "expired")
    assert sum(after_stats[k] for k in closed) >= sum(before_stats[k] for k in closed)
    # a signal still open at the first stop is followed on: still open, or closed after the restart
    open_before = {p["signal_id"] for p in saved["open_signals"]}
    assert open_before, "the first run should leave some signals open"
    still_open = {p["signal_id"] for p in after["open_signals"]}
    closed_later = {
        r["signal_id"] for r in journal(state)[n_before:] if r["kind"] == "outcome" and r["final"]
    }
    assert open_before <= still_open | closed_later
    for rec in journal(state)[n_before:]:
        if rec["strategy"] != "psar" or rec["kind"] != "signal":
            continue
        key = f"psar|{rec['symbol']}|{rec['timeframe']}|{rec['direction']}"
        if key in cooldowns:
            assert rec["bar_close_ms"] / 1000 >= cooldowns[key], f"cooldown not honoured after restart: {rec}"


def test_second_engine_on_same_state_dir_exits_with_clear_message(tmp_path: Path) -> None:
    port = free_port()
    config, state = tmp_path / "config", tmp_path / "state"
    write_config(config, port)
    first = start(config, state)
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/health")[0] == 200, 30, "first engine up")
        second = subprocess.run(
            [sys.executable, "-m", "engine.cli", "run", "--config", str(config), "--state", str(state)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "ENGINE__SERVER__PORT": str(free_port())},
        )
        assert second.returncode == 1
        assert "another engine" in second.stderr
    finally:
        stop(first)


def test_check_and_plugins_commands(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "engine.cli", "check", "--config", str(ROOT / "config")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and ok.stdout.strip() == "OK"
    bad = tmp_path / "bad"
    (bad / "strategies").mkdir(parents=True)
    (bad / "strategies" / "psar.toml").write_text('symbols = ["ETH/BTC"]\n[params]\nadx_threshold = "high"\n')
    (bad / "strategies" / "ghost.toml").write_text('symbols = ["ETH/BTC"]\n')
    res = subprocess.run(
        [sys.executable, "-m", "engine.cli", "check", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert f"{bad}/strategies/psar.toml: params.adx_threshold:" in res.stderr
    assert f"{bad}/strategies/ghost.toml: plugin: no plugin named 'ghost'" in res.stderr
    table = subprocess.run(
        [sys.executable, "-m", "engine.cli", "plugins", "--config", str(ROOT / "config")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["INSTANCE", "PLUGIN", "ENABLED"]
    assert any(line.split()[:3] == ["psar", "psar", "yes"] and "built-in" in line for line in lines)
