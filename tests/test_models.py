"""torchopt_review.models: sizes and Keras-style initialisation."""

import math

import pytest
import torch

from torchopt_review.models import MODELS, build_model


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_blog_mlp_matches_the_blog():
    m = build_model("blog_mlp")
    # 784*300+300 + 300*100+100 + 100*50+50 + 2*(50*50+50) + 50*10+10, as counted by Keras's summary
    assert n_params(m) == 276_260
    widths = [l.out_features for l in m if isinstance(l, torch.nn.Linear)]
    assert widths == [300, 100, 50, 50, 50, 10]
    assert sum(isinstance(l, torch.nn.ReLU) for l in m) == 5


def test_geron_mlp():
    assert n_params(build_model("geron_mlp")) == 266_610


def test_he_normal_is_truncated_with_keras_variance():
    torch.manual_seed(0)
    m = build_model("blog_mlp")
    w = m[1].weight  # 300 x 784
    target = math.sqrt(2 / 784)
    assert abs(w.std().item() - target) / target < 0.02  # variance corrected for the truncation
    assert w.abs().max().item() <= 2 * target / 0.87962566 + 1e-6  # cut at two standard deviations
    assert all(l.bias.abs().sum() == 0 for l in m if isinstance(l, torch.nn.Linear))


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_shapes(name):
    out = build_model(name)(torch.rand(4, 784))
    assert out.shape == (4, 10)


def test_unknown_model():
    with pytest.raises(ValueError, match="blog_mlp"):
        build_model("resnet")
