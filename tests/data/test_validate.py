"""Per-partition validation: typed clean rows, quarantined rows with reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from churn.config import load_job
from churn.data.columns import KEY_COLUMN, LABEL_COLUMN
from churn.data.validate import validate_partition, validate_table
from tests.conftest import ROOT, TELCO


def _raw(n: int = 200) -> pd.DataFrame:
    return pd.read_csv(TELCO, dtype=str, keep_default_na=False).head(n)


def test_blank_total_charges_become_missing_not_dropped():
    """Telco's 11 blank TotalCharges stay as rows, with NaN, typed float64."""
    job = load_job(ROOT / "jobs" / "train.yaml")
    raw = pd.read_csv(TELCO, dtype=str, keep_default_na=False)
    clean, quarantine = validate_partition(raw, job.table, "telco.csv", np.arange(2, len(raw) + 2))
    assert len(clean) == len(raw) == 7043
    assert len(quarantine) == 0
    assert clean["TotalCharges"].dtype == np.float64
    blank_ids = set(raw.loc[raw["TotalCharges"].str.strip() == "", "customerID"])
    assert len(blank_ids) == 11
    assert set(clean.loc[clean["TotalCharges"].isna(), "customerID"]) == blank_ids
    assert (clean.loc[clean["TotalCharges"].isna(), "tenure"] == 0).all()


def test_label_maps_to_one_and_zero():
    """Churn 'Yes' is 1 and 'No' is 0, row for row."""
    job = load_job(ROOT / "jobs" / "train.yaml")
    raw = _raw()
    clean, _ = validate_partition(raw, job.table, "t.csv", np.arange(len(raw)))
    assert clean[LABEL_COLUMN].tolist() == (raw["Churn"] == "Yes").astype(int).tolist()


def test_bad_values_are_quarantined_with_reasons_and_lines():
    """Each fault lands in quarantine with its reason, the source and the line number."""
    job = load_job(ROOT / "jobs" / "train.yaml")
    raw = _raw(6)
    raw.loc[0, "tenure"] = "-3"
    raw.loc[1, "Contract"] = "Forever"
    raw.loc[2, "Churn"] = "Maybe"
    raw.loc[3, "customerID"] = " "
    raw.loc[4, "MonthlyCharges"] = "abc"
    clean, quarantine = validate_partition(raw, job.table, "t.csv", np.array([10, 11, 12, 13, 14, 15]))
    assert len(clean) == 1
    assert quarantine["_line"].tolist() == [10, 11, 12, 13, 14]
    assert quarantine["_reasons"].tolist() == [
        "out_of_range:tenure", "unknown_category:Contract", "unknown_label", "missing_id",
        "not_a_number:MonthlyCharges"]
    assert (quarantine["_source"] == "t.csv").all()
    assert quarantine.loc[1, "Contract"] == "Forever"  # original fields kept as text


def test_row_key_is_a_stable_hash_of_the_id():
    """The same id gives the same key in any partition."""
    job = load_job(ROOT / "jobs" / "train.yaml")
    raw = _raw(50)
    a, _ = validate_partition(raw, job.table, "a.csv", np.arange(50))
    b, _ = validate_partition(raw.iloc[::-1].reset_index(drop=True), job.table, "b.csv", np.arange(50))
    ka = dict(zip(a["customerID"], a[KEY_COLUMN], strict=True))
    kb = dict(zip(b["customerID"], b[KEY_COLUMN], strict=True))
    assert ka == kb
    assert len(set(ka.values())) == 50


def test_columns_that_hold_no_null_are_required():
    """Clean rows' columns are required (no Parquet definition levels) except nullable categoricals;
    the label too unless scoring allows it missing; a blank nullable number is NaN, not null."""
    job = load_job(ROOT / "jobs" / "train.yaml")
    schema = job.table.model_copy(update={"categorical": {**job.table.categorical, "gender": job.table.categorical[
        "gender"].model_copy(update={"nullable": True})}})
    raw = _raw()
    raw.loc[3, "gender"] = ""
    raw.loc[4, "TotalCharges"] = " "
    table = pa.Table.from_pandas(raw[schema.columns], preserve_index=False)
    for require_label in (True, False):
        clean, _ = validate_table(table, schema, "t.csv", np.arange(len(raw)), require_label=require_label)
        optional = {f.name for f in clean.schema if f.nullable}
        assert optional == ({"gender"} if require_label else {"gender", LABEL_COLUMN})
        assert clean.column("gender").null_count == 1 and np.isnan(clean.column("TotalCharges")[4].as_py())
