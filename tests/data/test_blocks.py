"""Byte blocks tile a file exactly and know the physical line they start on."""

from __future__ import annotations

import codecs
import hashlib

import numpy as np
import pyarrow as pa
import pytest

from churn.config import load_job
from churn.data.blocks import Block, read_block_bytes, read_block_rows, scan_file
from churn.data.ingest import SchemaDriftError, check_headers
from churn.data.parse import parse_block
from tests.conftest import ROOT, TELCO


def _blocks(path, scan) -> list[Block]:
    ends = [*scan.offsets[1:], scan.size]
    return [Block(str(path), 0, i, off, end - off, first)
            for i, (off, end, first) in enumerate(zip(scan.offsets, ends, scan.first_lines, strict=True))]


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
    for block in _blocks(path, scan):
        data = read_block_bytes(block)
        first = block.first_line
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
    for block in _blocks(path, scan):
        data = read_block_bytes(block).decode()
        first = block.first_line
        got = data.split("\n")[:-1]
        assert got == lines[first - 1:first - 1 + len(got)]
        seen += got
    assert seen == lines


@pytest.mark.parametrize("blocksize", [5, 16, 40, 100])
def test_quoted_newlines_are_never_cut(tmp_path, blocksize):
    """Wherever a nominal boundary falls, a block starts at a record: a quoted field's lines stay together."""
    rows = ["id,note,churn"] + [f'{i},"line one\nline two\nline three",No' if i % 3 == 0 else f"{i},plain,Yes"
                                for i in range(40)]
    text = "\n".join(rows) + "\n"
    path = tmp_path / "quoted.csv"
    path.write_text(text)
    scan = scan_file(str(path), blocksize)
    pieces = [read_block_bytes(b) for b in _blocks(path, scan)]
    assert b"".join(pieces) == text.encode()
    physical = text.split("\n")
    for block, data in zip(_blocks(path, scan), pieces, strict=True):
        assert data.count(b'"') % 2 == 0  # no quoted field is split
        assert data.decode().split("\n")[0] == physical[block.first_line - 1]


def test_a_stray_quote_does_not_swallow_the_rest_of_the_file(tmp_path):
    """A quote that never closes: blocks after it still start every ~blocksize bytes."""
    rows = ["id,note,churn"] + [f"{i},plain,Yes" for i in range(5000)]
    rows[10] = '9,"broken,Yes'
    path = tmp_path / "stray.csv"
    path.write_text("\n".join(rows) + "\n")
    scan = scan_file(str(path), 4096, max_record=2048)
    sizes = np.diff([*scan.offsets, scan.size])
    assert len(scan.offsets) > 10 and sizes.max() < 4096 + 2048 + 100


def test_a_header_churn_cannot_read_is_one_line_before_any_work(tmp_path):
    """A column named twice, or lines ended by a lone CR (old Mac files): one message naming the
    file and the cause, from the header check that runs before the cluster starts."""
    job = load_job(ROOT / "jobs" / "ingest.yaml")
    lines = TELCO.read_bytes().split(b"\n")[:20]
    twice = tmp_path / "twice.csv"
    twice.write_bytes(b"\n".join([lines[0] + b",gender"] + [line + b",Male" for line in lines[1:]]) + b"\n")
    cr_only = tmp_path / "cr.csv"
    cr_only.write_bytes(b"\r".join(lines) + b"\r")
    for path, cause in ((twice, "the header names column(s) 'gender' more than once"),
                        (cr_only, "the header line holds a lone carriage return (CR)")):
        with pytest.raises(SchemaDriftError, match="nothing was read") as info:
            check_headers([str(path)], job.table)
        assert f"{path}: {cause}" in str(info.value)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-32-be", "cp037"])
def test_an_encoding_churn_cannot_cut_is_refused_at_load(encoding):
    """Blocks and lines are cut at newline bytes: UTF-16/32 without a byte-order mark, or EBCDIC,
    are refused when the job is loaded, with the way out named; the others load."""
    with pytest.raises(ValueError, match=f"encoding '{encoding}' is not supported.*iconv"):
        load_job(ROOT / "jobs" / "ingest.yaml", [f"data.encoding={encoding}"])
    for fine in ("latin-1", "utf-8-sig", "cp1252", "utf-16", "UTF-32"):
        assert load_job(ROOT / "jobs" / "ingest.yaml", [f"data.encoding={fine}"]).data.encoding == fine


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_a_utf16_or_utf32_file_is_read_whole_and_parsed_as_its_text(tmp_path, encoding):
    """A declared UTF-16/32 file with a byte-order mark: its header is read, it is one block, and
    the block parses to the same rows as the UTF-8 file; an invalid sequence costs its line only.
    A UTF-8 file declared utf-16 is one message naming the cause."""
    job = load_job(ROOT / "jobs" / "ingest.yaml")
    text = TELCO.read_text().split("\n")[:51]
    text[20] = text[20].replace("Female", "F\u00e9male").replace(",Male,", ",M\u00e2le,")  # unknown, not invalid
    bom, codec, bad = {"utf-16": (codecs.BOM_UTF16_LE, "utf-16-le", b"\x00\xd8"),  # a lone surrogate
                       "utf-32": (codecs.BOM_UTF32_LE, "utf-32-le", b"\x00\x00\x11\x00")}[encoding]  # > U+10FFFF
    before, after = "\n".join(text[:31]), "\n".join(text[31:]) + "\n"  # line 31 ends ``before``
    raw = bom + before[:-3].encode(codec) + bad + (before[-3:] + "\n" + after).encode(codec)
    path = tmp_path / "wide.csv"
    path.write_bytes(raw)
    headers = check_headers([str(path)], job.table, encoding)
    assert headers[str(path)] == text[0].split(",")
    scan = scan_file(str(path), blocksize=64)
    assert scan.offsets == (0,) and scan.lines is None and scan.sha256 == hashlib.sha256(raw).hexdigest()
    data, first = read_block_rows(Block(str(path), 0, 0, 0, scan.size, 1, tuple(headers[str(path)])))
    out = parse_block(data, headers[str(path)], first, job.table, str(path), encoding)
    assert [(line, reason) for line, reason, _ in out.rejected] == [(31, "invalid_encoding")]
    quarantine = pa.concat_tables(out.quarantine)
    assert quarantine.column("_line").to_pylist() == [21]  # an unknown category, read as its text
    assert quarantine.column("gender")[0].as_py() in ("F\u00e9male", "M\u00e2le")
    assert sum(c.num_rows for c in out.clean) == 48 and out.records == 50
    utf8 = tmp_path / "utf8.csv"
    utf8.write_text("\n".join(text))
    with pytest.raises(SchemaDriftError, match=f"data.encoding is {encoding}, but the file does not start with"):
        check_headers([str(utf8)], job.table, encoding)
    with pytest.raises(SchemaDriftError, match=f"{encoding} text \\(set data.encoding: {encoding}\\)"):
        check_headers([str(path)], job.table)
