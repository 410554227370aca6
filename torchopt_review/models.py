"""The classifiers, chosen by name: ``blog_mlp``, ``geron_mlp``, ``cnn``.

Initialisation follows the Keras originals, because it changes the early trajectory the blog
reports: Keras's ``he_normal`` is a normal truncated at two standard deviations whose scale is
corrected so the variance is 2 / fan_in (std = sqrt(2 / fan_in) / 0.87962566), and Keras biases
start at zero. torch's defaults differ on both counts.
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
    """Keras ``glorot_uniform`` (Keras's default kernel initializer)."""
    return nn.init.xavier_uniform_(weight)


def _mlp(sizes: list[int], init: Callable[[torch.Tensor], torch.Tensor]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(fan_in, fan_out)
        init(linear.weight)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def blog_mlp() -> nn.Sequential:
    """The blog's net: 784-300-100-50-50-50-10, ReLU, He-normal weights, zero biases (276,260 params).
    Outputs logits; the loss applies the softmax (the numerically better form of Keras's)."""
    return _mlp([784, 300, 100, 50, 50, 50, 10], he_normal_)


def geron_mlp() -> nn.Sequential:
    """Géron's textbook MLP: 784-300-100-10, ReLU, Keras's default Glorot-uniform weights, zero biases."""
    return _mlp([784, 300, 100, 10], glorot_uniform_)


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
