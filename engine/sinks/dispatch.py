"""Fan-out from the engine to its sinks, each behind its own bounded queue.

The scheduler only ever does `publish()`, which never waits: a slow Telegram cannot delay the
next candle. A message a sink cannot take (queue full, send failed, engine stopping with it
still queued) goes to the dead-letter file, so nothing is silently lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from engine.metrics import Metrics
from engine.sinks.base import Sink, SinkEvent

log = logging.getLogger("engine.sinks")


class DeadLetters:
    """Append-only JSONL of undeliverable messages (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0

    def write(self, sink: str, reason: str, event: SinkEvent) -> None:
        rec: dict[str, Any] = {"sink": sink, "reason": reason, "kind": event.kind, "text": event.text}
        rec["record"] = dict(event.record)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, orjson.dumps(rec) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        self.count += 1


class Dispatcher:
    """One worker per sink draining a bounded queue."""

    def __init__(
        self, sinks: Sequence[Sink], metrics: Metrics, dead_letters: DeadLetters, *, queue_size: int = 1000
    ) -> None:
        self.sinks = list(sinks)
        self.metrics = metrics
        self.dead = dead_letters
        self._queues: dict[str, asyncio.Queue[SinkEvent]] = {
            s.name: asyncio.Queue(maxsize=queue_size) for s in self.sinks
        }
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for sink in self.sinks:
            self._workers.append(asyncio.create_task(self._work(sink), name=f"sink-{sink.name}"))

    def publish(self, event: SinkEvent) -> None:
        """Queue the event for every sink; never blocks."""
        for sink in self.sinks:
            try:
                self._queues[sink.name].put_nowait(event)
            except asyncio.QueueFull:
                self.metrics.sink_sent.labels(sink.name, "dead_letter").inc()
                log.error("sink %s: queue full, message dead-lettered", sink.name)
                self.dead.write(sink.name, "queue full", event)

    async def _work(self, sink: Sink) -> None:
        q = self._queues[sink.name]
        while True:
            event = await q.get()
            try:
                await sink.send(event)
                self.metrics.sink_sent.labels(sink.name, "ok").inc()
            except asyncio.CancelledError:
                self.dead.write(sink.name, "engine stopped while sending", event)
                raise
            except Exception as exc:
                self.metrics.sink_sent.labels(sink.name, "dead_letter").inc()
                log.error(
                    "sink %s: could not deliver (%s: %s); dead-lettered", sink.name, type(exc).__name__, exc
                )
                self.dead.write(sink.name, f"{type(exc).__name__}: {exc}", event)
            finally:
                q.task_done()

    def pending(self) -> int:
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
        await self.drain(grace)
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
        for sink in self.sinks:
            q = self._queues[sink.name]
            while not q.empty():
                self.dead.write(sink.name, "engine stopped before delivery", q.get_nowait())
            try:
                await sink.close()
            except Exception:
                log.exception("sink %s: close failed", sink.name)
