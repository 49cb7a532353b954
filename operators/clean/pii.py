"""PII redaction: e-mail addresses, phone numbers, IP addresses, payment cards, IBANs -> typed
placeholders. Card numbers must pass the Luhn check (ISO/IEC 7812-1) and IBANs the ISO 13616
mod-97 check, so look-alike numbers stay. Counts per type go to the ledger.

E-mail addresses are counted by a regular expression over the whole column and replaced in the
rows that have one. The other types need a check per match, so only the rows that contain a
candidate of an enabled type go through Python: RE2 (pyarrow.compute) finds them with each type's
candidate pattern without its look-arounds (a superset of the rows the look-around pattern matches),
so rows without a candidate are never turned into Python strings. Changed rows are written back in
one gather.
"""

from __future__ import annotations

import ipaddress
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.operators.clean.patterns import EMAIL_PATTERN
from thresher.pipeline.columns import set_column
from thresher.pipeline.ops import Mapper, OpParams
from thresher.pipeline.registry import register

IPV4_CANDIDATE = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![.]?\d)")
IPV6_CANDIDATE = re.compile(r"(?i)(?<![0-9a-f:])(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?![0-9a-f:])")
IBAN_CANDIDATE = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
CARD_CANDIDATE = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
PHONE_CANDIDATE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}(?:[ .\-]\d{2,4}){1,4}(?![\w])")
# rows worth a closer look: a run of 7+ digits possibly broken by separators, or two colons
PREFILTER = r"\d[\d .\-()]{5,}\d|:[0-9A-Fa-f]{0,4}:|\d\.\d+\.\d+\.\d"
# per step, an RE2 pattern that every row the step would change matches: the step's candidate pattern
# without its look-arounds; for IPv6, what a candidate that parses must contain (an address of 2-7
# colons has "::", or 8 groups) - times such as 22:10:38 are candidates that never parse
ROW_CANDIDATE = {
    "IBAN": r"[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}",
    "CREDIT_CARD": r"(?:\d[ -]?){12,18}\d",
    "IPV4": r"\d{1,3}(?:\.\d{1,3}){3}",
    "IPV6": r"::|(?i:(?:[0-9a-f]{0,4}:){7})",
    "PHONE": r"(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}(?:[ .\-]\d{2,4}){1,4}",
}
# characters a step's candidate can hold: a placeholder without digits or colons that starts and ends
# outside them can neither hold a candidate nor join one with the text around it ("inert")
_CANDIDATE_EDGE = re.compile(r"[0-9A-Za-z .\-+():]")

# ISO 13616 IBAN lengths by country (SWIFT IBAN registry)
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if IBAN_LENGTHS.get(s[:2]) != len(s):
        return False
    moved = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def card_ok(candidate: str) -> bool:
    digits = re.sub(r"[ -]", "", candidate)
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits)


def ipv4_ok(candidate: str) -> bool:
    try:
        ipaddress.IPv4Address(candidate)
    except ValueError:
        return False
    return True


def ipv6_ok(candidate: str) -> bool:
    if candidate.count(":") < 2 or not re.search(r"[0-9a-fA-F]", candidate):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


PHONE_FORMS = re.compile(
    r"\+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]?\d{1,4}){1,4}"  # +CC ... (E.164 style)
    r"|\(\d{3}\)[ .\-]?\d{3}[ .\-]\d{4}|\d{3}[.\-]\d{3}[.\-]\d{4}|\d{3} \d{3} \d{4}"  # NANP
    r"|\d{3}-\d{4}"  # NANP local
    r"|\(0\d{1,4}\)[ .\-]?\d{3,4}[ .\-]?\d{3,4}|0\d{2,4}[ ./\-]\d{3,4}[ ./\-]?\d{3,4}"  # national, trunk prefix 0
)


def phone_ok(candidate: str) -> bool:
    """7-15 digits in a recognised phone layout: a leading +country code, North-American
    (NXX) NXX-XXXX, or a national number with trunk prefix 0. Year ranges, amounts and ids
    (1999-2003, 1,000,000, 12345678) do not fit these layouts."""
    digits = re.sub(r"\D", "", candidate)
    return 7 <= len(digits) <= 15 and PHONE_FORMS.fullmatch(candidate.strip()) is not None


@register
class PiiRedact(Mapper):
    """Replace e-mails, phone numbers, IPv4/IPv6 addresses, Luhn-valid card numbers and mod-97-valid
    IBANs with typed placeholders (<EMAIL>, <PHONE>, <IP_ADDRESS>, <CREDIT_CARD>, <IBAN>)."""

    name = "pii_redact"
    metrics = {"EMAIL": "e-mail addresses redacted", "PHONE": "phone numbers redacted",
               "IP_ADDRESS": "IP addresses redacted", "CREDIT_CARD": "card numbers redacted", "IBAN": "IBANs redacted"}

    class Params(OpParams):
        emails: bool = Field(True, description="redact e-mail addresses")
        phones: bool = Field(True, description="redact phone numbers (7-15 digits with separators or a leading +)")
        ip_addresses: bool = Field(True, description="redact IPv4 and IPv6 addresses")
        credit_cards: bool = Field(True, description="redact card numbers that pass the Luhn check")
        ibans: bool = Field(True, description="redact IBANs that pass the mod-97 check")
        placeholder: str = Field("<{type}>", description="replacement; {type} is EMAIL, PHONE, IP_ADDRESS, CREDIT_CARD or IBAN")

    example = {"phones": True, "placeholder": "<{type}>"}

    def _ph(self, kind: str) -> str:
        return self.params.placeholder.format(type=kind)

    def process(self, batch: pa.Table) -> pa.Table:
        p = self.params
        t = batch[self.text_key]
        if isinstance(t, pa.ChunkedArray):
            t = t.combine_chunks()
        rows = np.zeros(0, dtype=np.int64)  # rows changed so far, and their new values
        values = pa.array([], t.type)
        if p.emails:
            counts = pc.fill_null(pc.count_substring_regex(t, EMAIL_PATTERN), 0).to_numpy(zero_copy_only=False)
            self.record("EMAIL", int(counts.sum()))
            rows = np.flatnonzero(counts)
            if len(rows):
                values = pc.replace_substring_regex(t.take(pa.array(rows)), EMAIL_PATTERN, self._ph("EMAIL"))
        if p.ibans or p.credit_cards or p.phones or p.ip_addresses:
            rows, values = self._checked(t, rows, values)
        if not len(rows):
            return set_column(batch, self.text_key, t)
        pick = np.arange(len(t), dtype=np.int64)
        pick[rows] = len(t) + np.arange(len(rows), dtype=np.int64)
        wide = pa.large_string()
        merged = pa.concat_arrays([t.cast(wide), values.cast(wide)]).take(pa.array(pick)).cast(t.type)
        return set_column(batch, self.text_key, merged)

    def _steps(self) -> list[tuple[str, str, re.Pattern, object]]:
        """(row-pattern key, counter, candidate pattern, check) per enabled step, in order."""
        p = self.params
        steps = []
        if p.ibans:
            steps.append(("IBAN", "IBAN", IBAN_CANDIDATE, iban_ok))
        if p.credit_cards:
            steps.append(("CREDIT_CARD", "CREDIT_CARD", CARD_CANDIDATE, card_ok))
        if p.ip_addresses:
            steps.append(("IPV4", "IP_ADDRESS", IPV4_CANDIDATE, ipv4_ok))
            steps.append(("IPV6", "IP_ADDRESS", IPV6_CANDIDATE, ipv6_ok))
        if p.phones:
            steps.append(("PHONE", "PHONE", PHONE_CANDIDATE, phone_ok))
        return steps

    def _inert(self) -> bool:
        """Whether no placeholder can make a candidate for a later step (see _CANDIDATE_EDGE): then
        a row runs only the steps whose row pattern it matches; else every step."""
        for kind in ("IBAN", "CREDIT_CARD", "IP_ADDRESS", "PHONE"):
            ph = self._ph(kind)
            if not ph or re.search(r"[0-9:]", ph) or _CANDIDATE_EDGE.match(ph[0]) or _CANDIDATE_EDGE.match(ph[-1]):
                return False
        return True

    def _candidates(self, t: pa.Array, steps) -> tuple[np.ndarray, np.ndarray]:
        """(rows, which steps each needs as a bool matrix): the rows of ``t`` that match a step's row
        pattern and the old PREFILTER (the rows the previous implementation looked at)."""
        union = "|".join(f"(?:{ROW_CANDIDATE[key]})" for key, *_ in steps)
        hit = np.flatnonzero(pc.fill_null(pc.match_substring_regex(t, union), False).to_numpy(zero_copy_only=False))
        if len(hit):
            sub = t.take(pa.array(hit))
            hit = hit[pc.fill_null(pc.match_substring_regex(sub, PREFILTER), False).to_numpy(zero_copy_only=False)]
        need = np.ones((len(hit), len(steps)), dtype=bool)
        if len(hit) and len(steps) > 1 and self._inert():
            sub = t.take(pa.array(hit))
            for j, (key, *_) in enumerate(steps):
                need[:, j] = pc.fill_null(pc.match_substring_regex(sub, ROW_CANDIDATE[key]), False).to_numpy(
                    zero_copy_only=False)
        return hit, need

    def _checked(self, t: pa.Array, rows: np.ndarray, values: pa.Array) -> tuple[np.ndarray, pa.Array]:
        """IBAN, card, IP and phone: regex candidates, kept only if their check passes; on the text
        after the e-mail step (``rows`` of ``t`` already changed to ``values``). Returns every row
        changed by either step and its new value."""
        steps = self._steps()
        counts = {"IBAN": 0, "CREDIT_CARD": 0, "IP_ADDRESS": 0, "PHONE": 0}
        # candidates: in the rows the e-mail step left alone, and in the new values of the others
        untouched = np.ones(len(t), dtype=bool)
        untouched[rows] = False
        cand, need = self._candidates(t, steps)
        need, cand = need[untouched[cand]], cand[untouched[cand]]
        cand_new, need_new = self._candidates(values, steps) if len(values) else (cand[:0], need[:0])
        if not len(cand) and not len(cand_new):
            return rows, values

        def redact(text: str | None, use: np.ndarray) -> str | None:
            if text is None:
                return None
            for (_, kind, pattern, ok), on in zip(steps, use, strict=True):
                if not on:
                    continue

                def repl(m, kind=kind, ok=ok):
                    if ok(m.group(0)):
                        counts[kind] += 1
                        return self._ph(kind)
                    return m.group(0)
                text = pattern.sub(repl, text)
            return text

        if len(cand_new):  # rows the e-mail step changed: their new values change again
            fixed = values.to_pylist()
            for i, use in zip(cand_new, need_new, strict=True):
                fixed[i] = redact(fixed[i], use)
            values = pa.array(fixed, pa.large_string())
        old = t.take(pa.array(cand)).to_pylist()
        new = [redact(v, use) for v, use in zip(old, need, strict=True)]
        changed = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
        for kind, n in counts.items():
            self.record(kind, n)
        if not changed:
            return rows, values
        wide = pa.large_string()
        return (np.concatenate([rows, cand[changed]]),
                pa.concat_arrays([values.cast(wide), pa.array([new[i] for i in changed], wide)]))
