"""Sparse optimizers: batched, in-place row updates with a declared state width per row.

==================  =========================  ======================
optimizer           state floats per row (D)   bytes per row at D=16
==================  =========================  ======================
SGD                 0                          64
RowWiseAdaGrad      1                          68
RAdaGrad            1                          68
AdaGrad             D                          128
FTRL                2D                         192
Adam                2D + 1                     196
==================  =========================  ======================
"""

from kraken.optim.adagrad import AdaGrad
from kraken.optim.adam import Adam
from kraken.optim.base import SparseOptimizer, optimizer_from_dict
from kraken.optim.ftrl import FTRL
from kraken.optim.radagrad import RAdaGrad
from kraken.optim.rowwise_adagrad import RowWiseAdaGrad
from kraken.optim.sgd import SGD

__all__ = [
    "FTRL",
    "SGD",
    "AdaGrad",
    "Adam",
    "RAdaGrad",
    "RowWiseAdaGrad",
    "SparseOptimizer",
    "optimizer_from_dict",
]
