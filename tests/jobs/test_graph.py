"""The stage graph: the feature-sums screen, then one search node per family, as Mermaid text."""

from __future__ import annotations

import pytest

from churn.config import load_job
from churn.jobs.graph import to_mermaid, train_graph
from tests.conftest import ROOT

JOB = ROOT / "jobs" / "train.yaml"


def test_graph_of_the_default_job():
    """ingest → split → preflight → feature sums → seven searches → calibrate → evaluate → finalize → track
    → register."""
    g = train_graph(load_job(JOB))
    assert [len(rank) for rank in g.ranks] == [1, 1, 1, 1, 7, 1, 1, 1, 1, 1]
    assert g.ranks[0] == ["ingest"] and g.ranks[-1] == ["register"]
    assert g.nodes["feature_sums"] == ["feature sums", "sum_charges", "CV with and without"]
    assert ("split", "preflight") in g.edges and ("preflight", "feature_sums") in g.edges
    assert ("feature_sums", "search_svm") in g.edges and g.nodes["preflight"][0] == "preflight"
    assert ("search_svm", "calibrate") in g.edges
    assert ("evaluate", "finalize") in g.edges and ("ingest", "calibrate") not in g.edges
    text = to_mermaid(g)
    assert text.startswith("flowchart TD\n")
    assert text.count(" --> ") == len(g.edges) == 3 + 7 + 7 + 4


def test_graph_without_feature_sums():
    """model.feature_sums off (or a table whose names imply no sums): the preflight leads to the searches."""
    g = train_graph(load_job(JOB, ["model.feature_sums=false"]))
    assert "feature_sums" not in g.nodes and ("preflight", "search_svm") in g.edges


def test_graph_without_finalizing():
    """model.finalize off: no finalize stage, evaluate leads to track."""
    g = train_graph(load_job(JOB, ["model.finalize=false"]))
    assert "finalize" not in g.nodes and ("evaluate", "track") in g.edges


def test_graph_follows_the_spec():
    """Two families, another registered name: the graph says so."""
    g = train_graph(load_job(JOB, ["model.families=[random_forest, mlp]", "tracking.registered_model=x"]))
    assert g.ranks[4] == ["search_random_forest", "search_mlp"]
    assert "x@champion" in to_mermaid(g)


@pytest.mark.cluster
def test_churn_graph_prints_mermaid(forked_churn):
    """`churn graph JOB` prints the flowchart and exits 0; a bad --set exits 2."""
    proc = forked_churn.run("graph", str(JOB), timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == to_mermaid(train_graph(load_job(JOB)))
    bad = forked_churn.run("graph", str(JOB), "--set", "search.folds=3", timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "search.folds: unknown key" in bad.stderr
