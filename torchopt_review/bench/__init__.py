"""``python -m torchopt_review.bench optim|epoch|review``: how fast the library and the training path are.

Three benchmarks, each printing plain-text tables (``--json FILE`` also saves the numbers):

- ``optim`` (:mod:`.optim`): one optimizer step, per registry entry, ours against every
  torch.optim path and against the bandwidth floor, at each ``--threads`` count; the first-step
  latency in a fresh process (:mod:`.first_step`), the state memory and what a step allocates
  (:mod:`.memory`).
- ``epoch`` (:mod:`.epoch`): one training epoch of the blog MLP: plain loops, the project's real
  training path, Lightning's default loop and Keras 3 (:mod:`.keras`); then a profile of the real
  path (:mod:`.profile`).
- ``review`` (:mod:`.review`): a small review with each engine, extrapolated to the blog's.

How it measures (:mod:`.timing`; the machine may be shared, so absolute times drift between runs):

- every contender is measured in *rounds*, interleaved (A B C A B C ...), the order rotating
  each round; the result is the median over rounds of each round's median (``optim``) or time;
- a ratio is only ever computed between numbers measured side by side in the same run;
- ``optim`` runs with ``torch.set_num_threads(n)`` for each ``--threads`` n (default 1); it
  times ``step()`` alone on gradients that were set once (no backward).

``--quick`` runs a much shorter version (small sizes, few rounds) for smoke tests.
``--accelerator gpu`` measures on CUDA (synchronising around every timing); without a visible
CUDA device it stops with a one-line message (exit status 2), as every argument error does.
"""

from .cli import build_parser, main
from .contenders import BYTES_PER_PARAM

__all__ = ["main", "build_parser", "BYTES_PER_PARAM"]
