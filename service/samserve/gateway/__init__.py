"""The gateway: transport (gRPC), the composition that wires it (app.py), the engine that
orchestrates each RPC, the embedding store (cache and single-flight) and the backends
(Triton client, Redis)."""
