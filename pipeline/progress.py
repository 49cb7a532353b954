"""Live progress of a run: events from wherever batches are processed, summed up in the driver,
shown as a live display on a terminal or as one line per pass otherwise.

Worker side — nothing at all when no progress is wanted (no channel: no tracker, no thread):

- a ``Tracker`` per shard being read holds plain counters that the reading loop sets (input bytes
  or rows consumed, rows in, rows out), never sending anything itself;
- one daemon thread per process sends what changed, at most every ``INTERVAL_S``, together with
  the process's LLM counters (``llm.LIVE``: requests done, failed, spend since this run's first
  tracker in the process, and requests in flight);
- ``Tracker.close`` sends the final state at once (marked final).

Under Ray a shard's blocks are read in one task and may be processed in others (and reading runs
ahead of processing), so there each block, once processed, is one record — where it ends in its
shard, rows in, rows out — from a ``BlockMark`` the reader fills to the tracker of the process
that ran the block; its summary carries the same record to the driver at the end of the pass.

Events travel through a ``Channel``: a callable in the driver's own process (the local executor
in-process), a multiprocessing queue the pool's workers got at start (local pool), a Ray actor
(Ray). Each executor drains its queue into ``RunProgress.put`` with a ``Drain`` thread.

Events (tuples, cheap to pickle; values are cumulative or keyed, so a lost or repeated event does
no harm):

- ``("s", k, shard, done, rows_in, rows_out, final)``: pass k, one shard: units done (input bytes
  for pass 0 — compressed bytes of a compressed file —, rows of the previous pass's output after),
  rows in and out so far (-1: not known to the sender);
- ``("b", k, [[shard, block, done, rows_in, rows_out], ...])``: blocks of pass k processed (Ray);
- ``("l", worker, done, failed, spend_micro_usd, in_flight)``: one process's LLM requests.

Driver side: ``RunProgress`` keeps the state per pass and for the run (rows, rows/s, ETA from the
fraction of the input consumed, LLM requests done / in flight / failed and spend) and drives a
renderer: ``LiveDisplay`` (rich, on a terminal) or ``PassLines`` (one line per pass as it ends).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

INTERVAL_S = 0.25  # the most often one process sends (per open tracker), and the drains poll
BAR_WIDTH = 16
FINAL_WAIT_S = 2.0  # after a pass: how long a drain waits for its shards' final events (normally ms)

# ============================================================================================ workers


class Channel:
    """Where a worker's events go: ``queue.put(event)``, or ``queue(event)`` for a callable (the
    driver's own process). Picklable when its queue is (a multiprocessing or Ray queue); ``run``
    (the attempt id) tells this run's LLM counters from those of earlier runs in the same process."""

    def __init__(self, queue: Any, run: str):
        self.queue = queue
        self.run = run

    def send(self, event: tuple) -> None:
        put = getattr(self.queue, "put", None)
        (put or self.queue)(event)


_lock = threading.Lock()  # guards the process's open trackers, baselines and what was last sent
_open: list[Tracker] = []
_baselines: dict[str, tuple] = {}  # run -> llm.LIVE counters when this process first worked for it
_llm_sent: dict[str, tuple] = {}  # run -> LLM counters last sent
_carry: dict[tuple[str, int], list] = {}  # (run, pass) -> block records a closing tracker left to the next
_last_send = 0.0  # when this process last sent (monotonic)
_wake = threading.Event()  # set while trackers are open
_ticker: threading.Thread | None = None
_worker = ""


def _llm_now(run: str) -> tuple:
    from thresher.pipeline.llm import LIVE

    done, failed, spend, in_flight = LIVE.snapshot()
    b = _baselines.get(run, (0, 0, 0.0, 0))
    return done - b[0], failed - b[1], round(spend - b[2], 6), in_flight


class BlockMark:
    """Where a Ray reader is in its shard (``read`` as a tracker's), taken block by block."""

    __slots__ = ("done", "rows")

    def __init__(self):
        self.done = 0
        self.rows = 0

    def read(self, done: int, rows: int) -> None:
        if done >= 0:
            self.done = done
        self.rows += rows

    def take(self) -> list[int]:
        """[where the block ends in the shard, rows it brought in]."""
        out = [self.done, self.rows]
        self.rows = 0
        return out


class Tracker:
    """Progress of one shard in pass k, or (``shard`` None) of the blocks a Ray task processes
    (``blocks``) and the process's LLM requests. The hot path sets attributes; the process's
    ticker thread sends them."""

    __slots__ = ("channel", "k", "shard", "done", "rows_in", "rows_out", "blocks", "_at", "_rows", "_sent", "_dead")

    def __init__(self, channel: Channel, k: int, shard: int | None = None):
        global _ticker, _worker
        self.channel, self.k, self.shard = channel, k, shard
        self.done = 0  # units of the shard whose rows went through the ops
        self.rows_in = 0
        self.rows_out = -1
        self._at = 0  # where the block being processed ends
        self._rows = 0  # the rows it brought
        self._sent: tuple | None = None
        self._dead = False
        with _lock:
            self.blocks: list = _carry.pop((channel.run, k), [])
            for key in [key for key in _carry if key[0] != channel.run]:
                del _carry[key]  # an earlier run's: its driver has them from the summaries
            if channel.run not in _baselines:
                from thresher.pipeline.llm import LIVE

                _baselines[channel.run] = LIVE.snapshot()
                while len(_baselines) > 8:  # a long-lived process serves many runs: forget the oldest
                    oldest = next(iter(_baselines))
                    del _baselines[oldest]
                    _llm_sent.pop(oldest, None)
            _open.append(self)
            _wake.set()
            if _ticker is None or not _ticker.is_alive():
                _worker = f"{socket.gethostname()}:{os.getpid()}"
                _ticker = threading.Thread(target=_tick, name="thresher-progress", daemon=True)
                _ticker.start()

    def read(self, done: int, rows: int) -> None:
        """A block was read: ``done`` units of the shard read so far (-1: unknown), ``rows`` in it."""
        if done >= 0:
            self._at = done
        self._rows += rows

    def processed(self, rows_out: int) -> None:
        """The block went through the ops; ``rows_out``: the shard's rows out so far."""
        self.done = self._at
        self.rows_in += self._rows
        self._rows = 0
        self.rows_out = rows_out

    def close(self) -> None:
        self.done = max(self.done, self._at)
        self.rows_in += self._rows
        self._rows = 0
        with _lock:
            if self in _open:
                _open.remove(self)
            if not _open:
                _wake.clear()
        self.flush(final=True)

    def flush(self, final: bool = False) -> None:
        """Send what changed. A closing block tracker sends its blocks only if the process has not
        sent for ``INTERVAL_S`` (else the next tracker of the pass takes them over): blocks can be
        many and quick, and the summaries bring every record to the driver anyway."""
        global _last_send
        if self._dead:
            return
        with _lock:  # one sender at a time: events of a process arrive in order
            try:
                sent = False
                if self.shard is not None:
                    state = (self.done, self.rows_in, self.rows_out)
                    if final or state != self._sent:
                        self.channel.send(("s", self.k, self.shard, *state, final))
                        self._sent = state
                        sent = True
                llm = _llm_now(self.channel.run)
                if llm != _llm_sent.get(self.channel.run, (0, 0, 0.0, 0)):
                    self.channel.send(("l", _worker, *llm))
                    _llm_sent[self.channel.run] = llm
                    sent = True
                if self.blocks:
                    blocks, self.blocks = self.blocks, []
                    if not final or sent or time.monotonic() - _last_send >= INTERVAL_S:
                        self.channel.send(("b", self.k, blocks))
                        sent = True
                    else:
                        _carry.setdefault((self.channel.run, self.k), []).extend(blocks)
                if sent:
                    _last_send = time.monotonic()
            except Exception:  # noqa: BLE001 - progress never stops a run (a queue gone, a driver gone)
                self._dead = True


def _tick() -> None:
    while True:
        _wake.wait()
        time.sleep(INTERVAL_S)
        with _lock:
            trackers = list(_open)
        for t in trackers:
            t.flush()


@contextlib.contextmanager
def tracking(channel: Channel | None, k: int, shard: int | None = None):
    """A ``Tracker`` for the block (None without a channel), closed (final event sent) at its end."""
    if channel is None:
        yield None
        return
    t = Tracker(channel, k, shard)
    try:
        yield t
    finally:
        t.close()


# ============================================================================================ driver


class Drain:
    """Moves events from an executor's queue (``fetch()`` returns what is waiting) to ``sink`` on a
    driver thread while a pass runs. On a clean exit it fetches until the final event of each of
    ``shards`` shards has come (a multiprocessing queue may deliver it just after the task's result),
    for at most ``FINAL_WAIT_S``."""

    def __init__(self, fetch: Callable[[], list], sink: Callable[[tuple], None], shards: int = 0):
        self.fetch, self.sink, self.shards = fetch, sink, shards
        self.finals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="thresher-progress-drain", daemon=True)

    def __enter__(self) -> Drain:
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._stop.set()
        self._thread.join()
        deadline = time.monotonic() + FINAL_WAIT_S
        while True:
            self._move()
            if exc_type is not None or self.finals >= self.shards or time.monotonic() > deadline:
                return
            time.sleep(0.01)

    def _move(self) -> None:
        try:
            events = self.fetch()
        except Exception:  # noqa: BLE001 - progress never stops a run
            return
        for ev in events:
            if ev[0] == "s" and ev[6]:  # a shard's final event
                self.finals += 1
            self.sink(ev)

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            self._move()


def pass_totals(layout, k: int, shards: list, kept: dict[int, int] | None = None) -> tuple[dict[int, int], str]:
    """The work of pass k per shard and its unit: input bytes (pass 0), or the rows the previous
    pass kept (``kept``: shard -> rows, where the caller has them; else from its done markers)."""
    if k == 0:
        return {s.index: int(s.size) for s in shards}, "bytes"
    if kept is not None:
        return {s.index: int(kept.get(s.index, 0)) for s in shards}, "rows"
    return {s.index: int((layout.read_done(k - 1, s.index) or {}).get("rows_out", 0)) for s in shards}, "rows"


@dataclass
class LLMView:
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    spend_micro_usd: float = 0.0

    @property
    def usd(self) -> float:
        return self.spend_micro_usd / 1e6

    def __bool__(self) -> bool:
        return bool(self.done or self.failed or self.in_flight)


@dataclass
class PassView:
    k: int
    unit: str
    fraction: float  # of the pass's work (bytes or rows) done
    rows_in: int
    rows_out: int
    seconds: float
    rate: float  # rows in per second
    eta: float | None  # seconds left, None when unknown
    shards: int
    shards_done: int
    finished: bool
    llm: LLMView = field(default_factory=LLMView)  # this pass's requests (in flight: now)


@dataclass
class RunView:
    passes: int
    current: int  # the pass running (or the last one)
    fraction: float
    rows: int  # rows in, all passes together
    seconds: float
    rate: float
    eta: float | None


@dataclass
class _Shard:
    total: int
    done: int = 0
    rows_in: int = 0
    rows_out: int = 0
    finished: bool = False
    blocks: dict[int, tuple[int, int]] = field(default_factory=dict)  # Ray: block -> (rows in, rows out)


class _Pass:
    def __init__(self, k: int, totals: dict[int, int], unit: str, llm0: LLMView):
        self.k, self.unit = k, unit
        self.shards = {s: _Shard(t) for s, t in totals.items()}
        self.total = sum(totals.values())
        self.t0 = time.monotonic()
        self.t1: float | None = None
        self.llm0 = llm0
        self.llm1: LLMView | None = None

    def fraction(self) -> float:
        if not self.shards:
            return 1.0
        if self.total <= 0:
            return sum(s.finished for s in self.shards.values()) / len(self.shards)
        return min(1.0, sum(s.total if s.finished else min(s.done, s.total) for s in self.shards.values()) / self.total)


def _eta(seconds: float, fraction: float) -> float | None:
    if fraction <= 0 or seconds <= 0:
        return None
    return max(0.0, seconds * (1 - fraction) / fraction)


class RunProgress:
    """The driver's view of a run's progress, fed by ``put`` (any thread) and by ``run``: pass by
    pass (``start_pass``, ``shard_done``, ``end_pass``). ``display``: a renderer (``LiveDisplay``,
    ``PassLines``) or None. ``record``: keep every event (``events``) and each pass's fraction after
    each (``history``)."""

    def __init__(self, display=None, record: bool = False):
        self.display = display
        self.record = record
        self.history: dict[int, list[float]] = {}
        self.events: list[tuple] = []
        self._lock = threading.RLock()
        self._passes: dict[int, _Pass] = {}
        self._llm: dict[str, tuple] = {}
        self.n_passes = 0
        self.current = 0
        self.t0 = time.monotonic()

    def __enter__(self) -> RunProgress:
        self.t0 = time.monotonic()
        if self.display is not None:
            self.display.start(self)
        return self

    def __exit__(self, *exc) -> None:
        if self.display is not None:
            self.display.stop()

    # ------------------------------------------------------------------ fed by the run
    def start_pass(self, k: int, totals: dict[int, int], unit: str = "bytes", passes: int = 0) -> None:
        with self._lock:
            self.n_passes = max(self.n_passes, passes, k + 1)
            self.current = k
            self._passes[k] = _Pass(k, totals, unit, self.llm())
            if self.record:
                self.history[k] = []

    def put(self, event: tuple) -> None:
        """An event from a worker (or the executor's driver side); thread-safe."""
        with self._lock:
            if self.record:
                self.events.append(event)
            if event[0] == "l":
                self._llm[event[1]] = event[2:6]
                return
            if event[0] == "b":
                self._blocks(*event[1:])
                return
            _, k, shard, done, rows_in, rows_out, _final = event
            p = self._passes.get(k)
            s = p.shards.get(shard) if p is not None else None
            if s is None:
                return
            if done >= 0:
                s.done = done
            if rows_in >= 0:
                s.rows_in = rows_in
            if rows_out >= 0:
                s.rows_out = rows_out
            if self.record:
                self.history[k].append(p.fraction())

    def _blocks(self, k: int, records: list) -> None:
        p = self._passes.get(k)
        if p is None:
            return
        for shard, block, done, rows_in, rows_out in records:
            s = p.shards.get(shard)
            if s is None:
                continue
            old_in, old_out = s.blocks.get(block, (0, 0))
            s.blocks[block] = (rows_in, rows_out)
            s.rows_in += rows_in - old_in
            s.rows_out += rows_out - old_out
            s.done = max(s.done, done)
        if self.record:
            self.history[k].append(p.fraction())

    def shard_done(self, k: int, shard: int) -> None:
        with self._lock:
            p = self._passes.get(k)
            if p is not None and shard in p.shards:
                p.shards[shard].finished = True

    def end_pass(self, k: int) -> None:
        with self._lock:
            p = self._passes[k]
            p.t1 = time.monotonic()
            p.llm1 = self.llm()
        if self.display is not None:
            self.display.pass_ended(self.pass_view(k))

    # ------------------------------------------------------------------ views
    def llm(self) -> LLMView:
        with self._lock:
            v = LLMView()
            for done, failed, spend, in_flight in self._llm.values():
                v.done += done
                v.failed += failed
                v.spend_micro_usd += spend
                v.in_flight += in_flight
            return v

    def passes(self) -> list[int]:
        with self._lock:
            return sorted(self._passes)

    def pass_view(self, k: int) -> PassView:
        with self._lock:
            p = self._passes[k]
            now = p.t1 if p.t1 is not None else time.monotonic()
            seconds = now - p.t0
            f = 1.0 if p.t1 is not None else p.fraction()
            rows_in = sum(s.rows_in for s in p.shards.values())
            llm_now = p.llm1 or self.llm()
            llm = LLMView(llm_now.done - p.llm0.done, llm_now.failed - p.llm0.failed,
                          llm_now.in_flight if p.t1 is None else 0, llm_now.spend_micro_usd - p.llm0.spend_micro_usd)
            return PassView(k, p.unit, f, rows_in, sum(s.rows_out for s in p.shards.values()), seconds,
                            rows_in / seconds if seconds > 0 else 0.0, None if p.t1 is not None else _eta(seconds, f),
                            len(p.shards), sum(s.finished for s in p.shards.values()), p.t1 is not None, llm)

    def run_view(self) -> RunView:
        """The run: passes weigh the same (their work is not known before they start)."""
        with self._lock:
            seconds = time.monotonic() - self.t0
            done = sum(1.0 if p.t1 is not None else p.fraction() for p in self._passes.values())
            f = min(1.0, done / self.n_passes) if self.n_passes else 0.0
            rows = sum(s.rows_in for p in self._passes.values() for s in p.shards.values())
            return RunView(self.n_passes, self.current, f, rows, seconds, rows / seconds if seconds > 0 else 0.0,
                           _eta(seconds, f) if f < 1 else 0.0)


# ========================================================================================= renderers


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-:--"
    s = int(round(s))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_usd(usd: float) -> str:
    return f"${usd:,.2f}" if usd >= 1 else f"${usd:.4f}"


def llm_text(v: LLMView, in_flight: bool = True) -> str:
    parts = [f"{v.done:,} requests"]
    if in_flight:
        parts.append(f"{v.in_flight:,} in flight")
    parts += [f"{v.failed:,} failed", fmt_usd(v.usd)]
    return "LLM " + ", ".join(parts)


def pass_line(v: PassView) -> str:
    """The line a pass leaves when its output is not a terminal."""
    if not v.shards:
        return f"pass {v.k}: done in an earlier attempt"
    line = (f"pass {v.k}: {v.rows_in:,} rows in, {v.rows_out:,} out, {v.rate:,.0f} rows/s, {v.seconds:.1f} s")
    if v.shards_done < v.shards:
        line += f" ({v.shards_done} of {v.shards} shards)"
    if v.llm:
        line += "; " + llm_text(v.llm, in_flight=False)
    return line


class PassLines:
    """Exactly one line per pass, as it ends (for logs and pipes)."""

    def __init__(self, file: IO[str]):
        self.file = file

    def start(self, progress: RunProgress) -> None:
        pass

    def stop(self) -> None:
        pass

    def pass_ended(self, view: PassView) -> None:
        print(pass_line(view), file=self.file, flush=True)


class LiveDisplay:
    """A rich live display: a line per pass (bar, rows in and out, rows/s, ETA), a run line, and
    an LLM line when the run has made requests."""

    def __init__(self, console):
        self.console = console
        self.progress: RunProgress | None = None
        self._live = None

    def start(self, progress: RunProgress) -> None:
        from rich.live import Live

        self.progress = progress
        self._live = Live(console=self.console, get_renderable=self.renderable, refresh_per_second=4,
                          transient=False)
        self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def pass_ended(self, view: PassView) -> None:
        if self._live is not None:
            self._live.refresh()

    def renderable(self):
        """One line per pass, the run, LLM requests: a label, a bar, then the numbers, the most
        wanted first (cut with an ellipsis rather than wrapped on a narrow terminal)."""
        from rich.console import Group

        p = self.progress
        if p is None:
            return Group()
        lines = []
        for k in p.passes():
            v = p.pass_view(k)
            if v.finished:
                when = f"{fmt_seconds(v.seconds)} total"
            elif v.fraction >= 1:
                when = "finishing"
            else:
                when = f"ETA {fmt_seconds(v.eta)}"
            lines.append(_line(f"pass {k}", v.fraction,
                               f"{when}  {v.rate:,.0f} rows/s  {v.rows_in:,} in → {v.rows_out:,} out"))
        r = p.run_view()
        lines.append(_line("run", r.fraction, f"ETA {fmt_seconds(r.eta)}  {r.rate:,.0f} rows/s  {r.rows:,} rows  "
                                              f"pass {r.current + 1} of {r.passes}  {fmt_seconds(r.seconds)} elapsed"))
        llm = p.llm()
        if llm:
            lines.append(_line("LLM", None, f"{llm.done:,} done, {llm.in_flight:,} in flight, {llm.failed:,} failed, "
                                            f"{fmt_usd(llm.usd)} spent"))
        return Group(*lines)


def _line(label: str, fraction: float | None, numbers: str):
    """``label  ━━━━━━╸━━━━  42%  numbers`` as one line of rich text."""
    from rich.text import Text

    line = Text(f"{label:<7} ", no_wrap=True, overflow="ellipsis")
    if fraction is None:
        line.append(" " * (BAR_WIDTH + 6))
    else:
        filled = int(fraction * BAR_WIDTH)
        done_style = "green" if fraction >= 1 else "magenta"
        line.append("━" * filled, style=done_style)
        line.append("━" * (BAR_WIDTH - filled), style="grey23")
        line.append(f" {fraction:>4.0%} ")
    line.append(" " + numbers)
    return line
