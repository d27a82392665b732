"""The replay's JSON document: spooled records put together in the global order, byte for byte,
whether written directly or through the page cache, by one process or several."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.block_file import ALIGN, BlockWriter
from engine.replay_records import SEPARATOR, Document, _fill, write_document, write_spool

SHM = Path("/dev/shm")  # tmpfs: refuses O_DIRECT, so the buffered path is taken


def places() -> list[Path]:
    out = [Path(tempfile.gettempdir())]
    if SHM.is_dir():
        out.append(SHM)
    return out


record = st.one_of(
    st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b" ")),
    st.integers(1, 3 * ALIGN).map(lambda n: b"r" * n),  # records longer than a block
)


@pytest.mark.parametrize("where", places())
@settings(max_examples=40, deadline=None)
@given(
    head=st.binary(max_size=2 * ALIGN),
    tail=st.binary(max_size=100),
    rows=st.lists(st.tuples(st.integers(0, 3), record), max_size=60),
    workers=st.sampled_from([1, 2, 3]),
)
def test_the_document_is_head_records_in_order_and_tail(
    where: Path, head: bytes, tail: bytes, rows: list[tuple[int, bytes]], workers: int
) -> None:
    with tempfile.TemporaryDirectory(dir=where) as d:
        spools = [Path(d) / f"unit{u}.jsonl" for u in range(4)]
        for u, path in enumerate(spools):  # each unit's lines, in the global order's order
            path.write_bytes(b"".join(r + SEPARATOR for s, r in rows if s == u))
        source = np.array([s for s, _ in rows], dtype=np.int16)
        sizes = np.array([len(r) + len(SEPARATOR) for _, r in rows], dtype=np.int32)
        out = Path(d) / "doc.json"
        doc = Document.plan(head, tail, spools, source, sizes)
        write_document(out, doc, workers, chunk=2 * ALIGN)  # small chunks: many pieces cut
        assert out.read_bytes() == head + SEPARATOR.join(r for _, r in rows) + tail


def test_a_replay_without_records_cannot_write_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without records"):
        Document.plan(b"", b"", [None], np.zeros(2, np.int16), np.ones(2, np.int32))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_reported_not_swallowed() -> None:
    out = BlockWriter(Path("/dev/full"), ALIGN)
    try:
        out.buffer[:10] = b"x" * 10
        with pytest.raises(OSError) as err:
            out.write(0, 10)
        assert err.value.errno == errno.ENOSPC
    finally:
        out.close()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_write_that_fails_while_the_next_chunk_is_filled_is_reported(tmp_path: Path) -> None:
    """Writes wait in a thread while the next chunk is filled: their errors still surface."""
    spool = tmp_path / "unit.jsonl"
    rows = [b"r" * 100] * 200
    spool.write_bytes(b"".join(r + SEPARATOR for r in rows))
    sizes = np.full(len(rows), 100 + len(SEPARATOR), np.int32)
    doc = Document.plan(b"[", b"]", [spool], np.zeros(len(rows), np.int16), sizes)
    with pytest.raises(OSError) as err:
        _fill(Path("/dev/full"), doc, ALIGN, range(-(-doc.size // ALIGN)))
    assert err.value.errno == errno.ENOSPC


@settings(max_examples=20, deadline=None)
@given(pieces=st.lists(st.binary(max_size=50), max_size=3000))
@example(pieces=[b"ab", b"", b"cde"] * 1000)  # several writev batches
def test_a_spool_is_its_pieces_in_order(pieces: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "unit.jsonl"
        write_spool(path, pieces)  # more pieces than one writev takes, empty ones among them
        assert path.read_bytes() == b"".join(pieces)
        assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_spool_that_cannot_be_written_is_an_error() -> None:
    with pytest.raises(OSError) as err:
        write_spool(Path("/dev/full"), [b"x" * 100] * 10)
    assert err.value.errno == errno.ENOSPC
