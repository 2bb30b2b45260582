"""`churn schema infer`: a starting schema that a job spec accepts as it is."""

from __future__ import annotations

import yaml

from churn.config import JobSpec, load_job
from churn.data.schema_infer import infer_columns, schema_yaml
from churn.jobs.train import run
from tests.conftest import MLC, ROOT, TELCO


def test_infers_telco_roles_and_types():
    """Id, label, integer, float (with blanks) and categorical columns are told apart."""
    kinds = {g.name: g.kind for g in infer_columns(str(TELCO))}
    assert kinds["customerID"] == "id"
    assert kinds["Churn"] == "label"
    assert kinds["tenure"] == "integer"
    assert kinds["TotalCharges"] == "float"
    assert kinds["Contract"] == "categorical"


def test_inferred_block_validates_as_a_job_schema():
    """The printed YAML loads into a JobSpec for both bundled tables."""
    for path, label, ident in [(TELCO, "Churn", "customerID"), (MLC, "churn", None)]:
        block = yaml.safe_load(schema_yaml(infer_columns(str(path))))
        job = JobSpec.model_validate({"data": {"source": str(path)}, **block})
        assert job.table.label == label
        assert job.table.id == ident
        assert job.table.positive.lower() == "yes"
    telco = yaml.safe_load(schema_yaml(infer_columns(str(TELCO))))["schema"]
    assert telco["numeric"]["TotalCharges"] == {"min": 0, "nullable": True}
    assert telco["categorical"]["Partner"] == ["No", "Yes"]


def test_inferred_schema_trains_a_table_with_blank_categories_without_quarantine(client, tmp_path, telco_subset):
    """Blanks in a categorical column (and a numeric one) come out nullable, non-negative numbers get
    ``min: 0``: the inferred block trains on the same file with no row quarantined."""
    lines = telco_subset.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    at = header.index("PaymentMethod")
    rows = []
    for i, line in enumerate(lines[1:]):
        cells = line.rstrip("\n").split(",")
        if i % 40 == 0 and len(cells) == len(header):
            cells[at] = ""
        rows.append(",".join(cells) + "\n")
    table = tmp_path / "blanks.csv"
    table.write_text(lines[0] + "".join(rows))
    block = yaml.safe_load(schema_yaml(infer_columns(str(table))))["schema"]
    assert block["categorical"]["PaymentMethod"]["nullable"] is True
    assert len(block["categorical"]["PaymentMethod"]["values"]) == 4
    assert block["numeric"]["tenure"] == {"integer": True, "min": 0}
    spec = yaml.safe_load((ROOT / "jobs" / "train.yaml").read_text())
    spec["schema"] = block
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    job = load_job(spec_file, [f"data.source={table}", f"data.output={tmp_path / 'ds'}",
                               f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "search.cv=2", "search.repeats=1",
                               "model.families=[logistic_regression]", "model.grids={logistic_regression: {C: [1.0]}}",
                               "model.feature_sums=false", "evaluation.plots=false", "model.finalize=false"])
    result = run(job, client)
    assert result.dataset.manifest.rows_quarantined == 0
    assert result.dataset.manifest.rows_kept == len(rows)
