"""Drop rates of Data-Juicer configs converted by `thresher import-dj`, against Data-Juicer itself on the same input.

    python bench/import_dj.py                 # 3 configs, real text from ../shared/data, Data-Juicer in a throwaway venv
    python bench/import_dj.py --skip-dj       # thresher only
    python bench/import_dj.py --configs data_juicer_recipes/pile-nih-refine.yaml

Input: every document of ../shared/data's C4 demo, trafilatura's web-page texts, DCLM's dev set and the
State of the Union addresses, and the first --spam e-mails of the SpamAssassin corpus ({id, text} JSONL).

Each config (a fixture under tests/fixtures/data_juicer/, Data-Juicer's own) is first made runnable offline,
for both tools alike: Data-Juicer downloads models and word lists at run time, and this machine reaches PyPI
only. So perplexity_filter (a KenLM model) and alphanumeric_filter with tokenization: true (a Hugging Face
tokenizer) are removed, tokenization: true elsewhere (a SentencePiece model) becomes false, the flagged-word and
stop-word lists given to Data-Juicer are thresher's built-in English ones, and Data-Juicer's fastText model is
thresher's cached lid.176.ftz. Data-Juicer runs that variant (its dj-process, through
../shared/tools/peers/dj_run.py, which blocks its run-time package installer) in a venv under --work, never in the
project's environment; thresher runs `thresher import-dj` of the same variant. Printed: rows kept and the drop rate
per tool, the share of documents on which they agree, and rows dropped per op (Data-Juicer's from its log).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import SHARED  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "data_juicer"
PEERS = SHARED / "tools" / "peers"
CONFIGS = ["reproduced_bloom/bloom-oscar.yaml", "data_juicer_recipes/redpajama-c4-refine.yaml",
           "data_juicer_recipes/alpaca_cot/alpaca-cot-en-refine.yaml"]
DJ_EXTRAS = ["ftfy", "simhash-pybind", "fasttext-predict"]  # what these ops import lazily (DJ would pip-install them)


def make_input(path: Path, spam: int) -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        raise SystemExit(f"{data} not found: this benchmark reads ../shared/data beside the checkout")

    def jsonl(p: Path):
        with (gzip.open(p, "rt", encoding="utf-8") if p.suffix == ".gz" else open(p, encoding="utf-8")) as f:
            yield from (json.loads(line) for line in f)

    sources = [("c4", jsonl(data / "llamafactory_c4_wiki_demo" / "c4_demo.jsonl")),
               ("web", jsonl(data / "trafilatura_eval_web_pages" / "extracted_text.trafilatura.jsonl.gz")),
               ("dclm", jsonl(data / "dclm_human_quality_dev" / "dev.jsonl")),
               ("sotu", jsonl(data / "us_state_of_the_union_addresses" / "sotu.jsonl.gz")),
               ("spam", itertools.islice(jsonl(data / "spamassassin_public_corpus" / "spamassassin.jsonl.gz"), spam))]
    with open(path, "w", encoding="utf-8") as out:
        for prefix, rows in sources:
            for i, row in enumerate(rows):
                if row.get("text"):
                    out.write(json.dumps({"id": f"{prefix}-{i}", "text": row["text"]}) + "\n")
    return path


def offline_variant(cfg: dict, assets: Path) -> tuple[dict, list[str]]:
    """The config with what needs a download taken out (the same for both tools); what changed."""
    process, changes = [], []
    for entry in cfg["process"]:
        (name, params), = entry.items()
        params = dict(params or {})
        if name == "perplexity_filter":
            changes.append("perplexity_filter removed (KenLM model)")
            continue
        if name == "alphanumeric_filter" and params.get("tokenization"):
            changes.append("alphanumeric_filter with tokenization: true removed (Hugging Face tokenizer)")
            continue
        if params.get("tokenization") is True:
            params["tokenization"] = False
            changes.append(f"{name}: tokenization: false (SentencePiece model)")
        if name == "flagged_words_filter":
            params["flagged_words_dir"] = str(assets)
        if name == "stopwords_filter":
            params["stopwords_dir"] = str(assets)
        process.append({name: params})
    return {**cfg, "process": process}, changes


def write_assets(work: Path) -> tuple[Path, Path]:
    """Data-Juicer's word lists (thresher's English ones) and a models dir holding thresher's lid.176."""
    from thresher.operators.filter.wordlists import flagged_words, stop_words
    from thresher.pipeline.assets import LID176, asset_path

    assets, models = work / "import-dj-assets", work / "import-dj-models"
    assets.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    (assets / "flagged_words.json").write_text(json.dumps({"en": flagged_words("en")}))
    (assets / "stopwords.json").write_text(json.dumps({"en": stop_words("en")}))
    lid = models / "lid.176.bin"
    if not lid.exists():
        lid.symlink_to(asset_path(LID176))
    return assets, models


def ensure_dj(work: Path) -> Path:
    from filters import ensure_venv

    py = ensure_venv(work, "dj", ["py-data-juicer"], PEERS / "overlay_dj_requirements.txt")
    if subprocess.run([str(py), "-c", "import ftfy, simhash, fasttext"], capture_output=True).returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", *DJ_EXTRAS], check=True)
    return py


def run_dj(py: Path, config: Path, inp: Path, out: Path, models: Path, workers: int) -> tuple[float, set[str], dict]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": "", "HF_DATASETS_CACHE": str(out / "hf-cache"),
           "DATA_JUICER_EXTERNAL_MODELS_HOME": str(models)}
    t0 = time.perf_counter()
    p = subprocess.run([str(py), str(PEERS / "dj_run.py"), "--config", str(config), "--dataset_path", str(inp),
                        "--export_path", str(out / "kept.jsonl"), "--np", str(workers)],
                       env=env, cwd=str(out), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (out / "dj.log").write_text(p.stdout + p.stderr)
    if p.returncode != 0:
        raise SystemExit(f"Data-Juicer failed ({p.returncode}); its log: {out / 'dj.log'}")
    kept = {json.loads(x)["id"] for x in (out / "kept.jsonl").read_text().splitlines()}
    per_op: dict[int, tuple[str, int | None]] = {}  # process index -> (op, rows it dropped)
    start = re.search(r"(\d+) samples left after filtering empty text", p.stderr)
    left = int(start.group(1)) if start else None
    for m in re.finditer(r"\[(\d+)/\d+\] OP \[(\w+)\] Done in [\d.]+s\. Left (\d+) samples", p.stderr):
        n = int(m.group(3))
        per_op[int(m.group(1)) - 1] = (m.group(2), (left - n) if left is not None else None)
        left = n
    return wall, kept, per_op


def run_thresher(config: Path, inp: Path, out: Path, workers: int) -> tuple[float, set[str], dict]:
    from thresher.pipeline.import_dj import convert_file

    conv = convert_file(config)
    recipe = out.parent / f"{out.name}.recipe.yaml"
    recipe.write_text(conv.text)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "thresher", "run", str(recipe), "--input", str(inp), "--output", str(out),
                    "--workers", str(workers), "-q"], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    kept = set()
    for f in sorted(glob.glob(str(out / "data" / "*.jsonl"))):
        kept |= {json.loads(x)["id"] for x in Path(f).read_text().splitlines()}
    ledger = json.loads((out / "ledger.json").read_text())["ops"]
    dj_index = [r.index for r in conv.results for _ in r.steps]  # recipe process index -> the DJ op's index
    per_op: dict[int, tuple[str, int]] = {}  # DJ process index -> (thresher ops, rows they dropped)
    for key, v in ledger.items():
        if key == "read" or not 0 <= v["index"] < len(dj_index):
            continue
        names, dropped = per_op.get(dj_index[v["index"]], ("", 0))
        per_op[dj_index[v["index"]]] = (f"{names} + {key}" if names else key, dropped + v["rows_in"] - v["rows_out"])
    return wall, kept, per_op


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=CONFIGS, help="fixture paths under tests/fixtures/data_juicer/")
    ap.add_argument("--spam", type=int, default=2000, help="SpamAssassin e-mails in the input (of 6,046)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-dj", action="store_true")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "thresher-bench")
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    inp = make_input(work / "import_dj_input.jsonl", args.spam)
    with open(inp) as f:
        ids = [json.loads(x)["id"] for x in f]
    assets, models = write_assets(work)
    dj_py = None if args.skip_dj else ensure_dj(work)

    import yaml

    summary = []
    for rel in args.configs:
        name = Path(rel).stem
        cfg = yaml.safe_load((FIXTURES / rel).read_text())
        variant, changes = offline_variant(cfg, assets)
        vpath = work / f"import-dj-{name}.yaml"
        vpath.write_text(yaml.safe_dump(variant, sort_keys=False))
        th_wall, th_kept, th_ops = run_thresher(vpath, inp, work / f"out-import-dj-thresher-{name}", args.workers)
        row = {"config": rel, "changes": changes, "process": variant["process"], "rows": len(ids),
               "thresher_kept": len(th_kept),
               "thresher_s": th_wall, "thresher_ops": th_ops}
        if dj_py:
            dj_wall, dj_kept, dj_ops = run_dj(dj_py, vpath, inp, work / f"out-import-dj-dj-{name}", models, args.workers)
            agree = sum((i in th_kept) == (i in dj_kept) for i in ids) / len(ids)
            row.update(dj_kept=len(dj_kept), dj_s=dj_wall, dj_ops=dj_ops, agree=agree)
        summary.append(row)

    print(f"\n{len(ids):,} documents ({inp}); {args.workers} workers; {time.strftime('%Y-%m-%d')}")
    print("| config | Data-Juicer kept | dropped | thresher kept | dropped | difference | same decision | wall s (DJ / thresher) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in summary:
        n, th = r["rows"], 1 - r["thresher_kept"] / r["rows"]
        if "dj_kept" in r:
            dj = 1 - r["dj_kept"] / n
            print(f"| {r['config']} | {r['dj_kept']:,} | {dj:.1%} | {r['thresher_kept']:,} | {th:.1%} | "
                  f"{(th - dj) * 100:+.1f} pts | {r['agree']:.1%} | {r['dj_s']:.0f} / {r['thresher_s']:.0f} |")
        else:
            print(f"| {r['config']} | | | {r['thresher_kept']:,} | {th:.1%} | | | / {r['thresher_s']:.0f} |")
    for r in summary:
        print(f"\n{r['config']} (offline variant: {'; '.join(sorted(set(r['changes']))) or 'as shipped'})")
        print("| Data-Juicer op | dropped | thresher op | dropped |\n|---|---|---|---|")
        th_ops, dj_ops = r["thresher_ops"], r.get("dj_ops", {})
        names = [next(iter(e)) for e in r["process"]]
        for i, name in enumerate(names):
            dj, th = dj_ops.get(i, (name, "")), th_ops.get(i, ("(not converted)", ""))
            print(f"| {name} | {dj[1] if dj[1] is not None else '?'} | {th[0]} | {th[1]} |")


if __name__ == "__main__":
    main()
