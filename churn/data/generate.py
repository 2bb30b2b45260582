"""Synthetic Telco-shaped churn data at any size, streamed chunk by chunk (flat memory).

The label depends on the features through a logistic model (contract, tenure, charges,
internet service, tech support, payment method, …) plus noise, tuned so that about 26 % of
customers churn, as in the IBM Telco data. With ``dirty > 0`` known faults are injected in
known numbers, and the counts an ingest must find are written to ``expected.json``.
Same arguments → byte-identical files.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

log = logging.getLogger(__name__)

COLUMNS = ["customerID", "gender", "SeniorCitizen", "Partner", "Dependents", "tenure", "PhoneService",
           "MultipleLines", "InternetService", "OnlineSecurity", "OnlineBackup", "DeviceProtection",
           "TechSupport", "StreamingTV", "StreamingMovies", "Contract", "PaperlessBilling", "PaymentMethod",
           "MonthlyCharges", "TotalCharges", "Churn"]
INTERNET_ADDONS = ["OnlineSecurity", "OnlineBackup", "DeviceProtection", "TechSupport", "StreamingTV",
                   "StreamingMovies"]
CONTRACTS = np.array(["Month-to-month", "One year", "Two year"])
PAYMENTS = np.array(["Electronic check", "Mailed check", "Bank transfer (automatic)", "Credit card (automatic)"])
INTERNET = np.array(["DSL", "Fiber optic", "No"])

# fault kind → the quarantine reason code (or "duplicate") an ingest reports for it
FAULTS = {
    "blank_numeric": "blank_value",
    "out_of_domain": "unknown_category",
    "negative_tenure": "out_of_range",
    "missing_id": "missing_id",
    "wrong_field_count": "wrong_field_count",
    "unknown_label": "unknown_label",
    "duplicate_id": "duplicate",
}
CHUNK_ROWS = 50_000
INTERCEPT = -1.42  # tuned so that ~26 % churn


@dataclass(frozen=True)
class GenerateResult:
    files: list[Path]
    rows: int
    expected: dict[str, object]


YES_NO = ["No", "Yes"]


def _levels(levels: list[str] | np.ndarray, idx: np.ndarray) -> pa.Array:
    """Strings by index into ``levels``, built in Arrow (fast at any size)."""
    return pc.take(pa.array(list(levels), pa.string()), pa.array(idx.astype(np.int32)))


def _money(values: np.ndarray, blank: str) -> pa.Array:
    """Amounts as text (shortest form, as in the Telco file); NaN becomes ``blank``."""
    text = pc.cast(pa.array(np.round(values, 2)), pa.string())
    return pc.if_else(pa.array(np.isnan(values)), pa.scalar(blank), text)


def _ids(numbers: np.ndarray) -> pa.Array:
    """Customer ids ``C00000000042``; a negative number stands for a missing id."""
    text = pc.binary_join_element_wise("C", pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), 11, "0"), "")
    return pc.if_else(pa.array(numbers < 0), pa.scalar(""), text)


@dataclass
class _Chunk:
    """One chunk of rows as column arrays, before it is written."""

    cols: dict[str, np.ndarray]
    levels: dict[str, list[str]]

    def set(self, column: str, row: int, value: str | float) -> None:
        if column in self.levels:
            if value not in self.levels[column]:
                self.levels[column].append(str(value))
            self.cols[column][row] = self.levels[column].index(str(value))
        else:
            self.cols[column][row] = value

    def table(self) -> pa.Table:
        arrays = []
        for name in COLUMNS:
            col = self.cols[name]
            if name in self.levels:
                arrays.append(_levels(self.levels[name], col))
            elif name == "customerID":
                arrays.append(_ids(col))
            elif name in ("MonthlyCharges", "TotalCharges"):
                arrays.append(_money(col, blank="" if name == "MonthlyCharges" else " "))
            else:
                arrays.append(pa.array(col))
        return pa.Table.from_arrays(arrays, names=COLUMNS)


def _chunk(rng: np.random.Generator, start: int, n: int) -> _Chunk:
    """``n`` clean rows whose ids are global row numbers from ``start``."""
    senior = rng.random(n) < 0.16
    partner = rng.random(n) < 0.48
    dependents = rng.random(n) < np.where(partner, 0.5, 0.15)
    contract = rng.choice(3, n, p=[0.55, 0.21, 0.24])
    tenure = np.clip(np.round(rng.gamma(1.2 + 1.4 * contract, 9 + 6 * contract)), 0, 72).astype(np.int64)
    phone = rng.random(n) < 0.9
    multiple = phone & (rng.random(n) < 0.45)
    internet = rng.choice(3, n, p=[0.34, 0.44, 0.22])
    has_net = internet != 2
    addons = {c: has_net & (rng.random(n) < p) for c, p in
              zip(INTERNET_ADDONS, [0.35, 0.44, 0.44, 0.36, 0.49, 0.5], strict=True)}
    paperless = rng.random(n) < 0.59
    payment = rng.choice(4, n, p=[0.34, 0.23, 0.22, 0.21])
    monthly = (20 + 5 * phone + 5 * multiple + np.where(internet == 1, 45, np.where(internet == 0, 25, 0))
               + sum(5 * a for a in addons.values()) + rng.normal(0, 3, n))
    monthly = np.round(np.clip(monthly, 18.25, 118.75), 2)
    total = np.round(monthly * tenure * rng.normal(1.0, 0.02, n), 2)

    logit = (INTERCEPT + np.array([1.3, -0.2, -1.4])[contract] - 0.035 * tenure + 0.012 * (monthly - 65)
             + 0.55 * (internet == 1) - 0.5 * (internet == 2) - 0.45 * addons["TechSupport"]
             - 0.35 * addons["OnlineSecurity"] + 0.45 * (payment == 0) + 0.3 * senior + 0.25 * paperless
             - 0.15 * dependents + rng.normal(0, 0.6, n))
    churn = rng.random(n) < 1 / (1 + np.exp(-logit))

    addon_idx = {c: np.where(has_net, a.astype(int), 2) for c, a in addons.items()}
    cols = {
        "customerID": np.arange(start, start + n, dtype=np.int64),
        "gender": (rng.random(n) < 0.5).astype(int),
        "SeniorCitizen": senior.astype(np.int64),
        "Partner": partner.astype(int),
        "Dependents": dependents.astype(int),
        "tenure": tenure,
        "PhoneService": phone.astype(int),
        "MultipleLines": np.where(phone, multiple.astype(int), 2),
        "InternetService": internet,
        **addon_idx,
        "Contract": contract,
        "PaperlessBilling": paperless.astype(int),
        "PaymentMethod": payment,
        "MonthlyCharges": monthly,
        "TotalCharges": np.where(tenure == 0, np.nan, total),  # blank when tenure is 0, as in Telco
        "Churn": churn.astype(int),
    }
    levels = {"gender": ["Male", "Female"], "Partner": list(YES_NO), "Dependents": list(YES_NO),
              "PhoneService": list(YES_NO), "MultipleLines": [*YES_NO, "No phone service"],
              "InternetService": list(INTERNET), "Contract": list(CONTRACTS), "PaperlessBilling": list(YES_NO),
              "PaymentMethod": list(PAYMENTS), "Churn": list(YES_NO),
              **{c: [*YES_NO, "No internet service"] for c in INTERNET_ADDONS}}
    return _Chunk(cols, levels)


def _inject(chunk: _Chunk, rng: np.random.Generator, n_faults: int, counts: dict[str, int]) -> np.ndarray:
    """Put ``n_faults`` faults (one per row, kinds in turn) into the chunk; returns rows to cut short."""
    n = len(chunk.cols["customerID"])
    kinds = list(FAULTS)
    if n_faults == 0 or n < 4:
        return np.zeros(0, int)
    # faults sit in the second half; duplicates copy the id of a clean row of the first half
    rows = np.sort(rng.choice(np.arange(n // 2, n), size=min(n_faults, n - n // 2), replace=False))
    short = []
    offset = sum(counts.values())  # kinds take turns across chunks, so every kind appears
    for k, row in enumerate(rows, start=offset):
        kind = kinds[k % len(kinds)]
        counts[kind] += 1
        if kind == "blank_numeric":
            chunk.set("MonthlyCharges", row, np.nan)
        elif kind == "out_of_domain":
            chunk.set("Contract", row, "Forever")
        elif kind == "negative_tenure":
            chunk.set("tenure", row, -int(rng.integers(1, 24)))
        elif kind == "missing_id":
            chunk.set("customerID", row, -1)
        elif kind == "wrong_field_count":
            short.append(row)
        elif kind == "unknown_label":
            chunk.set("Churn", row, "Maybe")
        elif kind == "duplicate_id":
            source = int(rng.integers(n // 2))  # a true repeat: same id and label (other labels conflict)
            chunk.set("customerID", row, chunk.cols["customerID"][source])
            chunk.cols["Churn"][row] = chunk.cols["Churn"][source]
    return np.asarray(short, int)


def _csv(table: pa.Table, short: np.ndarray) -> bytes:
    """CSV bytes without header; the rows in ``short`` lose their last two fields."""
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    data = sink.getvalue()
    if not len(short):
        return data
    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    starts = np.concatenate([[0], ends[:-1] + 1])
    pieces, pos = [], 0
    for row in short:
        line = data[starts[row]:ends[row]]
        pieces += [data[pos:starts[row]], line.rsplit(b",", 2)[0]]
        pos = ends[row]
    pieces.append(data[pos:])
    return b"".join(pieces)


def generate(out: str | os.PathLike[str], rows: int, files: int = 1, seed: int = 0, dirty: float = 0.0
             ) -> GenerateResult:
    """Write ``rows`` rows over ``files`` CSV files in ``out``; see the module docstring."""
    if rows < 1 or files < 1:
        raise ValueError("rows and files must be at least 1")
    if not 0 <= dirty < 0.5:
        raise ValueError("dirty must be in [0, 0.5)")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(FAULTS, 0)
    per_file = [rows // files + (1 if i < rows % files else 0) for i in range(files)]
    written, start = [], 0
    for fi, n_file in enumerate(per_file):
        path = out_dir / f"churn-{fi:04d}.csv"
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "wb") as fh:
            fh.write((",".join(COLUMNS) + "\n").encode())
            for ci, lo in enumerate(range(0, n_file, CHUNK_ROWS)):
                n = min(CHUNK_ROWS, n_file - lo)
                rng = np.random.default_rng([seed, fi, ci])
                chunk = _chunk(rng, start, n)
                n_faults = int(math.floor(dirty * (start + n) + 0.5)) - int(math.floor(dirty * start + 0.5))
                short = _inject(chunk, rng, n_faults, counts)
                fh.write(_csv(chunk.table(), short))
                start += n
        os.replace(tmp, path)
        written.append(path)
    quarantined = {FAULTS[k]: v for k, v in counts.items() if FAULTS[k] != "duplicate"}
    expected = {
        "rows": rows,
        "seed": seed,
        "dirty": dirty,
        "faults": counts,
        "quarantined_by_reason": quarantined,
        "rows_quarantined": sum(quarantined.values()),
        "duplicates_removed": counts["duplicate_id"],
        "rows_kept": rows - sum(counts.values()),
    }
    (out_dir / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    log.info("generate: %d rows in %d file(s) under %s (%d faults)", rows, files, out_dir, sum(counts.values()))
    return GenerateResult(written, rows, expected)
