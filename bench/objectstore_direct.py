"""Output to a bucket: a Ray run whose tasks write their parts (and the rows between passes, under
``_work/``) straight to the bucket, against the same Ray run writing to a local disk and a local run
staged on disk then published. An S3 server on 127.0.0.1 (moto, in this process) stands in for the
store, so the figures are an upper bound on the requests' cost, not S3's network. The input is a
local file (the output is what is measured).

    python bench/objectstore_direct.py                      # 20k docs of /tmp/corpus20k.jsonl, 3 rounds
    python bench/objectstore_direct.py --corpus X.jsonl --repeat 5

The recipe has a global op (exact dedup), so the Ray run to the bucket writes pass 0's rows and
fingerprints to ``_work/``, reads the fingerprints back in Ray tasks, and its pass 1 downloads each
shard's rows: the worst case for writing directly. Runs are interleaved (round-robin) on one local
Ray started once (2 CPUs), the median reported with the CPU seconds of the whole process tree
(driver, moto's threads, Ray's daemons and workers). The data parts of the two Ray runs must be
byte-identical (checked).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROCESS = [{"whitespace_normalize": {}}, {"text_length_filter": {"min_words": 4}}, {"exact_dedup": {}}]


def _cpu() -> float:
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    total = t.children_user + t.children_system  # processes that have ended (the local executor's pool)
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("/tmp/corpus20k.jsonl"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shard-mb", type=float, default=4.0)
    args = ap.parse_args()

    import boto3
    import ray
    from moto.server import ThreadedMotoServer

    from thresher.pipeline.recipe import parse_recipe
    from thresher.pipeline.run import run

    work = Path(tempfile.mkdtemp(prefix="thresher-bench-os-"))
    port = _port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_ENDPOINT_URL=url,
                      AWS_DEFAULT_REGION="us-east-1", THRESHER_STAGING=str(work / "staging"))
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    s3.create_bucket(Bucket="bench")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    import yaml

    def once(name: str, i: int) -> tuple[float, float, str]:
        executor = {"type": "local", "workers": 2} if name == "local-staged" else {"type": "ray", "workers": 2}
        out = str(work / f"{name}-{i}") if name == "ray-disk" else f"s3://bench/{name}-{i}"
        body = {"input": {"paths": [str(args.corpus)], "shard_size_mb": args.shard_mb},
                "output": {"path": out, "format": "parquet"}, "executor": executor, "seed": 1, "process": PROCESS}
        recipe = parse_recipe(yaml.safe_dump(body), "bench.yaml")
        c0, t0 = _cpu(), time.perf_counter()
        run(recipe)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        h = hashlib.sha256()
        if out.startswith("s3://"):
            keys = sorted(o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(
                Bucket="bench", Prefix=f"{name}-{i}/data/") for o in p.get("Contents", []))
            for k in keys:
                h.update(k.rsplit("/", 1)[-1].encode() + s3.get_object(Bucket="bench", Key=k)["Body"].read())
        else:
            for f in sorted((Path(out) / "data").iterdir()):
                h.update(f.name.encode() + f.read_bytes())
            shutil.rmtree(out)
        return wall, cpu, h.hexdigest()[:12]

    names = ["ray-disk", "ray-bucket-direct", "local-staged"]
    results: dict[str, list] = {n: [] for n in names}
    for i in range(args.repeat):
        for n in names:
            results[n].append(once(n, i))
    load = os.getloadavg()
    print(f"\ncorpus {args.corpus} ({args.corpus.stat().st_size / 1e6:.0f} MB), shards of {args.shard_mb} MB, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load {load[0]:.1f}; median of {args.repeat} interleaved runs")
    print("| run | wall s (runs) | CPU s (tree) | / ray-disk wall | data sha256 |")
    print("|---|---|---|---|---|")
    base = statistics.median(r[0] for r in results["ray-disk"])
    for n in names:
        walls = [r[0] for r in results[n]]
        print(f"| {n} | {statistics.median(walls):.1f} ({', '.join(f'{w:.1f}' for w in walls)}) | "
              f"{statistics.median(r[1] for r in results[n]):.1f} | {statistics.median(walls) / base:.2f} | "
              f"{results[n][0][2]} |")
    assert {r[2] for r in results["ray-disk"] + results["ray-bucket-direct"]} == {results["ray-disk"][0][2]}, \
        "the Ray run to the bucket wrote other bytes than the one to disk"
    ray.shutdown()
    server.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
