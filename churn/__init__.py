"""churn: customer-churn model training that scales out on Dask.

Subpackages, one per stage; imports run one way (``cli → jobs → tracking → modeling →
data / clusters / serving → config``):

* ``config`` — typed job and cluster specs, family names and grid rules, library settings;
* ``data`` — blocks, validation, ingest, split and sampling, generated data, schema inference;
* ``clusters`` — getting a Dask client, one module per kind of cluster;
* ``serving`` — the registered model's load-and-predict code (imports neither dask nor pydantic);
* ``modeling`` — pipeline, feature steps, search, evaluation, preflight checks;
* ``tracking`` — MLflow store, run layout, registry, plots;
* ``jobs`` — the train and ingest jobs (wiring only);
* ``cli`` — the ``churn`` command.

Importing ``churn`` does nothing else: no config refresh, no heavy imports.
"""

__version__ = "0.2.0"
