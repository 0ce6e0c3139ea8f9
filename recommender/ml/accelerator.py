"""Picks where training runs: every visible GPU (mixed precision), else the CPU."""

import logging
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


def configure_accelerator() -> Accelerator:
    """Mixed precision on GPUs; MirroredStrategy when several are visible, so a bigger
    node is used without code changes."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialised by an earlier call in this process
    if gpus:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        tf.keras.mixed_precision.set_global_policy("float32")
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
