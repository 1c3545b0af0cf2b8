"""Training: manifests, dataset adapters, synthetic phantoms, and the accelerate training loops."""
