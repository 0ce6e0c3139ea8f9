"""Sentiment on the sentence encoder, trained on a few dozen hand-written reviews."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from recommender.ml.encoder import encoder_installed
from recommender.ml.sentiment import VaderBaseline, evaluate_sentiment, train_sentiment
from tests.recommender.planted import NASTY_TEXTS

pytestmark = pytest.mark.skipif(not encoder_installed(), reason="sentence encoder not installed")

# Clothing reviews that say how they feel without the words a lexicon knows, and a test
# set that says the same things in other words: a model has to know English to carry
# "had to send it back" over to "returned it the next day".
TRAIN_POSITIVE = [
    "Fits like a glove and I wear it all the time.",
    "Bought it in two more colours right away.",
    "True to size, the cut flatters my shape.",
    "My new favourite top, it goes with everything.",
    "I get compliments every time I wear this.",
    "Washes well and still looks new after months.",
    "Exactly as pictured, the length is just right.",
    "Worth every penny, I would buy it again.",
    "So comfortable I forget I am wearing it.",
    "The colour is even richer in person.",
    "Keeps me warm without being bulky.",
    "Ordered my usual size and it fits perfectly.",
    "The stitching is neat and the fabric feels sturdy.",
    "I have worn it to work three times this week.",
    "Great jeans, they hold their shape all day.",
    "Runs true to size and the material is thick.",
]
TRAIN_NEGATIVE = [
    "Had to send it back, way too tight across the chest.",
    "The seams came undone after one wash.",
    "The material is see-through, could not wear it outside.",
    "Shrank two sizes in the dryer.",
    "The zipper broke the first time I used it.",
    "Nothing like the picture, the colour is off.",
    "Sleeves are far too short and the waist is huge.",
    "Returned it, the fabric feels like plastic.",
    "Holes appeared after wearing it twice.",
    "The dye ran and stained my other clothes.",
    "Much smaller than the size chart says.",
    "Buttons fell off within a week.",
    "It arrived wrinkled with a stain on the front.",
    "The hem was uneven and threads were hanging off.",
    "Way too thin for the price, sending it back.",
    "Runs tiny and the straps dig into my shoulders.",
]
TEST_POSITIVE = [
    "I reach for this dress every weekend.",
    "Ordered another one as soon as it arrived.",
    "It hangs nicely and the size was spot on.",
    "Still looks brand new after many washes.",
    "My husband says it is the best thing I own.",
    "I plan to get it in every colour.",
]
TEST_NEGATIVE = [
    "I returned it the next day.",
    "The stitching unravelled after a week.",
    "The fabric pilled almost immediately.",
    "You can see right through it.",
    "It lost its shape after one wash.",
    "The straps snapped the second time I wore it.",
]


def labelled(positive: list[str], negative: list[str]) -> tuple[list[str], list[int]]:
    return positive + negative, [5] * len(positive) + [1] * len(negative)


def on_tensorflow(model, encoder=None):
    """The model scoring through TensorFlow, as a version trained before int8 scoring or
    served without LiteRT does, not through the int8 copy."""
    from recommender.ml.encoder_sentiment import EncoderSentimentModel

    return EncoderSentimentModel(encoder or model.encoder, model.head,
                                 decision_threshold=model.decision_threshold,
                                 negative_threshold=model.negative_threshold,
                                 positive_threshold=model.positive_threshold,
                                 tuned_blocks=model.tuned_blocks, quantized=False)


def refuse_conversion(encoder, top_blocks=()):
    """In place of SentenceEncoder.quantized_layer_means_function: the int8 copy fails."""
    raise RuntimeError("the converter refused an op")


@pytest.fixture(scope="module")
def trained():
    from recommender.ml.encoder_sentiment import train_encoder_sentiment

    return train_encoder_sentiment(*labelled(TRAIN_POSITIVE, TRAIN_NEGATIVE))


def test_with_a_few_dozen_reviews_it_beats_the_lexicon_and_the_ngram_model(trained):
    model, report = trained
    texts, ratings = labelled(TEST_POSITIVE, TEST_NEGATIVE)
    ngram, _ = train_sentiment(*labelled(TRAIN_POSITIVE, TRAIN_NEGATIVE))

    encoder_f1 = evaluate_sentiment(model, texts, ratings)["macro_f1"]
    vader_f1 = evaluate_sentiment(VaderBaseline(), texts, ratings)["macro_f1"]
    ngram_f1 = evaluate_sentiment(ngram, texts, ratings)["macro_f1"]

    assert encoder_f1 > max(vader_f1, ngram_f1) + 0.1, (encoder_f1, vader_f1, ngram_f1)
    # A validation slice of four texts is too few to place a cut on.
    assert report["threshold_source"] == "balanced classes" and model.decision_threshold == 0.5


@settings(max_examples=20, deadline=None)
@given(NASTY_TEXTS)
def test_any_text_gets_a_finite_score_and_a_label(trained, text):
    model, _ = trained
    [(label, score)] = model.predict([text])
    assert np.isfinite(score) and 0.0 <= score <= 1.0
    assert label in {"negative", "neutral", "positive"}


def test_the_artifact_round_trips_through_the_registry_checksum(trained, settings, tmp_path: Path):
    from recommender.artifacts import load_verified_model, save_artifact

    settings.MODEL_STORE = str(tmp_path)
    model, _ = trained
    directory, checksum = save_artifact(model, kind="sentiment", name="encoder-round-trip")
    loaded = load_verified_model(kind="sentiment", name="encoder-round-trip", checksum=checksum)

    texts = TEST_POSITIVE + TEST_NEGATIVE
    np.testing.assert_allclose(loaded.predict_positive_proba(texts), model.predict_positive_proba(texts),
                               atol=1e-6)
    assert loaded.decision_threshold == model.decision_threshold
    assert loaded.quantized == model.quantized
    # A second version loaded into the same process reuses the encoder already loaded.
    assert loaded.encoder is model.encoder
    # The encoder's 90 MB stay in the installed package; the artifact is the head.
    assert sum(path.stat().st_size for path in directory.rglob("*") if path.is_file()) < 5_000_000


@pytest.fixture(scope="module")
def other_precision_encoder(trained):
    """The encoder in the precision the shared one does not compute in: a GPU or AMX node
    trains in bfloat16, a CPU without bfloat16 serves in float32."""
    from recommender.ml.encoder import SentenceEncoder, read_encoder_files

    model, _ = trained
    other = "float32" if model.encoder.precision != "float32" else "mixed_bfloat16"
    return SentenceEncoder(read_encoder_files(), precision=other)


def test_a_head_trained_in_one_precision_scores_the_same_in_the_other(trained, other_precision_encoder):
    model, _ = trained
    texts = TEST_POSITIVE + TEST_NEGATIVE

    np.testing.assert_allclose(on_tensorflow(model, other_precision_encoder).predict_positive_proba(texts),
                               on_tensorflow(model).predict_positive_proba(texts), atol=0.01)


def test_the_head_learns_on_the_quantized_encoder_where_litert_is_installed(trained):
    from recommender.ml.encoder import quantized_runtime_installed

    model, report = trained

    assert report["quantized"] is model.quantized is quantized_runtime_installed()


def test_a_head_scores_nearly_the_same_through_tensorflow_and_the_int8_encoder(trained):
    """What a version trained before int8 scoring, or with LiteRT missing, is scored like."""
    from recommender.ml.encoder_sentiment import EncoderSentimentModel

    model, _ = trained
    texts = TEST_POSITIVE + TEST_NEGATIVE
    quantized = EncoderSentimentModel(model.encoder, model.head, decision_threshold=0.5,
                                      negative_threshold=0.5, positive_threshold=0.5, quantized=True)

    np.testing.assert_allclose(quantized.predict_positive_proba(texts),
                               on_tensorflow(model).predict_positive_proba(texts), atol=0.03)


@pytest.mark.parametrize("quantized", [True, False])
def test_the_head_learns_on_the_encoder_it_is_served_with(trained, monkeypatch, quantized):
    from recommender.ml.encoder_sentiment import EncoderSentimentConfig, train_encoder_sentiment

    model, _ = trained
    encoded = []
    int8_layer_means = model.encoder.quantized_layer_means

    def counted(token_ids, mask):
        encoded.append(len(token_ids))
        return int8_layer_means(token_ids, mask)

    monkeypatch.setitem(model.encoder.__dict__, "quantized_layer_means", counted)
    texts, ratings = labelled(TRAIN_POSITIVE, TRAIN_NEGATIVE)

    retrained, _ = train_encoder_sentiment(texts, ratings, config=EncoderSentimentConfig(
        quantized=quantized, fine_tune=False))

    assert sum(encoded) == (len(texts) if quantized else 0)
    assert retrained.quantized is quantized


def test_an_int8_version_that_cannot_be_converted_is_scored_by_tensorflow(fine_tuned, tmp_path: Path,
                                                                           monkeypatch):
    from recommender.ml import encoder_sentiment

    fine_tuned.save(tmp_path)

    monkeypatch.setattr(encoder_sentiment.SentenceEncoder, "quantized_layer_means_function",
                        refuse_conversion)
    served = encoder_sentiment.load_sentiment_model(tmp_path)

    assert fine_tuned.quantized and not served.quantized
    texts = TEST_POSITIVE + TEST_NEGATIVE
    np.testing.assert_allclose(served.predict_positive_proba(texts),
                               on_tensorflow(fine_tuned).predict_positive_proba(texts), atol=1e-6)


def test_training_goes_on_in_tensorflow_when_the_int8_encoder_cannot_be_built(trained, monkeypatch):
    from recommender.ml import encoder_sentiment

    model, _ = trained

    monkeypatch.delitem(model.encoder.__dict__, "quantized_layer_means", raising=False)
    monkeypatch.setattr(encoder_sentiment.SentenceEncoder, "quantized_layer_means_function",
                        refuse_conversion)
    texts, ratings = labelled(TRAIN_POSITIVE, TRAIN_NEGATIVE)

    retrained, report = encoder_sentiment.train_encoder_sentiment(
        texts, ratings, config=encoder_sentiment.EncoderSentimentConfig(fine_tune=False))

    assert not retrained.quantized and report["quantized"] is False
    with pytest.raises(RuntimeError, match="refused"):
        encoder_sentiment.train_encoder_sentiment(texts, ratings, config=encoder_sentiment.EncoderSentimentConfig(
            fine_tune=False, quantized=True))


def test_a_version_trained_on_tensorflow_features_is_scored_by_tensorflow(trained, tmp_path: Path):
    """As before quantised scoring existed: such artifacts have no "quantized" key."""
    from recommender.ml.encoder_sentiment import load_sentiment_model

    model, _ = trained
    on_tensorflow(model).save(tmp_path / "tensorflow")
    model.save(tmp_path / "older")
    metadata = json.loads((tmp_path / "older" / "sentiment.json").read_text())
    del metadata["quantized"]
    (tmp_path / "older" / "sentiment.json").write_text(json.dumps(metadata))

    assert not load_sentiment_model(tmp_path / "tensorflow").quantized
    assert not load_sentiment_model(tmp_path / "older").quantized


def test_an_artifact_trained_on_other_encoder_weights_is_refused(trained, tmp_path: Path):
    from recommender.ml.encoder_sentiment import load_sentiment_model

    model, _ = trained
    model.save(tmp_path)
    metadata_path = tmp_path / "sentiment.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["encoder"]["sha256"] = "0" * 64
    metadata_path.write_text(json.dumps(metadata))

    with pytest.raises(ValueError, match="encoder weights 000000000000"):
        load_sentiment_model(tmp_path)


def test_ngram_artifacts_still_load(tmp_path: Path):
    from recommender.ml.encoder_sentiment import load_sentiment_model
    from recommender.ml.sentiment import SentimentModel
    from tests.recommender.planted import trained_sentiment_model

    trained_sentiment_model().save(tmp_path)

    assert isinstance(load_sentiment_model(tmp_path), SentimentModel)


def test_with_enough_validation_texts_the_cut_and_neutral_band_are_fitted():
    from recommender.ml.encoder_sentiment import train_encoder_sentiment
    from tests.recommender.planted import planted_reviews

    texts, ratings = planted_reviews(800, seed=4)
    # Every seventh review a 3: the neutral band has something to fit on.
    ratings = [3 if index % 7 == 0 else rating for index, rating in enumerate(ratings)]

    model, report = train_encoder_sentiment(texts, ratings)

    assert report["threshold_source"] == "validation"
    assert model.negative_threshold <= model.decision_threshold <= model.positive_threshold
    assert model.decision_threshold != 0.5


def test_no_texts_give_no_scores_and_a_lone_surrogate_gets_a_score(trained):
    model, _ = trained

    assert model.predict_positive_proba([]).shape == (0,)
    [(_, score)] = model.predict(["\ud800 fits well"])
    assert 0.0 <= score <= 1.0


def test_an_encoder_version_without_the_encoder_installed_is_refused_not_crashed(
        trained, tmp_path: Path, monkeypatch):
    from recommender.ml import encoder_sentiment
    from recommender.ml.encoder import EncoderNotInstalled

    model, _ = trained
    model.save(tmp_path)

    def not_installed():
        raise EncoderNotInstalled("The sentence encoder is not installed")

    monkeypatch.setattr(encoder_sentiment, "shared_encoder", not_installed)
    # ValueError is what serving and the training pipeline treat as "cannot load this".
    with pytest.raises(ValueError, match="needs the sentence encoder"):
        encoder_sentiment.load_sentiment_model(tmp_path)


def test_an_unknown_artifact_architecture_is_refused(trained, tmp_path: Path):
    from recommender.ml.encoder_sentiment import load_sentiment_model

    model, _ = trained
    model.save(tmp_path)
    metadata = json.loads((tmp_path / "sentiment.json").read_text())
    (tmp_path / "sentiment.json").write_text(json.dumps({**metadata, "architecture": "gpt"}))

    with pytest.raises(ValueError, match="Unknown sentiment artifact architecture"):
        load_sentiment_model(tmp_path)


@pytest.fixture(scope="module")
def fine_tuned(trained):
    """The trained head and a copy of the encoder's top two blocks, tuned together for
    one epoch on the training reviews."""
    from recommender.ml.encoder_sentiment import EncoderSentimentConfig, EncoderSentimentModel, fine_tune

    model, _ = trained
    texts, ratings = labelled(TRAIN_POSITIVE, TRAIN_NEGATIVE)
    targets = (np.asarray(ratings) >= 4).astype(np.float32)
    config = EncoderSentimentConfig(fine_tune_blocks=2, fine_tune_epochs=1, encode_batch_size=8)
    blocks, head = fine_tune(model.encoder, model.head, np.asarray(texts, dtype=object), targets, config)
    return EncoderSentimentModel(model.encoder, head, decision_threshold=0.5, negative_threshold=0.4,
                                 positive_threshold=0.6, tuned_blocks=blocks, quantized=model.quantized)


def test_fine_tuning_changes_its_own_blocks_and_head_not_the_shared_encoder(trained, fine_tuned):
    from recommender.ml.encoder import SentenceEncoder, read_encoder_files

    model, _ = trained
    texts = TEST_POSITIVE + TEST_NEGATIVE

    for tuned, shared in zip(fine_tuned.tuned_blocks, model.encoder.bert.blocks[-2:], strict=True):
        assert any(not np.array_equal(a, b) for a, b in zip(tuned.get_weights(), shared.get_weights()))
    assert not np.allclose(fine_tuned.predict_positive_proba(texts), model.predict_positive_proba(texts),
                           atol=1e-4)
    # The shared encoder, which every other version in the process reads, is as loaded.
    fresh = SentenceEncoder(read_encoder_files(), precision=model.encoder.precision)
    for shared, loaded in zip(model.encoder.bert.get_weights(), fresh.bert.get_weights(), strict=True):
        np.testing.assert_array_equal(shared, loaded)


def test_a_fine_tuned_model_round_trips_through_the_registry_checksum(fine_tuned, settings,
                                                                     tmp_path: Path):
    from recommender.artifacts import ArtifactRefused, load_verified_model, save_artifact

    settings.MODEL_STORE = str(tmp_path)
    directory, checksum = save_artifact(fine_tuned, kind="sentiment", name="fine-tuned")
    loaded = load_verified_model(kind="sentiment", name="fine-tuned", checksum=checksum)

    texts = TEST_POSITIVE + TEST_NEGATIVE + ["", "\U0001F44D\U0001F44D"]
    np.testing.assert_allclose(loaded.predict_positive_proba(texts), fine_tuned.predict_positive_proba(texts),
                               atol=1e-6)
    assert len(loaded.tuned_blocks) == 2 and loaded.encoder is fine_tuned.encoder
    # Code that reads only frozen artifacts (format 1) refuses this one instead of
    # serving its head on the frozen encoder's features.
    assert json.loads((directory / "sentiment.json").read_text())["format_version"] == 2
    # The tuned blocks travel in the artifact, so a changed byte in them is caught.
    (directory / "tuned_blocks.npz").write_bytes(b"damaged")
    with pytest.raises(ArtifactRefused, match="checksum"):
        load_verified_model(kind="sentiment", name="fine-tuned", checksum=checksum)


@pytest.mark.parametrize(("fine_tune", "precision", "fit_texts", "has_validation", "expected"), [
    (None, "mixed_bfloat16", 1_000, True, True),
    (None, "mixed_bfloat16", 999, True, False),
    (None, "float32", 20_000, True, False),
    (True, "float32", 50, True, True),
    (True, "mixed_bfloat16", 20_000, False, False),
    (False, "mixed_bfloat16", 20_000, True, False),
])
def test_fine_tuning_runs_where_the_encoder_is_fast_and_there_are_reviews_enough(
        fine_tune, precision, fit_texts, has_validation, expected):
    from types import SimpleNamespace

    from recommender.ml.encoder_sentiment import EncoderSentimentConfig, _fine_tunes

    config = EncoderSentimentConfig(fine_tune=fine_tune)

    assert _fine_tunes(config, SimpleNamespace(precision=precision), has_validation, fit_texts) is expected


def test_fine_tuning_is_kept_only_where_it_beats_the_frozen_encoder_on_validation():
    from recommender.ml.encoder_sentiment import EncoderSentimentConfig, train_encoder_sentiment
    from tests.recommender.planted import planted_reviews

    texts, ratings = planted_reviews(300, seed=6)
    config = EncoderSentimentConfig(fine_tune=True, fine_tune_blocks=1, fine_tune_epochs=1)

    model, report = train_encoder_sentiment(texts, ratings, config=config)

    assert report["fine_tuned_selection_macro_f1"] is not None
    kept = report["fine_tuned_selection_macro_f1"] > report["frozen_selection_macro_f1"]
    assert report["fine_tuned_blocks"] == len(model.tuned_blocks) == (1 if kept else 0)
    assert report["selection_macro_f1"] == max(report["fine_tuned_selection_macro_f1"],
                                               report["frozen_selection_macro_f1"])


def test_cancelling_stops_fine_tuning_within_a_batch(trained):
    from recommender.ml.cancellation import TrainingCancelled
    from recommender.ml.encoder_sentiment import EncoderSentimentConfig, fine_tune

    model, _ = trained
    texts, ratings = labelled(TRAIN_POSITIVE, TRAIN_NEGATIVE)
    polls = []

    def cancel_on_third_poll():
        polls.append(1)
        return len(polls) >= 3

    with pytest.raises(TrainingCancelled):
        fine_tune(model.encoder, model.head, np.asarray(texts, dtype=object),
                  (np.asarray(ratings) >= 4).astype(np.float32),
                  EncoderSentimentConfig(fine_tune_blocks=1, fine_tune_epochs=3, encode_batch_size=4),
                  should_stop=cancel_on_third_poll)
    assert len(polls) == 3


def test_a_fine_tuned_model_worse_on_validation_is_dropped(monkeypatch):
    from recommender.ml import encoder_sentiment
    from tests.recommender.planted import planted_reviews

    def fine_tune_to_a_constant(encoder, head, texts, targets, config, **callbacks):
        constant = encoder_sentiment.tf.keras.models.clone_model(head)
        constant.set_weights([np.zeros_like(weight) for weight in head.get_weights()])
        return encoder.bert.tunable_copy_of_top_blocks(1), constant

    monkeypatch.setattr(encoder_sentiment, "fine_tune", fine_tune_to_a_constant)
    texts, ratings = planted_reviews(300, seed=6)

    model, report = encoder_sentiment.train_encoder_sentiment(
        texts, ratings, config=encoder_sentiment.EncoderSentimentConfig(fine_tune=True))

    assert report["fine_tuned_selection_macro_f1"] < report["frozen_selection_macro_f1"]
    assert model.tuned_blocks == [] and report["fine_tuned_blocks"] == 0
    assert len(set(model.predict_positive_proba(texts[:20]).round(3))) > 1


def test_a_fine_tuned_model_scores_the_same_served_in_the_other_precision(
        fine_tuned, other_precision_encoder, tmp_path: Path, monkeypatch):
    from recommender.ml import encoder_sentiment

    fine_tuned.save(tmp_path)
    monkeypatch.setattr(encoder_sentiment, "shared_encoder", lambda: other_precision_encoder)
    # Served where LiteRT is not installed: in TensorFlow.
    monkeypatch.setattr(encoder_sentiment, "quantized_runtime_installed", lambda: False)

    served = encoder_sentiment.load_sentiment_model(tmp_path)

    assert not served.quantized
    assert served.tuned_blocks[0].compute_dtype == other_precision_encoder.bert.blocks[0].compute_dtype
    texts = TEST_POSITIVE + TEST_NEGATIVE
    np.testing.assert_allclose(served.predict_positive_proba(texts),
                               on_tensorflow(fine_tuned).predict_positive_proba(texts), atol=0.01)


def test_a_fine_tuned_model_scores_nearly_the_same_quantized(fine_tuned):
    from recommender.ml.encoder_sentiment import EncoderSentimentModel

    texts = TEST_POSITIVE + TEST_NEGATIVE
    quantized = EncoderSentimentModel(fine_tuned.encoder, fine_tuned.head, decision_threshold=0.5,
                                      negative_threshold=0.5, positive_threshold=0.5,
                                      tuned_blocks=fine_tuned.tuned_blocks, quantized=True)

    np.testing.assert_allclose(quantized.predict_positive_proba(texts),
                               on_tensorflow(fine_tuned).predict_positive_proba(texts), atol=0.03)


def test_on_a_gpu_the_head_trains_under_mixed_precision_and_scores_in_float32(fake_gpu,
                                                                             tmp_path: Path):
    from recommender.ml.encoder_sentiment import load_sentiment_model, train_encoder_sentiment

    model, report = train_encoder_sentiment(*labelled(TRAIN_POSITIVE, TRAIN_NEGATIVE))
    model.save(tmp_path / "sentiment")

    assert (report["device"], report["mixed_precision"]) == ("gpu", True)
    scores = load_sentiment_model(tmp_path / "sentiment").predict_positive_proba(
        TEST_POSITIVE + TEST_NEGATIVE)
    assert np.isfinite(scores).all()
    assert scores[:len(TEST_POSITIVE)].mean() > scores[len(TEST_POSITIVE):].mean()
