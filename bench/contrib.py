"""onnxruntime's transformer optimizer on fresh exports, then lpuc: the fused-graph table.

For BERT, GPT-2 and Llama (transformers' config classes, random weights, nothing downloaded) and
both torch exporters (TorchScript ``dynamo=False``, ``dynamo=True``), export, fuse with
``onnxruntime.transformers.optimizer.optimize_model`` (its default opt_level for the model type),
count the contrib ops it produced, and verify the fused graph with lpuc (outputs vs onnxruntime's
kernels, bit-exact vs the compiler's reference, predicted == emulated cycles). The committed
fused models of ``examples/models/contrib`` (``examples/export_contrib.py``) get a row each too.
Writes ``bench/contrib.md``.

    PYTHONPATH=. python bench/contrib.py [--size tiny|base] [--only bert,gpt2,llama] [--chip lpu-v1]
                                         [--precision fp32] [--chips 1|N|auto] [--parallel pp]
                                         [--out bench/contrib.md]

Needs torch, transformers and sympy (the optimizer's symbolic shape inference) besides lpuc's own
dependencies. ``--size base``: BERT-base (768 wide, 12 layers, vocabulary 30522, 128 tokens),
GPT-2 small (vocabulary 50257) and a 12-layer Llama of the same width; use ``--chips 2`` there.
"""

from __future__ import annotations

import argparse
import collections
import io
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {  # hidden, layers, heads, kv heads (llama), intermediate, vocabulary, positions, sequence
    "tiny": (64, 2, 4, 2, 128, 128, 64, 16),
    "base": (768, 12, 12, 12, 3072, 30522, 512, 128),
}
EXPORTERS = ("torchscript", "dynamo")


def _specs(size: str) -> dict[str, tuple]:
    import transformers as tf

    H, L, NH, KV, I, V, P, _ = SIZES[size]
    return {
        "bert": (tf.BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=NH,
                               intermediate_size=I, max_position_embeddings=P), tf.BertModel,
                 ["input_ids", "attention_mask", "token_type_ids"], "last_hidden_state", "bert"),
        "gpt2": (tf.GPT2Config(vocab_size=V if size == "tiny" else 50257, n_positions=P if size == "tiny" else 1024,
                               n_embd=H, n_layer=L, n_head=NH), tf.GPT2LMHeadModel, ["input_ids", "attention_mask"],
                 "logits", "gpt2"),
        "llama": (tf.LlamaConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=NH,
                                 num_key_value_heads=KV, intermediate_size=I, max_position_embeddings=P),
                  tf.LlamaForCausalLM, ["input_ids", "attention_mask"], "logits", "gpt2"),
    }


def _export(family: str, exporter: str, size: str, work: Path) -> tuple[Path, list[str]]:
    """Export ``family`` with ``exporter`` (static shapes: batch 1, the size's sequence); returns the
    file and its input names."""
    import torch

    cfg, cls, names, out, _ = _specs(size)[family]
    seq = SIZES[size][7]
    torch.manual_seed(0)
    model = cls(cfg).eval()

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return getattr(self.model(**dict(zip(names, args)), use_cache=False, return_dict=True), out)

    ids = torch.randint(3, min(cfg.vocab_size, 1000), (1, seq))
    args = tuple(ids if n == "input_ids" else torch.ones(1, seq, dtype=torch.long) if n == "attention_mask"
                 else torch.zeros(1, seq, dtype=torch.long) for n in names)
    path = work / f"{family}_{size}_{exporter}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            prog = torch.onnx.export(Wrapper(), args, dynamo=True, opset_version=18, input_names=names,
                                     output_names=[out], optimize=True, verbose=False)
            prog.save(str(path), external_data=size != "tiny")
        else:
            torch.onnx.export(Wrapper(), args, str(path), dynamo=False, opset_version=17, input_names=names,
                              output_names=[out], do_constant_folding=True)
    return path, names


def _fuse(path: Path, model_type: str, size: str) -> tuple[Path, dict[str, int]]:
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    H, _, NH = SIZES[size][:3]
    fused = optimize_model(str(path), model_type=model_type, num_heads=NH, hidden_size=H)
    out = path.with_name(path.stem + "_fused.onnx")
    fused.save_model_to_file(str(out), use_external_data_format=size != "tiny")
    m = onnx.load(str(out), load_external_data=False)
    ops = collections.Counter(n.op_type for n in m.graph.node
                              if n.domain == "com.microsoft" or n.op_type == "SimplifiedLayerNormalization")
    return out, dict(sorted(ops.items()))


def _verify(path: Path, chip: str, precision: str, chips: str, shapes: dict | None = None, parallel: str = "pp") -> dict:
    import lpuc

    t0 = time.perf_counter()
    kw = {} if chips == "1" else {"chips": chips if chips == "auto" else int(chips), "parallel": parallel}
    v = lpuc.verify(str(path), chip=chip, precision=precision, input_shapes=shapes, seed=0, **kw)
    r = v.report
    worst = max(o["worst_tol_ratio"] for o in r["outputs"].values())
    err = max(o["max_abs_err"] for o in r["outputs"].values())
    return {"ok": v.ok, "cycles": r["emulated_cycles"], "err": err, "worst": worst, "chips": r.get("chips", 1),
            "seconds": time.perf_counter() - t0}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160] if text else ''}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--only", default="bert,gpt2,llama")
    ap.add_argument("--chip", default="lpu-v1")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--chips", default="1")
    ap.add_argument("--parallel", default="pp", help="the split on several chips (lpuc --parallel)")
    ap.add_argument("--work", default="/tmp/lpuc-contrib-bench")
    ap.add_argument("--out", default=str(ROOT / "bench" / "contrib.md"))
    args = ap.parse_args(argv)
    import logging

    import onnxruntime
    import torch
    import transformers

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for family in args.only.split(","):
        model_type = _specs(args.size)[family][4]
        for exporter in EXPORTERS:
            row = {"model": f"{family} ({args.size})", "exporter": exporter, "ops": "", "result": ""}
            try:
                path, _ = _export(family, exporter, args.size, work)
            except Exception as e:  # the exporter's own failure, reported as such
                row["result"] = f"export failed: {_first_line(e)}"
                rows.append(row)
                continue
            try:
                fused, ops = _fuse(path, model_type, args.size)
                row["ops"] = ", ".join(f"{k} x{v}" for k, v in ops.items()) or "(none)"
            except Exception as e:
                row["result"] = f"optimizer failed: {_first_line(e)}"
                rows.append(row)
                continue
            try:
                row.update(_verify(fused, args.chip, args.precision, args.chips, None, args.parallel))
            except Exception as e:
                row["result"] = f"lpuc: {_first_line(e)}"
            rows.append(row)
            print(row, flush=True)
    if args.size == "tiny":
        import json

        manifest = json.loads((ROOT / "examples/models/contrib/manifest.json").read_text())
        committed = {  # file: (input shapes, how it was made)
            "bert_fused": ({"input_ids": (1, 16), "attention_mask": (1, 16)}, "torchscript, classic module"),
            "gpt2_fused": ({"input_ids": (1, 16)}, "torchscript, classic module"),
            "gpt2_past_fused": ({"input_ids": (1, 16), "past_0": (2, 1, 2, 8, 16), "past_1": (2, 1, 2, 8, 16)},
                                "torchscript, classic module"),
            "llama_fused": ({}, "dynamo (llama_tiny.onnx), opt_level 2"),
            "bert_hf_fused": ({}, "torchscript (zoo's HF BERT)"),
        }
        for name, (shape, how) in committed.items():
            ops = manifest[f"{name}.onnx"]["ops"]
            row = {"model": f"examples/models/contrib/{name}.onnx", "exporter": how,
                   "ops": ", ".join(f"{k} x{v}" for k, v in ops.items()), "result": ""}
            try:
                row.update(_verify(ROOT / "examples/models/contrib" / f"{name}.onnx", args.chip, args.precision, "1",
                                   shape))
            except Exception as e:
                row["result"] = f"lpuc: {_first_line(e)}"
            rows.append(row)
            print(row, flush=True)
    lines = [f"# onnxruntime's optimizer output through lpuc ({args.size}, {args.chip}, {args.precision}"
             f"{'' if args.chips == '1' else f', {args.chips} chips, {args.parallel}'})", "",
             f"`PYTHONPATH=. python bench/contrib.py --size {args.size} --chip {args.chip} --precision {args.precision}"
             f"{'' if args.chips == '1' else f' --chips {args.chips} --parallel {args.parallel}'}` (torch {torch.__version__}, transformers "
             f"{transformers.__version__}, onnxruntime {onnxruntime.__version__}). Fresh exports: random weights, "
             f"batch 1, sequence {SIZES[args.size][7]}, default attention; the optimizer at its default level for "
             "the model type (`model_type='bert'` for BERT, `'gpt2'` for GPT-2 and Llama). `max err` is against "
             "onnxruntime running the fused graph; `worst` the share of the tolerance the worst element uses.", "",
             "| model | exporter | contrib ops the optimizer produced | lpuc verify | max err | worst | cycles |",
             "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        verdict = r["result"] or ("VERIFIED" if r.get("ok") else "FAILED")
        if r.get("chips", 1) != 1:
            verdict += f" ({r['chips']} chips)"
        num = (f"{r['err']:.1e} | {r['worst']:.3f} | {r['cycles']:,}" if "cycles" in r else " | | ")
        lines.append(f"| {r['model']} | {r['exporter']} | {r['ops']} | {verdict} | {num} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
