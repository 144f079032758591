"""Command line: `python -m ieg_tf.main [--flagfile=flags/<experiment>.cfg] [--flag=value ...]`.

With no flags it trains on the embedded digits data (80% uniform noise, one probe image per class). Flags keep
the reference's names (SPEC 2) where they apply; the older spellings are aliases. This is the only module that
reads FLAGS: it turns them into DataSpec, TrainerConfig and RunConfig and calls `ieg_tf.train.run`.
"""

import os
import sys
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported: keep the console readable

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from ieg_tf import datasets, noise, optim, sources, train  # noqa: E402
from ieg_tf.config import GUESS_VIEWS, META_GRAD_MODES, METHODS, STRATEGIES, RunConfig, TrainerConfig  # noqa: E402

FLAGS = flags.FLAGS
MAX_SEED = 2**32 - 1  # numpy's seed range (keras.utils.set_random_seed)
# The Keras policies the trainer supports: float16 or float64 variables break its float32 EMA and loss arithmetic.
MIXED_PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
ALL_PROBE_IMAGES = "all"  # --probe_per_class: every image of a given probe set (DataSpec.probe_per_class=None)
USER_DATASETS = ("folder", "list", "arrays")  # the user's own data: their labels are not known to be clean

# Data.
flags.DEFINE_enum("dataset", "digits", datasets.DATASETS, "Data set; digits is embedded and runs offline.")
flags.DEFINE_string("data_dir", None, "CIFAR archives / tensorflow-datasets directory.")
flags.DEFINE_bool("download", False, "Let tensorflow-datasets download CIFAR (needs internet).")
flags.DEFINE_string("probe_per_class", "1", "Trusted probe images per class, taken from the clean labels or from "
                    "--probe_dir/--probe_list/the --array_file's probe arrays; 'all': every image of those.")
flags.DEFINE_enum("noise_type", "uniform", noise.NOISE_TYPES, "Label noise to inject.")
flags.DEFINE_float("noise_ratio", 0.8, "Noise ratio r (uniform: relabel with prob r, true class included).",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_string("noise_file", None, "noise_type=file: .npy/.csv with one label per original train example.")
flags.DEFINE_string("train_dir", None, "dataset=folder: one sub-folder of images per class.")
flags.DEFINE_string("test_dir", None, "dataset=folder: test images, same layout.")
flags.DEFINE_string("probe_dir", None, "dataset=folder: a separate trusted probe set (same layout as train_dir).")
flags.DEFINE_string("train_list", None, "dataset=list: text file of 'relative/path,label' lines.")
flags.DEFINE_string("test_list", None, "dataset=list: test list file.")
flags.DEFINE_string("probe_list", None, "dataset=list: a separate trusted probe list file.")
flags.DEFINE_string("image_root", None, "dataset=list: directory the list paths are relative to.")
flags.DEFINE_integer("image_size", None, "folder/list: resize to this size (<= 64 decoded at load).",
                     lower_bound=1)
flags.DEFINE_bool("skip_bad_images", False, "folder/list: skip unreadable images (counted) instead of stopping.")
flags.DEFINE_integer("num_classes", None, "dataset=list/arrays: the number of classes, to check the labels "
                     "against (default: the highest label + 1, which a stray label inflates).", lower_bound=1)
flags.DEFINE_string("array_file", None, "dataset=arrays: .npz with train_images, train_labels, test_images, "
                    "test_labels [, probe_images, probe_labels] [, class_names]; images uint8 [N, H, W, C].")

# Method and its constants (SPEC 1.0).
flags.DEFINE_enum("method", "ieg", METHODS, "Training method.")
flags.DEFINE_float("ce_factor", 5.0, "p: weight of the MixUp loss on unlabeled data.", lower_bound=0.0)
flags.DEFINE_integer("ce_rampup_steps", 0, "Ramp p linearly from 0 over this many steps (0 = the reference: no "
                     "ramp).", lower_bound=0)
flags.DEFINE_float("consistency_factor", None, "k: weight of the KL consistency loss (default 20, the paper's; "
                   "5 on the 8x8 digits, see BUILD_NOTES).", lower_bound=0.0)
flags.DEFINE_float("meta_stepsize", 0.1, "Look-ahead step size.", lower_bound=0.0)
flags.DEFINE_float("meta_momentum", 0.9, "Look-ahead momentum.", lower_bound=0.0, upper_bound=0.999)
flags.DEFINE_float("grad_eps_init", 0.9, "lambda0: where the label-mix gradient is taken.",
                   lower_bound=0.001, upper_bound=0.999)
flags.DEFINE_float("clean_threshold", None, "Paper's threshold-T split (omega* < T/B is 'possibly mislabeled'); "
                   "unset = reference behaviour (no split).", lower_bound=0.0)
flags.DEFINE_bool("meta_stop_guess_gradient", False, "Stop the gradient through the guess in the look-ahead.")
flags.DEFINE_enum("meta_grad_mode", "exact", META_GRAD_MODES,
                  "Meta gradient: exact look-ahead (reproduces the paper), approx_vjp (first order, no theta' "
                  "forward), last_layer (look-ahead through the classifier).")
flags.DEFINE_integer("meta_every", 1, "Solve omega*, lambda* every k steps and reuse them in between.", lower_bound=1)
flags.DEFINE_float("ema_decay", 0.999, "EMA decay cap.", lower_bound=0.0, upper_bound=0.999999)
flags.DEFINE_float("sharpen_temperature", 0.5, "T of the guessed label's sharpening (1 = no sharpening).",
                   lower_bound=0.01, upper_bound=1.0)
flags.DEFINE_enum("guess_views", "weak_strong", GUESS_VIEWS, "Views averaged into the guessed "
                  "label: weak and strong (the reference) or the weak view alone.")
flags.DEFINE_float("mixup_beta", 0.5, "beta of the MixUp coefficient m = max(a, 1-a), a = u^(1/beta)/2.",
                   lower_bound=0.01)
flags.DEFINE_float("probe_weight_decay", None, "wd of the meta step's probe objective (default: the network's "
                   "weight decay, as the reference).", lower_bound=0.0)

# Network and optimisation.
flags.DEFINE_string("network", None, "Network name (wrn28-10, wrn28-2, resnet29, resnet50, small_cnn, mlp); "
                    "default: small_cnn for digits, wrn28-10 for CIFAR; other data by image size: "
                    "small_cnn up to 16 px, wrn28-10 up to 64, resnet50 above.")
flags.DEFINE_alias("network_name", "network")
flags.DEFINE_float("weight_decay", None, "Override the network's L2 coefficient.", lower_bound=0.0)
flags.DEFINE_alias("l2_weight_decay", "weight_decay")
flags.DEFINE_integer("batch_size", 100, "Per-replica batch (train and probe).", lower_bound=1)
flags.DEFINE_integer("val_batch_size", 100, "Evaluation batch per replica.", lower_bound=1)
flags.DEFINE_integer("max_iteration", None, "Total training steps (default depends on the data set).",
                     lower_bound=1)
flags.DEFINE_integer("epochs", None, "Total epochs, when max_iteration is unset.", lower_bound=1)
flags.DEFINE_alias("max_epoch", "epochs")
flags.DEFINE_integer("eval_freq", None, "Steps between evaluations and checkpoints (default: one epoch).",
                     lower_bound=1)
flags.DEFINE_float("learning_rate", 0.1, "Base learning rate.", lower_bound=0.0)
flags.DEFINE_enum("lr_schedule", "cosine", optim.SCHEDULES, "Learning-rate schedule (cosine = SGDR).")
flags.DEFINE_integer("decay_steps", None, "First SGDR cycle / decay period in steps (default: one epoch).",
                     lower_bound=1)
flags.DEFINE_float("decay_rate", 0.1, "custom_step: the factor applied at each of --lr_boundaries.", lower_bound=0.0)
flags.DEFINE_list("lr_boundaries", [], "custom_step: ascending steps after which the rate is multiplied by "
                  "--decay_rate (required by custom_step).")
flags.DEFINE_float("cos_t_mul", 1.5, "SGDR period multiplier.", lower_bound=1.0)
flags.DEFINE_float("cos_m_mul", 0.9, "SGDR peak multiplier.", lower_bound=0.0)
flags.DEFINE_float("warmup_epochs", 0.0, "cosine_warmup: linear warm-up length in epochs (of train // batch "
                   "steps).", lower_bound=0.0)
flags.DEFINE_float("momentum", 0.9, "Optimizer momentum (TF1 semantics).", lower_bound=0.0, upper_bound=0.999)
flags.DEFINE_enum("aug_type", "autoaug", ["autoaug", "randaug"], "Strong augmentation policy.")
flags.DEFINE_list("probe_affine", None, "DEGREES,SHEAR,SCALE: a random rotation, x-shear and per-axis scale of "
                  "the probe images before their weak view, e.g. 15,0.3,0.15 (not in the reference; unset = "
                  "none; see BUILD_NOTES).")
flags.DEFINE_integer("seed", 12345, "Seed of the split, the noise, the input order and the step's randomness.",
                     lower_bound=0, upper_bound=MAX_SEED)
flags.DEFINE_integer("data_seed", None, "Seed of the probe split and the noise alone (unset: --seed); with it, "
                     "--seed varies only the initialisation, input order, augmentation and step randomness.",
                     lower_bound=0, upper_bound=MAX_SEED)
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"], "XLA for the train step (auto: one device).")
flags.DEFINE_enum("mixed_precision", None, MIXED_PRECISION_POLICIES, "Keras mixed precision policy (unset: "
                  "float32).")

# Run.
flags.DEFINE_string("model_dir", "/tmp/ieg_tf/digits", "Run directory; a run resumes from its checkpoints.")
flags.DEFINE_alias("checkpoint_path", "model_dir")
flags.DEFINE_enum("strategy", "default", STRATEGIES, "Distribution strategy.")
flags.DEFINE_alias("distribution_strategy", "strategy")
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu.")
flags.DEFINE_string("export_dir", None, "Write a serving SavedModel of the EMA network here at the end.")
flags.DEFINE_integer("keep_checkpoints", 4, "Checkpoints kept.", lower_bound=1)
flags.DEFINE_integer("logical_cpus", 0, "Split the CPU into this many logical devices (tests distribution on a "
                     "CPU-only machine; 0 = leave as is).", lower_bound=0)


# Flags that only some values of another flag use: (flag, other flag, the values that use it, the flag's value
# that means "off", accepted with any). Given with another value the flag would be ignored, so parsing refuses it.
_SCOPED_FLAGS = (
    ("noise_file", "noise_type", ("file",), None),
    ("noise_ratio", "noise_type", ("uniform", "flip", "asymmetric"), 0.0),  # none / semantic / file: no ratio
    ("data_dir", "dataset", ("digits", "cifar10", "cifar100"), None),
    ("download", "dataset", ("cifar10", "cifar100"), False),
    ("train_dir", "dataset", ("folder",), None),
    ("test_dir", "dataset", ("folder",), None),
    ("probe_dir", "dataset", ("folder",), None),
    ("train_list", "dataset", ("list",), None),
    ("test_list", "dataset", ("list",), None),
    ("probe_list", "dataset", ("list",), None),
    ("image_root", "dataset", ("list",), None),
    ("image_size", "dataset", ("folder", "list"), None),
    ("skip_bad_images", "dataset", ("folder", "list"), False),
    ("array_file", "dataset", ("arrays",), None),
    ("num_classes", "dataset", ("list", "arrays"), None),
)
# Refused when a run starts instead of while parsing: configs_from_flags (the Python API's way to build configs)
# takes a threshold with any method, where it is inert outside ieg (tests/test_cli.py sets every trainer flag at once).
_SCOPED_AT_START = (("clean_threshold", "method", ("ieg",), None),)
# The flag a value of another flag cannot do without, and what to pass. Checked when a run starts rather than by a
# validator, so that a flagfile (food101n.cfg) can leave the list files to the command line.
_NEEDED_FLAGS = {
    ("noise_type", "file"): ("noise_file", "LABELS.npy|.csv, one label per training example"),
    ("dataset", "folder"): ("train_dir", "DIR with one sub-folder of images per class"),
    ("dataset", "list"): ("train_list", "FILE of 'relative/path,label' lines"),
    ("dataset", "arrays"): ("array_file", "DATA.npz"),
}


def _scope_error(name, owner, used_with, off, values):
    """The error for --name given (set to a value other than its default or `off`) while --owner is not one of
    `used_with`, else None. `values` maps both flag names to their values."""
    value = values[name]
    given = (FLAGS[name].present or value != FLAGS[name].default) and value != off
    if given and values[owner] not in used_with:
        return (f"--{name} is used only with --{owner}={'|'.join(used_with)}, not --{owner}={values[owner]}: drop "
                f"--{name} or change --{owner}")
    return None


def _register_scope_validator(name, owner, used_with, off):
    def check(values):
        error = _scope_error(name, owner, used_with, off, values)
        if error:
            raise flags.ValidationError(error)
        return True
    flags.register_multi_flags_validator([owner, name], check)


for _scoped in _SCOPED_FLAGS:
    _register_scope_validator(*_scoped)


def _probe_per_class_error(values):
    """The error for a --probe_per_class that is neither a count >= 1 nor 'all' with a given probe set, else None."""
    value = values["probe_per_class"]
    if value == ALL_PROBE_IMAGES:
        # An array file's probe arrays are seen when the file is read (datasets.load_dataset).
        if values["probe_dir"] or values["probe_list"] or values["dataset"] == "arrays":
            return None
        return ("--probe_per_class=all takes every image of a separately given probe set, and none is given: pass "
                "--probe_dir (--dataset=folder) or --probe_list (--dataset=list), or probe_images in the "
                "--array_file (--dataset=arrays); or give a number of images per class")
    if value is not None and value.isdecimal() and int(value) >= 1:
        return None
    return (f"--probe_per_class={value}: give a whole number >= 1, or 'all' with --probe_dir, --probe_list or an "
            "--array_file holding probe_images")


def _check_probe_per_class(values):
    error = _probe_per_class_error(values)
    if error:
        raise flags.ValidationError(error)
    return True


flags.register_multi_flags_validator(["probe_per_class", "probe_dir", "probe_list", "dataset"],
                                     _check_probe_per_class)


def check_flags_at_start():
    """Raises ValueError for a flag that --dataset or --noise_type needs and that is not given, or for a flag of
    _SCOPED_AT_START given with a value of its other flag that ignores it."""
    for (owner, value), (name, what) in _NEEDED_FLAGS.items():
        if FLAGS[owner].value == value and not FLAGS[name].value:
            raise ValueError(f"--{owner}={value} needs --{name}={what}")
    for name, owner, used_with, off in _SCOPED_AT_START:
        error = _scope_error(name, owner, used_with, off, {name: FLAGS[name].value, owner: FLAGS[owner].value})
        if error:
            raise ValueError(error)


def warn_untrusted_probe():
    """Says so on stderr when the probe is drawn from the given labels of the user's data with no injected noise.

    IEG's probe must be clean. With --noise_type=none and no --probe_dir/--probe_list (no probe_images in the
    --array_file) the probe images are taken per class from the given labels, which for web-labelled data
    (WebVision, Food-101N) are the noisy ones. That is right for a clean-label run of your own data, so it is a
    warning, not an error.
    """
    if FLAGS.noise_type != "none" or FLAGS.method == "supervised" or FLAGS.probe_per_class == ALL_PROBE_IMAGES:
        return  # all: every image of a given probe set (the run is refused without one)
    if FLAGS.dataset in ("folder", "list") and not (FLAGS.probe_dir or FLAGS.probe_list):
        source, fix = "no --probe_dir/--probe_list", "pass a verified probe set with --probe_dir or --probe_list"
    elif FLAGS.dataset == "arrays" and "probe_images" not in _array_file_keys():
        source = "no probe_images in --array_file"
        fix = "add a verified probe set to the file as probe_images and probe_labels"
    else:
        return
    print(f"ieg_tf: warning: the {FLAGS.probe_per_class} probe image(s) per class are drawn from the given labels "
          f"(--noise_type=none, {source}) and trusted as clean; for web-labelled data {fix}", file=sys.stderr,
          flush=True)


def _array_file_keys():
    """The names of the arrays in --array_file, from its zip listing (no array is read); all of NPZ_OPTIONAL when
    the file cannot be listed, so that nothing is said about it before reading it reports the problem."""
    try:
        with np.load(FLAGS.array_file) as f:
            return set(f.files)
    except (OSError, ValueError, EOFError, AttributeError, TypeError, zipfile.BadZipFile):  # missing, .npy, corrupt
        return set(sources.NPZ_OPTIONAL)


def _note(text):
    """Prints one `ieg_tf: note:` line on stderr, where the notes of a run's start go (stdout is its output)."""
    print(f"ieg_tf: note: {text}", file=sys.stderr, flush=True)


def note_injected_noise():
    """Says on stderr that label noise is injected into the user's own data when neither --noise_type nor
    --noise_ratio is given: their default (80% uniform, the paper's benchmark setting) suits the clean benchmarks,
    while a user training on their own labels would have 80% of them replaced without having asked for it."""
    if FLAGS.dataset not in USER_DATASETS or FLAGS["noise_type"].present or FLAGS["noise_ratio"].present:
        return
    _note(f"{FLAGS.noise_ratio:.0%} {FLAGS.noise_type} label noise is injected into the labels of "
          f"--dataset={FLAGS.dataset}, which are taken as clean (the default --noise_type={FLAGS.noise_type} "
          f"--noise_ratio={FLAGS.noise_ratio:g}, the paper's benchmark setting); pass --noise_type=none to train on "
          "your labels as given")


def note_unused_probe_images(data_spec):
    """Says on stderr how many images of a probe set given by --probe_dir, --probe_list or --array_file the run uses,
    when --probe_per_class leaves some out: with the default of 1, ten trusted images per class would otherwise be
    cut to one silently. Only the probe's listing is read (the images are decoded with the rest of the data)."""
    per_class = data_spec.probe_per_class
    if FLAGS.method == "supervised" or per_class is None:  # supervised trains without the probe
        return
    counts = datasets.given_probe_counts(data_spec)
    if counts is None or counts.max() <= per_class:
        return
    given = (f"--probe_dir={data_spec.probe_dir}" if data_spec.probe_dir else
             f"--probe_list={data_spec.probe_list}" if data_spec.probe_list else
             f"probe_images of --array_file={data_spec.array_file}")
    used = sum(min(int(n), per_class) for n in counts)
    _note(f"--probe_per_class={per_class} uses {used} of the {counts.sum()} images of the given probe "
          f"set ({given}); --probe_per_class=all uses every one")


# Flags that only some values of --method or --lr_schedule read: (flag, the owner flag, the values that read it).
# A value given with another one is ignored with a note rather than refused: one flagfile serves every method
# (`--flagfile=flags/cifar10_uniform80_p1.cfg --method=supervised` is the baseline of the same experiment).
_IGNORED_UNLESS = (
    *((name, "method", ("ieg",)) for name in (
        "ce_factor", "ce_rampup_steps", "consistency_factor", "sharpen_temperature", "guess_views", "mixup_beta",
        "meta_stop_guess_gradient", "grad_eps_init", "meta_momentum")),  # l2r: no guess, no lambda, no momentum
    *((name, "method", ("ieg", "l2r")) for name in (
        "meta_every", "meta_grad_mode", "meta_stepsize", "probe_weight_decay", "probe_affine")),
    ("decay_steps", "lr_schedule", ("cosine", "cosine_warmup", "exponential")),
    ("cos_t_mul", "lr_schedule", ("cosine", "cosine_warmup")),
    ("cos_m_mul", "lr_schedule", ("cosine", "cosine_warmup")),
    ("warmup_epochs", "lr_schedule", ("cosine_warmup",)),
    ("decay_rate", "lr_schedule", ("custom_step",)),  # exponential multiplies by 0.9, as the reference
)


def note_ignored_flags():
    """Says on stderr, in one line per owner flag, which given flags the chosen --method or --lr_schedule does not
    read: they were taking no effect without a word."""
    ignored = {}
    for name, owner, used_with in _IGNORED_UNLESS:
        if FLAGS[name].present and FLAGS[owner].value not in used_with:
            ignored.setdefault(owner, []).append(name)
    for owner, names in ignored.items():
        _note(f"--{owner}={FLAGS[owner].value} does not read --{', --'.join(names)}; "
              f"{'they are' if len(names) > 1 else 'it is'} ignored")


def note_mixed_precision_on_cpu():
    """Says on stderr that a 16-bit policy runs slower on a CPU, which has no 16-bit arithmetic and converts (a user
    audit saw 6 mixed_float16 steps of the digits CNN take 75 s against 8 s in float32, without XLA, on a loaded
    machine). The policies are for GPUs and TPUs."""
    if not FLAGS.mixed_precision or FLAGS.strategy == "tpu":
        return
    import tensorflow as tf
    if not tf.config.list_physical_devices("GPU"):
        _note(f"--mixed_precision={FLAGS.mixed_precision} on a machine without a GPU runs slower than "
              "float32 (the CPU converts each 16-bit operation); it is meant for GPUs and TPUs")


def configs_from_flags():
    """(DataSpec, TrainerConfig, RunConfig) from FLAGS; raises ValueError for inconsistent values."""
    f = FLAGS
    data_spec = datasets.DataSpec(
        dataset=f.dataset, data_dir=f.data_dir, download=f.download,
        probe_per_class=None if f.probe_per_class == ALL_PROBE_IMAGES else int(f.probe_per_class),
        noise_type=f.noise_type, noise_ratio=f.noise_ratio, noise_file=f.noise_file,
        seed=f.seed if f.data_seed is None else f.data_seed, train_dir=f.train_dir, test_dir=f.test_dir,
        probe_dir=f.probe_dir, train_list=f.train_list, test_list=f.test_list, probe_list=f.probe_list,
        image_root=f.image_root, image_size=f.image_size, skip_bad_images=f.skip_bad_images, array_file=f.array_file,
        num_classes=f.num_classes)
    consistency = f.consistency_factor
    trainer_cfg = TrainerConfig(
        method=f.method, ce_factor=f.ce_factor, ce_rampup_steps=f.ce_rampup_steps,
        consistency_factor=train.default_consistency_factor(f.dataset) if consistency is None else consistency,
        meta_stepsize=f.meta_stepsize, meta_momentum=f.meta_momentum, grad_eps_init=f.grad_eps_init,
        clean_threshold=f.clean_threshold, ema_decay=f.ema_decay, seed=f.seed,
        meta_stop_guess_gradient=f.meta_stop_guess_gradient, meta_grad_mode=f.meta_grad_mode,
        meta_every=f.meta_every, sharpen_temperature=f.sharpen_temperature, mixup_beta=f.mixup_beta,
        guess_views=f.guess_views,
        probe_weight_decay=f.probe_weight_decay)
    run_cfg = RunConfig(
        model_dir=f.model_dir, network=f.network, batch_size=f.batch_size, max_iteration=f.max_iteration,
        epochs=f.epochs, eval_freq=f.eval_freq, learning_rate=f.learning_rate, lr_schedule=f.lr_schedule,
        decay_steps=f.decay_steps, decay_rate=f.decay_rate, lr_boundaries=tuple(f.lr_boundaries),
        t_mul=f.cos_t_mul, m_mul=f.cos_m_mul,
        warmup_epochs=f.warmup_epochs, momentum=f.momentum, aug_type=f.aug_type, probe_affine=f.probe_affine,
        val_batch_size=f.val_batch_size,
        strategy=f.strategy, tpu=f.tpu, jit_compile={"auto": None, "true": True, "false": False}[f.jit_compile],
        export_dir=f.export_dir, keep_checkpoints=f.keep_checkpoints, seed=f.seed,
        mixed_precision=f.mixed_precision, weight_decay=f.weight_decay)
    return data_spec, trainer_cfg, run_cfg


def _explained(error):
    """The one-line message of `error`, with the fix added where TensorFlow's own message lacks it."""
    if FLAGS.strategy == "tpu" and not FLAGS.tpu and "TPU" in str(error):  # TPUClusterResolver found none
        return (f"--strategy=tpu found no TPU to connect to ({error}): pass --tpu=NAME (a Cloud TPU name or "
                "grpc://host:port), or --tpu=local on a TPU VM")
    return str(error)


def main(argv):
    if not FLAGS["verbosity"].present:  # TensorFlow's INFO lines at each checkpoint and export; -v 0 shows them
        logging.set_verbosity(logging.WARNING)
    try:
        if len(argv) > 1:
            raise ValueError(f"unexpected argument {' '.join(map(repr, argv[1:]))}: every option is a --flag=value")
        check_flags_at_start()
        warn_untrusted_probe()
        note_injected_noise()
        if FLAGS.logical_cpus:
            import tensorflow as tf
            cpu = tf.config.list_physical_devices("CPU")[0]
            devices = [tf.config.LogicalDeviceConfiguration()] * FLAGS.logical_cpus
            tf.config.set_logical_device_configuration(cpu, devices)
        data_spec, trainer_cfg, run_cfg = configs_from_flags()
        note_unused_probe_images(data_spec)
        note_ignored_flags()
        note_mixed_precision_on_cpu()
        train.run(run_cfg, trainer_cfg, data_spec=data_spec)
    except (ValueError, train.NonFiniteLossError) as error:
        # Bad input is reported in one line naming the problem and the fix, without a TensorFlow stack trace.
        print(f"ieg_tf: error: {_explained(error)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(flush=True)  # end the progress bar's line (stdout) so that the message starts a line of its own
        if train.has_checkpoint(FLAGS.model_dir):
            print("ieg_tf: interrupted; run the same command again to resume from the last checkpoint in "
                  f"{FLAGS.model_dir}", file=sys.stderr)
        else:
            print(f"ieg_tf: interrupted before the first checkpoint in {FLAGS.model_dir}: nothing trained is kept; "
                  "run the command again, with the same or other flags, to start over", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    app.run(main)
