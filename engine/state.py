"""The state directory: an atomic snapshot file plus the single-instance lock.

Two engines writing the same snapshot would silently undo each other's cooldowns, so the
directory is guarded by an flock that the kernel drops when the process dies (no stale-lock
cleanup, no pid guessing). Snapshots are written to a temp file, fsynced and renamed over the
old one, so a crash at any moment leaves either the previous snapshot or the new one, never
half of each. A snapshot that cannot be read is moved aside rather than overwritten, so a bad
file costs a warning and a fresh start, never the evidence.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from engine.clock import Clock, RealClock
from engine.errors import StateError, StateLocked

STATE_VERSION = 1
STATE_FILE = "engine.json"
LOCK_FILE = "engine.lock"
_TMP_PREFIX = f".{STATE_FILE}.tmp-"
_DIR_MODE = 0o700
_FILE_MODE = 0o600

Replace = Callable[[Path, Path], None]


class EngineState(BaseModel):
    """The persisted snapshot; its schema is the contract between an engine and its successor.

    Unknown keys are refused rather than dropped, so a file written by a different schema is
    noticed instead of being half-read and then overwritten without the parts we ignored.
    Non-finite floats are refused at construction because JSON cannot carry them back.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    version: int = STATE_VERSION
    saved_at: float
    cooldowns: dict[str, float] = {}
    open_signals: list[dict[str, Any]] = []
    consensus: dict[str, Any] = {}
    sinks: dict[str, Any] = {}
    outcomes: dict[str, Any] = {}

    @classmethod
    def empty(cls) -> EngineState:
        """The state of an engine that has never run (saved_at 0 marks "never saved")."""
        return cls(saved_at=0.0)


class StateStore:
    """Owns one state directory: its permissions, its lock and its snapshot file.

    `replace` is the rename that publishes a snapshot; it is injectable so tests can make the
    final step fail and prove the previous snapshot survives. `clock` only names the files
    that corrupt snapshots are moved to.
    """

    def __init__(
        self,
        directory: Path,
        *,
        replace: Replace = os.replace,
        logger: logging.Logger | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self.lock_path = self.directory / LOCK_FILE
        self._replace = replace
        self._log = logger or logging.getLogger(__name__)
        self._clock: Clock = clock or RealClock()
        self._lock_fd: int | None = None
        self._warned_mode = False
        self._last_save_error: str | None = None

    # --- directory ------------------------------------------------------------------------

    def _ensure_dir(self) -> None:
        """Create the directory 0700, or tighten it: snapshots may name strategies and sinks."""
        try:
            self.directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            st = self.directory.stat()
            if not stat.S_ISDIR(st.st_mode):
                raise StateError(f"state dir {self.directory} is not a directory")
            mode = stat.S_IMODE(st.st_mode)
            if mode != _DIR_MODE:
                if mode & 0o077 and not self._warned_mode:
                    self._warned_mode = True
                    self._log.warning(
                        "state dir %s was accessible to group/others (mode %04o); tightened to %04o",
                        self.directory,
                        mode,
                        _DIR_MODE,
                    )
                os.chmod(self.directory, _DIR_MODE)
        except OSError as e:
            raise StateError(f"cannot prepare state dir {self.directory}: {e}") from e

    # --- lock -----------------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        """Whether this store holds the directory's lock (see `lock()`)."""
        return self._lock_fd is not None

    def lock(self) -> None:
        """Take the directory for this engine, or explain who has it.

        flock belongs to the open file description, so a second store in this same process
        conflicts just like another process does, and the kernel releases it on any exit.
        Calling it again while already holding the lock is a no-op.
        """
        if self._lock_fd is not None:
            return
        self._ensure_dir()
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
        except OSError as e:
            raise StateError(f"cannot open lock file {self.lock_path}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                who = f"pid {holder}" if holder is not None else "pid unknown"
                raise StateLocked(
                    f"another engine ({who}) is using state dir {self.directory}; "
                    "stop it or point this one at a different state dir"
                ) from e
            raise StateError(f"cannot lock {self.lock_path}: {e}") from e
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            os.close(fd)
            raise StateError(f"cannot write pid to {self.lock_path}: {e}") from e
        self._lock_fd = fd
        self._remove_stale_temps()

    def unlock(self) -> None:
        """Release the directory; the lock file stays, since deleting it would race a new owner."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _remove_stale_temps(self) -> None:
        # Only the lock holder writes temps, so any left now belong to a writer that died.
        for tmp in self.directory.glob(f"{_TMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                self._log.info("removed temp file %s left by an interrupted save", tmp)

    # --- snapshot -------------------------------------------------------------------------

    def load(self) -> EngineState:
        """The last snapshot; a missing file is a first run, a bad one is moved aside."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return EngineState.empty()
        except OSError as e:
            return self._set_aside(f"unreadable: {e}")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return self._set_aside(f"not valid JSON: {e}")
        if isinstance(data, dict):
            version = data.get("version")
            if isinstance(version, int) and version > STATE_VERSION:
                # A newer engine's file is not corrupt; refusing keeps it for that engine.
                raise StateError(
                    f"{self.path} has state version {version}, newer than this engine's "
                    f"{STATE_VERSION}; upgrade the engine or use another state dir"
                )
        try:
            return EngineState.model_validate(data)
        except ValidationError as e:
            return self._set_aside(f"does not match the state schema: {_first_errors(e)}")

    def _set_aside(self, reason: str) -> EngineState:
        stamp = datetime.fromtimestamp(self._clock.now(), tz=UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.directory / f"{STATE_FILE}.corrupt-{stamp}"
        n = 1
        while target.exists():
            target = self.directory / f"{STATE_FILE}.corrupt-{stamp}-{n}"
            n += 1
        try:
            os.rename(self.path, target)
        except OSError as e:
            raise StateError(
                f"state file {self.path} is {reason}, and it could not be moved aside: {e}"
            ) from e
        self._log.warning(
            "state file %s is %s; moved it to %s and starting with empty state",
            self.path,
            reason,
            target.name,
        )
        return EngineState.empty()

    def save(self, state: EngineState) -> None:
        """Publish a snapshot atomically and durably, or raise and leave the previous one."""
        tmp = self.directory / f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self._ensure_dir()
            payload = orjson.dumps(state.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, _FILE_MODE)
            with open(fd, "wb", closefd=True) as f:
                # umask can only remove bits; fchmod makes the mode exactly 0600 regardless.
                os.fchmod(f.fileno(), _FILE_MODE)
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            self._replace(tmp, self.path)
            self._fsync_dir()
        except (OSError, StateError, ValueError, TypeError) as e:
            # ValueError/TypeError: a value in the free-form sections that JSON cannot hold.
            with contextlib.suppress(OSError):
                tmp.unlink()
            self._last_save_error = f"{type(e).__name__}: {e}"
            if isinstance(e, StateError):
                raise
            raise StateError(f"cannot save state to {self.path}: {e}") from e
        self._last_save_error = None

    def _fsync_dir(self) -> None:
        # The rename is only durable once the directory entry itself reaches the disk.
        dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # --- readiness ------------------------------------------------------------------------

    @property
    def last_save_error(self) -> str | None:
        """Why the most recent save failed, or None after a successful one."""
        return self._last_save_error

    def writable(self) -> bool:
        """False when the next snapshot would not land, so /ready can say so before it matters.

        A permission check alone misses a full disk, so a failed last save counts too. No side
        effects: this is polled.
        """
        if self._last_save_error is not None:
            return False
        try:
            return self.directory.is_dir() and os.access(self.directory, os.W_OK | os.X_OK)
        except OSError:
            return False


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _first_errors(e: ValidationError, limit: int = 3) -> str:
    parts = [f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()]
    more = f" (+{len(parts) - limit} more)" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more
