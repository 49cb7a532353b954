"""The report page: one HTML file with inline CSS and inline SVG, no script, nothing loaded.

Every piece of data is escaped (row texts are untrusted: a sampled row may hold markup), and a
Content-Security-Policy forbids scripts and every external load, so even markup that slipped
through could neither run nor reach the network.
"""

from __future__ import annotations

from thresher.pipeline.report import svg
from thresher.pipeline.report.svg import count, esc, fmt, pct

CSP = "default-src 'none'; style-src 'unsafe-inline'"

CSS = """
:root{--kept:#4c78a8;--drop:#e45756;--quar:#f58518;--created:#54a24b;--ghost:#c3d3e8;--sug:#7a4cc2;
--ink:#1d2430;--mute:#667085;--line:#e4e7ec;--bg:#f6f7f9}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--ink);
margin:0;background:var(--bg)}
main{max-width:1100px;margin:0 auto;padding:20px 24px 40px}
header h1{font-size:22px;margin:0 0 2px}
.sub{color:var(--mute);font-size:13px;word-break:break-all}
nav{margin:10px 0 0;font-size:13px}nav a{margin-right:14px;color:var(--kept);text-decoration:none}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:14px 20px 16px;margin:14px 0}
h2{font-size:17px;margin:0 0 8px}h3{font-size:14px;margin:16px 0 4px}
p{margin:6px 0}.muted{color:var(--mute)}
.kpi{display:flex;flex-wrap:wrap;gap:10px 28px;margin:12px 0 2px}
.kpi div{font-size:12px;color:var(--mute)}.kpi b{display:block;font-size:20px;color:var(--ink);font-weight:600}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;font-size:12px;font-weight:600;vertical-align:middle}
.ok{background:#dcfae6;color:#067647}.bad{background:#fee4e2;color:#b42318}.info{background:#eaecf5;color:#363f72}
table{border-collapse:collapse;font-size:13px;margin:6px 0 4px}
th,td{padding:3px 12px 3px 0;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;color:var(--mute);font-size:12px}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(470px,1fr));gap:6px 24px}
figure{margin:6px 0}figcaption{font-size:12px;color:var(--mute)}figcaption b{color:var(--ink)}
svg.chart{max-width:100%;height:auto;display:block}
svg.chart text{font-size:11px;fill:#344054;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
svg.chart .tick{fill:var(--mute);font-size:10px}svg.chart .lbl{fill:var(--ink)}
.track{fill:#f0f2f5}.kept,.bar{fill:var(--kept)}.dropped,.bar.out{fill:var(--drop)}.quarantined{fill:var(--quar)}
.created{fill:var(--created)}.ghost{fill:var(--ghost)}.would{fill:var(--drop);opacity:.75}
.shade{fill:var(--drop);opacity:.07}.threshold{stroke:var(--drop);stroke-width:1.6}
.suggest{stroke:var(--sug);stroke-width:1.4;stroke-dasharray:4 3}
svg.chart .threshold-label{fill:var(--drop);font-weight:600}svg.chart .suggest-label{fill:var(--sug)}
svg.chart .gl{stroke:#edf0f3}svg.chart .axis{stroke:#98a2b3}
.legend{font-size:12px;color:var(--mute)}.legend i{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px;
border-radius:2px;vertical-align:-1px}
details{border:1px solid var(--line);border-radius:6px;margin:6px 0;padding:4px 12px}
summary{cursor:pointer;font-weight:600}summary span{font-weight:400;color:var(--mute)}
.row{border-top:1px solid var(--line);padding:6px 0}.row:first-of-type{border-top:0}
.rid{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;color:var(--mute)}
.st{font-size:12px;color:var(--mute)}.st b{color:var(--ink);font-weight:600}
pre.text{white-space:pre-wrap;word-break:break-word;background:var(--bg);padding:6px 9px;border-radius:5px;
margin:4px 0;font:12px/1.45 ui-monospace,SFMono-Regular,Menlo,monospace;max-height:15em;overflow:auto}
.conv{margin:4px 0}.field{font-size:12px;color:var(--mute);margin-top:4px}
.turn{display:grid;grid-template-columns:86px 1fr;gap:8px;margin:3px 0;font-size:13px}
.role{font-weight:700;font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:var(--mute);padding-top:2px}
.role.user{color:#175cd3}.role.assistant{color:#067647}.role.system{color:#93370d}
.turn div:last-child{white-space:pre-wrap;word-break:break-word;background:var(--bg);border-radius:5px;padding:3px 8px}
.mpl{background:#fff}
footer{color:var(--mute);font-size:12px;margin-top:18px}
"""


def render(d: dict) -> str:
    """The page for ``data.gather``'s dict."""
    sections = []
    for fn in (_funnel_section, _stats_section, _corpus_section, _dups_section, _samples_section, _timings_section,
               _llm_section, _plan_section, _notes_section):
        try:
            s = fn(d)
        except Exception as e:  # noqa: BLE001 - data of an unexpected shape costs its section, not the page
            d.setdefault("notes", []).append(f"{fn.__name__.strip('_')}: not shown ({type(e).__name__}: {e})")
            s = None
        if s:
            sections.append(s)
    if d.get("notes") and not any(sid == "notes" for sid, _, _ in sections):
        sections.append(_notes_section(d))
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{esc(title)}</h2>{html}</section>' for sid, title, html in sections)
    title = f"thresher {'analysis' if d['mode'] == 'analyze' else 'report'}: {d['run'].get('recipe') or d['out']}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
            f"{_header(d, title)}<nav>{nav}</nav>{body}"
            "<footer>Written by <code>thresher report</code> from ledger.json, profile.json and trace/ "
            "in this directory. One self-contained file: no scripts, nothing loaded from anywhere.</footer>"
            "</main></body></html>\n")


# ------------------------------------------------------------------------------- header
def _header(d: dict, title: str) -> str:
    status = d.get("status") or "unknown"
    cls = "ok" if status == "succeeded" else "bad" if status == "failed" else "info"
    badge = f'<span class="badge {cls}">{esc(status)}</span>'
    if d["mode"] == "analyze":
        badge += ' <span class="badge info">analysis: nothing dropped</span>'
    run = d["run"]
    bits = [f"run {run['run_id'][:12]}" if run.get("run_id") else "",
            f"executor {run['executor']}" if run.get("executor") else "",
            f"{run['shards']} shard{'s' if run['shards'] != 1 else ''}" if isinstance(run.get("shards"), int) else "",
            f"recipe {run['source']}" if run.get("source") else "", d["out"]]
    t = d.get("totals") or {}
    kpis = [("input rows", t.get("input")), ("output rows", t.get("output"))]
    if d["mode"] == "analyze" and d.get("analysis"):
        a = d["analysis"]
        kpis = [("rows analysed", a["rows"]), ("a run would keep", a["kept"]),
                ("it would drop", a["rows"] - a["kept"])]
    else:
        kpis += [("dropped", t.get("dropped")), ("quarantined", t.get("quarantined"))]
        if t.get("created"):
            kpis.append(("created", t.get("created")))
    if isinstance(t.get("input"), int) and t.get("input") and isinstance(t.get("output"), int) and d["mode"] != "analyze":
        kpis.append(("kept", f"{t['output'] / (t['input'] + (t.get('created') or 0)):.1%}"))
    secs = (d.get("timings") or {}).get("seconds")
    if isinstance(secs, (int, float)):
        kpis.append(("wall time", f"{secs:,.1f} s"))
    if d.get("llm"):
        kpis.append(("LLM cost", f"${d['llm']['cost_usd']:,.4f}"))
    kpi = "".join(f"<div><b>{esc(v if isinstance(v, str) else count(v) if isinstance(v, (int, float)) else '–')}</b>"
                  f"{esc(k)}</div>" for k, v in kpis)
    err = f'<p class="bad" style="padding:6px 10px;border-radius:6px">{esc(d["error"])}</p>' if d.get("error") else ""
    return (f"<header><h1>{esc(title)} {badge}</h1><div class=\"sub\">{esc(' · '.join(b for b in bits if b))}</div>"
            f'<div class="kpi">{kpi}</div>{err}</header>')


def _table(head: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    th = "".join(f'<th class="{"n" if i in numeric else ""}">{esc(h)}</th>' for i, h in enumerate(head))
    trs = "".join("<tr>" + "".join(f'<td class="{"n" if i in numeric else ""}">{esc(c)}</td>' for i, c in enumerate(r))
                  + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _legend(items: list[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(f'<i style="background:var(--{_VAR[c]})"></i>{esc(lab)}'
                                           for c, lab in items) + "</div>"


_VAR = {"kept": "kept", "dropped": "drop", "quarantined": "quar", "created": "created", "would": "drop"}


# ------------------------------------------------------------------------------- funnel
def _funnel_section(d: dict):
    rows = d.get("funnel") or []
    a = d.get("analysis")
    parts = []
    if d["mode"] == "analyze" and a and a["funnel"]:
        bars = [{"label": "analysed", "total": a["rows"], "segments": [("kept", a["rows"], f"{count(a['rows'])} rows")],
                 "note": f"{count(a['rows'])} rows"}]
        for r in a["funnel"]:
            bars.append({"label": r["key"], "total": a["rows"], "segments": [
                ("kept", r["rows_out"], f"{r['key']}: {count(r['rows_out'])} rows would go on"),
                ("would", r["would_drop"], f"{r['key']}: would drop {count(r['would_drop'])} rows first "
                                            f"({count(r['flagged'])} flagged in all)")],
                "note": f"{count(r['rows_in'])} → {count(r['rows_out'])} (would drop {count(r['would_drop'])})"})
        parts.append(svg.funnel("funnel", bars, "rows a run would keep after each op"))
        parts.append(_legend([("kept", "would go on"), ("would", "would drop (first op to flag them)")]))
        parts.append("<p class=\"muted\">An analysis drops nothing: every op saw every row. Each bar is what a run "
                     "would see: the rows an op is the first to flag leave there. <i>flagged</i> counts every row an "
                     "op flags, whether or not an earlier op flagged it too.</p>")
        parts.append(_table(["op", "would drop (first)", "flagged", "of rows"],
                            [[r["key"], count(r["would_drop"]), count(r["flagged"]),
                              pct(r["flagged"] / a["rows"] if a["rows"] else 0)] for r in a["funnel"]], {1, 2, 3}))
    elif rows:
        bars = []
        for r in rows:
            total = r["rows_in"] + r["created"]
            segs = [("kept", r["rows_out"], f"{r['key']}: {count(r['rows_out'])} rows out")]
            would = d["mode"] == "analyze" and r["flagged"]
            if would:
                segs = [("kept", max(0, total - r["flagged"]), f"{r['key']}: {count(total - r['flagged'])} not flagged"),
                        ("would", r["flagged"], f"{r['key']}: would drop {count(r['flagged'])}")]
            segs += [("dropped", r["dropped"], f"{r['key']}: {count(r['dropped'])} dropped"),
                     ("quarantined", r["quarantined"], f"{r['key']}: {count(r['quarantined'])} quarantined")]
            note = f"{count(r['rows_in'])} → {count(r['rows_out'])}"
            if r["key"] == "read":
                note = f"{count(r['rows_in'])} read"
            lost = r["dropped"] + r["quarantined"]
            if lost:
                note += f" (−{count(lost)})"
            if would:
                note += f" (would drop {count(r['flagged'])})"
            if r["created"]:
                note += f" (+{count(r['created'])} created)"
            bars.append({"label": r["key"], "total": total, "segments": segs, "note": note})
        parts.append(svg.funnel("funnel", bars, "rows through each op"))
        legend = [("kept", "rows out"), ("dropped", "dropped"), ("quarantined", "quarantined")]
        if d["mode"] == "analyze":
            legend.insert(1, ("would", "would drop"))
        parts.append(_legend(legend))
    reasons = d.get("reasons") or []
    if reasons:
        kinds = {"dropped": "dropped", "quarantined": "quarantined", "flagged": "would drop"}
        parts.append("<h3>Why rows left</h3>" if d["mode"] != "analyze" else "<h3>Why rows would leave</h3>")
        parts.append(_table(["op", "", "reason", "rows", "of the op's input"],
                            [[r["key"], kinds.get(r["kind"], r["kind"]), r["reason"], count(r["rows"]), pct(r["share"])]
                             for r in reasons], {3, 4}))
    if a and a["suggestions"]:
        parts.append(_suggestions(a))
    if not parts:
        return None
    return "funnel", "Funnel" if d["mode"] != "analyze" else "Funnel (would drop)", "".join(parts)


def _suggestions(a: dict) -> str:
    """``thresher analyze --suggest``: each stat's current bounds and the proposed ones."""
    def bounds(lo, hi) -> str:
        return f"{fmt(lo, 4) if isinstance(lo, (int, float)) else '–'} … {fmt(hi, 4) if isinstance(hi, (int, float)) else '–'}"

    rows = []
    for s in a["suggestions"]:
        cur = s.get("current") if isinstance(s.get("current"), list) and len(s["current"]) == 2 else [None, None]
        row = [s.get("op", ""), s.get("stat", ""), bounds(*cur)]
        for m in ("quantile", "sigma"):
            v = s.get(m) if isinstance(s.get(m), dict) else {}
            row += [bounds(v.get("lo"), v.get("hi")), pct(v.get("drop_share")) if isinstance(v.get("drop_share"), (int, float))
                    else "–"]
        rows.append(row)
    html = (f"<h3>Suggested thresholds</h3><p class=\"muted\">Method used for the suggested recipe: "
            f"{esc(a['method'])}. Drawn as dashed lines on the histograms below.</p>"
            + _table(["op", "stat", "current", "quantile", "drops", "mean ± σ", "drops"], rows, {4, 6}))
    if a.get("diff"):
        html += f'<details><summary>suggested recipe (diff)</summary><pre class="text">{esc(a["diff"])}</pre></details>'
    return html


# ------------------------------------------------------------------------------- stats
def _line_text(ln: dict) -> str:
    if ln["kind"] == "suggest":
        share = f" (drops {pct(ln['share'])} in all)" if isinstance(ln.get("share"), (int, float)) else ""
        return f"suggested {ln['param']} = {fmt(ln['x'], 4)}{share}"
    approx = "" if ln.get("exact") else "≈"
    return f"{ln['param']} = {fmt(ln['x'], 4)}: drops {approx}{count(ln['rows'])} ({pct(ln['share'])})"


def _summary_text(s: dict) -> str:
    bits = [f"n {count(s['n'])}"] + ([f"null {count(s['nulls'])}"] if s.get("nulls") else [])
    bits += [f"mean {fmt(s['mean'])}", f"p5 {fmt(s['p5'])}", f"median {fmt(s['p50'])}", f"p95 {fmt(s['p95'])}",
             f"range {fmt(s['min'])} – {fmt(s['max'])}"]
    return " · ".join(bits)


def _stats_section(d: dict):
    stats, cats = d.get("stats") or [], d.get("categories") or []
    if not stats and not cats:
        return None
    by_op: dict[str, list[str]] = {}
    for s in stats:
        lines = [dict(ln, text=_short_line(ln)) for ln in s["lines"]]
        chart = svg.histogram(f"stat:{s['key']}:{s['stat']}", s["hist"], f"{s['key']}: {s['stat']}", lines=lines)
        caption = f"<b>{esc(s['stat'])}</b> · {esc(_summary_text(s['summary']))}"
        for ln in s["lines"]:
            cls = "threshold-label" if ln["kind"] == "threshold" else "suggest-label"
            color = "var(--drop)" if ln["kind"] == "threshold" else "var(--sug)"
            caption += f'<br><span class="{cls}" style="color:{color}">{esc(_line_text(ln))}</span>'
        by_op.setdefault(s["key"], []).append(f"<figure>{chart}<figcaption>{caption}</figcaption></figure>")
    for c in cats:
        chart = svg.hbars(f"category:{c['key']}:{c['stat']}", c["items"], f"{c['key']}: {c['stat']}", half=True)
        by_op.setdefault(c["key"], []).append(
            f"<figure>{chart}<figcaption><b>{esc(c['stat'])}</b> · {count(c['total'])} rows</figcaption></figure>")
    html = ("<p class=\"muted\">Every stat a filter computed, over every row it saw. A solid line is the recipe's "
            "threshold: the shaded side is what it drops (exact counts, each threshold on its own); a dashed line is a "
            "suggested threshold. Hover a bar for its range and count.</p>")
    for key, figs in by_op.items():
        html += f'<h3>{esc(key)}</h3><div class="grid">{"".join(figs)}</div>'
    return "stats", "Filter stats", html


def _short_line(ln: dict) -> str:
    if ln["kind"] == "suggest":
        return f"suggest {fmt(ln['x'])}"
    return f"{ln['param']} {fmt(ln['x'])} · {pct(ln['share'])}"


# ------------------------------------------------------------------------------- corpus
def _corpus_section(d: dict):
    c = d.get("corpus")
    if not c or (not c["lengths"] and not c["lang"]):
        return None
    figs = []
    for item in c["lengths"]:
        base, over = item["input"], item["output"]
        if over is None:
            base, over = None, base
        chart = svg.histogram(f"corpus:{item['name']}", over, f"{item['name']} per row", ghost=base,
                              legend=("input", "output") if base is not None else None)
        cap = f"<b>{esc(item['name'])} per row</b>"
        for where in ("input", "output"):
            s = item["summary"].get(where)
            if s:
                cap += f"<br>{where}: {esc(_summary_text(s))}"
        figs.append(f"<figure>{chart}<figcaption>{cap}</figcaption></figure>")
    for where, items in c["lang"].items():
        chart = svg.hbars(f"lang:{where}", items, f"languages ({where})", half=True)
        figs.append(f"<figure>{chart}<figcaption><b>languages</b> of the {esc(where)} rows</figcaption></figure>")
    return "corpus", "Lengths and languages", f'<div class="grid">{"".join(figs)}</div>'


def _dups_section(d: dict):
    dists = d.get("distributions") or []
    if not dists:
        return None
    figs = []
    for dist in dists:
        label = dist["name"].replace("_", " ")
        chart = svg.vbars(f"dist:{dist['key']}:{dist['name']}", dist["items"], f"{dist['key']}: {label}",
                          unit="clusters" if "cluster" in dist["name"] else "", xlabel=label)
        figs.append(f"<figure>{chart}<figcaption><b>{esc(dist['key'])}</b>: {esc(label)} · "
                    f"{count(dist['total'])} in all</figcaption></figure>")
    return "duplicates", "Duplicate clusters", ('<p class="muted">How many clusters of each size the dedup ops found '
                                                "(a cluster keeps one row and drops the rest).</p>"
                                                f'<div class="grid">{"".join(figs)}</div>')


# ------------------------------------------------------------------------------- samples
def _sample_row(r: dict) -> str:
    head = f'<span class="rid">{esc(r["id"])}</span> ' if r.get("id") else ""
    head += f'<span class="st">reason <b>{esc(r["reason"])}</b></span>'
    if r.get("stats"):
        head += '<span class="st"> · ' + " · ".join(f"{esc(k)} <b>{esc(v)}</b>" for k, v in r["stats"].items()) + "</span>"
    body = ""
    if "text" in r:
        body = f'<pre class="text">{esc(r["text"])}</pre>'
    for part in r.get("parts") or []:
        if "turns" in part:
            turns = "".join(f'<div class="turn"><div class="role {esc(t["role"].lower())}">{esc(t["role"])}</div>'
                            f"<div>{esc(t['content'])}</div></div>" for t in part["turns"])
            body += f'<div class="field">{esc(part["label"])}</div><div class="conv">{turns}</div>'
        else:
            body += f'<div class="field">{esc(part["label"])}</div><pre class="text">{esc(part["text"])}</pre>'
    return f'<div class="row">{head}{body}</div>'


def _samples_section(d: dict):
    groups = d.get("samples") or []
    if not groups:
        return None
    html = ('<p class="muted">A seeded random sample of the rows each op dropped, per reason (texts cut). '
            "The full sample is in <code>trace/</code>.</p>")
    last = None
    for i, g in enumerate(groups):
        if g["key"] != last:
            html += f"<h3>{esc(g['key'])}</h3>"
            last = g["key"]
        total = f"{count(g['total'])} rows, " if isinstance(g.get("total"), int) else ""
        opened = " open" if i == 0 else ""
        html += (f"<details{opened}><summary>{esc(g['reason'])} <span>{total}{len(g['rows'])} shown</span></summary>"
                 + "".join(_sample_row(r) for r in g["rows"]) + "</details>")
    return "samples", "Dropped rows (samples)", html


# ------------------------------------------------------------------------------- timings, LLM
def _timings_section(d: dict):
    t = d.get("timings")
    if not t or (not t["passes"] and not any(s for _, s in t["ops"])):
        return None
    html = ""
    if t["passes"]:
        html += _table(["pass", "shards", "seconds", "then resolved", "resolve s"],
                       [[p["pass"], p["shards"], f"{p['seconds']:,.2f}", p.get("resolve") or "",
                         f"{p['resolve_seconds']:,.2f}" if isinstance(p.get("resolve_seconds"), (int, float)) else ""]
                        for p in t["passes"]], {0, 1, 2, 4})
        items = [(f"pass {p['pass']}", p["seconds"]) for p in t["passes"]]
        items += [(f"resolve {p['resolve']}", p["resolve_seconds"]) for p in t["passes"]
                  if isinstance(p.get("resolve_seconds"), (int, float))]
        html += svg.hbars("timings:passes", items, "seconds per pass", value_fmt=lambda v: f"{v:,.2f} s")
    ops = [(k, s) for k, s in t["ops"] if s > 0]
    if ops:
        html += ("<h3>Seconds per op</h3><p class=\"muted\">Summed over shards and workers (time spent, not wall "
                 "time).</p>" + svg.hbars("timings:ops", ops, "seconds per op", value_fmt=lambda v: f"{v:,.2f} s"))
    extra = []
    if isinstance(t.get("seconds"), (int, float)):
        extra.append(f"wall time {t['seconds']:,.2f} s")
    if isinstance(t.get("start_seconds"), (int, float)):
        extra.append(f"executor start {t['start_seconds']:,.2f} s")
    if t.get("executor"):
        extra.append(f"executor {t['executor']}")
    return "timings", "Timings", (f"<p>{esc(' · '.join(extra))}</p>" if extra else "") + html


def _llm_section(d: dict):
    llm, counters = d.get("llm"), d.get("counters") or []
    if not llm and not counters:
        return None
    html = ""
    if llm:
        html += _table(["requests", "cached", "failed", "prompt tokens", "completion tokens", "cost"],
                       [[count(llm["requests"]), count(llm["cached"]), count(llm["failed"]), count(llm["prompt_tokens"]),
                         count(llm["completion_tokens"]), f"${llm['cost_usd']:,.4f}"]], {0, 1, 2, 3, 4, 5})
    if counters:
        html += "<h3>Counters</h3>" + _table(["op", "counter", "value"],
                                             [[c["key"], c["name"], c["value"]] for c in counters], {2})
    return "llm", "LLM use and counters" if llm else "Counters", html


# ------------------------------------------------------------------------------- capacity plan
def _plan_section(d: dict):
    p = d.get("plan")
    if not p:
        return None
    res = p["result"]
    html = ""
    if p.get("command") == "train":
        s = res.get("data") or {}
        html += (f"<p><b>{esc(res.get('model', ''))}</b> · {count(s.get('rows', 0))} sequences, "
                 f"{count(s.get('tokens', 0))} tokens (mean {esc(s.get('mean', ''))}, p95 {fmt(s.get('p95'))})</p>")
        plans = res.get("plans") or []
        if plans:
            html += _table(["#", "GPU", "n", "method", "ZeRO", "recompute", "GiB/GPU", "hours", "USD", "MFU"],
                           [[i, q.get("gpu"), q.get("gpus"), q.get("method"), q.get("zero"), q.get("recompute"),
                             f"{q['memory']['total']:.1f}/{q['memory']['capacity']:.0f}" if isinstance(q.get("memory"), dict)
                             else "", f"{q.get('hours', 0):.2f}", f"{q.get('cost_usd', 0):,.2f}", f"{q.get('mfu', 0):.0%}"]
                            for i, q in enumerate(plans[:5], 1)], {0, 2, 4, 6, 7, 8, 9})
        elif res.get("why"):
            html += f"<p>{esc(res['why'])}</p>"
    elif p.get("command") == "serve":
        pr, ou = res.get("prompt") or {}, res.get("output") or {}
        html += (f"<p><b>{esc(res.get('model', ''))}</b> · prompts mean {esc(pr.get('mean', ''))} tokens, responses "
                 f"mean {esc(ou.get('mean', ''))} tokens, {esc(res.get('rate', ''))} requests/s</p>")
        html += _table(["GPU", "TP", "replicas", "batch", "TPOT ms", "tok/s/replica", "$/h", "$/M tok", "SLO"],
                       [[q.get("gpu"), q.get("tp"), q.get("replicas"), q.get("batch"), f"{q.get('tpot_ms', 0):.1f}",
                         f"{q.get('tokens_per_s', 0):,.0f}", f"{q.get('usd_per_hour', 0):.2f}",
                         f"{q.get('usd_per_million_tokens', 0):.3f}", "yes" if q.get("meets_slo") else "no"]
                        for q in (res.get("plans") or [])[:5]], {1, 2, 3, 4, 5, 6, 7})
    figs = []
    for i, (name, text) in enumerate(sorted(p["charts"].items())):
        inline = svg.inline_svg(text, f"plan:{name}", f"plan{i}")
        if inline:
            figs.append(f"<figure>{inline}<figcaption><b>{esc(name)}</b></figcaption></figure>")
    if figs:
        html += f'<div class="grid">{"".join(figs)}</div>'
    cmd = f"thresher plan {p.get('command') or ''}".strip()
    return "plan", "Capacity plan", f'<p class="muted">From <code>{esc(cmd)} --data</code> on this output.</p>' + html


def _notes_section(d: dict):
    if not d.get("notes"):
        return None
    return "notes", "Notes", "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in d["notes"]) + "</ul>"
