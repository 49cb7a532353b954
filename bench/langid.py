"""Language ID: the fast path (a sample of each long document, whole-document recheck where the
sample is not confident) against whole-document lid.176, op time and agreement.

    python bench/langid.py                     # agreement on ../shared/data + op time on 20k docs
    python bench/langid.py --n 100000 --recipe # also the whole `fineweb` recipe, whole vs fast

Agreement is measured on the real multilingual and web sets of ../shared/data (UDHR in ~450
languages, multilingual fortunes, trafilatura's multilingual web pages, C4, Dolma, DCLM,
SpamAssassin, State of the Union): label equality, and equality of the keep/drop decision of the
`fineweb` recipe's setting (English at >= 0.65). Op time is `language_id`'s compute_stats on a
corpus of real paragraphs (../shared/tools/make_corpus.py), wall and CPU seconds (CPU time is the
steadier figure on a shared machine), every path in the same invocation, interleaved: whole
documents and the fast path, each with fastText's binding (``multilinePredict`` on Python strings)
and with the compiled inference on the Arrow buffers (operators/filter/fasttext_infer.py, the same
labels and probabilities bit for bit: the op's default).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import SHARED, make_corpus, run_measured  # noqa: E402

from thresher.operators.filter.langid import LanguageId, load_fasttext  # noqa: E402
from thresher.pipeline.assets import LID176, asset_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = SHARED / "data"
SETS = {  # name: (file or glob under ../shared/data, text field)
    "udhr (multilingual)": ("udhr_multilingual/udhr_texts.jsonl.gz", "text"),
    "fortunes (12 languages)": ("fortunes_multilingual/fortunes.jsonl.gz", "text"),
    "trafilatura web pages": ("trafilatura_eval_web_pages/extracted_text.trafilatura.jsonl.gz", "text"),
    "c4 demo": ("llamafactory_c4_wiki_demo/c4_demo.jsonl", "text"),
    "dolma cc": ("dolma_test_cc_and_warc/*.jsonl", "text"),
    "dclm dev": ("dclm_human_quality_dev/dev.jsonl", "text"),
    "spamassassin": ("spamassassin_public_corpus/spamassassin.jsonl.gz", "text"),
    "state of the union": ("us_state_of_the_union_addresses/sotu.jsonl.gz", "text"),
}


def read_texts(pattern: str, key: str = "text", limit: int | None = None) -> list[str]:
    out: list[str] = []
    for path in sorted(DATA.glob(pattern)):
        with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as f:
            out += [json.loads(line)[key] for line in f if line.strip()]
    return out[:limit]


def language_id(binding: bool = False, **params) -> LanguageId:
    op = LanguageId(LanguageId.Params(languages=["en"], min_score=0.65, **params))
    op.prepare()
    op.setup()
    if binding:  # fastText's own binding in place of the compiled inference
        op._model = load_fasttext(str(asset_path(LID176)))
    return op


def agreement(texts: list[str], full: LanguageId, fast: LanguageId) -> tuple[float, float]:
    """(label agreement, keep/drop decision agreement) of ``fast`` with ``full`` on ``texts``."""
    batch = pa.table({"text": texts})
    a, b = full.compute_stats(batch), fast.compute_stats(batch)
    labels = np.mean(a["lang"].to_numpy(zero_copy_only=False) == b["lang"].to_numpy(zero_copy_only=False))
    decisions = np.mean(full.keep(a) == fast.keep(b))
    return float(labels), float(decisions)


def op_seconds(op: LanguageId, batches: list[pa.Table]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for b in batches:
        op.compute_stats(b)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="corpus documents for the op time")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved timings of each path (median)")
    ap.add_argument("--recipe", action="store_true", help="also time the whole fineweb recipe (2 workers)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "thresher-bench")
    args = ap.parse_args()
    full, fast = language_id(sample_bytes=None), language_id()
    ref = language_id(binding=True, sample_bytes=None)  # the reference: fastText's binding, whole documents
    p = fast.params
    print(f"fast path: sample_bytes={p.sample_bytes}, pieces={p.sample_pieces}, recheck below {fast.recheck_below}")
    print("\n| set | docs | mean chars | label agreement | decision agreement (en >= 0.65) |\n|---|---|---|---|---|")
    worst = 1.0
    for name, (pattern, key) in SETS.items():
        texts = read_texts(pattern, key)
        labels, decisions = agreement(texts, ref, fast)
        worst = min(worst, labels, decisions)
        print(f"| {name} | {len(texts):,} | {statistics.mean(len(t or '') for t in texts):,.0f} | "
              f"{labels:.2%} | {decisions:.2%} |")
    print(f"worst agreement: {worst:.2%}")

    corpus = make_corpus(args.n, args.work / f"corpus_{args.n}.jsonl")
    docs = [json.loads(line)["text"] for line in corpus.open()]
    batches = [pa.table({"text": docs[i: i + 8192]}) for i in range(0, len(docs), 8192)]
    labels, decisions = agreement(docs, ref, fast)
    paths = {"whole document, binding": ref,
             "fast path, binding": language_id(binding=True), "whole document": full, "fast path": fast}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
    for _ in range(args.repeat):
        for k, op in paths.items():
            times[k].append(op_seconds(op, batches))
    print(f"\nop time, {len(docs):,} corpus docs (agreement: labels {labels:.2%}, decisions {decisions:.2%}), "
          f"median of {args.repeat}:\n| path | wall s | CPU s | us/doc (CPU) |\n|---|---|---|---|")
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    for k, (w, c) in med.items():
        print(f"| {k} | {w:.2f} | {c:.2f} | {1e6 * c / len(docs):.0f} |")
    base = med["whole document, binding"]
    for k in ("fast path, binding", "fast path"):
        print(f"speed-up of {k} over whole documents with the binding: {base[0] / med[k][0]:.2f}x wall, "
              f"{base[1] / med[k][1]:.2f}x CPU")
    if args.recipe:
        recipe_times(corpus, args.work, args.repeat)


def recipe_times(corpus: Path, work: Path, repeat: int) -> None:
    """The whole fineweb recipe, language ID whole vs fast, interleaved runs (2 workers, local)."""
    process = yaml.safe_load((ROOT / "recipes" / "fineweb.yaml").read_text())["process"]
    runs: dict[str, list[tuple[float, float]]] = {"whole document": [], "fast path": []}
    for _ in range(repeat):
        for path, sample in (("whole document", None), ("fast path", 500)):
            steps = [{"language_id": {**s["language_id"], "sample_bytes": sample}} if "language_id" in s else s
                     for s in process]
            out, recipe = work / "out-langid", work / "recipe-langid.yaml"
            shutil.rmtree(out, ignore_errors=True)
            recipe.write_text(yaml.safe_dump({
                "input": {"paths": [str(corpus)]}, "output": {"path": str(out)},
                "executor": {"type": "local", "workers": 2}, "seed": 42, "process": steps}))
            wall, _ = run_measured([sys.executable, "-m", "thresher", "run", str(recipe), "-q"],
                                   env={"PYTHONPATH": str(ROOT)})
            ops = json.loads((out / "ledger.json").read_text())["ops"]
            runs[path].append((wall, ops["language_id"]["seconds"]))
    print(f"\nwhole fineweb recipe, local, 2 workers, median of {repeat} interleaved:\n"
          "| language ID | wall s | language_id op-seconds |\n|---|---|---|")
    med = {k: (statistics.median(w for w, _ in v), statistics.median(s for _, s in v)) for k, v in runs.items()}
    for k, (w, s) in med.items():
        print(f"| {k} | {w:.1f} | {s:.1f} |")
    print(f"recipe speed-up: {med['whole document'][0] / med['fast path'][0]:.2f}x")


if __name__ == "__main__":
    main()
