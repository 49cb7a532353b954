"""PII redaction: positives are replaced, look-alikes (failing Luhn / IBAN checks, dates, amounts) stay."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from thresher.operators.clean.pii import PiiRedact, iban_ok, luhn_ok


def redact(text: str, **params) -> tuple[str, dict]:
    op = PiiRedact(PiiRedact.Params(**params))
    out = op.process(pa.table({"text": [text]}))["text"][0].as_py()
    return out, op.take_counters()


@pytest.mark.parametrize("text,expected,kind", [
    ("write to jane.doe+news@example.co.uk today", "write to <EMAIL> today", "EMAIL"),
    ("call +1 (415) 555-2671 now", "call <PHONE> now", "PHONE"),
    ("call +44 20 7946 0958 now", "call <PHONE> now", "PHONE"),
    ("call (212) 555-0199 now", "call <PHONE> now", "PHONE"),
    ("call 020 7946 0958 now", "call <PHONE> now", "PHONE"),
    ("host 192.168.10.254 up", "host <IP_ADDRESS> up", "IP_ADDRESS"),
    ("host 2001:db8::8a2e:370:7334 up", "host <IP_ADDRESS> up", "IP_ADDRESS"),
    ("card 4111 1111 1111 1111 ok", "card <CREDIT_CARD> ok", "CREDIT_CARD"),
    ("card 5500-0000-0000-0004 ok", "card <CREDIT_CARD> ok", "CREDIT_CARD"),
    ("iban GB82 WEST 1234 5698 7654 32 ok", "iban <IBAN> ok", "IBAN"),
    ("iban DE89370400440532013000 ok", "iban <IBAN> ok", "IBAN"),
])
def test_positives(text, expected, kind):
    out, counts = redact(text)
    assert out == expected
    assert counts == {kind: 1}


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 fails Luhn",
    "iban GB82 WEST 1234 5698 7654 33 fails mod-97",
    "iban DE89370400440532013001 fails mod-97",
    "the years 1999-2003 and 2010-2020",
    "a budget of 1,000,000 dollars and 3.14159",
    "version 10.2.3.4.5 and time 12:30:45",
    "order number 12345678 shipped",
    "not an ip 999.12.1.1",
    "ratio 3:2 and a:b:c labels",
])
def test_look_alikes_stay(text):
    out, counts = redact(text)
    assert out == text and not counts


def test_types_can_be_turned_off_and_placeholder_changed():
    out, _ = redact("mail a@b.org from 10.0.0.1", ip_addresses=False, placeholder="[{type}]")
    assert out == "mail [EMAIL] from 10.0.0.1"


@given(st.lists(st.integers(0, 9), min_size=12, max_size=18))
def test_luhn_matches_definition(digits):
    s = "".join(map(str, digits))
    # independent formulation: double every second digit from the right, sum the digits of the results
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += sum(int(c) for c in str(d * 2)) if i % 2 else d
    assert luhn_ok(s) == (total % 10 == 0)


def test_iban_check():
    assert iban_ok("GB82 WEST 1234 5698 7654 32")
    assert not iban_ok("GB82 WEST 1234 5698 7654 3")  # wrong length for GB
    assert not iban_ok("GB83 WEST 1234 5698 7654 32")


# --- the vectorised row selection (issue 19 item 5) against the implementation it replaced -----------

class FrozenPii(PiiRedact):
    """PiiRedact.process as it was before the per-type RE2 row selection (frozen copy): the reference
    the faster process() must equal byte for byte, counters included."""

    name = "pii_redact_frozen_reference"

    def process(self, batch):
        import numpy as np
        import pyarrow.compute as pc

        from thresher.operators.clean.patterns import EMAIL_PATTERN
        from thresher.pipeline.columns import set_column

        p = self.params
        t = batch[self.text_key]
        if isinstance(t, pa.ChunkedArray):
            t = t.combine_chunks()
        if p.emails:
            self.record("EMAIL", int(pc.sum(pc.count_substring_regex(t, EMAIL_PATTERN)).as_py() or 0))
            t = pc.replace_substring_regex(t, EMAIL_PATTERN, self._ph("EMAIL"))
        if p.ibans or p.credit_cards or p.phones or p.ip_addresses:
            t = self._frozen_checked(t, np, pc)
        return set_column(batch, self.text_key, t)

    def _frozen_checked(self, t, np, pc):
        from thresher.operators.clean import pii as m

        p = self.params
        rows = np.flatnonzero(pc.fill_null(pc.match_substring_regex(t, m.PREFILTER), False).to_numpy(zero_copy_only=False))
        if len(rows) == 0:
            return t
        counts = {"IBAN": 0, "CREDIT_CARD": 0, "IP_ADDRESS": 0, "PHONE": 0}
        steps = []
        if p.ibans:
            steps.append(("IBAN", m.IBAN_CANDIDATE, m.iban_ok))
        if p.credit_cards:
            steps.append(("CREDIT_CARD", m.CARD_CANDIDATE, m.card_ok))
        if p.ip_addresses:
            steps.append(("IP_ADDRESS", m.IPV4_CANDIDATE, m.ipv4_ok))
            steps.append(("IP_ADDRESS", m.IPV6_CANDIDATE, m.ipv6_ok))
        if p.phones:
            steps.append(("PHONE", m.PHONE_CANDIDATE, m.phone_ok))

        def redact(text):
            for kind, pattern, ok in steps:
                def repl(mm, kind=kind, ok=ok):
                    if ok(mm.group(0)):
                        counts[kind] += 1
                        return self._ph(kind)
                    return mm.group(0)
                text = pattern.sub(repl, text)
            return text

        values = t.take(pa.array(rows)).to_pylist()
        fixed = [redact(v) if v is not None else None for v in values]
        for kind, n in counts.items():
            self.record(kind, n)
        changed = [i for i, (a, b) in enumerate(zip(values, fixed, strict=True)) if a != b]
        if not changed:
            return t
        idx = rows[changed]
        repl_arr = pa.array([fixed[i] for i in changed], pa.large_string())
        pick = np.arange(len(t), dtype=np.int64)
        pick[idx] = len(t) + np.arange(len(idx), dtype=np.int64)
        return pa.concat_arrays([t.cast(pa.large_string()), repl_arr]).take(pa.array(pick)).cast(t.type)


SETTINGS = [
    {"emails": True, "ip_addresses": True, "phones": False, "credit_cards": False, "ibans": False},  # fineweb
    {},  # every type
    {"emails": False},
    {"placeholder": "0.0.0.0:1:{type}:2:4111 1111 1111 1111"},  # placeholders that are candidates themselves
    {"placeholder": "[{type}]"},  # inert placeholders of another form
    {"emails": True, "ip_addresses": False, "phones": True, "credit_cards": False, "ibans": False},
]


def same_as_frozen(texts, kind=None):
    batch = pa.table({"text": pa.array(texts, kind or pa.large_string()), "id": list(range(len(texts)))})
    for params in SETTINGS:
        new, old = PiiRedact(PiiRedact.Params(**params)), FrozenPii(PiiRedact.Params(**params))
        a, b = new.process(batch), old.process(batch)
        assert a.schema == b.schema and a.equals(b), params
        assert new.take_counters() == old.take_counters(), params


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_edge_cases_equal_the_frozen_implementation(kind):
    same_as_frozen([
        None, "", "no pii at all", "mail jane@example.com and 10.0.0.1", "1.2.3.4@x.com at 5.6.7.8",
        "12:30:45 and ::1 and fe80::1%eth0 and 2001:db8::1", "call +1 (415) 555-2671 or 020 7946 0958",
        "card 4111 1111 1111 1111, iban DE89370400440532013000", "a@b.co 4111-1111-1111-1111 a@b.co",
        "version 10.2.3.4.5", "x" * 5000 + " 192.168.0.1",
    ], kind)


@given(st.lists(st.text(alphabet=st.sampled_from("0123456789abcdefDE.:@ -+()xyz<>\n"), max_size=80),
                min_size=1, max_size=12))
def test_any_text_equals_the_frozen_implementation(texts):
    same_as_frozen(texts)


@pytest.mark.realdata
@pytest.mark.parametrize("rel", ["spamassassin_public_corpus/spamassassin.jsonl.gz",
                                 "trafilatura_eval_web_pages/extracted_text.trafilatura.jsonl.gz",
                                 "dolma_test_cc_and_warc/*.jsonl"])
def test_real_corpora_equal_the_frozen_implementation(rel):
    import gzip
    import json
    from pathlib import Path

    data = Path(__file__).resolve().parents[3] / "shared" / "data"
    paths = sorted(data.glob(rel))
    if not paths:
        pytest.skip(f"{rel} not in {data}")
    texts = []
    for path in paths:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as f:
            texts += [json.loads(line).get("text") for line in f if line.strip()]
    same_as_frozen(texts[:1500])
