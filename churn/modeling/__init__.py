"""Modeling: the pipeline and its feature steps, the grid search, evaluation and the preflight.

:mod:`churn.modeling.features` and :mod:`churn.modeling.trees` are loaded where a model is
served, so they import only numpy, pandas and scikit-learn.
"""
