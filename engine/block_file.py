"""A big output file written in aligned blocks straight to the disk.

A year-long replay's JSON document is several hundred megabytes, written once and not read
back by us. Through the page cache, every byte is first copied into freshly allocated cache
pages, which on a virtual machine costs as much as the rest of the write (about 1 s for
370 MB on the 2-core test machine, against 0.2 s direct). So the file is written with
O_DIRECT where the file system allows it: whole blocks from aligned buffers, the last one
padded and the file cut to its length. Elsewhere (tmpfs, other systems) the same writes go
through the page cache. Writing runs in a thread, overlapping the caller's next chunk.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import queue
import threading
from pathlib import Path
from types import TracebackType

ALIGN = 4096  # a multiple of every device's logical block size


class BlockFile:
    """Sequential writer of one file; `write` copies into one of two aligned buffers, a thread
    writes full ones."""

    def __init__(self, path: Path, chunk: int = 8 << 20, mode: int = 0o644) -> None:
        self.chunk = chunk - chunk % ALIGN
        self._fd, self._direct = _open(path, mode)
        self._views = [memoryview(mmap.mmap(-1, self.chunk)) for _ in range(2)]
        self._cur, self._pos, self._total = 0, 0, 0
        self._free: queue.Queue[int] = queue.Queue()
        self._free.put(1)
        self._work: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="block-file", daemon=True)
        self._thread.start()
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append `data` (copied: the caller may reuse its buffer at once)."""
        view, size = memoryview(data), len(data)
        done = 0
        while done < size:
            take = min(size - done, self.chunk - self._pos)
            self._views[self._cur][self._pos : self._pos + take] = view[done : done + take]
            self._pos += take
            done += take
            if self._pos == self.chunk:
                self._hand_over()

    def write_many(self, parts: list[memoryview]) -> None:
        """`write` of each part, in order."""
        buf, pos, chunk = self._views[self._cur], self._pos, self.chunk
        for part in parts:
            size = len(part)
            if pos + size >= chunk:  # spans buffers: the general path
                self._pos = pos
                self.write(part)
                buf, pos = self._views[self._cur], self._pos
                continue
            buf[pos : pos + size] = part
            pos += size
        self._pos = pos

    def close(self) -> None:
        """Write what is left, wait for the disk, cut the padding off and close."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._pos and self._error is None:
                self._hand_over()
        finally:
            self._work.put(None)
            self._thread.join()
            try:
                if self._error is None:
                    os.ftruncate(self._fd, self._total)
            finally:
                os.close(self._fd)
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BlockFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _hand_over(self) -> None:
        if self._error is not None:
            raise self._error
        self._total += self._pos
        self._work.put((self._cur, self._pos))
        self._cur, self._pos = self._free.get(), 0

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            which, size = item
            if self._error is None:
                try:
                    self._write_block(self._views[which], size)
                except BaseException as exc:  # raised to the caller by its next write or close
                    self._error = exc
            self._free.put(which)

    def _write_block(self, view: memoryview, size: int) -> None:
        """Write `size` bytes of the buffer. A direct write takes whole blocks (the padding
        beyond `size` is cut off at close); a file system that refuses direct writes gets
        buffered ones from then on."""
        done = 0
        while done < size:
            try:
                if self._direct:
                    done += os.write(self._fd, view[done : -(-size // ALIGN) * ALIGN])
                else:
                    done += os.write(self._fd, view[done:size])
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self._direct:
                    raise
                flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
                fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~_O_DIRECT)
                self._direct = False


_O_DIRECT = getattr(os, "O_DIRECT", 0)


def _open(path: Path, mode: int) -> tuple[int, bool]:
    """The file, opened for direct writes where the system offers them."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if _O_DIRECT:
        try:
            return os.open(path, flags | _O_DIRECT, mode), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    return os.open(path, flags, mode), False
