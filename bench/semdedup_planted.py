"""semantic_dedup's precision and recall on a planted set built from ../shared/data (issue 17):
reformatted copies of real paragraphs, translations of UDHR articles and second translations into
the same language (paraphrases)
(tests/realdata/semdedup_planted.py says how the set is built and scored), for both builtin
encoders and several thresholds, against minhash_dedup.

    python bench/semdedup_planted.py
    python bench/semdedup_planted.py --thresholds 0.9 0.95 --languages fr de-1996 ru ja

Prints a Markdown table (overall precision / recall, recall of reformatted, paraphrased and
translated copies, translated recall per language family) and each model's embedding CPU seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("THRESHER_EMBED_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.realdata import semdedup_planted as sp  # noqa: E402
from thresher.api import apply_op  # noqa: E402
from thresher.operators.common.embedding import column_matrix  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"
MODELS = ("all-MiniLM-L6-v2", "multilingual-e5-small")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.85, 0.9, 0.93, 0.95])
    ap.add_argument("--languages", nargs="+", default=list(sp.LANGUAGES))
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = ap.parse_args()
    rows, group, kind = sp.planted_set(SHARED_DATA, tuple(args.languages))
    ids = [r["id"] for r in rows]
    n_copies = sum(k is not None for k in kind.values())
    n_translated = sum(1 for k in kind.values() if k and k.startswith("translated:"))
    n_para = sum(1 for k in kind.values() if k and k.startswith("paraphrase:"))
    print(f"{len(rows)} rows: {len(rows) - n_copies} originals, {n_copies - n_translated - n_para} reformatted "
          f"copies ({', '.join(sp.REFORMATS)}), {n_translated} translated copies, {n_para} paraphrases "
          f"(second translations: {', '.join(sp.PARAPHRASES)})\n")
    minhash_kept = set(apply_op("minhash_dedup", rows, threshold=0.8)["id"].to_pylist())
    mh_removed = set(ids) - minhash_kept
    families = sorted({sp.FAMILIES[c] for c in [*args.languages, *sp.PARAPHRASES]})
    head = ["model", "threshold", "precision", "recall", "reformatted", "paraphrase", "translated", *families,
            "originals removed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def line(name, thr, s):
        reformat = [v for k, v in s["by_kind"].items() if ":" not in k]
        para = [v for k, v in s["by_kind"].items() if k.startswith("paraphrase:")]
        trans = [v for k, v in s["by_kind"].items() if k.startswith("translated:")]
        fam = sp.by_family(s["by_kind"])
        cells = [name, thr, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{sum(reformat) / len(reformat):.3f}",
                 f"{sum(para) / max(1, len(para)):.3f}", f"{sum(trans) / max(1, len(trans)):.3f}",
                 *(f"{fam.get(f, 0):.2f}" for f in families),
                 str(s["originals_removed"])]
        lines.append("| " + " | ".join(cells) + " |")

    cpu = {}
    for model in args.models:
        c0 = time.process_time()
        embedded = apply_op("embed", rows, model=model)
        cpu[model] = time.process_time() - c0
        vectors = column_matrix(embedded["embedding"])
        if model == args.models[0]:
            line("minhash_dedup (0.8)", "-", sp.score(ids, vectors, mh_removed, group, kind, -1.0))
        for thr in args.thresholds:
            kept = set(apply_op("semantic_dedup", embedded, threshold=thr)["id"].to_pylist())
            line(model, f"{thr}", sp.score(ids, vectors, set(ids) - kept, group, kind, thr))
    print("\n".join(lines))
    print("\nembedding CPU seconds: " + ", ".join(f"{m} {s:.1f}" for m, s in cpu.items()))


if __name__ == "__main__":
    main()
