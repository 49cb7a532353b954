"""Test helpers for op authors, shipped with thresher so a plugin's tests need nothing else.

``run_op`` runs an op on a few rows through the code a real run decides with (``thresher.api``'s
``apply_op_report``: the runner's first-failing-rule decision, quarantine, the ledger and its
balance check) and gives plain Python values to assert on. ``check_op`` checks the contract every
op keeps so that recipes, ``thresher ops`` and the docs work with it.

    from thresher.testing import check_op, run_op

    def test_my_filter():
        check_op(MyFilter)
        run = run_op("my_filter", [{"text": "spam spam"}, {"text": "fine words here"}], min_words=2)
        assert [r["text"] for r in run.kept] == ["fine words here"]
        assert [reason for _, reason in run.dropped] == ["banned word"]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from thresher.api import OpParams, apply_op_report
from thresher.pipeline.ops import Filter, GlobalOp, Mapper, Op

__all__ = ["OpRun", "run_op", "check_op"]


@dataclass
class OpRun:
    """What an op did with the rows given to ``run_op``, as plain Python values."""

    kept: list[dict]  # the rows it kept (or produced), as a run would write them
    dropped: list[tuple[dict, str]]  # (input row, reason): a filter's first failing rule, a mapper's reason
    quarantined: list[tuple[dict, str]]  # (input row, reason)
    stats: dict[str, list] = field(default_factory=dict)  # a filter's stats, one value per input row
    ledger_entry: dict = field(default_factory=dict)  # rows in/out, dropped and quarantined by reason, counters
    ledger: dict[str, dict] = field(default_factory=dict)  # every entry, the ops it expands into included
    table: pa.Table | None = None  # ``kept`` as the Arrow table


def run_op(op: str | type[Op] | Op, rows: pa.Table | Iterable[Mapping], *, text_key: str | None = "text",
           id_key: str = "id", seed: int = 0, params: Mapping[str, Any] | None = None, **op_params) -> OpRun:
    """Run ``op`` (a registered name, an op class — registered or not — or an instance) on ``rows``
    (dicts or an Arrow table) with ``op_params``; the ledger must balance."""
    report = apply_op_report(op, rows, text_key=text_key, id_key=id_key, seed=seed, params=params, **op_params)
    return OpRun(
        kept=report.table.to_pylist(),
        dropped=list(zip(report.dropped.to_pylist(), report.drop_reasons, strict=True)),
        quarantined=list(zip(report.quarantined.to_pylist(), report.quarantine_reasons, strict=True)),
        stats={k: v.to_pylist() for k, v in report.stats.items()},
        ledger_entry=report.ledger_entry,
        ledger=report.ledger,
        table=report.table,
    )


_NAME = re.compile(r"[a-z][a-z0-9_]*")


def check_op(op: str | type[Op], sample: Iterable[Mapping] | None = None) -> None:
    """Check an op class's contract; raise ``AssertionError`` listing every problem found.

    The contract: a snake_case ``name`` (a recipe's key) that the registry does not give to another
    class; a docstring whose first sentence says what it does (``thresher ops`` lists it);
    ``Params`` derived from ``OpParams`` with a description on every field, nested blocks included
    (the docs and the recipe schema are made from them); an ``example`` that validates (the docs
    show it as a recipe entry); for a filter, its ``stats`` each described; counters in
    ``metrics`` described. With ``sample`` rows, the op also runs on them with its example
    parameters, and a filter must compute exactly the stats it documents."""
    from pydantic import BaseModel, ValidationError

    from thresher.pipeline.registry import all_ops

    cls = all_ops()[op] if isinstance(op, str) else op
    if not (isinstance(cls, type) and issubclass(cls, (Filter, Mapper, GlobalOp))):
        raise AssertionError(f"{cls!r} is not an op class (a subclass of Filter, Mapper or GlobalOp)")
    label = cls.name or cls.__qualname__
    problems: list[str] = []
    if not _NAME.fullmatch(cls.name or ""):
        problems.append(f"name {cls.name!r} must be snake_case (letters, digits, _), as recipes name it")
    else:
        other = all_ops().get(cls.name)
        if other is not None and other is not cls:
            problems.append(f"name '{cls.name}' is registered to {other.__module__}.{other.__qualname__}")
    if not cls.summary():
        problems.append("no docstring: its first sentence is what `thresher ops` lists")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, OpParams)):
        problems.append("Params must derive from OpParams (unknown keys are errors, values are strict)")
    else:
        def undescribed(model: type[BaseModel], prefix: str) -> list[str]:
            out = []
            for name, f in model.model_fields.items():
                if not f.description:
                    out.append(prefix + name)
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
                    out += undescribed(f.annotation, f"{prefix}{name}.")
            return out

        missing = undescribed(cls.Params, "")
        if missing:
            problems.append(f"parameters without a description (Field(..., description=...)): {', '.join(missing)}")
        if cls.example is None:
            problems.append("no example: set example = {...} to parameters that show it in a recipe")
        else:
            try:
                cls.Params.model_validate(cls.example)
            except ValidationError as e:
                problems.append(f"example does not validate: {str(e).splitlines()[-1].strip()}")
    if issubclass(cls, Filter) and not cls.stats:
        problems.append("a filter documents its stats: stats = {'name': 'what it measures'}")
    for kind, docs in (("stats", cls.stats), ("metrics", cls.metrics)):
        blank = [k for k, v in docs.items() if not v]
        if blank:
            problems.append(f"{kind} without a description: {', '.join(blank)}")
    if sample is not None and not problems:
        run = run_op(cls, list(sample), **(cls.example or {}))
        if issubclass(cls, Filter) and set(run.stats) != set(cls.stats):
            problems.append(f"compute_stats returns {sorted(run.stats)} but stats documents {sorted(cls.stats)}")
    if problems:
        raise AssertionError(f"op '{label}' breaks the op contract: " + "; ".join(problems))
