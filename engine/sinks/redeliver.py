"""Retrying the dead-letter file at start-up, without losing a message to a crash.

`redeliver()` first renames `dead-letter.jsonl` to a numbered batch file
(`dead-letter.redeliver-N.jsonl`), so new failures start a fresh dead-letter file and the
batch is never appended to while it is being read. Each message of the batch is handed to its
sink's queue through `Dispatcher.submit`; once the sink delivered it, or the dispatcher wrote
it to the dead-letter file again, its line number is appended (fsynced) to the batch's
`.done` file. Only when every line is settled is the batch deleted. A crash at any point
leaves the batch and its `.done` file behind, and the next start resumes with the lines not
yet settled: a message is never lost, and at worst one that was in flight at the crash is
delivered twice.

Messages for a sink that is no longer configured are copied back to the dead-letter file
unchanged; lines that cannot be parsed (a write torn by a crash) are moved to
`dead-letter.unreadable.jsonl` with a warning. Redelivery feeds each sink at most `window`
messages at a time, so fresh signals published meanwhile still find room in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import orjson

from engine.sinks.base import SinkEvent, SinkKind
from engine.sinks.dispatch import Dispatcher, DispatcherClosed

log = logging.getLogger("engine.sinks")

KINDS = ("signal", "consensus", "outcome")
_FILE_MODE = 0o600


@dataclass(slots=True)
class RedeliveryReport:
    """What one `redeliver()` call did with the dead letters it found."""

    delivered: int = 0
    failed: int = 0
    kept: int = 0
    unreadable: int = 0
    unknown_sinks: set[str] = field(default_factory=set)
    complete: bool = True

    @property
    def total(self) -> int:
        """Dead letters this call settled in any way."""
        return self.delivered + self.failed + self.kept + self.unreadable


class _Batch:
    """One renamed dead-letter file and its record of settled line numbers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done_path = path.with_suffix(".done")

    def settled(self) -> set[int]:
        try:
            raw = self.done_path.read_bytes()
        except FileNotFoundError:
            return set()
        out: set[int] = set()
        for line in raw.split(b"\n"):
            with contextlib.suppress(ValueError):
                out.add(int(line))
        return out

    def settle(self, index: int) -> None:
        _append(self.done_path, b"%d\n" % index)

    def remove(self) -> None:
        # The batch first: a crash between the two leaves only an orphan .done, which
        # `batches()` deletes; the other order could re-send the whole batch.
        self.path.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)
        self.done_path.unlink(missing_ok=True)


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def batch_pattern(path: Path) -> re.Pattern[str]:
    """Matches the batch and `.done` files of `path`, capturing the batch number and suffix."""
    return re.compile(re.escape(path.stem) + r"\.redeliver-(\d+)\.(jsonl|done)\Z")


def batches(path: Path) -> list[Path]:
    """Batch files left by earlier runs, oldest first; orphan `.done` files are removed."""
    pattern = batch_pattern(path)
    found: dict[int, set[str]] = {}
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            m = pattern.match(p.name)
            if m:
                found.setdefault(int(m.group(1)), set()).add(m.group(2))
    out = []
    for n in sorted(found):
        batch = path.parent / f"{path.stem}.redeliver-{n}.jsonl"
        if "jsonl" in found[n]:
            out.append(batch)
        else:
            batch.with_suffix(".done").unlink(missing_ok=True)
    return out


def take_dead_letters(path: Path) -> Path | None:
    """Atomically move the dead-letter file aside as the next batch; None when it is empty."""
    try:
        if path.stat().st_size == 0:
            path.unlink()
            return None
    except FileNotFoundError:
        return None
    pattern = batch_pattern(path)
    numbers = [int(m.group(1)) for p in path.parent.iterdir() if (m := pattern.match(p.name))]
    batch = path.parent / f"{path.stem}.redeliver-{max(numbers, default=0) + 1}.jsonl"
    os.rename(path, batch)
    _fsync_dir(path.parent)
    return batch


def event_from_dead_letter(rec: Mapping[str, Any]) -> tuple[str, SinkEvent]:
    """(sink name, event) from one dead-letter line; raises ValueError when it is not one.

    The event's context gains `dead_letter` = {"reason", "at"} (the time of the first
    failure, kept across repeated redeliveries) so a sink can say the message is late.
    """
    sink, kind, record = rec.get("sink"), rec.get("kind"), rec.get("record")
    if not isinstance(sink, str) or kind not in KINDS or not isinstance(record, dict):
        raise ValueError("not a dead letter (needs sink, kind and record)")
    raw_context = rec.get("context")
    context: dict[str, Any] = dict(raw_context) if isinstance(raw_context, Mapping) else {}
    earlier = context.get("dead_letter")
    first_at = earlier.get("at") if isinstance(earlier, Mapping) else None
    context["dead_letter"] = {"reason": rec.get("reason"), "at": first_at or rec.get("at")}
    return sink, SinkEvent(cast(SinkKind, kind), record, str(rec.get("text") or ""), context)


class _Redelivery:
    def __init__(self, path: Path, dispatcher: Dispatcher, window: int, report: RedeliveryReport) -> None:
        self.path = path
        self.dispatcher = dispatcher
        self.window = window
        self.report = report
        self.unreadable_path = path.parent / f"{path.stem}.unreadable{path.suffix}"

    async def batch(self, batch: _Batch) -> bool:
        """Redeliver one batch; True when every line is settled and the batch is gone."""
        settled = batch.settled()
        by_sink: dict[str, list[tuple[int, SinkEvent]]] = {}
        for index, line in enumerate(batch.path.read_bytes().split(b"\n")):
            if not line.strip() or index in settled:
                continue
            try:
                value = orjson.loads(line)
                if not isinstance(value, dict):
                    raise ValueError("not an object")
                sink, event = event_from_dead_letter(value)
            except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
                log.warning(
                    "dead letter %s line %d unreadable (%s); moved to %s",
                    batch.path.name,
                    index + 1,
                    exc,
                    self.unreadable_path.name,
                )
                _append(self.unreadable_path, line + b"\n")
                batch.settle(index)
                self.report.unreadable += 1
                continue
            if sink not in self.dispatcher.sink_names:
                self.dispatcher.dead.append_line(line)
                batch.settle(index)
                self.report.kept += 1
                self.report.unknown_sinks.add(sink)
                self.dispatcher.metrics.sink_redelivered.labels(sink, "kept").inc()
                continue
            by_sink.setdefault(sink, []).append((index, event))
        results = await asyncio.gather(*(self.feed(batch, s, items) for s, items in by_sink.items()))
        if not all(results):
            return False
        batch.remove()
        return True

    async def feed(self, batch: _Batch, sink: str, items: list[tuple[int, SinkEvent]]) -> bool:
        room = asyncio.Semaphore(self.window)
        futures: list[asyncio.Future[bool]] = []
        complete = True
        for index, event in items:
            await room.acquire()
            try:
                fut = await self.dispatcher.submit(sink, event)
            except DispatcherClosed:
                room.release()
                complete = False
                break
            fut.add_done_callback(partial(self._settled, batch, sink, index, room))
            futures.append(fut)
        if futures:
            # asyncio.wait, not gather: cancelling this task must not cancel the deliveries,
            # whose callbacks still record them as settled.
            await asyncio.wait(futures)
        return complete

    def _settled(
        self, batch: _Batch, sink: str, index: int, room: asyncio.Semaphore, fut: asyncio.Future[bool]
    ) -> None:
        room.release()
        if fut.cancelled():
            return
        ok = fut.result()
        try:
            batch.settle(index)
        except OSError as exc:
            # Not fatal: the line stays unsettled and is sent again next start (a duplicate).
            log.error("dead letter %s: cannot record line %d as settled: %s", batch.path.name, index + 1, exc)
        if ok:
            self.report.delivered += 1
        else:
            self.report.failed += 1
        self.dispatcher.metrics.sink_redelivered.labels(sink, "ok" if ok else "dead_letter").inc()


async def redeliver(path: Path, dispatcher: Dispatcher, *, window: int = 10) -> RedeliveryReport:
    """Retry every dead letter at `path` (and batches a crash left behind) through `dispatcher`.

    Call it once at start-up, after `dispatcher.start()`, usually as a background task: it
    returns when each message has been delivered or dead-lettered again (to a fresh
    `path`, for the next start). If the dispatcher closes first, what was not yet handed over
    stays in its batch file for next time (`report.complete` is then False).
    """
    report = RedeliveryReport()
    pending = batches(path)
    fresh = take_dead_letters(path)
    if fresh is not None:
        pending.append(fresh)
    if not pending:
        return report
    run = _Redelivery(path, dispatcher, max(1, window), report)
    for batch_path in pending:
        if not await run.batch(_Batch(batch_path)):
            report.complete = False
            break
    log.info(
        "dead letters retried: %d delivered, %d dead-lettered again, %d kept%s, %d unreadable",
        report.delivered,
        report.failed,
        report.kept,
        f" (sinks not configured: {', '.join(sorted(report.unknown_sinks))})" if report.unknown_sinks else "",
        report.unreadable,
    )
    return report
