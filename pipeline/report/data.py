"""Everything the report shows, gathered from an output directory into one plain dict.

Reads only what the engine wrote beside the data: ``ledger.json`` (the funnel, reasons, counters,
timings), ``profile.json`` (sketches of every filter stat and of the corpus, see
``pipeline/profile.py``), ``analysis.json`` (``thresher analyze``: would-drop counts and
suggested thresholds), ``trace/NN-<op>.jsonl`` (sampled dropped rows) and ``plan.json``
(``thresher plan ... --data OUT``). Never the rows themselves: histograms are drawn from the
sketches, so a 1M-row run costs what a 1k-row one does. Every part is optional but the ledger; a
part that cannot be read is left out with a note, never an error.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from thresher.pipeline.ledger import Ledger
from thresher.pipeline.ledger_view import COST_SUFFIX, counter_label, llm_totals
from thresher.pipeline.profile import Sketch

MAX_BINS = 40  # histogram bins (integer-valued stats with a narrow range: one bin per value, up to 60)
MAX_INT_BINS = 60
SAMPLES_PER_REASON = 5
SAMPLES_PER_OP = 20  # shared out among an op's reasons (each gets one at least, five at most)
TEXT_CHARS = 600  # a sample row's text, cut
TURN_CHARS = 300  # one turn of a conversation, cut
MAX_TURNS = 6
MAX_FIELDS = 8
MAX_CATEGORIES = 15  # bars of a categorical stat (the rest summed as "(others)")
MAX_DIST_BARS = 30  # discrete values of a distribution before they are grouped by powers of two
MAX_READ_BYTES = 2 << 20  # trace files are small; never read a huge one whole


def gather(out: str | Path) -> dict:
    """The report's content for output directory ``out`` (see the module docstring)."""
    out = Path(out)
    notes: list[str] = []
    ledger = _read_json(out / "ledger.json", notes) or {}
    profile = _read_json(out / "profile.json", notes)
    analysis = _read_json(out / "analysis.json", notes)
    plan = _read_json(out / "plan.json", notes)
    run = ledger.get("run") if isinstance(ledger.get("run"), dict) else {}
    mode = "analyze" if ledger.get("mode") == "analyze" or analysis is not None else "run"
    d: dict = {
        "out": str(out), "mode": mode, "status": ledger.get("status", "unknown"), "error": ledger.get("error"),
        "run": {k: run.get(k) for k in ("recipe", "source", "fingerprint", "run_id", "executor", "shards")},
        "totals": ledger.get("totals") or {}, "notes": notes,
    }
    ops = ledger.get("ops") if isinstance(ledger.get("ops"), dict) else {}
    for name, fn, args in (("funnel", _funnel, (ops, mode)), ("analysis", _analysis, (analysis,)),
                           ("reasons", _reasons, (ops,)), ("llm", _llm, (ledger,)), ("counters", _counters, (ops,)),
                           ("timings", _timings, (run, ops)),
                           ("stats", _stats, (profile, ops, analysis)), ("categories", _categories, (profile,)),
                           ("corpus", _corpus, (profile,)), ("distributions", _distributions, (profile,)),
                           ("samples", _samples, (out, ops)), ("plan", _plan, (plan,))):
        try:
            d[name] = fn(*args)
        except Exception as e:  # noqa: BLE001 - one unreadable part must not cost the whole report
            d[name] = None
            notes.append(f"{name}: not shown ({type(e).__name__}: {e})")
    order = {k: i for i, k in enumerate(ops)}  # the profile's ops in the recipe's order
    for name in ("stats", "categories", "distributions"):
        if d.get(name):
            d[name].sort(key=lambda x: order.get(x["key"], len(order)))
    return d


def _read_json(path: Path, notes: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        notes.append(f"{path.name}: not readable ({e})")
        return None
    if not isinstance(obj, dict):
        notes.append(f"{path.name}: not a JSON object")
        return None
    return obj


def _n(x) -> int:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else 0


def _total(counts) -> int:
    return sum(_n(v) for v in counts.values()) if isinstance(counts, dict) else 0


# ------------------------------------------------------------------------------- funnel and reasons
def _funnel(ops: dict, mode: str) -> list[dict]:
    """One row per op (the reader first): rows in, out, created, dropped, quarantined, flagged."""
    rows = []
    for key, e in ops.items():
        if not isinstance(e, dict):
            continue
        rows.append({"key": key, "op": e.get("op", key), "rows_in": _n(e.get("rows_in")), "rows_out": _n(e.get("rows_out")),
                     "created": _n(e.get("created")), "dropped": _total(e.get("dropped")),
                     "quarantined": _total(e.get("quarantined")), "flagged": _total(e.get("flagged")),
                     "seconds": float(e.get("seconds") or 0.0)})
    return rows


def _analysis(analysis: dict | None) -> dict | None:
    """``thresher analyze``: the funnel a run would see (rows whose first flagging op is each op),
    and the suggested thresholds."""
    if analysis is None:
        return None
    total = _n(analysis.get("rows"))
    left = total
    funnel = []
    for o in analysis.get("ops") or []:
        first = _n(o.get("first"))
        funnel.append({"key": o.get("key", "?"), "op": o.get("name", o.get("key", "?")), "rows_in": left,
                       "would_drop": first, "rows_out": max(0, left - first), "flagged": _n(o.get("flagged"))})
        left = max(0, left - first)
    return {"rows": total, "funnel": funnel, "kept": left, "method": analysis.get("method") or "quantile",
            "suggestions": [s for s in analysis.get("suggestions") or [] if isinstance(s, dict)],
            "diff": analysis.get("diff") if isinstance(analysis.get("diff"), str) else None,
            "notes": [str(n) for n in analysis.get("notes") or []]}


def _reasons(ops: dict) -> list[dict]:
    """Why rows left (or would leave), per op and reason, with the share of the op's input."""
    out = []
    for key, e in ops.items():
        if not isinstance(e, dict):
            continue
        for kind in ("dropped", "quarantined", "flagged"):
            counts = e.get(kind) if isinstance(e.get(kind), dict) else {}
            for reason, n in sorted(counts.items(), key=lambda kv: (-_n(kv[1]), kv[0])):
                rows_in = _n(e.get("rows_in")) + _n(e.get("created"))
                out.append({"key": key, "kind": kind, "reason": str(reason), "rows": _n(n),
                            "share": _n(n) / rows_in if rows_in else 0.0})
    return out


def _llm(ledger: dict) -> dict | None:
    """LLM requests, tokens and cost summed over the run (``ledger_view.llm_totals``)."""
    if not isinstance(ledger.get("ops"), dict) or "read" not in ledger["ops"]:
        return None
    tot = llm_totals(Ledger.from_dict(ledger))
    if not tot:
        return None
    return {"requests": tot.get("llm_requests", 0), "cached": tot.get("llm_cached", 0), "failed": tot.get("llm_failed", 0),
            "prompt_tokens": tot.get("llm_prompt_tokens", 0), "completion_tokens": tot.get("llm_completion_tokens", 0),
            "cost_usd": sum(v for k, v in tot.items() if k.endswith(COST_SUFFIX)) / 1e6}


def _counters(ops: dict) -> list[dict]:
    out = []
    for key, e in ops.items():
        counters = e.get("counters") if isinstance(e, dict) and isinstance(e.get("counters"), dict) else {}
        for name, v in sorted(counters.items()):
            label, value = counter_label(str(name), _n(v))
            out.append({"key": key, "name": label, "value": value})
    return out


def _timings(run: dict, ops: dict) -> dict:
    t = run.get("timings") if isinstance(run.get("timings"), dict) else {}
    passes = []
    for p in t.get("passes") or []:
        if isinstance(p, dict):
            passes.append({"pass": p.get("pass"), "shards": p.get("shards"), "seconds": float(p.get("seconds") or 0.0),
                           "resolve": p.get("resolve"), "resolve_seconds": p.get("resolve_seconds")})
    op_seconds = [(k, float(e.get("seconds") or 0.0)) for k, e in ops.items() if isinstance(e, dict)]
    return {"executor": t.get("executor") or run.get("executor"), "seconds": t.get("seconds"),
            "start_seconds": t.get("start_seconds"), "passes": passes, "ops": op_seconds}


# ------------------------------------------------------------------------------- histograms
def _sketch(d) -> Sketch | None:
    if isinstance(d, Sketch):
        return d
    if not isinstance(d, dict) or "n" not in d:
        return None
    return Sketch.from_dict(d)


def _integral(sk: Sketch) -> bool:
    return all(float(x).is_integer() for x in (sk.lo, sk.hi, sk.total))


def hist_edges(sk: Sketch, extra: list[float] = ()) -> tuple[np.ndarray, bool]:
    """Bins for drawing ``sk``: its ``default_range``, widened to take in the values in ``extra``
    (thresholds) that lie within the data; on a log scale when positive over two decades. Integer
    values get bins that hold whole values (one per value for a narrow range)."""
    lo, hi = sk.default_range()
    # thresholds within the data, or near it (half the range beyond, in decades when positive);
    # for a constant stat, wherever they are
    t = math.log if sk.lo > 0 and all(x > 0 for x in extra if x is not None) else (lambda v: v)
    span = t(sk.hi) - t(sk.lo)
    for x in extra:
        if x is None or not math.isfinite(x):
            continue
        if sk.lo == sk.hi or t(sk.lo) - 0.5 * span <= t(x) <= t(sk.hi) + 0.5 * span:
            lo, hi = min(lo, x), max(hi, x)
    integral = _integral(sk) and all(float(x).is_integer() for x in extra if x is not None and math.isfinite(x))
    if integral:
        lo, hi = math.floor(lo), math.ceil(hi)
    log = lo > 0 and hi / lo > 100
    if hi <= lo:
        return np.array([lo - 0.5, hi + 0.5]), False
    if integral and not log and hi - lo + 1 <= MAX_INT_BINS:
        return np.arange(lo - 0.5, hi + 1.0, 1.0), False
    if integral:  # whole values per bin: edges at half-integers
        grid = np.geomspace(lo, hi + 1, MAX_BINS + 1) if log else np.linspace(lo, hi + 1, MAX_BINS + 1)
        return np.unique(np.round(grid)) - 0.5, log
    return (np.geomspace(lo, hi, MAX_BINS + 1) if log else np.linspace(lo, hi, MAX_BINS + 1)), log


def _summary(sk: Sketch) -> dict:
    return {"n": sk.n, "nulls": sk.nulls, "mean": sk.mean, "min": sk.lo if sk.n else None, "max": sk.hi if sk.n else None,
            **{f"p{int(q * 100)}": sk.quantile(q) for q in (0.05, 0.5, 0.95)}}


def _hist(sk: Sketch, edges: np.ndarray, log: bool) -> dict:
    """Counts in ``edges``, and apart from them the values beyond the range (``below``, ``above``)."""
    e, c, lg = sk.histogram(edges=edges, log=log)
    below, above = float(sk.rank(e[0], strict=True)), float(sk.n - sk.rank(e[-1]))
    c[0] -= below
    c[-1] -= above
    return {"edges": [float(x) for x in e], "counts": [max(0.0, float(x)) for x in c], "log": lg,
            "below": below, "above": above}


def _stats(profile: dict | None, ops: dict, analysis: dict | None) -> list[dict]:
    """One histogram per (op, stat), with the recipe's thresholds and the share each drops."""
    if not profile:
        return []
    suggestions = {}
    method = (analysis or {}).get("method") if (analysis or {}).get("method") in ("quantile", "sigma") else "quantile"
    for s in (analysis or {}).get("suggestions") or []:
        if isinstance(s, dict):
            suggestions[(s.get("op"), s.get("stat"))] = s
    out = []
    for key, entry in (profile.get("ops") or {}).items():
        if not isinstance(entry, dict):
            continue
        thresholds = entry.get("thresholds") if isinstance(entry.get("thresholds"), dict) else {}
        outside = entry.get("outside") if isinstance(entry.get("outside"), dict) else {}
        for stat, raw in (entry.get("stats") or {}).items():
            sk = _sketch(raw)
            if sk is None or not sk.n:
                continue
            th = thresholds.get(stat) if isinstance(thresholds.get(stat), dict) else {}
            sug = suggestions.get((key, stat))
            q = (sug or {}).get(method) if isinstance((sug or {}).get(method), dict) else {}
            marks = [th.get("lo"), th.get("hi"), q.get("lo"), q.get("hi")]
            edges, log = hist_edges(sk, [x for x in marks if isinstance(x, (int, float))])
            rows = sk.n + sk.nulls
            lines = []
            for side, param_key in (("lo", "lo_param"), ("hi", "hi_param")):
                x = th.get(side)
                if not isinstance(x, (int, float)):
                    continue
                exact = stat in outside and isinstance(outside[stat], dict)
                if exact:
                    n = _n(outside[stat].get("below" if side == "lo" else "above"))
                    share = n / rows if rows else 0.0
                else:
                    share = sk.share_outside(x, None) if side == "lo" else sk.share_outside(None, x)
                    share *= sk.n / rows if rows else 0.0
                    n = round(share * rows)
                lines.append({"x": float(x), "side": side, "kind": "threshold", "param": th.get(param_key) or side,
                              "rows": n, "share": share, "exact": exact,
                              "draw_x": _boundary(float(x), side, th.get("inclusive", True), edges)})
            for side in ("lo", "hi"):
                x = q.get(side)
                if isinstance(x, (int, float)):
                    lines.append({"x": float(x), "side": side, "kind": "suggest",
                                  "param": sug.get(f"{side}_param") or side, "rows": None,
                                  "share": q.get("drop_share"), "exact": False})
            out.append({"key": key, "stat": stat, "summary": _summary(sk), "hist": _hist(sk, edges, log), "lines": lines})
    return out


def _boundary(x: float, side: str, inclusive, edges: np.ndarray) -> float:
    """Where a threshold's line goes: on whole-value bins, at the edge between the values it keeps
    and those it drops (a lower bound of 20 that keeps 20: at 19.5), not through a bar."""
    if not float(x).is_integer() or not np.all(np.mod(edges, 1.0) == 0.5):
        return x
    keeps = inclusive is not False
    return x - 0.5 if (side == "lo") == keeps else x + 0.5


def _categories(profile: dict | None) -> list[dict]:
    """Categorical stats (a language code, a label): the most frequent values, the rest summed."""
    out = []
    for key, entry in ((profile or {}).get("ops") or {}).items():
        for stat, counts in ((entry or {}).get("categories") or {}).items():
            items = top_counts(counts)
            if items:
                out.append({"key": key, "stat": stat, "items": items, "total": _total(counts)})
    return out


def top_counts(counts: dict, k: int = MAX_CATEGORIES) -> list[tuple[str, int]]:
    if not isinstance(counts, dict):
        return []
    c = Counter({str(v): _n(n) for v, n in counts.items() if _n(n) > 0})
    items = c.most_common(k)
    rest = sum(c.values()) - sum(n for _, n in items)
    if rest:
        items.append(("(others)", rest))
    return items


def _corpus(profile: dict | None) -> dict | None:
    """Lengths of the rows read and of the rows written, on shared bins; languages."""
    corpus = (profile or {}).get("corpus") or {}
    if not corpus:
        return None
    inp, outp = corpus.get("input") or {}, corpus.get("output") or {}
    lengths = []
    for name in dict.fromkeys([*inp, *outp]):
        if name == "lang":
            continue
        a, b = _sketch(inp.get(name)), _sketch(outp.get(name))
        both = Sketch()
        for sk in (a, b):
            if sk is not None:
                both.merge(Sketch.from_dict(sk.to_dict()))
        if not both.n:
            continue
        edges, log = hist_edges(both)
        lengths.append({"name": name,
                        "input": _hist(a, edges, log) if a is not None and a.n else None,
                        "output": _hist(b, edges, log) if b is not None and b.n else None,
                        "summary": {"input": _summary(a) if a is not None and a.n else None,
                                    "output": _summary(b) if b is not None and b.n else None}})
    langs = {where: top_counts(part.get("lang")) for where, part in (("input", inp), ("output", outp))
             if isinstance(part.get("lang"), dict) and part.get("lang")}
    return {"lengths": lengths, "lang": langs}


def _distributions(profile: dict | None) -> list[dict]:
    """Discrete distributions ops measured (duplicate-cluster sizes): value -> count, numeric
    values in order (grouped by powers of two when there are many)."""
    out = []
    for key, entry in ((profile or {}).get("ops") or {}).items():
        for name, counts in ((entry or {}).get("distributions") or {}).items():
            if not isinstance(counts, dict) or not counts:
                continue
            out.append({"key": key, "name": name, "items": group_values(counts), "total": _total(counts)})
    return out


def group_values(counts: dict) -> list[tuple[str, int]]:
    try:
        vals = sorted((float(v), _n(n)) for v, n in counts.items())
    except ValueError:
        return top_counts(counts, MAX_DIST_BARS)
    vals = [(v, n) for v, n in vals if n > 0]
    if len(vals) <= MAX_DIST_BARS:
        return [(_num_label(v), n) for v, n in vals]
    groups: Counter = Counter()
    for v, n in vals:
        k = 0 if v <= 1 else math.ceil(math.log2(v))
        groups[k] += n
    out = []
    for k in sorted(groups):
        lo, hi = (2 ** (k - 1) + 1, 2**k) if k > 0 else (1, 1)
        out.append((str(hi) if lo >= hi else f"{lo}-{hi}", groups[k]))
    return out


def _num_label(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


# ------------------------------------------------------------------------------- samples
def _samples(out: Path, ops: dict) -> list[dict]:
    """Sampled dropped rows per op and reason (``trace/NN-<op>.jsonl``), capped and cut."""
    trace = out / "trace"
    if not trace.is_dir():
        return []
    groups = []
    for f in sorted(trace.glob("*.jsonl")):
        key = f.stem.split("-", 1)[1] if "-" in f.stem and f.stem.split("-", 1)[0].isdigit() else f.stem
        e = ops.get(key) if isinstance(ops.get(key), dict) else {}
        by_reason: dict[str, list[dict]] = {}
        with open(f, encoding="utf-8", errors="replace") as fh:
            text = fh.read(MAX_READ_BYTES)
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            reason = str(rec.get("reason", "?"))
            rows = by_reason.setdefault(reason, [])
            if len(rows) < SAMPLES_PER_REASON:
                rows.append(sample_row(rec))
        _share_out(by_reason)
        for reason, rows in by_reason.items():
            total = next((_n(e.get(kind, {}).get(reason)) for kind in ("dropped", "flagged", "quarantined")
                          if isinstance(e.get(kind), dict) and reason in e[kind]), None)
            groups.append({"key": key, "reason": reason, "total": total, "rows": rows})
    return groups


def _share_out(by_reason: dict[str, list]) -> None:
    """Trim the rows of each reason so that the op shows ``SAMPLES_PER_OP`` (at least one per
    reason): dealt out one per reason in turn."""
    keep = dict.fromkeys(by_reason, 0)
    budget = max(SAMPLES_PER_OP, len(by_reason))
    while budget > 0:
        dealt = False
        for reason, rows in by_reason.items():
            if budget > 0 and keep[reason] < len(rows):
                keep[reason] += 1
                budget -= 1
                dealt = True
        if not dealt:
            break
    for reason in by_reason:
        del by_reason[reason][keep[reason]:]


def cut(s, n: int = TEXT_CHARS) -> str:
    s = s if isinstance(s, str) else json.dumps(s, ensure_ascii=False, default=str)
    return s if len(s) <= n else s[:n] + " …"


def conversation(turns) -> list[dict] | None:
    """``[{role, content}]`` (OpenAI) or ``[{from, value}]`` (ShareGPT) turns, cut; else None."""
    if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) for t in turns):
        return None
    if not all(("role" in t or "from" in t) for t in turns):
        return None
    out = [{"role": str(t.get("role", t.get("from", "?"))), "content": cut(t.get("content", t.get("value", "")) or "",
                                                                        TURN_CHARS)}
           for t in turns[:MAX_TURNS]]
    if len(turns) > MAX_TURNS:
        out.append({"role": "…", "content": f"{len(turns) - MAX_TURNS} more turns"})
    return out


def sample_row(rec: dict) -> dict:
    row: dict = {"id": None if rec.get("id") is None else str(rec.get("id")), "reason": str(rec.get("reason", ""))}
    if isinstance(rec.get("stats"), dict):
        row["stats"] = {str(k): _stat_value(v) for k, v in list(rec["stats"].items())[:MAX_FIELDS]}
    if "text" in rec:
        row["text"] = cut(rec.get("text") or "")
        return row
    content = rec.get("content") if isinstance(rec.get("content"), dict) else {}
    parts = []  # (label, conversation | None, text | None)
    for name, value in content.items():
        conv = conversation(value)
        if conv is not None:
            parts.append({"label": str(name), "turns": conv})
        elif len(parts) < MAX_FIELDS:
            parts.append({"label": str(name), "text": cut(value, TURN_CHARS)})
    row["parts"] = parts
    return row


def _stat_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return cut(v, 80)


# ------------------------------------------------------------------------------- capacity plan
def _plan(plan: dict | None) -> dict | None:
    """``thresher plan train|serve --data OUT``: what it chose, and its charts (SVG text)."""
    if plan is None:
        return None
    charts = {str(k): v for k, v in (plan.get("charts") or {}).items() if isinstance(v, str)}
    return {"command": plan.get("command"), "result": plan.get("result") or {}, "charts": charts,
            "args": plan.get("args") or {}}
