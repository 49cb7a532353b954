"""Scale on one small machine (issue 19 item 3): the shipped ``fineweb`` recipe and a MinHash-only
recipe on 1, 3, 10 GB of real-paragraph documents, with peak PSS of the whole process tree, the peak
size of the run's scratch (``<out>/_work/`` and the temporary directory the run writes into), wall,
CPU seconds, docs/s and CPU-seconds per document.

    python bench/scale.py --sizes 1,3,10 --recipes fineweb,minhash --dir /tmp/G/scale

Corpora: ``../shared/tools/make_corpus.py`` keeps every document of a corpus in memory (a Python
string per document plus the near-copy bookkeeping), so a 10 GB corpus is not built in one call on a
24 GB machine. Each GB is one chunk of ``--docs-per-gb`` documents (480,000 x ~2.1 KB) made by
``make_corpus.py --seed k`` (k = 1, 2, ...); a corpus of N GB is chunks 1..N concatenated, with every
id prefixed by its chunk (``s03d0001234``) so that ids stay unique. Duplicates are planted inside a
chunk only (3 % exact, 10 % near), so the duplicate rate is the same at every size.

The MinHash-only recipe is written by this script: ``minhash_dedup`` alone with the parameters the
shipped ``fineweb`` recipe uses (threshold 0.8, 128 permutations, word 5-grams, signature
verification, remove). The shipped ``dedup`` recipe also runs ``exact_dedup`` and marks instead of
removing, so it is not MinHash-only.

Memory is sampled with psutil (PSS summed over the process tree, as bench/_measure.py) every
``--interval`` seconds; scratch size with os.scandir sums every ``--disk-interval`` seconds.
CPU seconds are the children's user+sys from ``resource.getrusage`` (the pool's workers are waited
by the run and fold into it).

``--timeline --interval 0.2`` keeps every sample per process (PSS and USS; driver / worker / other),
the pass and shard each worker ran then (from the done markers, read as they appear) and the resolve
steps' intervals, and writes the composition at the peak (``peak`` in the results):

    python bench/scale.py --sizes 1,3 --recipes minhash --dir /tmp/G/scale --timeline --interval 0.2 --repeat 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import SHARED, tree_rss  # noqa: E402

MINHASH_RECIPE = """name: minhash-only
description: minhash_dedup alone, with the parameters of the shipped fineweb recipe (bench/scale.py).
input:
  paths: ["${THRESHER_INPUT:-demo:quickstart}"]
  text_key: text
output:
  path: ${THRESHER_OUT:-thresher-out/minhash-only}
  format: jsonl
  keep_stats: false
executor: local
seed: 42
process:
  - minhash_dedup: {threshold: 0.8, num_perm: 128, ngram: 5, verify: signature}
"""


def _chunk(work: Path, k: int, docs: int) -> Path:
    """Chunk k (one 'GB'): make_corpus.py --seed k, ids prefixed; its shard copies are deleted."""
    out = work / "chunks" / f"s{k:02d}.jsonl"
    if out.exists():
        return out
    tool = SHARED / "tools" / "make_corpus.py"
    raw = work / "chunks" / f"raw{k:02d}.jsonl"
    raw.parent.mkdir(parents=True, exist_ok=True)
    try:  # another builder (e.g. a second `--build-only --build-order desc`) may be making this chunk
        os.close(os.open(raw.with_suffix(".lock"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        while not out.exists():
            time.sleep(5)
        return out
    subprocess.run([sys.executable, str(tool), "--n", str(docs), "--out", str(raw), "--seed", str(k), "--shards", "1"],
                   check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(work / "chunks" / f"raw{k:02d}_shards", ignore_errors=True)
    prefix = f'{{"id": "s{k:02d}'.encode()
    tmp = out.with_suffix(".part")
    with open(raw, "rb") as src, open(tmp, "wb") as dst:
        for line in src:
            if not line.startswith(b'{"id": "'):
                raise SystemExit(f"unexpected line in {raw}: {line[:40]!r}")
            dst.write(prefix + line[8:])
    tmp.rename(out)
    raw.unlink()
    raw.with_suffix(".lock").unlink()
    return out


def build_chunks(work: Path, n: int, docs: int, jobs: int, descending: bool = False) -> list[Path]:
    from concurrent.futures import ThreadPoolExecutor

    ks = range(n, 0, -1) if descending else range(1, n + 1)
    with ThreadPoolExecutor(jobs) as pool:
        built = dict(zip(ks, pool.map(lambda k: _chunk(work, k, docs), ks), strict=True))
    return [built[k] for k in range(1, n + 1)]


def corpus(work: Path, gb: int, docs: int, jobs: int, consume: bool = False) -> Path:
    """Chunks 1..gb concatenated (cached); ``consume``: the chunks are used up."""
    out = work / f"corpus_{gb}gb.jsonl"
    if out.exists():
        return out
    chunks = build_chunks(work, gb, docs, jobs)
    tmp = out.with_suffix(".part")
    if consume:  # the largest corpus: the chunks become it, so the disk holds it once
        chunks[0].rename(tmp)
    with open(tmp, "ab") as dst:
        for c in chunks[1:] if consume else chunks:
            with open(c, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 24)
            if consume:
                c.unlink()
    tmp.rename(out)
    return out


def dir_size(path: Path) -> int:
    total = 0
    stack = [str(path)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_blocks * 512
                except OSError:
                    pass
    return total


def roles(root: psutil.Process) -> list[tuple[psutil.Process, str]]:
    """The run's processes, each labelled: ``driver`` (the run itself), ``worker`` (a pool worker:
    a spawned child, or a child of a fork server), ``other`` (multiprocessing's resource tracker or
    fork server)."""
    out = [(root, "driver")]
    try:
        kids = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return out
    for p in kids:
        try:
            cmd = " ".join(p.cmdline())
            parent = p.ppid()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        helper = "resource_tracker" in cmd or ("forkserver" in cmd and parent == root.pid)
        out.append((p, "other" if helper else "worker"))
    return out


def rollup(pid: int) -> dict[str, int]:
    """``/proc/PID/smaps_rollup`` in bytes (Linux 4.14+; Pss_Anon and Pss_File since 5.x)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def tree_sample(root: psutil.Process) -> list[tuple[int, str, int, int, int]]:
    """(pid, role, PSS, USS, anonymous PSS) of every process of the run (see ``roles``). The shared
    libraries' pages (polars, numba: ~100 MB a process) count in PSS divided among every process on
    the machine that maps them, so a run's PSS falls while other runs share them and USS rises when
    none does; anonymous PSS (the heaps, Arrow and numpy buffers) depends only on the run."""
    rows = []
    procs = roles(root)
    for p, role in procs:
        try:
            m = rollup(p.pid)
        except OSError:
            return []  # ended while the others were read
        rows.append((p.pid, role, m.get("Pss", 0), m.get("Private_Clean", 0) + m.get("Private_Dirty", 0),
                     m.get("Pss_Anon", 0)))
    # a process that started or ended meanwhile moved shared pages between sharers already read and
    # sharers not yet read: such a sample could count them twice; it is left out (bench/memory.py too)
    try:
        if {p.pid for p in root.children(recursive=True)} != {p.pid for p, _ in procs[1:]}:
            return []
    except psutil.NoSuchProcess:
        return []
    return rows


class Markers:
    """The done markers of a run as they appear (``_work/`` is removed at the end): for each
    (pass, shard), the worker's pid and the shard's interval in the run's clock (marker mtime minus
    the seconds the shard took), and each resolve's interval (resolved.json)."""

    def __init__(self, out: Path, t0_wall: float):
        self.out, self.t0 = out, t0_wall
        self.shards: dict[tuple[int, int], dict] = {}
        self.resolves: dict[int, dict] = {}

    def poll(self) -> None:
        for d in (self.out / "_work").glob("pass-*"):
            k = int(d.name.split("-")[1])
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for n in names:
                key = (k, int(n[5:10])) if n.startswith("done-") and n.endswith(".json") else None
                if (key is None or key in self.shards) and not (n == "resolved.json" and k not in self.resolves):
                    continue
                try:
                    f = d / n
                    end, info = f.stat().st_mtime - self.t0, json.loads(f.read_text())
                except (OSError, ValueError):
                    continue
                rec = {"start": round(end - info["seconds"], 2), "end": round(end, 2)}
                if key is None:
                    self.resolves[k] = rec
                else:
                    self.shards[key] = {**rec, "pid": info.get("pid"), "rows_out": info.get("rows_out")}

    def running(self, pid: int, t: float) -> str:
        """What worker ``pid`` ran at time ``t`` ("p0s00012"), or "idle"."""
        for (k, s), r in self.shards.items():
            if r["pid"] == pid and r["start"] <= t <= r["end"] + 0.05:
                return f"p{k}s{s:05d}"
        return "idle"

    def phase(self, t: float) -> str:
        """The driver's phase at ``t``: the resolve of pass k, or pass k (the latest pass with a shard
        started by then)."""
        for k, r in self.resolves.items():
            if r["start"] <= t <= r["end"]:
                return f"resolve-{k}"
        started = [k for (k, _), r in self.shards.items() if r["start"] <= t]
        return f"pass-{max(started)}" if started else "start"

    def to_json(self) -> dict:
        return {"shards": [{"pass": k, "shard": s, **r} for (k, s), r in sorted(self.shards.items())],
                "resolves": self.resolves}


def composition(timeline: list, markers: Markers) -> dict:
    """The timeline's peak (summed PSS) with what each process held and ran then, and the peak of
    each role on its own. USS (pages only that process maps) is beside PSS: a process's PSS also
    falls when processes outside the run map the same libraries (polars, numba), USS does not."""
    if not timeline:
        return {}
    t, procs = max(timeline, key=lambda row: sum(p[2] for p in row[1]))
    mb = 2**20
    at = {"t": t, "phase": markers.phase(t), "total_pss_mb": round(sum(p[2] for p in procs) / mb),
          "total_uss_mb": round(sum(p[3] for p in procs) / mb), "total_anon_mb": round(sum(p[4] for p in procs) / mb),
          "max_total_uss_mb": round(max(sum(p[3] for p in row) for _, row in timeline) / mb),
          "max_total_anon_mb": round(max(sum(p[4] for p in row) for _, row in timeline) / mb),
          "procs": [{"pid": pid, "role": role, "pss_mb": round(pss / mb), "uss_mb": round(uss / mb),
                     "anon_mb": round(anon / mb), **({"running": markers.running(pid, t)} if role == "worker" else {})}
                    for pid, role, pss, uss, anon in procs]}
    for role in ("driver", "worker", "other"):
        at[f"{role}_pss_mb"] = round(sum(p[2] for p in procs if p[1] == role) / mb)
        at[f"max_{role}_pss_mb"] = round(max(sum(p[2] for p in row if p[1] == role) for _, row in timeline) / mb)
        at[f"max_{role}_anon_mb"] = round(max(sum(p[4] for p in row if p[1] == role) for _, row in timeline) / mb)
    return at


def measure(cmd: list[str], cwd: Path, out: Path, tmpdir: Path, interval: float, disk_interval: float,
            timeline: bool = False) -> dict:
    """Run ``cmd`` with TMPDIR=tmpdir; peak PSS of its process tree, peak sizes of ``out/_work`` and
    of ``tmpdir``, wall and CPU seconds, load, and a curve (s, PSS now, _work, tmp) every disk sample.
    ``timeline``: every memory sample keeps each process's PSS, USS and anonymous PSS with its role (``roles``), the
    done markers give which pass and shard each worker ran (``Markers``), and ``peak`` is the
    composition at the peak (``composition``)."""
    load0 = os.getloadavg()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env={**os.environ, "TMPDIR": str(tmpdir)}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=cwd)  # cwd not a checkout: PYTHONPATH picks thresher
    ps = psutil.Process(p.pid)
    peak = {"pss": 0, "work": 0, "tmp": 0, "scratch": 0, "out": 0}
    now = {"pss": 0}
    curve: list[tuple[float, int, int, int]] = []
    stop = threading.Event()

    samples: list = []
    markers = Markers(out, time.time() - (time.perf_counter() - t0))

    def mem():
        while not stop.is_set():
            if timeline:
                rows = tree_sample(ps)
                if rows:
                    samples.append((round(time.perf_counter() - t0, 2), rows))
                now["pss"] = sum(r[2] for r in rows)
                markers.poll()
            else:
                now["pss"] = tree_rss(ps, "pss")
            peak["pss"] = max(peak["pss"], now["pss"])
            stop.wait(interval)

    def disk():
        while not stop.is_set():
            w, t = dir_size(out / "_work"), dir_size(tmpdir)
            peak["work"], peak["tmp"] = max(peak["work"], w), max(peak["tmp"], t)
            peak["scratch"] = max(peak["scratch"], w + t)
            peak["out"] = max(peak["out"], dir_size(out) + t)
            curve.append((round(time.perf_counter() - t0, 1), now["pss"], w, t))
            stop.wait(disk_interval)

    threads = [threading.Thread(target=f, daemon=True) for f in (mem, disk)]
    for th in threads:
        th.start()
    stdout, err = p.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    for th in threads:
        th.join()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    res = {"rc": p.returncode, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_pss_mb": round(peak["pss"] / 2**20),
           "peak_work_mb": round(peak["work"] / 2**20), "peak_tmp_mb": round(peak["tmp"] / 2**20),
           "peak_scratch_mb": round(peak["scratch"] / 2**20), "peak_outdir_mb": round(peak["out"] / 2**20),
           "load_start": [round(x, 2) for x in load0], "load_end": [round(x, 2) for x in os.getloadavg()],
           "curve": curve, "stdout_tail": stdout.decode(errors="replace")[-2000:]}
    if timeline:
        res["peak"] = composition(samples, markers)
        res["timeline"] = [[t, [list(r) for r in rows]] for t, rows in samples]
        res["markers"] = markers.to_json()
    if p.returncode != 0:
        res["stderr_tail"] = err.decode(errors="replace")[-3000:]
    return res


def run_one(python: str, recipe: str, inp: Path, out: Path, tmpdir: Path, workers: int, interval: float,
            disk_interval: float, timeline: bool = False) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(tmpdir, ignore_errors=True)
    tmpdir.mkdir(parents=True)
    cmd = [python, "-m", "thresher", "run", recipe, "--input", str(inp), "--output", str(out),
           "--workers", str(workers), "-q"]
    res = measure(cmd, out.parent, out, tmpdir, interval, disk_interval, timeline)
    if res["rc"] != 0:
        return res
    led = json.loads((out / "ledger.json").read_text())
    tot = led["totals"]
    res.update(rows_in=tot["input"], rows_out=tot["output"], dropped=tot["dropped"], quarantined=tot["quarantined"],
               balanced=led["balanced"], status=led["status"],
               passes=led["run"]["timings"]["passes"], shards=led["run"]["shards"],
               op_seconds={k: v["seconds"] for k, v in led["ops"].items()},
               output_mb=round(dir_size(out / "data") / 2**20))
    res["docs_per_s"] = round(tot["input"] / res["wall_s"], 1)
    res["cpu_ms_per_doc"] = round(1000 * res["cpu_s"] / tot["input"], 3)
    return res


# ---------------------------------------------------------------------------------------- resolve at scale
RESOLVE_SNIPPET = """import json, sys
from thresher.pipeline.recipe import load_recipe
from thresher.pipeline.executors.passes import resolve_pass
info = resolve_pass(load_recipe(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
print(json.dumps({"decided": info["decided"], "seconds": info["seconds"], "counters": info["counters"]}))
"""


def synth_fingerprints(python: str, recipe: str, src: Path, out: Path, k: int, replicas: int) -> int:
    """``out/_work/pass-k`` made of ``replicas`` copies of a finished pass's fingerprints (``src``:
    fp-SSSSS.parquet files), copy r as shards r*S+s, with every hash (MinHash signature values,
    exact-dedup hashes) XOR-ed by a per-copy random constant: inside a copy, equal values stay equal
    (the same clusters, the same band collisions), across copies they match only by chance, so the
    global step sees R times the rows with the real corpus's duplicate structure. Band keys are
    recomputed from the new signatures with the op's own (bands, rows). Returns the shard count."""
    code = """import sys, json
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
from pathlib import Path
from thresher.pipeline.recipe import load_recipe
from thresher.pipeline.executors.passes import ops_for
from thresher.operators.common.minhash import band_keys
src, dst, k, R = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
op = ops_for(load_recipe(sys.argv[5]))[1][k].barrier
files = sorted(src.glob("fp-*.parquet"))
S = len(files)
dst.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(19)
for r in range(R):
    c32 = rng.integers(0, 2**32, 128 if not hasattr(op, "band_count") else op.params.num_perm, dtype=np.uint32)
    c64 = rng.integers(0, 2**63, 2, dtype=np.uint64)
    for s, f in enumerate(files):
        t = pq.read_table(f)
        n = t.num_rows
        cols = {}
        for name in t.column_names:
            col = t[name].combine_chunks()
            if r and name == "sig":
                sig = np.asarray(col.values.to_numpy(zero_copy_only=False), np.uint32).reshape(n, -1) ^ c32
                cols["sig"] = pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), sig.shape[1])
                keys = band_keys(sig, op.band_count, op.band_rows)
                cols["bands"] = pa.FixedSizeListArray.from_arrays(pa.array(keys.ravel()), op.band_count)
            elif r and name in ("h_hi", "h_lo"):
                cols[name] = pa.array(col.to_numpy() ^ c64[int(name == "h_lo")])
            elif name == "__shard":
                cols[name] = pa.array(np.full(n, r * S + s, np.int32))
            elif name not in cols:
                cols[name] = col
        pq.write_table(pa.table({name: cols[name] for name in t.column_names}), dst / f"fp-{r * S + s:05d}.parquet")
        (dst / f"done-{r * S + s:05d}.json").write_text(json.dumps({"rows_out": n}))
print(R * S)
"""
    shutil.rmtree(out, ignore_errors=True)
    res = subprocess.run([python, "-c", code, str(src), str(out / "_work" / f"pass-{k}"), str(k), str(replicas), recipe],
                         cwd=out.parent, capture_output=True, text=True, check=True)
    return int(res.stdout.strip().splitlines()[-1])


def resolve_at_scale(args, work: Path, recipe: str, name: str, src: Path, k: int) -> list[dict]:
    """The global step of pass k alone (as the driver runs it), on 1x, 3x, 10x a real run's fingerprints."""
    out_rows = []
    for r in [int(x) for x in args.replicas.split(",")]:
        out = work / f"resolve_{name}_{k}_{r}"
        tmpdir = work / f"tmp_resolve_{name}_{k}_{r}"
        shards = synth_fingerprints(args.python, recipe, src, out, k, r)
        shutil.rmtree(tmpdir, ignore_errors=True)
        tmpdir.mkdir(parents=True)
        res = measure([args.python, "-c", RESOLVE_SNIPPET, recipe, str(out), str(k), str(shards)], out.parent, out,
                      tmpdir, args.interval, args.disk_interval)
        fp_mb = round(dir_size(out / "_work") / 2**20)
        rows = sum(json.loads(f.read_text())["rows_out"] for f in (out / "_work" / f"pass-{k}").glob("done-*.json"))
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(tmpdir, ignore_errors=True)
        info = json.loads(res["stdout_tail"].strip().splitlines()[-1]) if res["rc"] == 0 else {}
        res.update(recipe=name, k=k, replicas=r, shards=shards, rows=rows, fingerprints_mb=fp_mb, **info,
                   date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        res.pop("stdout_tail", None)
        out_rows.append(res)
        print({x: v for x, v in res.items() if x != "curve"}, flush=True)
    return out_rows


def table(results: list[dict]) -> str:
    lines = ["| recipe | input | docs in -> out | wall s | CPU s | docs/s | CPU ms/doc | peak PSS MB | "
             "peak _work/ MB (x input) | peak TMPDIR MB | load 1-min start/end |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["rc"] != 0:
            lines.append(f"| {r['recipe']} | {r['gb']} GB ({r['input_mb']} MB) | FAILED rc={r['rc']} | {r['wall_s']} | "
                         f"{r['cpu_s']} | | | {r['peak_pss_mb']} | {r['peak_work_mb']} | {r['peak_tmp_mb']} | "
                         f"{r['load_start'][0]} / {r['load_end'][0]} |")
            continue
        lines.append(
            f"| {r['recipe']} | {r['gb']} GB ({r['input_mb']:,} MB) | {r['rows_in']:,} -> {r['rows_out']:,} | "
            f"{r['wall_s']} | {r['cpu_s']} | {r['docs_per_s']:,.0f} | {r['cpu_ms_per_doc']:.2f} | {r['peak_pss_mb']:,} | "
            f"{r['peak_work_mb']:,} ({r['peak_work_mb'] / r['input_mb']:.2f}x) | {r['peak_tmp_mb']:,} | "
            f"{r['load_start'][0]} / {r['load_end'][0]} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,3,10", help="corpus sizes in GB (chunks of --docs-per-gb documents)")
    ap.add_argument("--recipes", default="fineweb,minhash", help="shipped recipe names; 'minhash' = minhash_dedup alone")
    ap.add_argument("--dir", default="/tmp/thresher-scale", help="corpora, runs and results")
    ap.add_argument("--docs-per-gb", type=int, default=480_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--build-jobs", type=int, default=2, help="make_corpus chunks built at once")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--build-order", choices=["asc", "desc"], default="asc",
                    help="order of the chunks a --build-only call makes (two calls, asc and desc, share the work)")
    ap.add_argument("--consume-chunks", action="store_true",
                    help="the largest corpus is made of the chunks themselves (disk holds it once; chunks are gone)")
    ap.add_argument("--keep-corpora", action="store_true", help="keep the largest corpus at the end")
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--disk-interval", type=float, default=3.0)
    ap.add_argument("--timeline", action="store_true",
                    help="keep every memory sample per process (driver / worker / other, PSS and USS) with the pass "
                         "and shard each worker ran, and the composition at the peak (use --interval 0.2)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each size and recipe")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs thresher")
    ap.add_argument("--resolve-from", default=None, metavar="RECIPE:K:DIR",
                    help="instead of runs: the global step of pass K alone on --replicas copies of the fingerprints "
                         "in DIR (a copy of a finished run's _work/pass-K)")
    ap.add_argument("--replicas", default="1,3,10")
    ap.add_argument("--results", default=None, help="JSON results file (default <dir>/scale.json)")
    args = ap.parse_args()
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.build_only:
        build_chunks(work, max(sizes), args.docs_per_gb, args.build_jobs, args.build_order == "desc")
        return
    recipe_file = work / "minhash-only.yaml"
    recipe_file.write_text(MINHASH_RECIPE)
    recipes = {r: (str(recipe_file) if r == "minhash" else r) for r in args.recipes.split(",")}
    if args.resolve_from:  # NAME:K:DIR (DIR = a run's _work/pass-K copy with fp-*.parquet)
        name, k, src = args.resolve_from.split(":", 2)
        found = str(Path(src).resolve())
        path = Path(args.results) if args.results else work / "resolve.json"
        rows = json.loads(path.read_text()) if path.exists() else []
        rows += resolve_at_scale(args, work, recipes[name], name, Path(found), int(k))
        path.write_text(json.dumps(rows, indent=1))
        return
    results_path = Path(args.results) if args.results else work / "scale.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    where = subprocess.run([args.python, "-c", "import thresher.pipeline as p; print(p.__file__)"], cwd=work,
                           capture_output=True, text=True, check=True).stdout.strip()
    print("thresher from", where, flush=True)
    for gb in sizes:
        inp = corpus(work, gb, args.docs_per_gb, args.build_jobs, consume=args.consume_chunks and gb == max(sizes))
        for name, recipe in [(n, r) for n, r in recipes.items() for _ in range(args.repeat)]:
            print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {name} on {gb} GB ({inp})", flush=True)
            r = run_one(args.python, recipe, inp, work / f"out_{name}_{gb}", work / f"tmp_{name}_{gb}", args.workers,
                        args.interval, args.disk_interval, args.timeline)
            r.update(recipe=name, gb=gb, input_mb=round(inp.stat().st_size / 2**20), docs_per_gb=args.docs_per_gb,
                     workers=args.workers, thresher=where, date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
            shutil.rmtree(work / f"out_{name}_{gb}", ignore_errors=True)
            shutil.rmtree(work / f"tmp_{name}_{gb}", ignore_errors=True)
            results.append(r)
            results_path.write_text(json.dumps(results, indent=1))
            print({k: v for k, v in r.items() if k not in ("curve", "op_seconds", "passes", "timeline", "markers")},
                  flush=True)
        if gb != max(sizes) or not args.keep_corpora:
            (work / f"corpus_{gb}gb.jsonl").unlink(missing_ok=True)
    md = table(results)
    (results_path.with_suffix(".md")).write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
