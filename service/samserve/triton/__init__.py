"""What the python-backend models in model_repository/ share: model-config parsing, ONNX
Runtime sessions, per-request responses, BLS calls, decoder batching and the AMG generator.
Runs inside Triton; imports samserve.core and samserve.contract, never the gateway."""
