"""`engine replay` as a user runs it: the table, the JSON document, the HTML report, skipped
strategies with their reasons — and the same answer however many worker processes it uses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKETS = ("ETH-BTC", "LTC-BTC", "XMR-BTC")
RUNNABLE = ("psar", "candlestick", "volume_profile", "most", "strat")
SKIPPED = ("funding", "orb")
RESULTS = ("tp1", "tp2", "tp3", "sl", "expired")


def make_case(tmp: Path, *, adaptive: bool = False) -> tuple[Path, Path]:
    """Whole sample files: long enough that a replay on workers plans from their ends."""
    data, cfg = tmp / "data", tmp / "config"
    data.mkdir()
    for m in MARKETS:
        shutil.copy(ROOT / "data" / "sample" / f"binance_{m}_5m.csv", data)
    (cfg / "strategies").mkdir(parents=True)
    text = (ROOT / "config" / "engine.toml").read_text()
    text = re.sub(r"(?m)^data_dir = .*$", f'data_dir = "{data}"', text)
    text = re.sub(r"(?m)^adaptive_weights = .*$", f"adaptive_weights = {str(adaptive).lower()}", text)
    (cfg / "engine.toml").write_text(text)
    symbols = "[" + ", ".join(f'"{m.replace("-", "/")}"' for m in MARKETS) + "]"
    for name in RUNNABLE + SKIPPED:
        t = (ROOT / "config" / "strategies" / f"{name}.toml").read_text()
        t = re.sub(r"(?m)^symbols = .*$", f"symbols = {symbols}", t)
        (cfg / "strategies" / f"{name}.toml").write_text(re.sub(r"(?m)^enabled = .*$", "enabled = true", t))
    return data, cfg


def replay(cfg: Path, data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    spool = cfg.parent / "tmp"  # where the replay spools its records while it runs
    spool.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "replay", "--config", str(cfg), "--data", str(data), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(spool)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("replay")
    data, cfg = make_case(tmp)
    two, one, html = tmp / "two.json", tmp / "one.json", tmp / "report.html"
    proc = replay(
        cfg, data, "--json", str(two), "--report", str(html), "--symbol", "LTC/BTC", "--workers", "2"
    )
    replay(cfg, data, "--json", str(one), "--workers", "1")
    return {
        "doc": json.loads(two.read_text()),
        "one": one.read_bytes(),
        "two": two.read_bytes(),
        "html": html.read_text(),
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "tmp": tmp,
    }


def test_the_answer_does_not_depend_on_the_number_of_workers(case: dict[str, Any]) -> None:
    assert case["one"] == case["two"]
    assert "parsing every file" not in case["stderr"]  # planned from the files' ends alone


def test_a_file_that_does_not_end_as_its_last_rows_say_is_parsed_first(
    case: dict[str, Any], tmp_path: Path
) -> None:
    data, cfg = make_case(tmp_path)
    path = data / "binance_LTC-BTC_5m.csv"
    lines = path.read_text().splitlines()
    # a candle far in the future mid-file: every later row is out of order and dropped, which
    # the rows at the file's end cannot show
    mid = len(lines) // 2
    t, *rest = lines[mid].split(",")
    lines[mid] = ",".join([str(int(t) + 10**12), *rest])
    path.write_text("\n".join(lines) + "\n")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    proc = replay(cfg, data, "--json", str(two), "--workers", "2")
    replay(cfg, data, "--json", str(one), "--workers", "1")
    assert "parsing every file before replaying again" in proc.stderr
    assert one.read_bytes() == two.read_bytes()
    doc = json.loads(two.read_text())
    ltc = [s["bar_close_ms"] for s in doc["signals"] if s["symbol"] == "LTC/BTC"]
    assert ltc and not [ms for ms in ltc if int(t) + 300_000 < ms < int(t) + 10**12]  # rows dropped
    assert doc["signals"] != json.loads(case["two"])["signals"]


def test_json_has_the_documented_schema_and_every_signal_with_its_outcome(case: dict[str, Any]) -> None:
    doc = case["doc"]
    assert set(doc["strategies"]) == set(RUNNABLE + SKIPPED)
    for row in [*doc["strategies"].values(), doc["consensus"]]:
        assert {"signals", *RESULTS, "win_rate", "avg_r", "skipped"} <= set(row)
    sigs = doc["signals"]
    assert len(sigs) > 100
    for s in sigs:
        assert {
            "id",
            "strategy",
            "symbol",
            "direction",
            "entry",
            "stop_loss",
            "take_profits",
            "created_at",
        } <= set(s)
        assert s["outcome"] is None or {"result", "at", "price", "r_multiple"} <= set(s["outcome"])
    times = [s["created_at"] for s in sigs]
    assert times == sorted(times), "signals are listed in time order"
    assert len({s["id"] for s in sigs}) == len(sigs)


def test_table_counts_agree_with_the_signal_records(case: dict[str, Any]) -> None:
    doc = case["doc"]
    for name in RUNNABLE:
        mine = [s for s in doc["signals"] if s["strategy"] == name and s["kind"] == "signal"]
        row = doc["strategies"][name]
        assert row["signals"] == len(mine) > 0, name
        for res in RESULTS:
            assert row[res] == sum(1 for s in mine if s["outcome"] and s["outcome"]["result"].lower() == res)
        closed = [s for s in mine if s["outcome"]]
        wins = sum(1 for s in closed if s["outcome"]["result"].startswith("TP"))
        assert row["win_rate"] == round(wins / len(closed), 4)
    cons = [s for s in doc["signals"] if s["kind"] == "consensus"]
    assert doc["consensus"]["signals"] == len(cons) > 0
    assert "consensus" in case["stdout"] and "STRATEGY" in case["stdout"]


def test_strategies_the_files_cannot_feed_are_skipped_with_the_reason(case: dict[str, Any]) -> None:
    doc = case["doc"]
    assert "funding rate" in doc["strategies"]["funding"]["skipped"]
    assert "1m" in doc["strategies"]["orb"]["skipped"]
    assert not any(s["strategy"] in SKIPPED for s in doc["signals"])
    assert "skipped funding:" in case["stderr"] and "skipped orb:" in case["stderr"]
    for name in RUNNABLE:
        assert doc["strategies"][name]["skipped"] is None


def test_html_report_has_the_table_the_cumulative_r_chart_and_the_chosen_symbol(case: dict[str, Any]) -> None:
    page, doc = case["html"], case["doc"]
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page
    assert page.count("<tr>") == 1 + len(RUNNABLE + SKIPPED) + 1  # header, strategies, consensus
    assert "Cumulative R" in page and page.count("<polyline") >= len(RUNNABLE) + 1
    assert "LTC/BTC with signals" in page
    markers = sum(1 for s in doc["signals"] if s["symbol"] == "LTC/BTC" and s["kind"] == "signal")
    assert page.count("<polygon") == markers > 0


def test_adaptive_weights_replay_in_one_stream_with_the_same_strategy_signals(
    case: dict[str, Any], tmp_path: Path
) -> None:
    data, cfg = make_case(tmp_path, adaptive=True)
    out = tmp_path / "adaptive.json"
    replay(cfg, data, "--json", str(out), "--workers", "2")
    doc = json.loads(out.read_text())
    mine = [s["id"] for s in doc["signals"] if s["kind"] == "signal"]
    assert mine == [s["id"] for s in case["doc"]["signals"] if s["kind"] == "signal"]
    assert doc["consensus"]["signals"] == sum(1 for s in doc["signals"] if s["kind"] == "consensus")


def test_no_spool_is_left_behind(case: dict[str, Any]) -> None:
    spool = case["tmp"] / "tmp"
    assert spool.is_dir() and not list(spool.iterdir())
