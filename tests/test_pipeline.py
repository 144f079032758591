"""Input pipeline: batch contents, shapes, dtypes and ranges, epoch coverage, the probe cycle, exact resume from
start_step, evaluation batches, file-based images, and the distributed form on two logical CPU devices."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from ieg_tf import augment, datasets, pipeline


@pytest.fixture(scope="module")
def digits():
    # 1198 training images before the probe; 3 per class leaves N = 1168 = 73 * 16.
    return datasets.load_dataset(datasets.DataSpec(probe_per_class=3, noise_type="uniform", noise_ratio=0.5))


def _take(ds, n):
    return [{k: v.numpy() for k, v in element.items()} for element in ds.take(n)]


def test_train_batch_keys_shapes_dtypes_and_ranges(digits):
    (batch,) = _take(pipeline.train_dataset(digits, 16, seed=1), 1)
    assert sorted(batch) == ["id", "label", "probe_image", "probe_label", "strong", "true_label", "weak"]
    for key in ("weak", "strong", "probe_image"):
        assert batch[key].shape == (16, 8, 8, 1) and batch[key].dtype == np.float32
        assert batch[key].min() >= -1.0 and batch[key].max() <= 1.0
    assert not np.array_equal(batch["weak"], batch["strong"])
    for key in ("label", "id", "true_label", "probe_label"):
        assert batch[key].shape == (16,) and batch[key].dtype == np.int32
    ids = batch["id"]
    assert np.array_equal(batch["label"], digits.train_labels[ids])
    assert np.array_equal(batch["true_label"], digits.train_true_labels[ids])
    assert np.array_equal(batch["probe_label"], np.tile(np.arange(10), 2)[:16])
    # The weak view is the image of that id, moved by at most one pixel (pad 1, crop) with black fill.
    for image, weak in zip(augment.to_float(digits.train_images[ids]).numpy(), batch["weak"]):
        padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), constant_values=-1.0)
        assert any(np.array_equal(padded[dy:dy + 8, dx:dx + 8], weak) for dy in range(3) for dx in range(3))


def test_each_epoch_is_a_fresh_seeded_permutation(digits):
    batches = _take(pipeline.train_dataset(digits, 16, strong=False, seed=5), 2 * 73)
    first = np.concatenate([b["id"] for b in batches[:73]])
    second = np.concatenate([b["id"] for b in batches[73:]])
    assert np.array_equal(np.sort(first), np.arange(1168)) and np.array_equal(np.sort(second), np.arange(1168))
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, np.arange(1168))
    other = _take(pipeline.train_dataset(digits, 16, strong=False, seed=6), 1)[0]
    assert not np.array_equal(other["id"], batches[0]["id"])


def test_start_step_resumes_the_exact_stream(digits):
    # RandAugment traces faster than AutoAugment; both take their randomness from the same per-batch seed.
    fresh = _take(pipeline.train_dataset(digits, 100, seed=7, augment_policy="randaug"), 16)  # epoch ends in step 11
    resumed = _take(pipeline.train_dataset(digits, 100, seed=7, augment_policy="randaug", start_step=9), 7)
    for step, element in enumerate(resumed, start=9):
        for key, value in element.items():
            np.testing.assert_array_equal(value, fresh[step][key], err_msg=f"step {step} key {key}")
    # A resume inside the second epoch (step 12 starts at example 1200 > 1168) draws that epoch's permutation.
    later = _take(pipeline.train_dataset(digits, 100, seed=7, augment_policy="randaug", start_step=12), 4)
    for step, element in enumerate(later, start=12):
        for key, value in element.items():
            np.testing.assert_array_equal(value, fresh[step][key], err_msg=f"step {step} key {key}")
    epoch0 = np.concatenate([b["id"] for b in fresh[:11]] + [fresh[11]["id"][:68]])
    assert np.array_equal(np.sort(epoch0), np.arange(1168))  # batches run across the epoch boundary
    assert not np.array_equal(fresh[9]["strong"], fresh[10]["strong"])


def test_probe_cycles_in_fixed_order_and_tiles_when_small():
    data = datasets.load_dataset(datasets.DataSpec(probe_per_class=1, noise_ratio=0.2))
    batches = _take(pipeline.train_dataset(data, 8, strong=False, probe_batch_size=25), 3)
    stream = np.tile(np.arange(10), 8)  # probe.repeat().batch(25)
    for step, batch in enumerate(batches):
        assert np.array_equal(batch["probe_label"], stream[25 * step:25 * step + 25])
        assert batch["probe_image"].shape == (25, 8, 8, 1)
    # Two copies of one probe image get different crops: each copy is augmented on its own.
    assert not np.array_equal(batches[0]["probe_image"][0], batches[0]["probe_image"][10]) or \
        not np.array_equal(batches[0]["probe_image"][1], batches[0]["probe_image"][11])


def test_probe_affine_changes_only_the_probe_images(digits):
    plain = _take(pipeline.train_dataset(digits, 16), 2)
    styled = _take(pipeline.train_dataset(digits, 16, probe_affine=(15, 0.3, 0.15)), 2)
    again = _take(pipeline.train_dataset(digits, 16, probe_affine=(15, 0.3, 0.15)), 2)
    for a, b, c in zip(plain, styled, again):
        for key in a:
            if key != "probe_image":
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            np.testing.assert_array_equal(b[key], c[key], err_msg=key)
        assert not np.array_equal(a["probe_image"], b["probe_image"])
        assert b["probe_image"].min() >= -1.0 and b["probe_image"].max() <= 1.0


def test_no_probe_and_options(digits):
    data = datasets.load_dataset(datasets.DataSpec(probe_per_class=0, noise_ratio=0.2))
    ds = pipeline.train_dataset(data, 4, strong=False, deterministic=False)
    assert "probe_image" not in ds.element_spec and "strong" not in ds.element_spec
    assert ds.options().deterministic is False
    assert pipeline.train_dataset(digits, 4, strong=False).options().deterministic is True
    with pytest.raises(ValueError, match="batch sizes must be >= 1"):
        pipeline.train_dataset(digits, 0)
    n = len(digits.train_labels)
    with pytest.raises(ValueError, match=f"a global batch of {n + 1} examples is more than the {n} training "
                                         f"examples, so each batch would hold some examples twice; use a batch size "
                                         f"of at most {n}"):
        pipeline.train_dataset(digits, n + 1)
    assert pipeline.train_dataset(digits, n).element_spec["label"].shape == (n,)


def test_eval_dataset_keeps_order_and_remainder(digits):
    batches = list(pipeline.eval_dataset(digits, 100).as_numpy_iterator())
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    assert len(batches) == -(-len(digits.test_labels) // 100) and len(batches[-1][1]) == len(labels) % 100
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert np.array_equal(labels, digits.test_labels)
    np.testing.assert_allclose(images, digits.test_images / 255.0 * 2 - 1, atol=1e-6)
    probe_x, probe_y = next(iter(pipeline.eval_dataset(digits, 1000, split="probe")))
    assert np.array_equal(probe_y, digits.probe_labels) and probe_x.shape == (30, 8, 8, 1)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        pipeline.eval_dataset(digits, 10, split="val")


def test_images_from_files_are_decoded_and_cropped(tmp_path):
    rows, cols = np.mgrid[0:75, 0:90]
    gradient = np.stack([2 * cols, 3 * rows, np.full_like(rows, 100)], -1).astype(np.uint8)
    lines = []
    for i in range(8):
        path = tmp_path / f"{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(gradient[:75 - i % 3]).save(path)
        lines.append(f"{path.name},{i % 2}")
    (tmp_path / "list.txt").write_text("\n".join(lines))
    data = datasets.load_dataset(datasets.DataSpec(
        dataset="list", train_list=str(tmp_path / "list.txt"), test_list=str(tmp_path / "list.txt"),
        image_size=72, probe_per_class=1, noise_type="none"))
    assert data.augment_kind == "imagenet"
    # policy "none" keeps the strong view's crop and cutout but traces much faster than the ImageNet policy.
    (batch,) = _take(pipeline.train_dataset(data, 3, seed=2, probe_batch_size=2, augment_policy="none"), 1)
    for key, n in (("weak", 3), ("strong", 3), ("probe_image", 2)):
        assert batch[key].shape == (n, 72, 72, 3) and -1.0 <= batch[key].min() and batch[key].max() <= 1.0
    assert np.array_equal(batch["true_label"], [-1, -1, -1])  # user labels with noise "none": truth unknown
    x, y = next(iter(pipeline.eval_dataset(data, 8)))
    assert x.shape == (8, 72, 72, 3) and np.array_equal(y, [i % 2 for i in range(8)])
    # Centre crop of image 0 (75x90): the 65x65 square at row 5, column 13, resized to 72. Output pixel 36 samples
    # source offset (36 + 0.5) * 65 / 72 - 0.5 = 32.45, i.e. row 37.45 and column 45.45 of the gradient.
    expected = np.array([2 * 45.45, 3 * 37.45, 100]) / 255 * 2 - 1
    np.testing.assert_allclose(x[0, 36, 36], expected, atol=0.01)


_DISTRIBUTED = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ieg_tf import datasets, pipeline
    data = datasets.load_dataset(datasets.DataSpec(probe_per_class=2, noise_ratio=0.5))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = list(pipeline.train_dataset(data, 32, strong=False, probe_batch_size=12, seed=4).take(4))

    def local(step_batch, key):
        return np.concatenate([v.numpy() for v in strategy.experimental_local_results(step_batch[key])])

    for start in (0, 2):
        dist = iter(pipeline.distributed_train_dataset(strategy, data, 32, strong=False, probe_batch_size=12,
                                                       seed=4, start_step=start))
        for step in range(start, 4):
            batch = next(dist)
            assert local(batch, "weak").shape == (32, 8, 8, 1)
            for key in ("id", "label", "true_label", "probe_label"):
                assert np.array_equal(local(batch, key), single[step][key].numpy()), (start, step, key)
            assert strategy.experimental_local_results(batch["probe_image"])[0].shape == (6, 8, 8, 1)
    print("OK")
""")


def test_distributed_replicas_share_the_global_batch():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", _DISTRIBUTED], capture_output=True, text=True, env=env,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]
