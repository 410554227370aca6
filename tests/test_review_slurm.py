"""``--executor slurm`` without a cluster: its options (SLURM's time formats, sizes, sbatch
options) and the refusals a user gets before anything is submitted. The review on a real SLURM
is tests/slurm/ (``make test-slurm``)."""

from __future__ import annotations

import pytest

from torchopt_review.errors import ConfigError
from torchopt_review.review import main
from torchopt_review.review.slurm import SlurmOptions, Unit, time_minutes


@pytest.mark.parametrize("text, minutes", [
    ("30", 30), (45, 45), ("0:30", 1), ("1:30", 2), ("90:00", 90),  # M, M:S (seconds round up)
    ("1:00:00", 60), ("2:30:15", 151),  # H:M:S
    ("1-0", 1440), ("1-2", 1560), ("1-2:30", 1590), ("2-00:00:00", 2880), ("0-0:0:1", 1),  # D-H[:M[:S]]
])
def test_slurm_time_formats(text, minutes):
    assert time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "abc", "1:2:3:4", "-5", "1h", "0", "0:00", True, 1.5, None])
def test_bad_slurm_times_are_refused(text):
    with pytest.raises(ConfigError, match="time"):
        time_minutes(text)


@pytest.mark.parametrize("block, message", [
    ({"partiton": "gpu"}, "unknown key 'partiton'"),
    ({"partition": "two words"}, "partition name"),
    ({"cpus_per_task": 0}, "cpus_per_task must be an integer >= 1"),
    ({"gpus_per_task": -1}, "gpus_per_task must be an integer >= 0"),
    ({"mem": "4GB"}, "size like 4000"),
    ({"extra": {"array": "1-4"}}, "'array' cannot be set here"),
    ({"extra": {"time": "10"}}, "--slurm-time"),
    ({"extra": {"Bad Name": 1}}, "not an sbatch option name"),
    ({"extra": {"qos": [1]}}, "a string, a number or true"),
    ({"poll_s": 0}, "poll_s"),
    ("gpu", "must be a mapping"),
])
def test_bad_slurm_settings_name_the_problem(block, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        SlurmOptions.from_mapping(block)


def test_cli_options_go_over_the_yaml_block_and_extra_adds_to_it():
    yaml = SlurmOptions.from_mapping({"partition": "cpu", "time": "2:00:00", "extra": {"qos": "low"}})
    opts = yaml.replace(time="30", extra=["qos=high", "exclusive", "--account=abc"])
    assert (opts.partition, opts.minutes) == ("cpu", 30)
    assert opts.extra == {"qos": "high", "exclusive": True, "account": "abc"}


def test_a_requeued_unit_resumes_instead_of_restarting():
    """What submitit stores on SLURM's warning signal: the same runs, never --restart again."""
    unit = Unit(cfgs=["a-config"], restart=True, threads=3)  # type: ignore[list-item]
    again = unit.checkpoint()
    assert again.function is not unit and again.function.restart is False
    assert again.function.cfgs == ["a-config"] and again.function.threads == 3
    assert unit.restart is True


@pytest.mark.parametrize("argv, message", [
    (["--slurm-time", "30"], "--slurm-time only applies to --executor slurm"),
    (["--no-wait"], "--no-wait only applies to --executor slurm"),
    (["--executor", "slurm", "--shard", "1/2"], "--shard is for your own sbatch scripts"),
    (["--executor", "slurm", "--in-process"], "--in-process trains here"),
    (["--executor", "slurm", "--slurm-time", "1h"], "--slurm-time must be a SLURM time limit"),
    (["--executor", "slurm", "--slurm-extra", "output=x"], "'output' cannot be set here"),
    (["--executor", "pbs"], "invalid choice: 'pbs'"),
])
def test_cli_refusals_are_one_line_and_exit_2(argv, message, tmp_path, capsys, synthetic_data_dir):
    code = main(["--opts", "sgd", "--seeds", "0", "--logdir", str(tmp_path), "--data-dir", str(synthetic_data_dir),
                 *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert message in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_no_sbatch_on_path_is_one_line_naming_what_to_do(tmp_path, capsys, synthetic_data_dir, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code = main(["--opts", "sgd", "--seeds", "0", "--logdir", str(tmp_path / "runs"), "--data-dir",
                 str(synthetic_data_dir), "--executor", "slurm"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err == ["error: --executor slurm: sbatch, sacct, srun not found; run the review where SLURM's commands are "
                   "on PATH, e.g. a login node (or use --shard in your own sbatch script)"]
    assert not list((tmp_path / "runs").rglob("run.json"))  # nothing trained, nothing half-written
