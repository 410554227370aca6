"""What a review is: the YAML schema (:class:`ReviewConfig`), its loading and validation, and the
parsing of the CLI's ``--seeds``, ``--opts`` and ``--shard``.

``configs/review/blog.yaml`` documents every YAML key; an unknown key is an error naming the
nearest valid one, and every value is checked here, before anything is expanded or written.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..config import CONFIG_DIR, load_yaml
from ..errors import ConfigError

# Keys of a review YAML file (configs/review/blog.yaml documents them).
YAML_KEYS = ("experiment", "description", "seeds", "lrs", "overrides", "runs", "variants", "slurm")
# RunConfig fields the review itself sets for every run; a run entry or `overrides` may not.
IDENTITY_KEYS = ("experiment", "seed", "label", "logdir")


def _default_runs() -> dict[str, dict[str, Any]]:
    from ..optim.registry import optimizer_names

    return {name: {} for name in optimizer_names()}


@dataclass
class ReviewConfig:
    """What to run. The first eight fields are the YAML keys; the rest come from the CLI.

    Attributes:
        experiment: folder under ``logdir``: ``runs/<experiment>/<label>/seed<k>/``.
        description: free text, copied into ``review.json`` for the report.
        seeds: the seeds every run is repeated with (the same list for every optimizer: a paired design).
        lrs: optional learning-rate grid; each run is repeated per lr with the label ``<label>-lr<lr>``.
        overrides: RunConfig keys applied to every run (below each run's own entry).
        runs: ``label -> RunConfig overrides`` of the default set; ``optim.name`` defaults to the label.
        variants: like ``runs``, opt-in: named in ``opts`` or all of them with ``include_variants``.
        slurm: what each task asks SLURM for with ``--executor slurm``
            (:class:`~torchopt_review.review.slurm.SlurmOptions`' keys; the ``--slurm-*`` options win).
        opts: which labels (or registry names) to run; ``None``: ``runs``. ``"all"`` means ``runs``.
        include_variants: add every variant (``--variants``).
        cli_overrides: RunConfig keys applied last, above each run's entry (``--epochs`` ...).
        logdir: root of the run folders.
        config_dir: where ``base.yaml`` and ``optim/<name>.yaml`` live.
        source: the YAML file this came from, if any.
    """

    experiment: str = "review"
    description: str = ""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    lrs: list[float] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=_default_runs)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    opts: list[str] | None = None
    include_variants: bool = False
    cli_overrides: dict[str, Any] = field(default_factory=dict)
    logdir: str = "runs"
    config_dir: Path = CONFIG_DIR
    source: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str | None = None) -> "ReviewConfig":
        """Validate a mapping (a parsed YAML file, or the API's dict): unknown keys name the nearest valid one."""
        where = f"{source}: " if source else ""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}a review config must be a mapping, got {type(data).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(YAML_KEYS)}"
                raise ConfigError(f"{where}unknown review key '{key}'{hint}")
        kw: dict[str, Any] = dict(data)
        if "experiment" in kw:
            kw["experiment"] = folder_name(kw["experiment"], f"{where}experiment")
        if "description" in kw:
            kw["description"] = "" if kw["description"] is None else str(kw["description"])
        if "seeds" in kw:
            kw["seeds"] = _seeds_value(kw["seeds"], f"{where}seeds")
        if "lrs" in kw:
            kw["lrs"] = _lrs_value(kw["lrs"], f"{where}lrs")
        for name in ("overrides", "cli_overrides"):
            if name in kw:
                kw[name] = _overrides_value(kw[name], f"{where}{name}")
        for name in ("runs", "variants"):
            if name in kw:
                kw[name] = _runs_value(kw[name], f"{where}{name}")
        if "slurm" in kw:
            from .slurm import SlurmOptions

            SlurmOptions.from_mapping(kw["slurm"], f"{where}slurm")  # checked now, used by --executor slurm
            kw["slurm"] = dict(kw["slurm"] or {})
        if "opts" in kw and kw["opts"] is not None:
            kw["opts"] = parse_opts(kw["opts"]) if isinstance(kw["opts"], str) else [str(o) for o in kw["opts"]]
        if "include_variants" in kw:
            kw["include_variants"] = bool(kw["include_variants"])
        if "logdir" in kw:
            kw["logdir"] = str(kw["logdir"])
        if "config_dir" in kw:
            kw["config_dir"] = Path(kw["config_dir"])
        kw.setdefault("source", source)
        cfg = cls(**kw)
        clash = sorted(set(cfg.runs) & set(cfg.variants))
        if clash:
            raise ConfigError(f"{where}label {clash[0]!r} is both a run and a variant; rename one")
        if not cfg.runs and not cfg.variants:
            raise ConfigError(f"{where}runs is empty: list at least one optimizer")
        return cfg

    def to_mapping(self) -> dict[str, Any]:
        """Every field but ``source``: what :meth:`from_mapping` takes back."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}

    def replace(self, **fields: Any) -> "ReviewConfig":
        """This configuration with ``fields`` changed, validated again (CLI/API fields over a file's)."""
        return ReviewConfig.from_mapping({**self.to_mapping(), **fields}, source=self.source)

    def exp_dir(self) -> Path:
        return Path(self.logdir) / self.experiment


def load_review(path: str | Path, **fields: Any) -> ReviewConfig:
    """A review YAML file (``yaml.safe_load``), with CLI/API ``fields`` on top."""
    cfg = ReviewConfig.from_mapping(load_yaml(path), source=str(path))
    return cfg.replace(**fields) if fields else cfg


# -- values ---------------------------------------------------------------------------------------

NAME_MAX = 255  # bytes in one folder name (Linux, macOS; the run folders are copied between them)


def folder_name(value: Any, where: str) -> str:
    """An experiment name or run label: a string that is one plain folder name (no path
    separator or control character, not hidden, at most NAME_MAX bytes)."""
    if not isinstance(value, str):
        kind = "nothing" if value is None else type(value).__name__
        quote = f' (quote it: "{value}")' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        raise ConfigError(f"{where} must be a folder name (a string), got {kind}: {_short(value)}{quote}")
    too_long = f"{where} {_short(value)} is too long: a folder name takes at most {NAME_MAX} bytes"
    if len(value) > NAME_MAX:  # before looking at every character of a hostile megabyte
        raise ConfigError(too_long)
    if not value or value.startswith(".") or any(c in "/\\" or not c.isprintable() for c in value):
        raise ConfigError(f"{where} {_short(value)} must be a plain folder name "
                          "(no '/', '\\' or control characters, not starting with '.')")
    if len(value.encode()) > NAME_MAX:  # no surrogates left to fail encode(): they are not printable
        raise ConfigError(too_long + f" (UTF-8), this one {len(value.encode())}")
    return value


def parse_seeds(text: str | int | Iterable[int]) -> list[int]:
    """``"0-4"`` -> [0..4], ``"0,2,5"``, ``"0-2,7"``, ``3``, or a list of seeds in ``0..SEED_MAX``,
    at most ``MAX_SEEDS`` of them; duplicates are errors."""
    return _seeds_value(text, "--seeds")


# A seed fixes a run's init (torch.manual_seed(seed)), its data order (a generator seeded with
# 1_000_003 * seed + 7_919 * epoch + 17) and a random split (10_007 * seed + 1). torch takes
# seeds below 2**64; 0 .. 2**32 - 1 is what every seeding API takes (numpy's, Lightning's
# seed_everything) and keeps those derived seeds far below torch's limit.
from ..config import MAX_SEED as SEED_MAX  # noqa: E402 - one range for train and review
# Each seed is one run per optimizer: 1,000 seeds x 8 optimizers is already months of CPU time,
# and expanding more (reading the run configurations) would take minutes before anything runs.
MAX_SEEDS = 1000


def _seeds_value(value: Any, where: str) -> list[int]:
    usage = f"{where} must be seeds like '0-4', '0,2,5' or a list of integers in 0..{SEED_MAX}"
    if isinstance(value, bool):
        raise ConfigError(f"{usage}, got {value!r}")
    if isinstance(value, int):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = []
        for part in value.replace(" ", "").split(","):
            m = _SEED_PART.fullmatch(part)
            if not m:
                raise ConfigError(f"{usage}, got {_short(value)}")
            lo = _seed_text(m["lo"], where)
            if m["hi"] is None:
                items.append(lo)
                continue
            hi = _seed_text(m["hi"], where)
            if hi < lo:
                raise ConfigError(f"{where}: the range {part!r} is empty (write low-high)")
            # counted before the range is made: '0-100000000' must not build 10**8 ints first
            _check_count(len(items) + hi - lo + 1, where)
            items.extend(range(lo, hi + 1))
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ConfigError(f"{usage}, got {_short(value)}")
    _check_count(len(items), where)
    seen: set[int] = set()
    for s in items:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"{usage}, got {_short(value)}")
        _check_seed(s, where)
        if s in seen:
            raise ConfigError(f"{where}: seed {s} is listed twice")
        seen.add(s)
    if not items:
        raise ConfigError(f"{usage}, got an empty list")
    return list(items)


_SEED_PART = re.compile(r"(?P<lo>[0-9]+)(?:-(?P<hi>[0-9]+))?")


def _seed_text(text: str, where: str) -> int:
    """A run of ASCII digits as a seed (refused past SEED_MAX before int() reads a huge number)."""
    if len(text.lstrip("0")) > len(str(SEED_MAX)):
        raise ConfigError(f"{where}: seed {text[:12]}... ({len(text)} digits) is out of range: seeds are integers "
                          f"in 0..{SEED_MAX} (2**32 - 1)")
    seed = int(text)
    _check_seed(seed, where)
    return seed


def _check_seed(seed: int, where: str) -> None:
    if seed > SEED_MAX:
        shown = seed if seed.bit_length() <= 256 else f"of {seed.bit_length()} bits"  # str() refuses 4300+ digits
        raise ConfigError(f"{where}: seed {shown} is out of range: seeds are integers in 0..{SEED_MAX} (2**32 - 1)")


def _check_count(n: int, where: str) -> None:
    if n > MAX_SEEDS:
        raise ConfigError(f"{where}: {n} seeds; a review takes at most {MAX_SEEDS} (one run per optimizer and seed): "
                          "split the sweep into several experiments")


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to one short line for an error message."""
    try:
        text = repr(value)
    except ValueError:  # an int of 4300+ digits
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _lrs_value(value: Any, where: str) -> list[float] | None:
    if value is None:
        return None
    items = [v for v in str(value).replace(" ", "").split(",") if v] if isinstance(value, str) else value
    if isinstance(items, (int, float)) and not isinstance(items, bool):
        items = [items]
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"{where} must be a list of learning rates like [1e-4, 1e-3, 1e-2], got {value!r}")
    out: list[float] = []
    for v in items:
        try:
            lr = float(v)  # YAML reads 1e-3 (no dot) as a string
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {v!r} is not a number") from None
        if isinstance(v, bool) or not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"{where}: learning rates must be positive numbers, got {v!r}")
        if lr in out:
            raise ConfigError(f"{where}: learning rate {v!r} is listed twice")
        out.append(lr)
    return out


def _overrides_value(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping of run settings (e.g. trainer: {{epochs: 20}}), got {value!r}")
    for key in IDENTITY_KEYS:
        if key in value:
            hint = {"experiment": "the review's 'experiment' key or --experiment", "seed": "'seeds' or --seeds",
                    "label": "the run's name in 'runs'", "logdir": "--logdir"}[key]
            raise ConfigError(f"{where}.{key} is set by the review; use {hint}")
    return dict(value)


def _runs_value(value: Any, where: str) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if isinstance(value, (list, tuple)):  # shorthand: a list of registry names
        value = {folder_name(v, f"{where} label"): {} for v in value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must map run labels to settings (e.g. adam: {{}}), got {value!r}")
    out: dict[str, dict[str, Any]] = {}
    for label, entry in value.items():
        label = folder_name(label, f"{where} label")
        if label.lower() in ("all", "variants"):
            raise ConfigError(f"{where}: {label!r} is reserved for --opts; choose another label")
        out[label] = _overrides_value(entry, f"{where}.{label}")
    return out


def parse_opts(text: str) -> list[str]:
    return [t for t in (s.strip() for s in str(text).split(",")) if t]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` with 1-based ``i`` (1 <= i <= n) -> ``(i, n)``."""
    i_s, sep, n_s = str(text).strip().partition("/")
    if not (sep and i_s.strip().isdigit() and n_s.strip().isdigit()):
        raise ConfigError(f"--shard must be i/n with 1 <= i <= n (e.g. 2/8), got {text!r}")
    i, n = int(i_s), int(n_s)
    if n < 1:
        raise ConfigError(f"--shard {text}: the number of shards must be >= 1")
    if not 1 <= i <= n:
        extra = " (shards are 1-based; with SLURM use --array=1-n)" if i == 0 else ""
        raise ConfigError(f"--shard {text}: i must be between 1 and {n}{extra}")
    return i, n
