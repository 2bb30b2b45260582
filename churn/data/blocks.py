"""Cutting CSV files into line-aligned byte blocks, hashing them and numbering their lines.

The bytes of a block come from ``fsspec.utils.read_block`` with ``delimiter=b"\n"``: block
*i* starts after the first newline at or after its offset (block 0 at byte 0) and ends after
the first newline at or after its end, so blocks tile a file exactly. What fsspec does not
give is the physical line number each block starts on; :func:`scan_file` counts it in the
same pass that hashes the file. Line numbers are physical (1 = header); a quoted field holding
a newline is not supported by the line numbering (it is parsed, but later line numbers in
that block shift by one).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass

import fsspec
from fsspec.utils import infer_compression, read_block

_CHUNK = 8 * 2**20


@dataclass(frozen=True)
class Block:
    """A byte range of one CSV file; ``first_line`` is the physical line its first row is on."""

    path: str
    file_index: int
    index: int  # position of the block among all blocks of all files
    offset: int
    length: int
    first_line: int = 0
    header: tuple[str, ...] = ()  # the file's column names, read once by the header check


@dataclass(frozen=True)
class FileScan:
    """What one pass over a file learned: size, sha256 and the first line of each block."""

    path: str
    size: int
    sha256: str
    lines: int | None  # None for a compressed file: its one block counts them
    first_lines: tuple[int, ...]
    offsets: tuple[int, ...] = (0,)  # byte offset of each block


class NotTextError(ValueError):
    """A source file that is not CSV text (binary, or not in the declared encoding)."""


def compression(path: str) -> str | None:
    """gzip, bz2, xz, zstd, … from the file name (fsspec's inference), or None."""
    return infer_compression(path)


def read_header(path: str, encoding: str = "utf-8") -> list[str]:
    """The column names in a CSV file's first line; a binary file is one clear error."""
    try:
        with fsspec.open(path, "rb", compression="infer") as fh:
            head = fh.read(1 << 16)
    except (OSError, EOFError, ValueError) as exc:  # e.g. a corrupt or mislabelled gzip file
        raise NotTextError(f"cannot read it ({exc})") from None
    line = head.split(b"\n", 1)[0]
    if b"\x00" in head:
        raise NotTextError("binary data (NUL bytes), not CSV text")
    try:
        text = line.decode("utf-8-sig" if encoding.lower() in ("utf-8", "utf8") else encoding).rstrip("\r\n")
    except UnicodeDecodeError:
        raise NotTextError(f"the header line is not {encoding} text (set data.encoding)") from None
    return [c.strip() for c in next(csv.reader([text]))] if text else []


def block_offsets(size: int, blocksize: int) -> list[int]:
    return list(range(0, max(size, 1), blocksize))


def scan_file(path: str, blocksize: int) -> FileScan:
    """One sequential pass: sha256 of the content and the first line number of every block.

    Block ``i`` starts after the first newline at or after byte ``offset_i`` (as
    ``read_block`` cuts it), so its first line number is ``newlines_before(offset_i) + 2``;
    block 0 holds the header (line 1).
    """
    fs, p = fsspec.core.url_to_fs(path)
    size = int(fs.size(p))
    if compression(path):  # no byte ranges in a compressed stream: one block, lines counted there
        digest = hashlib.sha256()
        with fs.open(p, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        return FileScan(path=path, size=size, sha256=digest.hexdigest(), lines=None, first_lines=(1,))
    offsets = block_offsets(size, blocksize)
    digest = hashlib.sha256()
    firsts = [1]
    state = {"pos": 0, "newlines": 0, "last": b""}

    def consume(fh: io.BufferedIOBase, upto: int | None) -> None:
        """Hash and count newlines up to byte ``upto`` (None: to the end)."""
        while upto is None or state["pos"] < upto:
            chunk = fh.read(_CHUNK if upto is None else min(_CHUNK, upto - state["pos"]))
            if not chunk:
                return
            digest.update(chunk)
            state["newlines"] += chunk.count(b"\n")
            state["pos"] += len(chunk)
            state["last"] = chunk[-1:]

    with fs.open(p, "rb") as fh:
        for off in offsets[1:]:
            consume(fh, off)
            firsts.append(state["newlines"] + 2)
        consume(fh, None)
    ends_open = size > 0 and state["last"] != b"\n"
    newlines = state["newlines"]
    return FileScan(path=path, size=size, sha256=digest.hexdigest(), lines=newlines + int(ends_open),
                    first_lines=tuple(firsts), offsets=tuple(offsets))


def read_block_bytes(block: Block) -> bytes:
    """The bytes of the lines that belong to ``block`` (fsspec's newline-aligned block); for a
    compressed file, the whole decompressed file."""
    if compression(block.path):
        with fsspec.open(block.path, "rb", compression="infer") as fh:
            return fh.read()
    fs, p = fsspec.core.url_to_fs(block.path)
    with fs.open(p, "rb") as fh:
        return read_block(fh, block.offset, block.length, delimiter=b"\n")
