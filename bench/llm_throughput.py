"""LLM client throughput: `llm_respond` against a local OpenAI-compatible server that answers every
request after a fixed 200 ms (tests/llm_test_server.py, in its own process, HTTP/1.1 keep-alive):
its asyncio form (one event loop: the server's own cost stays small) and its thread-per-connection
form (the one the tests use).

    python bench/llm_throughput.py                 # C = 1, 8, 32, 64; cache replay of 10k rows
    python bench/llm_throughput.py --concurrency 1,64,128 --rounds 20 --replay 20000

At concurrency C the ceiling is C / 0.2 requests per second; target (issue 19 item 7): >= 95% of it
up to C = 64, client overhead (this process's CPU per request) under 1 ms. Each C answers
``rounds`` x C fresh prompts (cache off) after one warm-up round. The replay fills a response cache
with ``--replay`` answers (through the server, at C = 256), then answers the same rows again with a
new client: the server must see no request, and it must take seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from thresher.operators.chat.formats import MESSAGES  # noqa: E402
from thresher.operators.chat.generate import LLMRespond  # noqa: E402

DELAY_S = 0.2


def rows(n: int, tag: str) -> pa.Table:
    convs = [[{"role": "user", "content": f"{tag} question {i}: what is {i} plus {i}?"}] for i in range(n)]
    return pa.table({"messages": pa.array(convs, MESSAGES)})


def respond(url: str, concurrency: int, batch: pa.Table, cache_dir: Path | None = None) -> tuple[float, float]:
    """Wall and CPU seconds of one ``llm_respond`` pass over ``batch`` (a fresh op and client)."""
    llm = {"base_url": url, "model": "bench", "concurrency": concurrency, "cache": cache_dir is not None,
           "cache_dir": str(cache_dir) if cache_dir else None, "timeout_s": 30.0}
    op = LLMRespond(LLMRespond.Params(llm=llm))
    op.setup()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        res = op.process(batch)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        op.client.close()
    assert not any(res.quarantine), "some requests failed"
    return wall, cpu


def server_stats(url: str) -> dict:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats") as r:
        return json.loads(r.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--rounds", type=int, default=10, help="requests per C: rounds x C")
    ap.add_argument("--replay", type=int, default=10_000, help="rows for the cache replay (0: skip)")
    ap.add_argument("--servers", default="asyncio,threads", help="server forms to measure against")
    args = ap.parse_args()
    print("| server | C | requests | wall s | req/s | of C/0.2 | client CPU ms/request | server max in flight |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in args.servers.split(","):
        with serve(kind) as url:
            for c in (int(x) for x in args.concurrency.split(",")):
                respond(url, c, rows(c, f"warm{c}"))  # opens the connections
                n = c * args.rounds
                wall, cpu = respond(url, c, rows(n, f"c{c}"))
                ideal = c / DELAY_S
                print(f"| {kind} | {c} | {n:,} | {wall:.2f} | {n / wall:,.1f} | {n / wall / ideal:.1%} | "
                      f"{1000 * cpu / n:.2f} | {server_stats(url)['max_in_flight']} |", flush=True)
    if args.replay:
        with serve("asyncio") as url, tempfile.TemporaryDirectory() as cache:
            batch = rows(args.replay, "replay")
            fill, _ = respond(url, 256, batch, Path(cache))
            before = server_stats(url)["requests"]
            wall, cpu = respond(url, 64, batch, Path(cache))
            sent = server_stats(url)["requests"] - before
            print(f"\ncache replay: {args.replay:,} rows answered from the cache in {wall:.2f} s "
                  f"({args.replay / wall:,.0f} rows/s, CPU {1e6 * cpu / args.replay:.0f} us/row), "
                  f"{sent} requests to the server (filling it took {fill:.1f} s at C = 256)")


@contextlib.contextmanager
def serve(kind: str):
    """The test server in its own process (``asyncio`` or ``threads``): its URL."""
    flags = ["--asyncio"] if kind == "asyncio" else ["--keep-alive"]
    server = subprocess.Popen([sys.executable, "-m", "tests.llm_test_server", "--delay", str(DELAY_S), *flags],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        yield server.stdout.readline().strip()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
