"""``report.html``: one self-contained page about a run (or an analysis) in its output directory.

``write_report(OUT)`` gathers what the engine wrote there (``data.gather``) and renders it
(``html.render``) with inline SVG charts (``svg``): no script, no external resource, a few hundred
kilobytes at most whatever the size of the run, since every histogram is drawn from the run's
pre-binned sketches (``profile.json``), never from rows. See docs/report.md.
"""

from __future__ import annotations

from pathlib import Path

REPORT_NAME = "report.html"


def write_report(out: str | Path, own: bool = True) -> Path:
    """Write ``OUT/report.html`` atomically and return its path. ``own``: list it among the
    files of the output (``_thresher.json``) when the output is a finished one, so that a later
    run may replace it."""
    from thresher.pipeline import outdir
    from thresher.pipeline.io.writers import write_bytes_atomic
    from thresher.pipeline.report.data import gather
    from thresher.pipeline.report.html import render

    out = Path(out)
    path = out / REPORT_NAME
    write_bytes_atomic(path, render(gather(out)).encode("utf-8"))
    if own:
        outdir.add_owned(out, [REPORT_NAME])
    return path


__all__ = ["REPORT_NAME", "write_report"]
