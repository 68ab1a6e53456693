"""One-shot methods: Wanda's per-row masks by hand, the reconstruction order SparseGPT < Wanda < magnitude on
correlated inputs, N:M validity and exact sparsity for every method, and what each returns."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lib import config as cfgmod
from lib.errors import UserError
from lib.oneshot import ONESHOT, LayerStats, OneShotMethod
from lib.oneshot.sparsegpt import SparseGPT
from lib.oneshot.wanda import Wanda
from lib.pruning.base import global_keep
from scripts.prune import build_method, result_name

T, F = True, False
PATTERNS = [(2, 4), (4, 8)]


def _stats(x: torch.Tensor) -> LayerStats:
    stats = LayerStats(x.shape[-1], hessian=True)
    stats.add(x)
    return stats


def _layer(out: int = 16, inp: int = 32, tokens: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight (out, in) and calibration inputs (tokens, in) whose columns are correlated (a random mixing A)
    and of unequal scale (so that input norms matter)."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(out, inp, generator=gen)
    mixing = torch.eye(inp) + 2 * torch.randn(inp, inp, generator=gen) / inp**0.5  # (in, in)
    scales = torch.randn(inp, generator=gen).exp()  # (in,)
    x = (torch.randn(tokens, inp, generator=gen) @ mixing) * scales  # (tokens, in)
    return weight, x


def _groups(t: torch.Tensor, m: int) -> torch.Tensor:
    return t.reshape(t.shape[0], -1, m)  # (out, in / m, m)


# Wanda by hand. Input norms ‖X_j‖₂ = 1, 2, 3, 4 (X = diag(1, 2, 3, 4), four tokens); scores |W_ij|·‖X_j‖₂:
#   row 0: |4, -1, 1, 0.25| * (1, 2, 3, 4) = 4, 2, 3, 1  -> prune inputs 3 and 1
#   row 1: |2,  4, -2,   1| * (1, 2, 3, 4) = 2, 8, 6, 4  -> prune inputs 0 and 3
# One threshold over the layer would prune the four lowest of all eight scores (1, 2, 2, 3): three of row 0.
WANDA_W = torch.tensor([[4.0, -1.0, 1.0, 0.25], [2.0, 4.0, -2.0, 1.0]])
WANDA_X = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0]))
WANDA_PER_ROW = torch.tensor([[T, F, T, F], [F, T, T, F]])
WANDA_PER_LAYER = torch.tensor([[T, F, F, F], [F, T, T, T]])


def test_wanda_prunes_per_row_by_hand():
    weight, mask = Wanda().prune(WANDA_W, _stats(WANDA_X), 0.5)
    assert torch.equal(mask, WANDA_PER_ROW)
    assert torch.equal(weight, torch.tensor([[4.0, 0.0, 1.0, 0.0], [0.0, 4.0, -2.0, 0.0]]))


def test_wanda_per_row_differs_from_per_layer_on_the_same_scores():
    scores = WANDA_W.abs() * _stats(WANDA_X).norms
    per_layer = torch.ones_like(scores, dtype=torch.bool)
    global_keep([scores], [per_layer], 0.5)
    assert torch.equal(per_layer, WANDA_PER_LAYER)
    _, mask = Wanda().prune(WANDA_W, _stats(WANDA_X), 0.5)
    assert torch.equal(mask, WANDA_PER_ROW)
    assert not torch.equal(mask, per_layer)


def test_the_comparison_group_settings_swap_row_and_layer():
    """ONESHOT_WANDA_PER_LAYER gives Wanda's scores under one layer-wide threshold (the per-layer mask above);
    ONESHOT_MAGNITUDE_PER_ROW keeps the 2 largest |W| of every row, where the layer-wide threshold prunes every
    entry of the small third row."""
    wanda = ONESHOT["wanda"](ONESHOT["wanda"].Settings(per_layer=True))
    _, mask = wanda.prune(WANDA_W, _stats(WANDA_X), 0.5)
    assert torch.equal(mask, WANDA_PER_LAYER)
    weight = torch.tensor([[0.5, -3.0, 2.0, 0.1], [-1.0, 0.2, 4.0, -0.3], [0.01, 0.02, 0.03, 0.04]])
    per_row = ONESHOT["magnitude"](ONESHOT["magnitude"].Settings(per_row=True))
    _, mask = per_row.prune(weight, _stats(WANDA_X), 0.5)
    assert torch.equal(mask, torch.tensor([[F, T, T, F], [T, F, T, F], [F, F, T, T]]))  # 2 of 4 in every row
    _, layer_mask = ONESHOT["magnitude"]().prune(weight, _stats(WANDA_X), 0.5)
    assert not layer_mask[2].any() and layer_mask.sum() == 6  # the small row loses everything over the layer
    cfg = cfgmod.from_defaults(["ONESHOT_WANDA_PER_LAYER=y", "ONESHOT_MAGNITUDE_PER_ROW=y"])
    assert build_method("wanda", cfg).settings.per_layer and build_method("magnitude", cfg).settings.per_row


def test_a_variant_names_the_settings_that_differ_from_the_defaults():
    """Results of one method under two settings never share a directory: the variant is part of the name."""
    assert [ONESHOT[name]().variant for name in ONESHOT] == [""] * len(ONESHOT)
    assert wanda_variant(per_layer=True) == "+per_layer"
    sparsegpt = SparseGPT(SparseGPT.Settings(percdamp=0.1, blocksize=64))
    assert sparsegpt.variant == "+percdamp0.1+blocksize64"
    assert result_name("sparsegpt", sparsegpt, 0.5, (2, 4)) == "sparsegpt+percdamp0.1+blocksize64-0.5-2of4"
    assert result_name("wanda", Wanda(), 0.7, None) == "wanda-0.7"


def wanda_variant(**settings) -> str:
    return Wanda(Wanda.Settings(**settings)).variant


def test_wanda_2_4_by_hand():
    # Scores 4, 2, 3, 1 and 2, 8, 6, 4: one group of 4 per row, the two highest kept.
    _, mask = Wanda().prune(WANDA_W, _stats(WANDA_X), 0.0, pattern=(2, 4))
    assert torch.equal(mask, torch.tensor([[T, F, T, F], [F, T, T, F]]))


def test_magnitude_by_hand():
    weight = torch.tensor([[0.5, -3.0, 2.0, 0.1], [-1.0, 0.2, 4.0, -0.3]])
    pruned, mask = ONESHOT["magnitude"]().prune(weight, _stats(WANDA_X), 0.5)  # one threshold over the layer
    assert torch.equal(mask, torch.tensor([[F, T, T, F], [T, F, T, F]]))
    assert torch.equal(pruned, weight * mask)


@pytest.mark.parametrize("pattern", [None, (2, 4)])
def test_reconstruction_error_sparsegpt_below_wanda_below_magnitude(pattern):
    weight, x = _layer(out=32, inp=64, tokens=1024)
    stats = _stats(x)
    dense = x @ weight.T  # (tokens, out)

    def error(name: str) -> float:
        pruned, _ = ONESHOT[name]().prune(weight, stats, 0.5, pattern)
        return float((dense - x @ pruned.T).norm() / dense.norm())

    sparsegpt, wanda, magnitude = error("sparsegpt"), error("wanda"), error("magnitude")
    assert sparsegpt < wanda < magnitude


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("name", ONESHOT.names())
def test_nm_every_group_keeps_n(name, pattern):
    n, m = pattern
    weight, x = _layer()
    weight[0, :m] = 0.0  # a group of zeros: the mask still keeps n, the weight has no nonzero there
    weight[1, 1::3] = 0.0
    pruned, mask = ONESHOT[name]().prune(weight, _stats(x), 0.0, pattern)
    assert (_groups(mask, m).sum(-1) == n).all()
    assert ((_groups(pruned, m) != 0).sum(-1) <= n).all()
    assert not pruned[0, :m].any()


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.75])
@pytest.mark.parametrize("name", ONESHOT.names())
def test_unstructured_sparsity_is_exact(name, sparsity):
    weight, x = _layer(out=10, inp=24)
    method = SparseGPT(SparseGPT.Settings(blocksize=10)) if name == "sparsegpt" else ONESHOT[name]()
    pruned, mask = method.prune(weight, _stats(x), sparsity)
    if name == "wanda":  # per output row
        assert ((~mask).sum(1) == round(sparsity * 24)).all()
    else:  # per layer (SparseGPT: per block, 3 blocks of 10, 10 and 4 columns here)
        assert int((~mask).sum()) == round(sparsity * weight.numel())
    assert int((pruned == 0).sum()) == int((~mask).sum())


@pytest.mark.parametrize("name", ONESHOT.names())
def test_returned_weight_is_zero_outside_the_mask(name):
    weight, x = _layer()
    pruned, mask = ONESHOT[name]().prune(weight, _stats(x), 0.6)
    assert mask.dtype == torch.bool and mask.shape == weight.shape
    assert pruned.dtype == weight.dtype and pruned.shape == weight.shape
    assert not pruned[~mask].any()


@pytest.mark.parametrize("name", ["magnitude", "wanda"])
def test_magnitude_and_wanda_keep_weights_unchanged(name):
    weight, x = _layer()
    pruned, mask = ONESHOT[name]().prune(weight, _stats(x), 0.6)
    assert torch.equal(pruned[mask], weight[mask])


def test_sparsegpt_updates_kept_weights():
    weight, x = _layer()
    pruned, mask = SparseGPT().prune(weight, _stats(x), 0.5)
    assert not torch.allclose(pruned[mask], weight[mask])


@pytest.mark.parametrize("name", ONESHOT.names())
def test_sparsity_zero_returns_the_weight(name):
    weight, x = _layer()
    pruned, mask = ONESHOT[name]().prune(weight, _stats(x), 0.0)
    assert mask.all()
    assert torch.equal(pruned, weight)


def test_sparsegpt_single_pruned_column_is_the_least_squares_fit():
    # Pruning only input 0 (the OBS step on the first column) moves each row's other weights to the exact
    # least-squares fit of the dense outputs: nothing is pruned later, so nothing disturbs the optimum.
    weight, x = _layer(out=4, inp=8, tokens=256)
    weight[:, 0] = 1e-3  # the lowest scores: 1/8 of the layer is column 0
    pruned, mask = SparseGPT(SparseGPT.Settings(percdamp=0.0)).prune(weight, _stats(x), 1 / 8)
    assert torch.equal(mask[:, 0], torch.zeros(4, dtype=torch.bool)) and mask[:, 1:].all()
    x64, w64 = x.double(), weight.double()
    fit = torch.linalg.lstsq(x64[:, 1:], x64 @ w64.T).solution.T  # (out, in - 1)
    torch.testing.assert_close(pruned[:, 1:].double(), fit, rtol=1e-4, atol=1e-4)


def test_sparsegpt_nm_result_does_not_depend_on_blocksize():
    # N:M masks are chosen column group by column group, so blocks change only the order of the updates.
    weight, x = _layer(inp=64)
    stats = _stats(x)
    small = SparseGPT(SparseGPT.Settings(blocksize=8)).prune(weight, stats, 0.0, (2, 4))
    whole = SparseGPT(SparseGPT.Settings(blocksize=64)).prune(weight, stats, 0.0, (2, 4))
    assert torch.equal(small[1], whole[1])
    torch.testing.assert_close(small[0], whole[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ONESHOT.names())
def test_dead_inputs(name):
    weight, x = _layer()
    x[:, 3] = 0.0  # input 3 is zero on every calibration token: H_33 = 0, ‖X_3‖ = 0
    pruned, mask = ONESHOT[name]().prune(weight, _stats(x), 0.5)
    assert torch.isfinite(pruned).all()
    if name != "magnitude":  # magnitude looks at the weights only
        # Wanda's scores are 0 there; SparseGPT zeroes a dead input's weights, which then score lowest
        assert not pruned[:, 3].any()
        assert not mask[:, 3].any()


def test_sparsegpt_cholesky_failure_names_the_fix():
    weight, x = _layer(inp=8)
    stats = _stats(x)
    stats._xtx = -torch.eye(8, dtype=torch.float64)  # not positive definite, whatever the dampening
    with pytest.raises(UserError, match="raise percdamp"):
        SparseGPT().prune(weight, stats, 0.5)


def test_sparsegpt_nm_needs_a_blocksize_multiple_of_m():
    weight, x = _layer()
    with pytest.raises(UserError, match="multiple of 8"):
        SparseGPT(SparseGPT.Settings(blocksize=12)).prune(weight, _stats(x), 0.0, (4, 8))


def test_every_registered_method_implements_prune_and_has_frozen_settings():
    assert {"magnitude", "wanda", "sparsegpt"} <= set(ONESHOT.names())
    for name in ONESHOT.names():
        cls = ONESHOT[name]
        assert issubclass(cls, OneShotMethod)
        assert cls.prune is not OneShotMethod.prune, name
        settings = cls.Settings()
        assert dataclasses.is_dataclass(settings) and cls.Settings.__dataclass_params__.frozen, name
        assert cls(settings).settings == settings
    assert ONESHOT["sparsegpt"].NEEDS_HESSIAN and not ONESHOT["wanda"].NEEDS_HESSIAN
