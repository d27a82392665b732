"""Candle CSV files read into arrays: whole, or only their first and last rows.

Files are parsed once with orjson (numpy for anything unusual) and checked with the same rules
as live rows; every dropped row is named by file and line. A parallel replay plans its span
from the files' first and last candles before any worker parses a whole file: `read_edges`
reads those rows from the two ends, and `Edges.matches` lets the worker confirm them against
the parsed file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from engine.errors import DataUnavailable
from engine.market.candles import FloatArray
from engine.market.validate import check_rows, to_array

HEADER = ("timestamp", "open", "high", "low", "close", "volume")
EDGE_BYTES = 64 * 1024  # read from each end: about 850 five-minute candles
_WARN_ROWS = 20


def load_csv(path: Path, logger: logging.Logger) -> FloatArray:
    """The file's valid rows as an (n, 6) array; every dropped row is logged as file:line."""
    fast = _load_clean(path)
    if fast is not None:
        return fast
    lines = path.read_text().splitlines()
    if not lines or not _is_header(lines[0]):
        raise DataUnavailable(f"{path}: expected header {','.join(HEADER)}, got {lines[:1]!r}")
    numbered = [(n, line) for n, line in enumerate(lines[1:], start=2) if line.strip()]
    body = [line for _, line in numbered]
    if not body:
        return np.empty((0, 6), dtype=np.float64)
    try:
        arr = np.loadtxt(body, delimiter=",", dtype=np.float64, ndmin=2, usecols=range(6))
        malformed = None
    except ValueError:
        arr, malformed = to_array([line.split(",") for line in body])
    check = check_rows(arr, malformed)
    for i, reason in check.reasons[:_WARN_ROWS]:
        logger.warning("%s:%d: row dropped (%s): %s", path, numbered[i][0], reason, numbered[i][1].strip())
    if len(check.reasons) > _WARN_ROWS:
        logger.warning("%s: %d more rows dropped", path, len(check.reasons) - _WARN_ROWS)
    return np.ascontiguousarray(arr[check.keep])


def _load_clean(path: Path) -> FloatArray | None:
    """The rows of a file with nothing to drop, parsed straight from disk (parsing is most of a
    long replay's start-up); None when anything is unusual, so `load_csv` can name the lines."""
    try:
        with path.open("rb") as fh:
            if not _is_header(fh.readline().decode()):
                return None
            body = fh.read()
            arr = _parse_plain(body)
            if arr is None:
                arr = np.loadtxt(
                    body.decode().splitlines(), delimiter=",", dtype=np.float64, ndmin=2, usecols=range(6)
                )
    except (ValueError, UnicodeDecodeError):
        return None
    kept = _all_kept(arr)
    return None if kept is None else np.ascontiguousarray(kept)


def _is_header(line: str) -> bool:
    return tuple(col.strip().lower() for col in line.split(","))[:6] == HEADER


def _all_kept(arr: FloatArray | None) -> FloatArray | None:
    """`arr` if it has rows and `check_rows` would drop none of them, else None."""
    if arr is None or arr.shape[0] == 0 or check_rows(arr, None).reasons:
        return None
    return arr


def _parse_plain(body: bytes) -> FloatArray | None:
    """Rows of exactly six plain numbers, read as one JSON array: orjson reads numbers about
    twice as fast as `np.loadtxt`, and rounds them the same (correctly). None for anything
    else (blank lines, other column counts, "nan", "+1", ".5"): `np.loadtxt` reads those."""
    body = body.rstrip(b"\r\n")
    if not body:
        return None
    # the separators must run five commas, one newline, ...: six fields on every line
    buf = np.frombuffer(body, np.uint8)
    seps = buf[np.flatnonzero((buf == ord(",")) | (buf == ord("\n")))] == ord("\n")
    if (len(seps) + 1) % 6 or not np.array_equal(seps, np.arange(len(seps)) % 6 == 5):
        return None
    try:
        values = orjson.loads(b"[" + body.replace(b"\n", b",") + b"]")
    except orjson.JSONDecodeError:
        return None
    return np.array(values, dtype=np.float64).reshape(-1, 6)


@dataclass(frozen=True, slots=True)
class Edges:
    """A file's first rows (`head`) and last rows (`tail`) as `load_csv` would return them, if
    the rows before the tail drop none of its rows; `matches` tells."""

    head: FloatArray
    tail: FloatArray

    def matches(self, rows: FloatArray) -> bool:
        """Whether `rows` (the whole file, parsed) begin with `head` and end with `tail`."""
        h, t = self.head.shape[0], self.tail.shape[0]
        return (
            rows.shape[0] > h + t
            and np.array_equal(rows[:h], self.head)
            and np.array_equal(rows[rows.shape[0] - t :], self.tail)
        )


def read_edges(path: Path, size: int = EDGE_BYTES) -> Edges | None:
    """The whole lines of the first and last `size` bytes of the file, parsed; None when the file
    is short (parse it whole instead) or anything in those lines is unusual (blank lines,
    rows `load_csv` would drop, other spellings): `load_csv` then reads it and names the lines."""
    try:
        total = path.stat().st_size
        if total <= 4 * size:
            return None
        with path.open("rb") as fh:
            first = fh.read(size)
            fh.seek(total - size)
            last = fh.read(size)
    except OSError:
        return None
    lines = first.split(b"\n")
    try:
        if not _is_header(lines[0].decode()):
            return None
    except UnicodeDecodeError:
        return None
    head = _all_kept(_parse_plain(b"\n".join(lines[1:-1])))  # the last piece may be cut mid-line
    tail = _all_kept(_parse_plain(last[last.find(b"\n") + 1 :]))  # so may the first
    return None if head is None or tail is None else Edges(head, tail)
