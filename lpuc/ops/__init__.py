"""Per-op lowering functions (``onnx_ops.py``: one function per ONNX op, named after it)."""
