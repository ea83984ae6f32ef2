"""``TableConfig``: everything that defines a sparse table, validated on construction."""

from __future__ import annotations

import dataclasses
from typing import Any

from kraken.config import Precision, check_fields, check_int, check_number
from kraken.errors import ConfigError
from kraken.optim import RowWiseAdaGrad, SparseOptimizer, optimizer_from_dict
from kraken.table.admission import AdmissionPolicy, Always, admission_from_dict
from kraken.table.eviction import EvictionPolicy, eviction_from_dict
from kraken.table.init import Initializer, Uniform, initializer_from_dict

__all__ = ["TableConfig"]


@dataclasses.dataclass(frozen=True)
class TableConfig:
    """A sparse table's shape, budget and policies.

    Attributes:
        dim: embedding dimension ``D`` (values per row).
        capacity: hard budget of live rows; memory is committed only for rows used.
        optimizer: sparse optimizer applied to rows (state width from ``optimizer``).
        precision: storage of weights (``fp32``, ``fp16`` or ``bf16``).
        admission: which absent keys get a row in training lookups.
        eviction: policies run in order by ``evict(now)``; a single policy is accepted.
        initializer: initial weights of a new row, a function of ``(key, seed)``.
        default_value: what every element of an absent key's vector reads as.
        seed: seeds the initializer, probabilistic admission and stochastic rounding.
        delta_log: eviction passes remembered for ``touched_since``.
    """

    dim: int
    capacity: int = 1 << 20
    optimizer: SparseOptimizer = dataclasses.field(default_factory=RowWiseAdaGrad)
    precision: Precision = Precision.FP32
    admission: AdmissionPolicy = dataclasses.field(default_factory=Always)
    eviction: tuple[EvictionPolicy, ...] = ()
    initializer: Initializer = dataclasses.field(default_factory=Uniform)
    default_value: float = 0.0
    seed: int = 0
    delta_log: int = 1024

    def __post_init__(self) -> None:
        check_int("dim", self.dim, lo=1, hi=1 << 16)
        check_int("capacity", self.capacity, lo=1, hi=(1 << 31) - 1)
        check_int("seed", self.seed, lo=0, hi=(1 << 64) - 1)
        check_int("delta_log", self.delta_log, lo=1)
        check_number("default_value", self.default_value)
        if isinstance(self.eviction, EvictionPolicy):
            object.__setattr__(self, "eviction", (self.eviction,))
        elif not isinstance(self.eviction, tuple):
            object.__setattr__(self, "eviction", tuple(self.eviction))
        for name, value, kind in (("optimizer", self.optimizer, SparseOptimizer),
                                  ("admission", self.admission, AdmissionPolicy),
                                  ("initializer", self.initializer, Initializer)):
            if not isinstance(value, kind):
                raise ConfigError(f"{name}: expected a {kind.__name__}, got {value!r}")
        for i, pol in enumerate(self.eviction):
            if not isinstance(pol, EvictionPolicy):
                raise ConfigError(f"eviction[{i}]: expected an EvictionPolicy, got {pol!r}")
        try:  # a row-wise optimizer's segments must cover the row
            self.optimizer.state_width(self.dim)
        except ConfigError as exc:
            raise ConfigError(f"optimizer.{exc}") from None
        width = getattr(self.initializer, "width", self.dim)  # Columns: sum of its widths
        if width != self.dim:
            raise ConfigError(f"initializer.widths: the columns sum to {width}, the row has "
                              f"dim {self.dim}")
        if not isinstance(self.precision, Precision):
            try:
                object.__setattr__(self, "precision", Precision(self.precision))
            except ValueError:
                raise ConfigError(f"precision: expected one of "
                                  f"{[p.value for p in Precision]}, got {self.precision!r}"
                                  ) from None

    @property
    def state_width(self) -> int:
        """Optimizer state floats per row."""
        return self.optimizer.state_width(self.dim)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; :meth:`from_dict` inverts it."""
        return {"dim": self.dim, "capacity": self.capacity,
                "optimizer": self.optimizer.to_dict(), "precision": self.precision.value,
                "admission": self.admission.to_dict(),
                "eviction": [p.to_dict() for p in self.eviction],
                "initializer": self.initializer.to_dict(), "default_value": self.default_value,
                "seed": self.seed, "delta_log": self.delta_log}

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str = "table") -> TableConfig:
        """Build from :meth:`to_dict` output or a config-file table; errors name the key path."""
        check_fields(cls, d, path)
        if "dim" not in d:
            raise ConfigError(f"{path}.dim: required")
        kw = dict(d)
        if "optimizer" in kw:
            kw["optimizer"] = optimizer_from_dict(kw["optimizer"], f"{path}.optimizer")
        if "admission" in kw:
            kw["admission"] = admission_from_dict(kw["admission"], f"{path}.admission")
        if "initializer" in kw:
            kw["initializer"] = initializer_from_dict(kw["initializer"], f"{path}.initializer")
        if "eviction" in kw:
            ev = kw["eviction"]
            ev = [ev] if isinstance(ev, dict) else ev
            if not isinstance(ev, list):
                raise ConfigError(f"{path}.eviction: expected a list of policies")
            kw["eviction"] = tuple(eviction_from_dict(e, f"{path}.eviction[{i}]")
                                   for i, e in enumerate(ev))
        try:
            return cls(**kw)
        except ConfigError as exc:
            raise ConfigError(f"{path}.{exc}") from None
