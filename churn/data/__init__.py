"""Data: CSV blocks, row validation, ingest, split and sampling, generated data, schema inference.

Imports only :mod:`churn.config`; nothing here knows about models.
"""
