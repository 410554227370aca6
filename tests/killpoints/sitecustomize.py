"""Imported at start-up by every Python process that has this folder on its PYTHONPATH (a review's
spawned workers in the kill tests, SLURM tasks in tests/slurm): installs the kill points of
killpoints.py when KILL_PAUSE is set. Other Pythons that inherit the variables (a system python3
running a helper script) do not have the project: they are left alone."""
import os

if os.environ.get("KILL_PAUSE"):
    try:
        import torchopt_review  # noqa: F401
    except ImportError:
        pass
    else:
        import killpoints  # noqa: F401
