"""The third-party plugin path, end to end: the example package under examples/ is built and
installed with pip into a temporary directory, discovered through its `engine.strategies` entry
point, validated, run on a replay, and its own unit tests pass.

Everything runs in subprocesses with PYTHONPATH pointing at the install directory, so the venv
itself is never modified (nothing is installed into it, and the parity tests that discover
every registered plugin do not see this one).

Building the wheel offline (`--no-build-isolation`) needs a setuptools that can build wheels in
the venv: setuptools >= 70.1, or an older one plus the `wheel` package. A Python 3.11 venv is
created with setuptools 65.5 and no `wheel`, so when that is the case the test lets pip build in
its default isolated environment, which downloads setuptools and wheel from the configured
index; if that index cannot be reached, the test is skipped and says why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "engine-plugin-example"
SAMPLE = ROOT / "data" / "sample"
PAIRS = ("ETH-BTC", "LTC-BTC")
BARS = 1500  # ~5 days of 5m candles per market: plenty of breakouts, a replay of ~2 s
DIST = "engine-plugin-donchian"


@dataclass(frozen=True)
class Installed:
    """The example installed into `site`, a config directory using it, and the environment."""

    src: Path
    site: Path
    config: Path
    data: Path
    env: dict[str, str]


def can_build_wheels_offline() -> bool:
    """The venv's setuptools can build a wheel: >= 70.1 has `bdist_wheel` built in, older ones
    need the `wheel` package. Decided from metadata, without importing setuptools here."""
    if importlib.util.find_spec("wheel") is not None:
        return True
    try:
        found = re.match(r"(\d+)\.(\d+)", version("setuptools"))
    except PackageNotFoundError:
        return False
    return found is not None and (int(found[1]), int(found[2])) >= (70, 1)


def pip_install(src: Path, target: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input", "--target", str(target)]
    offline = can_build_wheels_offline()
    if offline:
        cmd.append("--no-build-isolation")
    cmd.append(str(src))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if res.returncode == 0:
        return
    output = res.stdout + res.stderr
    fetch_failed = (
        "No matching distribution found" in output
        or "Could not find a version that satisfies" in output
        or "NewConnectionError" in output
    )
    if not offline and fetch_failed:
        pytest.skip(
            "cannot build the example offline: the venv's setuptools has no bdist_wheel (install "
            "`wheel` or setuptools >= 70.1 into it) and pip could not fetch the build requirements"
        )
    raise AssertionError(f"pip install of the example failed:\n{output[-4000:]}")


def slice_sample(dest: Path) -> None:
    """The first BARS candles of two bundled markets, under the names the replay source expects."""
    dest.mkdir()
    for pair in PAIRS:
        name = f"binance_{pair}_5m.csv"
        lines = (SAMPLE / name).read_text().splitlines(keepends=True)
        (dest / name).write_text("".join(lines[: BARS + 1]))  # + the header


def write_config(config: Path, data: Path) -> None:
    (config / "strategies").mkdir(parents=True)
    (config / "engine.toml").write_text(
        f"""
[engine]
shutdown_grace_seconds = 5
[market]
source = "replay"
data_dir = "{data}"
speed = 0
exit_at_end = true
[server]
port = 0
"""
    )
    # The instance name (file stem) differs from the plugin name on purpose.
    (config / "strategies" / "breakout.toml").write_text(
        """
plugin = "donchian"
symbols = ["ETH/BTC", "LTC/BTC"]
timeframe = "5m"
cooldown = 1800
[params]
period = 20
[risk]
min_rr = 1.5
"""
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("plugin")
    # Build from a copy: pip builds in the source tree and would leave build/ and *.egg-info behind.
    src = base / "src"
    shutil.copytree(
        EXAMPLE,
        src,
        ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"),
    )
    site = base / "site"
    pip_install(src, site)
    data, config = base / "data", base / "config"
    slice_sample(data)
    write_config(config, data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE")}
    env["PYTHONPATH"] = str(site)
    return Installed(src, site, config, data, env)


def engine(inst: Installed, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT,
        env=inst.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_pip_installed_the_distribution_with_its_entry_point(installed: Installed) -> None:
    infos = list(installed.site.glob("engine_plugin_donchian-*.dist-info"))
    assert len(infos) == 1
    assert (
        "donchian = engine_donchian.strategy:DonchianStrategy" in (infos[0] / "entry_points.txt").read_text()
    )
    assert (installed.site / "engine_donchian" / "strategy.py").is_file()


def test_plugins_lists_it_as_a_package(installed: Installed) -> None:
    res = engine(installed, "plugins", "--config", str(installed.config))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:2] == ["INSTANCE", "PLUGIN"]
    row = next(line for line in lines if line.startswith("breakout "))
    assert row.split()[:6] == ["breakout", "donchian", "yes", "5m", "candle", "1800s"]
    assert f"package {DIST}" in row
    # the built-ins are still there, marked as such
    assert any(line.split()[1] == "psar" and "built-in" in line for line in lines[1:])


def test_check_accepts_the_config(installed: Installed) -> None:
    res = engine(installed, "check", "--config", str(installed.config))
    assert (res.returncode, res.stdout.strip()) == (0, "OK"), res.stderr


def test_check_reports_bad_plugin_params(installed: Installed, tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(installed.config, config)
    path = config / "strategies" / "breakout.toml"
    path.write_text(path.read_text().replace("period = 20", "period = 1"))
    res = engine(installed, "check", "--config", str(config))
    assert res.returncode == 2
    assert "breakout.toml: params.period:" in res.stderr


def test_run_journals_its_signals_and_replay_agrees(installed: Installed, tmp_path: Path) -> None:
    state = tmp_path / "state"
    res = engine(installed, "run", "--config", str(installed.config), "--state", str(state))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "engine stopped cleanly" in res.stderr
    records = [json.loads(line) for line in (state / "signals.jsonl").read_text().splitlines() if line]
    signals = [r for r in records if r["kind"] == "signal"]
    assert signals, "no signal journaled"
    assert {r["strategy"] for r in signals} == {"breakout"}  # instance name, not plugin name
    assert {r["symbol"] for r in signals} == {"ETH/BTC", "LTC/BTC"}
    for r in signals:
        assert r["direction"] in ("LONG", "SHORT")
        assert len(r["take_profits"]) == 3  # the plugin's RISK adds tp3
        assert r["metadata"]["rr1"] >= 1.5  # the instance's [risk] min_rr applied
        assert "channel" in r["rationale"][0]
    assert "breakout" in res.stdout  # console sink

    # The vectorised backtest of the same plugin finds exactly the signals the live path did.
    out = tmp_path / "replay.json"
    rep = engine(
        installed,
        "replay",
        "--config",
        str(installed.config),
        "--data",
        str(installed.data),
        "--json",
        str(out),
    )
    assert rep.returncode == 0, rep.stderr[-3000:]
    replayed = [s for s in json.loads(out.read_text())["signals"] if s["kind"] == "signal"]
    assert sorted(s["id"] for s in replayed) == sorted(r["id"] for r in signals)


def test_the_packages_own_tests_pass(installed: Installed) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=installed.src,
        env=installed.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in res.stdout
