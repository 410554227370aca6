"""torchopt_review: compare neural-network optimizers honestly and fast.

- :mod:`torchopt_review.optim`: drop-in ``torch.optim`` optimizers (SGD, Adagrad, RMSprop, Adam,
  NAdam, Adamax) with fused per-parameter-group updates and ``semantics="keras"``.
- ``python -m torchopt_review.train``: one (optimizer, seed) run, curves to TensorBoard.
- ``python -m torchopt_review.review``: every optimizer x seeds, then a statistical report.
"""

__version__ = "0.1.0"
