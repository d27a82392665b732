"""Fan-out from the engine to its sinks, each behind its own bounded queue.

The scheduler only ever does `publish()`, which never waits: a slow Telegram cannot delay the
next candle. A message a sink cannot take (queue full, send failed, engine stopping with it
still queued) goes to the dead-letter file, so nothing is silently lost; `redeliver` retries
that file at the next start, through `submit()`, which tells the caller how each message ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from engine.clock import Clock
from engine.metrics import Metrics
from engine.sinks.base import Sink, SinkEvent

log = logging.getLogger("engine.sinks")

_FILE_MODE = 0o600


def json_default(value: Any) -> Any:
    """orjson fallback: read-only mappings become dicts, sets lists, anything else its str().

    Records are meant to be JSON-ready already; this only keeps an odd value from costing the
    whole message.
    """
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def dumps(value: Any) -> bytes:
    """JSON bytes for dead letters and HTTP sinks; an odd value degrades to text instead of failing."""
    return orjson.dumps(value, default=json_default, option=orjson.OPT_NON_STR_KEYS)


class DispatcherClosed(RuntimeError):
    """`submit()` was called after `close()` began."""


class DeadLetters:
    """Append-only JSONL of undeliverable messages (mode 0600), fsynced line by line.

    One line: {"sink", "reason", "kind", "text", "record"[, "context"][, "at"]}; `at` (UTC
    ISO time of the failure) is written when a clock is given.
    """

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self.path = path
        self.clock = clock
        self.count = 0

    def write(self, sink: str, reason: str, event: SinkEvent) -> None:
        """Record an undeliverable event durably, so the next start can redeliver it."""
        rec: dict[str, Any] = {"sink": sink, "reason": reason, "kind": event.kind, "text": event.text}
        rec["record"] = dict(event.record)
        if event.context:
            rec["context"] = dict(event.context)
        if self.clock is not None:
            rec["at"] = datetime.fromtimestamp(self.clock.now(), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.append_line(dumps(rec))
        self.count += 1

    def append_line(self, line: bytes) -> None:
        """Append one already-encoded line durably (used to keep a dead letter as it was)."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
        try:
            data = memoryview(line.rstrip(b"\n") + b"\n")
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)


_Item = tuple[SinkEvent, asyncio.Future[bool] | None]


class Dispatcher:
    """One worker per sink draining a bounded queue."""

    def __init__(
        self, sinks: Sequence[Sink], metrics: Metrics, dead_letters: DeadLetters, *, queue_size: int = 1000
    ) -> None:
        self.sinks = list(sinks)
        self.metrics = metrics
        self.dead = dead_letters
        self._queues: dict[str, asyncio.Queue[_Item]] = {
            s.name: asyncio.Queue(maxsize=queue_size) for s in self.sinks
        }
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False
        self._stopped = False

    @property
    def sink_names(self) -> frozenset[str]:
        """Sinks that have a queue, so redelivery can tell letters for a removed sink."""
        return frozenset(self._queues)

    def start(self) -> None:
        """Start one worker per sink; must run inside the event loop."""
        for sink in self.sinks:
            self._workers.append(asyncio.create_task(self._work(sink), name=f"sink-{sink.name}"))

    def publish(self, event: SinkEvent) -> None:
        """Queue the event for every sink; never blocks."""
        for sink in self.sinks:
            try:
                self._queues[sink.name].put_nowait((event, None))
            except asyncio.QueueFull:
                log.error("sink %s: queue full, message dead-lettered", sink.name)
                self._dead_letter(sink.name, "queue full", event, None)

    async def submit(self, sink_name: str, event: SinkEvent) -> asyncio.Future[bool]:
        """Queue `event` for one sink, waiting for room; the future says how it ended.

        The future resolves True once the sink delivered it, False once it was dead-lettered
        (send failed, engine stopped). Raises `DispatcherClosed` once `close()` has begun and
        KeyError for an unknown sink.
        """
        if self._closing:
            raise DispatcherClosed("dispatcher is closing")
        q = self._queues[sink_name]
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await q.put((event, fut))
        if self._stopped:
            # Room was made by close() emptying the queue: no worker will ever take this.
            self._dead_letter(sink_name, "engine stopped before delivery", event, fut)
        return fut

    async def _work(self, sink: Sink) -> None:
        q = self._queues[sink.name]
        while True:
            event, fut = await q.get()
            try:
                await sink.send(event)
                self.metrics.sink_sent.labels(sink.name, "ok").inc()
                _settle(fut, True)
            except asyncio.CancelledError:
                self._dead_letter(sink.name, "engine stopped while sending", event, fut)
                raise
            except Exception as exc:
                log.error(
                    "sink %s: could not deliver (%s: %s); dead-lettered", sink.name, type(exc).__name__, exc
                )
                self._dead_letter(sink.name, f"{type(exc).__name__}: {exc}", event, fut)
            finally:
                q.task_done()

    def _dead_letter(
        self, sink: str, reason: str, event: SinkEvent, fut: asyncio.Future[bool] | None
    ) -> None:
        """Count and write a dead letter; a failing write is logged loudly, never raised.

        Raising here would kill the sink's worker and silently stall its queue.
        """
        self.metrics.sink_sent.labels(sink, "dead_letter").inc()
        try:
            self.dead.write(sink, reason, event)
        except Exception as exc:
            self.metrics.sink_sent.labels(sink, "lost").inc()
            log.critical(
                "sink %s: MESSAGE LOST: dead-letter file %s not writable (%s: %s); %s message: %s",
                sink,
                self.dead.path,
                type(exc).__name__,
                exc,
                event.kind,
                event.text,
            )
        _settle(fut, False)

    def pending(self) -> int:
        """Events still queued across all sinks (delivery in progress not included)."""
        return sum(q.qsize() for q in self._queues.values())

    async def drain(self, grace: float) -> None:
        """Give queued messages up to `grace` seconds to go out."""
        waits = [asyncio.ensure_future(q.join()) for q in self._queues.values()]
        if waits:
            _, not_done = await asyncio.wait(waits, timeout=grace)
            for w in not_done:
                w.cancel()

    async def close(self, grace: float = 5.0) -> None:
        """Drain, stop the workers, dead-letter what is left, close the sinks."""
        self._closing = True
        await self.drain(grace)
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
        # No await between here and the end of the loop: a submit() woken by the room this
        # makes sees _stopped and dead-letters its own message, so none is written twice.
        self._stopped = True
        for sink in self.sinks:
            q = self._queues[sink.name]
            while not q.empty():
                event, fut = q.get_nowait()
                self._dead_letter(sink.name, "engine stopped before delivery", event, fut)
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception:
                log.exception("sink %s: close failed", sink.name)


def _settle(fut: asyncio.Future[bool] | None, ok: bool) -> None:
    if fut is not None and not fut.done():
        fut.set_result(ok)
