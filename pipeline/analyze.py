"""``thresher analyze``: every filter's stats on every row, nothing dropped.

An analysis is a run of the recipe in analysis mode (``Recipe.analysis``), on the same executors
and through the same ``BatchRunner`` code path, so a stat is computed by exactly the code a run
uses: every op sees every row, the rows an op *would* drop are counted as ``flagged`` in the
ledger, sampled in ``trace/`` and marked per row; the last pass writes, instead of the rows, each
row's id, lengths (characters, words, lines, tokens), every filter stat and, per op, the reason it
would drop the row. Those parts become one ``stats.parquet`` (one row per row analysed):

    id | chars | words | lines | tokens | <op>.<stat> ... | <op>.reason ...

It streams like a run (a shard at a time, bounded memory) and, like a run, leaves ``ledger.json``,
``profile.json`` (histograms) and ``report.html``; plus ``analysis.json``: per op the rows it
would drop alone and the rows it would be the first to drop (the funnel a run would see, dedup
aside: a run dedups only the rows earlier filters kept), and with ``--suggest`` threshold
suggestions and ``suggested.yaml``, the recipe with them applied.
"""

from __future__ import annotations

import difflib
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thresher.pipeline.columns import FLAGS, LINE, STATS
from thresher.pipeline.errors import ThresherError
from thresher.pipeline.profile import length_stats, row_text
from thresher.pipeline.recipe import Recipe

STATS_NAME = "stats.parquet"
ANALYSIS_NAME = "analysis.json"
SUGGESTED_NAME = "suggested.yaml"
LENGTHS = ("chars", "words", "lines", "tokens")


# ------------------------------------------------------------------------------ in the workers
TOKEN_SAMPLE_SEED = 0x7E57  # which rows the token sample holds: a hash of the row id (any executor, any order)


def token_sample(table: pa.Table, id_key: str, share: float) -> pa.Array | None:
    """Which rows of ``table`` have their tokens counted: all (None) at share 1, else the rows whose
    id hashes into the lowest ``share`` of the hash range — a seeded sample that does not depend on
    batches, workers or executor, and holds the same rows in every analysis of the same data."""
    if share >= 1:
        return None
    key = table.column(id_key) if id_key in table.column_names else table.column(LINE)
    h = pl.Series(key.combine_chunks()).cast(pl.Utf8).hash(seed=TOKEN_SAMPLE_SEED)
    return (h < int(share * 2**64)).to_arrow()


def row_stats(table: pa.Table, text_key: str, id_key: str, tokens: str | None, token_share: float = 1.0) -> pa.Table:
    """The analysis row of each row: id, lengths, every filter stat as ``<op>.<stat>`` and, per op,
    the reason it would drop the row as ``<op>.reason``. Tokens are counted on a seeded share of the
    rows (``token_share``; null elsewhere): exact BPE costs about what the whole run does, and a
    sample of a few percent gives the distribution and, scaled by characters, the total."""
    cols: dict[str, pa.Array] = {}
    if id_key in table.column_names:
        cols["id"] = table.column(id_key).combine_chunks()
    if LINE in table.column_names:
        cols["line"] = table.column(LINE).combine_chunks()
    text = row_text(table, text_key)
    if text is not None:
        for name, values in length_stats(text).items():
            cols[name] = pa.array(values, pa.int64())
        if tokens:
            from thresher.pipeline.tokenizers import token_counter

            counter = token_counter(tokens)
            sample = token_sample(table, id_key, token_share)
            if sample is None:
                cols["tokens"] = pa.array(counter.count(text.fill_null("").to_pylist()), pa.int64())
            else:
                picked = pc.indices_nonzero(sample)
                counts = counter.count(pc.take(text, picked).fill_null("").to_pylist())
                full = np.full(table.num_rows, -1, np.int64)
                full[picked.to_numpy()] = counts
                cols["tokens"] = pa.array(full, pa.int64(), mask=full < 0)
    for struct_col in (STATS, FLAGS):  # {op: {stat: v}} and {op: {reason: r}} -> "<op>.<stat>", "<op>.reason"
        if struct_col not in table.column_names:
            continue
        top = table.column(struct_col).combine_chunks()
        for i in range(top.type.num_fields):
            op_key = top.type.field(i).name
            inner = top.field(i)
            for j in range(inner.type.num_fields):
                cols[f"{op_key}.{inner.type.field(j).name}"] = inner.field(j)
    return pa.table(cols)


# ------------------------------------------------------------------------------ the recipe
@dataclass
class Options:
    """What ``--suggest`` proposes: the share of rows to keep (quantile) or the outliers to remove."""

    suggest: bool = False
    keep: float = 0.95  # each stat's bounds keep this share of rows (split between two bounds)
    sigma: float = 3.0  # or: remove rows beyond mean ± sigma standard deviations
    method: str = "quantile"  # which of the two goes into suggested.yaml
    notes: list[str] = field(default_factory=list)


def analysis_recipe(recipe: Recipe, *, output: str | None = None, sample: int | None = None, lang: bool = False,
                    llm: bool = False, tokens: str | None = "cl100k_base", token_share: float = 1.0,
                    options: Options | None = None) -> list[str]:
    """Turn ``recipe`` into its analysis (in place). Returns notes for the user (ops left out or added)."""
    from thresher.pipeline.recipe import OpSpec
    from thresher.pipeline.registry import get_op

    notes = []
    recipe.analysis = True
    recipe.analysis_tokens = tokens
    if not 0 < token_share <= 1:
        raise ThresherError(f"the token sample must be a share in (0, 1] (got {token_share})")
    recipe.analysis_token_share = token_share
    recipe.analysis_options = options or Options()
    out = recipe.model.output
    out.format = "parquet"
    out.keep_stats = False  # the analysis rows carry the stats
    out.path = output or out.path.rstrip("/") + "-analysis"
    if sample is not None:
        out.trace_samples = sample
    ops = list(recipe.ops)
    paid = next((i for i, s in enumerate(ops) if get_op(s.name).paid), None)
    if paid is not None and not llm:
        left = [s.key for s in ops[paid:]]
        notes.append(f"analysed the ops before '{ops[paid].key}', which sends paid LLM requests; left out: "
                     f"{', '.join(left)} (pass --llm to include them)")
        ops = ops[:paid]
    if lang and not any(s.name == "language_id" for s in ops):
        at = next((i for i, s in enumerate(ops) if get_op(s.name).kind() != "mapper"), len(ops))
        index = ops[at].index if at < len(ops) else len(recipe.ops)
        ops.insert(at, OpSpec(index=index, name="language_id", key="language_id",
                              params=get_op("language_id").Params(tag_only=True)))
        recipe.analysis_added.add("language_id")
        notes.append("added language_id (tag only) to measure languages")
    recipe.ops = ops
    recipe.analysis_options.notes = notes
    return notes


# ------------------------------------------------------------------------------ after the passes
def merge_stats(out: Path, files: list[str]) -> list[str]:
    """The analysis parts (``data/part-*.parquet``) -> one ``stats.parquet``, streamed a row group
    at a time (types unified across parts; a column a part lacks is null there). Safe to repeat
    after a crash: an existing ``stats.parquet`` is the merge already done."""
    from thresher.pipeline.io.unify import conform

    target = out / STATS_NAME
    parts = [out / f for f in files]
    if not target.exists():
        existing = [p for p in parts if p.exists()]
        if len(existing) != len(parts):
            missing = sorted(set(map(str, parts)) - set(map(str, existing)))[:3]
            raise ThresherError(f"analysis parts are missing ({', '.join(missing)}); run again with --overwrite")
        schemas = [pq.read_schema(p) for p in parts]
        schema = _unified(schemas)
        tmp = target.with_name(STATS_NAME + ".tmp")
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for p in parts:
                f = pq.ParquetFile(p)
                for g in range(f.num_row_groups):
                    writer.write_table(conform(f.read_row_group(g), schema))
        os.replace(tmp, target)
    for p in parts:
        p.unlink(missing_ok=True)
    data = out / "data"
    if data.is_dir() and not any(data.iterdir()):
        data.rmdir()
    return [STATS_NAME]


def _unified(schemas: list[pa.Schema]) -> pa.Schema:
    if not schemas:
        return pa.schema([("id", pa.string())])
    fields: dict[str, pa.DataType] = {}
    for s in schemas:
        for f in s:
            old = fields.get(f.name)
            if old is None or pa.types.is_null(old):
                fields[f.name] = f.type
            elif not pa.types.is_null(f.type) and old != f.type:
                fields[f.name] = pa.float64() if _numeric(old) and _numeric(f.type) else pa.string()
    order = [n for n in ("id", "line", *LENGTHS) if n in fields] + sorted(n for n in fields if n not in ("id", "line", *LENGTHS))
    return pa.schema([(n, fields[n] if not pa.types.is_null(fields[n]) else pa.string()) for n in order])


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def summarize(out: Path, recipe: Recipe, ops: list, options: Options) -> dict:
    """``analysis.json`` from ``stats.parquet``: rows, per op the rows it flags alone and first (in
    recipe order), and the threshold suggestions."""
    from thresher.pipeline.ops import Filter

    lf = pl.scan_parquet(out / STATS_NAME)
    names = lf.collect_schema().names()
    rows = lf.select(pl.len()).collect().item()
    reason_cols = [(op, f"{op.ctx.key}.reason") for op in ops if f"{op.ctx.key}.reason" in names]
    flagged = {}
    first = {}
    if reason_cols and rows:
        counts = lf.select([pl.col(c).is_not_null().sum().alias(op.ctx.key) for op, c in reason_cols]).collect().row(0)
        flagged = dict(zip([op.ctx.key for op, _ in reason_cols], counts, strict=True))
        first_expr = pl.coalesce([pl.when(pl.col(c).is_not_null()).then(pl.lit(op.ctx.key)) for op, c in reason_cols])
        vc = lf.select(first_expr.alias("first")).collect()["first"].drop_nulls().value_counts()
        first = dict(zip(vc["first"].to_list(), vc["count"].to_list(), strict=True))
    summary = {"rows": rows, "notes": options.notes, **_token_summary(lf, names, recipe),
               "ops": [{"key": op.ctx.key, "name": op.name, "flagged": int(flagged.get(op.ctx.key, 0)),
                        "first": int(first.get(op.ctx.key, 0))} for op in ops]}
    if options.suggest:
        summary["suggestions"] = suggestions(lf, names, rows, [op for op in ops if isinstance(op, Filter)], options)
        summary["method"] = options.method
    return summary


def _token_summary(lf: pl.LazyFrame, names: list[str], recipe: Recipe) -> dict:
    """Tokens counted (on the rows of the sample) and the total estimated for every row: the sample's
    tokens per character times all rows' characters (exact when every row was counted)."""
    if "tokens" not in names or "chars" not in names:
        return {}
    sampled = pl.col("tokens").is_not_null()
    counted, tokens, chars, all_chars = lf.select(
        sampled.sum().alias("n"), pl.col("tokens").sum().alias("t"), pl.col("chars").filter(sampled).sum().alias("c"),
        pl.col("chars").sum().alias("a")).collect().row(0)
    total = tokens if counted and chars == all_chars else round((tokens or 0) * all_chars / chars) if chars else 0
    return {"tokens": {"tokenizer": recipe.analysis_tokens, "share": recipe.analysis_token_share,
                       "rows_counted": int(counted), "counted": int(tokens or 0), "estimated_total": int(total)}}


def suggestions(lf: pl.LazyFrame, names: list[str], rows: int, filters: list, options: Options) -> list[dict]:
    """Per filter stat with a threshold parameter: the bounds that keep ``options.keep`` of the rows
    (quantiles), and the bounds at mean ± ``options.sigma`` standard deviations, each with the share
    of rows it would drop (exactly, on ``stats.parquet``) next to the current bounds'."""
    out = []
    tail = (1 - options.keep)
    for op in filters:
        for stat, bound in op.thresholds().items():
            col = f"{op.ctx.key}.{stat}"
            if col not in names or not rows:
                continue
            has_lo, has_hi = bound.lo_param is not None, bound.hi_param is not None
            share = tail / 2 if has_lo and has_hi else tail
            v = pl.col(col).cast(pl.Float64)
            q = lf.select(v.quantile(share, "lower").alias("lo"), v.quantile(1 - share, "higher").alias("hi"),
                          v.mean().alias("mean"), v.std().alias("std"), v.min().alias("min"),
                          v.max().alias("max")).collect().row(0, named=True)
            if q["mean"] is None:
                continue
            std = q["std"] or 0.0
            quant = {"lo": q["lo"] if has_lo else None, "hi": q["hi"] if has_hi else None}
            sig = {"lo": max(q["min"], q["mean"] - options.sigma * std) if has_lo else None,
                   "hi": min(q["max"], q["mean"] + options.sigma * std) if has_hi else None}
            for prop in (quant, sig):
                for side, param in (("lo", bound.lo_param), ("hi", bound.hi_param)):
                    if prop[side] is not None:
                        prop[side] = _param_value(op, param, prop[side], side)
            current = {"lo": bound.lo, "hi": bound.hi}
            shares = _drop_shares(lf, col, [current, quant, sig], bound.inclusive, rows)  # one scan
            quant["drop_share"], sig["drop_share"] = shares[1], shares[2]
            out.append({"op": op.ctx.key, "name": op.name, "index": op.ctx.index, "stat": stat,
                        "lo_param": bound.lo_param, "hi_param": bound.hi_param, "current": [bound.lo, bound.hi],
                        "current_drop_share": shares[0], "quantile": quant, "sigma": sig, "mean": q["mean"], "std": std})
    return out


def _param_value(op, param: str, value: float, side: str):
    """``value`` as the parameter takes it: an int parameter gets a whole number that keeps the rows
    the exact bound keeps (a lower bound rounds down, an upper one up); floats get 4 significant digits."""
    import typing

    head = param.split(".")[0]
    annotation = type(op.params).model_fields[head].annotation
    args = typing.get_args(annotation) or (annotation,)
    if "." not in param and int in args and float not in args:
        return int(math.floor(value) if side == "lo" else math.ceil(value))
    return float(f"{value:.4g}")


def _drop_shares(lf: pl.LazyFrame, col: str, bounds: list[dict], inclusive: bool, rows: int) -> list[float]:
    """The share of rows each ``{lo, hi}`` puts outside (as ``Bound.masks`` decides), in one scan."""
    v = pl.col(col).cast(pl.Float64)
    exprs = []
    for i, b in enumerate(bounds):
        cond = pl.lit(False)
        if b["lo"] is not None:
            cond = cond | ((v < b["lo"]) if inclusive else (v <= b["lo"]))
        if b["hi"] is not None:
            cond = cond | ((v > b["hi"]) if inclusive else (v >= b["hi"]))
        exprs.append(cond.fill_null(False).sum().alias(f"s{i}"))
    counts = lf.select(exprs).collect().row(0)
    return [round(n / rows, 6) if rows else 0.0 for n in counts]


# ------------------------------------------------------------------------------ the recipe diff
def suggested_recipe(recipe: Recipe, found: list[dict], method: str) -> tuple[str, str]:
    """(new recipe text, unified diff) with the suggested bounds written into the recipe's own file
    (ruamel.yaml round trip: comments, order and ``${VAR}`` kept). Values set by ``--set`` on the
    command line are not in the file, and so not in the diff."""
    from ruamel.yaml import YAML

    path = Path(recipe.source)
    if not path.is_file():
        raise ThresherError(f"cannot write suggestions: the recipe '{recipe.source}' is not a file")
    from ruamel.yaml.util import load_yaml_guess_indent

    text = path.read_text(encoding="utf-8")
    _, seq_indent, offset = load_yaml_guess_indent(text)
    yaml = YAML()  # round-trip, in the file's own indentation
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=_mapping_indent(text), sequence=seq_indent or 2, offset=offset or 0)
    doc = yaml.load(text)
    process = doc.get("process") or []
    # op -> param -> value; a parameter that bounds several stats (gopher's max_symbol_word_ratio)
    # takes the loosest of their suggestions, so it drops no row that one of them keeps
    values: dict[str, dict[str, float]] = {}
    for s in found:
        for side, param in (("lo", s["lo_param"]), ("hi", s["hi_param"])):
            value = s[method][side]
            if param is None or value is None:
                continue
            mine = values.setdefault(s["op"], {})
            mine[param] = value if param not in mine else (min if side == "lo" else max)(mine[param], value)
    for spec in recipe.ops:
        if spec.key not in values or spec.key in recipe.analysis_added or spec.index >= len(process):
            continue
        item = process[spec.index]
        if not hasattr(item, "keys") or len(item) != 1:
            continue
        name = next(iter(item.keys()))  # as written (a former name stays)
        if item[name] is None:
            item[name] = {}
        params = item[name]
        for param, value in values[spec.key].items():
            head, _, key = param.partition(".")
            if key:
                if params.get(head) is None:
                    params[head] = dict(getattr(spec.params, head))
                sub = params[head]
                existing = next((k for k in sub if str(k) == key), None)
                sub[existing if existing is not None else (int(key) if key.lstrip("-").isdigit() else key)] = value
            else:
                params[head] = value
    buf = io.StringIO()
    yaml.dump(doc, buf)
    new = buf.getvalue()
    diff = "".join(difflib.unified_diff(text.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=str(path), tofile=SUGGESTED_NAME))
    return new, diff


def _mapping_indent(text: str) -> int:
    """The indentation of nested mappings in a YAML text (the smallest indent of a ``key:`` line)."""
    import re

    found = [len(m.group(1)) for m in re.finditer(r"^( +)[A-Za-z_][\w-]*\s*:", text, re.M)]
    return min(found) if found else 2


# ------------------------------------------------------------------------------ the driver
def finish_analysis(out: Path, recipe: Recipe, ops: list) -> tuple[dict, list[str]]:
    """After the ledger: ``analysis.json`` (and ``suggested.yaml``). Returns (summary, files written)."""
    from thresher.pipeline.io.writers import write_bytes_atomic, write_json_atomic

    options = recipe.analysis_options
    summary = summarize(out, recipe, ops, options)
    written = [ANALYSIS_NAME]
    if options.suggest and summary.get("suggestions") and Path(recipe.source).is_file():
        new, diff = suggested_recipe(recipe, summary["suggestions"], options.method)
        write_bytes_atomic(out / SUGGESTED_NAME, new.encode())
        summary["diff"] = diff
        written.append(SUGGESTED_NAME)
    write_json_atomic(out / ANALYSIS_NAME, summary)
    return summary, written
