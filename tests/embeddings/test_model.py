"""The numpy forward pass of all-MiniLM-L6-v2: published scores, invariants, the golden file and the pair sets."""

import json
from pathlib import Path

import numpy as np
import pytest

from embeddings import DEFAULT_SCORE_THRESHOLD
from embeddings.model import MiniLM, ModelNotInstalled, model_dir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "embeddings"

# Published by sentence-transformers for this model: the quickstart on the documentation's landing page
# (sbert.net; index.rst in huggingface/sentence-transformers), `model.similarity(embeddings, embeddings)` of
# SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2"), printed to four decimals.
PUBLISHED_SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
PUBLISHED_SIMILARITIES = [[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]]


def test_reproduces_the_published_similarity_matrix(minilm):
    vectors = minilm.encode(PUBLISHED_SENTENCES).vectors
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors @ vectors.T, PUBLISHED_SIMILARITIES, atol=1e-4)


def test_vectors_are_unit_length(minilm):
    texts = ["a", "Hello, world!", "Café crème brûlée à Zürich", "🙂 " * 50, "x" * 5000]
    norms = np.linalg.norm(minilm.encode(texts).vectors, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_a_paraphrase_is_closer_than_an_unrelated_text(minilm):
    anchor, paraphrase, unrelated = minilm.encode(
        ["How do I reset my password?", "What are the steps to reset my password?", "Give me a recipe for pancakes."]
    ).vectors
    assert anchor @ paraphrase > 0.8
    assert anchor @ unrelated < 0.2


def test_golden_vectors_and_token_counts(minilm):
    golden = json.loads((FIXTURES / "golden.json").read_text())
    encoded = minilm.encode([item["text"] for item in golden["items"]])
    assert encoded.tokens == [item["tokens"] for item in golden["items"]]
    expected = np.array([item["first_dims"] for item in golden["items"]])
    np.testing.assert_allclose(encoded.vectors[:, : golden["dims"]], expected, atol=2e-5)


def test_the_installed_weights_are_the_upstream_file():
    import hashlib

    golden = json.loads((FIXTURES / "golden.json").read_text())
    digest = hashlib.sha256((model_dir() / "model.safetensors").read_bytes()).hexdigest()
    assert digest == golden["model_safetensors_sha256"]


def test_batching_and_padding_do_not_change_a_vector(minilm):
    texts = ["short", "a somewhat longer sentence with more tokens in it", "mid length text here"]
    together = minilm.encode(texts, batch_size=2).vectors
    alone = np.stack([minilm.encode([text]).vectors[0] for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_inputs_are_cut_at_256_tokens_as_sentence_transformers_does(minilm):
    long = "word " * 600
    encoded = minilm.encode([long, long + " and a tail that is cut off"])
    assert encoded.tokens == [256, 256]
    np.testing.assert_allclose(encoded.vectors[0], encoded.vectors[1], atol=1e-6)


def test_default_threshold_on_the_pair_sets(minilm):
    """The figures docs/semantic-cache.md reports for the default score-threshold (distance = 1 - cosine)."""
    pairs = json.loads((FIXTURES / "pairs.json").read_text())

    def distances(name):
        left = minilm.encode([a for a, _ in pairs[name]]).vectors
        right = minilm.encode([b for _, b in pairs[name]]).vectors
        return 1.0 - np.sum(left * right, axis=1)

    paraphrase, unrelated, near_miss = (distances(name) for name in ("paraphrase", "unrelated", "near_miss"))
    assert len(paraphrase) >= 30 and len(unrelated) >= 30
    assert np.sum(paraphrase <= DEFAULT_SCORE_THRESHOLD) == 23  # of 40
    assert np.sum(unrelated <= DEFAULT_SCORE_THRESHOLD) == 0
    assert np.sum(near_miss <= DEFAULT_SCORE_THRESHOLD) == 1  # Fahrenheit→Celsius vs Celsius→Fahrenheit
    assert unrelated.min() > paraphrase.max()


def test_a_missing_model_directory_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_EMBEDDINGS_MODEL_DIR", str(tmp_path))
    with pytest.raises(ModelNotInstalled, match=r"no model\.safetensors"):
        MiniLM.load()
