"""Speculative decoding on the demo pair: the acceptance a real teacher/draft pair reaches, and whether the output
stays the teacher's own.

    python bench/speculative_demo.py [--draft DIR] [--rows 200]   # -> bench/results/speculative-demo.json

The demo teacher (trained, fp32) decodes the demo eval rows greedily at batch 1, once plainly through llmdiet's
static decoder and once with the draft proposing (default: ``llmdiet-demo:student``, the demo student *before*
distillation; pass ``--draft`` with a distilled one, e.g. ``runs/distill-demo/final``). Recorded: the acceptance
rate, tokens per teacher forward, the number of outputs identical to the plain ones, and the same for the
teacher's dynamic-int8 copy with torch.ao's per-batch activation scales (verification chunks get other scales than
single steps) and with llmdiet's per-row scales (a row's output is independent of its chunk: all identical). Timing is not the point here (toy sizes); ``bench/rounds.py`` times the real shapes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, str(REPO))
    import argparse

    parser = argparse.ArgumentParser(prog="python bench/speculative_demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--draft", nargs="+", default=["llmdiet-demo:student"], help="Draft model directories or demo names."
    )
    parser.add_argument("--rows", type=int, default=200, help="Demo eval rows (in-domain en-fr) to decode.")
    parser.add_argument("--lookahead", type=int, default=4, help="First-round lookahead (then adaptive).")
    parser.add_argument(
        "--batch_size",
        type=int,
        default=1,
        help="Sentences per batch (llmdiet eval's default is 32); above 1 the ragged and the lockstep batches are "
        "both recorded.",
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "speculative-demo.json"))
    args = parser.parse_args(argv)

    import torch

    from bench.run import cpu_flags
    from llmdiet.engines.speculative import SpeculativeDecoder
    from llmdiet.engines.t5_static_decoding import StaticCacheT5Decoder
    from llmdiet.evaluation.eval_sets import resolve_eval_set
    from llmdiet.modeling import load_seq2seq, resolve_model
    from llmdiet.provenance import provenance
    from llmdiet.quantize.torch_dynamic import quantize_dynamic_int8

    teacher_path = resolve_model("llmdiet-demo:teacher")
    teacher, tokenizer = load_seq2seq(teacher_path)
    spec = resolve_eval_set("demo-en-fr")
    sources = [spec.prefix + r.source for r in spec.load()[: args.rows]]
    record: dict = {
        "teacher": teacher_path,
        "rows": len(sources),
        "lookahead": args.lookahead,
        "batch_size": args.batch_size,
        "drafts": [],
    }
    batches = [sources[i : i + args.batch_size] for i in range(0, len(sources), args.batch_size)]
    modes = (("ragged", True),) if args.batch_size == 1 else (("ragged", True), ("lockstep", False))
    torch.set_num_threads(1)
    import copy

    from llmdiet.quantize.per_row_int8 import use_activation_scales

    quantized = quantize_dynamic_int8(copy.deepcopy(teacher).eval(), activation_scales="per_batch")  # torch.ao's
    per_row = use_activation_scales(copy.deepcopy(quantized), "per_row")  # llmdiet's default at load time
    for name in args.draft:
        draft_path = resolve_model(name)
        draft = load_seq2seq(draft_path)[0].eval()
        entry: dict = {"draft": name, "path": draft_path}
        models = (("fp32", teacher.eval()), ("dynamic-int8 per batch", quantized), ("dynamic-int8 per row", per_row))
        for label, model in models:
            plain = StaticCacheT5Decoder(model)
            for mode, ragged in modes:
                speculative = SpeculativeDecoder(
                    plain, StaticCacheT5Decoder(draft), lookahead=args.lookahead, ragged=ragged
                )
                identical = 0
                for batch in batches:
                    enc = tokenizer(batch, return_tensors="pt", padding=True)
                    a = plain.generate(enc["input_ids"], enc["attention_mask"], 128)
                    b = speculative.generate(enc["input_ids"], enc["attention_mask"], 128)
                    for row_a, row_b in zip(a, b):  # per sentence, padding after EOS left out
                        row_a, row_b = row_a[row_a != plain.pad_id], row_b[row_b != plain.pad_id]
                        identical += int(row_a.shape == row_b.shape and torch.equal(row_a, row_b))
                result = {**SpeculativeDecoder.summarize(speculative.stats), "identical_outputs": identical}
                key = label if args.batch_size == 1 else f"{label}, {mode}"
                entry[key] = result
                print(f"{name} drafting for the {key} teacher: {result}")
        record["drafts"].append(entry)
    record["provenance"] = provenance(0, ["python", "bench/speculative_demo.py", *argv])
    record["cpu_flags"] = cpu_flags()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
