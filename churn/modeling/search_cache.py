"""Resuming the search: a job rerun with the same data, spec and code reuses the search results
of the run before it instead of repeating the fits (e.g. after a failure in a later stage).

The key hashes the dataset (its content key), the rows searched, every spec section that
changes the search (schema, split, seed, search, model) and the code (churn's own modules and
the versions of the libraries that fit the models). Entries live beside the datasets, under
``<data.output>/search-cache/<key>/``, one per family: the fitted best pipeline as skops with a
fixed list of trusted types (no pickle is loaded), the rest as skops of plain values, and for the
families the served model bags (``model.bagging``) their k fold pipelines of the first fresh repeat.
Anything unreadable or untrusted is skipped with a warning, and the search runs.

A search that stops before its end (its driver killed, a lost machine) leaves its finished fits:
the churn engine hands each to :class:`FitCheckpoints` as it ends, which writes it to
``<key>/fits/<family>/<fit id>.skops`` (skops of plain values: the scores, out-of-fold scores and
times; the writer's MLflow run), atomically. A rerun with the same key restores them and fits only
the rest. They go when the whole search is saved (the entry replaces the folder): the entry holds
all they held, and a rerun that reuses it needs no fit at all.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio

from churn.config import JobSpec
from churn.modeling.search import FitKey, FitOutput, SearchResult
from churn.serving.trusted import TRUSTED_TYPES

log = logging.getLogger(__name__)

# what a searched pipeline holds beyond the served one: the training-only steps
CACHE_TRUSTED = (*TRUSTED_TYPES, "churn.modeling.resample.Resampler", "imblearn.pipeline.Pipeline")
LIBRARIES = ("scikit-learn", "imbalanced-learn", "numpy", "scipy", "pandas", "lightgbm", "catboost")
XGBOOST_DISTRIBUTIONS = ("xgboost", "xgboost-cpu")  # both install the xgboost module
_CODE_ROOT = Path(__file__).resolve().parents[1]


def code_fingerprint() -> str:
    """sha256 over churn's source files and the versions of the fitting libraries."""
    digest = hashlib.sha256()
    for path in sorted(_CODE_ROOT.rglob("*.py")):
        digest.update(str(path.relative_to(_CODE_ROOT)).encode())
        digest.update(path.read_bytes())
    for lib in LIBRARIES:
        digest.update(f"{lib}={importlib.metadata.version(lib)}".encode())
    for lib in XGBOOST_DISTRIBUTIONS:  # whichever is installed
        try:
            digest.update(f"{lib}={importlib.metadata.version(lib)}".encode())
        except importlib.metadata.PackageNotFoundError:
            pass
    return digest.hexdigest()


def search_key(job: JobSpec, dataset_key: str, rows: int) -> str:
    spec = {k: job.as_dict()[k] for k in ("schema", "split", "search", "model")}
    spec["search"] = {k: v for k, v in spec["search"].items() if k != "repeats"}  # rescoring resumes on reuse
    spec["model"] = {k: v for k, v in spec["model"].items() if k != "bagging"}  # bagging reuses the same search
    payload = {"dataset": dataset_key, "rows": rows, "seed": job.seed, **spec, "code": code_fingerprint()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _frame_columns(df: pd.DataFrame) -> dict[str, Any]:
    return {c: df[c].to_numpy() if pd.api.types.is_numeric_dtype(df[c]) else df[c].tolist() for c in df.columns}


class SearchCache:
    """The cached searches of one key."""

    def __init__(self, root: Path, key: str):
        self.folder = root / key
        self.key = key

    def load(self, families: list[str]) -> dict[str, SearchResult] | None:
        """Every family's result, or None when any is missing, unreadable or untrusted."""
        out = {}
        for fam in families:
            model, rest = self.folder / f"{fam}.model.skops", self.folder / f"{fam}.result.skops"
            if not (model.is_file() and rest.is_file()):
                return None
            try:
                untrusted = set(sio.get_untrusted_types(file=str(model))) - set(CACHE_TRUSTED)
                untrusted |= set(sio.get_untrusted_types(file=str(rest)))
                folds = self.folder / f"{fam}.folds.skops"
                if folds.is_file():
                    untrusted |= set(sio.get_untrusted_types(file=str(folds))) - set(TRUSTED_TYPES)
                if untrusted:
                    log.warning("search cache %s: untrusted types %s; searching again", self.folder,
                                ", ".join(sorted(untrusted)))
                    return None
                fields = sio.load(str(rest), trusted=[])
                fields["cv_results"] = pd.DataFrame(fields["cv_results"])
                fold_models = sio.load(str(folds), trusted=list(TRUSTED_TYPES)) if folds.is_file() else []
                out[fam] = SearchResult(best_estimator=sio.load(str(model), trusted=list(CACHE_TRUSTED)),
                                        fold_models=list(fold_models), **fields)
            except Exception as exc:  # noqa: BLE001 - a damaged entry costs a search, not the job
                log.warning("search cache %s: cannot read %s (%s); searching again", self.folder, fam, exc)
                return None
        return out

    def save(self, results: dict[str, SearchResult]) -> None:
        """Write every family's result; the folder appears whole or not at all."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.key}-", dir=self.folder.parent))
        try:
            for fam, res in results.items():
                sio.dump(res.best_estimator, str(staging / f"{fam}.model.skops"))
                if _fitted(res.fold_models):
                    sio.dump(list(res.fold_models), str(staging / f"{fam}.folds.skops"))
                fields = {k: v for k, v in vars(res).items() if k not in ("best_estimator", "fold_models")}
                fields["cv_results"] = _frame_columns(res.cv_results)
                if fields["oof_proba"] is not None:
                    fields["oof_proba"] = np.asarray(fields["oof_proba"])
                sio.dump(fields, str(staging / f"{fam}.result.skops"))
            shutil.rmtree(self.folder, ignore_errors=True)
            os.rename(staging, self.folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def save_fold_models(self, results: dict[str, SearchResult], families: list[str]) -> None:
        """Add ``families``' fitted fold models to the saved entry (each file appears whole or not at
        all); nothing when the entry is not there."""
        if not self.folder.is_dir():
            return
        for fam in families:
            models = results[fam].fold_models
            if not _fitted(models):
                continue
            fd, tmp = tempfile.mkstemp(prefix=f".{fam}-", suffix=".skops", dir=self.folder)
            os.close(fd)
            try:
                sio.dump(list(models), tmp)
                os.replace(tmp, self.folder / f"{fam}.folds.skops")
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise


class FitCheckpoints:
    """Each finished fit of the search of one key, kept as it ends (see the module docstring);
    implements :class:`churn.modeling.search.FitCheckpoints`. ``run_id``: the MLflow run whose
    driver writes them; ``resume`` false (``search.reuse: false``): they are written, never restored;
    ``restored_from``: the runs whose fits :meth:`restore` gave back."""

    def __init__(self, root: Path, key: str, run_id: str = "", resume: bool = True):
        self.folder = root / key / "fits"
        self.run_id = run_id
        self.resume = resume
        self.restored_from: set[str] = set()

    @staticmethod
    def fit_id(fit: FitKey) -> str:
        """The fit's file name: a hash of its fit group (the prefix's and the model's parameters, as
        the plan writes them) and its split, the same in every process."""
        return hashlib.sha256(repr(fit).encode()).hexdigest()[:24]

    def path(self, family: str, fit: FitKey) -> Path:
        return self.folder / family / f"{self.fit_id(fit)}.skops"

    def save(self, family: str, fit: FitKey, output: FitOutput) -> None:
        """Write one fit (the file appears whole or not at all)."""
        folder = self.folder / family
        folder.mkdir(parents=True, exist_ok=True)
        payload = {"fit": repr(fit), "run": self.run_id,
                   "results": [{"size": size, **values} for size, values in output.items()]}
        fd, tmp = tempfile.mkstemp(prefix=".fit-", suffix=".skops", dir=folder)
        os.close(fd)
        try:
            sio.dump(payload, tmp)
            os.replace(tmp, self.path(family, fit))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def restore(self, family: str, fits: list[FitKey]) -> dict[FitKey, FitOutput]:
        """The fits of ``fits`` kept before; one that is unreadable, untrusted or of another fit is
        left out with a warning (it is fitted again)."""
        out: dict[FitKey, FitOutput] = {}
        for fit in fits if self.resume else []:
            path = self.path(family, fit)
            if not path.is_file():
                continue
            try:
                untrusted = sio.get_untrusted_types(file=str(path))
                if untrusted:
                    raise ValueError(f"untrusted types {', '.join(sorted(untrusted))}")
                payload = sio.load(str(path), trusted=[])
                if payload["fit"] != repr(fit):
                    raise ValueError("it holds another fit")
                out[fit] = {r.pop("size"): r for r in payload["results"]}
                self.restored_from.add(payload["run"])
            except Exception as exc:  # noqa: BLE001 - a damaged checkpoint costs one fit, not the job
                log.warning("search checkpoint %s: cannot use it (%s); fitting it again", path, exc)
        return out

    def count(self) -> int:
        """Checkpoints kept now, of every family."""
        return sum(1 for p in self.folder.glob("*/*.skops") if not p.name.startswith("."))


def _fitted(models: list[Any]) -> bool:
    """Fold models that are fitted pipelines here (not futures on the workers, not absent)."""
    return bool(models) and all(hasattr(m, "predict") for m in models)
