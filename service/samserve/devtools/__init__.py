"""Developer tooling: local redis-server / tritonserver processes, a gateway on a background
thread, sample images, the load generator and its reports (the tests and benchmarks use them)."""
