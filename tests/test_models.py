"""torchopt_review.models: sizes and Keras-style initialisation."""

import math

import pytest
import torch
from scipy import stats

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


def _linears(m):
    return [l for l in m if isinstance(l, torch.nn.Linear)]


# Independent references: Keras 3's VarianceScaling formulas written out here, and scipy's
# distributions (not torch's initializers) for the shapes.
def _keras_he_normal_std(fan_in):
    """he_normal = VarianceScaling(2, "fan_in", "truncated_normal"): the *pre-truncation* std
    sqrt(2 / fan_in) / .87962566103423978, cut at +-2 of it, so the variance is 2 / fan_in."""
    return math.sqrt(2.0 / fan_in) / 0.87962566103423978


def _keras_glorot_limit(fan_in, fan_out):
    """glorot_uniform = VarianceScaling(1, "fan_avg", "uniform"): limit sqrt(3 / ((in + out) / 2))."""
    return math.sqrt(3.0 / ((fan_in + fan_out) / 2.0))


def _is_he_normal(w, fan_in):
    sigma = _keras_he_normal_std(fan_in)
    x = w.detach().double().flatten().numpy()
    ks = stats.kstest(x / sigma, stats.truncnorm(-2.0, 2.0).cdf)
    return abs(x).max() <= 2 * sigma * (1 + 1e-6) and ks.pvalue > 1e-3, ks.pvalue


def _is_glorot_uniform(w, fan_in, fan_out):
    limit = _keras_glorot_limit(fan_in, fan_out)
    x = w.detach().double().flatten().numpy()
    ks = stats.kstest(x, stats.uniform(-limit, 2 * limit).cdf)
    return abs(x).max() <= limit * (1 + 1e-6) and ks.pvalue > 1e-3, ks.pvalue


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blog_mlp_initialised_as_the_notebook(seed):
    """Hidden layers he_normal (the notebook's loop passes it), the softmax layer Keras's default
    glorot_uniform (its Dense(10, activation="softmax") passes none), every bias zero."""
    torch.manual_seed(seed)
    layers = _linears(build_model("blog_mlp"))
    for l in layers[:-1]:
        ok, p = _is_he_normal(l.weight, l.in_features)
        assert ok, f"{l}: not Keras he_normal (KS p {p:.2g})"
        # variance 2 / fan_in after the truncation (the point of Keras's 0.8796 correction)
        target = math.sqrt(2 / l.in_features)
        assert abs(l.weight.std().item() - target) / target < 0.05
    out = layers[-1]
    assert (out.in_features, out.out_features) == (50, 10)
    ok, p = _is_glorot_uniform(out.weight, 50, 10)
    assert ok, f"output layer: not glorot_uniform (KS p {p:.2g})"
    assert all(torch.count_nonzero(l.bias) == 0 for l in layers)


def test_blog_mlp_output_layer_is_not_he_normal():
    """The old initialisation (He-normal on the softmax layer too) fails the check above: its
    weights reach 2 * 0.2274, beyond glorot's limit sqrt(6 / 60) = 0.316."""
    torch.manual_seed(0)
    w = torch.empty(10, 50)
    from torchopt_review.models import he_normal_

    he_normal_(w)
    assert not _is_glorot_uniform(w, 50, 10)[0]
    assert _is_he_normal(w, 50)[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_geron_mlp_is_glorot_uniform_everywhere(seed):
    """Géron's ch. 10 Dense layers pass no kernel_initializer: Keras's default on all three."""
    torch.manual_seed(seed)
    layers = _linears(build_model("geron_mlp"))
    assert [(l.in_features, l.out_features) for l in layers] == [(784, 300), (300, 100), (100, 10)]
    for l in layers:
        ok, p = _is_glorot_uniform(l.weight, l.in_features, l.out_features)
        assert ok, f"{l}: not glorot_uniform (KS p {p:.2g})"
        # the uniform's variance limit^2 / 3 = 2 / (fan_in + fan_out)
        assert l.weight.var().item() == pytest.approx(2 / (l.in_features + l.out_features), rel=0.12)
        assert torch.count_nonzero(l.bias) == 0


def test_initialisers_follow_the_seed():
    torch.manual_seed(3)
    a = [p.clone() for p in build_model("blog_mlp").parameters()]
    torch.manual_seed(3)
    b = list(build_model("blog_mlp").parameters())
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_shapes(name):
    out = build_model(name)(torch.rand(4, 784))
    assert out.shape == (4, 10)


def test_unknown_model():
    with pytest.raises(ValueError, match="blog_mlp"):
        build_model("resnet")
