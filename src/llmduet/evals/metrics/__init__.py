"""Metrics that score a model's output."""
