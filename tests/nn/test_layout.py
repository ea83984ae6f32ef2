"""The embedding layout against a per-sample reference, and its binding to a PS.

The reference walks samples and fields one at a time in plain Python (a row per key from a
dict, ``sum``/``mean`` over a sample's values, the last ``max_sequence`` values of a
sequence, padded with zeros), with torch autograd giving its per-key gradient. The layout
must give the same tensors and push the same one-gradient-per-key.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.config import Pooling
from kraken.data.base import Batch, Jagged, Schema
from kraken.errors import ConfigError
from kraken.nn import EmbeddingLayer, EmbeddingLayout, Pulled
from kraken.optim import SGD
from kraken.ps import LocalPS
from kraken.table import TableConfig, Zeros
from kraken.table.kernels import hash_buckets as bucketize

D = 3


@st.composite
def cases(draw: st.DrawFn) -> dict:
    n_single = draw(st.integers(1, 3))
    n_jagged = draw(st.integers(0, 2))
    b = draw(st.integers(1, 6))
    vocab = draw(st.integers(1, 8))  # small: keys repeat within and across fields
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    jagged_names = tuple(f"j{k}" for k in range(n_jagged))
    schema = Schema(fields=tuple(f"f{k}" for k in range(n_single)), jagged=jagged_names)
    keys = rng.integers(0, vocab, size=(b, n_single)).astype(np.int64) * 1_000_003
    jagged = {}
    for name in jagged_names:
        lengths = rng.integers(0, 5, size=b)
        values = rng.integers(0, vocab, size=int(lengths.sum())).astype(np.int64) * 7
        jagged[name] = Jagged.from_lengths(values, lengths)
    batch = Batch(keys=keys, dense=rng.standard_normal((b, 2)).astype(np.float32),
                  label=np.zeros(b, np.float32), event_time=np.zeros(b, np.int64),
                  jagged=jagged)
    sequences = tuple(n for n in jagged_names if draw(st.booleans()))
    return {"schema": schema, "batch": batch, "seed": seed,
            "pooling": draw(st.sampled_from(list(Pooling))),
            "sequence_fields": sequences,
            "max_sequence": draw(st.integers(1, 4)),
            "hash_buckets": draw(st.sampled_from([None, 1, 5])),
            "wide": draw(st.sampled_from([None, "table", "column"]))}


def _layout(c: dict) -> EmbeddingLayout:
    return EmbeddingLayout(c["schema"], wide_table="wide" if c["wide"] == "table" else None,
                           wide_column=c["wide"] == "column", pooling=c["pooling"],
                           sequence_fields=c["sequence_fields"],
                           max_sequence=c["max_sequence"], hash_buckets=c["hash_buckets"])


def _row(key: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, key, dim]).standard_normal(dim).astype(np.float32)


def _mapped(c: dict, ids: np.ndarray) -> np.ndarray:
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    return ids if c["hash_buckets"] is None else bucketize(ids, c["hash_buckets"])


def _reference(c: dict, tables: dict[str, dict[int, torch.Tensor]]) -> dict:
    """Per-sample loops over ``tables[name][key] -> float32[D_t]`` tensors."""
    schema, b = c["schema"], c["batch"]
    n = len(b)

    def fields(table: dict[int, torch.Tensor], dim: int) -> torch.Tensor:
        out = []
        for i in range(n):
            per = [table[int(k)] for k in _mapped(c, b.keys[i])]
            for name in schema.jagged:
                jag = b.jagged[name]
                vals = _mapped(c, jag.values[jag.offsets[i]: jag.offsets[i + 1]])
                rows = [table[int(k)] for k in vals]
                if not rows:
                    per.append(torch.zeros(dim))
                elif c["pooling"] is Pooling.SUM:
                    per.append(torch.stack(rows).sum(0))
                else:
                    per.append(torch.stack(rows).mean(0))
            out.append(torch.stack(per))
        return torch.stack(out)

    emb = fields(tables["emb"], D)
    wide = fields(tables["wide"], 1)[..., 0] if c["wide"] else None
    sequences = {}
    for name in c["sequence_fields"]:
        jag = b.jagged[name]
        kept = [_mapped(c, jag.values[jag.offsets[i]: jag.offsets[i + 1]])[-c["max_sequence"]:]
                for i in range(n)]
        width = max([len(k) for k in kept] + [1])
        seq = torch.zeros(n, width, D)
        mask = torch.zeros(n, width, dtype=torch.bool)
        for i, ks in enumerate(kept):
            for j, k in enumerate(ks):
                seq[i, j] = tables["emb"][int(k)]
                mask[i, j] = True
        sequences[name] = (seq, mask)
    return {"emb": emb, "wide": wide, "sequences": sequences}


def _loss_weights(shape: torch.Size, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _loss(out_emb: torch.Tensor, wide: torch.Tensor | None, sequences: dict,
          seed: int) -> torch.Tensor:
    loss = (out_emb * _loss_weights(out_emb.shape, seed)).sum()
    if wide is not None:
        loss = loss + (wide * _loss_weights(wide.shape, seed + 1)).sum()
    for k, (_name, (seq, _)) in enumerate(sorted(sequences.items())):
        loss = loss + (seq * _loss_weights(seq.shape, seed + 2 + k)).sum()
    return loss


@settings(max_examples=60, deadline=None)
@given(c=cases())
def test_layout_matches_the_per_sample_reference_and_its_gradients(c: dict) -> None:
    layout = _layout(c)
    prepared = layout.prepare(c["batch"])
    keys = prepared.keys
    assert len(np.unique(keys)) == len(keys)  # deduplicated
    column = c["wide"] == "column"  # rows [emb (D) | wide (1)] in the one table "emb"
    dims = {"emb": D + column, "wide": 1}
    rows = {t: np.stack([_row(int(k), dims[t], c["seed"]) for k in keys]) for t in layout.tables}
    inputs, leaves = layout.inputs(Pulled(prepared, rows), requires_grad=True)

    ref_tables = {t: {int(k): torch.from_numpy(_row(int(k), dims[t], c["seed"]))
                      .requires_grad_(True) for k in keys} for t in layout.tables}
    if column:  # the reference keeps two tables, cut from the same rows
        full = {k: r.detach() for k, r in ref_tables["emb"].items()}
        ref_tables = {"emb": {k: r[:D].clone().requires_grad_(True) for k, r in full.items()},
                      "wide": {k: r[D:].clone().requires_grad_(True) for k, r in full.items()}}
    ref = _reference(c, ref_tables)
    torch.testing.assert_close(inputs.emb, ref["emb"])
    if c["wide"]:
        torch.testing.assert_close(inputs.wide, ref["wide"])
    else:
        assert inputs.wide is None
    assert sorted(inputs.sequences) == sorted(c["sequence_fields"])
    for name, (seq, mask) in ref["sequences"].items():
        got_seq, got_mask = inputs.sequences[name]
        assert torch.equal(got_mask, mask), name
        torch.testing.assert_close(got_seq, seq)
    np.testing.assert_array_equal(inputs.dense.numpy(), c["batch"].dense)

    _loss(inputs.emb, inputs.wide, inputs.sequences, c["seed"]).backward()
    _loss(ref["emb"], ref["wide"], ref["sequences"], c["seed"]).backward()
    ref_dims = {"emb": D, "wide": 1}

    def ref_grad(t: str) -> torch.Tensor:
        return torch.stack([ref_tables[t][int(k)].grad if ref_tables[t][int(k)].grad
                            is not None else torch.zeros(ref_dims[t]) for k in keys])

    assert sorted(leaves) == sorted(layout.tables)
    for t in layout.tables:
        expected = torch.cat([ref_grad("emb"), ref_grad("wide")], 1) if column else ref_grad(t)
        torch.testing.assert_close(leaves[t].grad, expected)


def test_the_binding_pulls_through_the_ps_and_pushes_one_gradient_per_key() -> None:
    schema = Schema(fields=("a", "b"), jagged=("g",))
    batch = Batch(keys=np.array([[1, 2], [2, 2], [3, 1]], np.int64),
                  dense=np.zeros((3, 0), np.float32), label=np.zeros(3, np.float32),
                  event_time=np.zeros(3, np.int64),
                  jagged={"g": Jagged.from_lengths(np.array([1, 4, 4], np.int64),
                                                   np.array([2, 0, 1]))})
    lr = 0.5
    ps = LocalPS({"emb": TableConfig(dim=D, optimizer=SGD(lr=lr)),
                  "wide": TableConfig(dim=1, optimizer=SGD(lr=lr), initializer=Zeros())})
    layer = EmbeddingLayer(ps, schema, wide_table="wide", pooling="mean")
    assert layer.layout.tables == ("emb", "wide") and layer.pooling is Pooling.MEAN
    layer.train()
    pulled = layer.pull(layer.prepare(batch), train=True, now=1)
    assert sorted(pulled.rows) == ["emb", "wide"]
    before = ps.pull({t: pulled.prepared.keys for t in ("emb", "wide")})
    for t in before:  # the PS's rows are what the layer works on
        np.testing.assert_array_equal(pulled.rows[t], before[t])

    inputs = layer(pulled)
    w = _loss_weights(inputs.emb.shape, 0)
    ((inputs.emb * w).sum() + inputs.wide.sum()).backward()
    grads = layer.pending_grads()
    assert len(grads) == 2
    # key 4 is one of two genres of sample 0 (mean: half of w[0, 2]) and the only genre of
    # sample 2; key 2 is three single-valued slots
    keys = pulled.prepared.keys.tolist()
    torch.testing.assert_close(grads[0][keys.index(4)], w[0, 2] / 2 + w[2, 2])
    torch.testing.assert_close(grads[0][keys.index(2)], w[0, 1] + w[1, 0] + w[1, 1])
    layer.push(now=2)
    after = ps.pull({t: pulled.prepared.keys for t in ("emb", "wide")})
    np.testing.assert_allclose(after["emb"], before["emb"] - lr * grads[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(after["wide"], before["wide"] - lr * grads[1].numpy(),
                               atol=1e-6)
    assert layer.pending_grads() == []  # pushed once, then forgotten


def test_layout_settings_are_validated_and_round_trip() -> None:
    schema = Schema(fields=("a",), jagged=("g",))
    layout = EmbeddingLayout(schema, wide_table="wide", pooling="mean", sequence_fields=("g",),
                             max_sequence=3, hash_buckets=10)
    back = EmbeddingLayout.from_dict(schema, layout.to_dict())
    assert back.to_dict() == layout.to_dict() == {
        "table": "emb", "wide_table": "wide", "pooling": "mean", "sequence_fields": ["g"],
        "max_sequence": 3, "hash_buckets": 10}
    with pytest.raises(ConfigError, match=r"pooling: expected one of \['sum', 'mean'\]"):
        EmbeddingLayout(schema, pooling="max")
    with pytest.raises(ConfigError, match="sequence field 'a' is not a multi-valued"):
        EmbeddingLayout(schema, sequence_fields=("a",))
    with pytest.raises(ConfigError, match="max_sequence: must be >= 1"):
        EmbeddingLayout(schema, max_sequence=0)
    with pytest.raises(ConfigError, match="hash_buckets: must be >= 1"):
        EmbeddingLayout(schema, hash_buckets=0)
    with pytest.raises(ConfigError, match=r"spec.embedding: unknown key\(s\) \['poolng'\]"):
        EmbeddingLayout.from_dict(schema, {"poolng": "sum"}, "spec.embedding")
    with pytest.raises(ConfigError, match="spec.embedding.pooling"):
        EmbeddingLayout.from_dict(schema, {"pooling": 3}, "spec.embedding")
    with pytest.raises(ConfigError, match="'wide' is not on the PS"):
        layout.check_tables({"emb": TableConfig(dim=4)})
    with pytest.raises(ConfigError, match="tables.wide.dim: the wide table must have dim 1"):
        layout.check_tables({"emb": TableConfig(dim=4), "wide": TableConfig(dim=2)})
    layout.check_tables({"emb": TableConfig(dim=4), "wide": TableConfig(dim=1)})


def test_a_wide_column_is_validated_and_round_trips() -> None:
    schema = Schema(fields=("a",), jagged=())
    layout = EmbeddingLayout(schema, wide_column=True)
    assert layout.tables == ("emb",) and layout.has_wide
    assert layout.to_dict()["wide_column"] is True
    assert EmbeddingLayout.from_dict(schema, layout.to_dict()).to_dict() == layout.to_dict()
    assert "wide_column" not in EmbeddingLayout(schema).to_dict()  # old specs read alike
    assert not EmbeddingLayout(schema).has_wide
    assert layout.emb_dim({"emb": TableConfig(dim=17)}) == 16
    with pytest.raises(ConfigError, match="tables.emb.dim: a row of embedding and wide "
                                          "column needs dim >= 2"):
        layout.check_tables({"emb": TableConfig(dim=1)})
    with pytest.raises(ConfigError, match="^wide_column: the first-order weight is either"):
        EmbeddingLayout(schema, wide_table="wide", wide_column=True)
    with pytest.raises(ConfigError, match=r"^spec.embedding.wide_column: expected true or "
                                          r"false, got 'yes'"):
        EmbeddingLayout.from_dict(schema, {"wide_column": "yes"}, "spec.embedding")


def test_serving_reads_rows_through_the_layout_not_a_parameter_server() -> None:
    """The replica and the spec it rebuilds from build no PS (a stand-in or a real one)."""
    root = Path(__file__).resolve().parents[2] / "kraken" / "serving"
    tree = ast.parse((root / "replica.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "kraken.nn.layout" in imported
    assert not {m for m in imported if m and (m.startswith("kraken.ps")
                                             or m == "kraken.nn.embedding")}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"ParameterServer", "LocalPS", "EmbeddingLayer"}
