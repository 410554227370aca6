"""The project as a user installs it without -e: ``pip install --no-deps .`` into a fresh venv
(the dependencies come from this environment's site-packages), then the CLIs run from another
folder. The configs must come from inside the installed package, not from the checkout."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding a regular (non-editable) install of this checkout; returns its python."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # torch, lightning, ... from this environment; appended after the venv's own site-packages,
    # and without this environment's .pth files (so not its editable install of the project)
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # a copy of the tracked files: an in-tree build would leave build/ and *.egg-info in the checkout
    src = tmp_path_factory.mktemp("src")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        dst = src / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():
            dst.symlink_to(os.readlink(ROOT / name))
        elif (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dst)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", purelib, str(src)], check=True, cwd=src, capture_output=True, text=True)
    return py


@pytest.fixture(scope="module")
def blog_sized_data(tmp_path_factory) -> Path:
    """Synthetic IDX files with room for the blog's 6,000-image validation split."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_synthetic_dir

    return write_synthetic_dir(tmp_path_factory.mktemp("data"), n_train=6600)


def _run(py: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "MPLBACKEND": "Agg"})


def test_installed_package_is_not_the_checkout(installed, tmp_path):
    res = _run(installed, tmp_path, "-c", "import torchopt_review, lightning_module; "
               "print(torchopt_review.__file__); print(lightning_module.__file__)")
    assert res.returncode == 0, res.stderr
    for line in res.stdout.split():
        assert str(ROOT) not in line and "site-packages" in line


def test_train_applies_the_optimizer_yaml_after_a_normal_install(installed, tmp_path, blog_sized_data):
    res = _run(installed, tmp_path, "-m", "torchopt_review.train", "--opt", "adam", "--epochs", "1",
               "--limit-batches", "5", "--data-dir", str(blog_sized_data), "--no-progress")
    assert res.returncode == 0, res.stderr
    record = json.loads((tmp_path / "runs/default/adam/seed0/run.json").read_text())
    want = yaml.safe_load((ROOT / "configs/optim/adam.yaml").read_text())["optim"]["kwargs"]
    assert want and record["config"]["optim"]["kwargs"] == want  # eps 1e-7: the YAML, not torch's default
    assert record["status"] == "done"


def test_review_finds_its_default_config_after_a_normal_install(installed, tmp_path, blog_sized_data):
    res = _run(installed, tmp_path, "-m", "torchopt_review.review", "--opts", "sgd,adam", "--seeds", "0",
               "--epochs", "1", "--limit-batches", "5", "--data-dir", str(blog_sized_data), "--workers", "1")
    assert res.returncode == 0, res.stderr
    blog = yaml.safe_load((ROOT / "configs/review/blog.yaml").read_text())
    exp = tmp_path / "runs" / blog["experiment"]
    for opt in ("sgd", "adam"):
        assert json.loads((exp / opt / "seed0" / "run.json").read_text())["status"] == "done"
    assert (exp / "report.md").is_file()
