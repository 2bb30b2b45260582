"""The plan of the exact, work-sharing grid search: which fits cover which candidates."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import ParameterGrid
from sklearn.tree import DecisionTreeClassifier

PrefixKey = tuple[tuple[str, str], ...]
GroupKey = tuple[PrefixKey, tuple[tuple[str, str], ...]]


@dataclass
class FitGroup:
    """One model fit per fold that scores one or more candidates.

    ``prefix`` sets the steps before the model (one fold preparation per distinct prefix);
    ``params`` set the model; a random forest is fitted once with ``max(sizes)`` trees and
    its first *k* trees score the candidate with ``n_estimators=k``.
    """

    prefix_key: PrefixKey
    prefix: dict[str, Any]
    params: dict[str, Any]
    members: dict[int | None, list[int]] = field(default_factory=lambda: defaultdict(list))  # size -> candidates
    sizes: list[int] | None = None  # forest sizes to score; None for other models

    @property
    def apportioned(self) -> bool:
        """Fit times of this group's candidates are shares of one shared forest's fit time."""
        return self.sizes is not None and len(self.sizes) > 1


@dataclass
class SearchPlan:
    """Candidates in ``ParameterGrid`` order and the fit groups that cover them."""

    candidates: list[dict[str, Any]]
    groups: dict[GroupKey, FitGroup]

    @property
    def prefixes(self) -> dict[PrefixKey, dict[str, Any]]:
        """Distinct settings of the steps before the model: one fold preparation each."""
        return {g.prefix_key: g.prefix for g in self.groups.values()}

    def apportioned(self) -> list[bool]:
        """Per candidate: is its fit time apportioned from a shared forest?"""
        out = [False] * len(self.candidates)
        for g in self.groups.values():
            for members in g.members.values():
                for i in members:
                    out[i] = g.apportioned
        return out


def _canonical(model: Any, params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Model params with scikit-learn's own rewrites applied, as a hashable identity."""
    p = dict(params)
    if isinstance(model, (RandomForestClassifier, DecisionTreeClassifier)):
        full = {**model.get_params(), **p}
        mss, msl = full.get("min_samples_split"), full.get("min_samples_leaf")
        if isinstance(mss, int) and isinstance(msl, int) and not isinstance(mss, bool):
            p["min_samples_split"] = max(mss, 2 * msl)
    return tuple(sorted((k, repr(v)) for k, v in p.items()))


def plan(pipeline: ImbPipeline, grid: dict[str, list[Any]]) -> SearchPlan:
    """Group the grid's candidates into the fits that cover them (see :class:`FitGroup`)."""
    model = pipeline.steps[-1][1]
    candidates = list(ParameterGrid(grid))
    forest = isinstance(model, RandomForestClassifier)
    groups: dict[GroupKey, FitGroup] = {}
    for i, cand in enumerate(candidates):
        prefix = {k: v for k, v in cand.items() if not k.startswith("model__")}
        prefix_key = tuple(sorted((k, repr(v)) for k, v in prefix.items()))
        mparams = {k.removeprefix("model__"): v for k, v in cand.items() if k.startswith("model__")}
        size = int(mparams.pop("n_estimators", model.n_estimators)) if forest else None
        key = (prefix_key, _canonical(model, mparams))
        group = groups.setdefault(key, FitGroup(prefix_key, prefix, mparams))
        group.members[size].append(i)
    for g in groups.values():
        g.sizes = sorted(g.members) if forest else None  # type: ignore[type-var]
    return SearchPlan(candidates, groups)
