"""Remove URLs and e-mail addresses from text (regular expressions over the whole column)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.pipeline.columns import set_column
from thresher.pipeline.ops import Mapper, OpParams
from thresher.pipeline.registry import register

URL_PATTERN = r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"'()\[\]{}]+[^\s<>\"'()\[\]{}.,;:!?]"
EMAIL_PATTERN = r"(?i)\b[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}\b"


@register
class RemovePatterns(Mapper):
    """Remove URLs and/or e-mail addresses from the text (or replace them with a string)."""

    name = "url_email_remove"
    aliases = ("remove_urls_emails",)
    metrics = {"urls": "URLs removed", "emails": "e-mail addresses removed"}

    class Params(OpParams):
        urls: bool = Field(True, description="remove http(s)://, ftp:// and www. URLs")
        emails: bool = Field(True, description="remove e-mail addresses")
        replacement: str = Field("", description="what replaces each match")

    example = {"urls": True, "emails": False}

    def process(self, batch: pa.Table) -> pa.Table:
        p = self.params
        t = batch[self.text_key]
        for flag, pattern, metric in ((p.emails, EMAIL_PATTERN, "emails"), (p.urls, URL_PATTERN, "urls")):
            if flag:
                self.record(metric, int(pc.sum(pc.count_substring_regex(t, pattern)).as_py() or 0))
                t = pc.replace_substring_regex(t, pattern, p.replacement)
        return set_column(batch, self.text_key, t)
