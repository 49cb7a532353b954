"""WARC reader (warcio): HTTP response records with an HTML body -> rows {id, url, date, html}.

The body is decoded with the charset the HTTP header declares, else UTF-8, else cp1252 (the
usual fallback for undeclared Western pages). Records that are not HTML responses (requests,
metadata, images) are not documents: they are counted, not quarantined. A response whose body
cannot be read goes to quarantine with its record id.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyarrow as pa

from thresher.pipeline import fs
from thresher.pipeline.io.inputs import Shard

HTML_KEY = "html"
_CHARSET = re.compile(r"charset=[\"']?([\w\-]+)", re.I)


def _decode(body: bytes, content_type: str) -> str:
    m = _CHARSET.search(content_type or "")
    for enc in ([m.group(1)] if m else []) + ["utf-8"]:
        try:
            return body.decode(enc)
        except (LookupError, UnicodeDecodeError):
            continue
    return body.decode("cp1252", errors="replace")


def read_warc(shard: Shard, id_key: str, rows_per_batch: int = 512) -> Iterator[tuple[pa.Table, list[dict], dict, int]]:
    """Yields (table, quarantine records, counters, bytes of the file read so far) batches."""
    from warcio.archiveiterator import ArchiveIterator

    from thresher.pipeline.io.readers import quarantine_record

    rows: list[dict] = []
    bad: list[dict] = []
    counters: dict[str, int] = {}
    with fs.open_input(shard.path) as f:
        for n, rec in enumerate(ArchiveIterator(f), start=1):
            ctype = rec.http_headers.get_header("Content-Type", "") if rec.http_headers else ""
            if rec.rec_type != "response" or "html" not in (ctype or "").lower():
                counters["warc_records_skipped"] = counters.get("warc_records_skipped", 0) + 1
                continue
            rid = rec.rec_headers.get_header("WARC-Record-ID")
            try:
                body = rec.content_stream().read()
            except Exception as e:  # noqa: BLE001 - a broken record is quarantined, not fatal
                bad.append(quarantine_record(shard.rel, n, f"unreadable WARC record: {e}", "read", "", row_id=rid))
                continue
            rows.append({id_key: rid, "url": rec.rec_headers.get_header("WARC-Target-URI"),
                         "date": rec.rec_headers.get_header("WARC-Date"), HTML_KEY: _decode(body, ctype)})
            if len(rows) >= rows_per_batch:
                yield pa.Table.from_pylist(rows), bad, counters, f.tell()
                rows, bad, counters = [], [], {}
    if rows or bad or counters:
        schema = pa.schema([(id_key, pa.string()), ("url", pa.string()), ("date", pa.string()), (HTML_KEY, pa.string())])
        yield pa.Table.from_pylist(rows, schema=schema), bad, counters, shard.size
