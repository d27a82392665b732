"""A replay's JSON records, from the units' spool files to one list in time order.

Each unit spools its records (one per line, each ending in ",\\n") in its own time order;
the merged columns say which unit each row of the global order comes from. Rows of one unit
appear in the global order in the order that unit spooled them, so a chunk of the output is
a run of slices of a few contiguous byte ranges: one read per unit and chunk, no step per
record. The disk write of a chunk (hundreds of megabytes for a year) runs in a thread while
the next chunk is assembled.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

SEPARATOR = b",\n"
CHUNK_BYTES = 8 << 20


def write_spooled(
    out: BinaryIO,
    files: Sequence[Path | None],
    source: npt.NDArray[np.integer],
    sizes: npt.NDArray[np.integer],
) -> None:
    """Row i of the global order is the next unread line of `files[source[i]]`, `sizes[i]`
    bytes long with its separator; write them all in that order, without the last separator."""
    n = len(source)
    if n == 0:
        return
    src = source.astype(np.int64)
    size = sizes.astype(np.int64)
    offset = np.empty(n, np.int64)  # each row's place in its own spool
    for s in np.unique(src).tolist():
        mine = np.flatnonzero(src == s)
        offset[mine] = np.cumsum(size[mine]) - size[mine]
    cut = np.flatnonzero(src[1:] != src[:-1]) + 1  # runs of rows from one spool: one slice each
    first, last = np.concatenate(([0], cut)), np.concatenate((cut, [n])) - 1
    run_src, start, end = src[first], offset[first], offset[last] + size[last]
    end[-1] -= len(SEPARATOR)
    done = np.cumsum(end - start)
    bounds = [
        0,
        *np.searchsorted(done, np.arange(CHUNK_BYTES, int(done[-1]), CHUNK_BYTES)).tolist(),
        len(first),
    ]
    fds: dict[int, int] = {}
    writer = _Writer(out)
    try:
        for s in np.unique(run_src).tolist():
            path = files[s]
            if path is None:
                raise ValueError("this replay was run without records")
            fds[s] = os.open(path, os.O_RDONLY)
        for a, b in itertools.pairwise(bounds):
            if b <= a:
                continue
            writer.put(_chunk(fds, run_src[a:b], start[a:b], end[a:b]))
    finally:
        writer.close()
        for fd in fds.values():
            os.close(fd)


def _chunk(
    fds: dict[int, int],
    run_src: npt.NDArray[np.int64],
    start: npt.NDArray[np.int64],
    end: npt.NDArray[np.int64],
) -> bytes:
    """The output bytes of these runs: one read per spool, then slices of what was read."""
    base: dict[int, int] = {}
    views: dict[int, memoryview] = {}
    for s in np.unique(run_src).tolist():
        mine = run_src == s
        lo, hi = int(start[mine][0]), int(end[mine][-1])
        data = os.pread(fds[s], hi - lo, lo)
        if len(data) != hi - lo:
            raise OSError(f"spool of unit {s} is shorter than its records")
        base[s], views[s] = lo, memoryview(data)
    return b"".join(
        [
            views[s][a - base[s] : b - base[s]]
            for s, a, b in zip(run_src.tolist(), start.tolist(), end.tolist(), strict=True)
        ]
    )


class _Writer:
    """Writes chunks in a thread (the write releases the GIL); at most two wait in memory."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="replay-records", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(data)
                except BaseException as exc:  # handed to the caller by close()
                    self._error = exc

    def put(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(data)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
