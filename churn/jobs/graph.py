"""The stage graph of a train job (the flow chart of the process: ingest, split, the round-trip
preflight, the searches, ...), as Mermaid text or a picture.

Built from the job spec alone (``churn graph JOB``), or from a finished run, when each stage
carries its wall time and row counts (logged with the run as ``graph/stages.mmd`` and
``graph/stages.png``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from churn.config import JobSpec

if TYPE_CHECKING:
    from churn.jobs.train import TrainResult


@dataclass
class StageGraph:
    """Nodes (id → label lines) in rank order, and directed edges between node ids."""

    nodes: dict[str, list[str]] = field(default_factory=dict)
    ranks: list[list[str]] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)

    def add_rank(self, nodes: dict[str, list[str]]) -> None:
        previous = self.ranks[-1] if self.ranks else []
        self.nodes.update(nodes)
        self.edges += [(a, b) for a in previous for b in nodes]
        self.ranks.append(list(nodes))


def train_graph(job: JobSpec, result: TrainResult | None = None) -> StageGraph:
    """ingest → split → preflight → (feature sums) → search per family → calibrate → (full-data) → evaluate
    → finalize → track → register."""
    sec = result.seconds if result else {}
    man = result.dataset.manifest if result else None
    rows = result.rows if result else {}

    def timed(name: str, *lines: str) -> list[str]:
        return [name, *lines, *([f"{sec[name]:.1f} s"] if name in sec else [])]

    g = StageGraph()
    g.add_rank({"ingest": timed("ingest", job.data.source.rsplit("/", 1)[-1],
                                *([f"{man.rows_read:,} read, {man.rows_kept:,} kept",
                                   f"{man.rows_quarantined:,} quarantined"] if man else []))})
    g.add_rank({"split": timed("split", f"test {job.split.test:.0%}, seed {job.seed}",
                               *([f"{rows['train']:,} train / {rows['test']:,} test"] if rows else []))})
    g.add_rank({"preflight": timed("preflight", "round trip: each family saved", "and loaded as registered",
                                   *(["passed before (reused)"] if result and result.preflight_reused else []))})
    sums = job.sums_to_try()
    if sums:  # the screen (auto) or the sums themselves (true), before every family's search
        g.add_rank({"feature_sums": ["feature sums", ", ".join(sums),
                                     "CV with and without" if job.model.feature_sums == "auto" else "always",
                                     *([("kept" if result.feature_sums else "left out")] if result else [])]})
    families = {}
    for fam in job.model.families:
        res = result.families.get(fam) if result else None
        families[f"search_{fam}"] = [f"search: {fam}", f"{job.search.cv}-fold CV",
                                     *([f"{job.search.scoring} {res.best_score:.4f}", f"done at {res.seconds:.1f} s"]
                                       if res else [])]
    g.add_rank(families)
    champion = ([f"champion: {result.champion.name}", f"{result.champion.calibration.method} map",
                 f"cut {result.threshold.value:.3f}"] if result else [])
    g.add_rank({"calibrate": timed("calibrate", "stack, calibration, threshold", "on out-of-fold", *champion)})
    if result is not None and result.full_data is not None:
        fd = result.full_data
        g.add_rank({"full_data": timed("full-data", f"xgboost.dask on {fd.full_rows:,} train rows",
                                       f"{fd.rounds} rounds", f"{fd.winner} won on validation")})
    g.add_rank({"evaluate": timed("evaluate", "test split",
                                  *([f"ROC AUC {result.test.metrics['roc_auc']:.4f}"] if result else []))})
    if job.model.finalize:
        skipped = result is not None and "finalize" in result.row_notes
        g.add_rank({"finalize": timed("finalize", "refit on every labelled row",
                                      *(["skipped: train split above search.max_rows"] if skipped else
                                        [f"{rows['final']:,} rows"] if rows else []))})
    g.add_rank({"track": timed("track", f"MLflow: {job.tracking.experiment}")})
    g.add_rank({"register": ["register", f"{job.tracking.registered_model}@{job.tracking.alias}",
                             *([f"version {result.model_version}"] if result else []),
                             *([f"holds {', '.join('@' + a for a in result.promotion.aliases) or 'no alias'}"
                                + ("" if result.promotion.registered else " (unchanged)")]
                               if result and result.promotion else [])]})
    return g


def to_mermaid(graph: StageGraph) -> str:
    """Mermaid flowchart text (renders on GitHub and in the MLflow artifact viewer's text view)."""
    lines = ["flowchart TD"]
    for node, label in graph.nodes.items():
        text = "<br/>".join(part.replace('"', "'") for part in label)
        lines.append(f'    {node}["{text}"]')
    lines += [f"    {a} --> {b}" for a, b in graph.edges]
    return "\n".join(lines) + "\n"
