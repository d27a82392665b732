"""A replay's JSON document: a head, every spooled record in time order, a tail.

Each unit spools its records (one per line, each ending in ",\\n") in its own time order;
the merged columns say which unit each row of the global order comes from. Rows of one unit
appear in the global order in the order that unit spooled them, so the records are runs of
contiguous byte ranges of the spools, and every byte of the document has a known place before
anything is written. The document is cut into 8 MB chunks, shared out among worker processes
that fill them side by side: per chunk one read per spool, one slice copy per run, one aligned
write at the chunk's offset (`BlockWriter`: past the page cache where the file system allows
it), waited for in a thread while the next chunk is filled.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from engine.block_file import BlockWriter, create, cut

SEPARATOR = b",\n"
CHUNK_BYTES = 8 << 20
MAX_WRITERS = 4  # past a few, the disk is what waits: more writers only hold more buffers

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class Document:
    """Where every byte of the document comes from: `head`, runs of spool bytes (run i is
    `length[i]` bytes of `files[source[i]]` from `spool_at[i]`, placed at `out_at[i]`), `tail`."""

    head: bytes
    tail: bytes
    files: tuple[Path, ...]
    source: IntArray
    spool_at: IntArray
    out_at: IntArray
    length: IntArray
    size: int

    @classmethod
    def plan(
        cls,
        head: bytes,
        tail: bytes,
        files: Sequence[Path | None],
        source: npt.NDArray[np.integer],
        sizes: npt.NDArray[np.integer],
    ) -> Document:
        """Row i of the global order is the next unread line of `files[source[i]]`, `sizes[i]`
        bytes long with its separator; the records go between head and tail, the last one
        without its separator."""
        n = len(source)
        if n == 0:
            none = np.empty(0, np.int64)
            return cls(head, tail, (), none, none, none, none, len(head) + len(tail))
        src, size = source.astype(np.int64), sizes.astype(np.int64)
        offset = np.empty(n, np.int64)  # each row's place in its own spool
        for s in np.unique(src).tolist():
            if files[s] is None:
                raise ValueError("this replay was run without records")
            mine = np.flatnonzero(src == s)
            offset[mine] = np.cumsum(size[mine]) - size[mine]
        cut_at = np.flatnonzero(src[1:] != src[:-1]) + 1  # runs of rows from one spool
        first, last = np.concatenate(([0], cut_at)), np.concatenate((cut_at, [n])) - 1
        spool_at = offset[first]
        length = offset[last] + size[last] - spool_at
        length[-1] -= len(SEPARATOR)
        out_at = len(head) + np.cumsum(length) - length
        body = int(length.sum())
        paths = tuple(Path(f) if f is not None else Path() for f in files)
        return cls(head, tail, paths, src[first], spool_at, out_at, length, len(head) + body + len(tail))


def write_spool(path: Path, pieces: Sequence[bytes]) -> None:
    """A unit's spool: `pieces` one after another, a new file (0600). Handed to the kernel a
    batch of pieces at a time (`writev`), with no copy into a Python buffer first."""
    batch = _IOV_MAX
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for i in range(0, len(pieces), batch):
            part = pieces[i : i + batch]
            done = os.writev(fd, part)
            rest = sum(map(len, part)) - done
            if rest:  # a short write: the rest the plain way (an error, e.g. a full disk, raises)
                view = memoryview(b"".join(part))[done:]
                while view:
                    view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _iov_max() -> int:
    """How many buffers one writev may take (POSIX guarantees 16)."""
    try:
        n = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        return 16
    return min(1024, n) if n > 0 else 16


_IOV_MAX = _iov_max()


def write_document(path: Path, doc: Document, workers: int = 1, chunk: int = CHUNK_BYTES) -> None:
    """The document at `path`, its chunks shared out among up to `workers` forked processes
    (chunk k goes to writer k mod writers)."""
    create(path, doc.size)
    chunks = -(-doc.size // chunk)
    writers = min(workers, chunks, MAX_WRITERS)
    if writers > 1 and "fork" in multiprocessing.get_all_start_methods():
        global _JOB
        _JOB = (path, doc, chunk, writers)
        try:
            with multiprocessing.get_context("fork").Pool(writers) as pool:
                pool.map(_write_share, range(writers), chunksize=1)
        finally:
            _JOB = None
    else:
        _fill(path, doc, chunk, range(chunks))
    cut(path, doc.size)


_JOB: tuple[Path, Document, int, int] | None = None  # set before forking: workers inherit it


def _write_share(writer: int) -> None:
    assert _JOB is not None
    path, doc, chunk, writers = _JOB
    _fill(path, doc, chunk, range(writer, -(-doc.size // chunk), writers))


def _fill(path: Path, doc: Document, chunk: int, chunks: range) -> None:
    filler = _Filler(path, doc, chunk)
    try:
        for k in chunks:
            filler.fill(k)
    finally:
        filler.close()


class _Filler:
    """Fills chunks of one document: reads what the chunk needs from each spool (reusing its
    buffers, so the document does not fault in fresh memory), copies it into place, writes.

    Two buffers take turns: a direct write returns only once the data is on the disk, so each
    write waits in a thread while the next chunk is filled in the other buffer (its write then
    queues behind the first)."""

    def __init__(self, path: Path, doc: Document, chunk: int) -> None:
        self.doc = doc
        self.outs = (BlockWriter(path, chunk), BlockWriter(path, chunk))
        self.pending: list[Future[None] | None] = [None, None]
        self.writes = ThreadPoolExecutor(1, thread_name_prefix="document-write")
        self.turn = 0
        self.fds: dict[int, int] = {}
        self.reads: dict[int, bytearray] = {}

    def fill(self, k: int) -> None:
        turn, self.turn = self.turn, 1 - self.turn
        waiting = self.pending[turn]
        if waiting is not None:
            waiting.result()  # this buffer's previous write is done (or raises its error)
        out, doc = self.outs[turn], self.doc
        buf, chunk = out.buffer, out.chunk
        lo, hi = k * chunk, min((k + 1) * chunk, doc.size)
        head, tail_at = doc.head, doc.size - len(doc.tail)
        if lo < len(head):
            buf[: min(hi, len(head)) - lo] = head[lo:hi]
        if hi > tail_at:
            a = max(lo, tail_at)
            buf[a - lo : hi - lo] = doc.tail[a - tail_at : hi - tail_at]
        ends = doc.out_at + doc.length
        r0, r1 = int(np.searchsorted(ends, lo, side="right")), int(np.searchsorted(doc.out_at, hi))
        if r1 > r0:
            self._copy_runs(buf, lo, hi, slice(r0, r1))
        self.pending[turn] = self.writes.submit(out.write, lo, hi - lo)

    def _copy_runs(self, buf: memoryview, lo: int, hi: int, runs: slice) -> None:
        doc = self.doc
        out_at, length, src = doc.out_at[runs], doc.length[runs], doc.source[runs]
        put = np.maximum(out_at, lo)  # a run may begin before this chunk or end after it
        stop = np.minimum(out_at + length, hi)
        take = doc.spool_at[runs] + (put - out_at)
        views: dict[int, tuple[int, memoryview]] = {}
        for s in np.unique(src).tolist():  # the pieces of one spool are one contiguous range
            mine = np.flatnonzero(src == s)
            a, b = int(take[mine[0]]), int(take[mine[-1]] + stop[mine[-1]] - put[mine[-1]])
            views[s] = (a, self._read(s, a, b - a))
        for s, p, q, t in zip(src.tolist(), put.tolist(), stop.tolist(), take.tolist(), strict=True):
            base, view = views[s]
            buf[p - lo : q - lo] = view[t - base : t - base + q - p]

    def _read(self, s: int, at: int, size: int) -> memoryview:
        if s not in self.fds:
            self.fds[s] = os.open(self.doc.files[s], os.O_RDONLY)
        space = self.reads.get(s)
        if space is None or len(space) < size:
            space = self.reads[s] = bytearray(size)
        view = memoryview(space)[:size]
        if os.preadv(self.fds[s], [view], at) != size:
            raise OSError(f"{self.doc.files[s]} is shorter than its records")
        return view

    def close(self) -> None:
        """Wait for the queued writes (raising the first error), then close everything."""
        try:
            for waiting in self.pending:
                if waiting is not None:
                    waiting.result()
        finally:
            self.writes.shutdown()
            for fd in self.fds.values():
                os.close(fd)
            for out in self.outs:
                out.close()
