"""One block's bytes → rows: stray quotes, bad bytes and quoted newlines cost only their own rows."""

from __future__ import annotations

import dask.config
import numpy as np
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
    lines = np.concatenate(out.clean_lines)  # each clean row's physical line, in the rows' order
    assert clean.column("customerID").to_pylist() == [body[line - 2].split(b",")[0].decode() for line in lines]


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


def _set(body, index, column, value):
    """A copy of ``body`` with field ``column`` (by position) of line ``index`` set to ``value``."""
    body = list(body)
    fields = body[index].split(b",")
    fields[column] = value
    body[index] = b",".join(fields)
    return body


@pytest.mark.parametrize("text_parse", [False, True], ids=["typed-parse", "text-parse"])
def test_non_finite_numbers_are_quarantined_whatever_else_the_block_holds(telco_lines, text_parse):
    """inf, NaN, 1e309, -Infinity, nan in TotalCharges (nullable, only a min) are quarantined as
    not_finite when pyarrow parses the block as numbers, and the same when a cell that is no number
    (and inf/NaN/1e309 in the integer tenure) sends the block down the per-cell text path."""
    header, body = telco_lines
    for i, cell in enumerate([b"inf", b"NaN", b"1e309", b"-Infinity", b"nan"]):  # lines 2..6
        body = _set(body, i, header.index("TotalCharges"), cell)
    expected = {2 + i: "not_finite:TotalCharges" for i in range(5)}
    if text_parse:
        for i, cell in zip((10, 11, 12), (b"inf", b"NaN", b"1e309"), strict=True):  # lines 12..14
            body = _set(body, i, header.index("tenure"), cell)
        body = _set(body, 20, header.index("MonthlyCharges"), b"12abc")  # line 22
        expected |= {12 + i: "not_finite:tenure" for i in range(3)} | {22: "not_a_number:MonthlyCharges"}
    out, clean, _ = _parse(header, body)
    quarantine = pa.concat_tables(out.quarantine)
    reasons = dict(zip(quarantine.column("_line").to_pylist(), quarantine.column("_reasons").to_pylist(),
                       strict=True))
    assert reasons == expected
    assert clean.num_rows == 200 - len(expected)
    totals = clean.column("TotalCharges").to_numpy(zero_copy_only=False)
    assert not np.isinf(totals).any() and np.isnan(totals).sum() == 0  # these 200 rows hold no blank


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_a_lone_carriage_return_costs_only_its_line(telco_lines, line_end):
    """A CR inside an unquoted field of line 31 (pyarrow ends a record there): that line is
    quarantined as stray_carriage_return, the 199 others are kept on their true lines."""
    header, body = telco_lines
    body = _edit(body, 29, (b"Electronic check", b"Electronic\rcheck"), (b"Mailed check", b"Mailed\rcheck"),
                 (b"Bank transfer", b"Bank\rtransfer"), (b"Credit card", b"Credit\rcard"))
    data = line_end.join(body) + line_end
    out = parse_block(data, header, 2, JOB.table, "t.csv", "utf-8")
    assert [(line, reason) for line, reason, _ in out.rejected] == [(31, "stray_carriage_return")]
    assert out.rejected[0][2] == body[29].decode()  # the raw line, its CRs included
    clean = pa.concat_tables(out.clean)
    assert clean.num_rows == 199 and sum(q.num_rows for q in out.quarantine) == 0
    assert out.records == 200 and out.embedded_newlines == 0
    ids = [line.split(b",")[0].decode() for line in body]
    assert sorted(clean.column("customerID").to_pylist()) == sorted(ids[:29] + ids[30:])
    assert clean.column("customerID").to_pylist() == [ids[line - 2] for line in np.concatenate(out.clean_lines)]


def test_an_id_longer_than_the_limit_costs_only_its_row(telco_lines):
    """A 100 KB id on line 8 is quarantined as id_too_long (churn.ingest.max-id-bytes, 1024 by
    default); lowering the setting to 9 bytes quarantines every 10-byte Telco id."""
    header, body = telco_lines
    body = _set(body, 6, 0, b"X" * 100_000)
    out, clean, _ = _parse(header, body)
    quarantine = pa.concat_tables(out.quarantine)
    assert list(zip(quarantine.column("_line").to_pylist(), quarantine.column("_reasons").to_pylist(),
                    strict=True)) == [(8, "id_too_long")]
    assert len(quarantine.column("customerID")[0].as_py()) == 100_000  # the field is kept as it was
    assert clean.num_rows == 199 and max(map(len, clean.column("customerID").to_pylist())) == 10
    with dask.config.set({"churn.ingest.max-id-bytes": 9}):
        _, clean, quarantined = _parse(header, body)
    assert clean.num_rows == 0 and quarantined == 200


@pytest.mark.parametrize("closed", [True, False], ids=["closed", "never-closed"])
def test_a_broken_quoted_field_costs_its_own_row_not_one_per_line_it_spans(telco_lines, closed):
    """Line 51's gender opens a quote holding 100,000 newlines: one unbalanced_quote row whose
    record keeps those lines, the 199 other rows kept (it was 100,000 quarantined blank rows)."""
    header, body = telco_lines
    gender = body[49].split(b",")[1]
    body = _set(body, 49, 1, b'"' + gender[:2] + b"\n" * 100_000 + gender[2:] + (b'"' if closed else b""))
    out, clean, quarantined = _parse(header, body)
    assert [(line, reason) for line, reason, _ in out.rejected] == [(51, "unbalanced_quote")]
    assert clean.num_rows == 199 and quarantined == 0
    assert out.records == 200 and out.embedded_newlines == 100_000
    ids = [line.split(b",")[0].decode() for line in body]
    assert sorted(clean.column("customerID").to_pylist()) == sorted(ids[:49] + ids[50:])
