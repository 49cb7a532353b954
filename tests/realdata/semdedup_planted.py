"""A planted set for semantic deduplication built from ../shared/data, shared by
tests/realdata/test_semdedup_translated_realdata.py and bench/semdedup_planted.py.

Originals: real English paragraphs (the C4 / Wikipedia demo sets) and English articles of the
Universal Declaration of Human Rights (udhr_multilingual: the same declaration in ~500 languages,
parallel at article level). Planted copies:

- reformatted: a paragraph with its case, whitespace and punctuation changed, sentences reordered,
  re-wrapped into short lines, or turned into Markdown with web boilerplate around it;
- translated: a UDHR article in another language (the published translation, not machine output);
- paraphrase: the same article in a second, independent translation into the same language
  (Finnish, Thai, Japanese, Urdu, Catalan: the UDHR set has two wordings of each), planted beside
  the first one.

A removal is correct when the removed row is a planted copy and a row of its own group (its original
or another copy of it) that stayed is within the threshold of it; precision is correct removals
over all removals, recall correct removals over planted copies. UDHR articles all speak of rights,
so the English originals are close to each other: a hard set for precision.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import textwrap

import numpy as np

from tests.realdata.test_semdedup_realdata import SENTENCE, TRANSFORMS, paragraphs

HEADING = re.compile(r"^\D{0,25}?(\d{1,2})\D{0,12}$")  # "Article 7", "Artikel 7", "Статья 7", "第7条"
ARTICLES = range(2, 31)  # article 1's heading has no digit in some languages ("Article premier")

# bcp47 -> family, for recall per language family; the default translated languages are its keys
LANGUAGES = {
    "fr": "Romance", "es": "Romance", "pt-PT": "Romance", "it": "Romance", "ro": "Romance",
    "de-1996": "Germanic", "nl": "Germanic", "sv": "Germanic",
    "ru": "Slavic", "pl": "Slavic", "cs": "Slavic", "uk": "Slavic",
    "ar": "other high-resource", "hi": "other high-resource", "ja": "other high-resource",
    "ko": "other high-resource", "tr": "other high-resource", "vi": "other high-resource",
    "id": "other high-resource", "el-monoton": "other high-resource",
    "sw": "low-resource", "zu": "low-resource", "qu": "low-resource", "ha": "low-resource",
}
# bcp47 -> (first wording, second wording) by the declarations' names
PARAPHRASES = {"fi": ("Finnish", "Finnish (2)"), "th": ("Thai", "Thai (2)"), "ja": ("Japanese", "Japanese (Tokyo)"),
               "ur": ("Urdu", "Urdu (2)"), "ca": ("Catalan", "Catalan (2)")}
FAMILIES = {**LANGUAGES, "fi": "Uralic", "th": "other high-resource", "ur": "other high-resource", "ca": "Romance"}
BOILERPLATE = ("Share this: Facebook | Twitter | Email\n\nWe use cookies to improve your experience. "
               "By continuing to browse you accept our cookie policy.\n\n(c) 2024 All rights reserved.")


def split_articles(text: str) -> dict[int, str]:
    """A UDHR text's articles by number (heading lines with the article's digits)."""
    out: dict[int, list[str]] = {}
    cur = None
    for line in (s.strip() for s in text.split("\n")):
        if not line:
            continue
        m = HEADING.match(line)
        if m and len(line) <= 40:
            k = int(m.group(1))
            if (cur is None and k in (1, 2)) or (cur is not None and k == cur + 1):
                cur = k
                out[k] = []
                continue
        if cur is not None:
            out[cur].append(line)
    return {k: " ".join(v) for k, v in out.items() if v}


def _declarations(shared_data):
    with gzip.open(shared_data / "udhr_multilingual" / "udhr_texts.jsonl.gz", "rt", encoding="utf-8") as f:
        yield from (json.loads(line) for line in f)


def udhr_by_name(shared_data, names) -> dict[str, dict[int, str]]:
    """Articles 2-30 of the declarations with these names (those whose articles all split)."""
    found = {}
    for r in _declarations(shared_data):
        if r["name"] in names and r["name"] not in found:
            arts = split_articles(r["text"])
            if all(k in arts for k in ARTICLES):
                found[r["name"]] = {k: arts[k] for k in ARTICLES}
    return found


def udhr_articles(shared_data, codes) -> dict[str, dict[int, str]]:
    """Articles 2-30 per bcp47 code, from the first declaration with that code whose articles all
    split, preferring a plain name (no variety in brackets: "French", not "French (Welche)")."""
    found: dict[str, tuple[bool, dict[int, str]]] = {}
    for r in _declarations(shared_data):
        code, plain = r["bcp47"], "(" not in r["name"]
        if code in codes and (code not in found or (plain and not found[code][0])):
            arts = split_articles(r["text"])
            if all(k in arts for k in ARTICLES):
                found[code] = (plain, {k: arts[k] for k in ARTICLES})
    return {code: arts for code, (_, arts) in found.items()}


def rewrap(p: str, rng: random.Random) -> str:
    """Re-wrapped at 40-70 columns with ragged indentation."""
    width = rng.randint(40, 70)
    return "\n".join(("  " if rng.random() < 0.3 else "") + line for line in textwrap.wrap(p, width))


def markdown_boilerplate(p: str, rng: random.Random) -> str:
    """The paragraph as a Markdown page: a heading from its first words, bold lead, bullet-split
    sentences, and share / cookie boilerplate after it."""
    words = p.split()
    title = " ".join(words[:6]).strip(".,;:")
    sentences = SENTENCE.split(p)
    body = "\n".join(f"- {s}" for s in sentences[1:])
    return f"# {title}\n\n**{sentences[0]}**\n\n{body}\n\n---\n{BOILERPLATE}"


REFORMATS = {**TRANSFORMS, "rewrap": rewrap, "markdown+boilerplate": markdown_boilerplate}


def planted_set(shared_data, languages=tuple(LANGUAGES), n_paragraphs: int = 240, n_reformatted: int = 84,
                articles=tuple(ARTICLES), paraphrases=tuple(PARAPHRASES), seed: int = 17):
    """(rows, group, kind): rows {id, text}, originals first; ``group[id]`` names each row's group (a
    paragraph or an article); ``kind[id]`` is None for originals, the transform for a reformatted
    copy, ``"translated:<bcp47>"`` for a translation, ``"paraphrase:<bcp47>"`` for the second
    wording of a translation."""
    rng = random.Random(seed)
    udhr = udhr_articles(shared_data, set(languages) | {"en"})
    missing = set(languages) - set(udhr)
    if missing:
        raise LookupError(f"no UDHR declaration split into articles for {sorted(missing)}")
    pool = paragraphs(shared_data)
    originals = rng.sample(pool, n_paragraphs)
    rows, group, kind = [], {}, {}

    def add(rid, text, g, k):
        rows.append({"id": rid, "text": text})
        group[rid], kind[rid] = g, k

    for i, p in enumerate(originals):
        add(f"para-{i}", p, f"para-{i}", None)
    for a in articles:
        add(f"udhr-en-{a}", udhr["en"][a], f"article-{a}", None)
    names = list(REFORMATS)
    for j, i in enumerate(rng.sample(range(n_paragraphs), n_reformatted)):
        name = names[j % len(names)]
        add(f"reformat-{j}", REFORMATS[name](originals[i], rng), f"para-{i}", name)
    for code in languages:
        for a in articles:
            add(f"udhr-{code}-{a}", udhr[code][a], f"article-{a}", f"translated:{code}")
    wordings = udhr_by_name(shared_data, {n for c in paraphrases for n in PARAPHRASES[c]})
    for code in paraphrases:
        first, second = (wordings[n] for n in PARAPHRASES[code])
        for a in articles:
            if code not in languages:
                add(f"udhr-{code}-{a}", first[a], f"article-{a}", f"translated:{code}")
            add(f"udhr-{code}-2-{a}", second[a], f"article-{a}", f"paraphrase:{code}")
    return rows, group, kind


def score(ids, vectors: np.ndarray, removed: set, group: dict, kind: dict, threshold: float) -> dict:
    """Precision, recall, and recall per copy kind (see the module docstring)."""
    ids = list(ids)
    index = {rid: i for i, rid in enumerate(ids)}
    kept_by_group: dict[str, list[int]] = {}
    for rid in ids:
        if rid not in removed:
            kept_by_group.setdefault(group[rid], []).append(index[rid])
    correct = set()
    for rid in removed:
        keepers = kept_by_group.get(group[rid])
        if kind[rid] is not None and keepers and float((vectors[keepers] @ vectors[index[rid]]).max()) >= threshold - 1e-6:
            correct.add(rid)
    copies = [rid for rid in ids if kind[rid] is not None]
    by_kind: dict[str, list[int]] = {}
    for rid in copies:
        by_kind.setdefault(kind[rid], [0, 0])
        by_kind[kind[rid]][0] += rid in correct
        by_kind[kind[rid]][1] += 1
    return {"removed": len(removed), "correct": len(correct), "copies": len(copies),
            "precision": len(correct) / max(1, len(removed)), "recall": len(correct) / max(1, len(copies)),
            "by_kind": {k: v[0] / v[1] for k, v in by_kind.items()},
            "originals_removed": sum(1 for rid in removed if kind[rid] is None)}


def by_family(by_kind: dict) -> dict:
    """Translated-copy recall averaged per language family."""
    fam: dict[str, list[float]] = {}
    for k, v in by_kind.items():
        if k.startswith("translated:"):
            fam.setdefault(FAMILIES[k.split(":", 1)[1]], []).append(v)
    return {f: sum(v) / len(v) for f, v in fam.items()}
