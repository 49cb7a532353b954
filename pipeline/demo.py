"""The demo corpus behind ``recipes/quickstart.yaml``: generated deterministically from text
written for this project, so the quickstart shows a real funnel on a fresh machine.

It holds article-like English pages with boilerplate lines, spam-like pages, very short
pages, pages in German, French and Spanish, exact copies and near copies (a few words
changed), and a handful of malformed lines that go to quarantine.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from thresher.pipeline.assets import cache_dir

DEMO_VERSION = 2

_SUBJECTS = ["The river", "Our small town", "The new library", "A local farmer", "The city council",
             "The old bridge", "A group of students", "The museum", "Every winter the valley",
             "The bakery on Main Street", "The research team", "A quiet neighbourhood", "The orchestra",
             "The harbour", "Volunteers from the school", "The mountain trail", "The weather station"]
_VERBS = ["opened", "repaired", "described", "celebrated", "measured", "planted", "restored", "studied",
          "welcomed", "recorded", "explained", "rebuilt", "photographed", "mapped", "documented"]
_OBJECTS = ["a garden of native flowers", "the history of the canal", "a new reading room for children",
            "the flow of water through the spring", "a festival of regional music", "the stone walls of the mill",
            "the migration of birds along the coast", "a record harvest of apples", "the first electric tram",
            "a collection of letters from the war", "the damage left by the storm", "a path along the cliffs"]
_TAILS = ["after months of careful planning.", "with help from families across the region.",
          "despite a long and unusually wet spring.", "and invited everyone to see the results.",
          "for the first time in forty years.", "while the local newspaper followed every step.",
          "so that visitors can learn how people lived here.", "and the work will continue next summer."]
_BOILERPLATE = ["Home | About | Contact | Privacy Policy", "This site uses cookies. Accept all cookies",
                "Copyright 2024 Example Media. All rights reserved.", "Subscribe to our newsletter",
                "Share on Facebook Share on Twitter", "Click here to read more", "Log in or register to comment"]
_SPAM = ["BUY NOW!!! Best prices on watches $$$ limited offer", "cheap cheap cheap deals click click click",
         "WIN A FREE PRIZE!!! CALL NOW!!! 100% FREE!!!", "$$$ make money fast $$$ work from home $$$"]
_OTHER = {
    "de": ["Der Fluss fließt ruhig durch das alte Dorf.", "Im Winter liegt viel Schnee auf den Bergen.",
           "Die Bibliothek hat neue Bücher für Kinder gekauft.", "Am Samstag findet auf dem Marktplatz ein Fest statt.",
           "Die Schüler haben die Geschichte der Mühle untersucht.", "Viele Familien besuchen im Sommer den See."],
    "fr": ["La rivière traverse lentement le vieux village.", "En hiver, la neige couvre les montagnes.",
           "La bibliothèque a acheté de nouveaux livres pour les enfants.", "Samedi, une fête aura lieu sur la place du marché.",
           "Les élèves ont étudié l'histoire du moulin.", "Beaucoup de familles visitent le lac en été."],
    "es": ["El río atraviesa despacio el viejo pueblo.", "En invierno la nieve cubre las montañas.",
           "La biblioteca compró libros nuevos para los niños.", "El sábado habrá una fiesta en la plaza del mercado.",
           "Los estudiantes estudiaron la historia del molino.", "Muchas familias visitan el lago en verano."],
}


_ADJ = ["small", "famous", "quiet", "busy", "ancient", "modern", "remote", "crowded", "green", "northern",
        "southern", "local", "restored", "forgotten", "popular", "narrow", "wooden", "historic"]
_PLACES = ["near the harbour", "behind the old mill", "along the river", "in the town square", "on the hill",
           "beside the railway", "at the edge of the forest", "in the valley", "by the lake", "outside the school"]
_WHEN = ["Last spring", "Early this morning", "In 1912", "Every Saturday", "During the long winter",
         "After the flood", "Before the war", "For many years", "In recent months", "Long ago"]
_CLAUSES = ["which surprised many residents", "although the budget was small", "because the roads were closed",
            "while children watched from the windows", "as the first snow began to fall",
            "and the mayor thanked every volunteer", "so the museum extended its opening hours",
            "even though it rained all week"]


def _sentence(rng: random.Random) -> str:
    form = rng.random()
    if form < 0.35:
        return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
    if form < 0.7:
        return (f"{rng.choice(_WHEN)}, a {rng.choice(_ADJ)} group {rng.choice(_PLACES)} {rng.choice(_VERBS)} "
                f"{rng.choice(_OBJECTS)}, {rng.choice(_CLAUSES)}.")
    return (f"{rng.choice(_SUBJECTS)} {rng.choice(_PLACES)} is {rng.choice(_ADJ)}, and visitors say the "
            f"{rng.choice(_ADJ)} streets {rng.choice(_PLACES)} are worth the trip {rng.choice(_TAILS)}")


def _article(rng: random.Random) -> str:
    paras = []
    for _ in range(rng.randint(2, 6)):
        paras.append(" ".join(_sentence(rng) for _ in range(rng.randint(2, 5))))
    lines = paras
    if rng.random() < 0.6:  # boilerplate around the article
        lines = [rng.choice(_BOILERPLATE)] + lines + rng.sample(_BOILERPLATE, rng.randint(1, 3))
    return "\n".join(lines)


def _near_copy(text: str, rng: random.Random, rate: float = 0.04) -> str:
    words = text.split(" ")
    for i in range(len(words)):
        if rng.random() < rate:
            words[i] = rng.choice(["often", "quietly", "nearby", "again", "today", "indeed"])
    return " ".join(words)


def make_demo_records(n: int = 2000, seed: int = 7) -> list[str]:
    """JSON lines of the demo corpus (a few deliberately malformed)."""
    rng = random.Random(seed)
    docs: list[dict] = []
    for i in range(n):
        r = rng.random()
        if r < 0.08:
            text = " ".join(rng.choice(_SPAM) for _ in range(rng.randint(3, 8)))
            kind = "spam"
        elif r < 0.14:
            text = rng.choice(_BOILERPLATE)
            kind = "short"
        elif r < 0.26:
            lang = rng.choice(sorted(_OTHER))
            text = " ".join(rng.choice(_OTHER[lang]) for _ in range(rng.randint(4, 10)))
            kind = f"lang-{lang}"
        elif r < 0.30 and docs:
            text = rng.choice(docs)["text"]
            kind = "exact-copy"
        elif r < 0.36 and docs:
            text = _near_copy(rng.choice(docs)["text"], rng)
            kind = "near-copy"
        else:
            text = _article(rng)
            kind = "article"
        docs.append({"id": f"demo-{i:05d}", "url": f"https://example.org/{kind}/{i}", "kind": kind, "text": text})
    lines = [json.dumps(d, ensure_ascii=False) for d in docs]
    # a few broken records: the quickstart shows them in quarantine, not lost
    lines.insert(n // 3, '{"id": "demo-broken-1", "text": "unterminated')
    lines.insert(n // 2, json.dumps({"id": "demo-broken-2", "url": "https://example.org/x"}))
    lines.insert(2 * n // 3, json.dumps({"id": "demo-broken-3", "text": None}))
    return lines


def demo_path(name: str = "quickstart") -> Path:
    """Path of a built-in demo corpus, generated on first use (atomically)."""
    from thresher.pipeline.demo_chat import DEMOS

    if name != "quickstart" and name not in DEMOS:
        from thresher.pipeline.errors import InputError

        raise InputError(f"unknown demo corpus 'demo:{name}' (available: demo:quickstart, "
                         + ", ".join(f"demo:{k}" for k in DEMOS) + ")")
    path = cache_dir("demo", f"{name}-v{DEMO_VERSION}.jsonl")
    if not path.exists():
        if name == "quickstart":
            write_demo(path)
        else:
            _write_lines(path, DEMOS[name]())
    return path


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_demo(path: Path, n: int = 2000, seed: int = 7) -> Path:
    return _write_lines(path, make_demo_records(n, seed))
