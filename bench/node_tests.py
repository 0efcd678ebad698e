"""onnx's backend node tests for the transformer op set, counted: total, pass, excluded (by the reason
``tests/test_onnx_backend.py`` gives) and fail. Every case runs, excluded ones too, so that an
exclusion is seen to be refused cleanly (a one-line error, no wrong result, no crash). Writes
``bench/node_tests.md``.

    python bench/node_tests.py [--out bench/node_tests.md] [--only NAME_SUBSTRING]

A case belongs to the op set when its model is one node of one of ``OPS`` (the ``_expanded`` cases,
which spell an op as a function of others, do not); Cast's cases are counted apart. Each case goes
through ``lpuc.backend`` (lpu-v1, fp32) and onnx's own comparison (``Runner.assert_similar_outputs``:
shape, dtype, and the case's rtol and atol), as ``tests/test_onnx_backend.py`` runs it.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

OPS = ("MatMul Gemm Add Sub Mul Div Pow Sqrt Reciprocal Neg Exp Tanh Erf Sigmoid Relu Gelu Softmax "
       "LayerNormalization RMSNormalization ReduceMean ReduceSum ReduceMax Transpose Reshape Flatten Squeeze "
       "Unsqueeze Split Concat Slice Gather GatherElements Expand Where Equal IsNaN And Cast Constant "
       "ConstantOfShape Range Trilu Pad").split()


def cases() -> list[tuple[str, str, object]]:
    """(op, case name without ``test_``, onnx's test case) of every node test of the op set."""
    from onnx.backend.test.loader import load_model_tests

    out = []
    for c in load_model_tests(kind="node"):
        nodes = c.model.graph.node if c.model is not None else []
        if len(nodes) == 1 and nodes[0].op_type in OPS:
            out.append((nodes[0].op_type, c.name[5:], c))
    return sorted(out, key=lambda x: (x[0], x[1]))


def _array(x: object) -> object:
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(x) if isinstance(x, TensorProto) else x


def run_case(case: object) -> tuple[str, str]:
    """("pass" | "refused" | "wrong" | "crash", detail) of one case."""
    from onnx.backend.test.runner import Runner

    import lpuc.backend
    from emulator import HazardError, InputError
    from isa.program import ProgramError
    from lpuc.errors import CompileError

    try:
        rep = lpuc.backend.prepare(case.model, chip="lpu-v1", precision="fp32")
        for ins, want in case.data_sets:
            got = rep.run([_array(x) for x in ins])
            try:
                Runner.assert_similar_outputs([_array(x) for x in want], list(got), rtol=case.rtol, atol=case.atol)
            except AssertionError as e:
                return "wrong", " ".join(str(e).split())[:200]
    except (CompileError, ProgramError, InputError, HazardError) as e:
        return "refused", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    except Exception as e:  # noqa: BLE001 - anything else is a crash, reported as such
        return "crash", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return "pass", ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "node_tests.md"))
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import test_onnx_backend as T  # the exclusions and their reasons

    reason_of = {n: r for r, names in T.EXCLUDED.items() for n in names}

    def excluded(name: str) -> str | None:
        if name in reason_of:
            return reason_of[name]
        for r, pat in T.EXCLUDED_PATTERNS.items():
            if re.match(rf"^{pat}$", name):
                return r
        return None

    rows = []
    t0 = time.perf_counter()
    for op, name, case in cases():
        if args.only and args.only not in name:
            continue
        result, detail = run_case(case)
        rows.append((op, name, result, detail, excluded(name)))
        print(f"{op:<20} {name:<55} {result:<8} {detail[:100]}", flush=True)
    seconds = time.perf_counter() - t0
    text = ["# onnx node tests of the transformer op set", "",
            f"`python bench/node_tests.py` ({seconds:.0f} s): every node test whose model is one node of "
            f"{', '.join(OPS)}, through `lpuc.backend` (lpu-v1, fp32) and onnx's comparison. Excluded cases run too: "
            "each must be refused with a one-line error.", ""]
    for part, keep in (("non-Cast cases", lambda op: op != "Cast"), ("Cast cases", lambda op: op == "Cast")):
        sel = [r for r in rows if keep(r[0])]
        if not sel:
            continue
        n_pass = sum(1 for r in sel if r[2] == "pass" and r[4] is None)
        ex = [r for r in sel if r[4] is not None]
        fail = [r for r in sel if r[4] is None and r[2] != "pass"]
        loose = [r for r in ex if r[2] in ("wrong", "crash")]  # an exclusion must be refused cleanly
        stale = [r for r in ex if r[2] == "pass"]
        text += [f"## {part}", "", f"- total {len(sel)}, pass {n_pass}, excluded {len(ex)}, fail {len(fail)}"
                 + (f"; excluded but not refused cleanly {len(loose)}" if loose else "")
                 + (f"; excluded but passing {len(stale)}" if stale else ""), ""]
        by_reason: dict[str, list[str]] = defaultdict(list)
        for r in ex:
            by_reason[r[4]].append(r[1])
        for reason, names in by_reason.items():
            text.append(f"- excluded, {reason} ({len(names)}): {', '.join(names)}")
        for r in fail + loose + stale:
            text.append(f"- {r[2]}: {r[1]} ({r[0]}) {r[3]}")
        text.append("")
        counts = Counter(r[0] for r in sel)
        text.append("Cases per op: " + ", ".join(f"{op} {n}" for op, n in sorted(counts.items())))
        text.append("")
    Path(args.out).write_text("\n".join(text))
    print("\n".join(text))
    bad = [r for r in rows if (r[4] is None and r[2] != "pass") or (r[4] is not None and r[2] in ("wrong", "crash"))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
