"""Proof of sameness: `engine run` on a paced replay (virtual clock, as fast as possible) and
`engine replay` (one vectorised call per strategy and market) produce the same signals and the
same consensus records, in the same order."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKETS = ("ETH-BTC", "LTC-BTC", "XMR-BTC")
BARS = 1500
STRATEGIES = ("psar", "most")


def make_data(dst: Path) -> None:
    """A slice of the bundled history: a few markets, a few thousand bars keep CI quick."""
    dst.mkdir()
    for m in MARKETS:
        lines = (ROOT / "data" / "sample" / f"binance_{m}_5m.csv").read_text().splitlines()
        (dst / f"binance_{m}_5m.csv").write_text("\n".join(lines[: BARS + 1]) + "\n")


def make_config(dst: Path, data: Path) -> None:
    (dst / "strategies").mkdir(parents=True)
    engine_toml = (ROOT / "config" / "engine.toml").read_text()
    engine_toml = re.sub(r"(?m)^speed = .*$", "speed = 0", engine_toml)
    engine_toml = re.sub(r"(?m)^exit_at_end = .*$", "exit_at_end = true", engine_toml)
    engine_toml = re.sub(r"(?m)^port = .*$", "port = 0", engine_toml)
    engine_toml = re.sub(r"(?m)^data_dir = .*$", f'data_dir = "{data}"', engine_toml)
    (dst / "engine.toml").write_text(engine_toml)
    symbols = "[" + ", ".join(f'"{m.replace("-", "/")}"' for m in MARKETS) + "]"
    for name in STRATEGIES:
        text = (ROOT / "config" / "strategies" / f"{name}.toml").read_text()
        (dst / "strategies" / f"{name}.toml").write_text(
            re.sub(r"(?m)^symbols = .*$", f"symbols = {symbols}", text)
        )


def test_live_path_and_vectorised_replay_agree(tmp_path: Path) -> None:
    data, config, state = tmp_path / "data", tmp_path / "config", tmp_path / "state"
    make_data(data)
    make_config(config, data)
    run = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "--config", str(config), "--state", str(state)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "replay reached the end of the data" in run.stderr
    out = tmp_path / "replay.json"
    rep = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "replay",
            "--config",
            str(config),
            "--data",
            str(data),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rep.returncode == 0, rep.stderr[-3000:]

    journal = [json.loads(x) for x in (state / "signals.jsonl").read_text().splitlines() if x.strip()]
    live = [r for r in journal if r.get("kind") in ("signal", "consensus")]
    replayed = json.loads(out.read_text())["signals"]
    for r in replayed:
        r.pop("outcome")

    assert len([r for r in live if r["kind"] == "signal"]) > 20
    assert any(r["kind"] == "consensus" for r in live), "the slice must exercise consensus too"
    assert [(r["id"], r["kind"]) for r in live] == [(r["id"], r["kind"]) for r in replayed]
    for a, b in zip(live, replayed, strict=True):
        same(a, b, a["id"])  # every field: levels, times, rationale, metadata, contributors


def same(a: object, b: object, where: str) -> None:
    """Equal, except floats may differ in the last bits: the live path computes indicators on a
    window and replay on the whole history, and recursive indicators converge, not coincide."""
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
