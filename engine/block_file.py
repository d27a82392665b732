"""Big output files written in aligned blocks straight to the disk.

A year-long replay's JSON document is several hundred megabytes, written once and not read
back by us. Through the page cache, every byte is first copied into freshly allocated cache
pages, which on a virtual machine costs as much as the rest of the write (about 1 s for
370 MB on the 2-core test machine, against 0.2 s direct). So such a file is written with
O_DIRECT where the file system allows it: whole blocks at block offsets from aligned buffers,
the last one padded and the file cut to its length afterwards. Elsewhere (tmpfs, other
systems) the same writes go through the page cache.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from pathlib import Path

ALIGN = 4096  # a multiple of every device's logical block size
_O_DIRECT = getattr(os, "O_DIRECT", 0)


class BlockWriter:
    """Writes block-aligned pieces of one existing file at their offsets, from its own aligned
    buffer (`buffer`, `chunk` bytes). Several writers (one per process) may fill one file."""

    def __init__(self, path: Path, chunk: int) -> None:
        if chunk % ALIGN:
            raise ValueError(f"chunk must be a multiple of {ALIGN}")
        self.chunk = chunk
        self.buffer = memoryview(mmap.mmap(-1, chunk))
        self._fd, self._direct = -1, False
        flags = os.O_WRONLY
        if _O_DIRECT:
            try:
                self._fd, self._direct = os.open(path, flags | _O_DIRECT), True
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        if self._fd < 0:
            self._fd = os.open(path, flags)

    def write(self, offset: int, size: int) -> None:
        """The first `size` bytes of the buffer at `offset` (a multiple of ALIGN). A direct
        write takes whole blocks: the padding past `size` is the caller's to cut off (see
        `create`); a file system that refuses direct writes gets buffered ones from then on."""
        if offset % ALIGN:
            raise ValueError(f"offset must be a multiple of {ALIGN}")
        done = 0
        while done < size:
            try:
                if self._direct:
                    done += os.pwrite(self._fd, self.buffer[done : -(-size // ALIGN) * ALIGN], offset + done)
                else:
                    done += os.pwrite(self._fd, self.buffer[done:size], offset + done)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self._direct:
                    raise
                flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
                fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~_O_DIRECT)
                self._direct = False

    def close(self) -> None:
        """Close the file (the buffer goes with the writer)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def create(path: Path, size: int, mode: int = 0o644) -> None:
    """An empty file of `size` bytes for writers to fill. (Not posix_fallocate: where the file
    system cannot reserve blocks, glibc emulates it by writing zeros over the whole file.)"""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def cut(path: Path, size: int) -> None:
    """Cut the file to `size` bytes: the padding of a last direct write goes."""
    os.truncate(path, size)
