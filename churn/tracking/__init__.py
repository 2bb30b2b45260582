"""Tracking: the MLflow store, the layout of a train run, the registry, and the plots."""
