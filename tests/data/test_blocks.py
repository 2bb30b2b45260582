"""Byte blocks tile a file exactly and know the physical line they start on."""

from __future__ import annotations

import hashlib

import pytest

from churn.data.blocks import Block, read_block_bytes, scan_file


@pytest.mark.parametrize("blocksize", [7, 64, 1000, 10**6])
@pytest.mark.parametrize("trailing_newline", [True, False])
def test_blocks_tile_the_file_and_number_lines(tmp_path, blocksize, trailing_newline):
    """Concatenated blocks equal the file; each block's first line is the numbered line."""
    lines = ["id,value"] + [f"{i},{'x' * (i % 13)}" for i in range(1, 300)]
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    path = tmp_path / "f.csv"
    path.write_text(text)
    scan = scan_file(str(path), blocksize)
    assert scan.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert scan.lines == len(lines)
    pieces = []
    for i, (off, first) in enumerate(zip(range(0, scan.size, blocksize), scan.first_lines, strict=True)):
        data = read_block_bytes(Block(str(path), 0, i, off, blocksize, first))
        pieces.append(data)
        if data:
            assert data.decode().split("\n")[0] == lines[first - 1]
    assert b"".join(pieces) == text.encode()


@pytest.mark.parametrize("blocksize", [1, 8, 9, 18, 27])
def test_lines_starting_exactly_at_a_block_offset(tmp_path, blocksize):
    """Fixed-width lines put line starts on block offsets: each line is read once, numbered right."""
    lines = ["header01"] + [f"row{i:05d}" for i in range(40)]  # 8 bytes + newline each
    text = "\n".join(lines) + "\n"
    path = tmp_path / "fixed.csv"
    path.write_text(text)
    scan = scan_file(str(path), blocksize)
    seen = []
    for i, (off, first) in enumerate(zip(range(0, scan.size, blocksize), scan.first_lines, strict=True)):
        data = read_block_bytes(Block(str(path), 0, i, off, blocksize, first)).decode()
        got = data.split("\n")[:-1]
        assert got == lines[first - 1:first - 1 + len(got)]
        seen += got
    assert seen == lines
