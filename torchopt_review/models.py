"""The classifiers, chosen by name: ``blog_mlp``, ``geron_mlp``, ``cnn``.

Initialisation follows the Keras originals layer by layer, because it changes the trajectory the
blog reports (a plain-loop check of Nadam over 3 seeds: He-normal softmax layer 89.21 % final
validation accuracy, Keras's glorot_uniform 88.87 %; real Keras 88.46 % over 5 seeds):

- Keras's default kernel initializer, which a ``Dense`` layer gets unless its code passes
  ``kernel_initializer``, is ``glorot_uniform``: U(-l, l) with l = sqrt(6 / (fan_in + fan_out));
- ``he_normal`` is a normal truncated at two standard deviations whose scale is corrected so the
  variance is 2 / fan_in (std = sqrt(2 / fan_in) / 0.87962566); torch's ``kaiming_normal_`` is
  untruncated;
- Keras biases start at zero; torch's ``nn.Linear`` biases do not.

The models output logits; the loss is ``F.cross_entropy`` on them. That is exactly what Keras 3
computes for ``Dense(10, activation="softmax")`` + ``"sparse_categorical_crossentropy"``: its
TensorFlow backend recovers the logits from the softmax (``_keras_logits``) and does *not* clip
the probabilities to [1e-7, 1 - 1e-7] (checked on real Keras 3.15 / TF 2.21:
``tools/keras_review.py --check-loss``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

# std of a unit normal truncated to [-2, 2]; Keras divides by it so the truncated variance is right
_TRUNC_STD = 0.87962566103423978


def he_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Keras ``he_normal``: truncated normal (cut at 2 std), variance 2 / fan_in."""
    fan_in = weight[0].numel()
    std = math.sqrt(2.0 / fan_in) / _TRUNC_STD
    return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def glorot_uniform_(weight: torch.Tensor) -> torch.Tensor:
    """Keras ``glorot_uniform`` (Keras's default kernel initializer): U(-l, l), l = sqrt(6 / (fan_in + fan_out))."""
    return nn.init.xavier_uniform_(weight)


def _mlp(sizes: list[int], inits: list[Callable[[torch.Tensor], torch.Tensor]]) -> nn.Sequential:
    """Flatten, then ``Linear(sizes[i], sizes[i + 1])`` with weight initializer ``inits[i]`` and zero
    bias, ReLU after every layer but the last."""
    if len(inits) != len(sizes) - 1:
        raise ValueError(f"{len(sizes) - 1} layers need as many initializers, got {len(inits)}")
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(fan_in, fan_out)
        inits[i](linear.weight)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def blog_mlp() -> nn.Sequential:
    """The blog's net: 784-300-100-50-50-50-10, ReLU, zero biases (276,260 params), initialised as
    its notebook's model (``Tuning_Optimizer.ipynb``, ``tune_opt_model``):

    ========================  ==================  ==================================================
    layer                     initializer         why
    ========================  ==================  ==================================================
    300, 100, 50, 50, 50      ``he_normal``       the hidden-layer loop passes
                              (truncated)         ``kernel_initializer="he_normal"``
    10 (softmax)              ``glorot_uniform``  ``Dense(10, activation="softmax")`` passes none:
                                                  Keras's default
    ========================  ==================  ==================================================

    Outputs logits; the loss applies the softmax (see the module docstring)."""
    return _mlp([784, 300, 100, 50, 50, 50, 10], [he_normal_] * 5 + [glorot_uniform_])


def geron_mlp() -> nn.Sequential:
    """Géron's textbook MLP (*Hands-On Machine Learning*, ch. 10, ``10_neural_nets_with_keras.ipynb``):
    784-300-100-10, ReLU, zero biases (266,610 params). Its three layers are
    ``Dense(300, activation="relu")``, ``Dense(100, activation="relu")`` and
    ``Dense(10, activation="softmax")`` with no ``kernel_initializer``, so every layer gets Keras's
    default ``glorot_uniform`` (He initialisation only arrives in his chapter 11)."""
    return _mlp([784, 300, 100, 10], [glorot_uniform_] * 3)


class _Unflatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], 1, 28, 28)


def cnn() -> nn.Sequential:
    """A small 2-conv CNN (~91.5-93 % test on Fashion-MNIST when trained well)."""
    net = nn.Sequential(
        _Unflatten(),
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            he_normal_(m.weight)
            nn.init.zeros_(m.bias)
    return net


MODELS: dict[str, Callable[[], nn.Module]] = {"blog_mlp": blog_mlp, "geron_mlp": geron_mlp, "cnn": cnn}


def build_model(name: str) -> nn.Module:
    try:
        return MODELS[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}") from None
