"""The dispatcher: publishing never waits, a bad sink hurts nobody, nothing is dropped silently."""

from __future__ import annotations

import asyncio
import logging
import stat
import time
from pathlib import Path
from types import MappingProxyType

import orjson
import pytest

from engine.clock import VirtualClock
from engine.metrics import Metrics
from engine.sinks.base import SinkEvent
from engine.sinks.dispatch import DeadLetters, Dispatcher, DispatcherClosed
from tests.support import metric, settle, wait_until


def event(n: int) -> SinkEvent:
    return SinkEvent("signal", {"id": f"sig{n}", "entry": 1.0 + n}, f"line {n}", {"history": {"tp1": n}})


class RecordingSink:
    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[SinkEvent] = []
        self.closed = False

    async def send(self, event: SinkEvent) -> None:
        self.got.append(event)

    async def close(self) -> None:
        self.closed = True


class HangingSink(RecordingSink):
    """Accepts a message and never finishes sending it (a server that never answers)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = asyncio.Event()

    async def send(self, event: SinkEvent) -> None:
        self.got.append(event)
        await self.release.wait()


class FailingSink(RecordingSink):
    def __init__(self, name: str, fail: set[str]) -> None:
        super().__init__(name)
        self.fail = fail

    async def send(self, event: SinkEvent) -> None:
        if event.record["id"] in self.fail:
            raise RuntimeError(f"cannot deliver {event.record['id']}")
        self.got.append(event)


def dead_lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


async def test_a_hanging_sink_delays_neither_the_publisher_nor_other_sinks(tmp_path: Path) -> None:
    hanging, fast = HangingSink("slow"), RecordingSink("fast")
    metrics = Metrics()
    dispatcher = Dispatcher([hanging, fast], metrics, DeadLetters(tmp_path / "dead.jsonl"), queue_size=100)
    dispatcher.start()
    started = time.perf_counter()
    for n in range(50):
        dispatcher.publish(event(n))  # a plain call: it cannot await anything
    assert time.perf_counter() - started < 0.05
    await wait_until(lambda: len(fast.got) == 50)
    assert [e.record["id"] for e in fast.got] == [f"sig{n}" for n in range(50)]
    assert len(hanging.got) == 1 and dispatcher.pending() == 49
    await dispatcher.close(grace=0.05)
    lines = dead_lines(tmp_path / "dead.jsonl")
    assert len(lines) == 50 and {line["sink"] for line in lines} == {"slow"}
    assert lines[0]["reason"] == "engine stopped while sending"
    assert {line["reason"] for line in lines[1:]} == {"engine stopped before delivery"}
    assert metric(metrics, "engine_sink_messages_total", sink="slow", outcome="dead_letter") == 50
    assert metric(metrics, "engine_sink_messages_total", sink="fast", outcome="ok") == 50
    assert hanging.closed and fast.closed


async def test_full_queue_dead_letters_without_blocking(tmp_path: Path) -> None:
    hanging = HangingSink("slow")
    metrics = Metrics()
    dispatcher = Dispatcher([hanging], metrics, DeadLetters(tmp_path / "dead.jsonl"), queue_size=2)
    dispatcher.start()
    dispatcher.publish(event(0))
    await settle()  # the worker takes sig0 and hangs on it
    for n in range(1, 5):
        dispatcher.publish(event(n))
    assert [line["record"] for line in dead_lines(tmp_path / "dead.jsonl")] == [
        {"id": "sig3", "entry": 4.0},
        {"id": "sig4", "entry": 5.0},
    ]
    hanging.release.set()
    await wait_until(lambda: dispatcher.pending() == 0 and len(hanging.got) == 3)
    await dispatcher.close(grace=1)
    assert metric(metrics, "engine_sink_messages_total", sink="slow", outcome="ok") == 3
    assert metric(metrics, "engine_sink_messages_total", sink="slow", outcome="dead_letter") == 2


async def test_failed_send_is_dead_lettered_with_reason_and_context(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FailingSink("hook", {"sig1"})
    dead = DeadLetters(tmp_path / "dead.jsonl", clock=VirtualClock(1_515_753_300.0))
    dispatcher = Dispatcher([sink], Metrics(), dead)
    dispatcher.start()
    for n in range(3):
        dispatcher.publish(event(n))
    await wait_until(lambda: len(sink.got) == 2)
    await dispatcher.close(grace=1)
    (line,) = dead_lines(dead.path)
    assert line == {
        "sink": "hook",
        "reason": "RuntimeError: cannot deliver sig1",
        "kind": "signal",
        "text": "line 1",
        "record": {"id": "sig1", "entry": 2.0},
        "context": {"history": {"tp1": 1}},
        "at": "2018-01-12T10:35:00Z",
    }
    assert "sink hook: could not deliver (RuntimeError: cannot deliver sig1); dead-lettered" in caplog.text
    assert stat.S_IMODE(dead.path.stat().st_mode) == 0o600


def test_dead_letters_encode_whatever_a_record_holds(tmp_path: Path) -> None:
    dead = DeadLetters(tmp_path / "dead.jsonl")
    record = {"id": "x", "metadata": MappingProxyType({"tags": frozenset({"b", "a"}), "at": Path("/p")})}
    dead.write("console", "queue full", SinkEvent("consensus", record, "t"))
    (line,) = dead_lines(dead.path)
    assert line["record"] == {"id": "x", "metadata": {"tags": ["a", "b"], "at": "/p"}}
    assert "context" not in line and "at" not in line and dead.count == 1


async def test_unwritable_dead_letter_file_is_logged_and_the_worker_lives_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FailingSink("hook", {"sig0"})
    metrics = Metrics()
    dispatcher = Dispatcher([sink], metrics, DeadLetters(tmp_path / "no-such-dir" / "dead.jsonl"))
    dispatcher.start()
    dispatcher.publish(event(0))
    dispatcher.publish(event(1))
    await wait_until(lambda: len(sink.got) == 1)
    await dispatcher.close(grace=1)
    assert "MESSAGE LOST" in caplog.text and "line 0" in caplog.text
    assert metric(metrics, "engine_sink_messages_total", sink="hook", outcome="lost") == 1


async def test_submit_reports_how_each_message_ended(tmp_path: Path) -> None:
    sink = FailingSink("hook", {"sig1"})
    dispatcher = Dispatcher([sink], Metrics(), DeadLetters(tmp_path / "dead.jsonl"))
    dispatcher.start()
    ok = await dispatcher.submit("hook", event(0))
    failed = await dispatcher.submit("hook", event(1))
    assert await ok is True and await failed is False
    with pytest.raises(KeyError):
        await dispatcher.submit("nope", event(2))
    await dispatcher.close(grace=1)
    with pytest.raises(DispatcherClosed):
        await dispatcher.submit("hook", event(3))
    assert dispatcher.sink_names == frozenset({"hook"})


async def test_close_settles_queued_and_waiting_submissions(tmp_path: Path) -> None:
    hanging = HangingSink("slow")
    dead = DeadLetters(tmp_path / "dead.jsonl")
    dispatcher = Dispatcher([hanging], Metrics(), dead, queue_size=1)
    dispatcher.start()
    first = await dispatcher.submit("slow", event(0))
    await settle()  # the worker is stuck on sig0
    second = await dispatcher.submit("slow", event(1))  # fills the queue
    waiting = asyncio.create_task(dispatcher.submit("slow", event(2)))  # waits for room
    await settle()
    assert not waiting.done()
    await dispatcher.close(grace=0.01)
    third = await asyncio.wait_for(waiting, 1)
    assert [await f for f in (first, second, third)] == [False, False, False]
    assert sorted(str(line["text"]) for line in dead_lines(dead.path)) == ["line 0", "line 1", "line 2"]


async def test_close_logs_a_sink_that_fails_to_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class BadClose(RecordingSink):
        async def close(self) -> None:
            raise OSError("socket already gone")

    other = RecordingSink("b")
    dispatcher = Dispatcher([BadClose("a"), other], Metrics(), DeadLetters(tmp_path / "dead.jsonl"))
    dispatcher.start()
    with caplog.at_level(logging.ERROR):
        await dispatcher.close(grace=0)
    assert "sink a: close failed" in caplog.text and other.closed
