"""Console and JSON-file logging, rotation, file modes, and the redaction of secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import logs
from engine.config import EngineSettings
from engine.logs import (
    FileLogSettings,
    RedactingFilter,
    file_settings,
    setup_logging,
    teardown_logging,
)
from engine.redaction import MASK, SecretRegistry, env_secrets, redact, register_secret

TOKEN = "7351829046:AAF3kQx9Zr2mVb8LpT4sWn6Hc1Jy5Ed0GuI"
TOKEN_SECRET_PART = TOKEN.split(":", 1)[1]
WEBHOOK = "whsec-dummy-9f8e7d6c5b4a3210"
ADMIN = "adm-dummy-0123456789abcdef"
ENV = {
    "ENGINE_TELEGRAM_TOKEN": TOKEN,
    "ENGINE_WEBHOOK_SECRET": WEBHOOK,
    "ENGINE_ADMIN_TOKEN": ADMIN,
    "BINANCE_API_KEY": "binance-key-value-42",
    "DB_PASSWORD": "correct-horse",
    "OKX_PASSPHRASE": "phrase-123456",
    "SHORT_TOKEN": "abc",  # too short to mask
    "PATH": "/usr/bin:/bin",
}
ALL_SECRETS = (
    TOKEN,
    TOKEN_SECRET_PART,
    WEBHOOK,
    ADMIN,
    "binance-key-value-42",
    "correct-horse",
    "phrase-123456",
)


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    logs.REGISTRY.clear()
    yield
    teardown_logging()
    logs.REGISTRY.clear()


def assert_clean(text: str) -> None:
    for s in ALL_SECRETS:
        assert s not in text, f"secret {s[:6]}... leaked in:\n{text}"


# --- the redactor ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"POST https://api.telegram.org/bot{TOKEN}/sendMessage",
            f"POST https://api.telegram.org/bot{MASK}/sendMessage",
        ),
        (f"http://127.0.0.1:9/bot{TOKEN}?x=1", f"http://127.0.0.1:9/bot{MASK}?x=1"),
        (f"bot token is {TOKEN}.", f"bot token is {MASK}."),
        ("/bot12345:short/getMe", f"/bot{MASK}/getMe"),
        (
            "GET /api/v3/account?timestamp=1&apikey=AbC123&signature=0fa9e&recvWindow=5",
            f"GET /api/v3/account?timestamp=1&apikey={MASK}&signature={MASK}&recvWindow=5",
        ),
        ("login secret=s3cr3t token=t0k3n api_key=k", f"login secret={MASK} token={MASK} api_key={MASK}"),
        ("?client_secret=abc&x=1", f"?client_secret={MASK}&x=1"),
        ("Authorization: Bearer eyJhbGciOi.J9x-y_z", f"Authorization: Bearer {MASK}"),
        ("authorization: Basic dXNlcjpwYXNz", f"authorization: Basic {MASK}"),
        ("Authorization: rawtokenvalue", f"Authorization: {MASK}"),
        (
            "headers={'Authorization': 'Bearer abcdefgh', 'X-MBX-APIKEY': 'k3y123'}",
            f"headers={{'Authorization': '{MASK}', 'X-MBX-APIKEY': '{MASK}'}}",
        ),
        ('{"api_key": "zzz", "symbol": "ETH/BTC"}', f'{{"api_key": "{MASK}", "symbol": "ETH/BTC"}}'),
        ("proxy https://user:hunter22@proxy.local:3128/", f"proxy https://user:{MASK}@proxy.local:3128/"),
    ],
)
def test_patterns_mask_secret_shapes(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # masking is idempotent


@pytest.mark.parametrize(
    "text",
    [
        "env ENGINE_TELEGRAM_TOKEN: sinks.telegram: required when sinks.telegram.enabled",
        "sinks.telegram.token_file: secret file has mode 0644; it must not be readable (chmod 600)",
        "rate limiter: tokens=5 weight=20",
        "psar LONG ETH/BTC entry=0.05123 sl=0.0501 tp1=0.0531 at 2024-01-01T12:30:00+00:00",
        "health server on http://127.0.0.1:8080",
        "sink telegram: attempt 1/5 failed (network error: Cannot connect to host 127.0.0.1:9)",
    ],
)
def test_ordinary_lines_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_registered_and_env_secrets_are_masked_literally() -> None:
    assert env_secrets(ENV) == [
        TOKEN,
        WEBHOOK,
        ADMIN,
        "binance-key-value-42",
        "correct-horse",
        "phrase-123456",
    ]
    assert logs.register_env_secrets(ENV) == 6
    assert register_secret("xyz") is False  # too short: masking it would shred every line
    assert register_secret(None) is False
    assert register_secret("  runtime-secret-1  ") is True
    text = "a correct-horse b binance-key-value-42 c runtime-secret-1 d phrase-123456 xyz"
    assert redact(text) == f"a {MASK} b {MASK} c {MASK} d {MASK} xyz"
    # the URL-encoded form of a secret is masked too
    register_secret("p@ss/w0rd+x")
    assert redact("u=p%40ss%2Fw0rd%2Bx") == f"u={MASK}"


def test_longer_secret_masked_whole_when_one_contains_another() -> None:
    reg = SecretRegistry()
    reg.register("abcdef")
    reg.register("abcdef-ghijkl")
    assert redact("x abcdef-ghijkl y abcdef", reg) == f"x {MASK} y {MASK}"


# --- records through the filter ---------------------------------------------------------------------


def _fail_with_token() -> None:
    url = f"https://api.telegram.org/bot{TOKEN}/sendMessage"
    try:
        {"t": 1}[TOKEN]  # KeyError whose repr is the token
    except KeyError as inner:
        raise RuntimeError(f"POST {url} failed; webhook key {WEBHOOK}") from inner


def test_exception_with_token_is_redacted_in_console_and_json_file(tmp_path: Path) -> None:
    console = io.StringIO()
    path = tmp_path / "logs" / "engine.log"
    setup_logging("INFO", FileLogSettings(path), stream=console, env=ENV, hooks=False)
    log = logging.getLogger("engine.sinks.telegram")
    try:
        _fail_with_token()
    except RuntimeError:
        log.exception(
            "send to %s failed (admin %s)",
            f"/bot{TOKEN}/sendMessage",
            ADMIN,
            extra={"url": f"https://x/bot{TOKEN}/y", "attempt": 3, "nested": {"k": [WEBHOOK]}},
            stack_info=True,
        )
    for h in logs.installed_handlers():
        h.flush()

    out = console.getvalue()
    assert_clean(out)
    assert "send to /bot***/sendMessage failed (admin ***)" in out
    assert "Traceback (most recent call last)" in out and "KeyError" in out and "RuntimeError" in out
    assert "Stack (most recent call last)" in out

    text = path.read_text()
    assert_clean(text)
    lines = text.splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["level"] == "ERROR" and doc["logger"] == "engine.sinks.telegram"
    assert doc["message"] == "send to /bot***/sendMessage failed (admin ***)"
    assert doc["ts"].endswith("Z") and "T" in doc["ts"]
    assert "During handling of the above exception" not in doc["exc_info"]
    assert "The above exception was the direct cause" in doc["exc_info"]
    assert f"bot{MASK}/sendMessage failed; webhook key {MASK}" in doc["exc_info"]
    assert "stack_info" in doc
    assert doc["url"] == f"https://x/bot{MASK}/y"
    assert doc["attempt"] == 3
    assert doc["nested"] == {"k": [MASK]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unformattable_args_do_not_leak() -> None:
    console = io.StringIO()
    setup_logging("INFO", stream=console, env=ENV, hooks=False)
    logging.getLogger("engine").error("two %s %s but one given", TOKEN)
    out = console.getvalue()
    assert_clean(out)
    assert "did not fit the format" in out


def test_filter_also_protects_foreign_handlers() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logs.attach_redaction([handler])
    logs.attach_redaction([handler])
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    logger = logging.getLogger("test.foreign")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("token=%s", "abcdef123")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert stream.getvalue() == f"token={MASK}\n"


def test_uncaught_exception_goes_through_the_redactor() -> None:
    console = io.StringIO()
    previous = sys.excepthook
    setup_logging("INFO", stream=console, env=ENV, hooks=True)
    assert sys.excepthook is not previous
    try:
        _fail_with_token()
    except RuntimeError:
        sys.excepthook(*sys.exc_info())  # type: ignore[arg-type]
    out = console.getvalue()
    assert "CRITICAL engine.crash: uncaught exception" in out
    assert_clean(out)
    teardown_logging()
    assert sys.excepthook is previous


# --- file: levels, modes, rotation -----------------------------------------------------------------


def test_file_level_and_console_level_are_independent(tmp_path: Path) -> None:
    console = io.StringIO()
    path = tmp_path / "engine.log"
    setup_logging("WARNING", FileLogSettings(path, level="DEBUG"), stream=console, env={}, hooks=False)
    log = logging.getLogger("engine.test")
    log.debug("debug line")
    log.warning("warning line")
    assert "debug line" not in console.getvalue() and "warning line" in console.getvalue()
    file_lines = [json.loads(line)["message"] for line in path.read_text().splitlines()]
    assert file_lines == ["debug line", "warning line"]


def test_text_file_when_json_is_off(tmp_path: Path) -> None:
    path = tmp_path / "engine.log"
    setup_logging("INFO", FileLogSettings(path, json=False), stream=io.StringIO(), env=ENV, hooks=False)
    logging.getLogger("engine").info("webhook secret %s", WEBHOOK)
    line = path.read_text().strip()
    assert line.endswith(f"INFO    engine: webhook secret {MASK}")
    assert line[:4].isdigit() and "+00:00" in line.split()[0]


def test_file_is_0600_whatever_the_umask_and_existing_mode(tmp_path: Path) -> None:
    path = tmp_path / "engine.log"
    path.write_text("old line\n")
    os.chmod(path, 0o644)
    old_backup = tmp_path / "engine.log.1"
    old_backup.write_text("older\n")
    os.chmod(old_backup, 0o666)
    old_umask = os.umask(0)
    try:
        console = io.StringIO()
        setup_logging("INFO", FileLogSettings(path), stream=console, env={}, hooks=False)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(old_backup.stat().st_mode) == 0o600
    assert "log file was readable by group/others" in console.getvalue()


def test_rotation_keeps_backups_and_their_modes(tmp_path: Path) -> None:
    path = tmp_path / "engine.log"
    setup_logging(
        "INFO", FileLogSettings(path, max_bytes=2048, backups=2), stream=io.StringIO(), env={}, hooks=False
    )
    log = logging.getLogger("engine.rotate")
    for i in range(200):
        log.info("line %04d %s", i, "x" * 60)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["engine.log", "engine.log.1", "engine.log.2"]
    for p in tmp_path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        assert p.stat().st_size <= 2048
        for line in p.read_text().splitlines():
            json.loads(line)
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["message"].startswith("line 0199")


def test_setup_is_idempotent_and_unopenable_file_keeps_old_handlers(tmp_path: Path) -> None:
    first = setup_logging("INFO", stream=io.StringIO(), env={}, hooks=False)
    second = setup_logging(
        "INFO", FileLogSettings(tmp_path / "a.log"), stream=io.StringIO(), env={}, hooks=False
    )
    root = logging.getLogger()
    assert not set(first) & set(root.handlers)
    assert set(second) <= set(root.handlers) and len(second) == 2
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(OSError):
        setup_logging("INFO", FileLogSettings(blocker / "x.log"), stream=io.StringIO(), env={}, hooks=False)
    assert set(second) <= set(root.handlers)


# --- config -------------------------------------------------------------------------------------------


def test_logging_section_from_toml_keys_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = EngineSettings(
        **{"logging": {"file": "logs/engine.log", "json": False, "max_bytes": 4096, "backups": 2}}
    )
    fs = file_settings(s.logging)
    assert fs is not None
    assert fs.path == Path.cwd() / "logs" / "engine.log"
    assert (fs.json, fs.max_bytes, fs.backups, fs.level) == (False, 4096, 2, None)
    assert file_settings(EngineSettings().logging) is None
    d = EngineSettings().logging
    assert (d.file, d.max_bytes, d.backups, d.json_lines) == (None, 10 * 1024 * 1024, 5, True)
    monkeypatch.setenv("ENGINE__LOGGING__FILE", str(tmp_path / "e.log"))
    monkeypatch.setenv("ENGINE__LOGGING__LEVEL", "DEBUG")
    s = EngineSettings()
    assert s.logging.file == str(tmp_path / "e.log") and s.logging.level == "DEBUG"


@pytest.mark.parametrize(
    "bad",
    [{"backups": 0}, {"max_bytes": 10}, {"level": "LOUD"}, {"json_lines": True}, {"rotate": True}],
)
def test_logging_section_rejects_bad_values(bad: dict[str, object]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        EngineSettings(**{"logging": bad})
