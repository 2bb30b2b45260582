"""The model card of a registered version: its bootstrap, its segment summaries, and the card of a
real train run read back from its MLflow store."""

from __future__ import annotations

import json
import re

import dask.dataframe as dd
import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from churn.config import EconomicsSpec
from churn.data.columns import LABEL_COLUMN
from churn.modeling.summary import MISSING_LEVEL, ScoreSummary, SegmentSummaries, segment_summaries_on_cluster
from churn.tracking.model_card import SECTIONS, poisson_bootstrap


def _scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.27
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * y - 1.2)))
    return y.astype(int), p


@pytest.mark.parametrize("rows", [600, 2000])  # every occupied bin drawn alone; runs of bins drawn together
def test_the_cell_bootstrap_agrees_with_the_row_level_bootstrap(rows):
    """Intervals drawn from a summary's cells have the width of the row-level Poisson bootstrap (each
    row weighted by its own Poisson(1) draw, computed on the rows), contain the estimate, and are the
    same for the same seed."""
    y, p = _scores(rows, 1)
    summary = ScoreSummary.of(y, p, (0.3,))
    got = poisson_bootstrap(summary, 0.3, EconomicsSpec(), replicates=1000, seed=5)
    assert got == poisson_bootstrap(summary, 0.3, EconomicsSpec(), replicates=1000, seed=5)
    # the row-level Poisson bootstrap: every row its own Poisson(1) weight, 500 replicates at once
    W = np.random.default_rng(0).poisson(1.0, (500, len(y))).astype(np.float64)
    order = np.argsort(-p)  # no ties: continuous scores
    wp, wn = W[:, order] * y[order], W[:, order] * (1 - y[order])
    auc = np.sum(wn * np.cumsum(wp, axis=1), axis=1) / (wp.sum(axis=1) * wn.sum(axis=1))
    assert auc[0] == pytest.approx(roc_auc_score(y, p, sample_weight=W[0]), abs=1e-12)
    hit = p >= 0.3
    rows = {"roc_auc": auc, "brier": W @ (y - p) ** 2 / W.sum(axis=1),
            "precision": W @ (hit & (y == 1)) / (W @ hit)}
    estimate = {"roc_auc": summary.roc_auc()[0], "brier": summary.brier(),
                "precision": summary.confusion(0.3)[3] / (summary.confusion(0.3)[3] + summary.confusion(0.3)[1])}
    for name, values in rows.items():
        low, high = got[name]
        assert low < estimate[name] < high, name
        ref_low, ref_high = np.percentile(values, [2.5, 97.5])
        assert abs((high - low) / (ref_high - ref_low) - 1) < 0.2, (name, (low, high), (ref_low, ref_high))


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plan = rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])
    region = rng.choice(["north", "south", None], n, p=[0.5, 0.45, 0.05])
    x = rng.normal(size=n) + (plan == "a")
    y = (rng.random(n) < 1 / (1 + np.exp(-x))).astype(int)
    return pd.DataFrame({"plan": plan, "region": region, "x": x, LABEL_COLUMN: y})


def test_segment_summaries_per_level_on_the_cluster(client):
    """Per-partition segment summaries merged on the workers hold, per level, the rows, the exact
    decisions at the threshold and the ROC AUC of that level's rows (within the histogram's error
    bound of scikit-learn's); a blank is its own level; a column with too many levels is named."""
    frame = _frame(4000, 3)
    model = LogisticRegression().fit(frame[["x"]], frame[LABEL_COLUMN])
    ddf = dd.from_pandas(frame, npartitions=5)
    merged = segment_summaries_on_cluster(ddf, model, ["x"], ["plan", "region"], client, (0.5,))
    p = model.predict_proba(frame[["x"]])[:, 1]
    region = frame["region"].fillna(MISSING_LEVEL)
    for col, values in (("plan", frame["plan"]), ("region", region)):
        assert set(merged.levels[col]) == set(values)
        for level, s in merged.levels[col].items():
            rows = (values == level).to_numpy()
            y, q = frame.loc[rows, LABEL_COLUMN].to_numpy(), p[rows]
            assert (s.rows, s.positives) == (rows.sum(), y.sum())
            tn, fp, fn, tp = s.confusion(0.5)
            assert (tp, fp) == (int(((q >= 0.5) & (y == 1)).sum()), int(((q >= 0.5) & (y == 0)).sum()))
            auc, bound = s.roc_auc()
            assert abs(auc - roc_auc_score(y, q)) <= bound + 1e-12
            assert s.brier() == pytest.approx(np.mean((y - q) ** 2), rel=1e-12)
    whole = SegmentSummaries.of(frame, frame[LABEL_COLUMN], p, ["plan"], (0.5,))
    np.testing.assert_array_equal(whole.levels["plan"]["a"].pos, merged.levels["plan"]["a"].pos)
    capped = SegmentSummaries.of(frame, frame[LABEL_COLUMN], p, ["plan", "region"], (0.5,), max_levels=2)
    assert (capped.levels, capped.too_many) == ({}, ("plan", "region"))
    ab, bc = (frame[frame["plan"].isin(keep)] for keep in (["a", "b"], ["b", "c"]))
    left, right = (SegmentSummaries.of(f, f[LABEL_COLUMN], model.predict_proba(f[["x"]])[:, 1], ["plan"], (0.5,),
                                       max_levels=2) for f in (ab, bc))
    assert set(left.levels["plan"]) == {"a", "b"} and set(right.levels["plan"]) == {"b", "c"}
    both = left.merge(right)  # three levels: one more than max_levels
    assert (both.levels, both.too_many) == ({}, ("plan",))


def _section(text: str, title: str) -> str:
    """One section of the Markdown card: from its heading to the next."""
    match = re.search(rf"^## \d+\. {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def test_the_card_of_a_registered_version_matches_its_run(finished_train):
    """The registered version of a real train run carries a model card (HTML and Markdown) linked
    from its description; every section is there, and its figures are the run's metrics as
    MlflowClient reads them back from the store."""
    job, result = finished_train
    client = mlflow.MlflowClient(job.tracking.uri)
    run = client.get_run(result.run_id)
    metrics, tags = run.data.metrics, run.data.tags
    version = client.get_model_version(job.tracking.registered_model, result.model_version)
    assert version.tags["model_card"] == f"runs:/{result.run_id}/model_card/card.html"
    assert f"runs/{result.run_id}/artifactPath/model_card/card.html" in version.description
    files = {a.path for a in client.list_artifacts(result.run_id, "model_card")}
    assert files == {f"model_card/{n}" for n in ("card.html", "card.md", "card.json", "calibration.png")}
    folder = client.download_artifacts(result.run_id, "model_card")
    html = open(f"{folder}/card.html", encoding="utf-8").read()
    md = open(f"{folder}/card.md", encoding="utf-8").read()
    figures = json.loads(open(f"{folder}/card.json", encoding="utf-8").read())
    for key, title in SECTIONS:
        assert f"<section id='{key}'>" in html and title in html
        assert _section(md, title).strip()
    assert "data:image/png;base64," in html and "](calibration.png)" in md

    # the test metrics and their intervals: the run's, read back
    for name in ("roc_auc", "pr_auc", "brier", "log_loss"):
        assert figures["test"][name] == metrics[f"test_{name}"]
        low, high = figures["intervals"][name]
        assert (low, high) == (metrics[f"test_{name}_ci_low"], metrics[f"test_{name}_ci_high"])
        assert low < metrics[f"test_{name}"] < high
    test_md = _section(md, "Test metrics with bootstrap intervals")
    for name, label in (("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC (average precision)"), ("brier", "Brier score"),
                        ("log_loss", "log loss")):
        low, high = figures["intervals"][name]
        assert f"| {label} | {metrics[f'test_{name}']:.4f} | [{low:.4f}, {high:.4f}] |" in test_md
    assert f"{int(metrics['test_rows']):,} rows" in test_md
    assert f"contact rate at the threshold | {metrics['test_contacted_fraction']:.4f}" in test_md

    # the champion and why: the CV scores the run logged
    champ_md = _section(md, "The champion and why it won")
    assert f"{metrics['cv_roc_auc']:.4f} ± {metrics['cv_roc_auc_std']:.4f}" in champ_md
    assert tags["champion"] in champ_md
    for fam in result.families:
        assert f"| {fam} | {metrics[f'cv_roc_auc_{fam}_repeats']:.4f} |" in champ_md

    # data and limits: the rows per split, the sample, the quarantined share (the fixture adds two bad rows)
    data_md = _section(md, "Data: the table and the rows it was fitted on")
    assert f"| test split | {int(metrics['test_rows']):,} |" in data_md
    assert f"| {int(metrics['search_rows']):,} of {int(metrics['train_rows']):,} |" in data_md
    assert tags["dataset"] in data_md
    limits = _section(md, "Limits")
    assert metrics["rows_quarantined"] == 2
    assert f"2 of {int(metrics['rows_read']):,} rows read ({200 / metrics['rows_read']:.2f} %)" in limits

    # calibration and threshold
    cal_md = _section(md, "Calibration")
    assert f"`{tags['calibration']}`" in cal_md and f"Test Brier score {metrics['test_brier']:.4f}" in cal_md
    thr_md = _section(md, "Threshold and campaign economics")
    assert f"**{metrics['decision_threshold']:.4f}**" in thr_md and "built-in defaults" in thr_md
    assert f"profit {metrics['test_profit']:,.0f}" in thr_md

    # segments: each categorical column's levels add up to the test split, and their contacts to the run's
    segments = pd.DataFrame(figures["segments"])
    for col in job.table.categorical:
        of = segments[segments["column"] == col]
        assert of["rows"].sum() == metrics["test_rows"]
        assert of["contacted"].sum() == round(metrics["test_contacted_fraction"] * metrics["test_rows"])
    shown = segments[segments["roc_auc"].notna()]
    assert len(shown) and (shown["rows"] >= 100).all()
    seg_md = _section(md, "Performance by segment")
    first = shown.iloc[0]
    assert f"| {first['column']} | {first['level']} | {first['rows']:,} |" in seg_md

    # how to score and serve it: the version's own URI
    usage = _section(md, "How to score and serve it")
    uri = f"models:/{job.tracking.registered_model}/{result.model_version}"
    assert f"churn serve -m {uri} --tracking-uri {job.tracking.uri}" in usage
    assert f"--set model_uri={uri}" in usage and "/invocations" in usage
