"""Property: any ``--set KEY=VALUE`` or config file either passes validation and then trains one
step, or is refused as a user error (one ``error:`` line, exit 2) — never a traceback, and never
after something was written (the config is built before any file is)."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchopt_review import train
from torchopt_review.config import load_config
from torchopt_review.errors import UserError
from torchopt_review.models import build_model
from torchopt_review.optim import create_optimizer

KEYS = [
    "seed", "experiment", "label", "model.name", "data.split", "data.val_size",
    "optim", "optim.name", "optim.lr", "optim.semantics", "optim.kwargs",
    "optim.kwargs.betas", "optim.kwargs.eps", "optim.kwargs.momentum", "optim.kwargs.nesterov",
    "optim.kwargs.weight_decay", "optim.kwargs.amsgrad", "optim.kwargs.alpha", "optim.kwargs.centered",
    "optim.kwargs.initial_accumulator_value", "optim.kwargs.momentum_decay", "optim.kwargs.maximize",
    "optim.kwargs.foreach", "optim.kwargs.fused", "optim.kwargs.nonsense",
    "trainer", "trainer.epochs", "trainer.batch_size", "trainer.limit_batches", "trainer.threads",
    "trainer.precision", "trainer.accelerator", "trainer.gradient_clip_val", "trainer.graph_step",
    "trainer.diagnostics", "trainer.steps_per_batch",
]
OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "nadam", "adamax"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.9, 0.999, 1e-7, 1e-3, 0.5, 1.0, 0]),
    st.text(max_size=12), st.sampled_from(["perhaps", "keras", "torch", "blog_mlp", "auto", "on", "1e-3", "nan"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)
raw_texts = st.one_of(values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
                      st.sampled_from(["&x [*x]", "{a: 1", "[0.9,", "!!python/object:os.system ls", "", "~"]),
                      st.text(max_size=20))


def one_step(cfg) -> None:
    """What a run does first with its config: the model, the optimizer, one training step."""
    torch.manual_seed(cfg.seed % 2**32)
    model = build_model(cfg.model.name)
    opt = create_optimizer(cfg.optim.name, model.parameters(), semantics=cfg.optim.semantics, lr=cfg.optim.lr,
                           **cfg.optim.kwargs)
    x = torch.rand(4, 1, 28, 28)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    assert all(torch.isfinite(p).all() or cfg.optim.lr > 1e3 for p in model.parameters())


def parse_sets(items: list[str]) -> dict:
    args = train.build_parser().parse_args([arg for item in items for arg in ("--set", item)])
    return train.overrides_from_args(args)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(opt=st.sampled_from(OPTIMIZERS), sets=st.lists(st.tuples(st.sampled_from(KEYS), raw_texts), max_size=3))
def test_any_set_value_is_valid_and_trains_or_is_a_user_error(opt, sets):
    try:
        cfg = load_config(opt, [], parse_sets([f"{k}={v}" for k, v in sets]))
    except UserError:
        return  # refused in one line; nothing was written (the config is built before any file)
    assert math.isfinite(cfg.optim.lr) and 0 <= cfg.seed <= 2**32 - 1
    one_step(cfg)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(opt=st.sampled_from(OPTIMIZERS), doc=values)
def test_any_config_file_is_valid_and_trains_or_is_a_user_error(opt, doc, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        cfg = load_config(opt, [path], {})
    except UserError:
        return
    one_step(cfg)


@pytest.mark.parametrize("text", ["a: &x [*x]\n", "optim: &o {kwargs: {betas: *o}}\n"])
def test_a_self_referencing_yaml_file_is_refused(text, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="refers to itself"):
        load_config("adam", [path], {})
