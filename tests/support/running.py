"""Helpers for tests that run `engine` as a user would: a subprocess probed over HTTP."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "sample"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of one request; HTTP errors are answers too, not exceptions."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def get(url: str) -> tuple[int, str]:
    """GET `url`: (status, body)."""
    return http(url)


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    """Poll `pred` until it returns something truthy (connection errors count as "not yet")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = pred()
        except (OSError, ValueError):
            got = None
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSONL file (none if it does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def journal(state: Path) -> list[dict[str, Any]]:
    """The engine's journal in a state directory."""
    return jsonl(state / "signals.jsonl")
