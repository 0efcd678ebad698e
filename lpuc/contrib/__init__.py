"""onnxruntime's fused ops (``com.microsoft``) rewritten into standard ONNX ops: one function per op,
named after it, in ``CONTRIB`` (``rewrite.py`` has the table and the context the functions share;
the functions live by kind in ``activation``, ``norm`` and ``attention``). The import step runs
them (``lpuc.passes.contrib``) before onnx's checker and shape inference, which do not know the
domain.
"""

from lpuc.contrib import activation, attention, norm  # noqa: F401  (each registers its ops)
from lpuc.contrib.rewrite import CONTRIB

__all__ = ["CONTRIB"]
