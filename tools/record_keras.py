"""Record real Keras 3 optimizer trajectories into ``tests/fixtures/keras_trajectories.json``.

A dev-time tool, never a runtime dependency: it runs in its own virtual environment, because
TensorFlow and torch do not need to share one::

    python3 -m venv .venv-keras
    .venv-keras/bin/pip install tensorflow-cpu keras numpy
    .venv-keras/bin/python tools/record_keras.py

What it records, and why it is built this way:

* No model math: three small variables get a fixed, pre-generated gradient sequence through
  ``optimizer.apply_gradients``, so the trajectory depends only on the optimizer's update rule.
* Gradient magnitudes are mixed on purpose (per-element scales 1 ... 1e-6, noisy, mostly one
  sign): where sqrt(v) is near eps, the place where eps enters (inside or outside the sqrt,
  bias-corrected or not) changes the trajectory, and a test that only used O(1) gradients
  would not see it.
* Learning rates, betas, rho and eps are non-default where that makes the test stronger
  (a bug that swaps beta1 and beta2 is invisible when both are their defaults), and a few cases
  drop the learning rate mid-run: Keras's SGD velocity and RMSprop momentum buffer carry
  lr inside, so those trajectories differ from torch's form only after an lr change.
* The ``registry_*`` cases are Keras 3 defaults at the blog's lr = 1e-3 (RMSprop rho 0.99, as
  the blog's code), the hyperparameters ``create_optimizer(name, params)`` uses.
* Each case is run twice: with float32 variables (what Keras users run) and with float64
  variables and ``floatx = "float64"`` (so the learning-rate variable is float64 too). The
  float64 run is the tight reference for exact semantics; |float32 - float64| is the intrinsic
  float32 noise of the trajectory, stored per case as ``fp32_noise`` and used by the test to
  justify its float32 tolerance. Keras casts some hyperparameters through float32 even in a
  float64 run (see ``_CAST_THROUGH_FLOAT32``); a case whose constants are all exact in float32
  is marked ``fp64_exact`` and its float64 trajectory is then an exact-arithmetic reference.

The gradients and initial values are stored in the fixture (float32, base64, little-endian), so
the test needs neither this script nor TensorFlow.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow start-up chatter
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # never pick up a GPU: bit-stable CPU kernels

import numpy as np  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "keras_trajectories.json"

STEPS = 120  # >= 100, with the final step stored too
SNAPSHOTS_FP32 = [1, 2, 3, 10, 50, 100, STEPS]
SNAPSHOTS_FP64 = [1, 10, STEPS]
SHAPES = [(2, 2), (3,), (1,)]  # 8 elements in three variables of different rank
SEED = 20240531

# (case name, keras class name, keras kwargs, lr changes {after step: new lr})
CASES: list[tuple[str, str, dict, dict]] = [
    ("sgd", "SGD", dict(learning_rate=0.05), {}),
    ("sgd_momentum", "SGD", dict(learning_rate=0.02, momentum=0.875), {}),
    ("sgd_nesterov", "SGD", dict(learning_rate=0.02, momentum=0.875, nesterov=True), {}),
    ("sgd_weight_decay", "SGD", dict(learning_rate=0.05, weight_decay=0.125), {}),
    ("sgd_momentum_weight_decay", "SGD", dict(learning_rate=0.02, momentum=0.75, weight_decay=0.0625), {}),
    ("sgd_momentum_lr_drop", "SGD", dict(learning_rate=0.02, momentum=0.875), {60: 0.002}),
    ("sgd_nesterov_lr_drop", "SGD", dict(learning_rate=0.02, momentum=0.875, nesterov=True), {60: 0.002}),
    ("adagrad", "Adagrad", dict(learning_rate=0.05, initial_accumulator_value=0.125, epsilon=1e-7), {}),
    # accumulator starts tiny (2^-27), so eps (inside the sqrt in Keras) sets the first steps
    ("adagrad_small_init", "Adagrad", dict(learning_rate=0.05, initial_accumulator_value=2.0**-27, epsilon=1e-6), {}),
    ("adagrad_weight_decay", "Adagrad", dict(learning_rate=0.05, initial_accumulator_value=0.125, epsilon=1e-7, weight_decay=0.125), {}),
    ("rmsprop", "RMSprop", dict(learning_rate=0.01, rho=0.8, epsilon=1e-6), {}),
    ("rmsprop_momentum", "RMSprop", dict(learning_rate=0.005, rho=0.9, momentum=0.5, epsilon=1e-7), {}),
    ("rmsprop_centered", "RMSprop", dict(learning_rate=0.005, rho=0.9, centered=True, epsilon=1e-7), {}),
    ("rmsprop_centered_momentum", "RMSprop", dict(learning_rate=0.005, rho=0.95, momentum=0.6, centered=True, epsilon=1e-6), {}),
    ("rmsprop_weight_decay", "RMSprop", dict(learning_rate=0.01, rho=0.8, epsilon=1e-6, weight_decay=0.125), {}),
    ("rmsprop_momentum_lr_drop", "RMSprop", dict(learning_rate=0.005, rho=0.9, momentum=0.5, epsilon=1e-7), {60: 0.0005}),
    ("adam", "Adam", dict(learning_rate=0.02, beta_1=0.75, beta_2=0.984375, epsilon=1e-6), {}),
    ("adam_amsgrad", "Adam", dict(learning_rate=0.02, beta_1=0.75, beta_2=0.984375, epsilon=1e-6, amsgrad=True), {}),
    ("adam_weight_decay", "Adam", dict(learning_rate=0.02, beta_1=0.75, beta_2=0.984375, epsilon=1e-6, weight_decay=0.125), {}),
    ("adam_lr_drop", "Adam", dict(learning_rate=0.02, beta_1=0.75, beta_2=0.984375, epsilon=1e-6), {60: 0.002}),
    ("nadam", "Nadam", dict(learning_rate=0.01, beta_1=0.875, beta_2=0.984375, epsilon=1e-6), {}),
    ("nadam_weight_decay", "Nadam", dict(learning_rate=0.01, beta_1=0.875, beta_2=0.984375, epsilon=1e-6, weight_decay=0.125), {}),
    ("adamax", "Adamax", dict(learning_rate=0.02, beta_1=0.75, beta_2=0.984375, epsilon=1e-6), {}),
    ("adamax_weight_decay", "Adamax", dict(learning_rate=0.02, beta_1=0.75, beta_2=0.984375, epsilon=1e-6, weight_decay=0.125), {}),
    # Keras 3 defaults at the blog's lr (what create_optimizer(name, params) must reproduce)
    ("registry_sgd", "SGD", dict(learning_rate=1e-3), {}),
    ("registry_momentum", "SGD", dict(learning_rate=1e-3, momentum=0.9), {}),
    ("registry_nesterov", "SGD", dict(learning_rate=1e-3, momentum=0.9, nesterov=True), {}),
    ("registry_adagrad", "Adagrad", dict(learning_rate=1e-3), {}),
    ("registry_rmsprop", "RMSprop", dict(learning_rate=1e-3, rho=0.99), {}),
    ("registry_adam", "Adam", dict(learning_rate=1e-3), {}),
    ("registry_nadam", "Nadam", dict(learning_rate=1e-3), {}),
    ("registry_adamax", "Adamax", dict(learning_rate=1e-3), {}),
]


# Hyperparameters that Keras 3's update rules pass through ``ops.cast(python_float, dtype)``;
# with the TensorFlow backend that converts to float32 *first*, so even a float64 run uses
# e.g. momentum 0.9f = 0.89999997615814. (Python floats that enter a binary op with a float64
# tensor, like eps or rho, stay exact; the lr is a float64 variable under floatx float64.)
# The non-registry cases therefore use hyperparameters exact in float32 (0.875, 0.984375...), so
# that their float64 trajectories are exact float64 references: ``fp64_exact``.
_CAST_THROUGH_FLOAT32 = {
    "SGD": {"momentum": 0.0},
    "Adagrad": {"initial_accumulator_value": 0.1},
    "RMSprop": {},
    "Adam": {"beta_1": 0.9, "beta_2": 0.999},
    "Adamax": {"beta_1": 0.9},
    "Nadam": {"beta_1": 0.9, "beta_2": 0.999, "<decay 0.96, hard-coded>": 0.96},
}


def fp64_rounded(cls_name: str, kwargs: dict) -> list[str]:
    """The constants Keras rounds to float32 in this case's float64 run (none: ``fp64_exact``)."""
    consts = {**_CAST_THROUGH_FLOAT32[cls_name], "weight_decay": 0.0}
    values = {k: kwargs.get(k, default) for k, default in consts.items()}
    return [k for k, v in values.items() if v is not None and float(np.float32(v)) != float(v)]


def make_problem() -> tuple[list[np.ndarray], np.ndarray]:
    """Initial values (float32, one array per variable) and gradients (float32, steps x n)."""
    rng = np.random.default_rng(SEED)
    n = sum(int(np.prod(s)) for s in SHAPES)
    init_flat = rng.uniform(-1.0, 1.0, size=n).astype(np.float32)
    # per-element magnitude 1 ... 1e-6, so every decade is covered
    scales = np.logspace(0.0, -6.0, n)
    rng.shuffle(scales)
    # noisy with a persistent sign (mean 0.5, sign flips ~ 1/4 of the time)
    noise = rng.uniform(-1.0, 1.0, size=(STEPS, n)) + 0.5
    grads = (noise * scales).astype(np.float32)
    inits, offset = [], 0
    for s in SHAPES:
        k = int(np.prod(s))
        inits.append(init_flat[offset:offset + k].reshape(s))
        offset += k
    return inits, grads


def run_case(cls_name: str, kwargs: dict, lr_changes: dict, dtype: str,
             inits: list[np.ndarray], grads: np.ndarray) -> dict[int, np.ndarray]:
    """Keras trajectory; {step: flat parameter vector after that step}."""
    keras.config.set_floatx(dtype)  # the learning-rate variable and Nadam's u-product take it
    variables = [keras.Variable(x.astype(dtype), dtype=dtype) for x in inits]
    opt = getattr(keras.optimizers, cls_name)(**kwargs)
    snapshots = SNAPSHOTS_FP32 if dtype == "float32" else SNAPSHOTS_FP64
    out: dict[int, np.ndarray] = {}
    for t in range(1, STEPS + 1):
        g_flat = grads[t - 1].astype(dtype)  # float32 gradients, widened exactly for float64
        g, offset = [], 0
        for v in variables:
            k = int(np.prod(v.shape))
            g.append(tf.constant(g_flat[offset:offset + k].reshape(v.shape)))
            offset += k
        opt.apply_gradients(zip(g, variables))
        if t in snapshots:
            out[t] = np.concatenate([np.asarray(v.numpy()).ravel() for v in variables])
        if t in lr_changes:
            opt.learning_rate = lr_changes[t]  # takes effect from step t + 1
    keras.config.set_floatx("float32")
    return out


def f32_list(x: np.ndarray) -> list[float]:
    # shortest repr that round-trips to the same float32
    return [float(str(np.float32(v))) for v in x]


def f64_list(x: np.ndarray) -> list[float]:
    return [float(v) for v in x]


def main() -> int:
    inits, grads = make_problem()
    init_flat = np.concatenate([x.ravel() for x in inits])
    cases = []
    for name, cls_name, kwargs, lr_changes in CASES:
        fp32 = run_case(cls_name, kwargs, lr_changes, "float32", inits, grads)
        fp64 = run_case(cls_name, kwargs, lr_changes, "float64", inits, grads)
        # intrinsic float32 noise of this trajectory: how far Keras's own float32 run is from
        # its float64 run, at the steps both store
        noise = max(float(np.max(np.abs(fp32[t].astype(np.float64) - fp64[t]))) for t in fp64)
        displacement = float(np.max(np.abs(fp64[STEPS] - init_flat.astype(np.float64))))
        cases.append({
            "name": name,
            "keras_class": cls_name,
            "keras_kwargs": kwargs,
            "lr_changes": {str(k): v for k, v in lr_changes.items()},
            "fp64_exact": not fp64_rounded(cls_name, kwargs),
            "fp64_rounded_to_float32": fp64_rounded(cls_name, kwargs),
            "fp32_noise": noise,
            "max_displacement": displacement,
            "float32": {str(t): f32_list(v) for t, v in fp32.items()},
            "float64": {str(t): f64_list(v) for t, v in fp64.items()},
        })
        print(f"{name:28s} displacement {displacement:.3g}  fp32-vs-fp64 {noise:.2e}"
              f"  fp64 rounded {fp64_rounded(cls_name, kwargs)}")

    fixture = {
        "description": (
            "Real Keras 3 optimizer trajectories: parameters after selected steps for fixed "
            "gradients fed through optimizer.apply_gradients. Parameters are flat (variables "
            "concatenated in order, C order). lr_changes: after step k the learning rate is set "
            "to the value (from step k + 1 on)."
        ),
        "script": "tools/record_keras.py",
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "numpy_version": np.__version__,
        "keras_backend": keras.backend.backend(),
        "steps": STEPS,
        "shapes": [list(s) for s in SHAPES],
        "init": f32_list(init_flat),
        "grads_float32_b64": base64.b64encode(grads.astype("<f4").tobytes()).decode("ascii"),
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture, indent=1)
    # one line per number list, so the fixture stays small and diffs stay readable
    text = re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]",
                  lambda m: "[" + ",".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    OUT.write_text(text + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.1f} KiB, {len(cases)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
