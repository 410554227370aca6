"""The graph-step machinery (torchopt_review/graphs.py) on CPU: GraphedStep with capture=False
runs the very body a CUDA graph captures (static inputs, optimizer device half-steps, scalars
from a coefficient tensor), so everything but the capture is checked here against ordinary eager
steps. The capture itself is checked on a GPU in tests/test_gpu.py."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from torchopt_review.config import load_config
from torchopt_review.graphs import GraphedStep
from torchopt_review.models import build_model
from torchopt_review.optim import create_optimizer

pytestmark = pytest.mark.filterwarnings("ignore:grad and param do not obey")


def _batches(n, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(32, 784, generator=g), torch.randint(0, 10, (32,), generator=g)) for _ in range(n)]


@pytest.mark.parametrize(("name", "semantics"), [("adam", "keras"), ("nadam", "keras"), ("nesterov", "keras"),
                                                 ("rmsprop", "torch"), ("adagrad", "keras"), ("adamax", "torch")])
def test_graphed_body_equals_eager_steps(name, semantics):
    batches = _batches(50)

    def make():
        torch.manual_seed(0)
        m = build_model("geron_mlp")
        return m, create_optimizer(name, m.parameters(), semantics=semantics)

    ref, ref_opt = make()
    ref_losses = []
    for x, y in batches:
        loss = F.cross_entropy(ref(x), y)
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
        ref_losses.append(float(loss.detach()))

    m, opt = make()
    params = list(m.parameters())
    x0, y0 = batches[0]
    loss = F.cross_entropy(m(x0), y0)  # the first step is an ordinary one (it lays out the optimizer)
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses = [float(loss.detach())]
    sx, sy = x0.clone(), y0.clone()

    def body():
        out = F.cross_entropy(m(sx), sy)
        torch._foreach_zero_([p.grad for p in params])
        out.backward()
        opt.graph_apply()
        return (out.detach(),)

    step = GraphedStep(body, [opt], params, capture=False)
    for x, y in batches[1:]:
        sx.copy_(x)
        sy.copy_(y)
        losses.append(float(step()[0]))
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), rtol=1e-4, atol=1e-5)
    for a, b in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-3, atol=1e-5)


def test_coefficients_of_several_optimizers_land_in_their_own_slices():
    p1, p2 = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(4))
    o1 = create_optimizer("adam", [p1])
    o2 = create_optimizer("sgd", [p2], lr=0.05)
    for p in (p1, p2):
        p.grad = torch.full_like(p, 0.5)
    o1.step()
    o2.step()
    step = GraphedStep(lambda: (o1.graph_apply(), o2.graph_apply(), p1.detach())[2:], [o1, o2], [p1, p2], capture=False)
    step()
    h1 = o1.graph_buckets()[0][1].graph_h
    h2 = o2.graph_buckets()[0][1].graph_h
    assert h1.data_ptr() == step.h.data_ptr() and h2.data_ptr() == step.h[o1.graph_width():].data_ptr()
    # Keras Adam step 2: 1 - beta1, step size lr*sqrt(1-b2^2)/(1-b1^2); SGD: lr -- read by name
    s1, s2 = o1.graph_scalars(), o2.graph_scalars()
    assert float(s1.one_minus_beta1) == pytest.approx(0.1)
    assert float(s1.step_size) == pytest.approx(1e-3 * (1 - 0.999 ** 2) ** 0.5 / (1 - 0.9 ** 2))
    assert float(s2.lr) == pytest.approx(0.05)


def _rows(path: Path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_training_with_graph_steps_equals_eager(synthetic_data_dir, tmp_path):
    """train.run with trainer.graph_step=on (the GPU's graph body, eagerly on CPU) against off."""
    from torchopt_review import train

    out = {}
    for mode in ("off", "on"):
        cfg = load_config("nadam", [], {"logdir": str(tmp_path / mode), "data": {"data_dir": str(synthetic_data_dir),
                                                                                "val_size": 200},
                                        "trainer": {"epochs": 2, "limit_batches": 12, "steps_per_batch": 5,
                                                    "graph_step": mode, "gradient_clip_val": 1.0}})
        rec = train.run(cfg, progress=False, summary=False)
        out[mode] = (rec, _rows(cfg.run_dir / "metrics.csv"))
    assert out["on"][0]["status"] == out["off"][0]["status"] == "done"
    for a, b in zip(out["on"][1], out["off"][1]):
        for k in ("train_loss", "val_loss", "val_acc", "step"):
            assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-4, abs=1e-6), k


def test_stacked_graph_steps_equal_eager(synthetic_data_dir, tmp_path):
    from torchopt_review.stacked import train_stacked

    res = {}
    for mode in (False, True):
        cfgs = [load_config(o, [], {"seed": s, "logdir": str(tmp_path / str(mode)), "experiment": "e",
                                    "data": {"data_dir": str(synthetic_data_dir), "val_size": 200},
                                    "trainer": {"epochs": 2, "limit_batches": 10, "steps_per_batch": 4}})
                for o in ("adam", "momentum") for s in (0, 1)]
        res[mode] = train_stacked(cfgs, use_graph=mode)
    for key, (kind, rec) in res[True].items():
        ref = res[False][key][1]
        assert kind == "ok" and rec["status"] == ref["status"] == "done"
        assert rec["test"]["loss"] == pytest.approx(ref["test"]["loss"], rel=1e-4)


@pytest.mark.slow
def test_stacked_graph_steps_with_compiled_kernels(synthetic_data_dir, tmp_path, monkeypatch):
    """The GPU's configuration minus the capture: every optimizer's device kernel compiled by
    torch.compile (Inductor's CPU backend here), the stacked step through GraphedStep."""
    from torchopt_review.stacked import train_stacked

    from torchopt_review.optim import _device

    res = {}
    for compiled in ("0", "1"):
        # the torch-op kernels compiled on the CPU too (module attribute; CUDA is the default)
        monkeypatch.setattr(_device, "COMPILE_DEVICES", ("cuda", "cpu") if compiled == "1" else ("cuda",))
        cfgs = [load_config(o, [], {"seed": 0, "logdir": str(tmp_path / compiled), "experiment": "e",
                                    "data": {"data_dir": str(synthetic_data_dir), "val_size": 200},
                                    "trainer": {"epochs": 1, "limit_batches": 8, "steps_per_batch": 4}})
                for o in ("sgd", "nesterov", "adagrad", "rmsprop", "nadam", "adamax")]
        res[compiled] = train_stacked(cfgs, use_graph=True)
    for key, (kind, rec) in res["1"].items():
        assert kind == "ok" and rec["status"] == "done", key
        assert rec["test"]["loss"] == pytest.approx(res["0"][key][1]["test"]["loss"], rel=1e-4), key
