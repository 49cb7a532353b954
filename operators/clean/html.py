"""Main-text extraction from HTML with trafilatura (Barbaresso 2021, "Trafilatura: A Web Scraping
Library and Command-Line Tool for Text Discovery and Extraction"), the extractor FineWeb uses."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field

from thresher.pipeline.columns import set_column
from thresher.pipeline.ops import Mapper, OpParams, Resources
from thresher.pipeline.registry import register


@register
class HtmlExtract(Mapper):
    """Extract the main text of HTML pages (an ``html`` column) into the text column with trafilatura;
    pages with no main text are dropped (``no_main_text``); rows without HTML keep their text."""

    name = "html_extract"
    resources = Resources(cpus=1.0, memory_mb=512)
    metrics = {"html_bytes": "bytes of HTML read", "text_chars": "characters of text extracted",
               "rows_without_html": "rows that had no HTML and kept their text"}

    class Params(OpParams):
        html_key: str = Field("html", description="column holding the HTML")
        favor: str = Field("balanced", description="precision | recall | balanced (trafilatura's trade-off)")
        include_tables: bool = Field(True, description="keep text from tables")
        include_comments: bool = Field(False, description="keep user comments")
        drop_html: bool = Field(True, description="remove the html column afterwards")

    example = {"html_key": "html", "favor": "precision"}

    @property
    def text_source_columns(self) -> tuple[str, ...]:
        """The column this op makes the text from. The reader accepts rows that have it and no text
        (JSONL of crawled pages), instead of quarantining them for a text field they need not have."""
        return (self.params.html_key,)

    def setup(self) -> None:
        import trafilatura

        self._extract = trafilatura.extract

    def process(self, batch: pa.Table):
        p = self.params
        if p.html_key not in batch.column_names:
            self.record("rows_without_html", batch.num_rows)
            return batch  # already text (e.g. a JSONL corpus through a recipe that also takes WARC)
        pages = batch.column(p.html_key).to_pylist()
        old = batch.column(self.text_key).to_pylist() if self.text_key in batch.column_names else [None] * batch.num_rows
        texts = []
        for html, prev in zip(pages, old, strict=True):
            if not html:
                self.record("rows_without_html", 1)
                texts.append(prev or "")
                continue
            self.record("html_bytes", len(html))
            text = self._extract(html, include_tables=p.include_tables, include_comments=p.include_comments,
                                 favor_precision=p.favor == "precision", favor_recall=p.favor == "recall",
                                 output_format="txt", deduplicate=False)
            texts.append(text or "")
        self.record("text_chars", sum(len(t) for t in texts))
        empty = np.array([not t.strip() for t in texts], dtype=bool)
        col = pa.array(texts, pa.string())
        out = batch.drop_columns([p.html_key]) if p.drop_html and p.html_key in batch.column_names else batch
        return set_column(out, self.text_key, col), {"no_main_text": empty}
