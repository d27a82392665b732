"""Config directory loading: defaults, env overrides, and precise error locations."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.config_sections import ccxt_exchange_ids


def write(dirpath: Path, name: str, text: str) -> Path:
    p = dirpath / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    write(tmp_path, "engine.toml", '[market]\nsource = "replay"\n[server]\nport = 9001\n')
    write(tmp_path, "strategies/psar.toml", 'symbols = ["ETH/BTC"]\n')
    return tmp_path


def test_defaults_and_file_values(cfg: Path) -> None:
    config, problems = load_config(cfg)
    assert problems == []
    assert config is not None
    s = config.settings
    assert s.market.source == "replay"
    assert s.server.port == 9001
    assert s.server.host == "127.0.0.1"
    assert s.market.rate_budget == 0.8
    assert s.consensus.weights["harmonic"] == 2.0
    (entry,) = config.strategies
    assert entry.name == "psar" and entry.plugin == "psar"
    assert entry.spec.period == "candle"


def test_environment_overrides_file(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE__SERVER__PORT", "9100")
    monkeypatch.setenv("ENGINE__MARKET__API_URL", "http://127.0.0.1:5555/")
    config, problems = load_config(cfg)
    assert problems == [] and config is not None
    assert config.settings.server.port == 9100
    assert config.settings.market.api_url == "http://127.0.0.1:5555"
    assert config.settings.market.source == "replay"  # untouched keys keep the file's value


def test_every_problem_is_reported_with_file_and_path(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(cfg, "engine.toml", '[market]\nsource = "replay"\nbogus = 1\nrate_budget = 2\n')
    write(cfg, "strategies/psar.toml", 'symbols = ["ETHBTC"]\ntimeframe = "7x"\nfoo = 1\n')
    monkeypatch.setenv("ENGINE__SERVER__PORT", "abc")
    config, problems = load_config(cfg)
    assert config is None
    lines = [str(p) for p in problems]
    assert f"{cfg}/engine.toml: market.bogus: unknown key" in lines
    assert any(line.startswith(f"{cfg}/engine.toml: market.rate_budget:") for line in lines)
    assert any(line.startswith("env ENGINE__SERVER__PORT: server.port:") for line in lines)
    psar = f"{cfg}/strategies/psar.toml"
    assert any(line.startswith(f"{psar}: symbols:") and "BASE/QUOTE" in line for line in lines)
    assert any(line.startswith(f"{psar}: timeframe:") and "7x" in line for line in lines)
    assert f"{psar}: foo: unknown key" in lines


def test_invalid_toml_names_the_file(cfg: Path) -> None:
    write(cfg, "strategies/most.toml", "symbols = [\n")
    config, problems = load_config(cfg)
    assert config is None
    assert str(problems[0]).startswith(f"{cfg}/strategies/most.toml: <root>: invalid TOML")


def test_unknown_exchange_and_bad_url(cfg: Path) -> None:
    write(cfg, "engine.toml", '[market]\nexchange = "nosuchex"\napi_url = "ftp://x"\n')
    _, problems = load_config(cfg)
    paths = {p.path for p in problems}
    assert {"market.exchange", "market.api_url"} <= paths


def test_exchange_ids_are_ccxts_without_importing_it() -> None:
    """The start-up shortcut must accept exactly what ccxt lists: every real exchange, and none
    of its helper packages or modules."""
    import ccxt

    ids = ccxt_exchange_ids()
    assert ids == set(ccxt.exchanges)
    assert {"base", "abstract", "async_support", "pro", "static_dependencies"}.isdisjoint(ids)


@pytest.mark.parametrize("exchange", ["binance", "kraken", "base", "async_support"])
def test_exchange_check_matches_ccxt(cfg: Path, exchange: str) -> None:
    import ccxt

    write(cfg, "engine.toml", f'[market]\nexchange = "{exchange}"\n')
    _, problems = load_config(cfg)
    assert ("market.exchange" in {p.path for p in problems}) == (exchange not in ccxt.exchanges)


def test_missing_directory(tmp_path: Path) -> None:
    config, problems = load_config(tmp_path / "nope")
    assert config is None and "does not exist" in problems[0].message
