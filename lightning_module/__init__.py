"""Lightning wiring: the classifier module, the in-memory data module and the recording callbacks."""

from .callbacks import OptimizerDiagnostics, RunRecorder
from .classifier import Classifier
from .datamodule import FashionMNISTDataModule

__all__ = ["Classifier", "FashionMNISTDataModule", "RunRecorder", "OptimizerDiagnostics"]
