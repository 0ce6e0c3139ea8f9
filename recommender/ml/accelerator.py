"""Picks where training runs: every visible GPU (mixed precision), else the CPU."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import tensorflow as tf

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accelerator:
    strategy: tf.distribute.Strategy
    device: str
    gpus: int
    mixed_precision: bool

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def dtype_policy(self) -> str:
        return "mixed_float16" if self.mixed_precision else "float32"

    @contextmanager
    def building(self) -> Iterator[None]:
        """Where a model to train is built: its variables placed by the strategy, its layers
        computing in this accelerator's precision. Keras fixes a layer's precision when it is
        built, so only building needs the scope, and the process's policy is put back after
        (models built later, as the float32 artifacts exported for serving, keep float32)."""
        with self.strategy.scope(), global_dtype_policy(self.dtype_policy):
            yield


def configure_accelerator() -> Accelerator:
    """Mixed precision on GPUs (for models made in ``building()``); MirroredStrategy when
    several are visible, so a bigger node is used without code changes."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialised by an earlier call in this process
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    accelerator = Accelerator(strategy=strategy, device="gpu" if gpus else "cpu",
                              gpus=len(gpus), mixed_precision=bool(gpus))
    logger.info("Training on %s (%d GPU(s), mixed precision %s, %d replica(s))",
                accelerator.device, accelerator.gpus, accelerator.mixed_precision,
                accelerator.replicas)
    return accelerator


@contextmanager
def global_dtype_policy(policy: str) -> Iterator[None]:
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)
