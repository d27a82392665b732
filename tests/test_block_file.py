"""BlockFile: whatever is written comes back byte for byte, direct or through the page cache."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.block_file import ALIGN, BlockFile

SHM = Path("/dev/shm")  # tmpfs: refuses O_DIRECT, so the buffered path is taken


def places() -> list[Path]:
    out = [Path(tempfile.gettempdir())]
    if SHM.is_dir():
        out.append(SHM)
    return out


parts = st.lists(
    st.one_of(st.binary(max_size=50), st.integers(0, 3 * ALIGN + 7).map(lambda n: bytes([n % 251]) * n)),
    max_size=40,
)


@pytest.mark.parametrize("where", places())
@settings(max_examples=60, deadline=None)
@given(chunks=parts, many=st.booleans())
def test_what_is_written_is_what_is_read(where: Path, chunks: list[bytes], many: bool) -> None:
    with tempfile.TemporaryDirectory(dir=where) as d:
        path = Path(d) / "out.json"
        with BlockFile(path, chunk=2 * ALIGN) as out:  # small buffers: many hand-overs
            if many:
                out.write_many([memoryview(c) for c in chunks])
            else:
                for c in chunks:
                    out.write(c)
        assert path.read_bytes() == b"".join(chunks)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_reported_not_swallowed() -> None:
    # the error may surface at a write or at close: either way it reaches the caller
    with pytest.raises(OSError) as err, BlockFile(Path("/dev/full"), chunk=ALIGN) as out:
        out.write(b"x" * (3 * ALIGN))
    assert err.value.errno == errno.ENOSPC
