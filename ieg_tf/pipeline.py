"""The input pipeline that feeds the trainer (SPEC 1.1): train batches with a probe batch, and evaluation batches.

The training stream is a pure function of (seed, step). The example order is a concatenation of per-epoch
permutations drawn with stateless ops from (seed, epoch), cut into consecutive chunks of B indices (batches run
across epoch boundaries, as the reference's shuffle -> repeat -> batch does, so no example is dropped). Chunk j
is augmented with stateless seeds folded from (seed, j), and its probe batch is positions j*Bp .. j*Bp+Bp-1
(mod P) of the fixed class-interleaved probe order, i.e. the reference's probe.repeat().batch(Bp). Resuming at
step k therefore jumps straight to epoch k*B // N and skips k*B % N raw indices: no augmentation is replayed.

Under tf.distribute each replica consumes one chunk per step and replica r of step s reads chunk s*R + r
(R replicas in sync), so the examples and probe images of a global step are those of a one-device run with the
global batch; only the augmentation draws differ, because they are per chunk.
"""

import tensorflow as tf

from ieg_tf import augment

AUTOTUNE = tf.data.AUTOTUNE
_ORDER, _AUGMENT = 1, 2  # seed streams: example order, augmentation


def train_dataset(data, batch_size, *, strong=True, seed=12345, start_step=0, probe_batch_size=None,
                  augment_policy="autoaug", probe_affine=None, input_context=None, deterministic=True):
    """Infinite training stream of dict batches.

    Args:
      data: NoisyData.
      batch_size: B, examples per element (per replica when input_context is given).
      strong: add the strongly augmented view (IEG needs it; supervised and l2r do not).
      seed: seeds the example order and every augmentation.
      start_step: batches (global steps) already consumed; the stream then equals a fresh one from there on. It is
        the trainer's step unless mixed_float16 skipped steps (`ieg_tf.checkpoints.RunCheckpoint.batches`).
      probe_batch_size: Bp, probe images per element; None = B. A probe smaller than Bp is tiled.
      augment_policy: strong policy, "autoaug", "randaug" or "none" (see ieg_tf.augment).
      probe_affine: (degrees, shear, scale) of a random affine of the probe images before their weak view; None =
        weak view only, the reference (see ieg_tf.augment).
      input_context: tf.distribute.InputContext; shards the stream by input pipeline.
      deterministic: keep element order under parallel maps (needed for an exact resume).

    Returns:
      tf.data.Dataset of dicts: `weak` float32 [B, H, W, C] in [-1, 1]; `strong` likewise (only if strong);
      `label` int32 [B] noisy; `id` int32 [B], the position in data.train_* (not the original id);
      `true_label` int32 [B], -1 where unknown; `probe_image` float32 [Bp, H, W, C] weakly augmented (see
      probe_affine) and `probe_label` int32 [Bp] (both left out when the probe set is empty).

    Raises:
      ValueError: an empty training set, a non-positive batch size, a global batch larger than the training set
        or a negative start_step.
    """
    n, b = len(data.train_labels), int(batch_size)
    bp = int(probe_batch_size) if probe_batch_size is not None else b
    if n == 0:
        raise ValueError(f"{data.name}: the training set is empty")
    if b < 1 or bp < 1 or start_step < 0:
        raise ValueError(f"batch sizes must be >= 1 and start_step >= 0; got batch_size={batch_size}, "
                         f"probe_batch_size={probe_batch_size}, start_step={start_step}")
    pipelines, pipeline_id, replicas = 1, 0, 1
    if input_context is not None:
        pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        replicas = input_context.num_replicas_in_sync
    if b * replicas > n:
        raise ValueError(f"a global batch of {b * replicas} examples is more than the {n} training examples, so each "
                         "batch would hold some examples twice; use a batch size of at most "
                         f"{max(n // replicas, 1)}{' per replica' if replicas > 1 else ''}")
    first_chunk = int(start_step) * replicas
    first_epoch, offset = divmod(first_chunk * b, n)
    order_seed = tf.constant([seed, _ORDER], tf.int64)

    def epoch_order(epoch):
        seed_e = tf.random.experimental.stateless_fold_in(order_seed, epoch)
        return tf.data.Dataset.from_tensor_slices(
            tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int32), seed_e))

    chunks = (tf.data.Dataset.counter(first_epoch).flat_map(epoch_order)
              .skip(offset).batch(b, drop_remainder=True))
    # first_chunk is a multiple of `replicas`, hence of `pipelines`: pipeline i keeps chunks j with j % pipelines == i.
    ds = tf.data.Dataset.zip(tf.data.Dataset.counter(first_chunk), chunks).shard(pipelines, pipeline_id)
    if _from_files(data):  # each file is Inception-cropped as it is decoded; the batch-level crop would repeat it
        augmenter = augment.Augmenter(kind="imagenet", policy=augment_policy, inception_crop=False,
                                      probe_affine=probe_affine)
    else:
        augmenter = augment.augmenter_for(data.augment_kind, augment_policy, probe_affine)
    make = _batch_maker(data, augmenter, strong, bp, seed)
    ds = ds.map(make, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    # Endless by construction; tf.data cannot tell through flat_map, and fit uses the cardinality.
    ds = _finish(ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY)), deterministic)
    ds.ieg_start_step = int(start_step)  # IEGTrainer.fit refuses a stream that starts before the trainer's step
    return ds


def distributed_train_dataset(strategy, data, global_batch_size, **kwargs):
    """`train_dataset` distributed with strategy.distribute_datasets_from_function.

    Each replica gets global_batch_size / num_replicas examples per step, and probe_batch_size (if given, a
    global size too) is divided the same way. start_step counts global batches consumed.

    Args:
      strategy: a tf.distribute.Strategy.
      data: NoisyData.
      global_batch_size: B summed over replicas.
      **kwargs: the keyword arguments of `train_dataset` (not input_context).

    Returns:
      A tf.distribute.DistributedDataset.
    """
    probe_global = kwargs.pop("probe_batch_size", None) or global_batch_size

    def dataset_fn(context):
        return train_dataset(data, context.get_per_replica_batch_size(global_batch_size),
                             probe_batch_size=context.get_per_replica_batch_size(probe_global),
                             input_context=context, **kwargs)
    return strategy.distribute_datasets_from_function(dataset_fn)


def eval_dataset(data, batch_size, split="test", deterministic=True):
    """Unaugmented (image, label) batches in data order, the last batch kept even if smaller.

    Args:
      data: NoisyData.
      batch_size: images per batch.
      split: "test" (clean labels), "probe", or "train" (the noisy training labels, in id order).
      deterministic: keep element order under parallel maps.

    Returns:
      tf.data.Dataset of (float32 [b, H, W, C] in [-1, 1], int32 [b]); file-based images are centre-cropped.
    """
    splits = {"test": (data.test_images, data.test_labels), "probe": (data.probe_images, data.probe_labels),
              "train": (data.train_images, data.train_labels)}
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(splits)}")
    images, labels = splits[split]
    ds = tf.data.Dataset.from_tensor_slices((images, tf.cast(labels, tf.int32)))
    if _from_files(data):
        size = data.image_shape[0]
        ds = ds.map(lambda path, y: (augment.center_crop(_decode(path), size), y), num_parallel_calls=AUTOTUNE,
                    deterministic=deterministic)
    ds = ds.batch(int(batch_size)).map(lambda x, y: (augment.to_float(x), y), num_parallel_calls=AUTOTUNE,
                                       deterministic=deterministic)
    return _finish(ds, deterministic)


def _batch_maker(data, augmenter, strong, bp, seed):
    """The map function (chunk index j, train indices) -> batch dict, with stateless seeds from (seed, j)."""
    images, labels = tf.convert_to_tensor(data.train_images), tf.constant(data.train_labels, tf.int32)
    true = tf.constant(data.train_true_labels if data.train_true_labels is not None
                       else [-1] * len(data.train_labels), tf.int32)
    probe_images, probe_labels = tf.convert_to_tensor(data.probe_images), tf.constant(data.probe_labels, tf.int32)
    num_probe = len(data.probe_labels)
    files = _from_files(data)
    base = tf.constant([seed, _AUGMENT], tf.int64)

    def load(source, idx, crop_seed):
        batch = tf.gather(source, idx)
        if not files:
            return batch
        seeds = tf.random.experimental.stateless_split(crop_seed, tf.size(idx))
        size = data.image_shape[0]
        return tf.map_fn(lambda a: augment.inception_crop(_decode(a[0]), size, a[1]), (batch, seeds),
                         fn_output_signature=tf.TensorSpec((size, size, 3), tf.uint8))

    def make(j, idx):
        seeds = tf.unstack(tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(base, j), 5))
        out = {"weak": augmenter.weak(load(images, idx, seeds[0]), seeds[1])}
        if strong:
            out["strong"] = augmenter.strong(out["weak"], seeds[2])
        out.update(label=tf.gather(labels, idx), id=idx, true_label=tf.gather(true, idx))
        if num_probe:
            pidx = tf.cast((j * bp + tf.range(bp, dtype=tf.int64)) % num_probe, tf.int32)
            out["probe_image"] = augmenter.probe(load(probe_images, pidx, seeds[3]), seeds[4])
            out["probe_label"] = tf.gather(probe_labels, pidx)
        return out
    return make


def _decode(path):
    """uint8 [h, w, 3] from a JPEG / PNG / BMP / GIF file."""
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def _from_files(data):
    return data.augment_kind == "imagenet"


def _finish(ds, deterministic):
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.prefetch(AUTOTUNE).with_options(options)
