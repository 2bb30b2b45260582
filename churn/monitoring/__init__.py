"""Drift and performance monitoring: mergeable data profiles, drift statistics, the HTML report."""
