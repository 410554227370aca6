"""The review runner: grid expansion, selection, skip/resume, failure isolation, exit status,
locking and sharding. Most tests run in-process with the fast fake in tests/review_fakes.py; one
uses real worker processes (a worker that dies), one runs the real CLI end to end."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from torchopt_review import review as rv
from torchopt_review import runs
from torchopt_review.review import worker as review_worker
from torchopt_review.config import CONFIG_DIR, load_config
from torchopt_review.errors import ConfigError, UserError

sys.path.insert(0, str(Path(__file__).parent))
import review_fakes  # noqa: E402
from review_fakes import calls, fake_run, write_plan  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BLOG = CONFIG_DIR / "review" / "blog.yaml"
GERON = CONFIG_DIR / "review" / "geron.yaml"


def _registry_names() -> list[str]:
    try:
        from torchopt_review.optim.registry import optimizer_names
    except Exception as exc:  # pragma: no cover - the optimizer package is being written
        pytest.skip(f"optimizer registry does not import yet: {type(exc).__name__}: {exc}")
    return optimizer_names()


@pytest.fixture
def names() -> list[str]:
    return _registry_names()


def small(tmp_path: Path, **kw) -> rv.ReviewConfig:
    """A quick review: sgd, adam, nadam x seeds 0-1, 4 epochs, under tmp_path."""
    _registry_names()
    data = {"experiment": "t", "seeds": [0, 1], "runs": {"sgd": {}, "adam": {}, "nadam": {}},
            "overrides": {"trainer": {"epochs": 4}}, "logdir": str(tmp_path)}
    data.update(kw)
    return rv.ReviewConfig.from_mapping(data)


def go(cfg, **kw) -> rv.ReviewResult:
    kw.setdefault("workers", 1)
    kw.setdefault("in_process", True)
    kw.setdefault("report", False)
    kw.setdefault("stream", None)
    return rv.review(cfg, run_fn=fake_run, **kw)


def run_json(cfg: rv.ReviewConfig, label: str, seed: int) -> dict:
    return json.loads((Path(cfg.logdir) / cfg.experiment / label / f"seed{seed}" / "run.json").read_text())


# -- expansion ---------------------------------------------------------------------------------

def test_blog_expands_to_eight_registry_optimizers_times_five_seeds(names):
    cfg = rv.load_review(BLOG)
    runs = rv.expand(cfg)
    assert len(runs) == 8 * 5
    assert [r.run_label for r in runs[:8]] == names  # seed-major: all optimizers of seed 0 first
    assert [r.seed for r in runs[::8]] == [0, 1, 2, 3, 4]
    for r in runs:
        assert (r.experiment, r.optim.semantics, r.optim.lr) == ("blog", "keras", 1e-3)
        assert (r.trainer.epochs, r.trainer.batch_size, r.model.name, r.data.split, r.data.val_size) == (20, 32, "blog_mlp", "keras", 6000)
        assert r.label is None  # a plain registry run: the folder and fingerprint of `train --opt <name>`
    by = {r.run_label: r for r in runs if r.seed == 0}
    assert by["momentum"].optim.kwargs["momentum"] == 0.9
    assert by["rmsprop"].optim.kwargs["alpha"] == 0.99
    assert by["adam"].run_dir == Path("runs/blog/adam/seed0")


def test_review_runs_are_exactly_the_train_cli_runs(names):
    """What `train --opt momentum --seed 3 --experiment blog` builds has the same folder and fingerprint."""
    review_run = next(r for r in rv.expand(rv.load_review(BLOG)) if r.run_label == "momentum" and r.seed == 3)
    train_run = load_config("momentum", [], {"experiment": "blog", "seed": 3})
    assert review_run.run_dir == train_run.run_dir
    assert review_run.fingerprint() == train_run.fingerprint()


def test_variants_are_opt_in(names):
    default = {r.run_label for r in rv.expand(rv.load_review(BLOG, seeds=[0]))}
    assert default == set(names)
    picked = rv.expand(rv.load_review(BLOG, seeds=[0], opts=["all", "momentum-0.99", "rmsprop-rho0.9"]))
    by = {r.run_label: r for r in picked}
    assert set(by) == set(names) | {"momentum-0.99", "rmsprop-rho0.9"}
    assert (by["momentum-0.99"].optim.name, by["momentum-0.99"].optim.kwargs["momentum"]) == ("momentum", 0.99)
    assert (by["rmsprop-rho0.9"].optim.name, by["rmsprop-rho0.9"].optim.kwargs["alpha"]) == ("rmsprop", 0.9)
    assert by["rmsprop-rho0.9"].optim.kwargs["eps"] == 1e-7  # the rest of rmsprop.yaml still applies
    assert by["momentum-0.99"].run_dir.name == "seed0" and by["momentum-0.99"].run_dir.parent.name == "momentum-0.99"
    with_flag = {r.run_label for r in rv.expand(rv.load_review(BLOG, seeds=[0], include_variants=True))}
    assert with_flag == set(by)
    only = [r.run_label for r in rv.expand(rv.load_review(BLOG, seeds=[0], opts=["momentum-0.99"]))]
    assert only == ["momentum-0.99"]


def test_lr_grid_labels_and_values(tmp_path, names):
    cfg = small(tmp_path, lrs=[1e-3, "1e-2"], opts=["adam", "sgd"])
    runs = rv.expand(cfg)
    assert [(r.run_label, r.seed, r.optim.lr) for r in runs] == [
        ("adam-lr0.001", 0, 1e-3), ("adam-lr0.01", 0, 1e-2), ("sgd-lr0.001", 0, 1e-3), ("sgd-lr0.01", 0, 1e-2),
        ("adam-lr0.001", 1, 1e-3), ("adam-lr0.01", 1, 1e-2), ("sgd-lr0.001", 1, 1e-3), ("sgd-lr0.01", 1, 1e-2),
    ]
    assert all(r.label == r.run_label for r in runs)  # not the registry name: the label is stored


def test_overrides_layering_geron(names):
    runs = {r.run_label: r for r in rv.expand(rv.load_review(GERON, seeds=[0]))}
    sgd, adam = runs["sgd"], runs["adam"]
    assert (sgd.model.name, sgd.data.split, sgd.data.val_size, sgd.trainer.epochs) == ("geron_mlp", "random", 5000, 30)
    assert sgd.optim.lr == 0.01 and adam.optim.lr == 1e-3
    # CLI flags win over both the file's overrides and a run's own entry
    cli = rv.load_review(GERON, seeds=[0], cli_overrides={"trainer": {"epochs": 2}, "optim": {"lr": 0.5}})
    assert {(r.trainer.epochs, r.optim.lr) for r in rv.expand(cli)} == {(2, 0.5)}


def test_opts_all_dedups_and_unknown_names_are_listed(names):
    assert len(rv.expand(rv.load_review(BLOG, seeds=[0], opts=["all", "adam", "sgd"]))) == 8
    with pytest.raises(ConfigError) as err:
        rv.expand(rv.load_review(BLOG, seeds=[0], opts=["adamm"]))
    msg = str(err.value)
    assert "'adamm'" in msg and "did you mean 'adam'" in msg
    assert all(n in msg for n in names) and "momentum-0.99" in msg


def test_unknown_review_keys_name_the_nearest(tmp_path, names):
    with pytest.raises(ConfigError, match="unknown review key 'seed'; did you mean 'seeds'"):
        rv.ReviewConfig.from_mapping({"seed": 3})
    bad = tmp_path / "r.yaml"
    bad.write_text("experiment: x\nrunz: {adam: {}}\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: unknown review key 'runz'; did you mean 'runs'"):
        rv.load_review(bad)
    with pytest.raises(ConfigError, match="kwargs"):  # a typo inside a run entry: config's own check
        rv.expand(small(tmp_path, runs={"adam": {"optim": {"kwarg": {}}}}))
    with pytest.raises(ConfigError, match="overrides.seed is set by the review"):
        small(tmp_path, overrides={"seed": 1})
    with pytest.raises(ConfigError, match="not a registry optimizer"):
        rv.expand(small(tmp_path, runs={"fancy": {}}))


@pytest.mark.parametrize("text, seeds", [("0-4", [0, 1, 2, 3, 4]), ("0,2,5", [0, 2, 5]), ("0-2,7", [0, 1, 2, 7]),
                                         ("3", [3]), (" 1, 2 ", [1, 2])])
def test_parse_seeds(text, seeds):
    assert rv.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "3-1", "1,1", "-1", "0-", "1.5", "0..4"])
def test_parse_seeds_rejects(text):
    with pytest.raises(ConfigError):
        rv.parse_seeds(text)


def test_parse_shard():
    assert rv.parse_shard("1/4") == (1, 4) and rv.parse_shard("4/4") == (4, 4)
    with pytest.raises(ConfigError, match="1-based"):
        rv.parse_shard("0/4")
    for bad in ("5/4", "x/2", "3", "1/0"):
        with pytest.raises(ConfigError):
            rv.parse_shard(bad)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_shards_cover_every_run_exactly_once(n, names):
    runs = [(r.run_label, r.seed) for r in rv.expand(rv.load_review(BLOG, include_variants=True))]
    parts = [[(r.run_label, r.seed) for r in rv.shard_runs(rv.expand(rv.load_review(BLOG, include_variants=True)), (i, n))]
             for i in range(1, n + 1)]
    flat = [x for p in parts for x in p]
    assert sorted(flat) == sorted(runs) and len(flat) == len(set(flat))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced


def test_sharded_reviews_run_each_run_once(tmp_path):
    cfg = small(tmp_path)
    results = [go(cfg, shard=f"{i}/3") for i in (1, 2, 3)]
    assert sorted(c.split()[0] for c in calls(tmp_path)) == sorted(f"{o}/seed{s}" for o in ("sgd", "adam", "nadam") for s in (0, 1))
    assert all(r.exit_status == 0 and r.report is None for r in results)


# -- running -------------------------------------------------------------------------------------

def test_finished_runs_are_skipped(tmp_path):
    cfg = small(tmp_path)
    first = go(cfg)
    assert first.exit_status == 0 and first.count("done") == 6 and len(calls(tmp_path)) == 6
    second = go(cfg)
    assert len(calls(tmp_path)) == 6 and all(o.skipped and o.status == "done" for o in second.outcomes)
    longer = go(cfg.replace(cli_overrides={"trainer": {"epochs": 6}}))
    assert longer.count("done") == 6 and len(calls(tmp_path)) == 12
    assert calls(tmp_path)[-1].endswith("start=4")  # extended from its checkpoint, not retrained
    go(cfg, restart=True)
    assert len(calls(tmp_path)) == 18 and calls(tmp_path)[-1].endswith("start=0")


def test_missing_data_stops_the_review_before_anything_is_written(tmp_path):
    cfg = small(tmp_path, cli_overrides={"data": {"data_dir": str(tmp_path / "nowhere")}})
    with pytest.raises(UserError, match="Fashion-MNIST not found"):
        rv.review(cfg, workers=2, report=False, stream=None)  # the real train.run: the data is checked first
    assert list(tmp_path.iterdir()) == []


def test_a_run_of_another_configuration_stops_the_review(tmp_path):
    cfg = small(tmp_path)
    go(cfg)
    changed = small(tmp_path, overrides={"trainer": {"epochs": 4, "batch_size": 64}})
    with pytest.raises(UserError, match=r"different configuration \(trainer.batch_size 32 -> 64\)"):
        go(changed)
    assert len(calls(tmp_path)) == 6
    assert go(changed, restart=True).count("done") == 6


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    cfg = small(tmp_path, runs={"adam": {}}, seeds=[0])
    write_plan(tmp_path, {"adam/seed0": "flaky"})
    first = go(cfg)
    assert first.exit_status == 1 and first.outcomes[0].status == "failed"
    stored = run_json(cfg, "adam", 0)
    assert stored["status"] == "failed" and "flaky failure half-way" in stored["error"]
    assert stored["epochs"] == 4 and "fingerprint" in stored  # the run's own fields are kept
    second = go(cfg)
    assert second.exit_status == 0 and second.outcomes[0].status == "done"
    assert calls(tmp_path) == ["adam/seed0 start=0", "adam/seed0 start=2"]


def test_divergence_and_crash_are_isolated(tmp_path):
    cfg = small(tmp_path)
    write_plan(tmp_path, {"adam/seed0": "diverge", "sgd/seed1": "raise"})
    out = io.StringIO()
    res = go(cfg, stream=out)
    status = {o.key: o.status for o in res.outcomes}
    assert status == {"sgd/seed0": "done", "adam/seed0": "diverged", "nadam/seed0": "done",
                      "sgd/seed1": "failed", "adam/seed1": "done", "nadam/seed1": "done"}
    assert res.exit_status == 1
    crashed = run_json(cfg, "sgd", 1)
    assert crashed["status"] == "failed" and "RuntimeError: boom in sgd/seed1" in crashed["error"]
    assert run_json(cfg, "adam", 0)["diverged"] == {"epoch": 2, "step": 17}
    text = out.getvalue()
    assert "4 done, 1 diverged, 1 failed" in text and "failed: sgd/seed1: RuntimeError: boom in sgd/seed1" in text
    # rerun: the diverged run is a result (skipped), the failed one is retried
    write_plan(tmp_path, {"adam/seed0": "diverge"})
    again = go(cfg)
    assert again.exit_status == 0 and again.count("diverged") == 1 and calls(tmp_path)[-1] == "sgd/seed1 start=0"


def test_user_error_in_a_run_stops_the_review(tmp_path):
    cfg = small(tmp_path)
    write_plan(tmp_path, {"sgd/seed0": "user_error"})
    with pytest.raises(UserError, match="Fashion-MNIST not found"):
        go(cfg)
    assert len(calls(tmp_path)) == 1  # no point running the other five into the same wall


def test_worker_processes_isolate_a_dying_worker(tmp_path):
    """The one real process-pool test: spawn workers, one run SIGKILLs its worker."""
    cfg = small(tmp_path, runs={"sgd": {}, "adam": {}})
    write_plan(tmp_path, {"adam/seed0": "die", "sgd/seed1": "diverge"})
    res = rv.review(cfg, workers=2, run_fn=review_fakes.fake_run, report=False, stream=None)
    status = {o.key: o.status for o in res.outcomes}
    assert status == {"sgd/seed0": "done", "adam/seed0": "failed", "sgd/seed1": "diverged", "adam/seed1": "done"}
    assert "killed by SIGKILL" in run_json(cfg, "adam", 0)["error"]
    assert res.exit_status == 1


def test_progress_display(tmp_path):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    cfg = small(tmp_path, runs={"adam": {}})
    tty = Tty()
    go(cfg, stream=tty)
    assert "\r" in tty.getvalue() and "review t: 2/2 runs" in tty.getvalue() and "ETA" in tty.getvalue()
    plain = io.StringIO()
    go(cfg, stream=plain, restart=True)
    lines = plain.getvalue().splitlines()
    assert "\r" not in plain.getvalue()
    assert [l for l in lines if l.startswith("[")] == ["[1/2] adam/seed0: done (test acc 88.00%, 0s)",
                                                       "[2/2] adam/seed1: done (test acc 88.00%, 0s)"]


# -- lock and CLI --------------------------------------------------------------------------------

def test_second_review_of_an_experiment_is_refused(tmp_path, capsys, names):
    exp = tmp_path / "blog"
    exp.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, sys, time
            fd = os.open({str(exp / '.lock')!r}, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, f"{{os.getpid()}}\\n".encode())
            print("locked", flush=True); time.sleep(60)""")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = rv.main(["--logdir", str(tmp_path), "--seeds", "0", "--opts", "sgd", "--in-process"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert f"PID {holder.pid}" in err and "locked by another review" in err
        # a shard is refused too; shards do not exclude each other once the full review is gone
    finally:
        holder.kill()
        holder.wait()
    one = rv.ExperimentLock(exp, (1, 2)).acquire()
    two = rv.ExperimentLock(exp, (2, 2)).acquire()
    with pytest.raises(UserError, match="shard 1/2 of experiment 'blog' is already running"):
        rv.ExperimentLock(exp, (1, 2)).acquire()
    with pytest.raises(UserError, match=f"PID {os.getpid()}"):
        rv.ExperimentLock(exp, None).acquire()
    one.release(), two.release()
    rv.ExperimentLock(exp, None).acquire().release()


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--seeds", "4-1"], "range '4-1' is empty"),
    (["--opts", "adamm"], "did you mean 'adam'"),
    (["--shard", "0/3"], "1-based"),
    (["--config", "nope.yaml"], "does not exist"),
    (["--workers", "two"], "invalid int value: 'two'"),
])
def test_cli_usage_errors_exit_2_with_one_line(argv, message, tmp_path, capsys, names):
    try:
        code = rv.main([*argv, "--logdir", str(tmp_path)])
    except SystemExit as exc:  # argparse's own errors exit from inside parse_args
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_cli_exit_status_0_and_1(tmp_path, monkeypatch, capsys, names):
    monkeypatch.setattr(review_worker, "resolve_run_fn", lambda run_fn: fake_run)
    argv = ["--logdir", str(tmp_path), "--seeds", "0-1", "--opts", "sgd,adam", "--epochs", "3", "--in-process", "--no-report"]
    write_plan(tmp_path, {"adam/seed1": "diverge"})
    assert rv.main(argv) == 0  # divergence is a result
    write_plan(tmp_path, {"sgd/seed0": "raise"})
    assert rv.main([*argv, "--restart"]) == 1
    assert "3 done, 0 diverged, 1 failed" in capsys.readouterr().err


def test_report_is_written_unless_disabled_or_sharded(tmp_path, monkeypatch):
    seen = []
    fake_report = type(sys)("torchopt_review.report")
    fake_report.write_report = lambda exp_dir, config=None: seen.append((exp_dir, config)) or Path(exp_dir) / "report.md"
    monkeypatch.setitem(sys.modules, "torchopt_review.report", fake_report)
    cfg = small(tmp_path)
    assert go(cfg, report=True).report == tmp_path / "t" / "report.md"
    assert seen[0][1]["seeds"] == [0, 1] and set(seen[0][1]["runs"]) == {"sgd", "adam", "nadam"}
    go(cfg, report=True, shard="1/2")
    go(cfg, report=False)
    assert len(seen) == 1

    def broken(exp_dir, config=None):
        raise RuntimeError("no plots today")

    fake_report.write_report = broken
    res = go(cfg, report=True)
    assert res.exit_status == 1 and "no plots today" in res.report_error


# -- end to end ----------------------------------------------------------------------------------

def test_cli_end_to_end_with_real_training(tmp_path, synthetic_data_dir, names):
    """`python -m torchopt_review.review` with two real worker processes on synthetic IDX data."""
    try:
        import lightning_module  # noqa: F401
        from torchopt_review import train  # noqa: F401
    except Exception as exc:  # pragma: no cover
        pytest.skip(f"the training path does not import yet: {exc}")
    conf = tmp_path / "tiny.yaml"
    conf.write_text(textwrap.dedent("""
        experiment: e2e
        seeds: [0]
        overrides: {data: {val_size: 200}, trainer: {epochs: 2, diagnostics: false}}
        runs: {sgd: {}, adam: {}}
    """))
    cmd = [sys.executable, "-m", "torchopt_review.review", "--config", str(conf), "--logdir", str(tmp_path / "runs"),
           "--data-dir", str(synthetic_data_dir), "--limit-batches", "3", "--workers", "2", "--no-report"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for opt in ("sgd", "adam"):
        rec = json.loads((tmp_path / "runs" / "e2e" / opt / "seed0" / "run.json").read_text())
        assert rec["status"] == "done" and rec["epochs_completed"] == 2
        assert (tmp_path / "runs" / "e2e" / opt / "seed0" / "metrics.csv").exists()
    assert "2 done, 0 diverged, 0 failed" in proc.stderr
    # train.run's run.json satisfies the review's skip rule: nothing runs again
    cli = {"data": {"data_dir": str(synthetic_data_dir)}, "trainer": {"limit_batches": 3}}
    again = rv.review(rv.load_review(conf, logdir=str(tmp_path / "runs"), cli_overrides=cli),
                      run_fn=_must_not_run, workers=1, in_process=True, report=False, stream=None)
    assert [(o.key, o.status, o.skipped) for o in again.outcomes] == [("sgd/seed0", "done", True), ("adam/seed0", "done", True)]


def _must_not_run(cfg, **kw):
    raise AssertionError(f"{cfg.run_dir} was finished and should have been skipped")


# -- hostile inputs and signals ------------------------------------------------------------------

TINY = """\
experiment: {experiment}
seeds: [0]
overrides: {{data: {{val_size: 200}}, trainer: {{epochs: {epochs}, diagnostics: false}}}}
runs: {{sgd: {{}}, adam: {{}}}}
"""


class _Deadline(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the block takes longer than ``seconds``."""
    def expired(signum, frame):
        raise _Deadline(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_seed_range_and_count_are_checked_at_once(tmp_path, capsys, names):
    with deadline(20):  # a quadratic duplicate check over 10**8 seeds never ends
        code = rv.main(["--seeds", "0-100000000", "--logdir", str(tmp_path)])
    assert code == 2 and "100000001 seeds; a review takes at most 1000" in one_error_line(capsys)
    assert rv.main(["--seeds", "4294967296", "--logdir", str(tmp_path)]) == 2
    assert "seed 4294967296 is out of range" in one_error_line(capsys)
    assert rv.main(["--seeds", "1" * 5000, "--logdir", str(tmp_path)]) == 2  # int() would refuse 4300+ digits
    assert "out of range" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []  # refused before anything is written
    assert rv.parse_seeds("0,4294967295") == [0, 2**32 - 1]
    with deadline(20):
        assert rv.parse_seeds(list(range(1000))) == list(range(1000))
    for bad in ([2**32], list(range(1001))):
        with pytest.raises(ConfigError):
            rv.ReviewConfig.from_mapping({"seeds": bad})


@pytest.mark.parametrize("value, message", [
    ([1, 2], "experiment must be a folder name (a string), got list: [1, 2]"),
    (2024, 'got int: 2024 (quote it: "2024")'),
    (None, "got nothing"),
    ("x" * 256, "is too long: a folder name takes at most 255 bytes"),
    ("é" * 128, "at most 255 bytes (UTF-8), this one 256"),
    ("a\nb", "must be a plain folder name"),
    ("a\x00b", "must be a plain folder name"),
    ("..", "must be a plain folder name"),
])
def test_experiment_names_that_are_not_folder_names_are_refused(value, message, names):
    with pytest.raises(ConfigError) as err:
        rv.ReviewConfig.from_mapping({"experiment": value, "runs": ["adam"]})
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1
    assert rv.ReviewConfig.from_mapping({"experiment": "é" * 127, "runs": ["adam"]}).experiment == "é" * 127


def test_review_yaml_with_a_list_as_experiment_is_one_error_line(tmp_path, capsys, names):
    conf = tmp_path / "r.yaml"
    conf.write_text(TINY.format(experiment="[1, 2]", epochs=1))
    logdir = tmp_path / "runs"
    assert rv.main(["--config", str(conf), "--logdir", str(logdir), "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "r.yaml: experiment must be a folder name (a string), got list: [1, 2]" in one_error_line(capsys)
    assert not logdir.exists()
    assert rv.main(["--experiment", "y" * 300, "--logdir", str(logdir)]) == 2
    assert "is too long" in one_error_line(capsys)
    with pytest.raises(ConfigError, match="runs label must be a folder name"):
        rv.ReviewConfig.from_mapping({"runs": {1: {"optim": {"name": "adam"}}}})


def test_an_unwritable_lock_is_not_reported_as_another_review(tmp_path, capsys, synthetic_data_dir, names):
    (tmp_path / "lk" / ".lock").mkdir(parents=True)  # open(O_RDWR) fails: EISDIR
    argv = ["--logdir", str(tmp_path), "--experiment", "lk", "--opts", "sgd", "--seeds", "0",
            "--data-dir", str(synthetic_data_dir)]
    assert rv.main(argv) == 2
    err = one_error_line(capsys)
    assert "cannot write" in err and ".lock" in err and "locked by another review" not in err


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torchopt_review.review", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_review_json_on_a_full_disk_is_one_error_line_and_no_temporary(tmp_path, synthetic_data_dir, names):
    import resource

    conf = tmp_path / "r.yaml"
    conf.write_text(TINY.format(experiment="full", epochs=1))
    logdir = tmp_path / "runs"
    # a file-size limit (RLIMIT_FSIZE) is what a full disk looks like to write(): EFBIG after 512 bytes;
    # Python ignores SIGXFSZ, so the write fails instead of killing the process
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))  # noqa: E731
    proc = _cli("--config", str(conf), "--logdir", str(logdir), "--data-dir", str(synthetic_data_dir),
                "--in-process", "--no-report", preexec_fn=limit)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: cannot write {logdir / 'full' / 'review.json'}: File too large")
    assert "free some space" in lines[0]
    assert sorted(p.name for p in (logdir / "full").iterdir()) == [".lock"]  # no .review.json.*.tmp, no run


def test_sigterm_stops_an_in_process_review_at_once_and_it_resumes(tmp_path, synthetic_data_dir, names):
    """SIGTERM while a run trains in the review's own process: exit 143 promptly with one line,
    the next run never starts, and the same command resumes the interrupted run."""
    conf = tmp_path / "r.yaml"
    conf.write_text(TINY.format(experiment="sig", epochs=500))
    logdir = tmp_path / "runs"
    args = ["--config", str(conf), "--logdir", str(logdir), "--data-dir", str(synthetic_data_dir),
            "--limit-batches", "2", "--in-process", "--no-report"]
    proc = _cli(*args)
    sgd = logdir / "sig" / "sgd" / "seed0"
    try:
        with deadline(240):
            while not (sgd / "last.ckpt").exists():  # an epoch of sgd is checkpointed
                assert proc.poll() is None, proc.communicate()[1]
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert time.monotonic() - t0 < 20, err  # it used to train on, then exit 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1] == "terminated (SIGTERM): finished epochs are checkpointed; run the same command to resume"
    assert not any("terminated" in line for line in lines[:-1]) and not any("failed" in line for line in lines)
    assert not (logdir / "sig" / "adam").exists()  # not started after the signal
    record = json.loads((sgd / "run.json").read_text())
    assert record["status"] != "done"
    # resume: the same review with as many epochs as the checkpoint holds, plus one. A fresh start
    # would empty the folder first; resuming keeps what is there. (The checkpoint, not metrics.csv:
    # the signal may land between the two writes; resuming rewrites the CSV from the checkpoint.)
    rows, _, _ = runs.checkpoint_rows(runs.verify_checkpoint(sgd / "last.ckpt"))
    done = len(rows)
    assert done >= 1
    (sgd / "kept-by-resume").write_text("")
    again = _cli(*args, "--epochs", str(done + 1))
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert (sgd / "kept-by-resume").exists()
    record = json.loads((sgd / "run.json").read_text())
    assert record["status"] == "done" and record["epochs_completed"] >= done + 1
