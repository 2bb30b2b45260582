"""One block's bytes → rows: stray quotes, bad bytes and quoted newlines cost only their own rows."""

from __future__ import annotations

import pyarrow as pa
import pytest

from churn.config import load_job
from churn.data.parse import parse_block
from tests.conftest import ROOT, TELCO

JOB = load_job(ROOT / "jobs" / "train.yaml")


@pytest.fixture(scope="module")
def telco_lines() -> tuple[list[str], list[bytes]]:
    """The Telco header and its first 200 data lines, as bytes."""
    lines = TELCO.read_bytes().split(b"\n")
    return lines[0].decode().split(","), lines[1:201]


def _parse(header, body, encoding="utf-8"):
    out = parse_block(b"\n".join(body) + b"\n", header, 2, JOB.table, "t.csv", encoding)
    clean = pa.concat_tables(out.clean)
    quarantined = sum(q.num_rows for q in out.quarantine)
    return out, clean, quarantined


def _edit(body, index, *pairs):
    """A copy of ``body`` with each (old, new) replaced once in line ``index``."""
    body = list(body)
    for old, new in pairs:
        body[index] = body[index].replace(old, new, 1)
    return body


def test_a_stray_quote_costs_only_its_row(telco_lines):
    """A quote opened in line 51 and never closed: line 51 is quarantined, the 199 others kept."""
    header, body = telco_lines
    body = _edit(body, 49, (b",Female,", b',"Female,'), (b",Male,", b',"Male,'))
    out, clean, quarantined = _parse(header, body)
    assert [(line, reason) for line, reason, _ in out.rejected] == [(51, "unbalanced_quote")]
    assert out.rejected[0][2] == body[49].decode()
    assert clean.num_rows == 199 and quarantined == 0
    assert out.records == 200 and out.embedded_newlines == 0


def test_two_stray_quotes_in_one_block(telco_lines):
    """Each broken line is quarantined on its own; everything else is kept."""
    header, body = telco_lines
    body = _edit(_edit(body, 20, (b",No,", b',"No,')), 120, (b",No,", b',"No,'))
    out, clean, _ = _parse(header, body)
    assert sorted(line for line, reason, _ in out.rejected if reason == "unbalanced_quote") == [22, 122]
    assert clean.num_rows == 198


def test_a_bad_byte_costs_only_its_line_and_latin1_reads_it(telco_lines):
    """One latin-1 byte: invalid_encoding for that line under UTF-8; with data.encoding latin-1 it is kept."""
    header, body = telco_lines
    body = _edit(body, 10, (b"Mailed check", b"Mail\xe9d check"), (b"Electronic check", b"\xe9"))
    out, clean, quarantined = _parse(header, body)
    assert [(line, reason) for line, reason, _ in out.rejected] == [(12, "invalid_encoding")]
    assert clean.num_rows == 199
    out, clean, quarantined = _parse(header, body, encoding="latin-1")
    assert out.rejected == []
    assert clean.num_rows + quarantined == 200  # decoded: the odd payment method is an unknown category


def test_quoted_newlines_keep_rows_whole_and_later_lines_right(tmp_path):
    """A valid row whose quoted field holds two newlines is kept; the next rows keep their true lines."""
    header = ["id", "note", "churn"]
    job = load_job(ROOT / "jobs" / "train.yaml", [
        "schema={id: id, label: churn, positive: 'Yes', negative: 'No', categorical: {note: null}}"])
    data = b'a1,plain,No\na2,"two\nextra\nlines",Yes\na3,fine,No\na4,x,Maybe\n'
    out = parse_block(data, header, 2, job.table, "n.csv", "utf-8")
    clean = pa.concat_tables(out.clean)
    assert clean.column("id").to_pylist() == ["a1", "a2", "a3"]
    assert clean.column("note").to_pylist()[1] == "two\nextra\nlines"
    [quarantine] = out.quarantine
    assert quarantine.column("_line").to_pylist() == [7]  # a4 sits on physical line 7
    assert out.records == 4 and out.embedded_newlines == 2
