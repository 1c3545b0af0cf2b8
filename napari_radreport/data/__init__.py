"""The data floor under training and evaluation: manifests, a record's study, label scores, report regions,
phantoms and dataset adapters; no torch, no Qt."""
