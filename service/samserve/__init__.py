"""samserve: Segment Anything behind Triton, a gRPC gateway and a Redis embedding cache."""

__version__ = "0.1.0"
