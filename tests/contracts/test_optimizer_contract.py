"""The sparse-optimizer contract (``kraken/optim/base.py``), run over every optimizer.

The optimizers are discovered from ``kraken.optim.__all__``: a new optimizer is checked
as soon as it is exported, and the tables below (valid and invalid hyperparameters) must
be extended for it or the contract fails by name. Optimizers with ``segments`` (rows made
of segments, one accumulator each) run the update checks a second time over segmented rows.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kraken.optim
from kraken.errors import ConfigError
from kraken.optim import SparseOptimizer, optimizer_from_dict

OPTIMIZERS = sorted(
    (obj for name in kraken.optim.__all__
     if isinstance(obj := getattr(kraken.optim, name), type)
     and issubclass(obj, SparseOptimizer) and obj is not SparseOptimizer),
    key=lambda c: c.__name__)

# Valid non-default settings per optimizer, at the boundaries (used for round trips and
# for "any valid setting keeps the numbers finite").
VALID: dict[str, list[dict[str, float]]] = {
    "SGD": [{"lr": 1e-6}, {"lr": 10.0}],
    "AdaGrad": [{"lr": 1e-6, "eps": 1e-44, "initial_accumulator": 0.0},
                {"lr": 1e-3, "eps": 1.0, "initial_accumulator": 0.1}],
    "RowWiseAdaGrad": [{"lr": 1e-6, "eps": 1e-44, "initial_accumulator": 0.0},
                       {"lr": 1e-3, "eps": 1.0, "initial_accumulator": 0.1}],
    "RAdaGrad": [{"lr": 1e-6, "eps": 1e-44, "decay": 0.0}, {"lr": 0.1, "decay": 1.0},
                 {"decay": 0.5, "initial_accumulator": 2.0}],
    "Adam": [{"lr": 1e-6, "beta1": 0.0, "beta2": 0.0, "eps": 1e-44},
             {"beta1": 0.999999, "beta2": 0.999999, "eps": 1.0}],
    "FTRL": [{"alpha": 1.0, "beta": 0.0, "l1": 0.0, "l2": 0.0},
             {"alpha": 0.01, "beta": 2.0, "l1": 3.0, "l2": 1.0}],
}

# Invalid values per field beyond the ones every field rejects (NaN, -1, bools, strings).
EXTRA_INVALID: dict[str, dict[str, list[float]]] = {
    "SGD": {"lr": [0.0, math.inf, 1e39, 1e-46]},
    "AdaGrad": {"lr": [0.0, math.inf], "eps": [0.0, 1e-46, 1e-44]},
    "RowWiseAdaGrad": {"lr": [0.0, math.inf], "eps": [0.0, 1e-46, 1e-44],
                       "segments": [(0,), (1, -1), (2.0,)]},
    "RAdaGrad": {"lr": [0.0, math.inf], "eps": [0.0, 1e-44], "decay": [1.0001, 2.0],
                 "segments": [(0,), (1, -1), (2.0,)]},
    "Adam": {"lr": [0.0, math.inf], "eps": [0.0, 1e-44], "beta1": [1.0, 1.5],
             "beta2": [1.0, 1.5]},
    "FTRL": {"alpha": [0.0, math.inf, 1e39, 1e-46]},
}

by_name = pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)


def _split(d: int) -> tuple[int, ...]:
    """Segments covering a row of ``d`` values: ``(d,)``, ``(d-1, 1)`` or ``(d-3, 2, 1)``."""
    return (d,) if d == 1 else (d - 1, 1) if d < 4 else (d - 3, 2, 1)


@dataclasses.dataclass(frozen=True)
class Maker:
    """Builds ``cls(**kw)`` for rows of ``d`` values, with segments covering them or not."""

    cls: type
    segmented: bool

    def __call__(self, d: int, **kw: float) -> SparseOptimizer:
        return self.cls(segments=_split(d), **kw) if self.segmented else self.cls(**kw)


MAKERS = [Maker(c, False) for c in OPTIMIZERS] + [
    Maker(c, True) for c in OPTIMIZERS if "segments" in {f.name for f in dataclasses.fields(c)}]
by_maker = pytest.mark.parametrize(
    "make", MAKERS, ids=lambda m: m.cls.__name__ + ("-segments" if m.segmented else ""))


def test_row_wise_optimizers_join_the_contract_with_segments() -> None:
    assert {m.cls.__name__ for m in MAKERS if m.segmented} >= {"RowWiseAdaGrad", "RAdaGrad"}


def test_every_exported_optimizer_is_covered() -> None:
    names = {c.__name__ for c in OPTIMIZERS}
    assert names >= {"SGD", "AdaGrad", "RowWiseAdaGrad", "RAdaGrad", "Adam", "FTRL"}
    assert set(VALID) == names and set(EXTRA_INVALID) == names, "extend the tables"
    kinds = [c.kind for c in OPTIMIZERS]
    assert len(set(kinds)) == len(kinds), f"duplicate kinds {kinds}"


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _arena(opt: SparseOptimizer, n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of random weights and lived-in state (two warm-up steps on every row)."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-1, 1, (n, d)).astype(np.float32)
    s = np.empty((n, opt.state_width(d)), dtype=np.float32)
    opt.init_state(s)
    for _ in range(2):
        opt.update(w, s, np.arange(n, dtype=np.int64), rng.normal(size=(n, d)).astype(np.float32))
    return w, s


def _bits(a: np.ndarray) -> np.ndarray:
    """Bit patterns, so that -0.0 != 0.0 and NaN == NaN in comparisons."""
    return np.ascontiguousarray(a).view(np.uint32)


batches = st.tuples(st.integers(1, 24), st.integers(1, 17), st.integers(0, 2**32 - 1))


# -- update ----------------------------------------------------------------------------------


@by_maker
@settings(max_examples=25, deadline=None)
@given(batch=batches)
def test_update_touches_only_the_given_rows(make, batch) -> None:
    n, d, seed = batch
    opt = make(d)
    w, s = _arena(opt, n, d, seed)
    rng = np.random.default_rng(seed + 1)
    rows = rng.permutation(n)[: rng.integers(0, n + 1)].astype(np.int64)
    g = rng.normal(size=(rows.shape[0], d)).astype(np.float32)
    w0, s0, rows0, g0 = w.copy(), s.copy(), rows.copy(), g.copy()

    opt.update(w, s, rows, g)

    other = np.setdiff1d(np.arange(n), rows)
    assert (_bits(w[other]) == _bits(w0[other])).all(), "weights of other rows changed"
    assert (_bits(s[other]) == _bits(s0[other])).all(), "state of other rows changed"
    assert (rows == rows0).all() and (_bits(g) == _bits(g0)).all(), "inputs were modified"
    if rows.shape[0]:
        assert not (_bits(w[rows]) == _bits(w0[rows])).all(), "given rows did not move"


@by_maker
@settings(max_examples=25, deadline=None)
@given(batch=batches)
def test_batch_order_does_not_matter(make, batch) -> None:
    n, d, seed = batch
    opt = make(d)
    w, s = _arena(opt, n, d, seed)
    rng = np.random.default_rng(seed + 2)
    rows = rng.permutation(n)[: max(1, n // 2)].astype(np.int64)
    g = rng.normal(size=(rows.shape[0], d)).astype(np.float32)
    perm = rng.permutation(rows.shape[0])

    w1, s1 = w.copy(), s.copy()
    opt.update(w1, s1, rows, g)
    w2, s2 = w.copy(), s.copy()
    opt.update(w2, s2, np.ascontiguousarray(rows[perm]), np.ascontiguousarray(g[perm]))
    w3, s3 = w.copy(), s.copy()  # one row at a time: rows are independent of each other
    for i in range(rows.shape[0]):
        opt.update(w3, s3, rows[i:i + 1], g[i:i + 1])

    for wx, sx in ((w2, s2), (w3, s3)):
        assert (_bits(wx) == _bits(w1)).all() and (_bits(sx) == _bits(s1)).all()


@by_maker
@pytest.mark.parametrize("d", [1, 3, 16])
def test_state_width_matches_the_columns_used(make, d: int) -> None:
    """Every declared column is written by an update; columns past the width never are."""
    opt = make(d)
    width = opt.state_width(d)
    assert isinstance(width, int) and width >= 0
    n, pad = 5, 3
    rng = np.random.default_rng(d)
    w = rng.uniform(-1, 1, (n, d)).astype(np.float32)
    s = np.full((n, width + pad), 12345.0, dtype=np.float32)  # sentinel past the width
    opt.init_state(s[:, :width])
    before = s.copy()
    signs = np.where(rng.random((n, d)) < 0.5, -1.0, 1.0)
    g = (signs * rng.uniform(0.5, 1.0, (n, d))).astype(np.float32)

    opt.update(w, s, np.arange(n, dtype=np.int64), g)

    assert (s[:, width:] == 12345.0).all(), "wrote past the declared state width"
    changed = (s[:, :width] != before[:, :width]).any(axis=0)
    assert changed.all(), f"declared state columns {np.flatnonzero(~changed)} never written"


@by_maker
@pytest.mark.parametrize("d", [1, 4, 16])
def test_init_state_fills_every_element(make, d: int) -> None:
    cls = make.cls
    opt = make(d, **VALID[cls.__name__][-1])
    s = np.full((7, opt.state_width(d)), np.nan, dtype=np.float32)
    opt.init_state(s)
    assert np.isfinite(s).all(), "init_state left elements unwritten"
    assert (s == s[:1]).all(), "fresh rows must start alike"
    if "initial_accumulator" in _fields(cls):
        assert (s == np.float32(opt.initial_accumulator)).all()


@by_maker
@settings(max_examples=25, deadline=None)
@given(setting=st.integers(0, 10), d=st.integers(1, 9), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([0.0, 1e-30, 1.0]))
def test_every_valid_setting_keeps_rows_finite(make, setting, d, seed, scale) -> None:
    """Fresh rows, then zero, tiny (squares underflow) or ordinary gradients: never NaN or
    inf and never an exception (eps = 0 gave 0 / 0; FTRL with beta = l2 = 0 divided by 0)."""
    settings_ = [{}] + VALID[make.cls.__name__]
    opt = make(d, **settings_[setting % len(settings_)])
    rng = np.random.default_rng(seed)
    n = 4
    w = rng.uniform(-1, 1, (n, d)).astype(np.float32)
    s = np.empty((n, opt.state_width(d)), dtype=np.float32)
    opt.init_state(s)
    for _ in range(3):
        g = (scale * rng.normal(size=(n, d))).astype(np.float32)
        opt.update(w, s, np.arange(n, dtype=np.int64), g)
        assert np.isfinite(w).all() and np.isfinite(s).all(), (opt, w, s)


# -- configuration ---------------------------------------------------------------------------


@by_name
def test_to_dict_round_trips(cls) -> None:
    for kwargs in [{}] + VALID[cls.__name__]:
        opt = cls(**kwargs)
        d = opt.to_dict()
        assert d["type"] == cls.kind and set(d) == {"type", *_fields(cls)}
        back = optimizer_from_dict(json.loads(json.dumps(d)))
        assert type(back) is cls and back == opt
        assert back.to_dict() == d


@by_name
def test_is_frozen(cls) -> None:
    opt = cls()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(opt, _fields(cls)[0], 1.0)


@by_name
def test_invalid_values_raise_config_error_naming_the_field(cls) -> None:
    fields = _fields(cls)
    assert set(EXTRA_INVALID[cls.__name__]) <= set(fields)
    for field in fields:
        bad = [math.nan, -1.0, -1, True, False, "0.1", None]
        bad += EXTRA_INVALID[cls.__name__].get(field, [])
        for value in bad:
            with pytest.raises(ConfigError, match=rf"^{field}: ") as exc:
                cls(**{field: value})
            assert repr(value) in str(exc.value) or "NaN" in str(exc.value), str(exc.value)
            with pytest.raises(ConfigError, match=rf"^table\.optimizer\.{field}: "):
                optimizer_from_dict({"type": cls.kind, field: value}, "table.optimizer")


@by_name
def test_unknown_key_and_type_raise_config_error(cls) -> None:
    with pytest.raises(ConfigError, match=r"^optimizer: unknown key\(s\) \['bogus'\]"):
        optimizer_from_dict({"type": cls.kind, "bogus": 1.0})
    with pytest.raises(ConfigError, match=r"^opt\.type: unknown 'no_such_optimizer'"):
        optimizer_from_dict({"type": "no_such_optimizer"}, "opt")
    with pytest.raises(ConfigError, match=r"^optimizer: expected a table with a 'type' key"):
        optimizer_from_dict({k: v for k, v in cls().to_dict().items() if k != "type"})
    with pytest.raises(ConfigError, match="'type' key"):
        optimizer_from_dict(cls.kind)  # type: ignore[arg-type]
