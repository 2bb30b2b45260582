"""Cutting CSV files into record-aligned byte blocks, hashing them and numbering their lines.

:func:`scan_file` reads each file once, front to back: it hashes it, counts its lines and
picks every block's start at a record boundary (a newline outside quotes), so blocks tile the
file exactly and a quoted field holding newlines stays in one block, wherever the nominal
block boundary falls. Line numbers are physical (1 = header).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np
from fsspec.utils import infer_compression

from churn.data.manifest import IngestError

_CHUNK = 8 * 2**20


class UnreadableError(IngestError):
    """A worker cannot read a file the client could: one line naming the file and the worker."""


def _where() -> str:
    """This worker's address, or ``this process`` outside a Dask worker."""
    try:
        from distributed import get_worker

        return f"worker {get_worker().address}"
    except (ImportError, ValueError):
        return "this process"


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    """Turn an OSError while reading ``path`` into an :class:`UnreadableError` naming it and the worker
    (a relative path resolved in the worker's own folder, a file system the worker does not see)."""
    try:
        yield
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        raise UnreadableError(f"{path}: {_where()} cannot read it ({why}); every worker must see the data at "
                              "the same path (a shared file system) or at a URL such as s3://") from None


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


def count_byte(data: bytes, byte: int, start: int = 0, end: int | None = None) -> int:
    """How often ``byte`` occurs in ``data[start:end]``: NumPy's count runs at twice the speed of
    ``bytes.count`` for one byte (in slices, so the comparison's mask stays small)."""
    view = np.frombuffer(data, np.uint8)[start:end]
    return sum(int(np.count_nonzero(view[i:i + _CHUNK] == byte)) for i in range(0, len(view), _CHUNK))


# UTF-16 and UTF-32 files (with a byte-order mark) are read whole, one block per file as a compressed
# file is, and transcoded to UTF-8 before they are parsed: their newlines are not newline bytes.
WIDE = ("utf-16", "utf-32")
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
codecs.register_error("churn.invalid", lambda exc: ("\udc00", exc.end))  # see to_utf8


def wide_encoding(head: bytes) -> str | None:
    """``utf-16`` or ``utf-32`` when ``head`` (a file's first bytes) starts with that byte-order mark
    and holds a NUL byte after it (text in an ASCII-compatible encoding holds none: the header
    check refuses it), else None."""
    for bom, name in _BOMS:
        if head.startswith(bom) and b"\x00" in head[len(bom):256]:
            return name
    return None


def to_utf8(data: bytes, encoding: str) -> bytes:
    """``data`` (UTF-16 or UTF-32, from its byte-order mark on) as UTF-8; each invalid sequence
    becomes a lone surrogate, which is not UTF-8, so the parse quarantines its line as
    ``invalid_encoding`` like a bad byte in any other encoding."""
    return data.decode(encoding, errors="churn.invalid").encode("utf-8", errors="surrogatepass")


class NotTextError(ValueError):
    """A source file that is not CSV text (binary, or not in the declared encoding)."""


class BadHeaderError(NotTextError):
    """A header line churn cannot read columns from (a name twice, lines ended by a lone CR)."""


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
    declared = codecs.lookup(encoding).name
    if declared in WIDE:
        if wide_encoding(head) != declared:
            raise NotTextError(f"data.encoding is {encoding}, but the file does not start with a {declared} "
                               "byte-order mark")
        head, encoding = to_utf8(head, declared), "utf-8"
    line = head.split(b"\n", 1)[0]
    if b"\x00" in head:
        wide = wide_encoding(head)
        raise NotTextError(f"{wide} text (set data.encoding: {wide})" if wide
                           else "binary data (NUL bytes), not CSV text")
    if b"\r" in line.rstrip(b"\r"):
        raise BadHeaderError("the header line holds a lone carriage return (CR): lines that end in CR alone "
                             "must be converted to LF or CRLF")
    try:
        text = line.decode("utf-8-sig" if encoding.lower() in ("utf-8", "utf8") else encoding).rstrip("\r\n")
    except UnicodeDecodeError:
        raise NotTextError(f"the header line is not {encoding} text (set data.encoding)") from None
    names = [c.strip() for c in next(csv.reader([text]))] if text else []
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise BadHeaderError(f"the header names column(s) {', '.join(map(repr, twice))} more than once")
    return names


class _Reader:
    """A file read once, front to back: what has been passed is hashed and its newlines and
    quotes counted; what lies ahead can be looked at first. (Counts run on ranges of the read
    buffer: no byte is copied to be counted.)"""

    def __init__(self, fh: io.BufferedIOBase) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()
        self.buf = b""  # bytes read; self.buf[self.off:] not yet passed
        self.off = 0
        self.pos = 0  # absolute position of buf[off]
        self.newlines = 0  # newlines before pos
        self.quotes = 0  # quote characters between the last parity reset and pos
        self.last = b""

    def ahead(self, upto: int) -> None:
        """Read until the buffer reaches absolute byte ``upto`` (or the end of the file)."""
        while self.pos + len(self.buf) - self.off < upto:
            chunk = self.fh.read(max(_CHUNK, upto - self.pos - len(self.buf) + self.off))
            if not chunk:
                return
            self.buf = self.buf[self.off:] + chunk if self.off < len(self.buf) else chunk
            self.off = 0

    def advance(self, to: int) -> None:
        """Pass every byte before absolute position ``to``."""
        while self.pos < to:
            if self.off >= len(self.buf):
                self.ahead(min(to, self.pos + _CHUNK))
                if self.off >= len(self.buf):
                    return
            end = min(len(self.buf), self.off + to - self.pos)
            self.digest.update(memoryview(self.buf)[self.off:end])
            self.newlines += count_byte(self.buf, 10, self.off, end)
            if self.buf.find(b'"', self.off, end) >= 0:  # find runs at memchr speed: most chunks hold no quote
                self.quotes += self.buf.count(b'"', self.off, end)
            self.last = self.buf[end - 1:end]
            self.pos += end - self.off
            self.off = end

    def record_start(self, at: int, max_record: int) -> tuple[int, bool]:
        """The first record start at or after ``at``: after a newline outside quotes.

        Returns (position, True) normally; when no newline within ``max_record`` bytes is
        outside quotes, a stray quote is assumed: the first newline ends the record and the
        quote parity is reset there (``False``). ``at`` must be ``self.pos``.
        """
        self.ahead(at + max_record)
        buf, base = self.buf, self.off
        parity = self.quotes % 2
        start, first_newline = base, None
        limit = base + max_record
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0 or nl > limit:
                break
            first_newline = nl if first_newline is None else first_newline
            parity = (parity + buf.count(b'"', start, nl)) % 2
            if parity == 0:
                return at + nl + 1 - base, True
            start = nl + 1
        if first_newline is None:  # no newline at all ahead: the rest of the file is one record
            return at + len(buf) - base, True
        return at + first_newline + 1 - base, False


def scan_file(path: str, blocksize: int, max_record: int = 1 << 20) -> FileScan:
    """One sequential pass: sha256, physical lines, and a record-aligned start for every block.

    The file is cut into equal nominal blocks of at most ``blocksize`` bytes; block *i* starts at
    the first record start at or after its nominal start: after a
    newline outside quotes, so a quoted field holding newlines is never cut. (This is why the
    blocks are not fsspec's ``read_block``, which cuts at any newline.) A quote that stays open
    for ``max_record`` bytes is taken for a stray one: the block then starts after the next
    newline and the parse quarantines the broken line. Each block's first physical line is
    counted on the way.
    """
    with _reading(path):
        return _scan(path, blocksize, max_record)


def _scan(path: str, blocksize: int, max_record: int) -> FileScan:
    fs, p = fsspec.core.url_to_fs(path)
    size = int(fs.size(p))
    with fs.open(p, "rb") as fh:
        head = fh.read(256)
    if compression(path) or wide_encoding(head):  # no byte ranges: one block, lines counted there
        digest = hashlib.sha256()
        with fs.open(p, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        return FileScan(path=path, size=size, sha256=digest.hexdigest(), lines=None, first_lines=(1,))
    starts, firsts = [0], [1]
    with fs.open(p, "rb") as fh:
        reader = _Reader(fh)
        # equal blocks of at most ``blocksize``: 2.1 blocks' worth is 3 blocks of 0.7, not 2 and a
        # sliver that leaves one worker idle at the end
        step = max(1, -(-size // max(1, -(-size // blocksize))))
        for nominal in range(step, size, step):
            at = max(nominal, reader.pos)  # never back into a block already placed
            reader.advance(at)
            start, in_step = reader.record_start(at, max_record)
            reader.advance(start)
            if not in_step:
                reader.quotes = 0
            if start < size and start > starts[-1]:
                starts.append(start)
                firsts.append(reader.newlines + 1)
        reader.advance(size)
    ends_open = size > 0 and reader.last != b"\n"
    return FileScan(path=path, size=size, sha256=reader.digest.hexdigest(), lines=reader.newlines + int(ends_open),
                    first_lines=tuple(firsts), offsets=tuple(starts))


def read_block_bytes(block: Block) -> bytes:
    """The bytes of ``block``: its exact record-aligned byte range; for a compressed file, the
    whole decompressed file; a UTF-16 or UTF-32 file (one block) transcoded to UTF-8."""
    with _reading(block.path):
        if compression(block.path):
            with fsspec.open(block.path, "rb", compression="infer") as fh:
                data = fh.read()
        else:
            fs, p = fsspec.core.url_to_fs(block.path)
            with fs.open(p, "rb") as fh:
                fh.seek(block.offset)
                data = fh.read(block.length)
    wide = wide_encoding(data[:256]) if block.offset == 0 else None
    return to_utf8(data, wide) if wide else data


def read_block_rows(block: Block) -> tuple[bytes, int]:
    """The bytes of ``block`` without the header line, and the physical line they start on."""
    data = read_block_bytes(block)
    if block.offset:
        return data, block.first_line
    cut = data.find(b"\n")
    return (b"" if cut < 0 else data[cut + 1:]), 2
