"""Synthetic chest CT phantoms with findings, reports, questions and CT-RATE labels (for the demo model)."""
