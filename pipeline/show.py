"""``thresher show``: page through an output's rows in the terminal, with each row's reason and stats.

Three views of an output directory (see ``layout.py``):

- **kept** (default): the first rows of ``data/part-*``, streamed (a JSONL part is read line by line,
  a Parquet part batch by batch): only as much is read as the rows shown need. With
  ``output.keep_stats`` each row carries ``__stats__`` (one struct per filter op), shown under it.
- **dropped**: rows from ``trace/``, the seeded sample of dropped rows the run kept per op and reason
  (so "k of N": the ledger knows N, the trace holds a sample). Without ``--op``/``--reason`` the
  rows shown are taken in turn from each (op, reason), so a short page covers every reason.
- **quarantined**: ``quarantine/pass*.jsonl``, bad input and rows an op could not process, named by
  file and line with the reason.

Rows are drawn by their shape: text rows as text, chat rows (``messages``) as turns with a coloured
role label, preference rows (``prompt``/``messages`` + ``chosen`` + ``rejected``) as the conversation
then both replies, KTO rows (``completion`` + ``label``) likewise; any other row as its fields.
On a terminal the whole page goes through a pager (``$PAGER``, else ``less -FRX``); elsewhere it is
printed as plain text.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.pager import Pager
from rich.table import Table
from rich.text import Text

from thresher.pipeline.columns import LINE, STATS
from thresher.pipeline.errors import ThresherError, did_you_mean
from thresher.pipeline.layout import Layout
from thresher.pipeline.ledger import READ
from thresher.pipeline.runner import TRACE_TEXT

KEPT, DROPPED, QUARANTINED = "kept", "dropped", "quarantined"
TEXT_CHARS = 800  # a text row is cut here unless --full
TURN_CHARS = 500  # each chat turn likewise
FIELD_CHARS = 80  # a metadata field's value
ANALYZE_STATS = "stats.parquet"
DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
ROLE_STYLES = {"system": "magenta", "user": "cyan", "assistant": "green", "tool": "yellow"}
_TRACE_NAME = re.compile(r"(\d+)-(.+)\.jsonl$")


# --------------------------------------------------------------------------- the output directory
@dataclass
class OpInfo:
    key: str
    name: str
    index: int
    dropped: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    trace: Path | None = None


@dataclass
class Output:
    path: Path
    layout: Layout
    ledger: dict | None
    ops: list[OpInfo]  # ledger order (read first), then ops only the trace names
    analyze: bool  # an output of `thresher analyze`: stats.parquet, no data rows

    def data_files(self) -> list[Path]:
        if not self.layout.data.is_dir():
            return []
        files = [p for p in self.layout.data.glob("part-*") if p.name.endswith(DATA_SUFFIXES)]
        return sorted(files, key=lambda p: _natural(p.name))


def _natural(name: str) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]


def open_output(path: str | Path) -> Output:
    """The output directory at ``path`` with its ledger and ops; a one-line error when it is not one."""
    out = Path(path)
    if not out.is_dir():
        raise ThresherError(f"'{out}' is not a directory (give the output directory of `thresher run`)")
    layout = Layout(out)
    analyze = (out / ANALYZE_STATS).is_file() and not layout.data.is_dir()
    ledger = None
    if layout.ledger.is_file():
        try:
            ledger = json.loads(layout.ledger.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ThresherError(f"'{layout.ledger}' cannot be read ({e})") from None
        if not isinstance(ledger, dict) or not isinstance(ledger.get("ops"), dict):
            raise ThresherError(f"'{layout.ledger}' is not a thresher ledger (no 'ops')")
    elif not analyze:
        if layout.manifest.is_file():
            raise ThresherError(f"'{out}' is an unfinished run (no ledger.json yet); finish it with "
                                "`thresher run RECIPE --output ... --resume`")
        raise ThresherError(f"'{out}' is not a thresher output (no ledger.json)")
    ops: list[OpInfo] = []
    for key, e in (ledger or {}).get("ops", {}).items():
        # an analysis drops nothing: what an op would drop is "flagged", and trace/ samples those
        drops = Counter(e.get("dropped") or {}) + Counter(e.get("flagged") or {})
        ops.append(OpInfo(key, e.get("op", key), e.get("index", -1), dict(drops), dict(e.get("quarantined") or {})))
    by_key = {o.key: o for o in ops}
    if layout.trace.is_dir():
        for p in sorted(layout.trace.glob("*.jsonl"), key=lambda p: _natural(p.name)):
            m = _TRACE_NAME.match(p.name)
            if not m:
                continue
            op = by_key.get(m.group(2))
            if op is None:  # an output without a ledger (analyze) names its ops by trace file
                op = by_key[m.group(2)] = OpInfo(m.group(2), m.group(2), int(m.group(1)))
                ops.append(op)
            op.trace = p
    return Output(out, layout, ledger, ops, analyze)


def resolve_ops(output: Output, op: str | None) -> list[OpInfo]:
    """The ops ``op`` names: an op key (``text_length_filter_2`` is the op's second use), else an op
    name or a former name of it (every use of the op); all ops when None."""
    if op is None:
        return list(output.ops)
    found = [o for o in output.ops if o.key == op] or [o for o in output.ops if o.name == op]
    if not found:
        from thresher.pipeline.registry import resolve_alias

        try:
            current, _ = resolve_alias(op)
        except ThresherError:
            current = op
        found = [o for o in output.ops if o.name == current]
    if not found:
        keys = [o.key for o in output.ops]
        names = keys + [o.name for o in output.ops]
        listed = ", ".join(o.key if o.key == o.name else f"{o.key} ({o.name})" for o in output.ops) or "none"
        raise ThresherError(f"no op '{op}' in {output.path}; its ops: {listed}.{did_you_mean(op, names)}".rstrip("."))
    return found


# --------------------------------------------------------------------------- what to show
@dataclass
class Item:
    """One row to draw."""

    row: dict  # the row's fields (a trace text row: {"text": ...})
    id: object = None
    op: str | None = None  # dropped: the op that dropped it; quarantined: the stage
    reason: str | None = None
    stats: dict | None = None  # dropped: {stat: value}; kept: {op key: {stat: value}}
    where: str | None = None  # quarantined: file:line
    raw: str | None = None  # quarantined: the bad line as read


@dataclass
class Page:
    title: str
    items: list[Item]
    notes: list[str] = field(default_factory=list)


def select(output: Output, mode: str = KEPT, *, op: str | None = None, reason: str | None = None,
           n: int = 10) -> Page:
    if n < 1:
        raise ThresherError(f"-n must be at least 1 (got {n})")
    if mode == KEPT:
        if reason is not None:
            raise ThresherError("--reason picks dropped or quarantined rows; use it with --dropped or --quarantined")
        return kept(output, n, op)
    if mode == DROPPED:
        return dropped(output, n, op, reason)
    if mode == QUARANTINED:
        return quarantined(output, n, op, reason)
    raise ValueError(mode)


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def kept(output: Output, n: int, op: str | None = None) -> Page:
    if output.analyze:
        raise ThresherError(f"'{output.path}' is an analyze output: it holds stats ({ANALYZE_STATS}), not rows; "
                            "use --dropped for the trace sample of what the filters would drop")
    files = output.data_files()
    if not files:
        status = (output.ledger or {}).get("status")
        why = f" (the run {status})" if status and status != "succeeded" else ""
        total = ((output.ledger or {}).get("totals") or {}).get("output")
        if output.layout.data.is_dir() or total == 0:
            return Page(f"{output.path}: no kept rows{why}", [])
        raise ThresherError(f"'{output.path}' has no data/ (no rows were written{why})")
    ops = resolve_ops(output, op) if op is not None else None
    items: list[Item] = []
    notes: list[str] = []
    had_stats = False
    rows = _iter_rows(files)
    try:
        for i, row in enumerate(itertools.islice(rows, n)):
            had_stats |= STATS in row
            stats = row.pop(STATS, None)
            row.pop(LINE, None)
            stats = {k: v for k, v in stats.items() if v is not None} if isinstance(stats, dict) else None
            if stats is not None and ops is not None:
                stats = {o.key: stats[o.key] for o in ops if o.key in stats}
            items.append(Item(row, row.get("id", f"#{i + 1}"), stats=stats or None))
    finally:
        rows.close()
    if ops is not None and items and not any(it.stats for it in items):
        if not had_stats:
            notes.append(f"the kept rows carry no {STATS}: run with --set output.keep_stats=true to keep each "
                         "filter's stats with its rows")
        else:
            notes.append(f"{', '.join(o.key for o in ops)} kept no stats with the rows (only filters have stats)")
    total = ((output.ledger or {}).get("totals") or {}).get("output")
    title = f"{output.path}: showing {len(items):,} of {_count(total)} kept rows (data/)"
    return Page(title, items, notes)


def _open_text(f: Path):
    if f.name.endswith(".gz"):
        return gzip.open(f, "rt", encoding="utf-8")
    if f.name.endswith(".zst"):
        import zstandard

        return zstandard.open(f, "rt", encoding="utf-8")
    return open(f, encoding="utf-8")  # noqa: SIM115 - closed by the caller's with


def _iter_jsonl(f: Path) -> Iterator[dict]:
    with _open_text(f) as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as e:
                    raise ThresherError(f"{f}:{i} is not JSON ({e}); is the output damaged?") from None


def _iter_rows(files: list[Path]) -> Iterator[dict]:
    """The rows of the data parts in order, read lazily (Parquet in small batches)."""
    for f in files:
        if f.name.endswith(".parquet"):
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(batch_size=32):
                yield from batch.to_pylist()
        else:
            yield from _iter_jsonl(f)


def dropped(output: Output, n: int, op: str | None = None, reason: str | None = None) -> Page:
    ops = [o for o in resolve_ops(output, op) if o.key != READ or op is not None]
    # the trace sample of each (op, reason), in the trace's order (by reason, then sampling key)
    groups: dict[tuple[str, str], list[Item]] = {}
    for o in ops:
        if o.trace is None:
            continue
        for rec in _iter_jsonl(o.trace):
            r = str(rec.get("reason"))
            if reason is not None and r != reason:
                continue
            row = {"text": rec["text"]} if "text" in rec else dict(rec.get("content") or {})
            if isinstance(row.get("text"), str) and len(row["text"]) >= TRACE_TEXT:
                row["text"] += f" … (the trace keeps the first {TRACE_TEXT} chars)"
            groups.setdefault((o.key, r), []).append(Item(row, rec.get("id"), op=o.key, reason=r,
                                                          stats=rec.get("stats")))
    notes: list[str] = []
    if reason is not None:
        in_ledger = {(o.key, r): c for o in ops for r, c in o.dropped.items() if r == reason}
        if not in_ledger and not groups:
            raise ThresherError(_unknown_reason(output, ops, op, reason, "dropped"))
        for (k, r), c in in_ledger.items():
            if (k, r) not in groups:
                notes.append(f"op {k} dropped {c:,} rows for '{r}' but trace/ holds no samples of them "
                             "(output.trace_samples was 0, or the run did not finish)")
    # take in turn from each (op, reason) so that a short page shows every reason; keep group order
    chosen: list[tuple[int, int]] = []
    queues = list(groups.values())
    for j in itertools.count():
        if len(chosen) >= n or all(j >= len(q) for q in queues):
            break
        for g, q in enumerate(queues):
            if j < len(q) and len(chosen) < n:
                chosen.append((g, j))
    items = [queues[g][j] for g, j in sorted(chosen)]
    if output.ledger is not None:
        total = sum(c for o in ops for r, c in o.dropped.items() if reason is None or r == reason)
    else:
        total = None
    where = f" by {', '.join(o.key for o in ops)}" if op is not None else ""
    what = f" for '{reason}'" if reason is not None else ""
    rows = "rows the ops would drop" if output.analyze else "dropped rows"
    title = f"{output.path}: showing {len(items):,} of {_count(total)} {rows}{where}{what} (trace sample)"
    if not items and not notes and total:
        notes.append("trace/ holds no samples of these drops (output.trace_samples was 0, or the run did not finish)")
    return Page(title, items, notes)


def _unknown_reason(output: Output, ops: list[OpInfo], op: str | None, reason: str, kind: str) -> str:
    """One line: the reason is not among those the ops recorded, which are ..."""
    counts = {}
    for o in ops:
        sampled = set()
        if kind == "dropped" and o.trace is not None:
            sampled = {str(rec.get("reason")) for rec in _iter_jsonl(o.trace)}
        for r, c in getattr(o, kind).items():
            note = f"{c:,} {kind}"
            if kind == "dropped" and r not in sampled:
                note += ", no samples in trace"
            counts[r if op is not None else f"{o.key}: {r}"] = note
    if op is not None and not counts:
        return f"op '{op}' recorded no {kind} rows (so none for reason '{reason}')"
    head = f"op '{op}' recorded no" if op is not None else "no op recorded"
    listed = "; ".join(f"{r} ({c})" for r, c in counts.items()) or "none"
    names = [r.split(": ", 1)[-1] for r in counts]
    return f"{head} {kind} rows for reason '{reason}'; recorded reasons: {listed}.{did_you_mean(reason, names)}"


def quarantined(output: Output, n: int, op: str | None = None, reason: str | None = None) -> Page:
    ops = resolve_ops(output, op) if op is not None else None
    stages = {o.key for o in ops} if ops is not None else None
    if reason is not None:
        known = {r for o in (ops or output.ops) for r in o.quarantined}
        if output.ledger is not None and not any(reason == r or reason.startswith(r) or r.startswith(reason)
                                                 for r in known):
            raise ThresherError(_unknown_reason(output, ops or output.ops, op, reason, "quarantined"))
    files = sorted(output.layout.quarantine.glob("pass*.jsonl"), key=lambda p: _natural(p.name)) \
        if output.layout.quarantine.is_dir() else []
    items: list[Item] = []
    for f in files:
        for rec in _iter_jsonl(f):
            if stages is not None and rec.get("stage") not in stages:
                continue
            if reason is not None and not str(rec.get("reason", "")).startswith(reason):
                continue
            where = f"{rec.get('source', '?')}:{rec.get('line', '?')}"
            items.append(Item({}, rec.get("id"), op=rec.get("stage"), reason=rec.get("reason"), where=where,
                              raw=rec.get("raw")))
            if len(items) >= n:
                break
        if len(items) >= n:
            break
    total = None
    if output.ledger is not None:
        total = sum(c for o in (ops or output.ops) for r, c in o.quarantined.items()
                    if reason is None or reason.startswith(r) or r.startswith(reason))
    where = f" by {', '.join(sorted(stages))}" if stages else ""
    what = f" for '{reason}'" if reason is not None else ""
    return Page(f"{output.path}: showing {len(items):,} of {_count(total)} quarantined rows{where}{what}", items)


# --------------------------------------------------------------------------- drawing
def fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def stats_line(stats: dict) -> str:
    """``k=v k=v`` with floats to 4 significant digits."""
    return " ".join(f"{k}={fmt_value(v)}" for k, v in stats.items())


def _cut(s: str, limit: int | None) -> Text:
    if limit is None or len(s) <= limit:
        return Text(s)
    t = Text(s[:limit])
    t.append(f" … (+{len(s) - limit:,} chars; --full shows all)", style="dim")
    return t


def _content(v) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, default=str)


def _is_turns(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(m, dict) and "role" in m for m in v)


def _turns(grid: Table, messages, limit: int | None, label: str | None = None, label_style: str = "") -> None:
    """Rows of ``grid`` for a conversation, one per turn with its role as a coloured label; with
    ``label`` (chosen, rejected, completion) the reply's turns under that label instead."""
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list):  # a plain-text prompt or reply
        role = label or "user"
        grid.add_row(Text(role, style=label_style or ROLE_STYLES["user"]), _cut(_content(messages), limit))
        return
    for m in messages:
        role = str(m.get("role", "?")) if isinstance(m, dict) else "?"
        body = m.get("content") if isinstance(m, dict) else m
        if label is None:
            name, style = role, ROLE_STYLES.get(role, "bold")
        else:
            name, style = (label if len(messages) == 1 else f"{label} ({role})"), label_style
        grid.add_row(Text(name, style=style), _cut(_content(body), limit))


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    return grid


SHAPE_FIELDS = {"text", "messages", "prompt", "chosen", "rejected", "completion", "label"}


def draw_row(row: dict, full: bool = False) -> list[RenderableType]:
    """A row's content by its shape (text, chat, preference, KTO, other)."""
    text_limit, turn_limit = (None, None) if full else (TEXT_CHARS, TURN_CHARS)
    out: list[RenderableType] = []
    messages, prompt = row.get("messages"), row.get("prompt")
    pref = row.get("chosen") is not None and row.get("rejected") is not None
    kto = row.get("completion") is not None
    used: set[str]
    if isinstance(row.get("text"), str) and not pref and not _is_turns(messages):
        out.append(_cut(row["text"], text_limit))
        used = {"text"}
    elif _is_turns(messages) or pref or (prompt is not None and kto):
        grid = _grid()
        conv = messages if messages is not None else prompt
        if conv is not None:
            _turns(grid, conv, turn_limit)
        if pref:
            _turns(grid, row["chosen"], turn_limit, "chosen", "bold green")
            _turns(grid, row["rejected"], turn_limit, "rejected", "bold red")
        if kto:
            label = f"completion (label={fmt_value(row['label'])})" if row.get("label") is not None else "completion"
            _turns(grid, row["completion"], turn_limit, label, "bold blue")
        out.append(grid)
        used = set(SHAPE_FIELDS)
    else:  # no shape we know: every field
        grid = _grid()
        for k, v in row.items():
            if k == "id":
                continue
            grid.add_row(Text(k, style="bold"), _cut(_content(v), turn_limit))
        return [grid] if row else [Text("(empty row)", style="dim")]
    meta = {k: v for k, v in row.items() if k not in used and k != "id" and v is not None}
    if meta:
        parts = []
        for k, v in meta.items():
            if isinstance(v, (list, dict)) and not full:
                s = f"[{len(v)} items]" if isinstance(v, list) else f"{{{len(v)} fields}}"
            else:
                s = fmt_value(v)
                if not full and len(s) > FIELD_CHARS:
                    s = s[:FIELD_CHARS] + "…"
            parts.append(f"{k}={s}")
        out.append(Text(" ".join(parts), style="dim"))
    return out


def draw_item(i: int, item: Item, full: bool = False) -> RenderableType:
    head = Text(f"#{i} ", style="dim")
    if item.where is not None:
        head.append(item.where, style="bold")
        if item.id is not None:
            head.append(f"  id={item.id}")
    else:
        head.append(str(item.id), style="bold")
    if item.reason is not None:
        head.append("  ")
        if item.op is not None:
            head.append(f"{item.op}: ", style="blue")
        head.append(str(item.reason), style="red")
    parts: list[RenderableType] = [head]
    if item.stats:
        if item.where is None and item.reason is None:  # kept: {op key: {stat: value}}
            for key, st in item.stats.items():
                line = Text(f"{key}: ", style="blue")
                line.append(stats_line(st) if isinstance(st, dict) else fmt_value(st), style="dim")
                parts.append(Padding(line, (0, 0, 0, 2), expand=False))
        else:
            parts.append(Padding(Text(stats_line(item.stats), style="dim"), (0, 0, 0, 2), expand=False))
    body = [_cut(item.raw or "", None if full else TEXT_CHARS)] if item.raw is not None else draw_row(item.row, full)
    parts += [Padding(b, (0, 0, 0, 2), expand=False) for b in body]
    return Group(*parts)


def render(console: Console, page: Page, full: bool = False) -> None:
    console.print(Text(page.title, style="bold"), soft_wrap=True)
    for note in page.notes:
        console.print(Text(f"note: {note}", style="yellow"), soft_wrap=True)
    for i, item in enumerate(page.items, 1):
        console.print()
        console.print(draw_item(i, item, full))


class LessPager(Pager):
    """``$PAGER``, else ``less`` with ``-FRX`` (colours, quit at once if it fits, leave it on screen),
    as git pages; rich's system pager (pydoc) where there is no ``less``."""

    def show(self, content: str) -> None:
        cmd = os.environ.get("PAGER")
        env = dict(os.environ)
        if not cmd:
            if shutil.which("less") is None:
                from rich.pager import SystemPager

                SystemPager().show(content)
                return
            cmd = "less"
            env.setdefault("LESS", "FRX")
        proc = subprocess.Popen(cmd, shell=True, stdin=subprocess.PIPE, text=True, errors="backslashreplace", env=env)
        try:
            with proc.stdin as pipe, contextlib.suppress(KeyboardInterrupt):
                pipe.write(content)
        except OSError:
            pass  # the pager quit before reading it all (q on the first screen)
        while True:
            try:
                proc.wait()
                break
            except KeyboardInterrupt:
                pass  # the pager handles Ctrl-C; wait for it to exit


def show(path: str | Path, mode: str = KEPT, *, op: str | None = None, reason: str | None = None, n: int = 10,
         full: bool = False, console: Console | None = None, pager: bool = True) -> Page:
    """Select the rows and draw them: through a pager on a terminal, else plainly."""
    console = console or Console()
    page = select(open_output(path), mode, op=op, reason=reason, n=n)
    if pager and console.is_terminal:
        with console.pager(LessPager(), styles=True):
            render(console, page, full)
    else:  # plain text: without the spaces rich pads table cells with
        with console.capture() as cap:
            render(console, page, full)
        try:
            console.file.write("".join(line.rstrip() + "\n" for line in cap.get().splitlines()))
            console.file.flush()
        except BrokenPipeError:  # the reader stopped early (`| head`): not an error
            if console.file is sys.stdout:
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush is quiet
    return page
