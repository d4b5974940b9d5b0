"""I/O to Triton and Redis: thin, swappable, no SAM logic."""
