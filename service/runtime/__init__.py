"""Running networks: the backends (embedded ONNX Runtime, Triton), the model registry, and the
runner that admits, batches and times a request's passes."""
