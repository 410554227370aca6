"""A review's runs: the chosen labels x learning rates x seeds as validated run configurations,
the shard of them one process runs, and the plan recorded in ``runs/<experiment>/review.json``."""

from __future__ import annotations

import difflib
from typing import Any, Mapping

from ..config import RunConfig, load_config, merge
from ..errors import ConfigError
from .plan import ReviewConfig, folder_name


def selected(cfg: ReviewConfig) -> list[tuple[str, dict[str, Any]]]:
    """The chosen (label, entry) pairs, in order, without duplicates."""
    from ..optim.registry import optimizer_names

    names = optimizer_names()
    chosen: dict[str, dict[str, Any]] = {}

    def add(label: str, entry: dict[str, Any]) -> None:
        chosen.setdefault(label, entry)

    tokens = cfg.opts if cfg.opts is not None else ["all"]
    if not tokens:
        raise ConfigError("--opts is empty: name optimizers, run labels or 'all'")
    for tok in tokens:
        if tok == "all":
            for label, entry in cfg.runs.items():
                add(label, entry)
        elif tok == "variants":
            for label, entry in cfg.variants.items():
                add(label, entry)
        elif tok in cfg.runs:
            add(tok, cfg.runs[tok])
        elif tok in cfg.variants:
            add(tok, cfg.variants[tok])
        elif tok in names:  # a registry name the review file does not list: its registry/blog settings
            add(tok, {})
        else:
            valid = ["all"] + list(dict.fromkeys([*cfg.runs, *names]))
            close = difflib.get_close_matches(tok, valid + list(cfg.variants), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            variants = f"; variants: {', '.join(cfg.variants)}" if cfg.variants else ""
            raise ConfigError(f"unknown optimizer or run label {tok!r}{hint}; valid: {', '.join(valid)}{variants}")
    if cfg.include_variants:
        for label, entry in cfg.variants.items():
            add(label, entry)
    return list(chosen.items())


def lr_label(label: str, lr: float) -> str:
    return f"{label}-lr{lr:g}"


def expand(cfg: ReviewConfig | Mapping[str, Any]) -> list[RunConfig]:
    """Every run of the review as a validated :class:`RunConfig`, seed-major (all optimizers of
    seed 0, then seed 1, ...: an interrupted review leaves complete paired sets behind).

    Each is built by :func:`torchopt_review.config.load_config` from ``base.yaml`` +
    ``optim/<name>.yaml`` + ``overrides`` + the run's entry + ``cli_overrides`` (+ the grid's lr),
    i.e. the run ``python -m torchopt_review.train`` makes with those settings.
    """
    if not isinstance(cfg, ReviewConfig):
        cfg = ReviewConfig.from_mapping(cfg)
    from ..optim.registry import optimizer_names

    names = optimizer_names()
    where = f"{cfg.source}: " if cfg.source else ""
    plan: list[tuple[str, str, dict[str, Any], float | None]] = []  # (label, registry name, settings, lr)
    for label, entry in selected(cfg):
        opt = (entry.get("optim") or {}).get("name") if isinstance(entry.get("optim"), Mapping) else None
        opt = opt or label
        if opt not in names:
            close = difflib.get_close_matches(str(opt), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where}run {label!r}: {opt!r} is not a registry optimizer{hint}; set optim.name to one of: {', '.join(names)}"
            )
        settings = merge(merge(cfg.overrides, entry), cfg.cli_overrides)
        for lr in cfg.lrs or [None]:
            run_label = label if lr is None else folder_name(lr_label(label, lr), f"{where}run label")
            plan.append((run_label, opt, settings, lr))

    runs: list[RunConfig] = []
    seen: set[tuple[str, int]] = set()
    for seed in cfg.seeds:
        for label, opt, settings, lr in plan:
            if (label, seed) in seen:
                raise ConfigError(f"{where}two runs are both labelled {label!r}; rename one")
            seen.add((label, seed))
            ov = merge(settings, {"optim": {"lr": lr}}) if lr is not None else settings
            # The label stays unset when it is the optimizer's name: then the run is byte-for-byte
            # the one `train --opt <name>` makes (same folder, same checkpoint fingerprint).
            ov = merge(ov, {"experiment": cfg.experiment, "seed": seed, "logdir": cfg.logdir,
                            "label": None if label == opt else label})
            try:
                runs.append(load_config(opt, [], ov, config_dir=cfg.config_dir))
            except ConfigError as exc:
                raise ConfigError(f"{where}run {label!r}: {exc}") from None
    return runs


def shard_runs(runs: list[Any], shard: tuple[int, int] | None) -> list[Any]:
    """The runs of shard ``(i, n)`` (1-based): positions ``i-1, i-1+n, ...`` of the run list."""
    if shard is None:
        return list(runs)
    i, n = shard
    return list(runs[i - 1::n])


def review_record(cfg: ReviewConfig, runs: list[RunConfig]) -> dict[str, Any]:
    """What ``runs/<exp>/review.json`` holds: the resolved plan, for the report and for people."""
    base: dict[str, str] = {}
    for label, _ in selected(cfg):
        for lr in cfg.lrs or [None]:
            base[label if lr is None else lr_label(label, lr)] = label
    labels: dict[str, Any] = {}
    for r in runs:
        b = base.get(r.run_label, r.run_label)
        labels.setdefault(r.run_label, {
            "optimizer": r.optim.name, "lr": r.optim.lr, "kwargs": r.optim.kwargs, "semantics": r.optim.semantics,
            "base": b, "variant": b in cfg.variants,
        })
    return {
        "experiment": cfg.experiment, "description": cfg.description, "source": cfg.source,
        "seeds": cfg.seeds, "lrs": cfg.lrs, "runs": labels,
        "overrides": merge(cfg.overrides, cfg.cli_overrides),
        "settings": runs[0].to_dict() if runs else None,
    }
