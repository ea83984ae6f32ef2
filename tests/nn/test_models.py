"""Contract checks run over every registered model, plus the formulas of the shared parts.

Inputs are random tensors (``B`` samples, ``F`` fields, ``D`` dim, ``Dd`` dense, a behaviour
sequence ``hist`` of length ``L`` with a random padding mask); every test seeds torch itself.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kraken.errors import ConfigError, InputError
from kraken.nn.inputs import ModelInputs
from kraken.nn.models import MODELS, ModelShape, RankingModel, build_model
from kraken.nn.models.dcn import DCNv2
from kraken.nn.models.parts import MLP, bi_interaction, fm_interaction

B, F, D, DD, L = 16, 3, 4, 5, 6
SHAPE = ModelShape(n_fields=F, dim=D, n_dense=DD, sequence_fields=("hist",), target_field=1)
KWARGS = {"din": {"sequence": "hist"}}  # hyperparameters without a default
NAMES = sorted(MODELS)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: intra-op threads only add contention on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make(name: str, shape: ModelShape = SHAPE, seed: int = 0, **kwargs) -> RankingModel:
    torch.manual_seed(seed)
    return build_model(name, shape, **{**KWARGS.get(name, {}), **kwargs})


def inputs(b: int = B, shape: ModelShape = SHAPE, seed: int = 1, grad: bool = False,
           emb_scale: float = 1.0) -> ModelInputs:
    g = torch.Generator().manual_seed(seed)
    emb = emb_scale * torch.randn(b, shape.n_fields, shape.dim, generator=g)
    dense = torch.randn(b, shape.n_dense, generator=g)
    wide = 0.1 * torch.randn(b, shape.n_fields, generator=g)
    hist = torch.randn(b, L, shape.dim, generator=g)
    mask = torch.rand(b, L, generator=g) < 0.6
    mask[:, 0] = True  # at least one behaviour per sample
    for t in (emb, dense, wide, hist):
        t.requires_grad_(grad)
    return ModelInputs(emb=emb, dense=dense, wide=wide, sequences={"hist": (hist, mask)})


def test_the_zoo() -> None:
    assert NAMES == ["dcn_v2", "deepfm", "din", "dlrm", "fm", "lr", "nfm", "wide_deep"]
    wide = {n for n in NAMES if MODELS[n].needs_wide}
    assert wide == {"deepfm", "fm", "lr", "nfm", "wide_deep"}
    assert make("din").sequence_fields == ("hist",)
    assert all(make(n).sequence_fields == () for n in NAMES if n != "din")


@pytest.mark.parametrize("n_dense", [DD, 0])
@pytest.mark.parametrize("name", NAMES)
def test_output_is_one_finite_logit_per_sample(name: str, n_dense: int) -> None:
    shape = ModelShape(F, D, n_dense, ("hist",), target_field=1)
    out = make(name, shape)(inputs(shape=shape))
    assert out.shape == (B,) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert make(name, shape)(inputs(1, shape)).shape == (1,)


@pytest.mark.parametrize("n_dense", [DD, 0])
@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_inputs_and_every_parameter(name: str, n_dense: int) -> None:
    shape = ModelShape(F, D, n_dense, ("hist",), target_field=1)
    model, x = make(name, shape), inputs(shape=shape, grad=True)
    model(x).sum().backward()
    wanted = {"emb": x.emb, "wide": x.wide, "dense": x.dense, "hist": x.sequences["hist"][0]}
    unused = {"hist"} if name != "din" else set()
    if not model.needs_wide:
        unused.add("wide")
    if name == "lr":  # first-order only: the per-field weights come from the wide table
        unused.add("emb")
    for what, t in wanted.items():
        if what == "dense" and n_dense == 0:
            assert t.grad is None or t.grad.numel() == 0
        elif what in unused:
            assert t.grad is None, what
        else:
            assert t.grad is not None and t.grad.abs().sum() > 0, what
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_model(name: str) -> None:
    a, b, c = make(name, seed=3), make(name, seed=3), make(name, seed=4)
    x = inputs()
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), c(x))


SMALL = {"wide_deep": {"hidden": (32, 16)}, "deepfm": {"hidden": (32, 16)},
         "dcn_v2": {"hidden": (32, 16)}, "dlrm": {"bottom": (16, D), "top": (32, 16)},
         "din": {"hidden": (32, 16)}}  # narrower than the defaults, to keep the test fast


@pytest.mark.parametrize("name", NAMES)
def test_can_overfit_a_tiny_problem(name: str) -> None:
    """Labels are a linear function of the dense features, which every model sees through a
    trained path (lr and fm only through it), so a wiring bug shows as a loss that stalls.
    The embeddings are fixed inputs here, small as a freshly initialised table's."""
    x = inputs(64, emb_scale=0.1)
    g = torch.Generator().manual_seed(2)
    y = (x.dense @ torch.randn(DD, generator=g) > 0).float()
    model = make(name, **SMALL.get(name, {}))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    first = loss_fn(model(x), y).item()
    for _ in range(100):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first, (first, loss.item())


@pytest.mark.parametrize("name", NAMES)
def test_permuting_samples_permutes_logits(name: str) -> None:
    model, x = make(name).eval(), inputs()
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(5))
    hist, mask = x.sequences["hist"]
    xp = ModelInputs(emb=x.emb[perm], dense=x.dense[perm], wide=x.wide[perm],
                     sequences={"hist": (hist[perm], mask[perm])})
    torch.testing.assert_close(model(xp), model(x)[perm])


def _pairwise(emb: torch.Tensor) -> torch.Tensor:
    """``sum_{i<j} e_i * e_j``, one pair at a time: ``[B, F, D] -> [B, D]``."""
    out = torch.zeros(emb.shape[0], emb.shape[2], dtype=emb.dtype)
    for i, j in itertools.combinations(range(emb.shape[1]), 2):
        out += emb[:, i] * emb[:, j]
    return out


embs = st.builds(
    lambda b, f, d, seed: torch.randn(b, f, d, dtype=torch.float64,
                                      generator=torch.Generator().manual_seed(seed)),
    st.integers(1, 3), st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**31))


@given(embs)
def test_fm_interaction_is_the_sum_of_pairwise_dots(emb: torch.Tensor) -> None:
    torch.testing.assert_close(fm_interaction(emb), _pairwise(emb).sum(dim=1))


@given(embs)
def test_bi_interaction_is_the_sum_of_pairwise_products(emb: torch.Tensor) -> None:
    torch.testing.assert_close(bi_interaction(emb), _pairwise(emb))


def test_dcn_cross_layer_formula() -> None:
    """Two layers ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l``, worked by hand on d = 3."""
    torch.manual_seed(0)
    model = DCNv2(ModelShape(n_fields=1, dim=2, n_dense=1), n_cross=2, hidden=())
    with torch.no_grad():
        model.cross[0].linear.weight.copy_(torch.tensor([[1.0, 0, 2], [0, -1, 0], [0.5, 0, 0]]))
        model.cross[0].linear.bias.copy_(torch.tensor([0.0, 1, -1]))
        model.cross[1].linear.weight.copy_(2 * torch.eye(3))
        model.cross[1].linear.bias.zero_()
    x0 = torch.tensor([[1.0, 2, 3]])
    # W0 x0 + b0 = [7, -1, -0.5]      -> x1 = [1*7 + 1, 2*-1 + 2, 3*-0.5 + 3] = [8, 0, 1.5]
    # W1 x1 + b1 = [16, 0, 3]         -> x2 = [1*16 + 8, 0 + 0, 3*3 + 1.5]    = [24, 0, 10.5]
    x1, x2 = torch.tensor([[8.0, 0, 1.5]]), torch.tensor([[24.0, 0, 10.5]])
    torch.testing.assert_close(model.cross[0](x0, x0), x1)
    torch.testing.assert_close(model.cross[1](x0, x1), x2)
    x = ModelInputs(emb=x0[:, :2].reshape(1, 1, 2), dense=x0[:, 2:])
    torch.testing.assert_close(model(x), model.deep(x2).squeeze(-1))


def test_din_ignores_padded_positions() -> None:
    model, x = make("din"), inputs()
    hist, mask = x.sequences["hist"]
    assert (~mask).any()
    m = mask.unsqueeze(-1)
    for pad in (1e3 * torch.randn_like(hist), torch.full_like(hist, torch.nan)):
        changed = ModelInputs(x.emb, x.dense, None, {"hist": (torch.where(m, hist, pad), mask)})
        assert torch.equal(model(changed), model(x))


def test_din_attention_depends_on_the_sequence() -> None:
    model, x = make("din"), inputs()
    hist, mask = x.sequences["hist"]
    shifted = ModelInputs(x.emb, x.dense, None, {"hist": (hist + 1.0, mask)})
    assert not torch.allclose(model(shifted), model(x))


def test_din_unknown_sequence_field() -> None:
    with pytest.raises(ConfigError, match=r"model\.sequence.*'clicks'.*\['hist'\]"):
        build_model("din", SHAPE, sequence="clicks")
    with pytest.raises(ConfigError, match=r"target_field"):
        build_model("din", ModelShape(F, D, DD, ("hist",), target_field=F), sequence="hist")


def test_unknown_model_lists_the_allowed_names() -> None:
    with pytest.raises(ConfigError) as exc:
        build_model("xdeepfm", SHAPE)
    assert all(name in str(exc.value) for name in NAMES)


@pytest.mark.parametrize(("name", "kwargs", "param"), [
    ("wide_deep", {"hidden": (256, 0)}, r"model\.hidden\[1\]"),
    ("deepfm", {"hidden": 256}, r"model\.hidden"),
    ("nfm", {"hidden": (-4,)}, r"model\.hidden\[0\]"),
    ("nfm", {"dropout": 1.0}, r"model\.dropout"),
    ("dcn_v2", {"n_cross": 0}, r"model\.n_cross"),
    ("dcn_v2", {"n_cross": 1.5}, r"model\.n_cross"),
    ("dlrm", {"bottom": (64, D + 1)}, r"model\.bottom"),
    ("dlrm", {"top": (0,)}, r"model\.top\[0\]"),
    ("din", {"att_hidden": (True,)}, r"model\.att_hidden\[0\]"),
    ("lr", {"hidden": (8,)}, r"unknown hyperparameter\(s\) \[.hidden.\] for .lr."),
])
def test_bad_hyperparameters(name: str, kwargs: dict, param: str) -> None:
    with pytest.raises(ConfigError, match=param):
        make(name, **kwargs)


def test_lists_are_accepted_as_layer_sizes() -> None:
    """Config files give lists, not tuples."""
    assert make("wide_deep", hidden=[8, 4])(inputs()).shape == (B,)
    assert make("dlrm", bottom=[8, D], top=[8])(inputs()).shape == (B,)


def test_wide_models_need_the_wide_weights() -> None:
    x = inputs()
    with pytest.raises(InputError, match="wide"):
        make("fm")(ModelInputs(emb=x.emb, dense=x.dense))


def test_dlrm_needs_two_vectors_to_interact() -> None:
    with pytest.raises(ConfigError, match="dlrm"):
        build_model("dlrm", ModelShape(n_fields=1, dim=D, n_dense=0))


def test_mlp_widths_and_dropout() -> None:
    torch.manual_seed(0)
    assert MLP(5, (), None).out_features == 5
    assert MLP(5, (7, 3), None).out_features == 3
    mlp = MLP(5, (7,), 2, dropout=0.5)
    assert mlp.out_features == 2 and mlp(torch.randn(4, 5)).shape == (4, 2)
    assert any(isinstance(m, torch.nn.Dropout) for m in mlp)
