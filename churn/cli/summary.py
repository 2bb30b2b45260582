"""What the commands print when they finish: rich tables built from the jobs' typed results.

Every cell is plain text (never Rich markup), and a table is laid out for the width it gets
(:func:`fitted`): each column is at least as wide as its longest word, so no word is ever split,
and the columns that do not fit move below the table as lines (the best parameters first). A
key/value row whose value holds a word wider than the table moves below it the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from churn.config.families import spelled

if TYPE_CHECKING:
    from churn.config import JobSpec, MonitorSpec, ScoreSpec
    from churn.data.ingest import Dataset
    from churn.jobs.monitor import MonitorResult
    from churn.jobs.train import TrainResult
    from churn.modeling.batch import ScoreResult
    from churn.tracking.run_state import RunStatus


WIDE = 140  # the width a summary is laid out for when the output is not a terminal (a log file)


@dataclass
class Column:
    """A column of a summary table: its header, its cells, when it moves below the table (0: never;
    else the columns that move first have the lowest number) and, for prose, the width it is
    content to wrap at (None: its longest cell)."""

    header: str
    cells: list[str]
    moves: int = 0
    wraps_at: int | None = None

    def longest_word(self) -> int:
        return max((len(w) for text in [self.header, *self.cells] for w in text.split()), default=1)

    def longest_line(self) -> int:
        return max((len(text) for text in [self.header, *self.cells]), default=1)

    def preferred(self) -> int:
        """The width its cells would like: the longest cell, or ``wraps_at`` for prose."""
        longest = max((len(text) for text in self.cells), default=1)
        return max(self.longest_word(), min(longest, self.wraps_at or longest))


def _overhead(n_columns: int) -> int:
    return 3 * n_columns + 1  # one space each side of a cell, and n + 1 rules


def _widths(columns: list[Column], width: int) -> list[int]:
    """Each column's longest word, then what is left: first up to what its cells would like, then
    up to its header's length, the columns that need least first."""
    widths = [c.longest_word() for c in columns]
    spare = width - sum(widths) - _overhead(len(columns))
    for target in (Column.preferred, Column.longest_line):
        for i in sorted(range(len(columns)), key=lambda i: target(columns[i]) - widths[i]):
            extra = max(0, min(spare, target(columns[i]) - widths[i]))
            widths[i] += extra
            spare -= extra
    return widths


def fitted(title: str, columns: Sequence[Column], width: int, *, show_header: bool = True,
           label: int = 0) -> RenderableType:
    """A table of ``columns`` no wider than ``width`` that splits no word: each column is at least
    as wide as its longest word; while the cells would not fit on one line each, the movable columns
    (in their order) become lines below the table, each led by the row's cell of column ``label``."""
    kept = list(columns)
    movable = sorted((c for c in columns if c.moves), key=lambda c: c.moves)
    while sum(c.preferred() for c in kept) + _overhead(len(kept)) > width and movable:
        kept.remove(movable.pop(0))
    widths = _widths(kept, width)
    table = Table(title=Text(title), show_header=show_header, title_justify="left")
    for c, w in zip(kept, widths, strict=True):
        table.add_column(Text(c.header), width=w, overflow="fold")  # fold never bites: w >= longest word
    for r in range(len(columns[0].cells)):
        table.add_row(*[Text(c.cells[r]) for c in kept])
    moved = [c for c in columns if c not in kept]
    lines = [f"{columns[label].cells[r]}: " + "; ".join(f"{c.header} {c.cells[r]}" for c in moved
                                                         if c.cells[r] not in ("", "-"))
             for r in range(len(columns[0].cells)) if any(c.cells[r] not in ("", "-") for c in moved)]
    return Group(table, *[Text(line, overflow="fold") for line in lines]) if lines else table


def key_values(title: str, rows: Sequence[tuple[str, str]], width: int) -> RenderableType:
    """A two-column key/value table no wider than ``width``; a row holding a word that cannot fit
    beside the keys moves below the table as ``key: value`` (one line; a terminal wraps it)."""
    key_width = max((len(w) for k, _ in rows for w in k.split()), default=1)
    room = width - key_width - _overhead(2)
    inside = [(k, v) for k, v in rows if max((len(w) for w in v.split()), default=0) <= room]
    below = [(k, v) for k, v in rows if (k, v) not in inside]
    keys = Column("", [k for k, _ in inside], wraps_at=30 if width < 120 else None)  # narrow: keys wrap too
    table = fitted(title, [keys, Column("", [v for _, v in inside])], width, show_header=False)
    if not below:
        return table
    return Group(table, *[Text(f"{k}: {v}", no_wrap=True, overflow="ignore") for k, v in below])


def ingest_table(spec: JobSpec, ds: Dataset, width: int = WIDE) -> RenderableType:
    man = ds.manifest
    rows = [("dataset", f"{ds.root}{' (reused)' if ds.reused else ''}"),
            ("files / bytes", f"{len(man.files)} / {man.total_bytes:,}"),
            ("partitions", f"{man.partitions}"),
            ("rows read", f"{man.rows_read:,}"),
            ("rows kept", f"{man.rows_kept:,}"),
            ("rows quarantined", f"{man.rows_quarantined:,}"),
            ("duplicates removed", f"{man.duplicates_removed:,}")]
    rows += [(f"  quarantined: {k}", f"{v:,}") for k, v in man.quarantined_by_reason.items()]
    rows.append(("seconds", f"{man.seconds:.1f}"))
    return key_values(f"churn ingest: {spec.name}", rows, width)


def stack_description(result: TrainResult) -> str:
    """What the stacked candidate was: its members, or why it stayed the best family alone."""
    from churn.modeling.calibrate import MIN_GAIN, STACK

    if result.champion.name == STACK:
        return "logistic regression over the out-of-fold scores of " + ", ".join(result.champion.members)
    return (f"best pair tried; no second family raised the best family's CV score by {MIN_GAIN} and by one "
            "standard error of its fold-wise gains")


def search_table(spec: JobSpec, result: TrainResult, width: int = WIDE) -> RenderableType:
    """One row per family searched (and the stack); the best parameters, then the times and the
    rows per fit, move below the table when it is too narrow for them."""
    from churn.modeling.calibrate import STACK

    champ = result.champion
    repeated = champ.repeats > 1  # the champion was chosen on the search's folds and fresh ones
    cols = [Column("family", []), Column("imbalance", []), Column("rows per fit", [], moves=2),
            Column("fits / candidates", []),
            Column(f"CV {spec.search.scoring} ± std" + (f" / {champ.repeats} repeats" if repeated else ""), []),
            Column("done at s", [], moves=3), Column("best params", [], moves=1, wraps_at=30)]

    def add(*cells: str) -> None:
        for col, cell in zip(cols, cells, strict=True):
            col.cells.append(cell)

    for fam, res in result.families.items():
        mark = " (champion)" if fam == champ.name else " (in stack)" if fam in champ.members else ""
        rows = f"{res.rows_per_fit:,}" + (f" of {result.rows['search']:,}" if res.rows_per_fit < result.rows["search"]
                                          else "")
        over = f" / {champ.family_scores.get(fam, float('nan')):.4f}" if repeated else ""
        add(fam + mark, res.imbalance, rows, f"{res.n_fits} / {res.n_candidates}",
            f"{res.best_score:.4f} ± {res.std_score:.4f}{over}", f"{res.seconds:.1f}",
            ", ".join(f"{spelled(k)}={v}" for k, v in res.best_params.items()
                      if k != "resample__method" and k != "model__class_weight"))
    if champ.stack_score is not None:
        mark = " (champion)" if champ.name == STACK else ""
        score = f"{champ.stack_score:.4f} ± {champ.stack_std:.4f}"
        add(STACK + mark, "-", f"{result.rows['search']:,}", "-", f"- / {score}" if repeated else score, "-",
            stack_description(result))
    title = (f"churn train: {spec.name} — search ({spec.search.engine}, {spec.search.strategy}; "
             f"imbalance searched: {', '.join(spec.model.imbalance)})")
    return fitted(title, cols, width)


def default_economics(spec: JobSpec) -> bool:
    """Whether the job left ``evaluation.economics`` to the built-in defaults (not set in its file
    or by --set)."""
    return "evaluation" not in spec.model_fields_set or "economics" not in spec.evaluation.model_fields_set


def economics_note(spec: JobSpec, result: TrainResult) -> str | None:
    """The note a summary carries when the threshold came from the built-in campaign economics."""
    if not default_economics(spec):
        return None
    econ = spec.evaluation.economics
    return (f"note: the decision threshold maximises the profit of a campaign with the built-in economics "
            f"(customer value {econ.customer_value:g}, offer {econ.offer_cost:g}, contact {econ.contact_cost:g}, "
            f"acceptance {econ.acceptance_rate:g}), which would contact "
            f"{result.test.metrics['contacted_fraction']:.1%} of customers; set your own under "
            "evaluation.economics in the job file (customer_value, offer_cost, contact_cost, acceptance_rate)")


def train_summary(spec: JobSpec, result: TrainResult, wall: float, width: int = WIDE) -> RenderableType:
    """What ``churn train`` prints: the search, the result, and the default-economics note."""
    note = economics_note(spec, result)
    return Group(search_table(spec, result, width), result_table(spec, result, wall, width),
                 *([Text(note, style="yellow")] if note else []))


def result_table(spec: JobSpec, result: TrainResult, wall: float, width: int = WIDE) -> RenderableType:
    m = result.test.metrics
    man = result.dataset.manifest
    econ = spec.evaluation.economics
    rows = [
        ("rows read / kept / quarantined / duplicates",
         f"{man.rows_read:,} / {man.rows_kept:,} / {man.rows_quarantined:,} / {man.duplicates_removed:,}"),
        *[(f"quarantined: {k}", f"{v:,}") for k, v in man.quarantined_by_reason.items()],
        ("rows: train (search) / validation / test",
         f"{result.rows['train']:,} ({result.rows['search']:,}) / {result.rows.get('validation', 0):,} "
         f"(split.validation {spec.split.validation}: {result.validation:.1%}) / {result.rows['test']:,}"),
        *[(f"fewer rows: {what}", note) for what, note in result.row_notes.items()],
        *([("full-data model vs sample champion", result.full_data.line)] if result.full_data else []),
        *([("full-data depth ladder", result.full_data.ladder)] if result.full_data and result.full_data.ladder
          else []),
        *([("full-data category levels", result.full_data.levels)] if result.full_data and result.full_data.levels
          else []),
        (f"champion / calibration{' (CV over repeats)' if result.champion.repeats > 1 else ''}",
         f"{result.champion.name} (CV {spec.search.scoring} "
         f"{result.champion.cv_score:.4f} ± {result.champion.cv_std:.4f}) / {result.champion.calibration.method} "
         f"(out-of-fold Brier {', '.join(f'{k} {v:.4f}' for k, v in result.champion.calibration.brier.items())})"),
        ("test ROC AUC / PR AUC / Brier / log loss",
         f"{m['roc_auc']:.4f} / {m['pr_auc']:.4f} / {m['brier']:.4f} / {m['log_loss']:.4f} "
         f"({'the full-data model' if _full_won(result) else 'model before finalising'})"),
        ("precision at top 10 %", f"{m.get('precision_at_10pct', float('nan')):.3f}"),
        ("decision threshold (profit) / F1 threshold",
         f"{result.threshold.value:.3f} (from {result.threshold.source}) / {result.threshold.f1:.3f}"),
        ("campaign at threshold", f"contact {m['contacted_fraction']:.1%} of customers, expected profit "
         f"{m.get('profit', 0):,.0f} vs {m.get('profit_contact_all', 0):,.0f} contacting all "
         f"(value {econ.customer_value:g}, offer {econ.offer_cost:g}, contact {econ.contact_cost:g}, "
         f"acceptance {econ.acceptance_rate:g}{', built-in defaults' if default_economics(spec) else ''})"),
        ("features kept by the registered model", f"{len(result.kept_features)}"),
        ("feature sums (model.feature_sums)", ", ".join(result.feature_sums) or "none"),
        ("registered model", f"{result.model_uri} (version {result.model_version}), fitted on "
         f"{result.rows['final']:,} rows ({_learned_from(result)})"),
        ("promotion", result.promotion.line if result.promotion else "-"),
        ("MLflow run", result.run_id),
        ("wall time", f"{wall:.1f}s"),
    ]
    return key_values("data, champion and test split", rows, width)


def _full_won(result: TrainResult) -> bool:
    return result.full_data is not None and result.full_data.winner == "full-data"


def _learned_from(result: TrainResult) -> str:
    """Which rows the registered model learned from."""
    rows = result.rows
    if _full_won(result):
        return "every train row: the full-data xgboost model"
    if "finalize" not in result.row_notes and rows["final"] > rows["search"]:
        return "train + test"
    if rows["search"] < rows["train"]:
        return f"the search sample: {rows['search']:,} of {rows['train']:,} train rows"
    return "the train rows"


def score_table(spec: ScoreSpec, res: ScoreResult, width: int = WIDE) -> RenderableType:
    return key_values(f"churn score: {spec.name} with {spec.model_uri}", [
                 ("scores", str(res.root)), ("rows read", f"{res.rows_read:,}"),
                 ("rows scored", f"{res.rows_scored:,}"), ("rows quarantined", f"{res.rows_quarantined:,}"),
                 *[(f"  quarantined: {k}", f"{v:,}") for k, v in res.reasons.items()],
                 ("seconds", f"{res.seconds:.1f}")], width)


def monitor_table(spec: MonitorSpec, res: MonitorResult, width: int = WIDE) -> RenderableType:
    d = res.drift
    rows = [("rows read / profiled / quarantined",
             f"{res.batch.rows_read:,} / {res.batch.rows_profiled:,} / {res.batch.rows_quarantined:,}"),
            *[(f"  quarantined: {k}", f"{v:,}") for k, v in sorted(d.quarantined.items(), key=lambda kv: -kv[1])]]
    if d.note:  # no drift verdict
        rows.append(("not compared with the reference", d.note))
    else:
        rows += [("drifted features (PSI >= " + f"{spec.thresholds.psi})", ", ".join(
                    f"{f.feature} ({f.psi:.2f})" for f in d.features if f.flagged) or "none"),
                 ("largest PSI", ", ".join(f"{f.feature} {f.psi:.3f}"
                                           for f in sorted(d.features, key=lambda f: -f.psi)[:3]))]
    if d.prediction is not None:
        rows.append(("prediction drift (score PSI / KS)", f"{d.prediction.psi:.3f} / {d.prediction.statistic:.3f}"))
    for k in ("roc_auc", "pr_auc", "brier"):
        if k in d.performance:
            v = d.performance[k]
            rows.append((f"{k} batch (reference)", f"{v['batch']:.4f} ({v['reference']:.4f})"))
    if res.estimate is not None:
        e = res.estimate
        auc, churners = e.estimate["roc_auc"], e.estimate["churners_contacted"]
        rows += [("ROC AUC estimated without labels", f"{auc.value:.4f} ({auc.low:.4f}-{auc.high:.4f}), {e.trust}"),
                 (f"churners among the {e.contacted:,} contacted",
                  f"{churners.value:,.0f} expected ({churners.low:,.0f}-{churners.high:,.0f})")]
        if e.realised:
            le, got = e.labelled_estimate, e.realised
            rows.append((f"  on the {e.labelled_rows:,} labelled rows: estimated / realised",
                         f"ROC AUC {le['roc_auc'].value:.4f} / {got['roc_auc']:.4f}; churners contacted "
                         f"{le['churners_contacted'].value:,.0f} / {got['churners_contacted']:,.0f}"))
    rows += [("alerts", "; ".join(d.alerts) or "none"), ("report", str(res.report)), ("MLflow run", res.run_id),
             ("seconds", f"{res.seconds:.1f}")]
    return key_values(f"churn monitor: {spec.name} with {spec.model_uri} ({res.model})", rows, width)


def waiting_line(st: RunStatus) -> str:
    """What ``churn status --wait`` shows while the run goes on: its stage and time so far."""
    import time

    ran = f", running for {time.time() - st.started:.0f} s" if st.started else ""
    return f"stage {st.stage or '-'}{ran} (run {st.run_id}, {st.status})"


def status_table(st: RunStatus, width: int = WIDE) -> RenderableType:
    """A run's state for ``churn status``: MLflow status, stage, times, error, and what came out
    (the model version registered, the gate's verdict, the champion, the threshold, test ROC AUC)."""
    import time

    end = st.ended or time.time()
    rows = [("status", st.status), ("stage", st.stage or "-"),
            ("started", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(st.started)) if st.started else "-"),
            ("running for" if not st.done else "took", f"{end - st.started:.0f} s" if st.started else "-")]
    if st.heartbeat is not None and not st.done:
        rows.append(("last heartbeat", f"{time.time() - st.heartbeat:.0f} s ago"))
    if st.error:
        rows.append(("error", st.error))
    if st.versions:
        rows.append(("registered model version", ", ".join(f"models:/{v}" for v in st.versions)))
    if st.tags.get("churn.promotion"):
        rows.append(("promotion", st.tags["churn.promotion"]))
    if st.tags.get("champion"):
        rows.append(("champion", st.tags["champion"]))
    if "decision_threshold" in st.metrics:
        rows.append(("decision threshold", f"{st.metrics['decision_threshold']:.3f}"))
    if "test_roc_auc" in st.metrics:
        rows.append(("test ROC AUC", f"{st.metrics['test_roc_auc']:.4f}"))
    rows += [(k, f"{st.metrics[k]:.4f}") for k in sorted(st.metrics)
             if k.startswith(("cv_", "test_pr_auc", "test_brier"))]
    return key_values(f"churn run {st.run_id} ({st.name})", rows, width)
