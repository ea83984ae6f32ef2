"""``model.wide = "segment"`` trains every model with first-order weights as the two-table
layout does: same rows (the wide column is the wide table's weight), same predictions."""

from __future__ import annotations

import numpy as np
import pytest

from kraken.nn.models import MODELS
from kraken.train import Trainer
from kraken.train.config import RunConfig, build_run

WIDE_MODELS = sorted(n for n, c in MODELS.items() if c.needs_wide)
D = 4


def _train(model: str, wide: str, optimizer: dict) -> tuple[dict, dict]:
    cfg = RunConfig.from_dict({
        "data": {"source": "synthetic", "n_records": 768, "n_fields": 4, "n_dense": 2,
                 "vocab": 300, "seed": 5},
        "model": {"name": model, "wide": wide,
                  **({"hidden": [8]} if model in ("deepfm", "wide_deep", "nfm") else {})},
        # fp32: 16-bit rows round stochastically, with draws that differ between layouts
        "tables": {"emb": {"dim": D, "optimizer": optimizer, "precision": "fp32"}},
        "trainer": {"batch_size": 256, "seed": 3, "log_every_s": 3600.0}})
    run = build_run(cfg)
    s = Trainer(model=run.model, embedding=run.embedding, ps=run.ps, stream=run.stream,
                config=cfg.trainer).run()
    keys = np.sort(np.concatenate([b.keys.reshape(-1) for b in run.stream.batches(768)]))
    keys = np.unique(keys)
    rows = run.ps.pull({n: keys for n in run.ps.tables})
    run.ps.close()
    return s.metrics, rows


def test_the_models_with_first_order_weights() -> None:
    assert WIDE_MODELS == ["deepfm", "fm", "lr", "nfm", "wide_deep"]


ROWWISE = {"type": "rowwise_adagrad", "lr": 0.1}  # one accumulator per segment
ADAM = {"type": "adam", "lr": 0.01}  # per element: the wide column needs nothing


@pytest.mark.parametrize("model, optimizer", [(m, ROWWISE) for m in WIDE_MODELS]
                         + [("deepfm", ADAM)], ids=[*WIDE_MODELS, "deepfm-adam"])
def test_segment_rows_train_like_two_tables(model: str, optimizer: dict) -> None:
    m_table, r_table = _train(model, "table", optimizer)
    m_seg, r_seg = _train(model, "segment", optimizer)
    assert set(r_table) == {"emb", "wide"} and set(r_seg) == {"emb"}
    assert r_seg["emb"].shape[1] == D + 1
    assert np.abs(r_table["wide"]).max() > 0  # the wide weights did learn
    np.testing.assert_allclose(r_seg["emb"][:, :D], r_table["emb"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(r_seg["emb"][:, D], r_table["wide"][:, 0], rtol=1e-4,
                               atol=1e-6)
    assert m_seg["auc"] == pytest.approx(m_table["auc"], abs=1e-6)
    assert m_seg["logloss"] == pytest.approx(m_table["logloss"], abs=1e-6)
