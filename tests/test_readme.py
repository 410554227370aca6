"""The README stays true: its optimizer table is the registry's, its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from torchopt_review.optim.registry import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_optimizer_table_matches_registry():
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| [^|]* \| (.+?) \|$", README, flags=re.M)
    assert [r[0] for r in rows] == list(REGISTRY), "README table rows must be the registry's names, in order"
    for name, cls, description in rows:
        assert REGISTRY[name].cls.__name__ == cls
        assert description == REGISTRY[name].description


def test_make_targets_named_in_readme_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    for target in set(re.findall(r"\bmake ([\w-]+)", README)):
        assert target in targets, f"README mentions 'make {target}' but the Makefile has no such target"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in README and "make test" in ci
