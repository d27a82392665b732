"""The `engine` command: run, check, plugins.

Exit codes: 0 ok, 1 runtime failure, 2 usage or config error (argparse already uses 2).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.config import EngineSettings, LoadedConfig, load_config
from engine.errors import ConfigError, ConfigProblem, EngineError, StateLocked
from engine.plugins.instance import PluginInstance, build_instances
from engine.plugins.registry import Registry

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2

log = logging.getLogger("engine")


def setup_logging(settings: EngineSettings, *, with_file: bool = True) -> bool:
    """Console logs at `engine.log_level`, plus the `[logging]` file when configured and
    `with_file`; every handler redacts secrets. False (problem printed) when the log file cannot
    be opened.

    Only `engine run` writes the file: a one-off replay or download appending to (and rotating)
    the file of a running engine would race its rotation.
    """
    from engine.logs import file_settings
    from engine.logs import setup_logging as install

    target = file_settings(settings.logging) if with_file else None
    try:
        install(settings.engine.log_level, target)
    except OSError as exc:
        where = target.path if target is not None else "?"
        print_problems([ConfigProblem(str(where), "logging.file", f"cannot open log file: {exc.strerror}")])
        return False
    return True


def print_problems(problems: Sequence[ConfigProblem]) -> None:
    """One problem per line on stderr, so stdout stays clean for `OK` and tables."""
    for p in problems:
        print(p, file=sys.stderr)


def load_all(
    config_dir: Path, registry: Registry, *, include_disabled: bool = False
) -> tuple[LoadedConfig | None, list[PluginInstance], list[ConfigProblem]]:
    """Config and instances with the problems of both steps; a None config means nothing can run."""
    config, problems = load_config(config_dir)
    if config is None:
        return None, [], problems
    instances, inst_problems = build_instances(config, registry, include_disabled=include_disabled)
    return config, instances, problems + inst_problems


def cmd_check(args: argparse.Namespace) -> int:
    """`engine check`: validate config, plugins, sinks and admin token without running; exit 2 if any fail."""
    from engine.secret_files import check_admin_token
    from engine.sinks.build import check_sinks

    config, _, problems = load_all(args.config, Registry.discover(), include_disabled=True)
    if config is not None:
        problems += check_sinks(config.settings) + check_admin_token(config.settings)
    if problems:
        print_problems(problems)
        return EXIT_CONFIG
    print("OK")
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    """`engine plugins`: every configured instance, then installed plugins no file configures."""
    registry = Registry.discover()
    config, instances, problems = load_all(args.config, registry, include_disabled=True)
    if config is None:
        print_problems(problems)
        return EXIT_CONFIG
    rows = [
        ("INSTANCE", "PLUGIN", "ENABLED", "TIMEFRAME", "PERIOD", "COOLDOWN", "SYMBOLS", "SOURCE", "DETAILS")
    ]
    for inst in instances:
        syms = ",".join(inst.symbols)
        rows.append(
            (
                inst.name,
                inst.plugin,
                "yes" if inst.enabled else "no",
                inst.timeframe,
                inst.period_label,
                f"{inst.cooldown}s",
                syms if len(syms) <= 40 else syms[:37] + "...",
                inst.source,
                " ".join(f"{k}={v}" for k, v in inst.strategy.describe().items()),
            )
        )
    configured = {i.plugin for i in instances}
    for name in registry.names():
        if name not in configured:
            info = registry.info(name)
            rows.append(("-", name, "not configured", "-", "-", "-", "-", info.source if info else "?", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if problems:
        print_problems(problems)
        return EXIT_CONFIG
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """`engine run`: the live engine; a plugin that fails to load is skipped and logged, the others run."""
    config, instances, problems = load_all(args.config, Registry.discover())
    if config is None:
        print_problems(problems)
        return EXIT_CONFIG
    if not setup_logging(config.settings):
        return EXIT_CONFIG
    for p in problems:
        # a broken plugin is skipped, the others run; the problem is still shouted
        log.error("skipping: %s", p)
    if not instances:
        log.error("no enabled strategy instance could be loaded from %s", args.config)
        return EXIT_CONFIG
    from engine.app import Engine  # deferred: ccxt import is slow and check/plugins don't need it

    try:
        engine = Engine(config, instances, state_dir=args.state)
    except ConfigError as exc:
        print_problems(exc.problems)
        return EXIT_CONFIG
    for p in problems:
        if p.path == "plugin":  # skipped because the plugin could not be loaded
            engine.metrics.plugin_load_errors.labels(Path(p.file).stem).inc()

    async def main() -> None:
        engine.install_signal_handlers()
        await engine.run()

    try:
        asyncio.run(main())
    except StateLocked as exc:
        log.error("%s", exc)
        return EXIT_RUNTIME
    except EngineError as exc:
        log.error("engine failed: %s", exc)
        return EXIT_RUNTIME
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    """`engine stats`: outcome tallies and weights from the saved state, readable while the engine runs."""
    from engine.config import resolve_path
    from engine.state import StateStore
    from engine.stats import render, stats_rows

    config, problems = load_config(args.config)
    if config is None:
        print_problems(problems)
        return EXIT_CONFIG
    state_dir = args.state or resolve_path(config.settings.engine.state_dir)
    if not (state_dir / "engine.json").exists():
        print(f"no state yet in {state_dir} (the engine has not saved any)", file=sys.stderr)
        return EXIT_RUNTIME
    state = StateStore(state_dir).load()
    print(render(stats_rows(config, state.outcomes.get("stats", {}))))
    return EXIT_OK


def _parse_when(text: str | None, flag: str) -> int | None:
    """A date or date-time (UTC unless it says otherwise) as epoch ms; exits 2 when unreadable."""
    if text is None:
        return None
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        print(f"{flag}: not an ISO date or date-time: {text!r}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def progress_bar(done: int, total: int, what: str) -> None:
    """One self-overwriting line on stderr, only when a person is watching."""
    if not sys.stderr.isatty():
        return
    width = 30
    filled = int(width * done / total) if total else width
    end = "\n" if done >= total else ""
    print(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what[:40]:<40}", end=end, file=sys.stderr
    )


def cmd_replay(args: argparse.Namespace) -> int:
    """`engine replay`: vectorised backtest over CSV history, as a table and optionally JSON and HTML."""

    from engine.replay import run_replay
    from engine.report import render_html, summary, table, write_json

    config, instances, problems = load_all(args.config, Registry.discover())
    if config is None:
        print_problems(problems)
        return EXIT_CONFIG
    if not setup_logging(config.settings, with_file=False):
        return EXIT_CONFIG
    for p in problems:
        log.error("skipping: %s", p)
    if not args.data.is_dir():
        print(f"--data: {args.data} is not a directory", file=sys.stderr)
        return EXIT_CONFIG
    start, end = _parse_when(args.from_, "--from"), _parse_when(args.to, "--to")
    result = run_replay(
        config,
        instances,
        args.data,
        start_ms=start,
        end_ms=end,
        progress=progress_bar,
        records=args.json is not None,
        workers=args.workers,
    )
    try:
        doc = summary(result, [i.name for i in instances])
        print(table(doc))
        for name, why in sorted(result.skipped.items()):
            print(f"skipped {name}: {why}", file=sys.stderr)
        if args.json is not None:
            write_json(args.json, doc, result)
        if args.report is not None:
            args.report.write_text(render_html(result, doc, args.symbol))
    finally:
        result.close()
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    """`engine download`: closed candles to replay CSVs, resuming after the last row already on disk."""
    from engine.clock import RealClock
    from engine.download import download_symbol
    from engine.market.build import exchange_market
    from engine.metrics import Metrics
    from engine.timeframes import timeframe_seconds

    config, problems = load_config(args.config)
    if config is None:
        print_problems(problems)
        return EXIT_CONFIG
    if not setup_logging(config.settings, with_file=False):
        return EXIT_CONFIG
    try:
        timeframe_seconds(args.timeframe)
    except ValueError as exc:
        print(f"--timeframe: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    since = _parse_when(args.since, "--since")
    until = _parse_when(args.until, "--until")
    assert since is not None
    args.out.mkdir(parents=True, exist_ok=True)
    m = config.settings.market
    clock, metrics = RealClock(), Metrics()

    def show(symbol: str, done: int, total: int) -> None:
        progress_bar(min(done, total), max(total, 1), f"{symbol} {done:,} candles")

    async def main() -> int:
        market = exchange_market(config.settings, clock, metrics)
        try:
            known = await market.load_markets()
            unknown = [s for s in symbols if s not in known]
            if unknown:
                print(f"--symbols: not on {m.exchange} ({m.type}): {', '.join(unknown)}", file=sys.stderr)
                return EXIT_CONFIG
            for sym in symbols:
                res = await download_symbol(
                    market, clock, metrics, sym, args.timeframe, since, until, args.out, show
                )
                resumed = "" if res.resumed_from is None else " (resumed)"
                print(f"{sym}: {res.written} candles written to {res.path}{resumed}")
        finally:
            await market.close()
        return EXIT_OK

    try:
        return asyncio.run(main())
    except EngineError as exc:
        log.error("download failed: %s (run it again to resume)", exc)
        return EXIT_RUNTIME


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its options; each sets `func`, which `main` dispatches to."""
    parser = argparse.ArgumentParser(
        prog="engine", description="Run crypto trading-signal strategies as plugins of one engine."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config", type=Path, default=Path("config"), help="config directory (default: config)"
        )

    p_run = sub.add_parser("run", help="run the engine until SIGINT/SIGTERM")
    with_config(p_run)
    p_run.add_argument(
        "--state", type=Path, default=None, help="state directory (overrides engine.state_dir)"
    )
    p_run.set_defaults(func=cmd_run)

    p_check = sub.add_parser("check", help="validate the config directory; prints OK or one line per problem")
    with_config(p_check)
    p_check.set_defaults(func=cmd_check)

    p_plugins = sub.add_parser("plugins", help="list plugin instances and installed plugins")
    with_config(p_plugins)
    p_plugins.set_defaults(func=cmd_plugins)

    p_stats = sub.add_parser(
        "stats", help="per-strategy signal outcomes (TP/SL counts, win rate, avg R) and weights"
    )
    with_config(p_stats)
    p_stats.add_argument(
        "--state", type=Path, default=None, help="state directory (overrides engine.state_dir)"
    )
    p_stats.set_defaults(func=cmd_stats)

    p_replay = sub.add_parser("replay", help="backtest every enabled plugin over CSV history (vectorised)")
    with_config(p_replay)
    p_replay.add_argument(
        "--data", type=Path, required=True, help="directory of {exchange}_{BASE}-{QUOTE}_{tf}.csv"
    )
    p_replay.add_argument(
        "--from", dest="from_", default=None, help="first signal candle close (ISO date, UTC)"
    )
    p_replay.add_argument("--to", default=None, help="last signal candle close (ISO date, UTC)")
    p_replay.add_argument("--report", type=Path, default=None, help="write a self-contained HTML report")
    p_replay.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    p_replay.add_argument("--symbol", default=None, help="symbol charted in the HTML report (default: first)")
    p_replay.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="processes replaying markets side by side (default: one per CPU; 1 = this process only)",
    )
    p_replay.set_defaults(func=cmd_replay)

    p_dl = sub.add_parser("download", help="download OHLCV history to CSV files (resumable)")
    with_config(p_dl)
    p_dl.add_argument("--symbols", required=True, help="comma-separated, e.g. BTC/USDT,ETH/USDT")
    p_dl.add_argument("--timeframe", default="5m", help="candle timeframe (default 5m)")
    p_dl.add_argument("--since", required=True, help="first candle (ISO date, UTC)")
    p_dl.add_argument("--until", default=None, help="stop before this time (default: now)")
    p_dl.add_argument("--out", type=Path, required=True, help="output directory")
    p_dl.set_defaults(func=cmd_download)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code (0 ok, 1 runtime failure, 2 usage or config)."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
