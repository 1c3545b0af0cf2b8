"""Training: the accelerate training loops, their torch datasets and objectives (data comes from ``data``)."""
