"""gRPC: servicer, status mapping, health, reflection. Knows nothing of Triton."""
