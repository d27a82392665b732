"""A replay's JSON records, from the units' spool files to one list in time order.

Each unit spools its records (one per line, each ending in ",\\n") in its own time order;
the merged columns say which unit each row of the global order comes from. Rows of one unit
appear in the global order in the order that unit spooled them, so a chunk of the output is
a run of slices of a few contiguous byte ranges: one read per unit and chunk, no step per
record. The output is a `BlockFile` (hundreds of megabytes for a year: written directly).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from engine.block_file import BlockFile

SEPARATOR = b",\n"
CHUNK_BYTES = 8 << 20


def write_spooled(
    out: BlockFile,
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
    buffers = [bytearray() for _ in files]
    try:
        for s in np.unique(run_src).tolist():
            path = files[s]
            if path is None:
                raise ValueError("this replay was run without records")
            fds[s] = os.open(path, os.O_RDONLY)
        for a, b in itertools.pairwise(bounds):
            if b > a:
                out.write_many(_chunk(buffers, fds, run_src[a:b], start[a:b], end[a:b]))
    finally:
        for fd in fds.values():
            os.close(fd)


def _chunk(
    buffers: list[bytearray],
    fds: dict[int, int],
    run_src: npt.NDArray[np.int64],
    start: npt.NDArray[np.int64],
    end: npt.NDArray[np.int64],
) -> list[memoryview]:
    """These runs as slices of `buffers` (one per spool, reused from chunk to chunk, so a year
    of records does not fault in fresh memory): one read per spool."""
    base: dict[int, int] = {}
    views: dict[int, memoryview] = {}
    for s in np.unique(run_src).tolist():
        mine = run_src == s
        lo, hi = int(start[mine][0]), int(end[mine][-1])
        if len(buffers[s]) < hi - lo:
            buffers[s] = bytearray(hi - lo)
        view = memoryview(buffers[s])[: hi - lo]
        if os.preadv(fds[s], [view], lo) != hi - lo:
            raise OSError(f"spool of unit {s} is shorter than its records")
        base[s], views[s] = lo, view
    return [
        views[s][a - base[s] : b - base[s]]
        for s, a, b in zip(run_src.tolist(), start.tolist(), end.tolist(), strict=True)
    ]
