"""`churn schema infer`: a starting schema that a job spec accepts as it is."""

from __future__ import annotations

import yaml

from churn.config import JobSpec
from churn.data.schema_infer import infer_columns, schema_yaml
from tests.conftest import MLC, TELCO


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
    assert telco["numeric"]["TotalCharges"] == {"nullable": True}
    assert telco["categorical"]["Partner"] == ["No", "Yes"]
