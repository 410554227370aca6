"""Run the blog's review in real Keras 3, writing run folders this project's report and compare read.

A dev-time tool, never a runtime dependency: it runs in its own virtual environment, because
TensorFlow and torch do not need to share one::

    python3 -m venv .venv-keras
    .venv-keras/bin/pip install tensorflow-cpu keras numpy
    .venv-keras/bin/python tools/keras_review.py --opts adam,nadam,adamax,nesterov --seeds 0-4
    .venv-keras/bin/python tools/keras_review.py &               # processes share the list: each
    .venv-keras/bin/python tools/keras_review.py --reverse &     # claims the next free run
    python -m torchopt_review.compare runs/keras runs/blog         # Keras's review beside ours
    .venv-keras/bin/python tools/keras_review.py --check-loss      # does Keras clip the loss?
    .venv-keras/bin/python tools/keras_review.py --summary tests/fixtures/keras_review.json

What it runs is the notebook ``Tuning_Optimizer.ipynb`` of the blog (shared/BLOG.md), with only the
seed and the optimizer varied:

* data: Fashion-MNIST from the IDX files (``--data-dir``, default Debian's
  ``/usr/share/datasets/fashion-mnist``), ``X_train_full / 255.0`` in float64 as the notebook does;
  ``fit(..., validation_split=0.1)``: the last 6,000 of the 60,000 training images validate, the
  first 54,000 are shuffled every epoch (``shuffle=True``, Keras's default), batch 32 (Keras's
  default: 1,688 steps, the last of 16 images); the test set is evaluated once after training;
* model: ``Flatten`` then ``Dense(n, activation="relu", kernel_initializer="he_normal")`` for
  n in (300, 100, 50, 50, 50), then ``Dense(10, activation="softmax")`` -- the output layer keeps
  Keras's default ``glorot_uniform`` (``--output-init he_normal`` gives the variant this project
  used to build, for measuring what the initializer changes); biases zero (Keras's default);
* loss ``"sparse_categorical_crossentropy"``, metric ``"accuracy"``, every optimizer at lr 1e-3
  and Keras's defaults otherwise (``OPTIMIZERS`` below: the labels of this project's registry and
  configs/optim/*.yaml, plus the review variants of configs/review/blog.yaml);
* seeds: ``keras.utils.set_random_seed(seed)`` right before the model is built (the seed fixes
  the init and the shuffling), after ``keras.backend.clear_session()``, so a run is the same
  whether it is the first of its process or not.

Each run writes ``<logdir>/<experiment>/<label>/seed<k>/``: ``metrics.csv`` in this project's
layout (``epoch, step, wall_s, train_loss, train_acc, val_loss, val_acc, lr``; train columns are
Keras's running means over the epoch's batches, as ours are) and ``run.json`` (``status: done``,
label, optimizer, seed, lr, epochs, ``test: {acc, loss}``, the settings under ``config``, the
versions). A run whose run.json says ``done`` is skipped, so an interrupted recording resumes.

``--check-loss`` answers whether Keras clips the softmax probabilities to [1e-7, 1 - 1e-7] in the
loss (what the function's docstring and the TensorFlow backend's fallback code do) or recovers
the logits from the softmax (``_keras_logits`` / the ``Softmax`` op) and computes the exact
cross-entropy: it trains and evaluates a saturated model for one batch and compares the reported
loss and the update with both formulas computed in numpy.

``--check-shuffle`` answers whether ``fit(shuffle=True)`` draws a new order every epoch. It does
without a global seed; after ``keras.utils.set_random_seed`` (or ``tf.random.set_seed``, as the
blog's notebook calls) Keras 3's TensorFlow backend feeds epoch 1's order in *every* epoch: its
array adapter draws the permutation with ``tf.random.shuffle`` inside a one-element
``tf.data.Dataset.range(1).map(...)`` that is iterated afresh each epoch, so a seeded random op
restarts from the same state. The runs this script records therefore train on one fixed order,
and this project's ``data.shuffle: once`` (configs/review/blog.yaml) reproduces that.

``--summary FILE`` collects the finished runs of ``--opts`` into the small JSON fixture the
project's tests compare against (per optimizer, per seed: final val acc / loss, final train
loss / acc, test acc, and the validation accuracy after every epoch).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import os
import platform
import struct
import sys
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow start-up chatter
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU kernels only

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
METRIC_COLUMNS = ("epoch", "step", "wall_s", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
HIDDEN = (300, 100, 50, 50, 50)
LR = 1e-3  # the blog: 1e-3 for every optimizer

# label -> (Keras class, kwargs beside learning_rate, registry name). Keras's defaults otherwise,
# which are the values configs/optim/<name>.yaml restates for our optimizers.
OPTIMIZERS: dict[str, tuple[str, dict, str]] = {
    "sgd": ("SGD", {}, "sgd"),
    "momentum": ("SGD", {"momentum": 0.9}, "momentum"),
    "nesterov": ("SGD", {"momentum": 0.9, "nesterov": True}, "nesterov"),
    "adagrad": ("Adagrad", {}, "adagrad"),               # initial_accumulator_value 0.1, epsilon 1e-7
    "rmsprop": ("RMSprop", {"rho": 0.99}, "rmsprop"),    # the blog's final code: rho 0.99
    "adam": ("Adam", {}, "adam"),
    "nadam": ("Nadam", {}, "nadam"),
    "adamax": ("Adamax", {}, "adamax"),
    # the review variants of configs/review/blog.yaml (the blog's text rather than its code)
    "momentum-0.99": ("SGD", {"momentum": 0.99}, "momentum"),
    "rmsprop-rho0.9": ("RMSprop", {"rho": 0.9}, "rmsprop"),
}
DEFAULT_OPTS = "adam,nadam,adamax,nesterov,sgd,momentum,adagrad,rmsprop"

# how our optim kwargs spell the Keras hyperparameters (run.json's config, for the report)
_TORCH_KWARGS = {"momentum": "momentum", "nesterov": "nesterov", "rho": "alpha"}


# -- data ------------------------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise SystemExit(f"{path}: not an IDX file of unsigned bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_file(d: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (d / name).is_file():
            return d / name
    raise SystemExit(f"{d} lacks {stem}(.gz); pass --data-dir DIR with the four Fashion-MNIST IDX files")


def load_data(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The notebook's arrays: ``X / 255.0`` (float64, shape N x 28 x 28) and uint8 labels."""
    x = read_idx(_idx_file(data_dir, "train-images-idx3-ubyte")) / 255.0
    y = read_idx(_idx_file(data_dir, "train-labels-idx1-ubyte"))
    xt = read_idx(_idx_file(data_dir, "t10k-images-idx3-ubyte")) / 255.0
    yt = read_idx(_idx_file(data_dir, "t10k-labels-idx1-ubyte"))
    return x, y, xt, yt


# -- model -----------------------------------------------------------------------------------

def build_model(keras, output_init: str = "glorot_uniform"):
    """The notebook's ``tune_opt_model`` network (``Flatten(input_shape=[28, 28])`` written with an
    ``Input`` layer, which Keras 3 prefers; the same weights and math)."""
    layers = [keras.Input(shape=(28, 28)), keras.layers.Flatten()]
    layers += [keras.layers.Dense(n, activation="relu", kernel_initializer="he_normal") for n in HIDDEN]
    layers += [keras.layers.Dense(10, activation="softmax", kernel_initializer=output_init)]
    return keras.Sequential(layers)


def make_optimizer(keras, label: str):
    cls, kwargs, _ = OPTIMIZERS[label]
    return getattr(keras.optimizers, cls)(learning_rate=LR, **kwargs)


# -- one run ---------------------------------------------------------------------------------

def run_dir(logdir: Path, experiment: str, label: str, seed: int) -> Path:
    return logdir / experiment / label / f"seed{seed}"


def is_done(path: Path) -> bool:
    try:
        return json.loads((path / "run.json").read_text()).get("status") == "done"
    except (OSError, ValueError):
        return False


def claim(path: Path) -> bool:
    """Take ``path``'s run for this process: a ``.running`` file made with O_EXCL names the owner,
    so several processes can share one list of runs (each takes the next free one). A claim whose
    owner has died is taken over; a run whose metrics.csv was written in the last 15 minutes by a
    process that made no claim (an older copy of this script) is left alone."""
    path.mkdir(parents=True, exist_ok=True)
    marker = path / ".running"
    metrics = path / "metrics.csv"
    if not marker.exists() and metrics.exists() and time.time() - metrics.stat().st_mtime < 900:
        return False
    for _ in range(2):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(marker.read_text() or "0"), 0)
                return False  # alive: someone else's
            except (ValueError, ProcessLookupError, PermissionError):
                marker.unlink(missing_ok=True)  # a dead owner's claim
                continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def train_one(keras, tf, data, label: str, seed: int, epochs: int, out: Path, output_init: str,
              steps_per_execution: int = 1) -> dict:
    x, y, xt, yt = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)  # python, numpy and TensorFlow seeds: init and shuffling
    model = build_model(keras, output_init)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=make_optimizer(keras, label),
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    fh = (out / "metrics.csv").open("w", newline="")
    writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
    writer.writeheader()

    class Recorder(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            opt = self.model.optimizer
            row = {"epoch": epoch + 1, "step": int(opt.iterations.numpy()),
                   "wall_s": round(time.perf_counter() - self.t0, 3),
                   "train_loss": float(logs["loss"]), "train_acc": float(logs["accuracy"]),
                   "val_loss": float(logs["val_loss"]), "val_acc": float(logs["val_accuracy"]),
                   "lr": float(np.asarray(opt.learning_rate))}
            rows.append(row)
            writer.writerow(row)
            fh.flush()
            print(f"{label}/seed{seed}: epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} "
                  f"acc {100 * row['train_acc']:.2f}%  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%"
                  f"  ({row['wall_s']:.0f} s)", flush=True)

    started = datetime.now().isoformat(timespec="seconds")
    try:
        model.fit(x, y, batch_size=32, epochs=epochs, validation_split=0.1, shuffle=True, verbose=0,
                  callbacks=[Recorder()])
    finally:
        fh.close()
    test_loss, test_acc = model.evaluate(xt, yt, batch_size=1000, verbose=0)
    cls, kwargs, name = OPTIMIZERS[label]
    record = {
        "status": "done" if all(math.isfinite(r["train_loss"]) for r in rows) else "diverged",
        "label": label, "optimizer": name, "seed": seed, "lr": LR, "epochs": epochs,
        "config": {
            "experiment": out.parent.parent.name, "label": label, "seed": seed,
            "data": {"data_dir": None, "split": "keras", "val_size": 6000},
            "model": {"name": "blog_mlp" if output_init == "glorot_uniform" else f"blog_mlp (output {output_init})"},
            "optim": {"name": name, "semantics": "keras (real Keras)", "lr": LR,
                      "kwargs": {_TORCH_KWARGS.get(k, k): v for k, v in kwargs.items()}},
            "trainer": {"epochs": epochs, "batch_size": 32, "accelerator": "cpu", "precision": "32"},
        },
        "keras": {"class": cls, "kwargs": {"learning_rate": LR, **kwargs}, "output_init": output_init,
                  "steps_per_execution": steps_per_execution,
                  "hidden_init": "he_normal", "loss": "sparse_categorical_crossentropy",
                  "fit": "batch_size=32, validation_split=0.1, shuffle=True",
                  "shuffle": "once: after keras.utils.set_random_seed, fit feeds epoch 1's order every epoch"},
        "versions": {"python": platform.python_version(), "keras": keras.__version__,
                     "tensorflow": tf.__version__, "numpy": np.__version__},
        "device": "cpu", "engine": "keras",
        "hardware": f"{platform.machine()}, {os.cpu_count()} cores, "
                    f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'} TensorFlow threads",
        "precision": "32",
        "test": {"loss": float(test_loss), "acc": float(test_acc)},
        "epochs_completed": len(rows), "wall_s": rows[-1]["wall_s"] if rows else 0.0,
        "started": started, "finished": datetime.now().isoformat(timespec="seconds"),
    }
    (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


# -- the loss check ----------------------------------------------------------------------------

def check_loss(keras, tf) -> int:
    """Does Keras clip probabilities in ``sparse_categorical_crossentropy`` after a softmax layer?

    A two-layer softmax model is made so confident that the true class gets probability far below
    1e-7 for half of a batch and above 1 - 1e-7 for the other half. The clipped formula caps the
    per-example loss at -log(1e-7) = 16.12 and gives those examples zero gradient; the exact one
    does neither. Keras's reported loss (fit's train_step and evaluate's test_step, both compiled
    with tf.function) and the weights after one SGD step say which formula Keras used.
    """
    eps = 1e-7
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(3, activation="softmax")])
    kernel = rng.normal(size=(4, 3)).astype("float32") * 12.0
    model.layers[-1].set_weights([kernel, np.zeros(3, "float32")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(learning_rate=1.0))

    logits = (x.astype(np.float64) @ kernel.astype(np.float64))
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    p = np.exp(logp)
    exact = -logp[np.arange(len(y)), y]
    clipped = -np.log(np.clip(p, eps, 1 - eps))[np.arange(len(y)), y]
    # gradient wrt the kernel, mean over the batch: exact = x^T (p - onehot) / n; clipped: the
    # examples whose true-class probability is clipped get zero gradient (clip's gradient is 0)
    onehot = np.eye(3)[y]
    keep = ((p[np.arange(len(y)), y] > eps) & (p[np.arange(len(y)), y] < 1 - eps)).astype(np.float64)
    g_exact = x.T.astype(np.float64) @ (p - onehot) / len(y)
    g_clip = x.T.astype(np.float64) @ ((p - onehot) * keep[:, None]) / len(y)

    eval_loss = float(model.evaluate(x, y, batch_size=8, verbose=0))
    hist = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    fit_loss = float(hist.history["loss"][0])
    k_after = model.layers[-1].get_weights()[0].astype(np.float64)
    step = kernel.astype(np.float64) - k_after  # lr 1: the gradient itself
    print(f"keras {keras.__version__}, tensorflow {tf.__version__}, backend {keras.backend.backend()}")
    print(f"true-class probabilities: {np.array2string(p[np.arange(len(y)), y], precision=2)}")
    print(f"mean loss  exact {exact.mean():.4f}   clipped {clipped.mean():.4f}   "
          f"Keras evaluate {eval_loss:.4f}   Keras fit {fit_loss:.4f}")
    d_exact, d_clip = float(np.abs(step - g_exact).max()), float(np.abs(step - g_clip).max())
    print(f"one SGD step, max |Keras update - gradient|:  exact {d_exact:.2e}   clipped {d_clip:.2e}")
    used_exact = (abs(fit_loss - exact.mean()) < 1e-3 * exact.mean() and abs(eval_loss - exact.mean()) < 1e-3 * exact.mean()
                  and d_exact < d_clip)
    print("Keras computes the exact cross-entropy from the logits (no clipping)" if used_exact
          else "Keras clips the probabilities")
    return 0


# -- the shuffle check -------------------------------------------------------------------------

def shuffle_probe(keras, tf, seeded: bool) -> list[list[int]]:
    """The training order ``fit(shuffle=True, validation_split=0.25)`` feeds in each of 3 epochs, for
    40 samples whose only feature is their index (a layer ``tf.print``s it, inside the compiled
    train step)."""
    import tempfile

    if seeded:
        keras.utils.set_random_seed(0)
    out = Path(tempfile.mkdtemp()) / "order.txt"

    class Spy(keras.layers.Layer):
        def call(self, x, training=None):
            if training:
                tf.print(tf.cast(x[:, 0], tf.int32), output_stream=f"file://{out}", summarize=-1)
            return x

    n, bs = 40, 8
    x = np.arange(n, dtype="float32")[:, None]
    model = keras.Sequential([keras.Input(shape=(1,)), Spy(), keras.layers.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    model.fit(x, np.zeros(n, "int64"), batch_size=bs, epochs=3, validation_split=0.25, shuffle=True, verbose=0)
    lines = [ln.strip("[] ") for ln in out.read_text().splitlines() if ln.strip()]
    flat = [[int(v) for v in ln.split()] for ln in lines]
    per_epoch = len(flat) // 3
    return [sum(flat[e * per_epoch:(e + 1) * per_epoch], []) for e in range(3)]


def check_shuffle() -> int:
    """Does ``fit(shuffle=True)`` reshuffle every epoch? Each case in a fresh process, because a
    global seed, once set, stays set."""
    import subprocess

    for mode in ("seeded", "unseeded"):
        proc = subprocess.run([sys.executable, __file__, "--shuffle-probe", mode], capture_output=True, text=True)
        orders = json.loads(proc.stdout.strip().splitlines()[-1])
        same = orders[0] == orders[1] == orders[2]
        print(f"{'keras.utils.set_random_seed(0)' if mode == 'seeded' else 'no global seed':32s} first 8 per epoch: "
              f"{[o[:8] for o in orders]} -> {'the SAME order every epoch' if same else 'a new order each epoch'}")
    return 0


# -- the fixture -------------------------------------------------------------------------------

def summary(logdir: Path, experiment: str, labels: list[str], out: Path) -> int:
    """The fixture the tests compare our review with: per optimizer and seed, Keras's final numbers."""
    runs: dict[str, dict[str, dict]] = {}
    meta: dict = {}
    for label in labels:
        base = logdir / experiment / label
        for seed_dir in sorted(base.glob("seed*"), key=lambda p: int(p.name[4:])):
            if not is_done(seed_dir):
                continue
            info = json.loads((seed_dir / "run.json").read_text())
            with (seed_dir / "metrics.csv").open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            last = rows[-1]
            runs.setdefault(label, {})[str(info["seed"])] = {
                "final_val_acc": float(last["val_acc"]), "final_val_loss": float(last["val_loss"]),
                "final_train_loss": float(last["train_loss"]), "final_train_acc": float(last["train_acc"]),
                "test_acc": float(info["test"]["acc"]), "test_loss": float(info["test"]["loss"]),
                "val_acc_by_epoch": [round(float(r["val_acc"]), 5) for r in rows],
            }
            meta = {"versions": info["versions"], "keras": {k: v for k, v in info["keras"].items()
                                                             if k not in ("class", "kwargs")},
                    "epochs": info["epochs"]}
    fixture = {
        "description": (
            "Real Keras 3 runs of the blog's review (tools/keras_review.py): the notebook's model "
            "(he_normal hidden layers, glorot_uniform softmax output, zero biases), "
            "sparse_categorical_crossentropy, lr 1e-3, batch 32, validation_split=0.1, shuffle, "
            "keras.utils.set_random_seed(seed) (with which Keras 3 feeds epoch 1's shuffled order in every "
            "epoch: our data.shuffle 'once'). Per optimizer label and seed: the last epoch's "
            "metrics (train ones are Keras's running means over the epoch), test metrics after "
            "training, and the validation accuracy after every epoch."
        ),
        "script": "tools/keras_review.py",
        **meta,
        "optimizers": {label: {"class": OPTIMIZERS[label][0], "kwargs": {"learning_rate": LR, **OPTIMIZERS[label][1]}}
                       for label in runs},
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {out}: " + ", ".join(f"{k} x {len(v)} seeds" for k, v in runs.items()))
    return 0


# -- CLI ---------------------------------------------------------------------------------------

def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        seeds += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return seeds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--opts", default=DEFAULT_OPTS, help=f"labels, comma-separated (default {DEFAULT_OPTS}; "
                                                          f"valid: {', '.join(OPTIMIZERS)})")
    ap.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,2,5")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--logdir", type=Path, default=ROOT / "runs")
    ap.add_argument("--experiment", default="keras")
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TORCHOPT_DATA_DIR", DEBIAN_DIR)))
    ap.add_argument("--threads", type=int, default=1, help="TensorFlow intra- and inter-op threads per process")
    ap.add_argument("--shard", default="1/1", help="i/n: this process runs every n-th run from the i-th (1-based)")
    ap.add_argument("--reverse", action="store_true",
                    help="take the runs from the end of the list (a second process then meets the first in the middle)")
    ap.add_argument("--output-init", default="glorot_uniform",
                    help="the softmax layer's kernel initializer (the notebook: Keras's default glorot_uniform)")
    ap.add_argument("--steps-per-execution", type=int, default=211,
                    help="training steps per tf.function call (default 211 = 1688 / 8): the same steps and "
                         "numbers as 1 (the notebook's), checked bit for bit, with less Python overhead per step")
    ap.add_argument("--check-loss", action="store_true", help="only report whether Keras clips the loss")
    ap.add_argument("--check-shuffle", action="store_true", help="only report whether fit reshuffles every epoch")
    ap.add_argument("--shuffle-probe", choices=("seeded", "unseeded"), help=argparse.SUPPRESS)
    ap.add_argument("--summary", type=Path, metavar="FILE", help="only write the test fixture from finished runs")
    args = ap.parse_args()

    labels = [s.strip() for s in args.opts.split(",") if s.strip()]
    unknown = [s for s in labels if s not in OPTIMIZERS]
    if unknown:
        ap.error(f"unknown optimizer label(s) {unknown}; valid: {', '.join(OPTIMIZERS)}")
    if args.summary:
        return summary(args.logdir, args.experiment, labels, args.summary)
    if args.check_shuffle:
        return check_shuffle()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)  # before any op runs
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    if args.check_loss:
        return check_loss(keras, tf)
    if args.shuffle_probe:
        print(json.dumps(shuffle_probe(keras, tf, args.shuffle_probe == "seeded")))
        return 0
    i, n = (int(v) for v in args.shard.split("/"))
    units = [(label, seed) for label in labels for seed in parse_seeds(args.seeds)][i - 1::n]
    if args.reverse:
        units.reverse()
    data = load_data(args.data_dir)
    for label, seed in units:
        out = run_dir(args.logdir, args.experiment, label, seed)
        if is_done(out):
            print(f"{label}/seed{seed}: done already ({out})", flush=True)
            continue
        if not claim(out):
            print(f"{label}/seed{seed}: another process is running it", flush=True)
            continue
        try:
            rec = train_one(keras, tf, data, label, seed, args.epochs, out, args.output_init,
                            args.steps_per_execution)
        finally:
            (out / ".running").unlink(missing_ok=True)
        print(f"{label}/seed{seed}: test acc {100 * rec['test']['acc']:.2f}%  -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
