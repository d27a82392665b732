"""The journal: durable append-only JSONL that survives a torn last line."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from types import MappingProxyType

import orjson
import pytest

from engine.errors import StateError
from engine.signals.model import Direction, Signal
from engine.sinks.base import SinkEvent
from engine.sinks.journal import Journal, JournalSink


def make_signal(n: int) -> Signal:
    return Signal(
        id=f"sig{n}",
        strategy="psar",
        symbol="ETH/BTC",
        direction=Direction.LONG,
        timeframe="5m",
        exchange="binance",
        entry=0.095012 + n * 1e-6,
        stop_loss=0.094101,
        take_profits=(0.0959, 0.0963),
        created_at="2018-01-12T10:35:00Z",
        bar_close_ms=1_515_753_300_000 + n * 300_000,
        rationale=("SAR flipped below price",),
        metadata=MappingProxyType({"sar": 0.0941}),
    )


def test_append_read_round_trip(tmp_path: Path) -> None:
    j = Journal(tmp_path / "signals.jsonl")
    signals = [make_signal(n) for n in range(3)]
    for s in signals:
        j.append(s.to_record())
    j.close()
    raw = (tmp_path / "signals.jsonl").read_bytes()
    assert raw.count(b"\n") == 3 and raw.endswith(b"\n")
    assert [Signal.from_record(r) for r in Journal(tmp_path / "signals.jsonl").read_all()] == signals


def test_file_is_0600(tmp_path: Path) -> None:
    j = Journal(tmp_path / "signals.jsonl")
    j.append({"kind": "signal", "id": "x"})
    j.close()
    assert stat.S_IMODE((tmp_path / "signals.jsonl").stat().st_mode) == 0o600


def test_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert Journal(tmp_path / "none.jsonl").read_all() == []


def test_reading_does_not_create_or_modify(tmp_path: Path) -> None:
    path = tmp_path / "signals.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2, "ent')
    Journal(path).read_all()
    assert path.read_bytes() == b'{"id": 1}\n{"id": 2, "ent'


def test_truncated_last_line_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "signals.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2}\n{"id": 3, "entry": 0.09')
    with caplog.at_level(logging.WARNING):
        assert Journal(path).read_all() == [{"id": 1}, {"id": 2}]
    assert any("truncated last line" in r.getMessage() for r in caplog.records)


def test_bad_middle_line_is_skipped_with_its_number(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "signals.jsonl"
    path.write_bytes(b'{"id": 1}\nnot json\n[1, 2]\n{"id": 4}\n')
    with caplog.at_level(logging.WARNING):
        assert Journal(path).read_all() == [{"id": 1}, {"id": 4}]
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "line 2" in text and "line 3" in text


def test_append_after_a_crash_mid_write_starts_a_clean_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "signals.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2, "ent')
    j = Journal(path)
    with caplog.at_level(logging.WARNING):
        j.append({"id": 3})
    j.close()
    assert path.read_bytes() == b'{"id": 1}\n{"id":3}\n'
    assert any('{"id": 2, "ent' in r.getMessage() for r in caplog.records)


def test_complete_last_record_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "signals.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2}')
    j = Journal(path)
    j.append({"id": 3})
    j.close()
    assert Journal(path).read_all() == [{"id": 1}, {"id": 2}, {"id": 3}]


def test_unencodable_record_is_a_state_error_and_writes_nothing(tmp_path: Path) -> None:
    j = Journal(tmp_path / "signals.jsonl")
    with pytest.raises(StateError, match="cannot be encoded"):
        j.append({"id": 1, "bad": object()})
    j.append({"id": 2})
    j.close()
    assert Journal(tmp_path / "signals.jsonl").read_all() == [{"id": 2}]


def test_append_after_close_is_refused(tmp_path: Path) -> None:
    j = Journal(tmp_path / "signals.jsonl")
    j.close()
    with pytest.raises(StateError, match="closed"):
        j.append({"id": 1})


async def test_journal_sink_writes_consensus_and_outcomes_but_not_signals(tmp_path: Path) -> None:
    j = Journal(tmp_path / "signals.jsonl")
    sink = JournalSink(j)
    sig = make_signal(1)
    j.append(sig.to_record())  # what the engine does before publishing
    await sink.send(SinkEvent("signal", sig.to_record(), "line"))
    await sink.send(SinkEvent("consensus", {"symbol": "ETH/BTC", "score": 3.75, "kind": "new"}, "line"))
    await sink.send(SinkEvent("outcome", {"signal_id": sig.id, "result": "tp1"}, "line"))
    await sink.close()
    j.append({"kind": "signal", "id": "after-sink-close"})  # the sink does not own the journal
    j.close()
    records = Journal(tmp_path / "signals.jsonl").read_all()
    assert [r["kind"] for r in records] == ["signal", "consensus", "outcome", "signal"]
    assert records[1] == {"kind": "consensus", "symbol": "ETH/BTC", "score": 3.75, "record_kind": "new"}
    assert records[2] == {"kind": "outcome", "signal_id": sig.id, "result": "tp1"}
    assert orjson.dumps(records[0]) == orjson.dumps(sig.to_record())


def test_rotates_by_size_between_whole_records_and_keeps_n_backups(tmp_path: Path) -> None:
    j = Journal(tmp_path / "signals.jsonl", max_bytes=4096, backups=2)
    for i in range(200):
        j.append({"id": f"{i:04d}", "pad": "x" * 60})
    j.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["signals.jsonl", "signals.jsonl.1", "signals.jsonl.2"]
    ids = []
    for name in ("signals.jsonl.2", "signals.jsonl.1", "signals.jsonl"):
        path = tmp_path / name
        assert path.stat().st_size <= 4096
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        ids += [orjson.loads(line)["id"] for line in path.read_text().splitlines()]
    # the newest records, in order, none split or lost between the files that are kept
    assert ids == [f"{i:04d}" for i in range(200 - len(ids), 200)]
