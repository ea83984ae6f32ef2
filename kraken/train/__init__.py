"""Continual training: the trainer, progressive metrics, dense state."""

from kraken.train.metrics import AUC, Calibration, LogLoss, MetricSet, exact_auc
from kraken.train.settings import DenseOptimizer
from kraken.train.trainer import RunSummary, Trainer, TrainerConfig

__all__ = ["AUC", "Calibration", "DenseOptimizer", "LogLoss", "MetricSet", "RunSummary",
           "Trainer", "TrainerConfig", "exact_auc"]
