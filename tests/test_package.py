"""Package-wide promises: imports run one way, settings live in churn.yaml, importing is inert."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from churn.config.settings import defaults
from tests.conftest import ROOT

PACKAGE = ROOT / "churn"
# cli → jobs → tracking → modeling → data / clusters / serving → config
LAYER = {"config": 0, "data": 1, "clusters": 1, "serving": 1, "modeling": 2, "monitoring": 2, "tracking": 3, "jobs": 4,
         "cli": 5}


def _imports(path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return [m for m in out if m == "churn" or m.startswith("churn.")]


def test_every_module_lives_in_a_stage_subpackage():
    """Only churn/__init__.py sits at the top; everything else is in one of the stage folders."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py"]
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(LAYER)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path):
    """A module imports only its own subpackage or lower layers; same-layer neighbours stay apart."""
    own = path.relative_to(PACKAGE).parts[0]
    if own not in LAYER:  # churn/__init__.py
        assert _imports(path) == []
        return
    for module in _imports(path):
        parts = module.split(".")
        assert len(parts) > 1, f"{path}: imports the churn package itself"
        other = parts[1]
        assert other == own or LAYER[other] < LAYER[own], f"{path.relative_to(ROOT)} imports {module} (upward)"


def test_every_setting_read_in_code_is_in_churn_yaml():
    """Each setting("...") key names a value in churn.yaml, so no call site needs a fallback."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setting":
                assert len(node.args) == 1 and not node.keywords, f"{path}: setting() with a fallback"
                assert isinstance(node.args[0], ast.Constant), f"{path}: setting() with a computed key"
                found.add(node.args[0].value)
    assert found, "no setting() calls found: the scan is broken"
    tree = defaults()["churn"]
    for key in found:
        node = tree
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"churn.{key} is read in code but not in churn.yaml"
            node = node[part]


def _python(code: str, **env: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


@pytest.mark.cluster
def test_importing_churn_keeps_the_users_dask_config():
    """A user's dask.config.set and DASK_CHURN__ variables survive importing churn's settings."""
    out = _python("import dask.config\n"
                  "dask.config.set({'churn.ingest.blocksize': '1MiB'})\n"
                  "import churn, churn.config, churn.jobs.train\n"
                  "from churn.config import setting\n"
                  "print(setting('ingest.blocksize'), setting('cluster.connect-timeout'), "
                  "setting('ingest.dedup-buckets'))",
                  DASK_CHURN__CLUSTER__CONNECT_TIMEOUT="3s")
    assert out == "1MiB 3s 2"


@pytest.mark.cluster
def test_validating_a_job_imports_no_scikit_learn():
    """Loading and validating the shipped job spec leaves scikit-learn and imbalanced-learn unimported."""
    out = _python("import sys\n"
                  "from churn.config import load_job\n"
                  "load_job('jobs/train.yaml')\n"
                  "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'imblearn', 'mlflow'}))")
    assert out == "[]"
