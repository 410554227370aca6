"""The reviewed blog's reported numbers and claims, as data.

Source: Nhu Hoang, "Full review on optimizing neural network training with Optimizer",
Towards Data Science, June 2020; code in the notebook ``Tuning_Optimizer.ipynb`` of the GitHub
repository ``geniusnhu/DNN-Improvement``, whose README holds the results table copied below
(see ``shared/BLOG.md``). Keras / TensorFlow 2, Fashion-MNIST, blog MLP, batch 32, lr 1e-3,
seed 50, **one run per optimizer**, numbers after 20 epochs.

Nothing here is computed: these are the blog's own numbers, typed in once, so the report can put
them beside ours. Accuracies are fractions (the blog prints percentages).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "SOURCE", "BLOG_EPOCH", "BLOG_LR", "BLOG_SEED", "OPTIMIZER_ORDER", "NAMES", "BlogRow", "BLOG_TABLE",
    "CLAIMS", "OBSERVATIONS", "blog_row_for",
]

SOURCE = (
    'Nhu Hoang, "Full review on optimizing neural network training with Optimizer", '
    "Towards Data Science (June 2020); results table from the README of github.com/geniusnhu/DNN-Improvement "
    "(notebook Tuning_Optimizer.ipynb)"
)
BLOG_EPOCH = 20          # the table reports the state after 20 epochs
BLOG_LR = 1e-3           # every optimizer ran at lr 1e-3
BLOG_SEED = 50           # a single seed per optimizer

# The blog's eight optimizers under this project's registry names, in the order the registry
# lists them (torchopt_review/optim/registry.py). Kept here as plain strings so the report never
# imports torch; tests check it against the registry.
OPTIMIZER_ORDER = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "nadam", "adamax")
# How prose names them (the report's plain-words verdicts).
NAMES = {"sgd": "SGD", "momentum": "Momentum", "nesterov": "Nesterov", "adagrad": "AdaGrad", "rmsprop": "RMSprop",
         "adam": "Adam", "nadam": "Nadam", "adamax": "Adamax"}


@dataclass(frozen=True)
class BlogRow:
    """One row of the blog's table (epoch 20, single seed); accuracies as fractions."""

    name: str            # how the blog names it
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    val_acc_e1: float
    val_acc_e5: float
    val_acc_e10: float
    note: str = ""


BLOG_TABLE: dict[str, BlogRow] = {
    "sgd": BlogRow("SGD", 0.378, 0.8674, 0.393, 0.8617, 0.667, 0.819, 0.842),
    "momentum": BlogRow("Momentum 0.9", 0.211, 0.9206, 0.331, 0.8847, 0.820, 0.865, 0.880,
                        note="the blog's text says momentum 0.99; its code ran 0.9"),
    "nesterov": BlogRow("Nesterov 0.9", 0.209, 0.9216, 0.331, 0.8885, 0.810, 0.862, 0.878),
    "adagrad": BlogRow("AdaGrad", 0.385, 0.8659, 0.405, 0.8583, 0.765, 0.829, 0.845),
    "rmsprop": BlogRow("RMSProp rho 0.99", 0.420, 0.8808, 0.979, 0.8460, 0.830, 0.868, 0.875,
                       note="rho 0.99 in the final code (0.9 in the text)"),
    "adam": BlogRow("Adam", 0.188, 0.9290, 0.346, 0.8973, 0.839, 0.870, 0.888),
    "adamax": BlogRow("Adamax", 0.167, 0.9372, 0.356, 0.8882, 0.843, 0.875, 0.887),
    "nadam": BlogRow("Nadam", 0.183, 0.9314, 0.363, 0.8930, 0.842, 0.876, 0.887),
}

# The six claims the report judges, in the blog's words (shared/BLOG.md).
CLAIMS: dict[int, str] = {
    1: "Momentum beats plain SGD.",
    2: "Nesterov is only slightly better than Momentum.",
    3: "AdaGrad stalls (its effective step size shrinks as squared gradients accumulate).",
    4: "RMSProp fixes AdaGrad's stall and beats it.",
    5: "Adam and Nadam end best on Fashion-MNIST.",
    6: '"Usually Nadam outperforms Adam."',
}

OBSERVATIONS: dict[str, str] = {
    "rmsprop_unstable": "RMSProp at lr 1e-3 is unstable on this net (val loss spikes).",
    "adam_overfit": "Adam/Nadam overfit after ~10 epochs (val loss rises, val accuracy stays).",
}


def blog_row_for(label: str, optimizer: str, lr: float | None) -> tuple[BlogRow | None, str]:
    """The blog row to show beside run ``label`` and a note saying how well it matches.

    The label that *is* a registry name gets its row. A variant of the same optimizer at the
    blog's lr (``momentum-0.99``) gets the optimizer's row with a note; a run at another lr gets
    none, since the blog only ran lr 1e-3.
    """
    row = BLOG_TABLE.get(optimizer)
    if row is None:
        return None, ""
    if lr is not None and abs(lr - BLOG_LR) > 1e-12 * max(1.0, abs(lr)):
        return None, f"no blog number: the blog ran lr {BLOG_LR:g}, this run lr {lr:g}"
    if label == optimizer or label == f"{optimizer}-lr{lr:g}":  # the plain run, or the grid's blog-lr member
        return row, row.note
    note = f"blog row is its {row.name} run; this is variant {label!r}"
    if row.note:
        note += f" ({row.note})"
    return row, note
