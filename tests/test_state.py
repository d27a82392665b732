"""The state directory: atomic snapshots, moved-aside corruption, modes, single-instance lock."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from engine.clock import VirtualClock
from engine.errors import StateError, StateLocked
from engine.state import EngineState, StateStore


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sample_state() -> EngineState:
    return EngineState(
        saved_at=1_515_753_300.0,
        cooldowns={"psar|ETH/BTC|5m|LONG": 1_515_756_900.0},
        open_signals=[{"id": "abc", "entry": 0.095012, "take_profits": [0.0959, 0.0963]}],
        consensus={"memory": {"ETH/BTC_LONG_5m": {"contributors": ["most", "psar"]}}},
        sinks={"telegram": {"cursor": 12}},
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "state")
    s.lock()
    yield s
    s.unlock()


def test_missing_file_is_an_empty_state(store: StateStore) -> None:
    assert store.load() == EngineState.empty()


def test_round_trip(store: StateStore) -> None:
    state = sample_state()
    store.save(state)
    assert store.load() == state
    store.save(state.model_copy(update={"saved_at": 1_515_753_600.0, "cooldowns": {}}))
    assert store.load().cooldowns == {}


def test_modes_are_0700_and_0600(store: StateStore) -> None:
    store.save(sample_state())
    assert mode_of(store.directory) == 0o700
    assert mode_of(store.path) == 0o600
    assert mode_of(store.lock_path) == 0o600


def test_open_directory_is_tightened_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "state"
    d.mkdir()
    os.chmod(d, 0o755)
    s = StateStore(d)
    with caplog.at_level(logging.WARNING):
        s.save(sample_state())
        os.chmod(d, 0o775)
        s.save(sample_state())
    assert mode_of(d) == 0o700
    warnings = [r for r in caplog.records if "group/others" in r.getMessage()]
    assert len(warnings) == 1
    assert str(d) in warnings[0].getMessage()


def test_failed_replace_keeps_previous_file_and_leaves_no_temp(tmp_path: Path) -> None:
    d = tmp_path / "state"
    StateStore(d).save(sample_state())
    before = (d / "engine.json").read_bytes()

    def broken_replace(src: Path, dst: Path) -> None:
        raise OSError(28, "No space left on device")

    s = StateStore(d, replace=broken_replace)
    with pytest.raises(StateError, match="No space left") as info:
        s.save(EngineState(saved_at=2.0))
    assert isinstance(info.value.__cause__, OSError)
    assert (d / "engine.json").read_bytes() == before
    assert sorted(p.name for p in d.iterdir()) == ["engine.json"]
    assert not s.writable()
    assert s.last_save_error is not None


def test_writable_recovers_after_a_good_save(tmp_path: Path) -> None:
    fail = True

    def flaky_replace(src: Path, dst: Path) -> None:
        if fail:
            raise OSError(5, "I/O error")
        os.replace(src, dst)

    s = StateStore(tmp_path / "state", replace=flaky_replace)
    with pytest.raises(StateError):
        s.save(sample_state())
    assert not s.writable()
    fail = False
    s.save(sample_state())
    assert s.writable()
    assert s.last_save_error is None


def test_writable_is_false_for_a_missing_directory(tmp_path: Path) -> None:
    assert not StateStore(tmp_path / "never-created").writable()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"version": 1, "saved_at": 1.0, "cooldo', "not valid JSON"),
        (b'{"version": 1, "saved_at": 1.0, "unknown_section": {}}', "does not match the state schema"),
        (b'{"version": 1, "saved_at": "yesterday"}', "does not match the state schema"),
        (b"[1, 2, 3]", "does not match the state schema"),
    ],
)
def test_bad_file_is_moved_aside_and_load_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, reason: str
) -> None:
    d = tmp_path / "state"
    clock = VirtualClock(start=1_515_753_300.0)  # 2018-01-12T10:35:00Z
    s = StateStore(d, clock=clock)
    s.lock()
    try:
        s.path.write_bytes(content)
        with caplog.at_level(logging.WARNING):
            assert s.load() == EngineState.empty()
    finally:
        s.unlock()
    aside = d / "engine.json.corrupt-20180112T103500Z"
    assert aside.read_bytes() == content
    assert not s.path.exists()
    message = " ".join(r.getMessage() for r in caplog.records)
    assert str(s.path) in message
    assert reason in message
    assert aside.name in message


def test_second_corrupt_file_in_the_same_second_does_not_overwrite_the_first(tmp_path: Path) -> None:
    s = StateStore(tmp_path, clock=VirtualClock(start=1_515_753_300.0))
    s.path.write_bytes(b"first")
    s.load()
    s.path.write_bytes(b"second")
    s.load()
    assert (tmp_path / "engine.json.corrupt-20180112T103500Z").read_bytes() == b"first"
    assert (tmp_path / "engine.json.corrupt-20180112T103500Z-1").read_bytes() == b"second"


def test_state_from_a_newer_engine_is_refused_not_moved(tmp_path: Path) -> None:
    s = StateStore(tmp_path)
    s.path.write_bytes(orjson.dumps({"version": 2, "saved_at": 1.0, "new_section": {}}))
    with pytest.raises(StateError, match="newer"):
        s.load()
    assert s.path.exists()


def test_non_finite_values_are_refused_before_they_reach_disk() -> None:
    with pytest.raises(ValueError, match="finite"):
        EngineState(saved_at=1.0, cooldowns={"k": float("inf")})


def test_second_store_in_same_process_is_locked_out(tmp_path: Path) -> None:
    first = StateStore(tmp_path / "state")
    first.lock()
    second = StateStore(tmp_path / "state")
    try:
        with pytest.raises(StateLocked, match=rf"another engine \(pid {os.getpid()}\) is using state dir"):
            second.lock()
        assert not second.locked
    finally:
        first.unlock()
    second.lock()
    assert second.locked
    second.unlock()


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.ftruncate(fd, 0)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_held_by_another_process_names_its_pid(tmp_path: Path) -> None:
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(d / "engine.lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        s = StateStore(d)
        with pytest.raises(StateLocked) as info:
            s.lock()
        assert f"pid {proc.pid}" in str(info.value)
        assert str(d) in str(info.value)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    # The kernel drops the lock with the process: no stale lock to clean up.
    s.lock()
    assert (d / "engine.lock").read_text().strip() == str(os.getpid())
    s.unlock()


def test_lock_removes_temp_files_of_an_interrupted_save(tmp_path: Path) -> None:
    leftover = tmp_path / ".engine.json.tmp-999-deadbeef"
    leftover.write_bytes(b"{")
    s = StateStore(tmp_path)
    s.lock()
    s.unlock()
    assert not leftover.exists()
