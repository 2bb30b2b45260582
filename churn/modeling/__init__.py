"""Modeling: the pipeline and its feature steps, the grid search, evaluation and the preflight.

:mod:`churn.modeling.features` is loaded where a model is served, so it imports only numpy,
pandas and scikit-learn.
"""
