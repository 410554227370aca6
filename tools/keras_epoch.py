"""Time Keras 3 training epochs of the blog MLP: the Keras side of ``python -m torchopt_review.bench epoch``.

A dev-time tool run under its own virtual environment (TensorFlow and torch do not share one)::

    python3 -m venv .venv-keras
    .venv-keras/bin/pip install tensorflow-cpu keras numpy
    .venv-keras/bin/python tools/keras_epoch.py --threads 1 --data data.npz

``data.npz`` holds ``train_x`` (N, 784) uint8, ``train_y``, ``val_x``, ``val_y`` (written by the
bench, so both sides train on exactly the same images). The process is a worker: it prints one
JSON line describing itself, then answers each JSON request line on stdin,
``{"batch_size": 32, "steps": 1688}``, by training one epoch and printing
``{"epoch_s": ..., "train_s": ..., "fit_s": ...}``:

- ``epoch_s``: a callback's ``on_epoch_begin`` -> ``on_epoch_end`` (training + validation), what
  Keras's own per-epoch time covers;
- ``train_s``: ``on_epoch_begin`` -> the last training batch's end;
- ``fit_s``: the whole ``fit(epochs=1)`` call (also the data adapter's set-up, paid once per fit).

Each batch size has its own model, so a request continues that model's training, as a user's
multi-epoch fit would. The model is the blog's: 784-300-100-50-50-50-10, ReLU, ``he_normal``,
softmax output, sparse categorical cross-entropy, ``Adam(1e-3)`` (Keras defaults), accuracy
metric, validation on the validation split with the default validation batch size (the
training batch size), ``jit_compile`` left at Keras's default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, required=True, help="TensorFlow intra- and inter-op threads")
    ap.add_argument("--data", required=True, help="npz with train_x, train_y, val_x, val_y")
    args = ap.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import numpy as np
    import tensorflow as tf

    # Must come before TensorFlow runs any op.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    keras.utils.set_random_seed(0)
    data = np.load(args.data)
    x = data["train_x"].astype("float32") / 255.0
    y = data["train_y"].astype("int64")
    xv = data["val_x"].astype("float32") / 255.0
    yv = data["val_y"].astype("int64")

    def build() -> keras.Model:
        model = keras.Sequential([keras.Input(shape=(784,))]
                                 + [keras.layers.Dense(n, activation="relu", kernel_initializer="he_normal")
                                    for n in (300, 100, 50, 50, 50)]
                                 + [keras.layers.Dense(10, activation="softmax")])
        model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                      metrics=["accuracy"])
        return model

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = self.t_train = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.t_train = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.t1 = time.perf_counter()

    models: dict[int, keras.Model] = {}
    print(json.dumps({"keras": keras.__version__, "tensorflow": tf.__version__, "backend": keras.backend.backend(),
                      "jit_compile": "default (auto: off on CPU-only TensorFlow)", "threads": args.threads}),
          flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        bs, steps = int(req["batch_size"]), req.get("steps")
        model = models.get(bs)
        if model is None:
            model = models[bs] = build()
        n = min(len(y), steps * bs) if steps else len(y)
        clock = Clock()
        t0 = time.perf_counter()
        model.fit(x[:n], y[:n], batch_size=bs, epochs=1, validation_data=(xv, yv), shuffle=True, verbose=0,
                  callbacks=[clock])
        fit_s = time.perf_counter() - t0
        print(json.dumps({"epoch_s": clock.t1 - clock.t0, "train_s": clock.t_train - clock.t0, "fit_s": fit_s}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
