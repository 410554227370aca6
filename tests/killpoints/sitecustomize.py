"""Imported at start-up by every Python process that has this folder on its PYTHONPATH (a review's
spawned workers in the kill tests): installs the kill points of killpoints.py when KILL_PAUSE is set."""
import os

if os.environ.get("KILL_PAUSE"):
    import killpoints  # noqa: F401
