"""Where training runs: the CPU here; a visible GPU switches on memory growth and mixed
precision for the models built to train, several GPUs a MirroredStrategy (TensorFlow's
device discovery is faked)."""


from recommender.ml import accelerator as accelerator_module
from recommender.ml.accelerator import configure_accelerator

# TensorFlow as the module under test imported it: recommender.ml chooses Keras 2 before
# TensorFlow first loads, which a bare `import tensorflow` here could pre-empt.
tf = accelerator_module.tf


def test_without_a_gpu_training_runs_on_the_cpu_in_float32():
    chosen = configure_accelerator()

    assert (chosen.device, chosen.gpus, chosen.mixed_precision) == ("cpu", 0, False)
    assert chosen.replicas == 1
    with chosen.building():
        assert tf.keras.layers.Dense(1).compute_dtype == "float32"


def test_one_visible_gpu_gets_memory_growth_and_mixed_precision_while_building(fake_gpu):
    gpu, grown = fake_gpu

    chosen = configure_accelerator()

    assert (chosen.device, chosen.gpus, chosen.mixed_precision) == ("gpu", 1, True)
    assert grown == [(gpu, True)]
    with chosen.building():
        assert tf.keras.layers.Dense(1).compute_dtype == "float16"
    # Models made after (the float32 artifacts exported for serving) keep float32.
    assert tf.keras.layers.Dense(1).compute_dtype == "float32"
    assert not isinstance(chosen.strategy, tf.distribute.MirroredStrategy)


def test_several_gpus_train_with_a_mirrored_strategy(monkeypatch):
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["gpu:0", "gpu:1"] if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", lambda *args: None)
    mirrored = []
    monkeypatch.setattr(tf.distribute, "MirroredStrategy",
                        lambda: mirrored.append(True) or tf.distribute.get_strategy())

    chosen = configure_accelerator()

    assert mirrored == [True]
    assert (chosen.gpus, chosen.mixed_precision) == (2, True)
