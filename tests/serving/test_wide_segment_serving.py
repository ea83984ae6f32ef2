"""A model whose first-order weights live in the embedding rows (``model.wide =
"segment"``) is served over real HTTP with the trainer's own scores."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from kraken.serving import DirectoryFollower, ModelSpec, Publisher, Replica, create_app
from kraken.serving.http import HttpServer
from kraken.train import Trainer
from kraken.train.config import RunConfig, build_run
from tests.serving.helpers import probe_records, reference_scores


def test_a_segment_row_model_is_served_with_the_trainers_scores(tmp_path: Path) -> None:
    cfg = RunConfig.from_dict({
        "data": {"source": "synthetic", "n_records": 1500, "n_fields": 5, "n_dense": 3,
                 "vocab": 3000, "seed": 1},
        "model": {"name": "deepfm", "wide": "segment", "hidden": [16]},
        "tables": {"emb": {"dim": 8, "optimizer": {"type": "rowwise_adagrad", "lr": 0.1}}},
        "trainer": {"batch_size": 512, "seed": 0, "log_every_s": 3600.0}})
    run = build_run(cfg)
    tr = Trainer(model=run.model, embedding=run.embedding, ps=run.ps, stream=run.stream,
                 config=cfg.trainer)
    spec = ModelSpec.from_run(run)
    assert spec.embedding["wide_column"] is True and spec.tables["emb"].dim == 9
    tr.publisher = Publisher(tr.ps, tr.model, spec, tmp_path, sync_interval=0.0,
                             dense_sync_interval=0.0, snapshot_interval=1e9)
    tr.run()
    replica = Replica()
    DirectoryFollower(replica, tmp_path).poll()
    records = probe_records(16, seed=3)
    server = HttpServer(create_app(replica)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            r = c.post("/v1/predict", json={"instances": records})
            info = c.get("/v1/model").json()
        ref = reference_scores(tr, records)
    finally:
        server.stop()
        tr.publisher.close()
        run.ps.close()
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.float32(r.json()["scores"]), ref)
    assert ref.std() > 0  # the scores depend on the features (and so on the rows)
    assert set(info["tables"]) == {"emb"} and info["tables"]["emb"]["dim"] == 9
