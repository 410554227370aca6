"""Training on a GPU (marked ``gpu``; skipped with its reason where CUDA is absent, as in CI).

- the graph-captured step equals the eager step over 50 steps (fp32 round-off);
- stacked runs (one CUDA graph per step) equal separate runs over the first 50 steps, run by run;
- a 1-epoch stacked mini-review (2 optimizers x 2 seeds) on the GPU writes the same files as the
  CPU path, with the same numbers to round-off.
The device-independent parts are tested on CPU in test_stacked.py and test_graphs.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from torchopt_review.config import load_config
from torchopt_review.graphs import GraphedStep
from torchopt_review.models import build_model
from torchopt_review.optim import create_optimizer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
              pytest.mark.filterwarnings("ignore:grad and param do not obey")]


def _batches(n, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(32, 784, generator=g).cuda(), torch.randint(0, 10, (32,), generator=g).cuda())
            for _ in range(n)]


@pytest.mark.parametrize(("name", "semantics"), [("adam", "keras"), ("nadam", "keras"), ("momentum", "keras"),
                                                 ("rmsprop", "torch"), ("adagrad", "keras"), ("adamax", "keras")])
def test_captured_step_equals_eager_over_50_steps(name, semantics):
    batches = _batches(50)
    results = []
    for capture in (True, False):
        torch.manual_seed(0)
        m = build_model("blog_mlp").cuda()
        opt = create_optimizer(name, m.parameters(), semantics=semantics)
        params = list(m.parameters())
        x0, y0 = batches[0]
        loss = F.cross_entropy(m(x0), y0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses = [loss.detach()]
        sx, sy = x0.clone(), y0.clone()

        def body(m=m, opt=opt, params=params, sx=sx, sy=sy):
            out = F.cross_entropy(m(sx), sy)
            torch._foreach_zero_([p.grad for p in params])
            out.backward()
            opt.graph_apply()
            return (out.detach(),)

        step = GraphedStep(body, [opt], params, capture=capture)
        assert (step.graph is None) and step.capture == capture
        for x, y in batches[1:]:
            sx.copy_(x)
            sy.copy_(y)
            losses.append(step()[0])
        if capture:
            assert step.graph is not None
        results.append((torch.stack(losses).cpu(), [p.detach().cpu() for p in params]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def _cfgs(data_dir, logdir, accelerator, epochs=1, limit=50):
    return [load_config(o, [], {"seed": s, "logdir": str(logdir), "experiment": "e",
                                "data": {"data_dir": str(data_dir), "val_size": 200},
                                "trainer": {"epochs": epochs, "limit_batches": limit, "steps_per_batch": 8,
                                            "accelerator": accelerator, "diagnostics_every_n_steps": 16}})
            for o in ("adam", "nadam") for s in (0, 1)]


def _rows(path: Path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_stacked_on_gpu_equals_separate_runs_over_50_steps(synthetic_data_dir, tmp_path):
    """50 optimizer steps: the stack on the GPU (CUDA graph) against each run alone on the GPU."""
    from torchopt_review import train
    from torchopt_review.stacked import train_stacked

    res = train_stacked(_cfgs(synthetic_data_dir, tmp_path / "stk", "gpu"))
    for c in _cfgs(synthetic_data_dir, tmp_path / "sep", "gpu"):
        sep = train.run(c, progress=False, summary=False)
        stk = res[f"{c.run_label}/seed{c.seed}"][1]
        assert stk["device"] == "cuda" and stk["engine"] == "stacked"
        a = _rows(tmp_path / "stk" / "e" / c.run_label / f"seed{c.seed}" / "metrics.csv")[-1]
        b = _rows(c.run_dir / "metrics.csv")[-1]
        assert int(a["step"]) == int(b["step"]) == 50
        for k in ("train_loss", "val_loss", "val_acc"):
            assert float(a[k]) == pytest.approx(float(b[k]), rel=2e-3, abs=1e-5), k
        assert stk["test"]["acc"] == pytest.approx(sep["test"]["acc"], abs=0.01)


def test_stacked_mini_review_on_gpu_writes_what_the_cpu_writes(synthetic_data_dir, tmp_path):
    from torchopt_review.review import review

    outs = {}
    for acc in ("gpu", "cpu"):
        cfg = {"experiment": "mini", "seeds": [0, 1], "runs": ["adam", "nadam"], "logdir": str(tmp_path / acc),
               "overrides": {"data": {"data_dir": str(synthetic_data_dir), "val_size": 200},
                             "trainer": {"epochs": 1, "accelerator": acc}}}
        outs[acc] = review(cfg, stream=None, engine="auto")
        assert outs[acc].exit_status == 0
    for label in ("adam", "nadam"):
        for seed in (0, 1):
            g = tmp_path / "gpu" / "mini" / label / f"seed{seed}"
            c = tmp_path / "cpu" / "mini" / label / f"seed{seed}"
            strip = lambda d: sorted(p.name if not p.name.startswith("events") else "events" for p in d.iterdir())  # noqa: E731
            assert strip(g) == strip(c)
            jg, jc = json.loads((g / "run.json").read_text()), json.loads((c / "run.json").read_text())
            assert jg["engine"] == "stacked" and jc["engine"] == "single" and set(jg) == set(jc)
            rg, rc = _rows(g / "metrics.csv"), _rows(c / "metrics.csv")
            assert list(rg[0]) == list(rc[0])
            assert float(rg[-1]["val_loss"]) == pytest.approx(float(rc[-1]["val_loss"]), rel=1e-2)
    assert (tmp_path / "gpu" / "mini" / "report.md").exists()
