"""thresher's public API: the one module op authors and notebook users import from.

Everything else under ``thresher`` (``thresher.pipeline``, ``thresher.operators``, ...) is internal:
it is reorganised when the engine needs it, without notice. The names in ``__all__`` keep their
meaning, so a plugin written against this module keeps working.

- Writing an op: subclass ``Filter``, ``Mapper`` or ``GlobalOp``, give it a ``name``, a docstring,
  ``Params`` (an ``OpParams`` whose fields have descriptions) and ``@register`` it. The guide is
  docs/writing-operators.md; ``thresher.testing`` checks an op and runs it in tests.
- Trying one in a notebook: ``apply_op(name, table, **params)`` runs it on a ``pyarrow.Table``
  through the code a real run decides with (a filter drops a row by its first failing rule, a
  mapper may drop or quarantine rows, a global op fingerprints, resolves and applies); its
  ``apply_op_report`` twin also returns the dropped and quarantined rows with their reasons.
- Running a recipe: ``run_recipe(...)`` (a shipped recipe's name, a path, YAML text or a dict).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from thresher.pipeline.columns import (
    LINE,
    REASON,
    ROW,
    ROWS_TAG,
    SHARD,
    bounds_masks,
    drop_decisions,
    set_column,
)
from thresher.pipeline.errors import RecipeError
from thresher.pipeline.ops import Filter, GlobalOp, Mapper, MapResult, Op, OpContext, OpParams, Resources
from thresher.pipeline.registry import register

__all__ = [
    # writing ops
    "Filter", "Mapper", "GlobalOp", "OpParams", "Resources", "MapResult", "register",
    "set_column", "bounds_masks", "drop_decisions", "SHARD", "ROW", "REASON",
    # using them
    "apply_op", "apply_op_report", "OpReport", "run_recipe", "RecipeRun",
]


# ----------------------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class RecipeRun:
    """What ``run_recipe`` did: where the output is, how many rows it holds, and the ledger."""

    path: Path  # the output directory (rows under data/, ledger.json, quarantine/, trace/)
    rows: int  # rows written
    ledger: dict  # ledger.json: per op rows in/out, dropped and quarantined by reason; totals; status
    seconds: float
    notes: tuple[str, ...] = ()  # deprecations met while loading the recipe (former op names)

    @property
    def data(self) -> Path:
        return self.path / "data"

    def read(self) -> pa.Table:
        """The output rows as one table (parts in file order; JSONL and Parquet, compressed or not)."""
        import pyarrow.json as pj
        import pyarrow.parquet as pq

        parts = []
        for f in sorted(self.data.glob("part-*")):
            if f.suffix == ".parquet":
                parts.append(pq.read_table(f))
            else:
                with pa.input_stream(str(f), compression="detect") as stream:
                    parts.append(pj.read_json(stream))
        if not parts:
            return pa.table({})
        return pa.concat_tables(parts, promote_options="permissive")


def run_recipe(recipe: str | os.PathLike | Mapping[str, Any], *, input: str | os.PathLike | Iterable | None = None,
               output: str | os.PathLike | None = None, sets: Iterable[str] | Mapping[str, Any] | None = None,
               executor: str | None = None, workers: int | None = None, resume: bool = False,
               overwrite: bool = False) -> RecipeRun:
    """Run a recipe as ``thresher run`` does and return where its output went.

    ``recipe``: a shipped recipe's name (``"quickstart"``), a path, YAML text (anything with a line
    break, or a ``{...}`` flow mapping) or a dict. ``input``/``output``/``executor``/``workers``
    replace the recipe's values like the command's options; ``sets`` are ``--set`` overrides, as
    ``["process.text_length_filter.min_words=20"]`` or ``{"process.text_length_filter.min_words": 20}``.
    Errors are ``thresher``'s one-line errors (``RecipeError``, ``InputError``, ``OutputError``, ...).
    """
    from thresher.pipeline.recipe import load_recipe, parse_recipe
    from thresher.pipeline.run import run

    if isinstance(input, (str, os.PathLike)):
        inputs = [os.fspath(input)]
    else:
        inputs = [os.fspath(p) for p in input] if input is not None else None
    overrides = ([f"{k}={json.dumps(v)}" for k, v in sets.items()] if isinstance(sets, Mapping)
                 else list(sets or []))
    kw = {"inputs": inputs, "output": os.fspath(output) if output is not None else None,
          "executor": executor, "workers": workers}
    if isinstance(recipe, Mapping):
        text = json.dumps(recipe, default=os.fspath)  # JSON is YAML; paths become strings
        loaded = parse_recipe(text, "<dict>", overrides, **kw)
    elif isinstance(recipe, str) and ("\n" in recipe or recipe.lstrip().startswith("{")):
        loaded = parse_recipe(recipe, "<yaml>", overrides, **kw)
    elif isinstance(recipe, (str, os.PathLike)):
        loaded = load_recipe(os.fspath(recipe), overrides, **kw)
    else:
        raise TypeError(f"run_recipe takes a recipe name, a path, YAML text or a dict, not {type(recipe).__name__}")
    result = run(loaded, resume=resume, overwrite=overwrite)
    if result.url:  # published to an object store: the ledger is read back from there (staging is gone)
        from thresher.pipeline.io.objectstore import RemoteOutput

        ledger = RemoteOutput(result.url).read_json("ledger.json") or {}
    else:
        ledger = json.loads((Path(result.out) / "ledger.json").read_text(encoding="utf-8"))
    return RecipeRun(Path(result.out), result.output_rows, ledger, result.seconds, tuple(loaded.notes))


# ----------------------------------------------------------------------------------------- one op
@dataclass
class OpReport:
    """What ``apply_op_report`` did with each row of the table it was given.

    ``dropped`` and ``quarantined`` hold the *input* rows (as they were given), in input order,
    with their reasons in the aligned lists; a row that an op expanded into (``Op.expand``) dropped
    has the reason prefixed with that op's key (``quality_classifier.top: ...``). A row a 1:N op
    created and then dropped is given as far as the trace names it (its text)."""

    table: pa.Table  # what the op kept or produced, as a run would write it
    dropped: pa.Table
    drop_reasons: list[str]
    quarantined: pa.Table
    quarantine_reasons: list[str]
    stats: dict[str, pa.Array] = field(default_factory=dict)  # a filter's stats, aligned with the input rows
    ledger: dict[str, dict] = field(default_factory=dict)  # per op key, as in ledger.json's "ops"
    key: str = ""  # the op's ledger key

    @property
    def ledger_entry(self) -> dict:
        """The op's own ledger entry (rows in/out, dropped and quarantined by reason, counters)."""
        return self.ledger[self.key]


def apply_op(op: str | type[Op] | Op, table: pa.Table | Iterable[Mapping], *, text_key: str | None = "text",
             id_key: str = "id", seed: int = 0, params: Mapping[str, Any] | None = None, **op_params) -> pa.Table:
    """Run one op on a table, in this process, and return the rows it keeps (or produces).

    The rows go through the same decisions as in a real run: a filter drops a row by its first
    failing rule, a mapper may drop or quarantine rows, a global op fingerprints every row,
    resolves over all of them and applies the result. ``op`` is a registered name (or a former
    one), an op class (registered or not) or an op instance. Parameters are keyword arguments,
    validated as a recipe's are; one named like an argument of this function goes in
    ``params={...}``. Rows that went to quarantine are announced with a warning; the rows and
    reasons of every drop are in ``apply_op_report``."""
    report = apply_op_report(op, table, text_key=text_key, id_key=id_key, seed=seed, params=params, **op_params)
    if report.quarantine_reasons:
        warnings.warn(f"{len(report.quarantine_reasons)} of {report.ledger_entry['rows_in']} rows went to quarantine "
                      f"(first: {report.quarantine_reasons[0]}); apply_op_report shows them", stacklevel=2)
    return report.table


def apply_op_report(op: str | type[Op] | Op, table: pa.Table | Iterable[Mapping], *, text_key: str | None = "text",
                    id_key: str = "id", seed: int = 0, params: Mapping[str, Any] | None = None,
                    **op_params) -> OpReport:
    """``apply_op``, returning the kept table together with the dropped and quarantined rows, their
    reasons, a filter's stats per row and the ledger entries (see ``OpReport``). The ledger is
    checked as a run checks it: an op that loses or invents rows raises ``LedgerImbalance``."""
    from thresher.pipeline.ledger import READ, Ledger
    from thresher.pipeline.runner import BatchRunner

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pylist([dict(r) for r in table])
    ops = _build(op, {**(params or {}), **op_params}, text_key, id_key, seed)
    main = ops[0]
    for o in ops:
        o.prepare()
    given = table.drop_columns([LINE]) if LINE in table.column_names else table
    n = given.num_rows
    # Each row carries its 1-based position in the provenance column a run carries its input line
    # in, and the runner names rows by it (as the id of trace and quarantine records): every drop
    # and quarantine maps back to the row given, whatever the op did to the rows' own columns.
    rows = given.append_column(LINE, pa.array(np.arange(1, n + 1, dtype=np.int64)))
    runner = BatchRunner([o for o in ops if not isinstance(o, GlobalOp)], text_key or "", LINE,
                         keep_stats=False, trace_n=sys.maxsize)
    captured = _instrument(ops)
    ledger = Ledger([(o.ctx.key, o.name, o.ctx.index) for o in ops])
    ledger[READ].rows_in = ledger[READ].rows_out = n
    try:
        for o in ops:
            if rows.num_rows == 0:
                break  # as in a run: ops after one that kept nothing see nothing
            rows = _run_global(o, rows, runner, ledger) if isinstance(o, GlobalOp) else runner.run_op(o, rows, ledger)
    finally:
        for o in ops:  # an op instance the caller gave is left as it was
            o.__dict__.pop("compute_stats", None)
            o.__dict__.pop("process", None)
    ledger.check_balance(rows.num_rows)

    dropped = [(rec.get("id"), _reason(o, main, rec["reason"]), rec.get("text"))
               for o in ops for rec in runner.trace.get(o.ctx.key, [])]
    quarantined = [(rec.get("id") or rec.get("line"), _reason(o, main, rec["reason"]), rec.get("raw"))
                   for o in ops for rec in runner.quarantine if rec.get("stage") == o.ctx.key]
    d_table, d_reasons = _given_rows(given, dropped, text_key, raw=False)
    q_table, q_reasons = _given_rows(given, quarantined, text_key, raw=True)
    out = rows.drop_columns([LINE]) if LINE in rows.column_names else rows
    return OpReport(out, d_table, d_reasons, q_table, q_reasons, _stats_by_row(captured, n),
                    {o.ctx.key: ledger[o.ctx.key].to_dict() for o in ops}, main.ctx.key)


def _build(op, params: dict, text_key: str | None, id_key: str, seed: int) -> list[Op]:
    """The op (and what it expands into, as a recipe would run them) with validated parameters."""
    from pydantic import ValidationError

    from thresher.pipeline.registry import get_op, resolve_alias

    if isinstance(op, Op):
        if params:
            raise TypeError("apply_op: parameters go to the op's constructor when an op instance is given")
        return [op, *op.expand()]
    if isinstance(op, str):
        name, note = resolve_alias(op)
        if note:
            warnings.warn(note, DeprecationWarning, stacklevel=4)
        cls = get_op(name)
    elif isinstance(op, type) and issubclass(op, (Filter, Mapper, GlobalOp)):
        cls = op
    else:
        raise TypeError(f"apply_op takes an op name, an op class or an op instance, not {op!r}")
    label = cls.name or cls.__qualname__
    try:
        p = cls.Params.model_validate(params)
    except ValidationError as e:
        problems = "; ".join(f"parameter '{'.'.join(str(x) for x in err['loc']) or '(all)'}': {err['msg']}"
                             for err in e.errors())
        raise RecipeError(f"op '{label}': {problems}") from None
    if text_key is None and cls.reads_text and not getattr(p, "field", None):
        raise RecipeError(f"op '{label}' reads the text column; give text_key (the column holding the text)")
    run = uuid.uuid4().hex
    ctx = OpContext(text_key=text_key or "", id_key=id_key, seed=seed, index=0, key=cls.name or "op",
                    run_id=run, attempt_id=run)
    main = cls(p, ctx)
    return [main, *main.expand()]


def _instrument(ops: list[Op]) -> list:
    """Observe without deciding: record the main op's stats per batch (with the rows' positions),
    and keep the position column on a 1:1 mapper's rows should it rebuild its table without it.
    Both are instance attributes over the class's methods, removed when the run ends."""
    captured: list = []
    main = ops[0]
    if isinstance(main, Filter):
        compute = main.compute_stats

        def compute_stats(batch: pa.Table):
            stats = compute(batch)
            captured.append((batch[LINE].to_numpy(), stats))
            return stats

        main.compute_stats = compute_stats
    for o in ops:
        if isinstance(o, Mapper) and not o.one_to_many:
            o.process = _keeping_line(o.process)
    return captured


def _keeping_line(process):
    def wrapped(batch: pa.Table):
        result = process(batch)
        t = result.table if isinstance(result, MapResult) else result[0] if isinstance(result, tuple) else result
        if LINE in t.column_names or LINE not in batch.column_names or t.num_rows != batch.num_rows:
            return result
        t = t.append_column(LINE, batch[LINE])
        if isinstance(result, MapResult):
            return replace(result, table=t)
        return (t, *result[1:]) if isinstance(result, tuple) else t

    return wrapped


class _ApplyStep(Mapper):
    """A global op's apply step as a 1:1 mapper of the rows resolve kept (their ordinals in
    ``ROWS_TAG``), so the runner records its drops and errors exactly as a run's next pass does."""

    name = "apply"  # never registered

    def __init__(self, op: GlobalOp):
        super().__init__(op.params, op.ctx)
        self.op = op
        self.isolate_errors = op.isolate_errors

    def process(self, batch: pa.Table):
        return self.op.apply(batch.drop_columns([ROWS_TAG]), 0, batch[ROWS_TAG].to_numpy())


def _run_global(op: GlobalOp, table: pa.Table, runner, ledger) -> pa.Table:
    """Fingerprint -> resolve -> apply on one table as one shard (shard 0), in this process."""
    import polars as pl

    from thresher.pipeline.ledger import Ledger

    entry = ledger[op.ctx.key]
    t0 = time.perf_counter()
    op.ensure_setup()
    entry.rows_in += table.num_rows
    results, kept = runner.guarded(op, op.fingerprint, table, ledger)  # rows it fails on go to quarantine
    fps, parts, n = [], [], 0
    for fp, t in zip(results, kept, strict=True):
        fp = fp.append_column(SHARD, pa.array(np.zeros(t.num_rows, dtype=np.int32)))
        fps.append(fp.append_column(ROW, pa.array(np.arange(n, n + t.num_rows, dtype=np.int64))))
        parts.append(t)
        n += t.num_rows
    entry.counters.update(op.take_counters())
    table = pa.concat_tables(parts, promote_options="permissive") if parts else table.slice(0, 0)
    if n:  # a global op that receives no rows decides nothing
        decided = op.resolve(pl.from_arrow(pa.concat_tables(fps, promote_options="permissive")).lazy())
        decided = decided.filter(pl.col(SHARD) == 0).sort(ROW)
        entry.counters.update(op.take_counters())
        if op.state is not None:
            op.set_state(op.state)
        drop_rows = decided[ROW].to_numpy()
        keep = np.ones(n, dtype=bool)
        if len(drop_rows):
            keep[drop_rows] = False
            runner.record_global_drops(op, table, drop_rows, decided[REASON].to_list(), ledger)
            table = table.filter(pa.array(keep))
        if type(op).apply is not GlobalOp.apply and table.num_rows:
            tagged = table.append_column(ROWS_TAG, pa.array(np.flatnonzero(keep), pa.int64()))
            scratch = Ledger([(op.ctx.key, op.name, op.ctx.index)])
            table = runner.run_op(_ApplyStep(op), tagged, scratch)
            step = scratch[op.ctx.key]
            entry.dropped.update(step.dropped)
            entry.quarantined.update(step.quarantined)
            entry.counters.update(step.counters)
            entry.counters.update(op.take_counters())
    entry.rows_out += table.num_rows
    entry.seconds += time.perf_counter() - t0
    return table


def _reason(op: Op, main: Op, reason: str) -> str:
    return reason if op is main else f"{op.ctx.key}: {reason}"


def _given_rows(given: pa.Table, records: list[tuple], text_key: str | None, raw: bool) -> tuple[pa.Table, list[str]]:
    """The given rows the records name by position (1-based), in input order, and their reasons;
    a record without a position (a row a 1:N op made) is rebuilt from what it holds."""
    n = given.num_rows
    known = sorted(((int(pos), i) for i, (pos, _, _) in enumerate(records) if isinstance(pos, int) and 1 <= pos <= n))
    rest = [i for i, (pos, _, _) in enumerate(records) if not (isinstance(pos, int) and 1 <= pos <= n)]
    order = [i for _, i in known] + rest
    reasons = [records[i][1] for i in order]
    table = given.take(pa.array([pos - 1 for pos, _ in known], pa.int64()))
    if rest:
        extra = []
        for i in rest:
            held = records[i][2]
            if raw:
                try:
                    row = json.loads(held) if held else {}
                except ValueError:  # cut to the quarantine snippet's length
                    row = {}
            else:
                row = {text_key: held} if text_key else {}
            extra.append({k: v for k, v in row.items() if k in given.column_names} if isinstance(row, dict) else {})
        table = pa.concat_tables([table, pa.Table.from_pylist(extra, schema=given.schema)])
    return table, reasons


def _stats_by_row(captured: list, n: int) -> dict[str, pa.Array]:
    """A filter's stats per given row (null for rows it never computed them for: quarantined)."""
    from thresher.pipeline.runner import as_array

    if not captured:
        return {}
    pos = np.full(n, -1, dtype=np.int64)
    offset = 0
    for lines, _ in captured:
        pos[np.asarray(lines, dtype=np.int64) - 1] = np.arange(offset, offset + len(lines))
        offset += len(lines)
    take = pa.array(pos, mask=pos < 0)
    out = {}
    for name in captured[0][1]:
        values = pa.concat_arrays([as_array(stats[name]) for _, stats in captured])
        out[name] = values.take(take)
    return out
