"""Turn a SAM checkpoint into a servable Triton model repository (export, verify, write)."""
