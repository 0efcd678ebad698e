"""One lowering function per ONNX op, named after the op, in ``OPS`` (op type -> function).

Each function reads its node's inputs through the lowering context ``lw`` (``lpuc.passes.lower``),
emits chip primitives and binds its outputs. The functions live by kind: ``elementwise``,
``reduce``, ``linalg`` (MXM products) and ``movement``; ``common`` holds the table and the helpers
they share. Importing this module fills the table.
"""

from lpuc.ops import elementwise, linalg, movement, quant, reduce  # noqa: F401  (each registers its ops)
from lpuc.ops.common import OPS

__all__ = ["OPS"]
