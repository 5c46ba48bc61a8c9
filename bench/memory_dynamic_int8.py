"""Peak memory of evaluating the dynamic-int8 flan-T5-large-shaped artifact, relative to the artifact's size.

    python bench/memory_dynamic_int8.py [--repeat 3]     # -> bench/results/memory-dynamic-int8.json

Builds (once, in runs/bench-memory/) a random-init model with the exact flan-T5-large shape and its dynamic-int8
artifact, then, in a fresh process per repeat: ``llmdiet.load`` + one batch of 16 sentences x 20 new tokens,
recording ``ru_maxrss`` (peak resident memory of the process, runtime included) and the RSS right after loading.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "runs" / "bench-memory"

CHILD = """
import json, resource, sys, time
import psutil
from llmdiet import load
from pathlib import Path
art = Path(sys.argv[1])
start = time.perf_counter()
translator = load(str(art))
load_s = time.perf_counter() - start
after_load = psutil.Process().memory_info().rss
translator.translate(["translate English to French: The farmers buy bread in the market today."] * 16,
                     batch_size=16, max_new_tokens=20)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
disk = sum(f.stat().st_size for f in art.iterdir() if f.is_file() and f.name != "README.md")
print(json.dumps({"artifact_bytes": disk, "peak_rss_bytes": peak, "rss_after_load_bytes": after_load,
                  "peak_vs_artifact": peak / disk, "load_s": load_s}))
"""


def main() -> int:
    sys.path.insert(0, str(REPO))
    import llmdiet
    from bench.workload import load_tokenizer, save_random_model
    from llmdiet.provenance import provenance

    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 3
    artifact = ROOT / "flan-t5-large-dynamic-int8"
    if not (artifact / "llmdiet_artifact.json").exists():
        source = save_random_model("flan-t5-large", ROOT / "flan-t5-large", load_tokenizer())
        llmdiet.quantize(str(source), "dynamic-int8", str(artifact), overwrite=True)
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", CHILD, str(artifact)], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(
            f"peak RSS {runs[-1]['peak_rss_bytes'] / 1e6:.0f} MB = {runs[-1]['peak_vs_artifact']:.2f}x the artifact "
            f"({runs[-1]['artifact_bytes'] / 1e6:.0f} MB); after load {runs[-1]['rss_after_load_bytes'] / 1e6:.0f} MB"
        )
    path = REPO / "bench" / "results" / "memory-dynamic-int8.json"
    path.write_text(json.dumps({"runs": runs, "provenance": provenance(0, [sys.executable, *sys.argv])}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
