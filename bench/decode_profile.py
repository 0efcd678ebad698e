"""Where a decode step's cycles go beyond its roofline: GPT-2 small width (``bench/models.py``'s
``gpt2_kv``: 12 layers, d=768, a 1024-word vocabulary, 128 positions, fp16, one lpu-v1), decode step
program (``KVStep(128, 1)``).

    python bench/decode_profile.py [--positions 128] [--layers 12]

Prints the predicted cycles, the decode roofline (``lpuc.roofline.decode_roofline``) and two
measures of the gap:

* ``waves``: per product by constant weights, the install cycles of its chains beyond what the planes
  can install ahead (each plane: one chain's first ``weight_buffers`` passes) spread over the planes,
  less its longest chain's own (which the critical path already counts), summed over the products:
  how much a schedule must add to the critical path when a product has more chains than planes;
* ``waits``: along the schedule's longest path (from the last task back, each task to the dependency
  that made it ready last), the cycles tasks start after their inputs are ready, by task kind and node.

What stands between the step (37,356) and 1.3x its roofline (33,838), measured 2026-12-08: the planes can
install only ``weight_buffers`` passes of a product before its input exists (2 x 4 planes), so every
product's other installs come after it, at g = 5 rows a cycle a plane (``install.install_groups``); summed
over the step that is the ``waves`` figure (7,221), and critical path + waves is 1.28x. The rest (~4,100)
is lost to rigid chain templates meeting busy MEM ports (an activation read by every chain of a product,
install classes in use) and streams. Tried and dropped:

* g = 8 (16 of 32 streams a plane): 2 layers 7,005 -> 6,847 cycles, but at 12 layers the pieces no longer
  fit their install classes (16 slices each, two a hemisphere) and the compile falls back to plain installs
  (99,014);
* install classes as windows sliding round the hemisphere's weight slices (every slice in two classes, so
  all fill evenly): 2 layers 7,300 at g = 5, 7,464 at g = 8 -- classes then reach the slices beside the
  VXM, far from the planes, and the critical path grows (4,755 -> 5,274);
* 1, 3 or 4 slices kept for activations instead of 2: 37,065 (-0.8%), 47,123, 48,162 (capacity fallbacks).

A shorter critical path (e.g. each LayerNorm: 12 VXM tasks in a row, ~200 cycles) makes tokens faster
but the ratio worse, since the roofline is that path.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--positions", type=int, default=128)
    ap.add_argument("--layers", type=int, default=12)
    a = ap.parse_args()
    from models import Spec, build

    from isa.config import load_chip
    from lpuc.generate_kv import declared_inputs
    from lpuc.kinds.matmul import install_rows, weights
    from lpuc.passes.kv_cache import KVStep, step_shapes
    from lpuc.pipeline import compile_model
    from lpuc.roofline import decode_roofline

    path = build(Spec("gpt2_kv", a.layers, 768, 12, 3072, 1024, a.positions))
    step = KVStep(a.positions, 1, False)
    chip = load_chip("lpu-v1")
    c = compile_model(path, chip, "fp16", input_shapes=step_shapes(declared_inputs(path), step), kv=step)
    bound = decode_roofline(c)
    print(f"decode step: {c.cycles:,} cycles; roofline {bound['cycles']:,} ({bound['bound_by']}; install "
          f"{bound['install']:,}, critical path {bound['critical_path']:,}): {c.cycles / bound['cycles']:.2f}x")

    planes, B = len(chip.slices_of("MXM")), chip.weight_buffers
    per: dict[str, list[list[int]]] = collections.defaultdict(list)
    for t in c.tasks.tasks:
        if t.kind == "chain" and all(x.tensor.const is not None for s in t.attrs["steps"] for x in weights(s)):
            per[t.node].append([-(-install_rows(s) // len(weights(s))) for s in t.attrs["steps"]])
    waves = 0.0
    for chains in per.values():
        ahead = sum(sorted((sum(ch[:B]) for ch in chains), reverse=True)[:planes])
        longest = max(chains, key=sum)
        waves += max(0.0, (sum(map(sum, chains)) - ahead) / planes - (sum(longest) - sum(longest[:B])))
    print(f"waves: {waves:,.0f} cycles over {len(per)} products by constant weights "
          f"(critical path + waves = {bound['critical_path'] + waves:,.0f}, "
          f"{(bound['critical_path'] + waves) / bound['cycles']:.2f}x)")

    sc, tasks = c.sched, c.tasks.tasks
    var = {t.id: next(i for i, v in enumerate(sc.variants[t.id]) if v is sc.templates[t.id]) for t in tasks}
    end = {t.id: sc.placements[t.id].start + sc.templates[t.id].end for t in tasks}
    cur: int | None = max(end, key=end.get)
    waits: collections.Counter = collections.Counter()
    while cur is not None:
        ready, arg = -sc.templates[cur].begin, None
        for dep, delta in sc.deps.get(cur, []):
            r = sc.placements[dep].start + delta[var[dep]][var[cur]]
            if r > ready:
                ready, arg = r, dep
        t = tasks[cur]
        waits[(t.kind, t.node.split("_")[1] if t.node.startswith("node_") else t.node.split("/")[-1])] += \
            sc.placements[cur].start - ready
        cur = arg
    print(f"waits on the longest path: {sum(waits.values()):,} cycles")
    for (kind, what), n in waits.most_common(8):
        if n:
            print(f"  {n:7,}  {kind} ({what})")


if __name__ == "__main__":
    main()
