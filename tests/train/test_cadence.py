"""The trainer's cadence over a fake clock: logs, checkpoints and evictions when due."""

from __future__ import annotations

from pathlib import Path

import pytest

from kraken.errors import ConfigError
from kraken.train import DenseOptimizer, TrainerConfig
from kraken.train.cadence import Cadence
from tests.train.helpers import make_trainer


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_intervals_follow_the_injected_clock() -> None:
    clock = FakeClock()
    cad = Cadence(TrainerConfig(log_every_s=2.0, checkpoint_every_s=5.0,
                                checkpoint_every_samples=1000), clock)
    cad.start(samples=40)
    clock.t += 1.9
    cad.tick()
    assert not cad.log_due() and not cad.checkpoint_due(40)
    assert cad.since_log(140) == (pytest.approx(1.9), 100)
    clock.t += 0.1
    cad.tick()
    assert cad.log_due()
    cad.logged(140)
    assert not cad.log_due() and cad.since_log(140) == (0.0, 0)
    assert cad.checkpoint_due(1040) and not cad.checkpoint_due(1039)  # by samples
    clock.t += 3.0
    cad.tick()
    assert cad.checkpoint_due(41)  # by seconds: 5.0 since the start
    cad.checkpointed(41)
    assert not cad.checkpoint_due(41)
    assert cad.elapsed() == pytest.approx(5.0)


class TickingPublisher:
    """Called on the training thread after every batch: each batch takes 4 fake seconds."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def maybe_publish(self, event_time: int | None = None) -> None:
        self.clock.t += 4.0

    def publish(self, *, dense: bool = False, full: bool = False) -> None:
        pass


def test_a_run_logs_by_the_clock_not_by_the_machine(tmp_path: Path) -> None:
    clock = FakeClock()
    kinds: list[str] = []
    tr = make_trainer(tmp_path, n_records=4096, log_every_s=10.0, window=10**9)
    tr.cadence.clock = clock
    tr.publisher = TickingPublisher(clock)
    tr.on_record = lambda rec: kinds.append(rec["kind"])
    s = tr.run()
    assert s.batches == 8
    assert kinds == ["progress", "progress", "final"]  # after batches 3 (12 s) and 6 (24 s)
    assert s.seconds == pytest.approx(32.0)


def test_dense_optimizer_is_one_enum() -> None:
    assert TrainerConfig(dense_optimizer="adagrad").dense_optimizer is DenseOptimizer.ADAGRAD
    assert TrainerConfig().dense_optimizer is DenseOptimizer.ADAM
    with pytest.raises(ConfigError, match=r"dense_optimizer: expected one of \['adam', "):
        TrainerConfig(dense_optimizer="lamb")
    tr = make_trainer(None, n_records=512, dense_optimizer="sgd")
    assert type(tr.optimizer).__name__ == "SGD"
