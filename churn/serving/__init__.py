"""Serving: the registered model's load-and-predict code.

It runs where a model is served, so it imports neither dask nor pydantic, and nothing else
from churn: skops with a trusted-type list fixed in code, pandas, numpy and MLflow's pyfunc.
"""
