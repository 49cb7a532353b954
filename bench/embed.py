"""Sentence embeddings on CPU: documents per second per core (issue 17).

    python bench/embed.py                  # 512 documents of ~2 KB, max_tokens 256 and 128
    python bench/embed.py --n 2000 --max-tokens 256
    python bench/embed.py --n 128 --embed-model multilingual-e5-small   # the multilingual encoder
    python bench/embed.py --recipe --n 2000 --model /tmp/wq.npz   # fineweb-edu: one shared embedding vs two

The documents are built from real paragraphs by ../shared/tools/make_corpus.py and cut to 2,000
characters (synthetic sentences when ../shared is absent). One process, onnxruntime on one
intra-op thread and the tokenizer on one thread (``TOKENIZERS_PARALLELISM=false``), so the figure
is per core; the model is loaded (and, the first time, fetched) before the clock starts.

``--recipe`` runs the shipped ``fineweb-edu`` recipe on N real-paragraph documents (2 workers) as
shipped — one ``embed`` step whose column the quality classifier and ``semantic_dedup`` read — and
with each of them embedding the text itself (the recipe before the shared column), interleaved,
and checks that both write the same rows. ``--model`` is the quality model (default the
``builtin:web-quality`` one, which ``thresher train-quality --config web-quality`` trains).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("THRESHER_EMBED_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import SHARED, make_corpus  # noqa: E402

CHARS = 2000


def documents(n: int) -> tuple[list[str], str]:
    if (SHARED / "tools" / "make_corpus.py").exists():
        path = make_corpus(max(n, 1000), Path(tempfile.gettempdir()) / "thresher-bench" / "embed_corpus.jsonl")
        texts = [json.loads(line)["text"] for line in path.open()]
        long_enough = [t[:CHARS] for t in texts if len(t) >= CHARS]
        return long_enough[:n], f"real paragraphs ({path})"
    rng = random.Random(0)
    words = ["the", "river", "town", "library", "bridge", "museum", "harbour", "garden", "festival", "winter", "letters", "canal", "report"]
    return [" ".join(rng.choice(words) for _ in range(400))[:CHARS] for _ in range(n)], "synthetic"


def recipe_variants(model: str) -> dict[str, dict]:
    """The fineweb-edu recipe as shipped ("shared") and with each model stage embedding the text ("twice")."""
    import yaml

    shipped = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "fineweb-edu.yaml").read_text())
    shared, twice = [], []
    for step in shipped["process"]:
        (name, params), = step.items()
        params = {**(params or {}), **({"model_path": model} if name == "quality_classifier" else {})}
        shared.append({name: params})
        if name != "embed":
            twice.append({name: {k: v for k, v in params.items() if k not in ("embedding_field", "drop_embedding")}})
    return {"shared": {**shipped, "process": shared}, "twice": {**shipped, "process": twice}}


def bench_recipe(args) -> None:
    import resource
    import subprocess

    import yaml

    work = Path(tempfile.gettempdir()) / "thresher-bench" / "embed-recipe"
    work.mkdir(parents=True, exist_ok=True)
    inp = make_corpus(args.n, work / f"corpus_{args.n}.jsonl")
    outputs: dict[str, list[str]] = {}
    times: dict[str, list[tuple[float, float]]] = {}
    for rep in range(args.repeat):
        for name, recipe in recipe_variants(args.model).items():
            path = work / f"{name}.yaml"
            path.write_text(yaml.safe_dump(recipe))
            out = work / f"out-{name}"
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "thresher", "run", str(path), "--input", str(inp), "--output", str(out),
                            "--workers", "2", "-q", "--overwrite"], check=True)
            wall = time.perf_counter() - t0
            cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
            times.setdefault(name, []).append((wall, cpu))
            outputs[name] = [f.read_text() for f in sorted((out / "data").glob("part-*"))]
            print(f"run {rep}: {name:<6} {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    same = outputs["shared"] == outputs["twice"]
    rows = sum(o.count("\n") for o in outputs["shared"])
    print(f"fineweb-edu on {args.n} documents, 2 workers: same output {same} ({rows} rows kept); load {os.getloadavg()}")
    for name, t in times.items():
        print(f"{name:<6} median {sorted(w for w, _ in t)[len(t) // 2]:.1f} s wall, "
              f"{sorted(c for _, c in t)[len(t) // 2]:.1f} s CPU over {len(t)} runs")
    if not same:
        raise SystemExit("the shared-embedding recipe's output differs")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, nargs="+", default=[256, 128])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--embed-model", default="all-MiniLM-L6-v2", choices=["all-MiniLM-L6-v2", "multilingual-e5-small"])
    ap.add_argument("--recipe", action="store_true", help="time the fineweb-edu recipe, shared embedding vs two")
    ap.add_argument("--model", default="builtin:web-quality", help="(--recipe) the quality model")
    ap.add_argument("--repeat", type=int, default=3, help="(--recipe) interleaved runs of each variant")
    args = ap.parse_args()
    if args.recipe:
        return bench_recipe(args)
    from thresher.operators.semantic.embed import EmbedParams, load_embedder

    docs, origin = documents(args.n)
    print(f"{len(docs)} documents of {CHARS} characters ({origin}); {args.embed_model}; batch {args.batch_size}; "
          "1 thread")
    for max_tokens in args.max_tokens:
        emb = load_embedder(EmbedParams(model=args.embed_model, max_tokens=max_tokens))
        emb.encode(docs[:8])  # warm-up
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        emb.encode(docs, batch_size=args.batch_size)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        print(f"max_tokens {max_tokens}: {len(docs) / wall:.1f} docs/s wall, {len(docs) / cpu:.1f} docs/s per CPU "
              f"second ({wall:.1f} s wall, {cpu:.1f} s CPU)")


if __name__ == "__main__":
    main()
