"""The compiler passes, one per file, in pipeline order (``lpuc/pipeline.py``): import_onnx,
fold_constants, lower, heads, install, tile, mirror, allocate, schedule, codegen."""
