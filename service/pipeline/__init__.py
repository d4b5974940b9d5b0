"""SAM's pre- and post-processing in numpy: no I/O, no gRPC, no Triton, no PyTorch."""
