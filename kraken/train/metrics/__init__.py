"""Streaming binary-classification metrics for progressive (predict-then-learn) evaluation.

Every metric has the small surface of :class:`~kraken.train.metrics.base.Metric`:
``update(y, p)`` with ``y float32[B]`` in {0, 1} and ``p float32[B]`` predicted
probabilities, ``get() -> float`` (changes nothing), ``reset()``, ``state()`` /
``load_state()`` for checkpoints, and ``merge(other)``: what workers that each saw part
of a stream need to report the metric of the whole. A metric updated on two halves and
merged equals one metric updated on all (bit for bit for :class:`AUC`, whose state is
integer counts; to float rounding for the others).
"""

from kraken.train.metrics.auc import AUC, exact_auc
from kraken.train.metrics.base import Metric
from kraken.train.metrics.calibration import Calibration
from kraken.train.metrics.log_loss import LogLoss
from kraken.train.metrics.metric_set import MetricSet

__all__ = ["AUC", "Calibration", "LogLoss", "Metric", "MetricSet", "exact_auc"]
