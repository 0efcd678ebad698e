"""lpuc: a deterministic dataflow compiler for a virtual LPU (see README.md)."""

__version__ = "0.1.0"
