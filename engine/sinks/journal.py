"""The signal journal: append-only JSONL, the record of truth for what the engine found.

Every signal is appended and fsynced before any other sink sees it, so a crash between
"found" and "delivered" loses nothing. That ordering is why `append` is a plain synchronous
call made by the engine rather than a queued sink; `JournalSink` is only the adapter for the
events that travel through the sink fan-out (consensus, outcomes).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from engine.errors import StateError
from engine.sinks.base import SinkEvent

_FILE_MODE = 0o600
_NL = b"\n"


def _encode_default(value: Any) -> Any:
    # Signal metadata may hold read-only mappings; orjson only knows dict itself.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class Journal:
    """One JSONL file; opened for writing on the first append.

    Opening lazily keeps readers (`engine stats`, replay reports) from touching a file the
    running engine is writing. The first append also removes a torn last line left by a
    crash mid-write, so the next record starts on a line of its own instead of fusing with
    the fragment into one unreadable line.
    """

    def __init__(
        self,
        path: Path,
        *,
        logger: logging.Logger | None = None,
        max_bytes: int | None = None,
        backups: int = 10,
    ) -> None:
        self.path = Path(path)
        self._log = logger or logging.getLogger(__name__)
        self._fd: int | None = None
        self._closed = False
        self.max_bytes = max_bytes
        self.backups = backups

    def _rotate_if_full(self, fd: int, incoming: int) -> int:
        """Start a new file once this one would pass `max_bytes`: signals.jsonl becomes
        signals.jsonl.1, older ones shift up and the oldest beyond `backups` is deleted.
        Rotation happens between whole records, so no record is ever split across files."""
        if self.max_bytes is None:
            return fd
        size = os.fstat(fd).st_size
        if size == 0 or size + incoming <= self.max_bytes:
            return fd
        os.close(fd)
        self._fd = None
        oldest = self.path.with_name(f"{self.path.name}.{self.backups}")
        oldest.unlink(missing_ok=True)
        for k in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{k}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{k + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        return self._open()

    def _open(self) -> int:
        if self._closed:
            raise StateError(f"journal {self.path} is closed")
        if self._fd is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
            try:
                os.fchmod(fd, _FILE_MODE)
                self._repair_tail(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def _repair_tail(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == _NL:
            return
        # Scan back in blocks for the last complete line.
        end, block = size, 4096
        while end > 0:
            start = max(0, end - block)
            chunk = os.pread(fd, end - start, start)
            nl = chunk.rfind(_NL)
            if nl >= 0:
                keep = start + nl + 1
                break
            end = start
        else:
            keep = 0
        tail = os.pread(fd, size - keep, keep)
        try:
            orjson.loads(tail)
        except orjson.JSONDecodeError:
            os.ftruncate(fd, keep)
            os.fsync(fd)
            # The append that wrote this never returned, so no sink saw it; the log keeps the bytes.
            self._log.warning(
                "journal %s ended in an incomplete line from an interrupted write; removed it "
                "before appending (%d bytes): %r",
                self.path,
                len(tail),
                tail,
            )
            return
        # A complete record that merely lacks its newline (an edited file): keep it, end the line.
        os.write(fd, _NL)
        os.fsync(fd)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record durably; when this returns, the line is on disk.

        A failed write is rolled back to the previous end of file, so a full disk leaves
        no fragment for the next record to collide with.
        """
        try:
            line = orjson.dumps(
                dict(record),
                default=_encode_default,
                option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS,
            )
        except TypeError as e:
            raise StateError(f"journal {self.path}: record cannot be encoded: {e}") from e
        try:
            fd = self._rotate_if_full(self._open(), len(line))
            before = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, before)
                raise
        except OSError as e:
            raise StateError(f"journal {self.path}: cannot append: {e}") from e

    def read_all(self) -> list[dict[str, Any]]:
        """Every record in order; an unreadable line is skipped with a warning, never fatal.

        The usual bad line is the last one, cut short by a crash or still being written by
        the running engine. The bytes stay in the file either way.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StateError(f"journal {self.path}: cannot read: {e}") from e
        lines = raw.split(_NL)
        complete = raw.endswith(_NL)
        if complete:
            lines.pop()
        records: list[dict[str, Any]] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            is_tail = number == len(lines) and not complete
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                if is_tail:
                    self._log.warning(
                        "journal %s: skipped the truncated last line %d (%d bytes)",
                        self.path,
                        number,
                        len(line),
                    )
                else:
                    self._log.warning("journal %s: skipped line %d, not valid JSON: %s", self.path, number, e)
                continue
            if not isinstance(value, dict):
                self._log.warning(
                    "journal %s: skipped line %d, a %s rather than a record",
                    self.path,
                    number,
                    type(value).__name__,
                )
                continue
            records.append(value)
        return records

    def close(self) -> None:
        """Close the file for good: a later append raises instead of silently reopening it."""
        self._closed = True
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class JournalSink:
    """Puts consensus and outcome events in the journal next to the signals.

    Every line keeps the same discriminator, `kind` = signal | consensus | outcome. A record
    that brings its own different `kind` (an alert's "new"/"update") keeps it as
    `record_kind`. Signal events are skipped: the engine journals each signal itself before
    publishing it, and writing it again here would double it.
    """

    def __init__(self, journal: Journal, *, name: str = "journal") -> None:
        self.name = name
        self._journal = journal

    async def send(self, event: SinkEvent) -> None:
        """Sink.send: journal consensus and outcome events; signals were journaled by the pipeline already."""
        if event.kind == "signal":
            return
        record: dict[str, Any] = {"kind": event.kind}
        for key, value in event.record.items():
            if key == "kind":
                if value != event.kind:
                    record["record_kind"] = value
            else:
                record[key] = value
        self._journal.append(record)

    async def close(self) -> None:
        """Leaves the journal open: it is shared with the engine, whose owner closes it."""
