"""The optimizer library: drop-in ``torch.optim`` optimizers with fused flat-bucket steps
and an optional Keras 3 semantics (``semantics="keras"``).

Public API: the six classes and the registry helpers below; everything else is private.
"""

from .registry import (REGISTRY, SGD, Adagrad, Adam, Adamax, NAdam, RMSprop, create_optimizer,
                       get_spec, optimizer_names)

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "NAdam", "Adamax", "create_optimizer",
           "optimizer_names", "get_spec", "REGISTRY"]
