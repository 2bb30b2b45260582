"""The monitoring report: one self-contained HTML file (pictures inlined as PNG), readable offline.

Sections: status and alerts, quarantined rows, the performance estimated without labels (beside
the realised figures when the batch has labels, with the calibration check by score decile, and
over time across the monitor's logged runs), prediction drift, performance, feature drift.
"""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import PurePath

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from churn.monitoring.drift import DriftResult, FeatureDrift  # noqa: E402
from churn.monitoring.estimate import METRICS, CalibrationCheck, EstimateRecord, PerformanceEstimate  # noqa: E402

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px} .ok{color:#1a7f37;font-weight:600} .bad{color:#c62828;font-weight:600}
table{border-collapse:collapse;font-size:13px;margin-top:8px} th,td{padding:4px 10px;border-bottom:1px solid #eee;
text-align:right} th{background:#f6f8fa} td:first-child,th:first-child{text-align:left}
tr.flag td{background:#fdecea} .grid{display:flex;flex-wrap:wrap;gap:8px} .grid img{width:360px}
ul.alerts li{color:#c62828} tr.untrusted td{color:#999;text-decoration:line-through}
tr.untrusted td:first-child{text-decoration:none} p.trust{padding:6px 10px;border-radius:4px}
p.trust.bad{background:#fdecea} p.trust.ok{background:#e8f5e9;font-weight:400} p.trust.meh{background:#f6f8fa}
"""


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _bars(f: FeatureDrift, title: str | None = None) -> Figure:
    fig, ax = plt.subplots(figsize=(4.6, 2.8), dpi=90)
    x = np.arange(len(f.labels))
    ax.bar(x - 0.2, f.reference, 0.4, label="reference (training)", color="tab:grey")
    ax.bar(x + 0.2, f.batch, 0.4, label="batch", color="tab:red" if f.flagged else "tab:blue")
    ax.set_xticks(x, f.labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("share of rows")
    ax.set_title(title or f"{f.feature}: PSI {f.psi:.3f}", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def _calibration(result: DriftResult) -> Figure:
    fig, ax = plt.subplots(figsize=(4.6, 3.4), dpi=90)
    cal = result.calibration
    used = np.asarray(cal["rows"]) > 0
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.plot(np.asarray(cal["mean_score"])[used], np.asarray(cal["churn_rate"])[used], "o-", label="batch")
    ax.set_xlabel("mean predicted churn probability")
    ax.set_ylabel("observed churn rate")
    ax.set_title("Calibration on the batch", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _quarantine(result: DriftResult, limit: float | None) -> str:
    """The batch rows the model's rules quarantined, by reason and column (flagged at ``limit``)."""
    if not result.quarantined:
        return f"<h2>Quarantined rows</h2><p>none of the {result.rows_read:,} rows read</p>"
    read = max(result.rows_read, 1)
    rows = []
    for key, n in sorted(result.quarantined.items(), key=lambda kv: -kv[1]):
        reason, _, column = key.partition(":")
        flag = "flag" if limit is not None and n / read >= limit else ""
        rows.append(f"<tr class='{flag}'><td>{html.escape(reason)}</td><td>{html.escape(column or '-')}</td>"
                    f"<td>{n:,}</td><td>{n / read:.2%}</td></tr>")
    shown = "off" if limit is None else f"{limit:.1%}"
    return (f"<h2>Quarantined rows (the model's rules; flagged at {shown} of the {result.rows_read:,} rows "
            "read)</h2><table><tr><th>reason</th><th>column</th><th>rows</th><th>share</th></tr>"
            + "".join(rows) + "</table>")


_NAMES = {"roc_auc": "ROC AUC", "precision": "precision at the threshold", "recall": "recall at the threshold",
          "churners_contacted": "churners among those contacted"}


def _fmt(metric: str, x: float) -> str:
    if not np.isfinite(x):
        return "-"
    return f"{x:,.1f}" if metric == "churners_contacted" else f"{x:.4f}"


def _trust_line(est: PerformanceEstimate) -> str:
    esc = html.escape
    cal = est.calibration
    if est.trust == "not trusted":
        reason = est.reason()
        reason = reason[:1].upper() + reason[1:]
        return f"<p class='trust bad'><b>Not to be trusted for this batch.</b> {esc(reason)}.</p>"
    if est.trust == "checked" and cal is not None:
        return (f"<p class='trust ok'>The {est.labelled_rows:,} labelled rows agree with the calibrated "
                f"probabilities: no score decile off by {cal.gap:.0%} or more beyond noise "
                f"(&chi;&sup2; {cal.chi2:.1f} on {len(cal.deciles)} deciles, p = {cal.p_value:.3g}).</p>")
    if est.labelled_rows:
        return (f"<p class='trust meh'>{est.labelled_rows:,} rows are labelled, but the calibration check is off "
                "(thresholds.calibration_gap: null): the estimate assumes the probabilities are still calibrated on "
                "this batch.</p>")
    return ("<p class='trust meh'>No labels to check it against yet: the estimate assumes the probabilities "
            "are still calibrated on this batch (P(churn | score) unchanged). A shift in who the customers "
            "are keeps that; a change in why they churn does not, and only labels show it.</p>")


def _estimate_table(est: PerformanceEstimate, reference_auc: float | None) -> str:
    bad = "untrusted" if est.trust == "not trusted" else ""
    labelled, partial = bool(est.labelled_rows), 0 < est.labelled_rows < est.rows
    head = ["metric", f"estimated, {est.rows:,} rows", "95 % interval"]
    if partial:
        head += [f"estimated, {est.labelled_rows:,} labelled rows", "95 % interval"]
    if labelled:
        head += ["realised" + (" (labelled rows)" if partial else ""), "realised - estimated", "within label noise"]
    head.append("training (out-of-fold)")
    rows = []
    for k in METRICS:
        e = est.estimate[k]
        cells = [_NAMES[k], _fmt(k, e.value), f"{_fmt(k, e.low)} – {_fmt(k, e.high)}"]
        if partial:
            le = est.labelled_estimate[k]
            cells += [_fmt(k, le.value), f"{_fmt(k, le.low)} – {_fmt(k, le.high)}"]
        if labelled:
            le, got = est.labelled_estimate[k], est.realised[k]
            diff = f"{got - le.value:+,.1f}" if k == "churners_contacted" else f"{got - le.value:+.4f}"
            cells += [_fmt(k, got), diff, "yes" if le.holds(got) else "<b>no</b>"]
        cells.append(_fmt(k, reference_auc) if k == "roc_auc" and reference_auc is not None else "")
        rows.append(f"<tr class='{bad}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
            f"<p class='meta'>Threshold {est.threshold:.4f} (the model's): {est.contacted:,} of {est.rows:,} "
            "rows contacted. Estimates: each row counts as p of a churner and 1 - p of a stayer (confidence-based "
            "performance estimation, from the calibrated probabilities). Interval: where the realised figure "
            "should land if the probabilities are calibrated on this batch, 2.5-97.5 % of 1,000 simulated label "
            "sets (Poisson-binomial label noise); it leaves out the error of the calibration map itself, so a "
            "realised figure just outside it is a small calibration error, not yet drift (the decile check below "
            "says when it is).</p>")


def _deciles_plot(cal: CalibrationCheck) -> Figure:
    fig, ax = plt.subplots(figsize=(4.6, 3.4), dpi=90)
    x = np.arange(1, len(cal.deciles) + 1)
    exp = np.array([d.expected / d.rows for d in cal.deciles])
    real = np.array([d.realised / d.rows for d in cal.deciles])
    half = np.array([1.96 * d.sd / d.rows for d in cal.deciles])
    ax.errorbar(x, exp, yerr=half, fmt="o", color="tab:blue", capsize=3, label="expected (calibrated p, 95 %)")
    off = np.isin(x, cal.drifted)
    ax.plot(x[~off], real[~off], "D", color="tab:orange", label="realised")
    if off.any():
        ax.plot(x[off], real[off], "D", color="tab:red", label="realised: drifted")
    ax.set_xticks(x)
    ax.set_xlabel("score decile of the labelled rows (1 = lowest)")
    ax.set_ylabel("churn rate")
    ax.set_title("Calibration by score decile", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def _deciles(est: PerformanceEstimate) -> str:
    cal = est.calibration
    if cal is None:
        return ""
    rows = "".join(
        f"<tr class='{'flag' if i in cal.drifted else ''}'><td>{i}</td><td>{d.low:.3f} – {d.high:.3f}</td>"
        f"<td>{d.rows:,}</td><td>{d.expected:,.1f}</td><td>{d.realised:,.0f}</td><td>{d.expected / d.rows:.1%}</td>"
        f"<td>{d.realised / d.rows:.1%}</td><td>{d.gap:+.1%}</td><td>{d.z:+.1f}</td></tr>"
        for i, d in enumerate(cal.deciles, 1))
    return ("<h3>Calibration on the labelled rows, by score decile</h3><table><tr><th>decile</th><th>scores</th>"
            "<th>rows</th><th>expected churners</th><th>realised</th><th>expected rate</th><th>realised rate</th>"
            f"<th>gap</th><th>z</th></tr>{rows}</table><div class='grid'>{_png(_deciles_plot(cal))}</div>"
            f"<p class='meta'>A decile is drifted when its gap is {'-' if cal.gap is None else f'{cal.gap:.0%}'}"
            " or more and |z| &ge; 3.29 (z: realised minus expected churners over the Poisson-binomial "
            "standard deviation).</p>")


def _batches(history: list[EstimateRecord]) -> list[dict]:
    """One entry per batch (same rows, same scores), in the order first seen: the first estimate
    made of it and the last realised figures of a run where every row had a label."""
    out: dict[str, dict] = {}
    for r in history:
        b = out.setdefault(r.fingerprint, {"first": r, "realised": None, "slice": None, "trust": ""})
        if r.realised and r.labelled_rows == r.rows:
            b["realised"] = r
        elif r.realised:
            b["slice"] = r
        if r.trust in ("checked", "not trusted"):
            b["trust"] = r.trust
    return list(out.values())


def _history_plot(batches: list[dict], reference_auc: float | None) -> Figure:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3), dpi=90)
    x = np.arange(len(batches))
    for ax, k in zip(axes, ("roc_auc", "precision", "recall"), strict=True):
        for i, b in enumerate(batches):
            e = b["first"].estimate.get(k)
            if e is None:
                continue
            untrusted = b["trust"] == "not trusted"
            ax.errorbar([i - 0.08], [e.value], yerr=[[e.value - e.low], [e.high - e.value]], fmt="o", capsize=3,
                        color="grey" if untrusted else "tab:blue", mfc="white" if untrusted else "tab:blue")
            if b["realised"] is not None and k in b["realised"].realised:
                ax.plot([i + 0.08], [b["realised"].realised[k]], "D", color="tab:red" if untrusted else "tab:orange")
        if k == "roc_auc" and reference_auc is not None:
            ax.axhline(reference_auc, ls="--", color="grey", lw=1)
        ax.set_xticks(x, [f"{i + 1}" for i in x])
        ax.set_xlim(-0.6, len(batches) - 0.4)
        ax.set_xlabel("batch (in the order first monitored)")
        ax.set_title(_NAMES[k], fontsize=10)
    handles = [plt.Line2D([], [], marker="o", color="tab:blue", ls="", label="estimated before the labels (95 %)"),
               plt.Line2D([], [], marker="D", color="tab:orange", ls="", label="realised"),
               plt.Line2D([], [], marker="o", color="grey", mfc="white", ls="",
                          label="estimate not trusted (calibration drift)")]
    if reference_auc is not None:
        handles.append(plt.Line2D([], [], ls="--", color="grey", label="training (out-of-fold) ROC AUC"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    return fig


def _history(history: list[EstimateRecord], reference_auc: float | None) -> str:
    if not history:
        return ""
    batches = _batches(history)
    rows = []
    for i, b in enumerate(batches, 1):
        first, real = b["first"], b["realised"]
        e = first.estimate["roc_auc"]
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(first.started))
        got = real.realised["roc_auc"] if real is not None else None
        if got is not None:
            realised, diff = f"{got:.4f}", f"{got - e.value:+.4f}"
        elif b["slice"] is not None:
            realised, diff = f"{b['slice'].realised['roc_auc']:.4f} on {b['slice'].labelled_rows:,} labelled rows", ""
        else:
            realised, diff = "no labels yet", ""
        rows.append(f"<tr class='{'flag' if b['trust'] == 'not trusted' else ''}'><td>{i}</td>"
                    f"<td>{html.escape(PurePath(first.source).name or first.source)}</td><td>{when}</td>"
                    f"<td>{first.rows:,}</td><td>{e.value:.4f} ({e.low:.4f} – {e.high:.4f})</td>"
                    f"<td>{realised}</td><td>{diff}</td><td>{b['trust'] or 'unchecked'}</td></tr>")
    return ("<h3>Estimated and realised over time (the monitor's logged runs of this model)</h3>"
            f"<div>{_png(_history_plot(batches, reference_auc))}</div>"
            "<table><tr><th>batch</th><th>source</th><th>first monitored (UTC)</th><th>rows</th>"
            "<th>ROC AUC estimated before the labels</th><th>realised</th><th>realised - estimated</th>"
            f"<th>estimate</th></tr>{''.join(rows)}</table>"
            "<p class='meta'>A batch is the same rows with the same scores (a fingerprint of row keys and "
            "scores): a run on it once the labels are in places the realised figures beside the estimate made "
            "before them.</p>")


def estimate_section(est: PerformanceEstimate, history: list[EstimateRecord] | None = None,
                     reference_auc: float | None = None) -> str:
    """The estimate's HTML: trust line, table, deciles (labelled rows) and history."""
    return ("<h2>Performance estimated without labels</h2>" + _trust_line(est)
            + _estimate_table(est, reference_auc) + _deciles(est) + _history(history or [], reference_auc))


def render(result: DriftResult, title: str, model: str, batch: str, created: str,
           limits_quarantined: float | None = None, estimate: PerformanceEstimate | None = None,
           history: list[EstimateRecord] | None = None, reference_auc: float | None = None) -> str:
    """The report as one HTML string (``limits_quarantined``: the quarantine threshold, to flag rows;
    ``estimate``: the label-free performance estimate, ``history`` the logged ones, oldest first,
    ``reference_auc`` the training rows' out-of-fold ROC AUC)."""
    esc = html.escape
    status = (f'<span class="bad">{len(result.alerts)} alert(s)</span>' if result.alerts
              else '<span class="ok">no threshold crossed</span>')
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{esc(title)}</h1>",
             f"<div class='meta'>model {esc(model)} · batch {esc(batch)} · {esc(created)} · "
             f"{result.rows_batch:,} batch rows against {result.rows_reference:,} reference rows</div>",
             f"<h2>Status: {status}</h2>"]
    if result.alerts:
        parts.append("<ul class='alerts'>" + "".join(f"<li>{esc(a)}</li>" for a in result.alerts) + "</ul>")
    parts.append(_quarantine(result, limits_quarantined))
    if result.note:  # no drift verdict: nothing below applies
        parts.append(f"<h2>Not compared with the reference</h2><p class='bad'>{esc(result.note)}</p></body></html>")
        return "\n".join(parts)
    if estimate is not None:
        parts.append(estimate_section(estimate, history, reference_auc))
    if result.prediction is not None:
        p = result.prediction
        parts.append(f"<h2>Prediction drift</h2><p>score PSI {p.psi:.3f}, KS {p.statistic:.3f} "
                     f"(p = {p.p_value:.3g})</p>")
        parts.append("<div class='grid'>" + _png(_bars(p, f"churn score: PSI {p.psi:.3f}")) + "</div>")
    if result.performance:
        rows = "".join(f"<tr><td>{esc(k)}</td><td>{v['reference']:.4f}</td><td>{v['batch']:.4f}</td>"
                       f"<td>{v['batch'] - v['reference']:+.4f}</td></tr>"
                       for k, v in result.performance.items() if k != "rows")
        parts.append("<h2>Performance (the batch carries labels)</h2><table><tr><th>metric</th>"
                     "<th>reference (out-of-fold, training)</th><th>batch</th><th>change</th></tr>"
                     f"{rows}</table><div class='grid'>{_png(_calibration(result))}</div>")
    rows = "".join(
        f"<tr class='{'flag' if f.flagged else ''}'><td>{esc(f.feature)}</td><td>{f.kind}</td><td>{f.psi:.3f}</td>"
        f"<td>{f.test}</td><td>{f.statistic:.3f}</td><td>{f.p_value:.3g}</td>"
        f"<td>{'drift' if f.flagged else ''}</td></tr>"
        for f in sorted(result.features, key=lambda f: -f.psi))
    parts.append("<h2>Feature drift</h2><table><tr><th>feature</th><th>kind</th><th>PSI</th><th>test</th>"
                 f"<th>statistic</th><th>p-value</th><th></th></tr>{rows}</table>")
    shown = sorted(result.features, key=lambda f: -f.psi)[:max(6, len(result.drifted))]
    parts.append("<h2>Distributions (largest PSI first)</h2><div class='grid'>"
                 + "".join(_png(_bars(f)) for f in shown) + "</div>")
    parts.append("<p class='meta'>PSI over the reference bins (numeric: deciles of the training rows and "
                 "blanks; categorical: levels, blanks and unseen levels). KS: SciPy's two-sample test on "
                 "5,000-row samples; chi2: SciPy's test of homogeneity of the reference's and the "
                 "batch's level counts.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
