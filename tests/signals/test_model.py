"""Signal ids and timestamps: fixed formats that live, replay and the journal must share."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from engine.signals.model import Direction, iso_utc, iso_utc_bytes, signal_id, signal_ids


@given(st.integers(0, 253_402_300_799_999))  # 1970 to the end of year 9999
def test_iso_utc_is_the_candle_close_to_the_second(ms: int) -> None:
    want = datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert iso_utc(ms) == want


@given(st.lists(st.integers(0, 253_402_300_799_999), max_size=30))
def test_many_times_at_once_read_as_one_at_a_time(times: list[int]) -> None:
    assert iso_utc_bytes(np.array(times, dtype=np.int64)) == [iso_utc(ms).encode() for ms in times]


def test_iso_utc_of_a_known_close() -> None:
    assert iso_utc(1_515_560_400_000) == "2018-01-10T05:00:00Z"


@given(st.lists(st.tuples(st.integers(0, 2**42), st.sampled_from(list(Direction))), min_size=1, max_size=20))
def test_many_ids_at_once_are_the_ids_one_at_a_time(rows: list[tuple[int, Direction]]) -> None:
    many = signal_ids("psar", "ETH/BTC", "5m", [ms for ms, _ in rows], [d.value for _, d in rows])
    assert many == [signal_id("psar", "ETH/BTC", "5m", ms, d) for ms, d in rows]


def test_the_id_format_is_stable() -> None:
    """Journals and state files written by earlier versions hold these ids: the format is fixed."""
    raw = "psar|ETH/BTC|5m|1515560400000|LONG"
    want = hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:16]
    assert signal_id("psar", "ETH/BTC", "5m", 1_515_560_400_000, Direction.LONG) == want
