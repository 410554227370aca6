"""Doc fragments shared by the six optimizer classes, spliced into their docstrings."""

from __future__ import annotations

__all__ = ["fill_doc"]

DOC_PARAMS = r"""params (iterable): iterable of parameters or named parameters to optimize,
            or dicts defining parameter groups."""

DOC_FLAGS = r"""foreach (bool, optional): accepted for compatibility with ``torch.optim``; every
            path here already updates a whole (device, dtype) bucket at once, so it only
            matters for validation (``foreach=True`` with ``fused=True`` is an error, as in
            torch). (default: None)
        maximize (bool, optional): maximize the objective with respect to the params,
            instead of minimizing. (default: False)
        differentiable (bool, optional): whether autograd should occur through the
            optimizer step; runs the single-tensor reference kernel under autograd.
            (default: False)"""

DOC_CAPTURABLE = r"""capturable (bool, optional): keep ``step`` on the param's device and avoid host
            synchronization, so the step can be captured in a CUDA graph; runs the
            single-tensor reference kernel. (default: False)"""

DOC_FUSED = r"""fused (bool, optional): ``None`` uses the fused flat-bucket path where it can
            (the C kernel on CPU for float32/float64; elsewhere the same update in torch ops
            over flat tensors, compiled by ``torch.compile`` on CUDA) and the reference kernel
            for the rest; ``False`` always runs the readable single-tensor reference kernel;
            ``True`` requires the fused path and raises where it cannot be taken (as torch,
            on a device torch has no fused kernels for). (default: None)"""

DOC_SEMANTICS = r"""semantics (str, optional): ``"torch"`` computes what ``torch.optim`` computes;
            ``"keras"`` computes Keras 3's update (see "Differences from Keras / torch").
            Hyperparameter defaults stay torch's in both. (default: "torch")"""

DOC_KERAS_COMMON = r"""Under ``semantics="keras"`` weight decay is decoupled (``w <- w - lr*wd*w``
        before the update, Keras 3 ``base_optimizer.py`` ``_apply_weight_decay``, lines
        952-959, called before ``update_step`` at lines 587-594), bias corrections use one
        step counter per optimizer (Keras's ``iterations``, advanced once per ``apply``),
        saved in ``state_dict()["global_state"]``."""


_FRAGMENTS = {"{params}": DOC_PARAMS, "{flags}": DOC_FLAGS, "{capturable}": DOC_CAPTURABLE,
              "{fused}": DOC_FUSED, "{semantics}": DOC_SEMANTICS,
              "{keras_common}": DOC_KERAS_COMMON}


def fill_doc(text: str) -> str:
    """Splice the shared fragments (``{params}``, ``{fused}``, ...) into a docstring."""
    for key, value in _FRAGMENTS.items():
        text = text.replace(key, value)
    return text
