"""A visible GPU for the training code, on this CPU: TensorFlow's device discovery is
faked, so the code chooses mixed precision, which TensorFlow also runs on a CPU."""

import pytest


@pytest.fixture
def fake_gpu(monkeypatch) -> tuple:
    """The GPU training sees; returns the (device, enabled) memory-growth calls made."""
    from recommender.ml import accelerator

    tf = accelerator.tf
    gpu = object()
    grown: list = []
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: [gpu] if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth",
                        lambda device, enabled: grown.append((device, enabled)))
    # An H100's: bfloat16 for the sentence encoder (recommender.ml.encoder).
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda device: {"compute_capability": (9, 0)})
    return gpu, grown
