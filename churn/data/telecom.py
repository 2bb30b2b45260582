"""A large telecom churn table whose truth is known: ``churn generate --shape telecom-large``.

Modelled on what operators' tables hold: high-cardinality categoricals whose levels follow a
Zipf law and each carry their own effect (``handset_model`` 3,000 levels, ``region`` 400,
``tariff_plan`` 40), the usual numbers (tenure, monthly charge, data usage, dropped and support
calls, ...) and a few low-cardinality columns (contract, internet service, payment method).

The churn probability of each row comes from a known logit (:func:`true_logit`): per-level
effects, interactions (contract × tenure, internet service × monthly charge, tariff allowance ×
data usage, region coverage × dropped calls) and effects that bend (tenure, usage, calls, age).
The label is drawn from it. The per-level effects of thousands of rare levels are learnable only
from many rows, so a model keeps gaining from more rows long past a 200k sample.

Each row's true probability is written *beside* the data, never as a feature: ``truth.parquet``
in the output folder (columns ``customer_id``, ``churn`` 0/1, ``p_true``), one row group per
chunk, in the same order as the CSV rows. Benchmarks join it by id (or hash its ids to the
split, as the train job does) for the Bayes limit: the ROC AUC and Brier of ``p_true``.

The world (levels, their names and effects) is fixed, whatever the seed; the seed draws the rows.
Same arguments → byte-identical files.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

SHAPE = "telecom-large"
ID, LABEL = "customer_id", "churn"
NUMERIC = ["tenure", "monthly_charge", "data_usage_gb", "day_minutes", "intl_minutes", "dropped_calls",
           "support_calls", "device_age_months", "age", "lines"]
DECIMAL = {"monthly_charge": 2, "data_usage_gb": 2, "day_minutes": 1, "intl_minutes": 1}  # written as decimals
LOW = {"contract": ["Month-to-month", "One year", "Two year"],
       "internet_service": ["DSL", "Fiber optic", "No"],
       "payment_method": ["Electronic check", "Mailed check", "Bank transfer", "Credit card"],
       "signup_channel": ["Store", "Online", "Telesales", "Partner", "App"],
       "paperless_billing": ["No", "Yes"]}
HIGH = ["handset_model", "region", "tariff_plan"]
CATEGORICAL = [*LOW, *HIGH]
COLUMNS = [ID, *NUMERIC, *CATEGORICAL, LABEL]
TRUTH_FILE = "truth.parquet"
CHUNK_ROWS = 100_000
WORLD_SEED = 20_260_501  # the levels and their effects: one world for every --seed
N_HANDSETS, N_REGIONS, N_TARIFFS = 3000, 400, 40
BRANDS = ["Apple", "Samsung", "Xiaomi", "Huawei", "Oppo", "Vivo", "Motorola", "Nokia", "Google", "OnePlus",
          "Sony", "ZTE", "Alcatel", "Realme", "Honor", "TCL"]
ALLOWANCES = np.array([1, 2, 5, 10, 20, 50, 1e9])  # GB per month of a tariff (1e9: unlimited)
INTERCEPT = -2.6  # tuned so that ~22 % churn


@dataclass(frozen=True)
class World:
    """The fixed levels of the high-cardinality columns, their Zipf frequencies and effects."""

    names: dict[str, np.ndarray]  # column → level names
    cdf: dict[str, np.ndarray]  # column → cumulative Zipf probabilities of its levels
    effect: dict[str, np.ndarray]  # column → logit effect of each level
    brand: np.ndarray  # handset level → brand index
    coverage: np.ndarray  # region level → dropped-call rate multiplier
    price: np.ndarray  # tariff level → base monthly price
    allowance: np.ndarray  # tariff level → GB per month


def _zipf_cdf(rng: np.random.Generator, k: int, s: float) -> np.ndarray:
    """Zipf(s) probabilities over ``k`` levels, ranks shuffled so a level's frequency and effect are unrelated."""
    p = np.arange(1, k + 1, dtype=float) ** -s
    p = p[rng.permutation(k)]
    return np.cumsum(p / p.sum())


@lru_cache(maxsize=1)
def world() -> World:
    rng = np.random.default_rng(WORLD_SEED)
    brand = rng.integers(len(BRANDS), size=N_HANDSETS)
    brand_effect = rng.normal(0, 0.25, len(BRANDS))
    handsets = np.array([f"{BRANDS[b]} {i:04d}" for i, b in enumerate(brand)])
    regions = np.array([f"R{i:03d}" for i in range(N_REGIONS)])
    tariffs = np.array([f"Plan-{i:02d}" for i in range(N_TARIFFS)])
    return World(
        names={"handset_model": handsets, "region": regions, "tariff_plan": tariffs},
        cdf={"handset_model": _zipf_cdf(rng, N_HANDSETS, 1.05), "region": _zipf_cdf(rng, N_REGIONS, 0.9),
             "tariff_plan": _zipf_cdf(rng, N_TARIFFS, 1.0)},
        effect={"handset_model": brand_effect[brand] + rng.normal(0, 0.7, N_HANDSETS),
                "region": rng.normal(0, 0.5, N_REGIONS), "tariff_plan": rng.normal(0, 0.4, N_TARIFFS)},
        brand=brand,
        coverage=rng.lognormal(0, 0.5, N_REGIONS),
        price=np.round(rng.uniform(10, 60, N_TARIFFS), 0),
        allowance=ALLOWANCES[rng.integers(len(ALLOWANCES), size=N_TARIFFS)],
    )


def _draw(rng: np.random.Generator, column: str, n: int) -> np.ndarray:
    cdf = world().cdf[column]
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)


def features(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``n`` rows of features as arrays: numbers, and level indices for the categoricals."""
    w = world()
    contract = rng.choice(3, n, p=[0.52, 0.24, 0.24])
    internet = rng.choice(3, n, p=[0.33, 0.47, 0.20])
    payment = rng.choice(4, n, p=[0.34, 0.22, 0.22, 0.22])
    handset, region, tariff = (_draw(rng, c, n) for c in HIGH)
    tenure = np.minimum(np.round(rng.gamma(1.1 + 1.3 * contract, 10 + 8 * contract)), 120)
    usage = np.where(internet == 2, rng.lognormal(-1.5, 0.8, n), rng.lognormal(1.2 + 0.4 * (internet == 1), 1.0, n))
    monthly = w.price[tariff] + np.array([20.0, 40.0, 0.0])[internet] + rng.normal(0, 6, n)
    dropped = rng.poisson(1.2 * w.coverage[region])
    support = rng.poisson(0.6 + 0.5 * (internet == 1))
    age = np.clip(np.round(rng.normal(45, 15, n)), 18, 90)
    lines = 1 + rng.binomial(4, 0.2, n)
    day = rng.gamma(4, 45, n) * (0.6 + 0.4 * lines / 2)
    intl = np.where(rng.random(n) < 0.25, rng.exponential(30, n), 0.0)
    device_age = np.minimum(np.round(rng.exponential(16, n)), 96)
    channel = rng.choice(5, n, p=[0.35, 0.3, 0.1, 0.1, 0.15])
    paperless = rng.random(n) < 0.6
    return {"tenure": tenure, "monthly_charge": np.round(np.clip(monthly, 5, None), 2),
            "data_usage_gb": np.round(usage, 2), "dropped_calls": dropped.astype(float),
            "support_calls": support.astype(float), "age": age, "lines": lines.astype(float),
            "day_minutes": np.round(day, 1), "intl_minutes": np.round(intl, 1), "device_age_months": device_age,
            "contract": contract, "internet_service": internet, "payment_method": payment,
            "signup_channel": channel, "paperless_billing": paperless.astype(np.int64),
            "handset_model": handset, "region": region, "tariff_plan": tariff}


def true_logit(f: dict[str, np.ndarray]) -> np.ndarray:
    """The churn logit of each row: its true probability is ``1 / (1 + exp(-logit))``."""
    w = world()
    contract, internet, tariff = f["contract"], f["internet_service"], f["tariff_plan"]
    tenure, usage, monthly = f["tenure"], f["data_usage_gb"], f["monthly_charge"]
    overage = np.maximum(0.0, usage - w.allowance[tariff])
    return (INTERCEPT
            + np.array([0.9, -0.3, -1.1])[contract]
            - 1.0 * (1 - np.exp(-tenure / 12))  # early-life churn that fades (bends)
            - 0.9 * (contract == 0) * (1 - np.exp(-tenure / 30))  # contract × tenure
            + np.array([0.0, 0.35, -0.45])[internet]
            + np.where(internet == 1, 0.03, np.where(internet == 0, 0.012, 0.0)) * (monthly - 60)  # internet × price
            + 0.7 * np.log1p(overage)  # tariff allowance × usage
            + 0.6 * np.exp(-usage / 0.7) * (internet != 2)  # an idle line with internet is about to leave
            + 0.9 * (1 - np.exp(-f["dropped_calls"] / 3))  # dropped calls, saturating
            + 0.15 * f["support_calls"] + 0.8 * (f["support_calls"] >= 4)  # a threshold
            + 0.35 * (f["payment_method"] == 0)
            + 0.25 * ((f["age"] - 45) / 15) ** 2 - 0.1 * (f["lines"] - 1)
            + 0.5 / (1 + np.exp(-(f["device_age_months"] - 24) / 3))  # due for a new handset after 2 years
            + 0.004 * f["intl_minutes"] + 0.15 * f["paperless_billing"]
            + w.effect["handset_model"][f["handset_model"]] + w.effect["region"][f["region"]]
            + w.effect["tariff_plan"][tariff])


def chunk(seed: int, index: int, start: int, n: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Chunk ``index`` of a table drawn with ``seed``: (features, true probability, label), ids from ``start``."""
    rng = np.random.default_rng([seed, 7, index])
    f = features(rng, n)
    p = 1 / (1 + np.exp(-true_logit(f)))
    return f, p, rng.random(n) < p


def ids(start: int, n: int) -> pa.Array:
    """Customer ids ``T00000000042`` for rows ``start`` .. ``start + n - 1``."""
    numbers = pa.array(np.arange(start, start + n, dtype=np.int64))
    return pc.binary_join_element_wise("T", pc.utf8_lpad(pc.cast(numbers, pa.string()), 11, "0"), "")


def frame(f: dict[str, np.ndarray]) -> pd.DataFrame:
    """Features as a DataFrame: numbers as float, categoricals as pandas categories of every level."""
    w = world()
    levels = {**{c: np.array(v) for c, v in LOW.items()}, **w.names}
    return pd.DataFrame({**{c: f[c].astype(float) for c in NUMERIC},
                         **{c: pd.Categorical.from_codes(f[c], categories=levels[c]) for c in CATEGORICAL}})


def _table(f: dict[str, np.ndarray], label: np.ndarray, start: int) -> pa.Table:
    w = world()
    levels = {**LOW, **{c: list(v) for c, v in w.names.items()}}
    cols = [ids(start, len(label))]
    for c in NUMERIC:
        v = f[c]
        cols.append(pa.array(v.astype(np.int64)) if c not in DECIMAL else
                    pc.cast(pa.array(v), pa.string()))
    cols += [pc.take(pa.array(levels[c], pa.string()), pa.array(f[c].astype(np.int32))) for c in CATEGORICAL]
    cols.append(pc.take(pa.array(["No", "Yes"]), pa.array(label.astype(np.int32))))
    return pa.Table.from_arrays(cols, names=COLUMNS)


@dataclass(frozen=True)
class TelecomResult:
    files: list[Path]
    rows: int
    truth: Path
    churn_rate: float
    mean_p: float


def generate_telecom(out: str | os.PathLike[str], rows: int, files: int = 1, seed: int = 0) -> TelecomResult:
    """Write ``rows`` rows over ``files`` CSV files in ``out``, and their truth; see the module docstring."""
    if rows < 1 or files < 1:
        raise ValueError("rows and files must be at least 1")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth_path = out_dir / TRUTH_FILE
    truth_tmp = truth_path.with_suffix(".parquet.tmp")
    truth_schema = pa.schema([(ID, pa.string()), (LABEL, pa.int8()), ("p_true", pa.float64())])
    per_file = [rows // files + (1 if i < rows % files else 0) for i in range(files)]
    written, start, index, churned, p_sum = [], 0, 0, 0, 0.0
    with pq.ParquetWriter(truth_tmp, truth_schema, compression="zstd") as truth:
        for fi, n_file in enumerate(per_file):
            path = out_dir / f"telecom-{fi:04d}.csv"
            tmp = path.with_suffix(".csv.tmp")
            with open(tmp, "wb") as fh:
                fh.write((",".join(COLUMNS) + "\n").encode())
                for lo in range(0, n_file, CHUNK_ROWS):
                    n = min(CHUNK_ROWS, n_file - lo)
                    f, p, label = chunk(seed, index, start, n)
                    table = _table(f, label, start)
                    sink = io.BytesIO()
                    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
                    fh.write(sink.getvalue())
                    truth.write_table(pa.table([table.column(ID), pa.array(label.astype(np.int8)), pa.array(p)],
                                               schema=truth_schema))
                    churned += int(label.sum())
                    p_sum += float(p.sum())
                    start += n
                    index += 1
            os.replace(tmp, path)
            written.append(path)
    os.replace(truth_tmp, truth_path)
    summary = {"shape": SHAPE, "rows": rows, "seed": seed, "files": files, "truth": TRUTH_FILE,
               "churn_rate": churned / rows, "mean_p_true": p_sum / rows}
    (out_dir / "expected.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("generate: %d %s rows in %d file(s) under %s (churn %.3f)", rows, SHAPE, files, out_dir, churned / rows)
    return TelecomResult(written, rows, truth_path, churned / rows, p_sum / rows)
