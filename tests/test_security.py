"""Secrets only from env or chmod-600 files, a private state dir, and no secret anywhere after a run.

The last test runs `engine run` as a user would, with dummy secrets in the environment, a
Telegram sink whose "API" echoes the request path (bot token included) back in its error, a
webhook sink pointing at a closed port, and a JSON log file at DEBUG; then it scans everything the
engine wrote or served for the secret values.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from engine.config import EngineSettings
from engine.errors import ConfigError, ConfigProblem, StateError
from engine.redaction import REGISTRY, redact
from engine.secret_files import (
    ADMIN_TOKEN_ENV,
    admin_token,
    check_admin_token,
    check_state_permissions,
    read_admin_token,
    read_secret,
)
from engine.sinks.build import check_sinks
from engine.sinks.build import read_secret as build_read_secret
from tests.support.running import DATA, ROOT, free_port, http, jsonl, wait_for

TOKEN = "7351829046:AAF3kQx9Zr2mVb8LpT4sWn6Hc1Jy5Ed0GuI"
WEBHOOK_SECRET = "whsec-dummy-9f8e7d6c5b4a3210"
ADMIN = "adm-dummy-0123456789abcdef"


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


# --- secrets from env or chmod-600 files ----------------------------------------------------------


def settings(**server: Any) -> EngineSettings:
    return EngineSettings(**{"server": server})


def test_admin_token_from_env_registered_for_redaction() -> None:
    REGISTRY.clear()
    token, problems = read_admin_token(settings(), {ADMIN_TOKEN_ENV: f"  {ADMIN}\n"})
    assert (token, problems) == (ADMIN, [])
    assert redact(f"x {ADMIN} y") == "x *** y"


def test_no_admin_token_is_not_a_problem() -> None:
    assert read_admin_token(settings(), {}) == (None, [])
    assert admin_token(settings(), {}) is None
    assert check_admin_token(settings(), {}) == []


def test_admin_token_file_must_be_0600(tmp_path: Path) -> None:
    f = tmp_path / "admin.token"
    f.write_text(ADMIN + "\n")
    f.chmod(0o644)
    token, problems = read_admin_token(settings(admin_token_file=str(f)), {})
    assert token is None
    assert [(p.path, "mode 0644" in p.message) for p in problems] == [("server.admin_token_file", True)]
    assert ADMIN not in str(problems[0])
    with pytest.raises(ConfigError):
        admin_token(settings(admin_token_file=str(f)), {})
    f.chmod(0o600)
    REGISTRY.clear()
    assert admin_token(settings(admin_token_file=str(f)), {}) == ADMIN
    assert ADMIN in REGISTRY  # a secret read from a file is masked in logs too
    # env wins over the file
    assert admin_token(settings(admin_token_file=str(f)), {ADMIN_TOKEN_ENV: "from-env-0123456789"}) == (
        "from-env-0123456789"
    )


@pytest.mark.parametrize(
    ("value", "message"), [("short-token", "too short"), ("has space in the token!", "whitespace")]
)
def test_weak_admin_tokens_are_refused(value: str, message: str) -> None:
    problems = check_admin_token(settings(), {ADMIN_TOKEN_ENV: value})
    assert len(problems) == 1 and message in problems[0].message
    assert value not in str(problems[0])


def test_admin_token_file_missing_empty_or_not_a_file(tmp_path: Path) -> None:
    missing = read_admin_token(settings(admin_token_file=str(tmp_path / "nope")), {})[1]
    assert "cannot read secret file" in missing[0].message
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    assert "empty" in read_admin_token(settings(admin_token_file=str(empty)), {})[1][0].message
    assert "regular file" in read_admin_token(settings(admin_token_file=str(tmp_path)), {})[1][0].message


def test_sink_secret_files_keep_the_same_rules(tmp_path: Path) -> None:
    assert build_read_secret is read_secret  # sinks.build keeps its public name
    f = tmp_path / "tg.token"
    f.write_text(TOKEN)
    f.chmod(0o640)
    s = EngineSettings(**{"sinks": {"telegram": {"enabled": True, "chat_id": "-1001", "token_file": str(f)}}})
    problems = check_sinks(s, env={})
    assert len(problems) == 1 and "mode 0640" in problems[0].message
    f.chmod(0o600)
    assert check_sinks(s, env={}) == []
    problems2: list[ConfigProblem] = []
    assert read_secret("X_TOKEN", None, "sinks.x", "token_file", problems2, {}, required=False) is None
    assert problems2 == []
    read_secret("X_TOKEN", None, "sinks.x", "token_file", problems2, {})
    assert "required when sinks.x.enabled" in problems2[0].message


# --- state dir permissions --------------------------------------------------------------------------


def test_state_permissions_are_tightened_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    sub = state / "archive"
    sub.mkdir(parents=True)
    (state / "engine.json").write_text("{}")
    (state / "signals.jsonl").write_text("")
    (state / "dead-letter.jsonl").write_text("")
    (sub / "old.jsonl").write_text("")
    outside = tmp_path / "outside.txt"
    outside.write_text("")
    outside.chmod(0o644)
    (state / "link").symlink_to(outside)
    state.chmod(0o755)
    sub.chmod(0o777)
    (state / "engine.json").chmod(0o644)
    (state / "signals.jsonl").chmod(0o666)
    (state / "dead-letter.jsonl").chmod(0o600)
    (sub / "old.jsonl").chmod(0o604)

    with caplog.at_level(logging.WARNING, logger="engine.secret_files"):
        repaired = check_state_permissions(state)
    assert sorted(repaired) == sorted(
        [
            f"{state}: 0755 -> 0700",
            f"{sub}: 0777 -> 0700",
            f"{state / 'engine.json'}: 0644 -> 0600",
            f"{state / 'signals.jsonl'}: 0666 -> 0600",
            f"{sub / 'old.jsonl'}: 0604 -> 0600",
        ]
    )
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 5
    assert mode(state) == mode(sub) == 0o700
    for f in ("engine.json", "signals.jsonl", "dead-letter.jsonl"):
        assert mode(state / f) == 0o600
    assert mode(outside) == 0o644  # a symlink is not followed
    assert check_state_permissions(state) == []  # nothing left to repair


def test_state_permissions_missing_dir_and_wrong_kind(tmp_path: Path) -> None:
    assert check_state_permissions(tmp_path / "absent") == []
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(StateError, match="not a directory"):
        check_state_permissions(f)


def test_state_permissions_refuse_what_cannot_be_fixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    state.chmod(0o700)
    (state / "engine.json").write_text("{}")
    (state / "engine.json").chmod(0o644)

    def denied(path: Any, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", denied)
    with pytest.raises(StateError, match="cannot be tightened"):
        check_state_permissions(state)


# --- a whole run with dummy secrets ---------------------------------------------------------------------


class EchoTelegram(BaseHTTPRequestHandler):
    """A "Bot API" that refuses every message and quotes the request path (token included)."""

    paths: list[str] = []

    def do_POST(self) -> None:
        self.paths.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(
            {"ok": False, "error_code": 400, "description": f"Bad Request: no chat for {self.path}"}
        )
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echo_telegram() -> Iterator[tuple[str, list[str]]]:
    paths: list[str] = []
    handler = type("Handler", (EchoTelegram,), {"paths": paths})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", paths
    srv.shutdown()
    srv.server_close()


def dead_letters(state: Path) -> list[dict[str, Any]]:
    return jsonl(state / "dead-letter.jsonl")


def enough_dead_letters(state: Path, per_sink: int) -> bool:
    sinks = [d["sink"] for d in dead_letters(state)]
    return min(sinks.count("telegram"), sinks.count("webhook")) >= per_sink


def test_no_secret_in_state_journal_logs_metrics_or_ready(
    tmp_path: Path, echo_telegram: tuple[str, list[str]]
) -> None:
    telegram_url, telegram_paths = echo_telegram
    port, closed = free_port(), free_port()
    config, state, log_file = tmp_path / "config", tmp_path / "state", tmp_path / "logs" / "engine.log"
    (config / "strategies").mkdir(parents=True)
    (config / "engine.toml").write_text(
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
[logging]
file = "{log_file}"
level = "DEBUG"
max_bytes = 1048576
backups = 2
[consensus]
threshold = 1.5
[sinks.telegram]
enabled = true
chat_id = -1001234567890
api_url = "{telegram_url}"
max_attempts = 1
[sinks.webhook]
enabled = true
url = "http://127.0.0.1:{closed}/hook"
max_attempts = 1
timeout_seconds = 2
"""
    )
    syms = '["ETH/BTC", "LTC/BTC", "XMR/BTC"]'
    (config / "strategies" / "psar.toml").write_text(f"symbols = {syms}\n")
    (config / "strategies" / "most.toml").write_text(f"symbols = {syms}\n")
    env = {
        **os.environ,
        "ENGINE_TELEGRAM_TOKEN": TOKEN,
        "ENGINE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ENGINE_ADMIN_TOKEN": ADMIN,
    }
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", "--config", str(config), "--state", str(state)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: http(base + "/ready")[0] == 200, 60, "/ready 200")
        wait_for(lambda: enough_dead_letters(state, 3), 60, "3 dead letters from each sink")
        ready_status, ready = http(base + "/ready")
        metrics_status, metrics = http(base + "/metrics")
        health_status, health = http(base + "/health")
        admin_status, admin = http(
            base + "/admin/reload", "POST", {"Authorization": "Bearer not-the-token-0123456789"}
        )
        # an authorized reload must not leak either
        reload_status, reloaded = http(base + "/admin/reload", "POST", {"Authorization": f"Bearer {ADMIN}"})
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert ready_status == 200 and metrics_status == 200 and health_status == 200
    assert admin_status == 401  # a wrong bearer token is refused
    assert reload_status == 200, reloaded
    assert json.loads(reloaded)["ok"] is True
    assert 'engine_sink_messages_total{outcome="dead_letter",sink="telegram"}' in metrics
    # the test is only meaningful if the secret really was in play: the token went out in the URL
    assert any(TOKEN in p for p in telegram_paths)

    needles = {
        "telegram token": TOKEN,
        "telegram token, secret part": TOKEN.split(":", 1)[1],
        "telegram token, url-encoded": quote(TOKEN, safe=""),
        "webhook secret": WEBHOOK_SECRET,
        "admin token": ADMIN,
    }
    haystacks: dict[str, bytes] = {
        "stdout": out.encode(),
        "stderr": err.encode(),
        "/ready": ready.encode(),
        "/metrics": metrics.encode(),
        "/health": health.encode(),
        "/admin/reload": admin.encode(),
        "/admin/reload (authorized)": reloaded.encode(),
    }
    files = [p for p in state.rglob("*") if p.is_file()] + [
        p for p in log_file.parent.rglob("*") if p.is_file()
    ]
    for p in files:
        haystacks[str(p)] = p.read_bytes()
    assert {"engine.json", "signals.jsonl", "dead-letter.jsonl"} <= {p.name for p in files}
    assert log_file in files
    leaks = [
        f"{what} in {where}"
        for where, data in haystacks.items()
        for what, s in needles.items()
        if s.encode() in data
    ]
    assert not leaks, leaks

    # the places scanned really hold what a leak would have touched
    dead = (state / "dead-letter.jsonl").read_text()
    assert "/bot***/sendMessage" in dead  # Telegram's echo of the URL, masked before it was written
    log_lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(r["level"] == "DEBUG" for r in log_lines)
    assert any("sink telegram: could not deliver" in r["message"] for r in log_lines)
    assert any("sink webhook: could not deliver" in r["message"] for r in log_lines)
    assert mode(log_file) == 0o600
    assert mode(state) == 0o700
    for p in state.rglob("*"):
        if p.is_file():
            assert mode(p) == 0o600, p
