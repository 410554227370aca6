"""The optimizer library: drop-in ``torch.optim`` optimizers with fused flat-bucket steps
and an optional Keras 3 semantics (``semantics="keras"``).

Public API: the six classes, the registry helpers, the base class :class:`FlatOptimizer` (its
``graph_*`` methods split a step into a host half and a capturable device half),
:func:`device_scalars` (host scalars to a device tensor without a sync) and :func:`load_kernels`
(the C kernels, or None where no compiler works); everything else is private.
"""

from ._base import FlatOptimizer
from ._cext import load_kernels
from .registry import (REGISTRY, SGD, Adagrad, Adam, Adamax, NAdam, RMSprop, create_optimizer,
                       get_spec, optimizer_names)
from .scalars import device_scalars

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "NAdam", "Adamax", "create_optimizer",
           "optimizer_names", "get_spec", "REGISTRY", "FlatOptimizer", "device_scalars",
           "load_kernels"]
