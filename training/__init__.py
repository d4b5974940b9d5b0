"""Training a small SAM on synthetic shapes (the embedded default model)."""
