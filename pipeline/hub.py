"""``thresher push-hf OUT ORG/NAME``: a finished output as a Hugging Face Hub dataset. ``OUT`` is a
local directory (an output published to a bucket is synced down first).

What goes up (staged in a temporary folder first, so what is uploaded is exactly what was checked):

- ``data/train-NNNNN-of-MMMMM.parquet``: the output's parts in their order (``ledger.json``'s file
  list), under the Hub's shard naming. Parquet parts are linked as they are; JSONL parts (plain,
  ``.gz``, ``.zst``) are converted to Parquet (zstd). Every shard gets the one schema that all parts
  unify to (``pipeline.io.unify``), so ``datasets.load_dataset`` and the dataset viewer read them as
  one table.
- ``README.md``: the dataset card. Its YAML front matter declares the config (``data_files``) and a
  license placeholder to set; its body is the ledger's funnel — rows in, kept, dropped and
  quarantined per op, and every reason with its rows — plus the recipe's name and fingerprint. No
  local path and no credential goes into it.

The upload is one ``HfApi.upload_folder`` commit (after ``create_repo(..., exist_ok=True)`` and, for
``--revision``, ``create_branch``) that also deletes the repo's older ``data/`` shards, so a re-push
with fewer shards leaves no stale ones. The token is huggingface_hub's own: ``HF_TOKEN`` or what
``hf auth login`` stored, never the recipe's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from thresher.pipeline.errors import ThresherError

DATA_GLOB = "data/train-*.parquet"
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]


@dataclass
class Staged:
    folder: Path  # README.md and data/*.parquet, as they go up
    files: dict[str, str]  # output part (relative to OUT) -> path in the repo
    rows: int
    schema: pa.Schema


def read_output(out: str | os.PathLike) -> tuple[Path, dict, list[str]]:
    """A finished output's directory, ledger and data parts (relative names, in order)."""
    out = Path(out)
    if not (out / "ledger.json").is_file():
        raise ThresherError(f"'{out}' is not a thresher output (no ledger.json)")
    if not (out / "_SUCCESS").is_file():
        raise ThresherError(f"'{out}' is an unfinished run (no _SUCCESS); finish it with `thresher run ... --resume` "
                            "before pushing it")
    ledger = json.loads((out / "ledger.json").read_text(encoding="utf-8"))
    files = list(ledger.get("run", {}).get("files") or []) or sorted(
        str(p.relative_to(out)) for p in (out / "data").rglob("part-*") if p.is_file())
    bad = [f for f in files if not (f.endswith(".parquet") or f.endswith(JSONL_SUFFIXES))]
    if bad:
        raise ThresherError(f"push-hf writes Parquet from Parquet or JSONL parts; '{bad[0]}' is neither")
    return out, ledger, files


def shard_names(files: list[str]) -> dict[str, str]:
    """Output part -> the Hub's shard name, in the output's order."""
    n = len(files)
    return {f: f"data/train-{i:05d}-of-{n:05d}.parquet" for i, f in enumerate(files)}


def _to_parquet(src: Path, dest: Path) -> pa.Schema:
    """One part as a Parquet file at ``dest`` (linked if it is one already); its schema."""
    if src.name.endswith(".parquet"):
        try:
            os.link(src, dest)
        except OSError:  # another filesystem
            shutil.copyfile(src, dest)
        return pq.read_schema(dest)
    block = 1 << 24
    while True:  # pyarrow's JSON reader wants a whole row within one block: a bigger block for long rows
        try:
            with pa.input_stream(str(src), compression="detect") as stream:
                table = pajson.read_json(stream, read_options=pajson.ReadOptions(block_size=block))
            break
        except pa.ArrowInvalid as e:
            if "straddl" not in str(e) or block >= 1 << 30:
                raise ThresherError(f"cannot convert output part {src.name} to Parquet: {str(e).splitlines()[0]}") from None
            block *= 4
    pq.write_table(table, dest, compression="zstd")
    return table.schema


def _unify(paths: list[Path], schemas: list[pa.Schema]) -> pa.Schema:
    """Rewrite the shards whose schema is not the union of all (``pipeline.io.unify``); the union."""
    from thresher.pipeline.io.unify import conform, target_schema

    target = target_schema(schemas) if len(schemas) > 1 else schemas[0].remove_metadata()
    if target is None:
        raise ThresherError("the output's parts have columns whose types cannot be reconciled into one schema; "
                            "the Hub's dataset viewer needs one")
    for path, schema in zip(paths, schemas, strict=True):
        if schema.remove_metadata().equals(target):
            continue
        tmp = path.with_name(path.name + ".tmp")
        pf = pq.ParquetFile(path)
        with pq.ParquetWriter(str(tmp), target, compression="zstd") as w:
            for i in range(pf.num_row_groups):
                w.write_table(conform(pf.read_row_group(i), target))
        os.replace(tmp, path)  # a linked part is replaced by the rewrite, never written through
    return target


def stage(out: str | os.PathLike, repo_id: str, dest: str | os.PathLike, license: str = "other") -> Staged:
    """Lay out, in ``dest``, exactly what ``push`` uploads for output ``out``."""
    out, ledger, files = read_output(out)
    if not files:
        raise ThresherError(f"'{out}' has no data parts to push (the run kept no rows)")
    folder = Path(dest)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    names = shard_names(files)
    paths = [folder / names[f] for f in files]
    schemas = [_to_parquet(out / f, p) for f, p in zip(files, paths, strict=True)]
    schema = _unify(paths, schemas)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
    (folder / "README.md").write_text(dataset_card(ledger, repo_id, rows, schema, license), encoding="utf-8")
    return Staged(folder, names, rows, schema)


def size_category(rows: int) -> str:
    return next((label for limit, label in SIZE_CATEGORIES if rows < limit), "n>1B")


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def funnel_markdown(ledger: dict) -> str:
    """The ledger's funnel and reasons as Markdown tables."""
    lines = ["| op | rows in | kept | dropped | quarantined |", "|---|---:|---:|---:|---:|"]
    reasons = []
    for key, e in ledger.get("ops", {}).items():
        dropped, quarantined = e.get("dropped", {}), e.get("quarantined", {})
        lines.append(f"| {_cell(key)} | {e['rows_in']:,} | {e['rows_out']:,} | {sum(dropped.values()):,} | "
                     f"{sum(quarantined.values()):,} |")
        for kind, counter in (("dropped", dropped), ("quarantined", quarantined)):
            for reason, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
                reasons.append(f"| {_cell(key)} | {kind} | {_cell(reason)} | {n:,} |")
    t = ledger.get("totals", {})
    lines.append("")
    lines.append(f"Rows in {t.get('input', 0):,} (+ {t.get('created', 0):,} created) = kept {t.get('output', 0):,} "
                 f"+ dropped {t.get('dropped', 0):,} + quarantined {t.get('quarantined', 0):,}"
                 f"{'' if ledger.get('balanced', True) else ' (the ledger does NOT balance)'}.")
    if reasons:
        lines += ["", "Why rows left:", "", "| op | | reason | rows |", "|---|---|---|---:|", *reasons]
    return "\n".join(lines)


def dataset_card(ledger: dict, repo_id: str, rows: int, schema: pa.Schema, license: str = "other") -> str:
    """README.md: YAML front matter (license placeholder, configs/data_files) and the funnel."""
    import yaml

    run = ledger.get("run", {})
    front = {
        "license": license,
        "pretty_name": repo_id.split("/")[-1],
        "size_categories": [size_category(rows)],
        "tags": ["thresher"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": DATA_GLOB}]}],
    }
    columns = "\n".join(f"- `{f.name}`: {f.type}" for f in schema)
    note = ("\n> **License**: `other` is a placeholder; set the license of the source data (the `license:` "
            "field above).\n" if license == "other" else "")
    return (f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n\n# {repo_id}\n{note}\n"
            f"{rows:,} rows curated with thresher, recipe "
            f"`{run.get('recipe', '?')}` (fingerprint `{run.get('fingerprint', '?')}`, run `{run.get('run_id', '?')}`, "
            f"executor {run.get('executor', '?')}).\n\n"
            "```python\nfrom datasets import load_dataset\n\n"
            f"ds = load_dataset(\"{repo_id}\", split=\"train\")\n```\n\n"
            f"## Columns\n\n{columns}\n\n## Funnel\n\n{funnel_markdown(ledger)}\n")


def _hub_error(e: Exception, repo_id: str) -> ThresherError:
    status = getattr(getattr(e, "response", None), "status_code", None)
    name = type(e).__name__
    if name == "LocalTokenNotFoundError" or status == 401:
        return ThresherError(f"the Hub refused to push {repo_id}: not logged in; set HF_TOKEN to a write token "
                             "or run `hf auth login`")
    if status == 403:
        return ThresherError(f"the Hub refused to push {repo_id}: the token cannot write to "
                             f"'{repo_id.split('/')[0]}' (a write token of a member of it is needed)")
    first = (str(e).splitlines() or [""])[0][:300]
    return ThresherError(f"pushing {repo_id} to the Hub failed: {name}: {first}")


def push(out: str | os.PathLike, repo_id: str, private: bool = False, revision: str | None = None,
         license: str = "other", api=None) -> tuple[Staged, str]:
    """Stage ``out`` and upload it as dataset ``repo_id`` in one commit; (what was staged, commit URL).
    ``api``: an ``HfApi`` (default: one with huggingface_hub's own token lookup)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
        if "/" not in repo_id:
            raise HFValidationError("give it as ORG/NAME")
    except HFValidationError as e:
        raise ThresherError(f"'{repo_id}' is not a Hub dataset name: {str(e).splitlines()[0]}") from None
    api = api or HfApi()
    tmp = Path(tempfile.mkdtemp(prefix="thresher-hf-"))
    try:
        staged = stage(out, repo_id, tmp / "repo", license)
        try:
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(staged.folder),
                                     revision=revision, delete_patterns=["data/*"],
                                     commit_message=f"thresher: {staged.rows:,} rows in {len(staged.files)} shards")
        except Exception as e:  # noqa: BLE001 - huggingface_hub's HTTP and auth errors: one line
            if isinstance(e, ThresherError):
                raise
            raise _hub_error(e, repo_id) from None
        return staged, str(getattr(info, "commit_url", info))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
