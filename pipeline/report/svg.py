"""Small inline-SVG charts for the report: no library, no script, a few kilobytes each.

Every chart is ``<svg class="chart" data-chart="NAME">``; every mark drawn from data (a bar, a
bar segment) has class ``mark`` and a ``<title>`` that the browser shows on hover. Text is
escaped here; callers pass raw strings.
"""

from __future__ import annotations

import math
import re
from html import escape

W = 1000  # width of a full-row chart (the page scales charts down on narrow screens)
HW = 500  # width of a histogram (two to a row)
KEPT, DROPPED, QUARANTINED, CREATED = "kept", "dropped", "quarantined", "created"


def esc(s) -> str:
    return escape(str(s), quote=True)


def fmt(v: float | None, digits: int = 3) -> str:
    """A number as a person reads it on an axis or a bar: 1.2k, 3.4M, 0.012, 17."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    a = abs(v)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{v / div:.{digits}g}{suffix}"
    if a == 0 or float(v).is_integer():
        return f"{int(v)}"
    return f"{v:.{digits}g}"


def count(v: float) -> str:
    return f"{round(v):,}"


def pct(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.1%}" if x >= 0.001 or x == 0 else f"{x:.2%}" if x >= 0.0001 else "<0.01%"


def _svg(name: str, w: float, h: float, body: list[str], label: str) -> str:
    return (f'<svg class="chart" data-chart="{esc(name)}" viewBox="0 0 {w:.0f} {h:.0f}" width="{w:.0f}" '
            f'height="{h:.0f}" role="img" aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg">'
            + "".join(body) + "</svg>")


def _rect(cls: str, x: float, y: float, w: float, h: float, title: str = "") -> str:
    t = f"<title>{esc(title)}</title>" if title else ""
    return f'<rect class="{cls}" x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}">{t}</rect>'


def _text(x: float, y: float, s: str, cls: str = "", anchor: str = "start") -> str:
    c = f' class="{cls}"' if cls else ""
    a = f' text-anchor="{anchor}"' if anchor != "start" else ""
    return f'<text x="{x:.1f}" y="{y:.1f}"{c}{a}>{esc(s)}</text>'


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


# ------------------------------------------------------------------------------- funnel
def funnel(name: str, rows: list[dict], label: str = "rows through each op") -> str:
    """Horizontal bars, one per op: ``rows`` = [{label, total, segments: [(kind, n, title)], note}]
    (kinds: kept, dropped, quarantined, created — created is drawn past the input)."""
    left, right, row_h = 180, 250, 24
    width = W - left - right
    scale = max([r["total"] for r in rows] + [1])
    h = 8 + row_h * len(rows) + 4
    body = []
    for i, r in enumerate(rows):
        y = 8 + i * row_h
        body.append(_text(left - 8, y + 15, _clip(r["label"], 26), "lbl", "end"))
        body.append(_rect("track", left, y + 3, width, row_h - 8))
        x = left
        for kind, n, title in r["segments"]:
            if n <= 0 and kind != KEPT:
                continue
            w = width * n / scale
            body.append(_rect(f"mark {kind}", x, y + 3, max(w, 1.0), row_h - 8, title))
            x += w
        body.append(_text(left + width + 8, y + 15, r.get("note", ""), "num"))
    return _svg(name, W, h, body, label)


# ------------------------------------------------------------------------------- histogram
def _nice_step(span: float, n: int) -> float:
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _ticks(lo: float, hi: float, log: bool, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    if log:
        k0, k1 = math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9)
        ticks = [10.0**k for k in range(k0, k1 + 1)]
        if len(ticks) < 3:
            ticks = sorted({t * m for t in [10.0 ** (k0 - 1), *ticks] for m in (1, 2, 5) if lo <= t * m <= hi})
        return ticks
    step = _nice_step(hi - lo, n)
    t = math.ceil(lo / step - 1e-9) * step
    out = []
    while t <= hi + 1e-9 * step:
        out.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return out


def histogram(name: str, hist: dict, label: str, *, lines: list[dict] = (), ghost: dict | None = None,
              legend: tuple[str, str] | None = None) -> str:
    """Bars of ``hist`` ({edges, counts, log, below, above}: counts within the edges, and the
    values beyond them, noted at the ends of the axis), over ``ghost`` (another histogram on the
    same edges, drawn pale: the input behind the output); ``lines`` = [{x, draw_x?, side, kind,
    text}] drawn as vertical lines (kind threshold: the side it drops is shaded and its bars
    red; suggest: dashed)."""
    edges, counts, log = hist["edges"], hist["counts"], bool(hist.get("log"))
    h, x0, x1, y0, y1 = 214, 46, HW - 12, 34, 180
    lo, hi = edges[0], edges[-1]
    if hi <= lo:
        hi = lo + 1

    def sx(v: float) -> float:
        v = min(max(v, lo), hi)
        if log:
            return x0 + (x1 - x0) * (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return x0 + (x1 - x0) * (v - lo) / (hi - lo)

    top = max(list(counts) + list((ghost or {}).get("counts") or []) + [1e-9])
    ymax = _nice_step(top, 4) * math.ceil(top / _nice_step(top, 4) - 1e-9)

    def sy(c: float) -> float:
        return y1 - (y1 - y0) * c / ymax

    body = []
    for t in _ticks(0, ymax, False, 4):
        body.append(f'<line class="gl" x1="{x0}" x2="{x1}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>')
        body.append(_text(x0 - 5, sy(t) + 3.5, fmt(t), "tick", "end"))
    at = [(ln, ln.get("draw_x", ln["x"])) for ln in lines]
    drop_lo = max([x for ln, x in at if ln.get("kind") == "threshold" and ln["side"] == "lo"], default=None)
    drop_hi = min([x for ln, x in at if ln.get("kind") == "threshold" and ln["side"] == "hi"], default=None)
    if drop_lo is not None and drop_lo > lo:
        body.append(_rect("shade", x0, y0, sx(drop_lo) - x0, y1 - y0))
    if drop_hi is not None and drop_hi < hi:
        body.append(_rect("shade", sx(drop_hi), y0, x1 - sx(drop_hi), y1 - y0))
    whole = not log and all(float(e + 0.5).is_integer() for e in edges)
    for series, cls in ((ghost, "mark ghost"), (hist, "mark bar")):
        if not series:
            continue
        for j, c in enumerate(series["counts"]):
            if c <= 0:
                continue
            a, b = edges[j], edges[j + 1]
            mid = math.sqrt(a * b) if log and a > 0 else (a + b) / 2
            out = (drop_lo is not None and mid < drop_lo) or (drop_hi is not None and mid > drop_hi)
            xa, xb = sx(a), sx(b)
            if float(a + 0.5).is_integer() and float(b + 0.5).is_integer():  # whole values a+0.5 .. b-0.5
                rng = fmt(a + 0.5) if b - a == 1 else f"{fmt(a + 0.5)} – {fmt(b - 0.5)}"
            else:
                rng = f"{fmt(a)} – {fmt(b)}"
            body.append(_rect(cls + (" out" if out and cls == "mark bar" else ""), xa + 0.4, sy(c),
                              max(xb - xa - 0.8, 0.8), max(y1 - sy(c), 0.8), f"{rng}: {count(c)}"))
    body.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y1}" y2="{y1}"/>')
    ticks = [t for t in _ticks(lo, hi, log) if lo <= t <= hi]
    if whole:
        ticks = [t for t in _ticks(math.ceil(lo), math.floor(hi), False, 6) if float(t).is_integer()]
    for t in ticks:
        body.append(f'<line class="axis" x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{y1}" y2="{y1 + 4}"/>')
        body.append(_text(sx(t), y1 + 15, fmt(t), "tick", "middle"))
    notes = []
    if hist.get("below", 0) >= 0.5:
        notes.append(_text(x0, y1 + 28, f"◂ {count(hist['below'])} below {fmt(lo)}", "tick"))
    right = [s for s in ("log scale" if log else "", f"{count(hist['above'])} above {fmt(hi)} ▸"
                         if hist.get("above", 0) >= 0.5 else "") if s]
    if right:
        notes.append(_text(x1, y1 + 28, " · ".join(right), "tick", "end"))
    body += notes
    # line labels: beside their line, on the side with room, on the first of two rows where they fit
    taken: list[list[tuple[float, float]]] = [[], []]
    for ln, x in at:
        cls = "threshold" if ln.get("kind") == "threshold" else "suggest"
        inside = lo <= x <= hi
        if inside:
            body.append(f'<line class="{cls}" x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{y0 - 6}" y2="{y1}">'
                        f'<title>{esc(ln.get("text", ""))}</title></line>')
        text = _clip(ln.get("text", ""), 60)
        if not inside:
            text = f"◂ {text}" if x < lo else f"{text} ▸"
        wid = 6.4 * len(text)
        px = sx(x)
        if ln["side"] == "lo":
            a0 = px - 4 - wid if px - 4 - wid >= 2 else px + 4
        else:
            a0 = px + 4 if px + 4 + wid <= HW - 2 else px - 4 - wid
        a0 = min(max(a0, 2.0), HW - 2 - wid)
        row = next((r for r in (0, 1) if all(b1 < a0 or a0 + wid < b0 for b0, b1 in taken[r])), 1)
        taken[row].append((a0 - 6, a0 + wid + 6))
        body.append(_text(a0, 12 + 12 * row, text, f"{cls}-label"))
    if legend:
        body.append(_rect("legend ghost", x0, y1 + 36, 10, 8) + _text(x0 + 14, y1 + 44, legend[0], "tick"))
        body.append(_rect("legend bar", x0 + 70, y1 + 36, 10, 8) + _text(x0 + 84, y1 + 44, legend[1], "tick"))
    return _svg(name, HW, h + (12 if legend else 0), body, label)


# ------------------------------------------------------------------------------- bars
def hbars(name: str, items: list[tuple], label: str, *, value_fmt=count, unit: str = "", cls: str = "bar",
          half: bool = False) -> str:
    """Horizontal bars: ``items`` = [(label, value)] or [(label, value, kind)] (kind: a css class).
    ``half``: as wide as a histogram (two to a row)."""
    w, left, right, row_h = (HW, 110, 80, 20) if half else (W, 180, 300, 20)
    width = w - left - right
    scale = max([it[1] for it in items] + [1e-12])
    body = []
    for i, it in enumerate(items):
        lab, v = str(it[0]), it[1]
        kind = it[2] if len(it) > 2 else cls
        y = 6 + i * row_h
        body.append(_text(left - 8, y + 13, _clip(lab, 16 if half else 26), "lbl", "end"))
        body.append(_rect(f"mark {kind}", left, y + 3, max(width * v / scale, 1.0), row_h - 6,
                          f"{lab}: {value_fmt(v)}{(' ' + unit) if unit else ''}"))
        body.append(_text(left + max(width * v / scale, 1.0) + 6, y + 13, value_fmt(v), "num"))
    return _svg(name, w, 12 + row_h * len(items), body, label)


def vbars(name: str, items: list[tuple[str, float]], label: str, *, unit: str = "", xlabel: str = "") -> str:
    """Vertical bars over labelled values (a discrete distribution: cluster size -> clusters)."""
    h, x0, x1, y0, y1 = 200, 52, HW - 12, 14, 160
    top = max([v for _, v in items] + [1e-9])
    ymax = _nice_step(top, 4) * math.ceil(top / _nice_step(top, 4) - 1e-9)
    slot = (x1 - x0) / max(len(items), 1)
    body = []
    for t in _ticks(0, ymax, False, 4):
        y = y1 - (y1 - y0) * t / ymax
        body.append(f'<line class="gl" x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}"/>')
        body.append(_text(x0 - 5, y + 3.5, fmt(t), "tick", "end"))
    every = max(1, math.ceil(max([len(lab) for lab, _ in items] + [1]) * 6.2 / slot))
    for i, (lab, v) in enumerate(items):
        hgt = (y1 - y0) * v / ymax
        x = x0 + i * slot
        body.append(_rect("mark bar", x + slot * 0.12, y1 - max(hgt, 0.8), slot * 0.76, max(hgt, 0.8),
                          f"{lab}: {count(v)}{(' ' + unit) if unit else ''}"))
        if i % every == 0:
            body.append(_text(x + slot / 2, y1 + 14, lab, "tick", "middle"))
    body.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y1}" y2="{y1}"/>')
    if xlabel:
        body.append(_text((x0 + x1) / 2, y1 + 32, xlabel, "tick", "middle"))
    return _svg(name, HW, h, body, label)


# ------------------------------------------------------------------------------- foreign SVG
_BAD = re.compile(r"<\s*(script|foreignObject|iframe|object|embed|image|use\b[^>]*href\s*=\s*[\"'](?!#))"
                  r"|\son\w+\s*=|javascript:|(?:href|src)\s*=\s*[\"'](?!#)|url\(\s*['\"]?(?!#)", re.I)


def inline_svg(text: str, name: str, prefix: str) -> str | None:
    """A matplotlib SVG (``capacity/charts.py``) made fit to inline: no XML prolog or metadata,
    ids prefixed (two charts on a page must not share ids), the root tagged as a chart and groups
    whose id starts with ``mark`` tagged as marks. None when it holds anything active or external
    (script, event handlers, links out of the document): the report loads nothing."""
    if not isinstance(text, str) or "<svg" not in text:
        return None
    s = text[text.index("<svg"):]
    s = re.sub(r"<metadata>.*?</metadata>", "", s, flags=re.S)
    if _BAD.search(s):
        return None
    s = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', s)
    s = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#{prefix}-{m.group(1)})", s)
    s = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}-{m.group(1)}"', s)
    s = re.sub(r'<g id="(' + re.escape(prefix) + r'-mark[^"]*)"', r'<g id="\1" class="mark"', s)
    s = re.sub(r"<svg\b([^>]*?)\swidth=\"[^\"]*\"", r"<svg\1", s, count=1)
    s = re.sub(r"<svg\b([^>]*?)\sheight=\"[^\"]*\"", r"<svg\1", s, count=1)
    s = s.replace("<svg", f'<svg class="chart mpl" data-chart="{esc(name)}"', 1)
    return s.strip()
