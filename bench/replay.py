"""Replay benchmarks (issue 6): vectorised replay over a year, the live path, engine memory.

1. `engine replay` with every OHLCV strategy over the bundled data tiled to one year
   (10 markets x ~104k 5m candles, price-continuous): wall time, candle·strategy evaluations
   per second, peak RSS (targets: <= 7 s, >= 2 M/s, <= 500 MB).
2. The same kind of replay through the live path (`engine run`, virtual clock at full speed)
   on a slice, to show what vectorisation buys (evaluations per second of both).
3. `engine run` with all plugins x 50 symbols on a paced replay: peak RSS (target < 200 MB).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
YEAR_BARS = 365 * 288
RUNS = 5  # timed runs of the year-long replay; the median is reported


def tile(src: Path, dst: Path, bars: int, rename: str | None = None) -> None:
    """Repeat a history end to end until `bars` candles, each copy rescaled to continue the price."""
    rows = np.loadtxt(src, delimiter=",", skiprows=1)
    step = int(rows[1, 0] - rows[0, 0])
    blocks, scale, n = [], 1.0, 0
    while n < bars:
        block = rows.copy()
        block[:, 1:5] *= scale
        blocks.append(block)
        scale = block[-1, 4] / rows[0, 1]
        n += len(block)
    out = np.concatenate(blocks)[:bars]
    out[:, 0] = rows[0, 0] + step * np.arange(len(out))
    name = src.name if rename is None else rename
    np.savetxt(
        dst / name,
        out,
        delimiter=",",
        header="timestamp,open,high,low,close,volume",
        comments="",
        fmt=["%d", "%.10g", "%.10g", "%.10g", "%.10g", "%.10g"],
    )


def config_dir(dst: Path, symbols: list[str], *, speed: float, data: Path, exit_at_end: bool) -> Path:
    """The default config with every strategy enabled, on the given symbols and data."""
    cfg = dst / "config"
    (cfg / "strategies").mkdir(parents=True)
    text = (ROOT / "config" / "engine.toml").read_text()
    for key, value in (
        ("speed", str(speed)),
        ("exit_at_end", "true" if exit_at_end else "false"),
        ("port", "0"),
        ("data_dir", f'"{data}"'),
        ("log_level", '"WARNING"'),
    ):
        text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
    (cfg / "engine.toml").write_text(text)
    syms = "[" + ", ".join(f'"{s}"' for s in symbols) + "]"
    for f in sorted((ROOT / "config" / "strategies").glob("*.toml")):
        t = re.sub(r"(?m)^symbols = .*$", f"symbols = {syms}", f.read_text())
        (cfg / "strategies" / f.name).write_text(re.sub(r"(?m)^enabled = .*$", "enabled = true", t))
    return cfg


def tree_memory_mb(pid: int) -> float:
    """Proportional set size of a process and all its descendants, in MB.

    PSS splits pages shared between processes (a forked worker shares the parent's loaded
    data) among them, so the sum is what the whole tree really occupies; summing RSS would
    count shared pages once per process."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            total += int(re.search(r"^Pss:\s+(\d+)", rollup, re.M).group(1))  # type: ignore[union-attr]
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, AttributeError):
            continue  # exited meanwhile
    return total / 1024


def run(
    cmd: list[str], timeout: float, *, sample_memory: bool = True
) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall seconds, peak memory (MB, PSS of the process and its workers, sampled every
    100 ms; 0 when not sampled) and the finished process.

    Sampling is not free: reading a process tree's page accounting costs about 8 ms of CPU
    per sample on the 2-core test machine, taken from the run it measures. So time and
    memory are measured in separate runs (`sample_memory=False` for the timed ones)."""
    t0 = time.perf_counter()
    # output to files, not pipes: nobody reads a pipe while the child runs
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        with subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, text=True) as child:
            peak = 0.0
            while child.poll() is None:
                if sample_memory:
                    peak = max(peak, tree_memory_mb(child.pid))
                    time.sleep(0.1)
                else:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.wait(timeout=max(0.0, timeout - (time.perf_counter() - t0)))
                if time.perf_counter() - t0 > timeout:
                    child.kill()
                    raise SystemExit(f"{cmd[3]} timed out after {timeout} s")
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    wall = time.perf_counter() - t0
    proc = subprocess.CompletedProcess(cmd, child.returncode, stdout, stderr)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"{cmd[3]} failed with {proc.returncode}")
    return wall, peak, proc


def replay_cmd(cfg: Path, data: Path, out: Path) -> list[str]:
    """`engine replay` over `data` with the JSON document written to `out`."""
    return [
        sys.executable,
        "-m",
        "engine.cli",
        "replay",
        "--config",
        str(cfg),
        "--data",
        str(data),
        "--json",
        str(out),
    ]


def timed_replay(cfg: Path, data: Path, out: Path) -> float:
    """Wall seconds of one replay, started on a settled system: the previous run's document is
    removed and everything written so far flushed, so this run does not pay for the last
    one's 370 MB reaching the disk."""
    out.unlink(missing_ok=True)
    os.sync()
    return run(replay_cmd(cfg, data, out), timeout=600, sample_memory=False)[0]


def bench_year(tmp: Path) -> None:
    data = tmp / "year"
    data.mkdir()
    symbols = []
    for f in sorted(SAMPLE.glob("binance_*_5m.csv")):
        tile(f, data, YEAR_BARS)
        symbols.append(f.stem.split("_")[1].replace("-", "/"))
    cfg = config_dir(tmp / "y", symbols, speed=0, data=data, exit_at_end=True)
    out = tmp / "year.json"
    walls = [timed_replay(cfg, data, out) for _ in range(RUNS)]
    _, peak, _ = run(replay_cmd(cfg, data, out), timeout=600)
    doc = json.loads(out.read_text())
    evals = doc["evaluations"]
    skipped = sorted(k for k, v in doc["strategies"].items() if v["skipped"])
    print(
        f"engine replay, 1 year x 10 markets, {len(doc['strategies']) - len(skipped)} OHLCV strategies "
        f"(skipped: {', '.join(skipped) or 'none'}), {len(doc['signals']):,} signals, "
        f"{evals:,} evaluations:"
    )
    wall = sorted(walls)[RUNS // 2]  # the median: this VM's speed drifts by several per cent
    ran = len(doc["strategies"]) - len(skipped)
    pairs = ran * len(symbols) * YEAR_BARS  # every strategy over every 5m candle of the year
    runs = ", ".join(f"{w:.2f}" for w in walls)
    print(f"  wall {wall:.2f} s, median of {RUNS} runs ({runs}; target <= 7)")
    print(
        f"  = {evals / wall / 1e6:.2f} M evaluations/s of the strategies' own candles (a 15m strategy "
        f"is evaluated once per 15m candle), {pairs / wall / 1e6:.2f} M/s counted as 5m candles x "
        f"strategies ({pairs:,}) (target >= 2)"
    )
    print(f"  peak memory {peak:.0f} MB (PSS of engine and workers, one more run; target <= 500)")


def bench_live_path(tmp: Path) -> None:
    data = tmp / "slice"
    data.mkdir()
    bars = 2500
    for f in sorted(SAMPLE.glob("binance_*_5m.csv"))[:2]:
        lines = f.read_text().splitlines()
        (data / f.name).write_text("\n".join(lines[: bars + 1]) + "\n")
    symbols = [f.stem.split("_")[1].replace("-", "/") for f in sorted(data.glob("*.csv"))]
    cfg = config_dir(tmp / "l", symbols, speed=0, data=data, exit_at_end=True)
    wall_live, _, _ = run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            "--config",
            str(cfg),
            "--state",
            str(tmp / "l" / "state"),
        ],
        timeout=900,
    )
    out = tmp / "slice.json"
    wall_vec, _, _ = run(replay_cmd(cfg, data, out), timeout=600)
    doc = json.loads(out.read_text())
    n_strats = sum(1 for v in doc["strategies"].values() if not v["skipped"])
    evals = doc["evaluations"]
    print(
        f"live path vs vectorised, {len(symbols)} markets x {bars} bars x {n_strats} strategies "
        f"({evals:,} evaluations):"
    )
    print(
        f"  engine run (virtual clock, candle by candle): {wall_live:.1f} s"
        f" = {evals / wall_live / 1e3:.1f} k/s"
    )
    print(
        f"  engine replay (vectorised):                   {wall_vec:.1f} s = {evals / wall_vec / 1e3:.1f} k/s"
        f"  -> {wall_live / wall_vec:.0f}x faster (both include ~1 s of start-up)"
    )


def bench_run_memory(tmp: Path) -> None:
    data = tmp / "fifty"
    data.mkdir()
    files = sorted(SAMPLE.glob("binance_*_5m.csv"))
    symbols = []
    for k in range(50):
        src = files[k % len(files)]
        base = src.stem.split("_")[1].split("-")[0] + (str(k // len(files)) if k >= len(files) else "")
        shutil.copy(src, data / f"binance_{base}-BTC_5m.csv")
        symbols.append(f"{base}/BTC")
    cfg = config_dir(tmp / "m", symbols, speed=3000, data=data, exit_at_end=False)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            "--config",
            str(cfg),
            "--state",
            str(tmp / "m" / "state"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak, t0 = 0.0, time.monotonic()
    while time.monotonic() - t0 < 40 and proc.poll() is None:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
        peak = max(peak, rss)
        time.sleep(0.5)
    proc.terminate()
    proc.wait(timeout=60)
    print(f"engine run, all plugins x 50 symbols, paced replay 40 s: peak RSS {peak:.0f} MB (target < 200)")


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_year(tmp)
        bench_live_path(tmp)
        bench_run_memory(tmp)


if __name__ == "__main__":
    main()
