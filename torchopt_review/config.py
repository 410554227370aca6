"""Run configuration: dataclasses, YAML loading (``yaml.safe_load``) and CLI overrides.

A run's config is built in layers, later ones winning::

    configs/base.yaml  ->  configs/optim/<name>.yaml  ->  --config FILE ...  ->  CLI flags

Every key is checked: an unknown or misspelt key is an error naming the nearest valid one,
never silently ignored; values are coerced to the field's type (YAML reads ``1e-3`` as a
string) and range-checked.
"""

from __future__ import annotations

import copy
import json
import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError

# The configs ship inside the package (torchopt_review/configs is the repository's top-level
# configs/, linked; a wheel holds the files themselves), so a non-editable install finds them.
CONFIG_DIR = Path(str(resources.files("torchopt_review") / "configs"))

__all__ = [
    "CONFIG_DIR", "DataConfig", "ModelConfig", "OptimConfig", "TrainerConfig", "RunConfig",
    "load_yaml", "merge", "build_config", "load_config", "yaml_problem",
]


@dataclass
class DataConfig:
    data_dir: str | None = None  # None: search (TORCHOPT_DATA_DIR, the Debian package, ./data/FashionMNIST/raw)
    split: str = "keras"  # keras: the last val_size training images validate (Keras validation_split); random: seeded
    val_size: int = 6000  # blog: validation_split=0.1 of 60,000
    shuffle: str = "every_epoch"  # every_epoch: a new order each epoch; once: epoch 1's order every epoch (Keras 3 + TF with a global seed)


@dataclass
class ModelConfig:
    name: str = "blog_mlp"  # blog_mlp | geron_mlp | cnn


@dataclass
class OptimConfig:
    name: str = "nadam"  # a registry name (torchopt_review.optim.optimizer_names())
    semantics: str = "keras"  # keras: Keras 3 update rules (the blog's); torch: torch.optim's
    lr: float = 1e-3  # blog: 1e-3 for every optimizer
    kwargs: dict[str, Any] = field(default_factory=dict)  # other hyperparameters, by the class's argument names


@dataclass
class TrainerConfig:
    epochs: int = 20  # blog table: 20
    batch_size: int = 32  # blog: Keras default 32 (1,688 steps per epoch, the last one of 16)
    accelerator: str = "cpu"  # cpu | gpu | auto
    precision: str = "32"  # 32 (fp32, TF32 off) | tf32 | bf16-mixed
    threads: int | None = None  # torch threads; None: torch's default
    limit_batches: int | None = None  # smoke runs: optimizer steps per epoch
    log_every_n_steps: int = 50  # step-level train/loss_step in TensorBoard
    steps_per_batch: int = 32  # optimizer steps per Lightning batch (Keras's steps_per_execution)
    val_batch_size: int = 1000  # evaluation only: no effect on training
    diagnostics: bool = True  # effective step size / update ratio / grad norm per layer
    diagnostics_every_n_steps: int = 200
    gradient_clip_val: float | None = None  # clip the global grad norm (Keras global_clipnorm)
    graph_step: str = "auto"  # auto: the step replayed as one CUDA graph on a GPU | on (also CPU, eager) | off


@dataclass
class RunConfig:
    experiment: str = "default"
    label: str | None = None  # run folder name; None: the optimizer name
    seed: int = 0  # fixes init, data order and (random split) the split
    logdir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    @property
    def run_label(self) -> str:
        return self.label or self.optim.name

    @property
    def run_dir(self) -> Path:
        return Path(self.logdir) / self.experiment / self.run_label / f"seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed: everything that changes the numbers."""
        d = self.to_dict()
        trainer = d["trainer"]
        for k in ("epochs", "threads", "log_every_n_steps", "diagnostics", "diagnostics_every_n_steps", "val_batch_size",
                  "graph_step"):
            trainer.pop(k, None)  # more epochs extend a run; these do not change the trajectory
        d.pop("logdir")
        d["data"].pop("data_dir")
        return d


# -- loading ---------------------------------------------------------------------------------

def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (the safe loader's refusal of a
    ``!!python/...`` tag reads "could not determine a constructor for the tag ...")."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def _shown(path: Path) -> str:
    """A shipped config as a user would type it: ``configs/...`` from the repository's root (where
    ``configs/`` is :data:`CONFIG_DIR`), else its full path."""
    rel = path.relative_to(CONFIG_DIR)
    try:
        if (Path.cwd() / "configs").resolve() == CONFIG_DIR.resolve():
            return str(Path("configs") / rel)
    except OSError:
        pass
    return str(path)


def _nearest_config(p: Path, shipped: list[Path] | None) -> str | None:
    """The existing YAML file whose name is nearest to the missing ``p``: in ``p``'s folder (the
    working folder for a bare name) first, else among ``shipped`` (default: every config under
    :data:`CONFIG_DIR`). None when nothing is near."""
    def near(candidates: list[Path]) -> Path | None:
        by_stem = {c.stem: c for c in sorted(candidates)}
        close = difflib.get_close_matches(p.stem if p.suffix in (".yaml", ".yml") else p.name, by_stem, n=1)
        return by_stem[close[0]] if close else None

    try:
        here = [c for c in (p.parent if str(p.parent) else Path(".")).iterdir()
                if c.suffix in (".yaml", ".yml") and c.is_file()]
    except OSError:
        here = []
    found = near(here)
    if found is not None:
        return str(found)
    found = near(sorted(CONFIG_DIR.rglob("*.yaml")) if shipped is None else shipped)
    return _shown(found) if found is not None else None


def load_yaml(path: str | Path, *, shipped: list[Path] | None = None) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; errors name the file. A missing file's error
    names the nearest existing one (see :func:`_nearest_config`; ``shipped``: which shipped
    configs may be suggested, default all)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {p} is a folder, not a YAML file")
    if not p.is_file():
        suggestion = _nearest_config(p, shipped)
        raise ConfigError(f"config file {p} does not exist" + (f"; did you mean {suggestion}?" if suggestion else ""))
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {yaml_problem(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    check_acyclic(data, f"config file {p}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping (key: value lines), not a {type(data).__name__}")
    return data


def check_acyclic(data: Any, where: str) -> None:
    """YAML lets a value contain itself (``a: &x [*x]``); such a value has no end: refuse it."""
    try:
        json.dumps(data, default=str)
    except (RecursionError, ValueError):
        raise ConfigError(f"{where} holds a value that refers to itself (a YAML alias inside its own anchor)") from None


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins. ``optim.kwargs`` merges key by key too."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _convert(value: Any, t: str) -> Any:
    """``value`` as the type named by ``t`` (a dataclass field's annotation); ValueError if it is not one."""
    if t.startswith("bool"):
        if isinstance(value, bool):
            return value
        if str(value).lower() in _TRUE + _FALSE:
            return str(value).lower() in _TRUE
    elif t.startswith("int"):
        if not isinstance(value, bool) and not (isinstance(value, float) and not value.is_integer()):
            return int(value)
    elif t.startswith("float"):
        if not isinstance(value, bool):
            return float(value)
    elif t.startswith("str"):
        if not isinstance(value, (dict, list)):
            return str(value)
    elif t.startswith("dict"):
        if isinstance(value, Mapping):
            return dict(value)
    else:
        return value
    raise ValueError


def _coerce(value: Any, typ: Any, where: str) -> Any:
    t = str(typ)
    if value is None:
        if "None" in t:
            return None
        raise ConfigError(f"{where} must not be empty")
    try:
        out = _convert(value, t)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be of type {t.split(' ')[0]}, got {value!r}") from None
    if isinstance(out, float) and not math.isfinite(out):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return out


def _kwarg_value(value: Any, where: str) -> Any:
    """An optimizer keyword's value: numbers written as YAML 1.1 strings (``1e-8``, ``nan``) become
    floats (no optimizer argument is a string), lists/tuples element-wise; every float must be finite."""
    if isinstance(value, (list, tuple)):
        return type(value)(_kwarg_value(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value  # the optimizer's own validation names it
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return value


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = (f"; did you mean '{where + '.' if where else ''}{close[0]}'?" if close
                    else f"; valid keys: {', '.join(fields)}")
            raise ConfigError(f"unknown config key '{name}'{hint}")
        f = fields[key]
        if dataclasses.is_dataclass(f.default_factory) if f.default_factory is not dataclasses.MISSING else False:
            kwargs[key] = _build(f.default_factory, value or {}, name)
        else:
            kwargs[key] = _coerce(value, f.type, name)
            if name == "optim.kwargs" and kwargs[key]:
                kwargs[key] = {k: _kwarg_value(v, f"{name}.{k}") for k, v in kwargs[key].items()}
    return cls(**kwargs)


def _validate(cfg: RunConfig) -> None:
    from .optim.registry import REGISTRY, get_spec
    from .models import MODELS

    try:
        get_spec(cfg.optim.name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.optim.semantics not in ("torch", "keras"):
        raise ConfigError(f"optim.semantics must be 'torch' or 'keras', got {cfg.optim.semantics!r}")
    if not cfg.optim.lr > 0:
        raise ConfigError(f"the learning rate must be a positive number, got {cfg.optim.lr!r} (e.g. --lr 1e-3)")
    if cfg.model.name not in MODELS:
        close = difflib.get_close_matches(cfg.model.name, MODELS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown model {cfg.model.name!r}{hint}; valid: {', '.join(MODELS)}")
    if cfg.data.split not in ("keras", "random"):
        raise ConfigError(f"data.split must be 'keras' or 'random', got {cfg.data.split!r}")
    if cfg.data.shuffle not in ("every_epoch", "once"):
        raise ConfigError(f"data.shuffle must be 'every_epoch' or 'once', got {cfg.data.shuffle!r}")
    if not 0 < cfg.data.val_size < 60000:
        raise ConfigError(f"data.val_size must be between 1 and 59,999, got {cfg.data.val_size}")
    t = cfg.trainer
    for name, value, low in (("epochs", t.epochs, 1), ("batch_size", t.batch_size, 1),
                             ("log_every_n_steps", t.log_every_n_steps, 1), ("steps_per_batch", t.steps_per_batch, 1),
                             ("val_batch_size", t.val_batch_size, 1), ("diagnostics_every_n_steps", t.diagnostics_every_n_steps, 1)):
        if value < low:
            raise ConfigError(f"trainer.{name} must be >= {low}, got {value}")
    if t.limit_batches is not None and t.limit_batches < 1:
        raise ConfigError(f"trainer.limit_batches must be >= 1, got {t.limit_batches}")
    if t.threads is not None and t.threads < 1:
        raise ConfigError(f"trainer.threads must be >= 1, got {t.threads}")
    if t.accelerator not in ("cpu", "gpu", "cuda", "auto"):
        raise ConfigError(f"trainer.accelerator must be cpu, gpu or auto, got {t.accelerator!r}")
    if t.precision not in ("32", "tf32", "bf16-mixed"):
        raise ConfigError(f"trainer.precision must be 32, tf32 or bf16-mixed, got {t.precision!r}")
    if t.graph_step in ("True", "False"):  # YAML 1.1 reads a bare on/off as a boolean
        t.graph_step = "on" if t.graph_step == "True" else "off"
    if t.graph_step not in ("auto", "on", "off"):
        raise ConfigError(f"trainer.graph_step must be auto, on or off, got {t.graph_step!r}")
    if t.gradient_clip_val is not None and not t.gradient_clip_val > 0:
        raise ConfigError(f"trainer.gradient_clip_val must be positive, got {t.gradient_clip_val}")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError(f"the seed must be between 0 and {MAX_SEED} (2**32 - 1), got {cfg.seed}")
    for name in ("experiment", "run_label"):
        check_folder_name(getattr(cfg, name), name)
    _check_optimizer(REGISTRY[cfg.optim.name], cfg.optim)


def _kwarg_type_problem(value: Any, default: Any, annotation: str) -> str | None:
    """Whether ``value`` has the type of the optimizer argument whose default is ``default``."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if isinstance(default, bool) or (default is None and "bool" in annotation):
        ok = isinstance(value, bool) or (default is None and value is None)
        return None if ok else "true or false"
    if isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and len(value) == len(default) and all(number(v) for v in value)
        return None if ok else f"a list of {len(default)} numbers, like {list(default)}"
    if number(default) or (default is None and "float" in annotation):
        return None if number(value) or (default is None and value is None) else "a number"
    return None


def _check_optimizer(spec: Any, optim: OptimConfig) -> None:
    """Every ``optim.kwargs`` key is an argument of the class, of the argument's type; then the
    optimizer is built and takes one step on a dummy parameter, so its own validation (torch's
    messages) and anything that would fail at the first step fail now, before anything is written."""
    import inspect

    import torch

    params = inspect.signature(spec.cls.__init__).parameters
    names = [n for n in params if n not in ("self", "params", "semantics", "lr")]
    for key, value in optim.kwargs.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(names)}"
            raise ConfigError(f"optim.kwargs.{key}: {spec.cls.__name__} has no argument {key!r}{hint}")
        want = _kwarg_type_problem(value, params[key].default, str(params[key].annotation))
        if want:
            raise ConfigError(f"optim.kwargs.{key} must be {want}, got {value!r}")
    try:
        p = torch.nn.Parameter(torch.zeros(2))
        opt = spec.cls([p], **spec.kwargs(semantics=optim.semantics, lr=optim.lr, **optim.kwargs))
        p.grad = torch.ones(2)
        opt.step()
    except (TypeError, ValueError, RuntimeError, IndexError, KeyError) as exc:
        raise ConfigError(f"bad hyperparameter for {optim.name} (optim.kwargs {optim.kwargs}): {exc}") from None


MAX_SEED = 2**32 - 1  # seeds fix init and data order through torch generators: 0 .. 2**32 - 1


def check_folder_name(value: Any, name: str) -> None:
    """An experiment or label becomes a folder name: a non-empty string, no '/', not hidden,
    at most 255 bytes of UTF-8 (what file systems allow)."""
    if not isinstance(value, str) or not value or "/" in value or "\0" in value or value.startswith("."):
        raise ConfigError(f"{name} {value!r} must be a plain folder name (no '/', not starting with '.')")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ConfigError(f"{name} {value!r} is not valid UTF-8 text") from None
    if size > 255:
        raise ConfigError(f"{name} is {size} bytes long; a folder name can be at most 255")


def build_config(data: Mapping[str, Any]) -> RunConfig:
    """A validated :class:`RunConfig` from a plain (merged) mapping."""
    cfg = _build(RunConfig, data, "")
    _validate(cfg)
    return cfg


def load_config(
    optimizer: str | None = None,
    config_files: list[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
    *,
    config_dir: Path = CONFIG_DIR,
) -> RunConfig:
    """base.yaml, then optim/<name>.yaml, then ``config_files``, then ``overrides`` (nested dict)."""
    data: dict[str, Any] = load_yaml(config_dir / "base.yaml") if (config_dir / "base.yaml").is_file() else {}
    # a --config file of a run: suggest the run configs shipped (base, optim/<name>), not review ones
    run_configs = [config_dir / "base.yaml", *sorted((config_dir / "optim").glob("*.yaml"))]
    layers = [load_yaml(f, shipped=run_configs) for f in config_files]
    overrides = dict(overrides or {})
    section = lambda d: d.get("optim") if isinstance(d.get("optim"), Mapping) else {}  # noqa: E731
    name = (
        optimizer
        or section(overrides).get("name")
        or next((section(l)["name"] for l in reversed(layers) if "name" in section(l)), None)
        or section(data).get("name")
        or OptimConfig.name
    )
    if not isinstance(name, str):
        raise ConfigError(f"optim.name must be an optimizer's name, got {name!r}")
    from .optim.registry import get_spec

    try:
        get_spec(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    optim_file = config_dir / "optim" / f"{name}.yaml"
    if optim_file.is_file():
        data = merge(data, load_yaml(optim_file))
    for layer in layers:
        data = merge(data, layer)
    data = merge(data, overrides)
    if not isinstance(data.get("optim", {}), Mapping):
        raise ConfigError(f"optim must be a section (key: value pairs), got {data['optim']!r}")
    data = merge(data, {"optim": {"name": name}})
    return build_config(data)
