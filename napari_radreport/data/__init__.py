"""The data floor: manifests, record studies, phantoms, dataset adapters and label scores; no torch, no Qt."""
