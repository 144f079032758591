"""Python-API mistakes that used to train or score wrongly without a word (found by a user audit, session 14): fit
called twice on one training stream, an endless stream without steps_per_epoch, images of another shape than the
network's, float images in 0..255, and evaluate / predict on diverged weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tinydata
from ieg_tf import datasets, export, pipeline
from ieg_tf.config import TrainerConfig
from ieg_tf.model import IEGTrainer
from ieg_tf.optim import TF1Momentum


def _digits_like(n=64, classes=4):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    labels = (np.arange(n) % classes).astype(np.int32)
    return datasets.from_arrays(images, labels, images[:16], labels[:16], probe_per_class=1)


def _network(shape=(8, 8, 1), classes=4):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(classes)(h))


def _trainer(network, method="supervised", jit=False, n=64):
    trainer = IEGTrainer(network, 4, TrainerConfig(method=method), num_train_examples=n)
    trainer.compile(optimizer=TF1Momentum(0.01), jit_compile=jit)
    return trainer


def test_fit_again_on_the_same_stream_is_refused_and_a_stream_from_the_trainers_step_trains_on():
    data = _digits_like()
    trainer = _trainer(_network())
    stream = pipeline.train_dataset(data, 16, strong=False, seed=1)
    trainer.fit(stream, steps_per_epoch=2, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"this training stream starts at step 0 .* but the trainer has taken 2 "
                                         r"steps, so fit would train again on the batches and augmentations of steps "
                                         r"0..1: build a new stream for each fit, .*start_step=int\(trainer"):
        trainer.fit(stream, steps_per_epoch=2, epochs=1, verbose=0)
    assert int(trainer.optimizer.iterations) == 2
    onward = pipeline.train_dataset(data, 16, strong=False, seed=1, start_step=2)
    trainer.fit(onward, steps_per_epoch=2, epochs=1, verbose=0)
    assert int(trainer.optimizer.iterations) == 4


def test_an_endless_stream_without_steps_per_epoch_is_refused():
    trainer = _trainer(_network())
    with pytest.raises(ValueError, match="the training dataset is endless .* pass steps_per_epoch"):
        trainer.fit(pipeline.train_dataset(_digits_like(), 16, strong=False), epochs=1, verbose=0)
    assert int(trainer.optimizer.iterations) == 0


def test_images_of_another_shape_than_the_network_takes_are_refused_before_tracing():
    data = _digits_like()
    trainer = _trainer(_network(shape=(32, 32, 1)))
    message = (r"the {} have shape \(8, 8, 1\) but the network was built for \(32, 32, 1\): build it for the data, "
               r"e.g. keras.Input\(shape=\(8, 8, 1\)\) \(or None for the height and width if it pools globally\)")
    with pytest.raises(ValueError, match=message.format("training images 'weak'")):
        trainer.fit(pipeline.train_dataset(data, 16, strong=False), steps_per_epoch=1, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=message.format("images")):
        trainer.evaluate(data.test_images, data.test_labels, verbose=0)
    with pytest.raises(ValueError, match=message.format("images")):
        trainer.predict(pipeline.eval_dataset(data, 8), verbose=0)
    any_size = _trainer(_network(shape=(None, None, 1)))  # a globally pooling network declared for any size
    any_size.fit(pipeline.train_dataset(data, 16, strong=False), steps_per_epoch=1, epochs=1, verbose=0)
    assert any_size.predict(data.test_images, verbose=0).shape == (16, 4)


@pytest.mark.parametrize("jit", [False, True])
def test_float_images_in_0_255_are_refused_in_training_evaluation_and_prediction(jit):
    x, noisy, true, centers = tinydata.blobs(per_class=16)
    trainer = _trainer(tinydata.mlp(), method="ieg", jit=jit)
    pixels = (x * 40 + 128).clip(0, 255)  # what unscaled images look like: values up to 255
    probe_x, probe_y = tinydata.probe(centers)
    with pytest.raises(ValueError, match=r"training images with values beyond \+-32, as unscaled 0..255 pixels "
                                         r"have, reached the training step by step 1: float training images must be "
                                         r"scaled to \[-1, 1\]"):
        trainer.fit(tinydata.train_dataset(pixels, noisy, true, probe_x, probe_y, batch_size=16),
                    steps_per_epoch=4, epochs=1, verbose=0)
    scaled = _trainer(tinydata.mlp(), jit=jit)  # the same data scaled (and the blobs as they are) train
    scaled.fit(tinydata.train_dataset(x, noisy, true, probe_x, probe_y, batch_size=16), steps_per_epoch=2,
               epochs=1, verbose=0)
    message = r"16 float images had values beyond \+-32, .*pass them as uint8 .* or scale them \(x / 127.5 - 1\)"
    with pytest.raises(ValueError, match=message):
        scaled.evaluate(pixels[:16], true[:16], verbose=0)
    with pytest.raises(ValueError, match=message):
        scaled.predict(tf.data.Dataset.from_tensor_slices(pixels[:16]).batch(4), verbose=0)
    assert np.isfinite(scaled.evaluate(x[:16], true[:16], verbose=0)[0])
    as_uint8 = np.round(pixels[:16]).astype(np.uint8)  # 0..255 as uint8 is scaled by the trainer
    assert scaled.predict(as_uint8, verbose=0).shape == (16, 4)


def test_evaluate_and_predict_refuse_diverged_weights():
    x, _, true, _ = tinydata.blobs(per_class=4)
    trainer = _trainer(tinydata.mlp())
    kernel = trainer.network.trainable_variables[0]
    kernel.assign(tf.fill(kernel.shape, float("nan")))
    trainer.ema_weights[0].assign(kernel)
    for call in (lambda: trainer.evaluate(x, true, verbose=0), lambda: trainer.predict(x, verbose=0)):
        with pytest.raises(ValueError, match="holds NaN or Inf: the training diverged"):
            call()


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv, self.head = keras.layers.Conv2D(4, 3), keras.layers.Dense(4)

    def call(self, x, training=False):
        return self.head(keras.layers.Flatten()(self.conv(x)))


def test_export_names_the_shape_a_subclassed_network_was_built_for(tmp_path):
    network = _Subclassed()
    network(np.zeros((1, 8, 8, 1), np.float32))
    trainer = _trainer(network)
    with pytest.raises(ValueError, match=r"image_shape \(12, 12, 1\) does not fit the network input \(8, 8, 1\)"):
        export.export_serving(trainer, str(tmp_path / "serving"), image_shape=(12, 12, 1))
    export.export_serving(trainer, str(tmp_path / "serving"), image_shape=(8, 8, 1))


def test_monitors_that_need_true_labels_read_nan_where_none_is_known():
    """guess_acc, omega_clean and omega_noisy compare with the true labels; on the user's own data (true_label -1)
    they have nothing to average and read NaN, where Keras' Mean read 0.0 (a measured 0%)."""
    x, noisy, _, centers = tinydata.blobs(per_class=16)
    unknown = np.full_like(noisy, -1)
    trainer = _trainer(tinydata.mlp(), method="ieg")
    history = trainer.fit(tinydata.train_dataset(x, noisy, unknown, *tinydata.probe(centers), batch_size=16),
                          steps_per_epoch=2, epochs=1, verbose=0).history
    for name in ("guess_acc", "omega_clean", "omega_noisy"):
        assert np.isnan(history[name][-1]), (name, history[name])
    for name in ("loss", "train_acc", "probe_loss", "omega_max"):
        assert np.isfinite(history[name][-1]), (name, history[name])


@pytest.mark.parametrize("built, named", [(dict(num_train_examples=32), "num_train_examples"),
                                          (dict(meta_every=2), "meta_every")])
def test_load_weights_from_a_trainer_built_otherwise_names_the_setting(tmp_path, built, named):
    path = str(tmp_path / "t.weights.h5")
    saver = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method="ieg"), num_train_examples=64)
    saver.compile(optimizer=TF1Momentum(0.1))
    saver.save_weights(path)
    loader = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method="ieg", meta_every=built.get("meta_every", 1)),
                        num_train_examples=built.get("num_train_examples", 64))
    loader.compile(optimizer=TF1Momentum(0.1))
    with pytest.raises(ValueError, match=f"was saved by a trainer built with another {named} .* build the "
                                         "IEGTrainer as the one that saved the file"):
        loader.load_weights(path)
