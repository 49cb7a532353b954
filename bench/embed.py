"""Sentence embeddings on CPU: documents per second per core (issue 17).

    python bench/embed.py                  # 512 documents of ~2 KB, max_tokens 256 and 128
    python bench/embed.py --n 2000 --max-tokens 256

The documents are built from real paragraphs by ../shared/tools/make_corpus.py and cut to 2,000
characters (synthetic sentences when ../shared is absent). One process, onnxruntime on one
intra-op thread and the tokenizer on one thread (``TOKENIZERS_PARALLELISM=false``), so the figure
is per core; the model is loaded (and, the first time, fetched) before the clock starts.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, nargs="+", default=[256, 128])
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    from thresher.operators.common.embedding import get_embedder

    docs, origin = documents(args.n)
    print(f"{len(docs)} documents of {CHARS} characters ({origin}); batch {args.batch_size}; 1 thread")
    for max_tokens in args.max_tokens:
        emb = get_embedder(max_tokens=max_tokens)
        emb.encode(docs[:8])  # warm-up
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        emb.encode(docs, batch_size=args.batch_size)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        print(f"max_tokens {max_tokens}: {len(docs) / wall:.1f} docs/s wall, {len(docs) / cpu:.1f} docs/s per CPU "
              f"second ({wall:.1f} s wall, {cpu:.1f} s CPU)")


if __name__ == "__main__":
    main()
