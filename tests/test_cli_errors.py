"""Bad input to the CLIs: one clear line on stderr, exit status 2, no traceback, nothing written.

One table per CLI. Every row runs the real command line as its own process (forked from the
pre-warmed zygote of tests/proc_harness.py, so ~0.1 s a row instead of ~8 s) in an empty folder,
then checks:

- exit status 2, exactly one non-empty stderr line, starting with ``error: ``, no ``Traceback``;
- the line names what is wrong (the row's needles);
- for errors that can be detected before training: no run folder, no partial file, nothing at
  all was written in the working folder (config, data and usage errors come before ``run.json``).

A few rows also run as genuinely fresh ``python -m`` processes (``test_fresh_interpreter_*``), to
catch anything a fresh interpreter prints while importing torch/Lightning that the zygote hides.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import textwrap
from pathlib import Path
from typing import Callable

import pytest
import torch

from conftest import make_synthetic, write_idx, write_synthetic_dir
from proc_harness import assert_every_file_parses, assert_one_line_error, cli, fresh_cli, tree

TRAIN, REVIEW = "torchopt_review.train", "torchopt_review.review"
QUICK = ["--epochs", "1", "--limit-batches", "2", "--set", "data.val_size=200", "--no-progress",
         "--set", "trainer.steps_per_batch=2", "--set", "trainer.diagnostics=false"]
# The same small settings as a config file, so a row's own --config/--set/flags win over them.
QUICK_YAML = """\
data: {val_size: 200}
trainer: {epochs: 1, limit_batches: 2, steps_per_batch: 2, diagnostics: false}
"""
VALID = "sgd, momentum, nesterov, adagrad, rmsprop, adam, nadam, adamax"


# -- helpers that build a row's inputs inside the row's empty working folder ------------------------

def yaml_file(text: str, name: str = "c.yaml") -> Callable[[Path], str]:
    def make(cwd: Path) -> str:
        (cwd / name).write_text(textwrap.dedent(text))
        return name
    return make


def data_variant(edit: Callable[[Path], None]) -> Callable[[Path], str]:
    """A synthetic raw-IDX data folder (outside the working folder), damaged by ``edit``."""
    def make(cwd: Path) -> str:
        d = write_synthetic_dir(cwd.parent / f"{cwd.name}-data", gz=False)
        edit(d)
        return str(d)
    return make


def _patch(name: str, fn: Callable[[bytearray], bytes]) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        p = d / name
        p.write_bytes(fn(bytearray(p.read_bytes())))
    return edit


def _set_byte(i: int, v: int) -> Callable[[bytearray], bytes]:
    def f(b: bytearray) -> bytes:
        b[i] = v
        return bytes(b)
    return f


def _gz_truncated(d: Path) -> None:
    p = d / "train-images-idx3-ubyte"
    data = gzip.compress(p.read_bytes())
    p.unlink()
    (d / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])


def _fewer_labels(d: Path) -> None:
    write_idx(d / "train-labels-idx1-ubyte", make_synthetic()["train-labels-idx1-ubyte"][:1000], gz=False)


def _wrong_shape(d: Path) -> None:
    write_idx(d / "t10k-images-idx3-ubyte", torch.zeros(300, 27, 29), gz=False)


def _make_file(name: str) -> Callable[[Path], str]:
    def make(cwd: Path) -> str:
        (cwd / name).write_text("a regular file\n")
        return name
    return make


# Each row: id, argv (strings; callables get the working folder and return a string), needles.
# --data-dir points at good synthetic data unless the row gives its own.
def _no_test_images(d: Path) -> None:
    write_idx(d / "t10k-images-idx3-ubyte", torch.zeros(0, 28, 28), gz=False)
    write_idx(d / "t10k-labels-idx1-ubyte", torch.zeros(0), gz=False)


TRAIN_ROWS = [
    # values nobody checked before (issue "Hostile inputs"): refused before anything is written
    ("betas-one", ["--opt", "adam", "--set", "optim.kwargs.betas=[0.9]"],
     ["optim.kwargs.betas must be a list of 2 numbers", "got [0.9]"]),
    ("betas-three", ["--opt", "adam", "--set", "optim.kwargs.betas=[0.9,0.999,0.5]"],
     ["optim.kwargs.betas must be a list of 2 numbers"]),
    ("betas-mapping", ["--opt", "adam", "--set", "optim.kwargs.betas={a: 1}"], ["optim.kwargs.betas must be a list of 2"]),
    ("nesterov-perhaps", ["--opt", "nesterov", "--set", "optim.kwargs.nesterov=perhaps"],
     ["optim.kwargs.nesterov must be true or false, got 'perhaps'"]),
    ("kwarg-unknown", ["--opt", "adam", "--set", "optim.kwargs.beta=[0.9,0.99]"],
     ["Adam has no argument 'beta'", "did you mean 'betas'"]),
    ("optim-not-a-section", ["--set", "optim=5"], ["optim must be a section", "got 5"]),
    ("yaml-trainer-not-a-section", ["--config", yaml_file("trainer: 5\n")], ["trainer must be a mapping, got 5"]),
    ("yaml-self-alias", ["--config", yaml_file("a: &x [*x]\n")], ["refers to itself"]),
    ("set-self-alias", ["--set", "optim.kwargs.betas=&x [*x]"], ["refers to itself"]),
    ("seed-2-64", ["--seed", "18446744073709551615"], ["the seed must be between 0 and 4294967295"]),
    ("experiment-too-long", ["--experiment", "x" * 300], ["300 bytes long", "at most 255"]),
    ("no-test-images", ["--data-dir", data_variant(_no_test_images)], ["t10k-images-idx3-ubyte", "holds no data"]),
    # optimizer names and hyperparameters from the CLI
    ("unknown-opt", ["--opt", "adamw"], ["unknown optimizer 'adamw'", "did you mean 'adam'", f"valid names: {VALID}"]),
    ("unknown-opt-far", ["--opt", "lbfgs"], ["unknown optimizer 'lbfgs'", VALID]),
    ("lr-negative", ["--lr", "-1"], ["learning rate must be a positive number, got -1.0"]),
    ("lr-zero", ["--lr", "0"], ["learning rate must be a positive number, got 0.0"]),
    ("lr-nan", ["--lr", "nan"], ["optim.lr must be a finite number, got 'nan'"]),
    ("lr-inf", ["--lr", "inf"], ["optim.lr must be a finite number, got 'inf'"]),
    ("lr-minus-inf", ["--lr=-inf"], ["optim.lr must be a finite number, got '-inf'"]),
    ("lr-minus-inf-spaced", ["--lr", "-inf"], ["argument --lr: expected one argument", "--help"]),
    ("lr-not-a-number", ["--lr", "fast"], ["optim.lr must be of type float, got 'fast'"]),
    ("momentum-negative", ["--opt", "momentum", "--set", "optim.kwargs.momentum=-1"],
     ["bad hyperparameter for momentum", "Invalid momentum value: -1"]),
    ("momentum-nan", ["--opt", "momentum", "--set", "optim.kwargs.momentum=nan"],
     ["optim.kwargs.momentum must be a finite number, got nan"]),
    ("beta1-above-1", ["--opt", "adam", "--set", "optim.kwargs.betas=[1.5,0.999]"],
     ["bad hyperparameter for adam", "Invalid beta parameter at index 0: 1.5"]),
    ("beta2-negative", ["--opt", "nadam", "--set", "optim.kwargs.betas=[0.9,-0.1]"],
     ["bad hyperparameter for nadam", "Invalid beta parameter at index 1: -0.1"]),
    ("betas-not-a-pair", ["--opt", "adam", "--set", "optim.kwargs.betas=0.9"],
     ["optim.kwargs.betas must be a list of 2 numbers", "got 0.9"]),
    ("eps-negative-1e", ["--opt", "adam", "--set", "optim.kwargs.eps=-1e-8"],
     ["bad hyperparameter for adam", "Invalid epsilon value: -1e-08"]),
    ("eps-negative", ["--opt", "rmsprop", "--set", "optim.kwargs.eps=-0.1"], ["bad hyperparameter for rmsprop", "epsilon"]),
    ("eps-inf", ["--opt", "nadam", "--set", "optim.kwargs.eps=.inf"], ["optim.kwargs.eps must be a finite number, got inf"]),
    ("weight-decay-nan", ["--opt", "adam", "--set", "optim.kwargs.weight_decay=nan"],
     ["optim.kwargs.weight_decay must be a finite number"]),
    ("rho-negative", ["--opt", "rmsprop", "--set", "optim.kwargs.alpha=-0.5"], ["bad hyperparameter for rmsprop", "alpha"]),
    ("kwarg-misspelt", ["--opt", "momentum", "--set", "optim.kwargs.momentun=0.9"],
     ["optim.kwargs.momentun: SGD has no argument 'momentun'", "did you mean 'momentum'"]),
    ("adagrad-init-acc-negative", ["--opt", "adagrad", "--set", "optim.kwargs.initial_accumulator_value=-1"],
     ["bad hyperparameter for adagrad"]),
    ("clip-negative", ["--set", "trainer.gradient_clip_val=-1"], ["trainer.gradient_clip_val must be positive"]),
    # other numbers
    ("epochs-zero", ["--epochs", "0"], ["trainer.epochs must be >= 1, got 0"]),
    ("epochs-negative", ["--epochs", "-3"], ["trainer.epochs must be >= 1, got -3"]),
    ("epochs-fraction", ["--epochs", "2.5"], ["trainer.epochs must be of type int, got '2.5'"]),
    ("epochs-word", ["--epochs", "two"], ["trainer.epochs must be of type int, got 'two'"]),
    ("seed-negative", ["--seed", "-1"], ["the seed must be between 0 and 4294967295", "got -1"]),
    ("limit-batches-zero", ["--limit-batches", "0"], ["trainer.limit_batches must be >= 1, got 0"]),
    ("batch-size-zero", ["--batch-size", "0"], ["trainer.batch_size must be >= 1, got 0"]),
    ("threads-zero", ["--threads", "0"], ["trainer.threads must be >= 1, got 0"]),
    ("val-size-too-big-for-data", ["--set", "data.val_size=5000"], ["validation size 5000 must be between 1 and 1199"]),
    # usage (argparse): one line too
    ("unknown-flag", ["--bogus"], ["unrecognized arguments: --bogus", "--help"]),
    ("accelerator-choice", ["--accelerator", "tpu"], ["argument --accelerator: invalid choice: 'tpu'"]),
    ("opt-without-value", ["--opt"], ["argument --opt: expected one argument"]),
    ("folder-names", ["--experiment", "../elsewhere"], ["experiment '../elsewhere' must be a plain folder name"]),
    ("label-with-slash", ["--label", "a/b"], ["run_label 'a/b' must be a plain folder name"]),
    # --set and YAML config files
    ("set-unknown-key", ["--set", "trainer.epoch=3"], ["unknown config key 'trainer.epoch'", "did you mean 'trainer.epochs'"]),
    ("set-unknown-section", ["--set", "optimizer.lr=1"], ["unknown config key 'optimizer'", "did you mean 'optim'"]),
    ("set-without-equals", ["--set", "trainer.epochs"], ["--set needs KEY=VALUE"]),
    ("set-invalid-yaml", ["--set", "seed=[1,"], ["--set seed", "not a valid YAML value"]),
    ("set-python-tag", ["--set", "seed=!!python/object/apply:os.system ['echo pwned']"],
     ["--set seed", "could not determine a constructor", "python/object/apply"]),
    ("set-section-as-value", ["--set", "trainer=3"], ["trainer must be a mapping"]),
    ("yaml-unknown-key", ["--config", yaml_file("trainer:\n  epoch: 3\n")], ["unknown config key 'trainer.epoch'",
                                                                             "did you mean 'trainer.epochs'"]),
    ("yaml-misspelt-section", ["--config", yaml_file("optimm:\n  lr: 0.1\n")], ["unknown config key 'optimm'", "did you mean 'optim'"]),
    ("yaml-misspelt-top", ["--config", yaml_file("sed: 3\n")], ["unknown config key 'sed'", "did you mean 'seed'"]),
    ("yaml-lr-negative", ["--config", yaml_file("optim:\n  lr: -0.1\n")], ["learning rate must be a positive number, got -0.1"]),
    ("yaml-lr-nan", ["--config", yaml_file("optim:\n  lr: .nan\n")], ["optim.lr must be a finite number, got nan"]),
    ("yaml-lr-inf", ["--config", yaml_file("optim:\n  lr: .inf\n")], ["optim.lr must be a finite number, got inf"]),
    ("yaml-lr-string", ["--config", yaml_file("optim:\n  lr: fast\n")], ["optim.lr must be of type float, got 'fast'"]),
    ("yaml-momentum-negative", ["--opt", "nesterov", "--config", yaml_file("optim:\n  kwargs:\n    momentum: -0.9\n")],
     ["bad hyperparameter for nesterov", "Invalid momentum value: -0.9"]),
    ("yaml-betas-out-of-range", ["--opt", "adamax", "--config", yaml_file("optim:\n  kwargs:\n    betas: [0.9, 1.0]\n")],
     ["bad hyperparameter for adamax", "Invalid beta parameter at index 1: 1.0"]),
    ("yaml-eps-negative", ["--opt", "adam", "--config", yaml_file("optim:\n  kwargs:\n    eps: -1e-7\n")],
     ["bad hyperparameter for adam", "Invalid epsilon value"]),
    ("yaml-epochs-zero", ["--config", yaml_file("trainer:\n  epochs: 0\n")], ["trainer.epochs must be >= 1, got 0"]),
    ("yaml-seed-negative", ["--config", yaml_file("seed: -4\n")], ["the seed must be between 0 and 4294967295", "got -4"]),
    ("yaml-unknown-opt", ["--config", yaml_file("optim:\n  name: adamw\n")], ["unknown optimizer 'adamw'", VALID]),
    ("yaml-a-list", ["--config", yaml_file("- a\n- b\n")], ["c.yaml must hold a mapping (key: value lines), not a list"]),
    ("yaml-a-scalar", ["--config", yaml_file("3\n")], ["c.yaml must hold a mapping"]),
    ("yaml-invalid", ["--config", yaml_file("optim: [1,\n")], ["c.yaml is not valid YAML", "line 2"]),
    ("yaml-bad-indent", ["--config", yaml_file("optim:\n  lr: 1\n   x: 2\n")], ["c.yaml is not valid YAML", "line 3"]),
    ("yaml-python-tag", ["--config", yaml_file("seed: !!python/object/apply:os.system ['echo pwned']\n")],
     ["c.yaml is not valid YAML", "could not determine a constructor", "python/object/apply:os.system"]),
    ("yaml-missing", ["--config", "nope.yaml"], ["config file nope.yaml does not exist"]),
    ("yaml-misspelt", ["--config", "quikc.yaml"], ["config file quikc.yaml does not exist; did you mean quick.yaml?"]),
    ("yaml-misspelt-shipped", ["--config", "nesterof.yaml"], ["config file nesterof.yaml does not exist; did you mean",
                                                              "configs/optim/nesterov.yaml"]),
    ("data-dir-missing", ["--data-dir", "no/such/dir"], ["Fashion-MNIST not found: no/such/dir does not exist"]),
    ("yaml-is-a-folder", ["--config", "."], ["config file . is a folder, not a YAML file"]),
    ("yaml-binary", ["--config", lambda cwd: (cwd / "b.yaml").write_bytes(b"\xff\xfe\x00junk") and "b.yaml"],
     ["b.yaml"]),
    # data
    ("data-dir-missing", ["--data-dir", "no/such/dir"], ["Fashion-MNIST not found: no/such/dir does not exist", "--data-dir"]),
    ("data-dir-lacks-a-file", ["--data-dir", data_variant(lambda d: (d / "t10k-labels-idx1-ubyte").unlink())],
     ["lacks t10k-labels-idx1-ubyte(.gz)", "--data-dir"]),
    ("idx-wrong-magic", ["--data-dir", data_variant(_patch("train-labels-idx1-ubyte", _set_byte(2, 0x09)))],
     ["train-labels-idx1-ubyte has the wrong magic number 0x00000901 (expected 0x00000801)"]),
    ("idx-wrong-ndim", ["--data-dir", data_variant(_patch("train-images-idx3-ubyte", _set_byte(3, 0x01)))],
     ["train-images-idx3-ubyte has the wrong magic number 0x00000801 (expected 0x00000803)"]),
    ("idx-random-bytes", ["--data-dir", data_variant(lambda d: (d / "t10k-images-idx3-ubyte").write_bytes(os.urandom(4000)))],
     ["t10k-images-idx3-ubyte has the wrong magic number"]),
    ("idx-truncated", ["--data-dir", data_variant(_patch("train-images-idx3-ubyte", lambda b: bytes(b[:-100])))],
     ["train-images-idx3-ubyte is truncated or padded", "(1200, 28, 28)", "940,700 bytes follow"]),
    ("idx-padded", ["--data-dir", data_variant(_patch("t10k-labels-idx1-ubyte", lambda b: bytes(b) + b"\0"))],
     ["t10k-labels-idx1-ubyte is truncated or padded"]),
    ("idx-wrong-count", ["--data-dir", data_variant(_patch("train-labels-idx1-ubyte", _set_byte(7, 0xB1)))],
     ["train-labels-idx1-ubyte is truncated or padded: its header declares shape (1201,)"]),
    ("idx-header-truncated", ["--data-dir", data_variant(_patch("t10k-images-idx3-ubyte", lambda b: bytes(b[:9])))],
     ["t10k-images-idx3-ubyte is truncated inside its header"]),
    ("idx-empty", ["--data-dir", data_variant(_patch("t10k-images-idx3-ubyte", lambda b: b""))],
     ["t10k-images-idx3-ubyte is not an IDX file: only 0 bytes"]),
    ("idx-label-out-of-range", ["--data-dir", data_variant(_patch("t10k-labels-idx1-ubyte", _set_byte(-1, 10)))],
     ["t10k-labels-idx1-ubyte has label 10 out of range 0-9"]),
    ("idx-count-mismatch", ["--data-dir", data_variant(_fewer_labels)],
     ["train-images-idx3-ubyte holds 1,200 images but", "train-labels-idx1-ubyte holds 1,000 labels"]),
    ("idx-not-28x28", ["--data-dir", data_variant(_wrong_shape)], ["holds images of shape (27, 29), expected 28x28"]),
    ("gzip-truncated", ["--data-dir", data_variant(_gz_truncated)],
     ["cannot read", "train-images-idx3-ubyte.gz", "corrupt or truncated"]),
    # device and log dir
    ("gpu-without-cuda", ["--accelerator", "gpu"], ["no CUDA device is visible", "--accelerator cpu"]),
    ("logdir-under-a-file", ["--logdir", lambda cwd: _make_file("afile")(cwd) + "/x"], ["cannot write to afile/x/default/", "Not a directory", "--logdir"]),
    ("logdir-in-proc", ["--logdir", "/proc/torchopt-test"], ["cannot write to /proc/torchopt-test/default/", "--logdir"]),
]


def _resolve(argv: list, cwd: Path) -> list[str]:
    return [a(cwd) if callable(a) else a for a in argv]


@pytest.fixture
def work(tmp_path) -> Path:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return cwd


@pytest.mark.parametrize("argv, needles", [pytest.param(a, n, id=i) for i, a, n in TRAIN_ROWS])
def test_train_bad_input(argv, needles, work, synthetic_data_dir):
    if argv == ["--accelerator", "gpu"] and torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: --accelerator gpu is valid here")
    (work / "quick.yaml").write_text(QUICK_YAML)  # first layer: every setting of the row wins over it
    args = ["--config", "quick.yaml", "--no-progress", *_resolve(argv, work)]
    if "--data-dir" not in args:
        args += ["--data-dir", str(synthetic_data_dir)]
    before = tree(work)
    res = cli(TRAIN, *args, cwd=work)
    assert_one_line_error(res.returncode, res.stderr, *needles)
    assert res.stdout == ""
    assert tree(work) == before, "a bad input wrote files before failing"


def test_train_missing_dataset_names_every_place_tried(work):
    """No --data-dir, no TORCHOPT_DATA_DIR and (patched away, so the test does not depend on this
    machine) no Debian package: the message lists the paths, the package and --data-dir."""
    pre = "import torchopt_review.data as d, pathlib; d.DEBIAN_DIR = pathlib.Path('/nonexistent/fashion-mnist')"
    res = cli(TRAIN, "--opt", "sgd", *QUICK, cwd=work, pre=pre)
    assert_one_line_error(res.returncode, res.stderr, "Fashion-MNIST not found (looked in /nonexistent/fashion-mnist, "
                          "data/FashionMNIST/raw)", "sudo apt-get install dataset-fashion-mnist", "--data-dir DIR")
    assert tree(work) == []
    res = cli(TRAIN, "--opt", "sgd", *QUICK, cwd=work, pre=pre, env={"TORCHOPT_DATA_DIR": str(work / "env-data")})
    assert_one_line_error(res.returncode, res.stderr, f"looked in {work / 'env-data'}, /nonexistent/fashion-mnist")


def test_train_debug_shows_the_traceback(work):
    res = cli(TRAIN, "--opt", "adamw", "--debug", cwd=work)
    assert res.returncode == 1 and "Traceback" in res.stderr and "ConfigError: unknown optimizer 'adamw'" in res.stderr


def test_train_unwritable_dir_by_permissions(work, synthetic_data_dir):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 0o500 does not stop root from writing (the file-under-a-file and "
                    "/proc rows of test_train_bad_input cover an unwritable --logdir)")
    locked = work / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        res = cli(TRAIN, "--logdir", "locked", "--data-dir", str(synthetic_data_dir), *QUICK, cwd=work)
        assert_one_line_error(res.returncode, res.stderr, "cannot write to locked/default/nadam/seed0", "Permission denied")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


# -- a full disk -------------------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [2_000, 64_000, 1_500_000], ids=["probe", "first-checkpoint", "later-file"])
def test_train_full_disk(limit, work, synthetic_data_dir):
    """A full disk, simulated honestly with RLIMIT_FSIZE (``ulimit -f``): every write past ``limit``
    bytes of a file fails with EFBIG, as a full disk fails with ENOSPC (both are reported the same
    way). Then: one clear line, exit 2, every file left in the run folder is complete, and the same
    command with room to write finishes the run with the metrics of a run that never hit the limit."""
    args = ["--opt", "adam", "--data-dir", str(synthetic_data_dir), "--epochs", "2", "--limit-batches", "2",
            "--set", "data.val_size=200", "--set", "trainer.steps_per_batch=2", "--no-progress"]
    res = cli(TRAIN, *args, cwd=work, fsize=limit)
    run_dir = work / "runs" / "default" / "adam" / "seed0"
    if limit == 2_000:  # the 4 KiB write probe fails: nothing may remain
        assert_one_line_error(res.returncode, res.stderr, "cannot write to runs/default/adam/seed0: File too large",
                              "--logdir")
        assert tree(work) == []
    else:
        assert_one_line_error(res.returncode, res.stderr, "File too large", "disk full", "free some space",
                              "run the same command to resume")
        assert_every_file_parses(run_dir)
        assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    again = cli(TRAIN, *args, cwd=work)
    assert again.returncode == 0, again.stderr
    fresh = work.parent / "fresh"
    fresh.mkdir()
    ref = cli(TRAIN, *args, cwd=fresh)
    assert ref.returncode == 0, ref.stderr
    strip = lambda p: [line.split(",", 3)[:2] + line.split(",", 3)[3:] for line in p.read_text().splitlines()]
    assert strip(run_dir / "metrics.csv") == strip(fresh / "runs/default/adam/seed0/metrics.csv")


# -- a checkpoint from a different configuration -------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(synthetic_data_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    cwd = tmp_path_factory.mktemp("finished")
    args = ["--opt", "sgd", "--data-dir", str(synthetic_data_dir), *QUICK]
    res = cli(TRAIN, *args, cwd=cwd)
    assert res.returncode == 0, res.stderr
    return cwd, args


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and not p.name.startswith(".proc")}


@pytest.mark.parametrize("state, change, needles", [
    ("killed", ["--lr", "0.05"], ["holds a checkpoint from a different configuration", "--restart"]),
    ("killed", ["--seed", "0", "--set", "optim.semantics=torch"], ["holds a checkpoint from a different configuration"]),
    ("killed", ["--batch-size", "16"], ["holds a checkpoint from a different configuration"]),
    ("done", ["--lr", "0.05"], ["holds a checkpoint from a different configuration", "--restart"]),
    ("done-no-ckpt", ["--lr", "0.05"], ["holds a finished run from a different configuration", "--restart"]),
    ("no-run-json", [], ["holds a checkpoint but no run.json", "--restart"]),
    ("corrupt-ckpt", [], ["last.ckpt is not a checkpoint this tool can load safely", "--restart"]),
    ("foreign-ckpt", [], ["last.ckpt is not a checkpoint written by this tool", "--restart"]),
], ids=["lr", "semantics", "batch-size", "done-lr", "done-no-ckpt", "no-run-json", "corrupt-ckpt", "foreign-ckpt"])
def test_train_refuses_a_checkpoint_it_should_not_resume(state, change, needles, finished_run, tmp_path):
    src, args = finished_run
    cwd = tmp_path / "cwd"
    shutil.copytree(src, cwd)
    run_dir = cwd / "runs" / "default" / "sgd" / "seed0"
    record = json.loads((run_dir / "run.json").read_text())
    if state in ("killed", "corrupt-ckpt", "foreign-ckpt"):
        record.update(status="running", test=None)  # as if killed after a checkpoint
        (run_dir / "run.json").write_text(json.dumps(record))
    if state == "done-no-ckpt":
        (run_dir / "last.ckpt").unlink()
    if state == "no-run-json":
        (run_dir / "run.json").unlink()
    if state == "corrupt-ckpt":
        data = (run_dir / "last.ckpt").read_bytes()
        (run_dir / "last.ckpt").write_bytes(data[: len(data) // 2])
    if state == "foreign-ckpt":
        torch.save({"weights": torch.zeros(3)}, run_dir / "last.ckpt")
    before = _snapshot(cwd)
    res = cli(TRAIN, *args, "--epochs", "2", *change, cwd=cwd)
    assert_one_line_error(res.returncode, res.stderr, *needles)
    assert _snapshot(cwd) == before, "the refused run folder was modified"
    res = cli(TRAIN, *args, "--epochs", "2", *change, "--restart", cwd=cwd)
    assert res.returncode == 0, res.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "done"


# -- the review CLI ---------------------------------------------------------------------------------

TINY_REVIEW = """\
experiment: t
seeds: [0]
overrides: {data: {val_size: 200}, trainer: {epochs: 1, steps_per_batch: 2, diagnostics: false}}
runs: {sgd: {}}
"""


REVIEW_ROWS = [
    ("workers-zero", ["--workers", "0"], ["--workers must be >= 1, got 0"]),
    ("threads-zero", ["--threads", "0"], ["--threads must be >= 1, got 0"]),
    ("epochs-zero", ["--epochs", "0"], ["--epochs must be >= 1, got 0"]),
    ("epochs-negative", ["--epochs", "-2"], ["--epochs must be >= 1, got -2"]),
    ("limit-batches-zero", ["--limit-batches", "0"], ["--limit-batches must be >= 1, got 0"]),
    ("unknown-opt", ["--opts", "adamw"], ["unknown optimizer or run label 'adamw'", "did you mean 'adam'"]),
    ("seeds-empty-range", ["--seeds", "4-1"], ["the range '4-1' is empty"]),
    ("seeds-word", ["--seeds", "some"], ["seeds"]),
    ("lrs-negative", ["--lrs=-1e-3,1e-2"], ["learning rates must be positive numbers"]),
    ("lrs-nan", ["--lrs", "nan"], ["lrs"]),
    ("lrs-word", ["--lrs", "fast"], ["'fast' is not a number"]),
    ("shard-zero", ["--shard", "0/3"], ["1-based"]),
    ("experiment-path", ["--experiment", "../x"], ["must be a plain folder name"]),
    ("config-missing", ["--config", "nope.yaml"], ["nope.yaml does not exist"]),
    ("config-a-list", ["--config", yaml_file("- sgd\n- adam\n", "r.yaml")], ["must hold a mapping"]),
    ("config-invalid-yaml", ["--config", yaml_file("runs: {sgd: \n", "r.yaml")], ["not valid YAML"]),
    ("config-python-tag", ["--config", yaml_file("seeds: !!python/object/apply:os.system ['echo pwned']\n", "r.yaml")],
     ["not valid YAML", "could not determine a constructor"]),
    ("config-misspelt-key", ["--config", yaml_file(TINY_REVIEW.replace("seeds:", "seed:"), "r.yaml")],
     ["unknown review key 'seed'", "did you mean 'seeds'"]),
    ("config-bad-lr", ["--config", yaml_file(TINY_REVIEW.replace("runs: {sgd: {}}", "runs: {sgd: {optim: {lr: -1}}}"), "r.yaml")],
     ["run 'sgd'", "learning rate must be a positive number"]),
    ("config-bad-momentum", ["--config", yaml_file(TINY_REVIEW.replace("runs: {sgd: {}}",
                                                                          "runs: {momentum: {optim: {kwargs: {momentum: -1}}}}"), "r.yaml")],
     ["Invalid momentum value: -1"]),
    ("config-misspelt-run-key", ["--config", yaml_file(TINY_REVIEW.replace("runs: {sgd: {}}", "runs: {sgd: {trainer: {epoch: 3}}}"), "r.yaml")],
     ["unknown config key 'trainer.epoch'", "did you mean 'trainer.epochs'"]),
    ("config-misspelt-name", ["--config", "blgo"], ["config file blgo does not exist; did you mean", "configs/review/blog.yaml"]),
    ("logdir-under-a-file", ["--logdir", lambda cwd: _make_file("afile")(cwd) + "/x"], ["cannot create afile/x/t", "--logdir"]),
    ("workers-not-int", ["--workers", "many"], ["argument --workers: invalid int value: 'many'"]),
    ("unknown-flag", ["--bogus"], ["unrecognized arguments: --bogus"]),
    ("lrs-negative-spaced", ["--lrs", "-1e-3"], ["argument --lrs: expected one argument"]),
    ("data-missing", ["--data-dir", "no/such/dir", "--in-process"], ["Fashion-MNIST not found: no/such/dir does not exist"]),
    ("data-missing-workers", ["--data-dir", "no/such/dir", "--workers", "1"], ["Fashion-MNIST not found: no/such/dir"]),
    # a data folder that holds the four files, but one is corrupt: found before anything is written
    pytest.param(["--data-dir", data_variant(_patch("train-labels-idx1-ubyte", _set_byte(2, 0x09))), "--in-process"],
                 ["wrong magic number"], id="data-corrupt"),
]


@pytest.mark.parametrize("argv, needles", [
    pytest.param(*row[1:], id=row[0]) if type(row) is tuple else row for row in REVIEW_ROWS])
def test_review_bad_input(argv, needles, work, synthetic_data_dir):
    args = _resolve(argv, work)
    if "--config" not in args:
        (work / "review.yaml").write_text(TINY_REVIEW)
        args += ["--config", "review.yaml"]
    if "--data-dir" not in args:
        args += ["--data-dir", str(synthetic_data_dir)]
    if "--logdir" not in args:
        args += ["--logdir", "runs"]
    before = tree(work)
    res = cli(REVIEW, *args, "--no-report", cwd=work)
    assert_one_line_error(res.returncode, res.stderr, *needles)
    assert tree(work) == before, f"a bad input wrote files: {sorted(set(tree(work)) - set(before))}"


@pytest.mark.parametrize("mode", [["--in-process"], ["--workers", "1"]], ids=["in-process", "worker"])
def test_review_corrupt_data_stops_the_review(mode, work):
    """A corrupt data file stops the review before it writes anything: exit 2, one error line naming
    the file and the problem, no traceback, no experiment folder, no run marked failed."""
    (work / "review.yaml").write_text(TINY_REVIEW)
    data = data_variant(_patch("train-labels-idx1-ubyte", _set_byte(2, 0x09)))(work)
    res = cli(REVIEW, "--config", "review.yaml", "--data-dir", data, "--logdir", "runs", *mode, "--no-report", cwd=work)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "train-labels-idx1-ubyte has the wrong magic number" in lines[0], lines
    assert not (work / "runs" / "t").exists()


def test_review_debug_shows_the_traceback(work):
    res = cli(REVIEW, "--workers", "0", "--debug", cwd=work)
    assert res.returncode == 1 and "Traceback" in res.stderr


# -- fidelity: a few rows in genuinely fresh interpreters ----------------------------------------------

def test_fresh_interpreter_rows(work, synthetic_data_dir):
    """The zygote pre-imports torch and Lightning; a fresh ``python -m`` prints whatever those
    imports print. These rows, run fresh (concurrently), must still give exactly one line."""
    (work / "review.yaml").write_text(TINY_REVIEW)
    rows = [
        (fresh_cli(TRAIN, "--opt", "adamw", cwd=work), ["unknown optimizer 'adamw'"]),
        (fresh_cli(TRAIN, "--opt", "sgd", "--data-dir", "no/such/dir", *QUICK, cwd=work), ["Fashion-MNIST not found"]),
        (fresh_cli(REVIEW, "--config", "review.yaml", "--workers", "0", cwd=work), ["--workers must be >= 1"]),
    ]
    for proc, needles in rows:
        _, err = proc.communicate(timeout=300)
        assert_one_line_error(proc.returncode, err, *needles)
    assert tree(work) == ["review.yaml"]
