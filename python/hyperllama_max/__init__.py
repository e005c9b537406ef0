"""HyperLlama's MAX sidecar: a small FastAPI service that loads GGUF models into Modular MAX
(through supervised ``max serve`` children) and streams their tokens to HyperLlama."""

__version__ = "0.1.0"
