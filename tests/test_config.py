"""torchopt_review.config: layering, type coercion, unknown keys, and the YAMLs vs the registry."""

from __future__ import annotations

import pytest

from torchopt_review.config import CONFIG_DIR, load_config, load_yaml
from torchopt_review.errors import ConfigError
from torchopt_review.optim.registry import REGISTRY, optimizer_names


def test_blog_defaults():
    cfg = load_config("nadam")
    assert (cfg.model.name, cfg.optim.lr, cfg.trainer.batch_size, cfg.trainer.epochs, cfg.seed) == ("blog_mlp", 1e-3, 32, 20, 0)
    assert (cfg.data.split, cfg.data.val_size, cfg.optim.semantics) == ("keras", 6000, "keras")
    assert str(cfg.run_dir) == "runs/default/nadam/seed0"


@pytest.mark.parametrize("name", optimizer_names())
def test_every_registry_name_has_a_yaml_matching_the_registry(name):
    """One source of truth: the YAML's values are the registry's blog values."""
    data = load_yaml(CONFIG_DIR / "optim" / f"{name}.yaml")
    spec = REGISTRY[name]
    assert data["optim"]["name"] == name
    merged = {**spec.blog, **spec.fixed}
    assert float(data["optim"]["lr"]) == merged["lr"]
    for key, value in (data["optim"].get("kwargs") or {}).items():
        expected = merged[key]
        assert (list(value) if isinstance(value, list) else value) == (list(expected) if isinstance(expected, tuple) else expected)
    cfg = load_config(name)
    assert cfg.optim.name == name


def test_layers_and_overrides(tmp_path):
    extra = tmp_path / "x.yaml"
    extra.write_text("trainer:\n  epochs: 3\noptim:\n  kwargs:\n    momentum: 0.99\n")
    cfg = load_config("momentum", [extra], {"optim": {"lr": "1e-2"}, "seed": "4"})
    assert cfg.trainer.epochs == 3 and cfg.optim.kwargs == {"momentum": 0.99} and cfg.optim.lr == 0.01 and cfg.seed == 4
    assert cfg.trainer.batch_size == 32  # untouched keys keep base.yaml's value


@pytest.mark.parametrize("overrides,message", [
    ({"trainer": {"epoch": 3}}, "unknown config key 'trainer.epoch'; did you mean 'trainer.epochs'"),
    ({"optimizer": {"lr": 1}}, "unknown config key 'optimizer'"),
    ({"optim": {"lr": "fast"}}, "optim.lr must be of type float"),
    ({"optim": {"lr": "nan"}}, "finite"),
    ({"optim": {"lr": -1}}, "learning rate must be a positive"),
    ({"optim": {"lr": 0}}, "learning rate must be a positive"),
    ({"trainer": {"epochs": 0}}, "trainer.epochs must be >= 1"),
    ({"trainer": {"epochs": 2.5}}, "trainer.epochs must be of type int"),
    ({"seed": -1}, "seed must be between 0 and 4294967295"),
    ({"model": {"name": "blog_mpl"}}, "did you mean 'blog_mlp'"),
    ({"data": {"split": "stratified"}}, "data.split"),
    ({"optim": {"kwargs": {"momentum": -0.5}}}, "bad hyperparameter for momentum"),
    ({"optim": {"kwargs": {"mommentum": 0.9}}}, "SGD has no argument 'mommentum'; did you mean 'momentum'"),
    ({"optim": {"semantics": "jax"}}, "semantics"),
    ({"trainer": {"precision": "16"}}, "precision"),
])
def test_bad_values_raise_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("momentum", [], overrides)


def test_unknown_optimizer_lists_names():
    with pytest.raises(ConfigError, match="valid names: sgd, momentum, nesterov"):
        load_config("adamw")


@pytest.mark.parametrize("text,message", [("- a\n- b\n", "must hold a mapping"), ("a: [1,\n", "not valid YAML")])
def test_bad_yaml_files(tmp_path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config("sgd", [f])


def test_missing_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("sgd", [tmp_path / "missing.yaml"])


def test_yaml_is_data_not_code(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("seed: !!python/object/apply:os.system ['touch %s/pwned']\n" % tmp_path)
    with pytest.raises(ConfigError):
        load_config("sgd", [f])
    assert not (tmp_path / "pwned").exists()
