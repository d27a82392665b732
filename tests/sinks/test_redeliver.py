"""Dead letters survive restarts and crashes: outage → dead letter → redelivery after a restart."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson
import pytest

from engine.metrics import Metrics
from engine.sinks.base import SinkEvent
from engine.sinks.dispatch import DeadLetters, Dispatcher, dumps
from engine.sinks.redeliver import event_from_dead_letter, redeliver
from engine.sinks.retry import DeliveryPolicy
from engine.sinks.telegram import TelegramSink
from engine.sinks.webhook import WebhookSink
from tests.support import metric, settle, wait_until
from tests.support.telegram_server import CHAT_ID, TOKEN, InstantClock, TelegramServer
from tests.support.webhook_server import SECRET, WebhookReceiver

T0 = 1_700_000_000.0


def event(n: int, kind: str = "signal") -> SinkEvent:
    record = {
        "id": f"sig{n}",
        "kind": kind,
        "strategy": "psar",
        "symbol": "ETH/BTC",
        "direction": "LONG",
        "timeframe": "5m",
        "entry": 0.095,
        "stop_loss": 0.094,
        "take_profits": [0.097],
    }
    return SinkEvent(
        "signal", record, f"line {n}", {"history": {"tp1": 1, "sl": 1, "closed": 2, "win_rate": 0.5}}
    )


def dead_line(
    sink: str, n: int, reason: str = "DeliveryGaveUp: down", at: str = "2024-01-01T00:00:00Z"
) -> bytes:
    ev = event(n)
    rec = {"sink": sink, "reason": reason, "kind": ev.kind, "text": ev.text, "record": dict(ev.record)}
    return dumps({**rec, "context": dict(ev.context), "at": at}) + b"\n"


class RecordingSink:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.got: list[SinkEvent] = []

    async def send(self, event: SinkEvent) -> None:
        if self.fail:
            raise RuntimeError("still down")
        self.got.append(event)

    async def close(self) -> None:
        pass


def leftovers(state: Path) -> list[str]:
    return sorted(p.name for p in state.iterdir())


async def test_outage_dead_letter_then_redelivery_after_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "dead-letter.jsonl"
    clock = InstantClock(T0)
    async with TelegramServer(clock) as tg, WebhookReceiver(clock) as hook:
        tg.outage = hook.outage = True

        # First run: both services are down; every message ends in the dead-letter file.
        metrics = Metrics()
        dead = DeadLetters(path, clock=clock)
        policy = DeliveryPolicy(max_attempts=3)
        sinks = [
            TelegramSink(TOKEN, CHAT_ID, clock, api_url=tg.url, policy=policy, metrics=metrics),
            WebhookSink(hook.url, SECRET, clock, policy=policy, metrics=metrics),
        ]
        dispatcher = Dispatcher(sinks, metrics, dead)
        dispatcher.start()
        dispatcher.publish(event(1))
        dispatcher.publish(event(2))
        await wait_until(lambda: dead.count == 4)
        await dispatcher.close(grace=1)
        assert metric(metrics, "engine_sink_messages_total", sink="telegram", outcome="dead_letter") == 2
        assert metric(metrics, "engine_sink_messages_total", sink="webhook", outcome="dead_letter") == 2
        assert len(tg.log) == 6 and len(hook.log) == 6
        written = path.read_text()
        assert TOKEN not in written and SECRET not in written

        # Restart with the services back: redelivery sends everything and empties the file.
        tg.outage = hook.outage = False
        metrics = Metrics()
        sinks = [
            TelegramSink(TOKEN, CHAT_ID, clock, api_url=tg.url, metrics=metrics),
            WebhookSink(hook.url, SECRET, clock, metrics=metrics),
        ]
        dispatcher = Dispatcher(sinks, metrics, DeadLetters(path, clock=clock))
        dispatcher.start()
        report = await redeliver(path, dispatcher)
        await dispatcher.close(grace=1)

    assert (report.delivered, report.failed, report.kept, report.unreadable) == (4, 0, 0, 0)
    assert report.complete
    assert leftovers(tmp_path) == []
    assert len(tg.messages) == 2 and all("Delayed delivery" in t for t in tg.texts)
    assert "LONG ETH/BTC" in tg.texts[0] and "📊 TP1 1 | TP2 0 | SL 1 (win rate 50%)" in tg.texts[0]
    assert [b["record"]["id"] for b in hook.received] == ["sig1", "sig2"]
    assert hook.received[0]["text"] == "line 1" and hook.bad_signatures == 0
    assert all(h.get("X-Redelivery") == "1" for h in hook.headers)
    assert metric(metrics, "engine_sink_redelivered_total", sink="telegram", outcome="ok") == 2
    assert metric(metrics, "engine_sink_redelivered_total", sink="webhook", outcome="ok") == 2
    assert TOKEN not in caplog.text and SECRET not in caplog.text


async def test_still_failing_messages_go_back_to_the_dead_letter_file(tmp_path: Path) -> None:
    path = tmp_path / "dead-letter.jsonl"
    path.write_bytes(dead_line("hook", 1, at="2024-01-01T00:00:00Z") + dead_line("hook", 2))
    metrics = Metrics()
    dispatcher = Dispatcher([RecordingSink("hook", fail=True)], metrics, DeadLetters(path))
    dispatcher.start()
    report = await redeliver(path, dispatcher)
    await dispatcher.close(grace=1)
    assert (report.delivered, report.failed) == (0, 2)
    assert leftovers(tmp_path) == ["dead-letter.jsonl"]
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert [x["record"]["id"] for x in lines] == ["sig1", "sig2"]
    assert lines[0]["reason"] == "RuntimeError: still down"
    # the first failure's time rides along, so a later success can say how late it is
    assert lines[0]["context"]["dead_letter"]["at"] == "2024-01-01T00:00:00Z"
    assert metric(metrics, "engine_sink_redelivered_total", sink="hook", outcome="dead_letter") == 2

    # next start: the sink works again
    ok = RecordingSink("hook")
    dispatcher = Dispatcher([ok], Metrics(), DeadLetters(path))
    dispatcher.start()
    report = await redeliver(path, dispatcher)
    await dispatcher.close(grace=1)
    assert report.delivered == 2 and leftovers(tmp_path) == []
    assert ok.got[0].context["dead_letter"] == {
        "reason": "RuntimeError: still down",
        "at": "2024-01-01T00:00:00Z",
    }
    assert ok.got[0].context["history"] == {"tp1": 1, "sl": 1, "closed": 2, "win_rate": 0.5}


async def test_messages_for_sinks_no_longer_configured_stay(tmp_path: Path) -> None:
    path = tmp_path / "dead-letter.jsonl"
    gone = dead_line("telegram", 1)
    path.write_bytes(gone + dead_line("hook", 2))
    metrics = Metrics()
    hook = RecordingSink("hook")
    dispatcher = Dispatcher([hook], metrics, DeadLetters(path))
    dispatcher.start()
    report = await redeliver(path, dispatcher)
    await dispatcher.close(grace=1)
    assert (report.delivered, report.kept, report.unknown_sinks) == (1, 1, {"telegram"})
    assert [e.record["id"] for e in hook.got] == ["sig2"]
    assert path.read_bytes() == gone  # kept byte for byte
    assert leftovers(tmp_path) == ["dead-letter.jsonl"]
    assert metric(metrics, "engine_sink_redelivered_total", sink="telegram", outcome="kept") == 1


async def test_a_crash_during_redelivery_resumes_without_loss_or_repeats(tmp_path: Path) -> None:
    path = tmp_path / "dead-letter.jsonl"
    # What a crash leaves: the batch being redelivered (lines 0 and 2 already settled)...
    batch = tmp_path / "dead-letter.redeliver-4.jsonl"
    batch.write_bytes(b"".join(dead_line("hook", n) for n in range(4)))
    (tmp_path / "dead-letter.redeliver-4.done").write_bytes(b"0\n2\n")
    # ...an orphan marker of a batch deleted just before the crash, and new dead letters.
    (tmp_path / "dead-letter.redeliver-3.done").write_bytes(b"0\n1\n")
    path.write_bytes(dead_line("hook", 10))
    hook = RecordingSink("hook")
    dispatcher = Dispatcher([hook], Metrics(), DeadLetters(path))
    dispatcher.start()
    report = await redeliver(path, dispatcher)
    await dispatcher.close(grace=1)
    assert [e.record["id"] for e in hook.got] == ["sig1", "sig3", "sig10"]
    assert report.delivered == 3 and leftovers(tmp_path) == []


async def test_engine_stopping_mid_redelivery_keeps_the_rest_for_next_time(tmp_path: Path) -> None:
    path = tmp_path / "dead-letter.jsonl"
    path.write_bytes(b"".join(dead_line("hook", n) for n in range(6)))

    class Gate(RecordingSink):
        """Delivers the first two, then hangs until the engine stops."""

        async def send(self, event: SinkEvent) -> None:
            if len(self.got) >= 2:
                await asyncio.Event().wait()
            self.got.append(event)

    first = Gate("hook")
    dispatcher = Dispatcher([first], Metrics(), DeadLetters(path))
    dispatcher.start()
    task = asyncio.create_task(redeliver(path, dispatcher, window=2))
    await wait_until(lambda: len(first.got) == 2)
    await settle()
    await dispatcher.close(grace=0.01)  # the engine stops: sig2 in flight, sig3 queued
    report = await asyncio.wait_for(task, 1)
    assert not report.complete and (report.delivered, report.failed) == (2, 2)
    assert sorted(leftovers(tmp_path)) == [
        "dead-letter.jsonl",
        "dead-letter.redeliver-1.done",
        "dead-letter.redeliver-1.jsonl",
    ]

    second = RecordingSink("hook")
    dispatcher = Dispatcher([second], Metrics(), DeadLetters(path))
    dispatcher.start()
    report = await redeliver(path, dispatcher)
    await dispatcher.close(grace=1)
    # sig4 and sig5 from the unfinished batch, then sig2 and sig3 dead-lettered at the stop
    assert sorted(e.record["id"] for e in second.got) == ["sig2", "sig3", "sig4", "sig5"]
    assert report.complete and leftovers(tmp_path) == []


async def test_redelivery_leaves_room_for_fresh_messages(tmp_path: Path) -> None:
    path = tmp_path / "dead-letter.jsonl"
    path.write_bytes(b"".join(dead_line("hook", n) for n in range(30)))
    seen_pending: list[int] = []

    class Slow(RecordingSink):
        async def send(self, event: SinkEvent) -> None:
            seen_pending.append(dispatcher.pending())
            await asyncio.sleep(0)
            self.got.append(event)

    sink = Slow("hook")
    dispatcher = Dispatcher([sink], Metrics(), DeadLetters(path), queue_size=5)
    dispatcher.start()
    task = asyncio.create_task(redeliver(path, dispatcher, window=3))
    await wait_until(lambda: len(sink.got) >= 5)
    dispatcher.publish(event(99))  # a fresh signal still fits in the queue
    await asyncio.wait_for(task, 5)
    await dispatcher.close(grace=1)
    assert max(seen_pending) <= 3
    assert len(sink.got) == 31 and not path.exists()


async def test_unreadable_lines_are_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "dead-letter.jsonl"
    path.write_bytes(
        dead_line("hook", 1)
        + b"[1, 2]\n"
        + b'{"sink": "hook", "kind": "bogus", "record": {}}\n'
        + b'{"sink": "hook", "reason": "x", "ki'
    )
    hook = RecordingSink("hook")
    dispatcher = Dispatcher([hook], Metrics(), DeadLetters(path))
    dispatcher.start()
    report = await redeliver(path, dispatcher)
    await dispatcher.close(grace=1)
    assert (report.delivered, report.unreadable) == (1, 3)
    assert leftovers(tmp_path) == ["dead-letter.unreadable.jsonl"]
    assert (tmp_path / "dead-letter.unreadable.jsonl").read_bytes().endswith(b'"reason": "x", "ki\n')
    assert "line 4 unreadable" in caplog.text


async def test_nothing_to_do(tmp_path: Path) -> None:
    path = tmp_path / "dead-letter.jsonl"
    dispatcher = Dispatcher([RecordingSink("hook")], Metrics(), DeadLetters(path))
    report = await redeliver(path, dispatcher)
    assert report.total == 0 and report.complete
    path.write_bytes(b"")
    await redeliver(path, dispatcher)
    assert leftovers(tmp_path) == []


def test_event_from_dead_letter() -> None:
    sink, ev = event_from_dead_letter(orjson.loads(dead_line("hook", 1, reason="HTTP 502")))
    assert sink == "hook" and ev.kind == "signal" and ev.text == "line 1"
    assert ev.record["id"] == "sig1"
    assert ev.context["dead_letter"] == {"reason": "HTTP 502", "at": "2024-01-01T00:00:00Z"}
    with pytest.raises(ValueError, match="not a dead letter"):
        event_from_dead_letter({"sink": "hook", "kind": "signal"})
