"""Live reload with SIGHUP: valid changes apply without a restart, invalid ones keep the old config."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.config import load_config
from engine.plugins.instance import build_instances
from engine.plugins.registry import Registry
from engine.reload import plan_reload
from tests.support.running import ROOT, free_port, get, journal, wait_for

SYMS = '["ETH/BTC", "LTC/BTC"]'


def write(cfg: Path, port: int) -> None:
    (cfg / "strategies").mkdir(parents=True, exist_ok=True)
    (cfg / "engine.toml").write_text(
        f'[market]\nsource = "replay"\ndata_dir = "{ROOT / "data" / "sample"}"\nspeed = 1500\n'
        f"[server]\nport = {port}\n[consensus]\nthreshold = 1.5\n"
    )
    (cfg / "strategies" / "psar.toml").write_text(f"symbols = {SYMS}\ncooldown = 86400\n")
    (cfg / "strategies" / "most.toml").write_text(f"symbols = {SYMS}\n")


def start(cfg: Path, state: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`engine run` on this config and state directory, stderr captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", "--config", str(cfg), "--state", str(state)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def ready(port: int) -> dict:  # type: ignore[type-arg]
    return json.loads(get(f"http://127.0.0.1:{port}/ready")[1])


def test_plan_reload_classifies_instances(tmp_path: Path) -> None:
    write(tmp_path, 8080)
    reg = Registry.discover()
    old, _ = load_config(tmp_path)
    assert old is not None
    (tmp_path / "strategies" / "most.toml").write_text(f"symbols = {SYMS}\n[params]\natr_mult = 2.5\n")
    (tmp_path / "strategies" / "psar.toml").unlink()
    (tmp_path / "strategies" / "candlestick.toml").write_text(f"symbols = {SYMS}\n")
    (tmp_path / "engine.toml").write_text((tmp_path / "engine.toml").read_text().replace("8080", "9090"))
    new, problems = load_config(tmp_path)
    assert new is not None and not problems
    instances, _ = build_instances(new, reg)
    plan = plan_reload(old, new, instances)
    assert plan.added == ("candlestick",) and plan.removed == ("psar",) and plan.changed == ("most",)
    assert plan.needs_restart == ("server.port",)


def test_sighup_applies_changes_and_rejects_invalid_config(tmp_path: Path) -> None:
    port = free_port()
    cfg, state = tmp_path / "config", tmp_path / "state"
    write(cfg, port)
    proc = start(cfg, state)
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/ready")[0] == 200, 30, "ready")
        wait_for(lambda: any(r.get("strategy") == "psar" for r in journal(state)), 60, "a psar signal")

        # 1. an invalid file: the engine keeps running the old config and says why
        (cfg / "strategies" / "psar.toml").write_text(f"symbols = {SYMS}\n[params]\nadx_threshold = 'x'\n")
        proc.send_signal(signal.SIGHUP)
        bad = wait_for(lambda: (r := ready(port)["last_reload"]) and r, 20, "reload result")
        assert bad["ok"] is False and any("params.adx_threshold" in e for e in bad["errors"])
        assert ready(port)["instances"] == 2

        # 2. valid: disable most, add candlestick, retune psar
        (cfg / "strategies" / "psar.toml").write_text(
            f"symbols = {SYMS}\ncooldown = 86400\n[params]\nadx_threshold = 25\n"
        )
        (cfg / "strategies" / "most.toml").write_text(f"enabled = false\nsymbols = {SYMS}\n")
        (cfg / "strategies" / "candlestick.toml").write_text(f"symbols = {SYMS}\n")
        proc.send_signal(signal.SIGHUP)
        good = wait_for(lambda: (r := ready(port)["last_reload"]) and r["ok"] and r, 20, "successful reload")
        assert (
            good["added"] == ["candlestick"] and good["removed"] == ["most"] and good["changed"] == ["psar"]
        )
        assert ready(port)["instances"] == 2
        n = len(journal(state))
        wait_for(
            lambda: any(r.get("strategy") == "candlestick" for r in journal(state)[n:]), 60, "candlestick"
        )
        time.sleep(1)
        metrics = get(f"http://127.0.0.1:{port}/metrics")[1]
        assert 'engine_reloads_total{outcome="failure"} 1.0' in metrics
        assert 'engine_reloads_total{outcome="success"} 1.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "reload rejected, old config kept" in err
    # nothing of the running state was lost: the psar cooldowns from before the reloads are saved
    saved = json.loads((state / "engine.json").read_text())
    first_psar = next(r for r in journal(state) if r.get("strategy") == "psar")
    key = f"psar|{first_psar['symbol']}|5m|{first_psar['direction']}"
    assert key in saved["cooldowns"]


def install_by_hand(site: Path) -> None:
    """The example plugin as pip would leave it in site-packages: its package and a dist-info
    with the entry point (no build step, so the test needs no network)."""
    src = ROOT / "examples" / "engine-plugin-example" / "src" / "engine_donchian"
    shutil.copytree(src, site / "engine_donchian", ignore=shutil.ignore_patterns("__pycache__"))
    info = site / "engine_plugin_donchian-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: engine-plugin-donchian\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[engine.strategies]\ndonchian = engine_donchian.strategy:DonchianStrategy\n"
    )


def test_a_plugin_package_installed_while_running_is_picked_up_by_a_reload(tmp_path: Path) -> None:
    port = free_port()
    cfg, state, site = tmp_path / "config", tmp_path / "state", tmp_path / "site"
    write(cfg, port)
    site.mkdir()  # on the path from the start, empty until the package is "installed"
    proc = start(cfg, state, {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])})
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/ready")[0] == 200, 30, "ready")
        breakout = f'plugin = "donchian"\nsymbols = {SYMS}\ncooldown = 1800\n[risk]\nmin_rr = 1.5\n'
        (cfg / "strategies" / "breakout.toml").write_text(breakout)
        proc.send_signal(signal.SIGHUP)
        before = wait_for(lambda: (r := ready(port)["last_reload"]) and r, 20, "reload result")
        assert before["ok"] is False and any("no plugin named 'donchian'" in e for e in before["errors"])

        install_by_hand(site)
        proc.send_signal(signal.SIGHUP)
        after = wait_for(lambda: (r := ready(port)["last_reload"]) and r["ok"] and r, 20, "successful reload")
        assert after["added"] == ["breakout"] and ready(port)["instances"] == 3
        wait_for(
            lambda: any(r.get("strategy") == "breakout" for r in journal(state)), 60, "a breakout signal"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
