"""Evaluation: scoring what a model writes against the truth (presets per task and dataset)."""
