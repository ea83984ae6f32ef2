"""Every registry answers a duplicate name alike: a ConfigError naming the kind and the name.

Registering the same entry again is a no-op (re-importing a module is harmless);
another entry under a taken name is refused and leaves the registry unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kraken.data import SyntheticStream
from kraken.data import registry as streams
from kraken.errors import ConfigError
from kraken.nn.models import MODELS
from kraken.nn.models.base import RankingModel, register_model
from kraken.optim import SGD
from kraken.optim import base as optim_base


def _model_twin(name: str) -> type[RankingModel]:
    return type("Twin", (RankingModel,), {"name": name})


def _optimizer_twin(name: str) -> type:
    return type("Twin", (SGD,), {"kind": name})


def _stream_twin(_name: str) -> Callable[..., Any]:
    def build() -> SyntheticStream:  # pragma: no cover - never called
        raise AssertionError
    return build


# (what, the registry's dict, register(name, entry), the entry a built-in name holds, a twin)
REGISTRIES = [
    ("model", MODELS, lambda n, e: register_model(e), lambda n: MODELS[n], _model_twin,
     "deepfm"),
    ("optimizer", optim_base._REGISTRY, lambda n, e: optim_base.register(e),
     lambda n: optim_base._REGISTRY[n], _optimizer_twin, "sgd"),
    ("stream", streams._BUILDERS, lambda n, e: streams.register_stream(n, e),
     lambda n: streams._BUILDERS[n], _stream_twin, "synthetic"),
]


@pytest.mark.parametrize(("what", "table", "add", "entry", "twin", "taken"), REGISTRIES,
                         ids=[r[0] for r in REGISTRIES])
def test_a_taken_name_is_refused_alike(what: str, table: dict, add: Callable, entry: Callable,
                                       twin: Callable, taken: str) -> None:
    before = dict(table)
    with pytest.raises(ConfigError,
                       match=rf"^{what} '{taken}' is already registered \(.+\); names are unique$"):
        add(taken, twin(taken))
    assert table == before


@pytest.mark.parametrize(("what", "table", "add", "entry", "twin", "taken"), REGISTRIES,
                         ids=[r[0] for r in REGISTRIES])
def test_registering_the_same_entry_again_is_a_no_op(what: str, table: dict, add: Callable,
                                                     entry: Callable, twin: Callable,
                                                     taken: str) -> None:
    before = dict(table)
    add(taken, entry(taken))
    assert table == before


@pytest.mark.parametrize(("what", "table", "add", "entry", "twin", "taken"), REGISTRIES,
                         ids=[r[0] for r in REGISTRIES])
def test_a_new_name_is_added(what: str, table: dict, add: Callable, entry: Callable,
                             twin: Callable, taken: str) -> None:
    name = f"test-only-{what}"
    new = twin(name)
    try:
        add(name, new)
        assert table[name] is new
    finally:
        table.pop(name, None)
        streams._LOCATIONS.pop(name, None)


def test_a_stream_name_cannot_change_what_it_reads() -> None:
    with pytest.raises(ConfigError, match=r"^stream 'criteo' is already registered"):
        streams.register_stream("criteo", streams._BUILDERS["criteo"], "root")
