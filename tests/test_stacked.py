"""The stacked engine (torchopt_review/stacked.py) on CPU: stacking, per-slice optimizer updates,
splitting state and outputs per run. References are separate runs: the model built and trained
alone, as ``train.run`` trains it (and ``torch.optim`` for the torch-semantics cases)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from torchopt_review import review as rv
from torchopt_review.config import load_config
from torchopt_review.data import epoch_permutation, load_fashion_mnist, split_indices
from torchopt_review.models import build_model
from torchopt_review.optim import create_optimizer
from torchopt_review.stacked import (OptimSpec, SliceOptimizers, StackedMLP, StackedTrainer, is_stackable,
                                     stack_key, train_stacked)
from torchopt_review.stacked.trainer import StackedRun

pytestmark = pytest.mark.filterwarnings("ignore:grad and param do not obey")  # G views, on purpose

# (registry name, semantics): every optimizer, both semantics, in one stack
SPECS = [(n, s) for n in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "nadam", "adamax")
         for s in ("keras", "torch")]


def test_init_equals_separate_models():
    m = StackedMLP("blog_mlp", [3, 0, 7])
    for r, seed in enumerate([3, 0, 7]):
        torch.manual_seed(seed)
        ref = build_model("blog_mlp")
        for (name, p), v in zip(ref.named_parameters(), m.run_view(r).values()):
            assert torch.equal(p.detach(), v), name  # bit-identical: same RNG draws


def test_forward_equals_separate_models():
    m = StackedMLP("geron_mlp", [0, 1])
    x = torch.rand(2, 5, 784)
    out = m(x)
    for r, seed in enumerate([0, 1]):
        torch.manual_seed(seed)
        ref = build_model("geron_mlp")
        torch.testing.assert_close(out[r], ref(x[r]), rtol=1e-5, atol=1e-6)


def test_cnn_is_not_stackable():
    assert is_stackable("blog_mlp") and is_stackable("geron_mlp")
    assert not is_stackable("cnn")
    cfg = load_config("adam", [], {"model": {"name": "cnn"}})
    assert stack_key(cfg) is None


def _separate_losses(name, semantics, seed, batches, *, use_torch_optim=False, clip=None):
    torch.manual_seed(seed)
    model = build_model("blog_mlp")
    if use_torch_optim:
        cls = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[name]
        kw = {"adam": dict(eps=1e-7), "rmsprop": dict(alpha=0.99, eps=1e-7),  # the registry's blog values
              "adagrad": dict(initial_accumulator_value=0.1, eps=1e-7)}
        opt = cls(model.parameters(), lr=1e-3, **kw.get(name, {}))
    else:
        opt = create_optimizer(name, model.parameters(), semantics=semantics)
    losses = []
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(list(model.parameters()), clip)
        opt.step()
        losses.append(float(loss.detach()))
    return losses, model, opt


def _stacked(specs, seeds, steps, *, clip=None):
    model = StackedMLP("blog_mlp", seeds)
    opts = SliceOptimizers(model, [OptimSpec(n, s, 1e-3, _blog_kwargs(n, s)) for n, s in specs])
    g = torch.Generator().manual_seed(5)
    xs = torch.rand(steps, 32, 784, generator=g)
    ys = torch.randint(0, 10, (steps, 32), generator=g)
    losses = []
    clip_t = torch.tensor([clip or math.inf] * len(seeds))
    for k in range(steps):
        x = xs[k].expand(len(seeds), 32, 784)
        loss = F.cross_entropy(model(x).reshape(-1, 10), ys[k].repeat(len(seeds)), reduction="none").view(len(seeds), 32).mean(1)
        model.zero_grad_()
        loss.sum().backward()
        if clip is not None:
            norms = model.grad.norm(dim=1)
            model.grad.mul_((clip_t / (norms + 1e-6)).clamp(max=1.0)[:, None])
        opts.step()
        losses.append(loss.detach().clone())
    return torch.stack(losses), model, opts, list(zip(xs, ys))


def _blog_kwargs(name, semantics):
    from torchopt_review.optim.registry import get_spec

    kw = get_spec(name).kwargs(semantics=semantics)
    kw.pop("semantics")
    kw.pop("lr", None)
    return kw


@pytest.fixture
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_stacked_equals_separate_runs_over_50_steps(float64_default):
    """Every optimizer x semantics in one stack (16 runs, 50 steps): each run's loss curve and final
    weights equal the same run trained alone. In float64, so that what is compared is the
    arithmetic, not round-off: in float32, bmm and addmm round differently and Keras RMSprop on
    random labels amplifies 1e-7 into 1e-2 within 30 steps (measured); float64 agrees to 1e-15."""
    seeds = list(range(len(SPECS)))
    losses, model, _, batches = _stacked(SPECS, seeds, 50)
    assert model.theta.dtype == torch.float64
    for r, ((name, sem), seed) in enumerate(zip(SPECS, seeds)):
        ref, ref_model, _ = _separate_losses(name, sem, seed, batches)
        torch.testing.assert_close(losses[:, r], torch.tensor(ref, dtype=torch.float64), rtol=1e-10, atol=1e-12,
                                   msg=lambda m, r=r: f"{SPECS[r]}: {m}")
        for (pname, p), v in zip(ref_model.named_parameters(), model.run_view(r).values()):
            torch.testing.assert_close(v, p.detach(), rtol=1e-9, atol=1e-12, msg=lambda m, r=r, n=pname: f"{SPECS[r]} {n}: {m}")


def test_stacked_equals_separate_runs_float32():
    """The engine's real dtype: Adam and NAdam (not chaotic at these steps) to fp32 round-off."""
    specs = [("adam", "keras"), ("nadam", "keras"), ("adam", "torch")]
    losses, model, _, batches = _stacked(specs, [0, 1, 2], 50)
    for r, (name, sem) in enumerate(specs):
        ref, _, _ = _separate_losses(name, sem, r, batches)
        torch.testing.assert_close(losses[:, r].double(), torch.tensor(ref, dtype=torch.float64), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad"])
def test_stacked_torch_semantics_matches_torch_optim(name, float64_default):
    losses, model, _, batches = _stacked([(name, "torch")] * 2, [0, 1], 30)
    for r, seed in enumerate([0, 1]):
        ref, ref_model, _ = _separate_losses(name, "torch", seed, batches, use_torch_optim=True)
        torch.testing.assert_close(losses[:, r], torch.tensor(ref, dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_per_run_gradient_clipping_equals_clip_grad_norm(float64_default):
    losses, model, _, batches = _stacked([("adam", "keras")] * 2, [0, 1], 20, clip=0.05)
    for r in range(2):
        ref, ref_model, _ = _separate_losses("adam", "keras", r, batches, clip=0.05)
        torch.testing.assert_close(losses[:, r], torch.tensor(ref, dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_run_state_dict_continues_as_a_separate_run():
    """A run's model and optimizer state, split out of the stack, load into a separate model and
    optimizer (torch's layout), and training on from there gives what the stack gives."""
    specs = [("nadam", "keras"), ("nadam", "keras"), ("momentum", "torch")]
    _, model, opts, _ = _stacked(specs, [0, 1, 2], 10)
    for r, (name, sem) in enumerate(specs):
        sep = build_model("blog_mlp")
        sep.load_state_dict({k.removeprefix("model."): v for k, v in model.run_state_dict(r).items()})
        opt = create_optimizer(name, sep.parameters(), semantics=sem)
        opt.load_state_dict(opts.run_state_dict(r))
        assert set(opt.state_dict()["state"]) == set(range(12))
        g = torch.Generator().manual_seed(9)
        grads = [torch.randn(p.shape, generator=g) * 1e-2 for p in sep.parameters()]
        for p, gr in zip(sep.parameters(), grads):
            p.grad = gr.clone()
        opt.step()
        # the same gradient through the stack's block optimizer
        model.grad.zero_()
        off = 0
        for gr in grads:
            model.grad[r, off:off + gr.numel()] = gr.flatten()
            off += gr.numel()
        opts.step()
        for (n, p), v in zip(sep.named_parameters(), model.run_view(r).values()):
            torch.testing.assert_close(v, p.detach(), rtol=1e-6, atol=1e-7, msg=lambda m, n=n: f"run {r} {n}: {m}")


def test_load_run_state_dicts_round_trip():
    specs = [("adam", "keras")] * 2 + [("adagrad", "keras")]
    _, model, opts, _ = _stacked(specs, [0, 1, 2], 5)
    saved = [opts.run_state_dict(r) for r in range(3)]
    fresh_model = StackedMLP("blog_mlp", [0, 1, 2])
    fresh = SliceOptimizers(fresh_model, [OptimSpec(n, s, 1e-3, _blog_kwargs(n, s)) for n, s in specs])
    fresh.load_run_state_dicts(saved)
    for r in range(3):
        a, b = fresh.run_state_dict(r), saved[r]
        assert a["global_state"] == b["global_state"]
        for i in b["state"]:
            for k, v in b["state"][i].items():
                assert torch.equal(torch.as_tensor(a["state"][i][k]), torch.as_tensor(v)), (r, i, k)


def test_runs_of_one_optimizer_must_be_contiguous():
    model = StackedMLP("geron_mlp", [0, 1, 2])
    specs = [OptimSpec("adam", "keras", 1e-3), OptimSpec("sgd", "keras", 1e-3), OptimSpec("adam", "keras", 1e-3)]
    with pytest.raises(ValueError, match="contiguous"):
        SliceOptimizers(model, specs)


def test_one_kernel_call_per_optimizer_block():
    specs = [("adam", "keras")] * 3 + [("sgd", "keras")] * 2
    _, model, opts, _ = _stacked(specs, list(range(5)), 2)
    assert opts.blocks == [(0, 3), (3, 5)]
    assert [len(o.param_groups[0]["params"]) for o in opts.optimizers] == [1, 1]
    q = opts.optimizers[0].param_groups[0]["params"][0]
    assert q.data_ptr() == model.theta.data_ptr() and q.numel() == 3 * model.P  # the block itself, no copy


# -- the training loop's data order and outputs --------------------------------------------------

def _cfgs(data_dir, logdir, opts=("adam", "sgd"), seeds=(0, 1), epochs=2, **trainer):
    tr = {"epochs": epochs, "limit_batches": 6, "steps_per_batch": 4, "diagnostics_every_n_steps": 4, **trainer}
    return [load_config(o, [], {"seed": s, "logdir": str(logdir), "experiment": "e",
                                "data": {"data_dir": str(data_dir), "val_size": 200}, "trainer": tr})
            for o in opts for s in seeds]


@pytest.mark.parametrize("shuffle, order_of", [("every_epoch", 1), ("once", 0)])
def test_data_order_is_each_runs_own(shuffle, order_of, synthetic_data_dir, tmp_path):
    """Epoch 1 (0-based) of each run: its own seed's order of that epoch, or of epoch 0 when the
    data is shuffled once (as seeded Keras 3 does)."""
    cfgs = _cfgs(synthetic_data_dir, tmp_path, opts=("adam",), seeds=(0, 3))
    for c in cfgs:
        c.data.shuffle = shuffle
    ds = load_fashion_mnist(synthetic_data_dir)
    tr = StackedTrainer([StackedRun(c, r) for r, c in enumerate(cfgs)], ds, "cpu")
    seen = []
    tr.train_step = lambda idx: (seen.append(idx.clone()), (torch.zeros(2), torch.zeros(2)))[1]
    tr.train_epoch(1, None)
    for r, seed in enumerate((0, 3)):
        train_idx, _ = split_indices(1200, "keras", 200, seed)
        expect = train_idx[epoch_permutation(1000, seed, order_of)][:6 * 32]
        assert torch.equal(torch.cat([s[r] for s in seen]), expect)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _tags(run_dir: Path) -> dict[str, set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return {k: set(v) for k, v in acc.Tags().items() if isinstance(v, list)}


def test_stacked_review_writes_what_separate_runs_write(synthetic_data_dir, tmp_path):
    """Same files, CSV columns and rows (to fp32 round-off), run.json keys, TensorBoard tags."""
    stk = _cfgs(synthetic_data_dir, tmp_path / "stk")
    res = train_stacked(stk)
    assert {k: v[0] for k, v in res.items()} == {f"{c.run_label}/seed{c.seed}": "ok" for c in stk}
    from torchopt_review import train

    for c in _cfgs(synthetic_data_dir, tmp_path / "sep"):
        train.run(c, progress=False, summary=False)
    for c in stk:
        a = c.run_dir
        b = tmp_path / "sep" / "e" / c.run_label / f"seed{c.seed}"
        names = lambda d: sorted(p.name if not p.name.startswith("events") else "events" for p in d.iterdir())  # noqa: E731
        assert names(a) == names(b)
        for csv_name in ("metrics.csv", "diagnostics.csv"):
            ra, rb = _rows(a / csv_name), _rows(b / csv_name)
            assert len(ra) == len(rb) and list(ra[0]) == list(rb[0])
            for x, y in zip(ra, rb):
                for k in x:
                    if k in ("wall_s",):
                        continue
                    if k == "param":
                        assert x[k] == y[k]
                    else:
                        assert float(x[k]) == pytest.approx(float(y[k]), rel=2e-3, abs=1e-6), (csv_name, k, x, y)
        ja, jb = json.loads((a / "run.json").read_text()), json.loads((b / "run.json").read_text())
        assert set(ja) == set(jb) and ja["engine"] == "stacked" and jb["engine"] == "single"
        assert ja["status"] == jb["status"] == "done"
        assert ja["test"]["acc"] == pytest.approx(jb["test"]["acc"], abs=1e-9)
        assert ja["fingerprint"] == jb["fingerprint"]
        assert _tags(a) == _tags(b)


def test_stacked_resume_equals_uninterrupted(synthetic_data_dir, tmp_path):
    once = _cfgs(synthetic_data_dir, tmp_path / "once", epochs=3)
    train_stacked(once)
    twice1 = _cfgs(synthetic_data_dir, tmp_path / "twice", epochs=2)
    train_stacked(twice1)
    twice = _cfgs(synthetic_data_dir, tmp_path / "twice", epochs=3)
    train_stacked(twice)
    for a, b in zip(once, twice):
        ra, rb = _rows(a.run_dir / "metrics.csv"), _rows(b.run_dir / "metrics.csv")
        assert [{k: v for k, v in r.items() if k != "wall_s"} for r in ra] == \
               [{k: v for k, v in r.items() if k != "wall_s"} for r in rb]
        ja, jb = json.loads((a.run_dir / "run.json").read_text()), json.loads((b.run_dir / "run.json").read_text())
        assert ja["test"] == jb["test"]


def test_one_diverging_run_does_not_stop_the_others(synthetic_data_dir, tmp_path):
    cfgs = _cfgs(synthetic_data_dir, tmp_path, opts=("sgd",), seeds=(0,))
    bad = load_config("sgd", [], {"seed": 1, "logdir": str(tmp_path), "experiment": "e", "label": "sgd-huge",
                                  "optim": {"lr": 1e12},
                                  "data": {"data_dir": str(synthetic_data_dir), "val_size": 200},
                                  "trainer": {"epochs": 2, "limit_batches": 6, "steps_per_batch": 4,
                                              "diagnostics_every_n_steps": 4}})
    res = train_stacked(cfgs + [bad])
    assert res["sgd-huge/seed1"][1]["status"] == "diverged"
    assert res["sgd-huge/seed1"][1]["diverged"]["epoch"] == 1
    good = res["sgd/seed0"][1]
    assert good["status"] == "done" and good["epochs_completed"] == 2 and math.isfinite(good["test"]["loss"])


def test_single_run_refuses_a_stacked_checkpoint(synthetic_data_dir, tmp_path):
    from torchopt_review import train
    from torchopt_review.errors import UserError

    cfgs = _cfgs(synthetic_data_dir, tmp_path, opts=("adam",), seeds=(0,), epochs=1)
    train_stacked(cfgs)
    longer = _cfgs(synthetic_data_dir, tmp_path, opts=("adam",), seeds=(0,), epochs=2)[0]
    with pytest.raises(UserError, match="stacked"):
        train.run(longer, progress=False, summary=False)


def test_stacked_resumes_a_separate_runs_checkpoint(synthetic_data_dir, tmp_path):
    """A run started by train.run (Lightning checkpoint) is continued by the stacked engine."""
    from torchopt_review import train

    for c in _cfgs(synthetic_data_dir, tmp_path / "a", epochs=1):
        train.run(c, progress=False, summary=False)
    train_stacked(_cfgs(synthetic_data_dir, tmp_path / "a", epochs=2))
    train_stacked(_cfgs(synthetic_data_dir, tmp_path / "b", epochs=2))
    for c in _cfgs(synthetic_data_dir, tmp_path / "a", epochs=2):
        ra = _rows(c.run_dir / "metrics.csv")
        rb = _rows(tmp_path / "b" / "e" / c.run_label / f"seed{c.seed}" / "metrics.csv")
        assert len(ra) == 2
        assert float(ra[1]["val_loss"]) == pytest.approx(float(rb[1]["val_loss"]), rel=1e-4)


def test_review_engine_choice(synthetic_data_dir, tmp_path):
    cfgs = _cfgs(synthetic_data_dir, tmp_path)
    assert rv.resolve_engine("auto", cfgs, None) == "pool"  # CPU: the pool is faster (bench review)
    assert rv.resolve_engine("stacked", cfgs, None) == "stacked"
    with pytest.raises(rv.ConfigError, match="run_fn"):
        rv.resolve_engine("stacked", cfgs, lambda *a, **k: {})
    with pytest.raises(rv.ConfigError, match="engine"):
        rv.review({"experiment": "x", "seeds": [0], "runs": ["adam"], "logdir": str(tmp_path)}, engine="fast",
                  stream=None)


def test_review_cli_stacked_engine(synthetic_data_dir, tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    cfg = tmp_path / "mini.yaml"
    cfg.write_text("experiment: mini\nseeds: 0-1\noverrides:\n  data: {val_size: 200}\n"
                   "  trainer: {epochs: 1, limit_batches: 4, steps_per_batch: 2}\nruns: [adam, cnn-adam]\n"
                   "variants: {}\n".replace("cnn-adam", "adamax"))
    proc = subprocess.run([sys.executable, "-m", "torchopt_review.review", "--config", str(cfg), "--engine", "stacked",
                           "--data-dir", str(synthetic_data_dir), "--logdir", str(tmp_path / "runs"), "--no-report"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": str(repo)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stacked in one process" in proc.stderr
    for label in ("adam", "adamax"):
        for seed in (0, 1):
            rec = json.loads((tmp_path / "runs" / "mini" / label / f"seed{seed}" / "run.json").read_text())
            assert rec["status"] == "done" and rec["engine"] == "stacked"


def test_bf16_mixed_precision_is_used_and_recorded(synthetic_data_dir, tmp_path):
    cfgs = _cfgs(synthetic_data_dir, tmp_path, opts=("adam",), seeds=(0,), epochs=1, precision="bf16-mixed")
    fp32 = _cfgs(synthetic_data_dir, tmp_path / "fp32", opts=("adam",), seeds=(0,), epochs=1)
    a = train_stacked(cfgs)["adam/seed0"][1]
    b = train_stacked(fp32)["adam/seed0"][1]
    assert a["precision"] == "bf16-mixed" and b["precision"] == "32" and a["status"] == "done"
    # bf16 matmuls really ran: close to fp32, but not equal to it
    assert a["test"]["loss"] != b["test"]["loss"]
    assert a["test"]["loss"] == pytest.approx(b["test"]["loss"], rel=0.05)


def test_review_stacks_what_it_can_and_runs_the_rest_separately(synthetic_data_dir, tmp_path):
    cfg = {"experiment": "mix", "seeds": [0], "logdir": str(tmp_path),
           "runs": {"adam": {}, "cnn-adam": {"optim": {"name": "adam"}, "model": {"name": "cnn"}}},
           "overrides": {"data": {"data_dir": str(synthetic_data_dir), "val_size": 200},
                         "trainer": {"epochs": 1, "limit_batches": 3, "steps_per_batch": 2}}}
    res = rv.review(cfg, engine="stacked", in_process=True, report=False, stream=None)
    assert res.exit_status == 0 and [o.status for o in res.outcomes] == ["done", "done"]
    engines = {o.label: json.loads((o.run_dir / "run.json").read_text())["engine"] for o in res.outcomes}
    assert engines == {"adam": "stacked", "cnn-adam": "single"}
