"""Generated protobuf/gRPC stubs (scripts/gen_protos.py)."""
