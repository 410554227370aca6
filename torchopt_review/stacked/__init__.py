"""Stacked runs: many (optimizer, seed) runs of one MLP trained together as one batched model.

A review's runs differ only in their seed (init, data order) and optimizer, so all of them can
be one model whose every weight has a leading *run* dimension::

    theta  [R, P]   every run's parameters, run-major (row r is run r's model, flattened
                    in ``named_parameters`` order); each layer's weight is a strided view
                    W_l = theta[:, off_l : off_l + out*in].view(R, out, in)
    G      [R, P]   their gradients, laid out the same way (preset as each view's .grad)

Forward is one ``baddbmm`` chain over all runs; the loss is the sum of the runs' mean losses,
so one backward gives every run exactly the gradient of its own loss. Runs are ordered by
optimizer, so the runs of one optimizer are one contiguous block ``theta[a:b]`` and are updated by
*one* fused kernel call of that optimizer over the flat block (all six optimizers are elementwise,
so this equals updating each run separately). Each run keeps its own init (built exactly as a
separate run builds it), its own data order (``epoch_permutation(seed, epoch)``), its own
optimizer state, its own divergence detection and its own gradient clipping.

On a GPU the whole step (gather of the batch, forward, backward, every optimizer's update) is
captured once in a CUDA graph and replayed; the host only computes the optimizers' per-step
scalars (see ``FlatOptimizer.graph_coefficients``) and copies them in with the batch indices.

:func:`train_stacked` writes every run's folder exactly as ``train.run`` does (run.json,
metrics.csv, diagnostics.csv, TensorBoard events with the same tags, a checkpoint), so the report
and TensorBoard cannot tell stacked runs from separate ones. On 2 CPU cores stacking is not
faster than one process per core (``python -m torchopt_review.bench review`` measures both),
so the review uses it by default only on a GPU.
"""

from .model import OptimSpec, SliceOptimizers, StackedMLP, is_stackable, stack_key
from .record import train_stacked
from .trainer import StackedTrainer

__all__ = ["StackedMLP", "OptimSpec", "SliceOptimizers", "StackedTrainer", "stack_key", "is_stackable",
           "train_stacked"]
