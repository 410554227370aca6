"""The review on a real SLURM cluster (two nodes of Debian's slurm-wlm on this machine, see
cluster.py): ``make test-slurm``; skipped with the reason where SLURM is not installed.

The reference is the same review trained by the local executor: every run's metrics.csv (all
columns but ``wall_s``, the wall clock) and test accuracy must be the same, whether the run went
through a job array, a cancelled task resubmitted, a pre-empted task requeued, the README's own
sbatch script with ``--shard``, or ``--no-wait`` and a later pick-up.
"""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
KILLPOINTS = ROOT / "tests" / "killpoints"
KEYS = ["sgd/seed0", "adam/seed0", "sgd/seed1", "adam/seed1"]

REVIEW_YAML = """\
experiment: {experiment}
seeds: [0, 1]
runs: {{sgd: {{}}, adam: {{}}}}
overrides:
  trainer: {{epochs: 3, limit_batches: 6}}
  data: {{val_size: 200}}
slurm: {{poll_s: 0.5, time: "10"}}
"""


def write_config(folder: Path, experiment: str = "e") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "review.yaml"
    path.write_text(REVIEW_YAML.format(experiment=experiment))
    return path


def env_with(cluster, **extra: str) -> dict[str, str]:
    env = cluster.env
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # `python` on the nodes is this one
    env.update(extra)
    return env


def review_cmd(config: Path, data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "torchopt_review.review", "--config", str(config), "--data-dir", str(data), *args]


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


def outcome(run_dir: Path) -> tuple[str, float, list[dict[str, str]]]:
    record = json.loads((run_dir / "run.json").read_text())
    return record["status"], record["test"]["acc"], metrics(run_dir)


def assert_same_runs(exp_dir: Path, reference: dict[str, tuple], keys=KEYS) -> None:
    for key in keys:
        got = outcome(exp_dir / key)
        assert got[0] == "done", key
        assert got == reference[key], f"{key}: differs from the local executor's run"


def jobs_record(exp_dir: Path) -> dict[str, dict]:
    units = json.loads((exp_dir / ".slurm" / "jobs.json").read_text())["units"]
    return {k: u for u in units for k in u["keys"]}


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """Two nodes of a real SLURM on this machine, for the module; skipped with the reason where
    SLURM is not installed or this is not root."""
    why = SlurmCluster.available()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    print(f"\ntest SLURM cluster: {len(cluster.nodes)} nodes up in {cluster.startup_s:.2f} s")
    yield cluster
    cluster.stop()


def local_review(folder: Path, data: Path, *extra: str) -> dict[str, tuple]:
    config = write_config(folder)
    out = subprocess.run(review_cmd(config, data, "--logdir", str(folder / "runs"), "--no-report", *extra),
                         capture_output=True, text=True, cwd=folder, timeout=600)
    assert out.returncode == 0, out.stderr
    return {k: outcome(folder / "runs" / "e" / k) for k in KEYS}


@pytest.fixture(scope="module")
def reference(synthetic_data_dir, tmp_path_factory) -> dict[str, tuple]:
    """The same review, trained here by the local executor (one process per run)."""
    return local_review(tmp_path_factory.mktemp("local"), synthetic_data_dir, "--workers", "2")


def test_slurm_review_equals_the_local_review(slurm_cluster, reference, synthetic_data_dir, tmp_path):
    config = write_config(tmp_path)
    t0 = time.monotonic()
    out = subprocess.run(review_cmd(config, synthetic_data_dir, "--executor", "slurm", "--slurm-cpus-per-task", "2",
                                    "--threads", "1"),
                         capture_output=True, text=True, cwd=tmp_path, env=env_with(slurm_cluster), timeout=600)
    print(f"2x2x1 review through --executor slurm: {time.monotonic() - t0:.1f} s\n{out.stderr}")
    assert out.returncode == 0, out.stderr
    assert "submitted 4 tasks to SLURM" in out.stderr
    exp = tmp_path / "runs" / "e"
    assert_same_runs(exp, reference)
    assert (exp / "report.md").is_file()
    job = jobs_record(exp)["sgd/seed0"]["job_id"].split("_")[0]
    tasks = slurm_cluster.jobs(job)
    assert len(tasks) == 4 and {t["state"] for t in tasks} == {"COMPLETED"}
    assert {t["node"] for t in tasks} == {"n1", "n2"}, tasks  # 2 CPUs a task, 4 a node: both nodes worked


def test_a_stacked_review_is_one_task_and_equals_the_local_stacked_review(slurm_cluster, synthetic_data_dir,
                                                                          tmp_path):
    """The stacked engine (the GPU path; on CPU here): all runs of one configuration in one task."""
    reference = local_review(tmp_path / "local", synthetic_data_dir, "--engine", "stacked")
    config = write_config(tmp_path / "slurm")
    out = subprocess.run(review_cmd(config, synthetic_data_dir, "--executor", "slurm", "--engine", "stacked"),
                         capture_output=True, text=True, cwd=tmp_path / "slurm", env=env_with(slurm_cluster),
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert "4 to run as SLURM jobs (stacked)" in out.stderr and "submitted 1 task to SLURM" in out.stderr
    exp = tmp_path / "slurm" / "runs" / "e"
    assert_same_runs(exp, reference)
    assert {json.loads((exp / k / "run.json").read_text())["engine"] for k in KEYS} == {"stacked"}
    unit = jobs_record(exp)["sgd/seed0"]
    assert sorted(unit["keys"]) == sorted(KEYS) and unit["stacked"] is True


def test_cancelled_and_preempted_tasks_resume_and_end_identical(slurm_cluster, reference, synthetic_data_dir,
                                                                 tmp_path):
    """Three tasks are held after training epoch 2, before it is checkpointed (epoch 1 is), then:
    adam/seed0 is cancelled (the review resubmits it), adam/seed1 gets SLURM's warning signal
    (submitit checkpoints and requeues it: --signal=USR2@90), sgd/seed1 is requeued by SLURM itself
    (what a PreemptMode=REQUEUE cluster does: SIGTERM, SIGKILL after KillWait, back to the queue).
    Each resumes from its last checkpoint and ends as the uninterrupted local run did."""
    held = {"adam/seed0": "cancel", "adam/seed1": "warning-signal", "sgd/seed1": "requeued-by-slurm"}
    config = write_config(tmp_path, "disrupted")
    (tmp_path / "once").mkdir()
    env = env_with(slurm_cluster, PYTHONPATH=str(KILLPOINTS), KILL_PAUSE_S="120", KILL_PAUSE_ONCE=str(tmp_path / "once"),
                   KILL_PAUSE=",".join(f"{key}:before_ckpt@2" for key in held))
    proc = subprocess.Popen(review_cmd(config, synthetic_data_dir, "--executor", "slurm"), cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    exp = tmp_path / "runs" / "disrupted"
    logs = {key: exp / ".review-logs" / f"{key.replace('/', '-')}.log" for key in held}
    wait_for(lambda: all(p.exists() and "test-pause" in p.read_text() for p in logs.values()), 300,
             "the three tasks reaching their pause")
    jobs = {key: jobs_record(exp)[key]["job_id"] for key in held}
    at_signal = {key: (exp / key / "metrics.csv").read_text() for key in held}
    t0 = time.monotonic()
    slurm_cluster.run(["scancel", jobs["adam/seed0"]])
    slurm_cluster.run(["scancel", "--signal=USR2", jobs["adam/seed1"]])
    slurm_cluster.run(["scontrol", "requeue", jobs["sgd/seed1"]])
    stdout, stderr = proc.communicate(timeout=600)
    print(f"{stderr}\nall three ended {time.monotonic() - t0:.1f} s after the disruptions")
    for key in held:
        print(f"{key} ({held[key]}): metrics.csv at the disruption:\n{at_signal[key]}"
              f"and at the end:\n{(exp / key / 'metrics.csv').read_text()}")
        assert len(at_signal[key].splitlines()) == 2  # header + epoch 1: the checkpoint to resume from
    assert proc.returncode == 0, stderr
    record = jobs_record(exp)

    job = jobs["adam/seed0"]  # cancelled: a new job
    assert re.search(rf"SLURM job {job} \(adam/seed0\) ended CANCELLED with the run unfinished: "
                     r"resubmitted as job \d+ \(retry 1 of 2\)", stderr), stderr
    assert record["adam/seed0"]["attempt"] == 2 and record["adam/seed0"]["history"] == [[job, "CANCELLED"]]
    for key in ("adam/seed1", "sgd/seed1"):  # pre-empted: the same job, requeued
        assert f"SLURM job {jobs[key]} ({key}) was requeued" in stderr
        assert record[key]["job_id"] == jobs[key] and record[key]["attempt"] == 1
    # submitit's checkpoint-and-requeue ran in the task that got the warning signal, and only there
    assert "Requeued job" in logs["adam/seed1"].read_text()
    assert "Requeued job" not in logs["sgd/seed1"].read_text()
    assert_same_runs(exp, reference)


def readme_sbatch() -> tuple[str, list[str]]:
    """The README's sbatch script (the block that starts with #!/bin/bash under "Past one machine")
    and its submit commands (the bash block after it)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Past one machine", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    script = next(b for b in blocks if b.startswith("#!/bin/bash"))
    commands = next(b for b in blocks[blocks.index(script) + 1:] if "sbatch" in b)
    return script, [line for line in commands.splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_sbatch_script_with_shards_runs_as_written(slurm_cluster, reference, synthetic_data_dir, tmp_path):
    script, commands = readme_sbatch()
    (tmp_path / "review.sbatch").write_text(script)
    config = write_config(tmp_path, "blog")  # the README's commands name runs/blog
    assert commands[0] == "JOB=$(sbatch --parsable review.sbatch)", commands
    # The README's two commands, run by bash as written; the test adds what fits its tiny review:
    # two shards instead of eight, and the review's settings as the script's arguments ("$@").
    test_args = f"--config {config} --data-dir {synthetic_data_dir}"
    shell = "\n".join(["set -e",
                       commands[0].replace("review.sbatch", f"--array=1-2 review.sbatch {test_args}"),
                       *commands[1:], 'echo "$JOB"'])
    out = subprocess.run(["bash", "-c", shell], cwd=tmp_path, env=env_with(slurm_cluster), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    job = out.stdout.split()[-1]
    slurm_cluster.wait_idle(timeout=600)
    shards = slurm_cluster.jobs(job)
    assert sorted(t["id"] for t in shards) == [f"{job}_1", f"{job}_2"]
    assert {t["state"] for t in shards} == {"COMPLETED"}, shards
    logs = sorted(tmp_path.glob(f"slurm-{job}_*.out"))
    assert len(logs) == 2 and all("shard" in p.read_text() for p in logs)
    assert_same_runs(tmp_path / "runs" / "blog", reference)
    assert (tmp_path / "runs" / "blog" / "report.md").is_file()  # the dependent report job ran


def test_no_wait_then_the_same_command_or_report_picks_the_jobs_up(slurm_cluster, reference, synthetic_data_dir,
                                                                    tmp_path):
    config = write_config(tmp_path, "later")
    # every task holds for a while after its first epoch: the jobs are surely still running when we look
    env = env_with(slurm_cluster, PYTHONPATH=str(KILLPOINTS), KILL_PAUSE="before_ckpt@1", KILL_PAUSE_S="25")
    cmd = review_cmd(config, synthetic_data_dir, "--executor", "slurm")
    t0 = time.monotonic()
    first = subprocess.run(cmd + ["--no-wait"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "4 runs left training on SLURM (not waited for)" in first.stderr
    print(f"--no-wait returned after {time.monotonic() - t0:.1f} s")
    exp = tmp_path / "runs" / "later"
    assert not (exp / "report.md").exists()

    local = subprocess.run(review_cmd(config, synthetic_data_dir), cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
    assert local.returncode == 2 and "has SLURM jobs still queued or running" in local.stderr, local.stderr

    # Ctrl-C while watching stops this process only: the jobs go on, and it says how to pick them up
    first_job = jobs_record(exp)["sgd/seed0"]["job_id"].split("_")[0]
    err_file = tmp_path / "watcher.err"
    with open(err_file, "w") as err:
        watcher = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        wait_for(lambda: "watching 4 runs already submitted" in err_file.read_text(), 60, "the watcher attaching")
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=60) == 130, err_file.read_text()
    assert "stopped watching: the SLURM jobs go on" in err_file.read_text()
    assert "CANCELLED" not in {j["state"] for j in slurm_cluster.jobs(first_job)}, slurm_cluster.jobs()

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "watching 4 runs already submitted to SLURM" in again.stderr and "submitted 4 tasks" not in again.stderr
    assert len(slurm_cluster.jobs(jobs_record(exp)["sgd/seed0"]["job_id"].split("_")[0])) == 4  # nothing twice
    assert_same_runs(exp, reference)

    (exp / "report.md").unlink()
    report = subprocess.run([sys.executable, "-m", "torchopt_review.report", str(exp)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert (exp / "report.md").is_file()


def test_own_failures_are_recorded_and_lost_tasks_retried_a_bounded_number_of_times(slurm_cluster, tmp_path,
                                                                                   monkeypatch):
    """A run that raises is the run's failure: recorded, not retried. A task that dies (SIGKILL)
    is the infrastructure's: resubmitted, and recorded failed once the retries are spent.
    (tests/review_fakes.py's stand-in for train.run, steered by a plan file.)"""
    import io

    import review_fakes
    from torchopt_review.review import review

    for name, value in env_with(slurm_cluster).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests"))  # the tasks import review_fakes too
    logdir = tmp_path / "runs"
    review_fakes.write_plan(logdir, {"adam/seed0": "raise", "sgd/seed1": "die", "adam/seed1": "diverge"})
    out = io.StringIO()
    result = review({"experiment": "fx", "seeds": [0, 1], "runs": {"sgd": {}, "adam": {}}, "logdir": str(logdir),
                     "overrides": {"trainer": {"epochs": 3}}},
                    executor="slurm", run_fn=review_fakes.fake_run, stream=out,
                    slurm={"poll_s": 0.5, "time": "10", "max_retries": 1})
    print(out.getvalue())
    status = {o.key: o.status for o in result.outcomes}
    assert status == {"sgd/seed0": "done", "adam/seed0": "failed", "sgd/seed1": "failed", "adam/seed1": "diverged"}
    assert result.exit_status == 1
    calls = review_fakes.calls(logdir)
    assert calls.count("adam/seed0 start=0") == 1  # its own failure: not retried
    assert calls.count("sgd/seed1 start=0") == 2  # lost twice: first try + 1 retry
    errors = {o.key: o.error for o in result.failed}
    assert "boom in adam/seed0" in errors["adam/seed0"]
    assert re.search(r"SLURM job \S+ ended FAILED with the run unfinished, 2 attempts", errors["sgd/seed1"])
    record = json.loads((logdir / "fx" / "sgd" / "seed1" / "run.json").read_text())
    assert record["status"] == "failed" and "2 attempts" in record["error"]
