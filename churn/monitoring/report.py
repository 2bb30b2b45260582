"""The monitoring report: one self-contained HTML file (pictures inlined as PNG), readable offline."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from churn.monitoring.drift import DriftResult, FeatureDrift  # noqa: E402

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px} .ok{color:#1a7f37;font-weight:600} .bad{color:#c62828;font-weight:600}
table{border-collapse:collapse;font-size:13px;margin-top:8px} th,td{padding:4px 10px;border-bottom:1px solid #eee;
text-align:right} th{background:#f6f8fa} td:first-child,th:first-child{text-align:left}
tr.flag td{background:#fdecea} .grid{display:flex;flex-wrap:wrap;gap:8px} .grid img{width:360px}
ul.alerts li{color:#c62828}
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


def render(result: DriftResult, title: str, model: str, batch: str, created: str,
           limits_quarantined: float | None = None) -> str:
    """The report as one HTML string (``limits_quarantined``: the quarantine threshold, to flag rows)."""
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
