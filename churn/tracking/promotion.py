"""The promotion gate: which alias a newly trained version gets.

* An unchanged rerun registers nothing: every version is tagged with a fingerprint of what made
  it (:func:`model_fingerprint`: the dataset, the spec, churn's code and the seed), and a run
  whose fingerprint a version already carries reports that version instead.
* A new version becomes ``@champion`` only if its table rules equal the champion's and, on the
  new run's test rows, its score (the job's ``search.scoring``) is at least the champion's score
  on the same rows minus ``registry.promotion-tolerance``; otherwise it becomes ``@challenger``
  (:class:`Gate`). Both are scored by the same code: partition by partition on the cluster, the
  member scores, the model's calibration map and a score summary per partition, merged there
  (:mod:`churn.modeling.summary`); ROC AUC and average precision come from its histogram, within
  the stated error bound, the other scorers exactly. The first version becomes champion;
  ``churn train --promote`` moves the alias whatever the gate says, and says so.
* Just before it registers and just before it moves an alias, the driver checks that its run is
  still RUNNING and still its own (``run_state.ownership_problem``): a run marked FAILED never
  registers, and a version whose run is lost (or fails) before its alias is set is deleted again.
* Moving ``@champion`` is a compare-and-set as far as MLflow allows (it has no atomic one): the
  alias is read again right before the move, and when a concurrent train moved it since the gate
  compared, the gate compares again with the new champion. The alias is read once more after the
  move; the line the run reports says what holds then. What is left is the moment between one
  driver's last read and its write.
* Every alias move is logged, and tagged on the run (``churn.alias_move``: ``champion: 3 -> 4``).

A champion refitted on train + test rows (``model.finalize``) has seen its own test rows, so
scoring it again on them would flatter it. Each version is therefore tagged with the test rows its
own score came from (the dataset, split and seed: :data:`TEST_ROWS_TAG`) and that score, measured
before the refit (:data:`TEST_SCORE_TAG`). When the champion was refitted and this run's test rows
are the same rows, the gate compares with that recorded score; on other rows it scores the champion
again and the line warns that rows it was refitted on may be among them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlflow
from distributed import Client

from churn.config import ConfigError, JobSpec, setting
from churn.modeling.search_cache import search_key
from churn.modeling.summary import ScoreSummary, score_from, summarise_on_cluster
from churn.tracking.model_rules import logged_rules
from churn.tracking.names import check_alias
from churn.tracking.registry import alias_version, load_churn_model, set_alias
from churn.tracking.run_log import RunEndedError
from churn.tracking.run_state import ownership_problem

log = logging.getLogger(__name__)

FINGERPRINT_TAG = "churn.fingerprint"  # on a model version: what made it (model_fingerprint)
PROMOTION_TAG = "churn.promotion"  # on the run and its version: the gate's line
ALIAS_MOVE_TAG = "churn.alias_move"  # on the run: every alias it moved, "champion: 3 -> 4"
TEST_ROWS_TAG = "churn.test_rows"  # on a version: which rows its test score is on (test_rows_id)
TEST_SCORE_TAG = "churn.test_score"  # on a version: {"metric": score} on those rows, before any refit
REFIT_TAG = "churn.refit_on_test"  # on a version: "true" when it was refitted on train + test rows


def test_rows_id(dataset: str, test: float, validation: float, seed: int) -> str:
    """Names a run's test rows: the dataset's content key, the split's fractions and the seed."""
    payload = json.dumps({"dataset": dataset, "test": test, "validation": validation, "seed": seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def tolerance() -> float:
    """``registry.promotion-tolerance``: a finite number >= 0 (else a ConfigError naming it)."""
    raw = setting("registry.promotion-tolerance")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"churn.registry.promotion-tolerance must be a number >= 0, not {str(raw)[:40]!r}")
    return value


def check_settings(champion_alias: str) -> None:
    """The gate's settings, before any cluster starts: the tolerance, and a challenger alias that is
    not the champion's and that MLflow takes (``v2`` is reserved for versions)."""
    tolerance()
    challenger = str(setting("registry.challenger-alias"))
    if challenger == champion_alias:
        raise ConfigError(f"churn.registry.challenger-alias is {champion_alias!r}, the alias the gate guards "
                          "(tracking.alias); give them different names")
    check_alias("churn.registry.challenger-alias", challenger)


def model_fingerprint(job: JobSpec, dataset_key: str, rows: int, full_data_workers: int | None = None) -> str:
    """What a registered version was made of: the search key (the dataset's content key, the rows
    searched, the seed, the schema, split, search and model sections, churn's code and the fitting
    libraries' versions) and the rest of the spec that shapes the model (the CV repeats, the
    economics that set the threshold); for a full-data model, the workers it trained on (xgboost.dask's
    result depends on them). The job's name, data paths and tracking section are not in it."""
    spec = {k: v for k, v in job.as_dict().items() if k not in ("name", "data", "tracking")}
    payload: dict[str, object] = {"search": search_key(job, dataset_key, rows), "spec": spec}
    if full_data_workers is not None:
        payload["full_data_workers"] = full_data_workers
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def gate_score(scoring: str, summary: ScoreSummary, threshold: float) -> float:
    """``scoring`` (a scikit-learn scorer name: greater is better) of the rows a score summary holds;
    scorers that need decisions get them at ``threshold`` (counted exactly in the summary)."""
    return score_from(summary, scoring, threshold)


def version_score(name: str, version: str, ddf: Any, features: list[str], client: Client, scoring: str) -> float:
    """Registered version ``name/version``'s ``scoring`` on the rows of ``ddf``, scored as the train
    job scores its own model: loaded by churn's loader, scored and summarised partition by partition
    on the cluster (member scores, then its calibration map), decisions at its threshold."""
    model = load_churn_model(f"models:/{name}/{version}")
    summary = summarise_on_cluster(ddf, model.pipeline, features, client, (model.threshold,))
    return gate_score(scoring, summary, model.threshold)


# what must match for two versions' scores to be compared: the feature columns and their rules,
# always; the label and its values where both versions carry them (the id and ignored columns
# describe the files, not the model)
FEATURE_RULES, TARGET = ("numeric", "categorical"), ("label", "positive", "negative")


def schema_difference(theirs: dict[str, Any], ours: dict[str, Any]) -> str | None:
    """How the table rules ``ours`` differ from ``theirs`` (feature columns added, removed or with
    other rules, per kind; another label), or None when they are the same."""
    out = []
    for kind in [*FEATURE_RULES, *(k for k in TARGET if k in theirs and k in ours)]:
        a, b = theirs.get(kind), ours.get(kind)
        if a == b:
            continue
        if not (isinstance(a, dict) and isinstance(b, dict)):
            out.append(f"{kind} {'missing in the champion' if a is None else 'differs'}")
            continue
        for what, cols in (("added", b.keys() - a.keys()), ("removed", a.keys() - b.keys()),
                           ("with other rules", {c for c in a.keys() & b.keys() if a[c] != b[c]})):
            if cols:
                out.append(f"{kind} columns {what}: {', '.join(sorted(cols)[:5])}"
                           + (f" (+{len(cols) - 5} more)" if len(cols) > 5 else ""))
    return "; ".join(out) or None


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one champion: whether the new version may take its place, and why."""

    promote: bool
    reason: str
    champion: str | None  # the version compared with; None when there was no champion


@dataclass
class Gate:
    """What the new version is judged on: its score on this run's test rows, and its table rules."""

    name: str  # registered model
    champion: str  # the alias the gate guards (tracking.alias)
    metric: str  # search.scoring
    score: float  # the new version's score on this run's test rows
    rules: dict[str, Any]  # the new version's table rules (as in its MLmodel file)
    score_version: Callable[[str], float]  # a registered version's score on the same rows
    tolerance: float = field(default_factory=tolerance)
    challenger: str = field(default_factory=lambda: str(setting("registry.challenger-alias")))
    test_rows: str = ""  # test_rows_id of this run's test rows ("": unknown)
    refit_on_test: bool = False  # the new version was refitted on train + test rows

    def tags(self) -> dict[str, str]:
        """The version tags that let a later gate compare with this version fairly."""
        return {TEST_ROWS_TAG: self.test_rows, TEST_SCORE_TAG: json.dumps({self.metric: self.score}),
                REFIT_TAG: str(self.refit_on_test).lower()}

    def _champion_score(self, current: str) -> tuple[float, str]:
        """The champion's score to compare with, and what the line should say about it: its recorded
        score when it was refitted on these very test rows (scoring it again would flatter it),
        else its score on this run's test rows."""
        tags = mlflow.MlflowClient().get_model_version(self.name, current).tags
        refit = tags.get(REFIT_TAG) == "true"
        if refit and self.test_rows and tags.get(TEST_ROWS_TAG) == self.test_rows:
            recorded = json.loads(tags.get(TEST_SCORE_TAG) or "{}").get(self.metric)
            if isinstance(recorded, (int, float)) and math.isfinite(recorded):
                return float(recorded), (f" (version {current}'s score on the same rows, recorded before it was "
                                         "refitted on them)")
        note = (f"; version {current} was refitted on train + test rows of its own data, so rows it learned "
                "from may be among these and its score is optimistic") if refit else ""
        return self.score_version(current), note

    def judge(self, current: str | None) -> Verdict:
        """The verdict against champion version ``current`` (None: there is none)."""
        if current is None:
            return Verdict(True, f"no @{self.champion} yet", None)
        try:
            diff = schema_difference(logged_rules(f"models:/{self.name}/{current}"), self.rules)
            theirs, about = (math.nan, "") if diff is not None else self._champion_score(current)
        except Exception as exc:  # noqa: BLE001 - a champion that cannot be scored is not replaced silently
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:300]
            return Verdict(False, f"version {current} could not be scored on this run's test rows: {first}", current)
        if diff is not None:
            return Verdict(False, f"its table schema differs from version {current}'s: {diff}", current)
        ok = self.score >= theirs - self.tolerance
        return Verdict(ok, f"test {self.metric} {self.score:.4f} vs {theirs:.4f} for version {current} on this "
                           f"run's test rows{about} ({'within' if ok else 'worse by more than'} the tolerance "
                           f"{self.tolerance:g})", current)


@dataclass
class Promotion:
    """What the registry holds for this run at the end, as the run last read it."""

    version: str  # the version this run registered, or the unchanged one it found
    registered: bool  # False: an unchanged rerun, nothing registered
    aliases: list[str]  # the aliases ``version`` holds, read after the last move
    line: str  # what happened, with both scores: logged, tagged and in the summary
    moves: list[str] = field(default_factory=list)  # "champion: 3 -> 4"


def version_with_fingerprint(name: str, fingerprint: str) -> str | None:
    """The newest version of ``name`` tagged with ``fingerprint``; None when there is none."""
    try:
        found = mlflow.MlflowClient().search_model_versions(
            f"name = '{name}' and tags.`{FINGERPRINT_TAG}` = '{fingerprint}'")
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return max((str(v.version) for v in found), key=int, default=None)


def _aliases(name: str, version: str) -> list[str]:
    return sorted(mlflow.MlflowClient().get_model_version(name, version).aliases)


def _move(name: str, alias: str, version: str, moves: list[str]) -> str | None:
    """Point ``alias`` at ``version``, log and tag the move; the version it pointed at before."""
    before = alias_version(name, alias)
    set_alias(name, alias, version)
    moves.append(f"{alias}: {before or 'none'} -> {version}")
    log.info("alias moved: %s@%s", name, moves[-1])
    mlflow.set_tag(ALIAS_MOVE_TAG, "; ".join(moves)[:5000])
    return before


def owner_check(uri: str, run_id: str, token: str) -> Callable[[str], None]:
    """A check that raises :class:`RunEndedError` (one line) when the driver holding ``token`` may no
    longer write into run ``run_id``; it is called with what it guards ("registering", ...)."""
    def check(before: str) -> None:
        problem = ownership_problem(uri, run_id, token)
        if problem is not None:
            raise RunEndedError(f"{problem}; stopped before {before}")
    return check


def _unchanged(gate: Gate, version: str, force: bool, check_owner: Callable[[str], None]) -> Promotion:
    moves: list[str] = []
    if force and alias_version(gate.name, gate.champion) != version:
        check_owner(f"moving @{gate.champion}")
        _move(gate.name, gate.champion, version, moves)
    held = _aliases(gate.name, version)
    line = (f"unchanged: version {version} already registered (same data, spec, code and seed), nothing "
            f"registered; it holds {', '.join('@' + a for a in held) or 'no alias'}"
            + (f" (@{gate.champion} moved there by --promote)" if moves else ""))
    log.info("%s", line)
    mlflow.set_tag(PROMOTION_TAG, line[:5000])
    return Promotion(version, False, held, line, moves)


def promote(gate: Gate, fingerprint: str, register: Callable[[], str], check_owner: Callable[[str], None],
            force: bool = False, rounds: int = 4) -> Promotion:
    """Register the new version (``register()`` returns its number) unless a version with the same
    ``fingerprint`` exists, and give it ``@champion`` or ``@challenger`` by ``gate``'s verdict
    (``force``: ``@champion`` whatever it says). ``check_owner(what)`` raises when this driver no
    longer owns its run; it runs before registering and before every alias move."""
    same = version_with_fingerprint(gate.name, fingerprint)
    if same is not None:
        return _unchanged(gate, same, force, check_owner)
    compared = alias_version(gate.name, gate.champion)
    verdict = gate.judge(compared)
    check_owner("registering a model version")
    version = register()
    client = mlflow.MlflowClient()
    notes, moves = [], []
    restore: dict[str, str | None] = {}  # each alias this run moved: the version it pointed at first
    try:
        client.set_model_version_tag(gate.name, version, FINGERPRINT_TAG, fingerprint)
        for key, value in gate.tags().items():
            client.set_model_version_tag(gate.name, version, key, value)
        for _ in range(rounds):
            check_owner(f"moving an alias of version {version}")
            now = alias_version(gate.name, gate.champion)
            if now == version:  # read back after our move: it held
                break
            if now != compared:  # a concurrent train moved the champion since the gate compared
                notes.append(f"@{gate.champion} moved from version {compared or 'none'} to {now or 'none'} "
                             "(a concurrent train) while this run compared")
                compared, verdict = now, gate.judge(now)
                if verdict.promote or force:
                    continue  # judging took a while: read the alias again right before moving it
            if not (verdict.promote or force):
                restore.setdefault(gate.challenger, _move(gate.name, gate.challenger, version, moves))
                break
            restore.setdefault(gate.champion, _move(gate.name, gate.champion, version, moves))
            if force:  # forced once: no retaking from a concurrent --promote
                break
    except BaseException as exc:  # a lost or failing run leaves no version behind
        try:
            for alias, before in restore.items():  # back where it was, not away with the deleted version
                if before is not None and alias_version(gate.name, alias) == version:
                    set_alias(gate.name, alias, before)
            client.delete_model_version(gate.name, version)
            log.error("version %s of %s deleted: %s", version, gate.name, str(exc).split("\n")[0][:300])
        except Exception as gone:  # noqa: BLE001 - the first error is the one to report
            log.error("version %s of %s could not be deleted after the run failed: %s", version, gate.name, gone)
        raise
    held = _aliases(gate.name, version)
    now = alias_version(gate.name, gate.champion)
    if gate.champion in held:
        was = f" (was version {compared})" if compared else ""
        how = "forced by --promote; " if force and not verdict.promote else ""
        line = f"version {version} is @{gate.champion}{was}: {how}{verdict.reason}"
    else:
        alias = f"@{gate.challenger}" if gate.challenger in held else "no alias"
        took = (f"it was made @{gate.champion}, then a concurrent train moved @{gate.champion} to version "
                f"{now or 'none'}" if any(m.startswith(f"{gate.champion}:") for m in moves)
                else f"@{gate.champion} stays version {now or 'none'}")
        line = f"version {version} is {alias}, {took}: {verdict.reason}"
    line = "; ".join([line, *notes])
    log.info("%s", line)
    client.set_model_version_tag(gate.name, version, PROMOTION_TAG, line[:5000])
    mlflow.set_tag(PROMOTION_TAG, line[:5000])
    return Promotion(version, True, held, line, moves)
