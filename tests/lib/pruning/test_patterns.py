"""N:M and banded sparsity patterns on hand-computed cases, and the 2:4 layout torch's kernels accept."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest
import torch
from torch import nn

from lib.pruning.patterns import (
    NotSemiStructured,
    band_density,
    band_width_for,
    banded_mask,
    is_2_4,
    nm_mask,
    nm_mask_partial,
    semi_structured_unsupported,
    to_semi_structured,
)

T, F = True, False

# Row 0: distinct scores. Row 1: group 0 all tied, group 1 with a tie for the second place.
SCORES_2x8 = torch.tensor(
    [
        [1.0, 5.0, 3.0, 2.0, 0.5, 0.1, 9.0, 8.0],
        [4.0, 4.0, 4.0, 4.0, -1.0, 2.0, 2.0, -3.0],
    ]
)


def test_2_4_by_hand():
    expected = torch.tensor(
        [
            [F, T, T, F, F, F, T, T],
            [T, T, F, F, F, T, T, F],
        ]
    )
    mask = nm_mask(SCORES_2x8, 2, 4)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, expected)


def test_4_8_by_hand_with_tie():
    scores = torch.tensor([[0.3, -2.0, 7.0, 1.0, 1.0, 0.0, 6.0, 2.0]])
    # 7, 6, 2 kept; the two 1.0s tie for the fourth place: the lower index (3) is kept.
    assert torch.equal(nm_mask(scores, 4, 8), torch.tensor([[F, F, T, T, F, F, T, T]]))


def test_ties_keep_lower_index_first():
    scores = torch.tensor([[3.0, 1.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.equal(nm_mask(scores, 2, 4), torch.tensor([[T, F, T, F], [T, T, F, F]]))
    assert torch.equal(nm_mask(scores, 1, 4), torch.tensor([[T, F, F, F], [T, F, F, F]]))


def test_partial_by_hand():
    expected = torch.tensor(
        [
            [F, T, T, T, T, F, T, T],
            [T, T, T, F, T, T, T, F],
        ]
    )
    assert torch.equal(nm_mask_partial(SCORES_2x8, 2, 4, zeros=1), expected)
    assert nm_mask_partial(SCORES_2x8, 2, 4, zeros=0).all()


@pytest.mark.parametrize("shape", [(16, 32), (5, 24), (8, 4, 3, 2), (6, 8, 1), (4, 2, 2, 2, 2)])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8), (1, 2)])
def test_exactly_n_kept_per_group_and_they_are_the_top_n(shape, n, m):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(shape, generator=g)
    mask = nm_mask(scores, n, m)
    assert mask.shape == scores.shape and mask.dtype == torch.bool
    groups = scores.reshape(shape[0], -1, m)  # (out, in_flat / m, m): groups along the flattened input dims
    kept = mask.reshape(shape[0], -1, m)
    assert (kept.sum(-1) == n).all()
    lowest_kept = groups.masked_fill(~kept, float("inf")).amin(-1)
    highest_pruned = groups.masked_fill(kept, float("-inf")).amax(-1)
    assert (lowest_kept >= highest_pruned).all()


@pytest.mark.parametrize("shape", [(16, 32), (8, 4, 3, 2)])
def test_partial_prunes_exactly_zeros_per_group_and_nests(shape):
    n, m = 2, 8
    scores = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    previous = torch.ones(shape, dtype=torch.bool)
    for zeros in range(m - n + 1):
        mask = nm_mask_partial(scores, n, m, zeros)
        assert ((~mask).reshape(shape[0], -1, m).sum(-1) == zeros).all()
        assert not (mask & ~previous).any()  # a gradual schedule only ever adds to the pruned set
        previous = mask
    assert torch.equal(nm_mask_partial(scores, n, m, m - n), nm_mask(scores, n, m))


def test_nan_scores_are_pruned_first():
    scores = torch.tensor([[float("nan"), 1.0, 2.0, 3.0]])
    assert torch.equal(nm_mask(scores, 2, 4), torch.tensor([[F, F, T, T]]))


@pytest.mark.parametrize("shape", [(4, 6), (8, 3, 3, 3), (2, 10)])
def test_indivisible_input_dim_raises_naming_shape_and_m(shape):
    with pytest.raises(ValueError, match=re.escape(str(tuple(shape))) + ".*M=4"):
        nm_mask(torch.randn(shape), 2, 4)


def test_bad_n_m_or_zeros_raise():
    scores = torch.randn(4, 8)
    for n, m in [(0, 4), (5, 4)]:
        with pytest.raises(ValueError, match="1 <= N <= M"):
            nm_mask(scores, n, m)
    for zeros in (-1, 3):
        with pytest.raises(ValueError, match="zeros per group"):
            nm_mask_partial(scores, 2, 4, zeros)
    with pytest.raises(ValueError, match="2\\+ dims"):
        nm_mask(torch.randn(8), 2, 4)


def test_2_4_layout_is_the_one_torch_compresses():
    """Groups of 4 consecutive elements along the last dim of a row-major (out, in) matrix: sum to 2 on the last
    axis, and torch's own CUTLASS 2:4 compressor (pure tensor code, runs on CPU) round-trips the masked weight."""
    from torch.sparse._semi_structured_conversions import (
        sparse_semi_structured_from_dense_cutlass,
        sparse_semi_structured_to_dense_cutlass,
    )

    weight = torch.randn(32, 64, generator=torch.Generator().manual_seed(2)).half()
    mask = nm_mask(weight.abs(), 2, 4)
    assert (mask.reshape(32, 64 // 4, 4).sum(-1) == 2).all()  # (out, in/4, 4)
    masked = weight * mask
    packed, meta = sparse_semi_structured_from_dense_cutlass(masked)
    assert packed.shape == (32, 32)  # half the values stored
    assert torch.equal(sparse_semi_structured_to_dense_cutlass(packed, meta), masked)
    # The same 50% sparsity along the other axis is not the 2:4 layout: values are lost in the round trip.
    wrong = weight * nm_mask(weight.abs().t(), 2, 4).t()
    packed, meta = sparse_semi_structured_from_dense_cutlass(wrong)
    assert not torch.equal(sparse_semi_structured_to_dense_cutlass(packed, meta), wrong)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="to_sparse_semi_structured needs CUDA")
def test_to_sparse_semi_structured_accepts_masked_fp16_weight():
    weight = torch.randn(64, 128, device="cuda", dtype=torch.float16)
    masked = weight * nm_mask(weight.abs(), 2, 4)
    sparse = torch.sparse.to_sparse_semi_structured(masked)
    assert torch.equal(sparse.to_dense(), masked)


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8,
    reason="2:4 sparse tensor cores need a CUDA GPU with compute capability >= 8.0",
)
def test_to_semi_structured_swaps_weight_on_cuda():
    layer = nn.Linear(128, 64, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        layer.weight.mul_(nm_mask(layer.weight.abs(), 2, 4))
    dense = layer.weight.detach().clone()
    x = torch.randn(32, 128, device="cuda", dtype=torch.float16)
    expected = nn.functional.linear(x, dense, layer.bias)
    assert to_semi_structured(layer) is layer
    assert isinstance(layer.weight.data, torch.sparse.SparseSemiStructuredTensor)
    assert not layer.weight.requires_grad
    torch.testing.assert_close(layer(x), expected, rtol=1e-2, atol=1e-2)


def test_to_semi_structured_refuses_a_cpu_layer_naming_why_and_leaves_it_unchanged():
    layer = nn.Linear(64, 32)
    with torch.no_grad():
        layer.weight.mul_(nm_mask(layer.weight.abs(), 2, 4))
    weight, bias = layer.weight, layer.bias
    with pytest.raises(NotSemiStructured, match="live on a CUDA GPU; this one is on cpu: move the layer first"):
        to_semi_structured(layer, torch.float16)
    assert layer.weight is weight and layer.bias is bias


def test_is_2_4_by_hand():
    assert is_2_4(torch.tensor([[1.0, 0, 2, 0, 0, 0, 0, 3]]))  # 2 and 1 nonzeros per group of 4
    assert not is_2_4(torch.tensor([[1.0, 1, 2, 0, 0, 0, 0, 3]]))  # 3 in the first group
    assert not is_2_4(torch.tensor([[1.0, 0, 2]]))  # no whole groups of 4
    assert is_2_4(torch.zeros(2, 4)) and not is_2_4(torch.zeros(4))  # a row vector is not a weight


def test_semi_structured_unsupported_names_the_device():
    assert semi_structured_unsupported(torch.device("cpu")) == (
        "2:4 semi-structured Linears need a CUDA GPU with compute capability >= 8.0 (this run is on cpu)"
    )


def _band_by_formula(out_features: int, in_features: int, bandwidth: int) -> list[list[bool]]:
    """The band from its definition, entry by entry with exact rationals; wide = the larger side."""
    wide, narrow = max(out_features, in_features), min(out_features, in_features)
    r = Fraction(wide, narrow)
    fc1 = [[abs(Fraction(j) - i * r) <= Fraction(bandwidth, 2) for i in range(narrow)] for j in range(wide)]
    if out_features >= in_features:
        return fc1
    return [[fc1[j][i] for j in range(wide)] for i in range(narrow)]


def test_banded_fc1_c3_r4_by_hand():
    # bandwidth 4: input i reaches outputs 4i-2 .. 4i+2 (clipped at 0).
    keep4 = {0: {0, 1, 2}, 1: {2, 3, 4, 5, 6}, 2: {6, 7, 8, 9, 10}}
    # bandwidth 2: outputs 4i-1 .. 4i+1; outputs 2, 6, 10, 11 connect to nothing.
    keep2 = {0: {0, 1}, 1: {3, 4, 5}, 2: {7, 8, 9}}
    for bandwidth, keep in [(4, keep4), (2, keep2)]:
        expected = torch.tensor([[j in keep[i] for i in range(3)] for j in range(12)])
        mask = banded_mask(12, 3, bandwidth)
        assert mask.shape == (12, 3) and mask.dtype == torch.bool
        assert torch.equal(mask, expected)
        assert torch.equal(mask, torch.tensor(_band_by_formula(12, 3, bandwidth)))
    assert band_density(banded_mask(12, 3, 4)) == pytest.approx(13 / 36)
    assert band_density(banded_mask(12, 3, 2)) == pytest.approx(8 / 36)
    # Odd bandwidth: |j - 4i| <= 1.5 is |j - 4i| <= 1, the same band as bandwidth 2.
    assert torch.equal(banded_mask(12, 3, 3), banded_mask(12, 3, 2))


@pytest.mark.parametrize(
    ("bandwidth", "kept", "percent"),
    [
        # FC1 of GPT-2 small, 2048 x 512 (r = 4), kept entries summed by hand over the narrow channels i: the
        # first ones clipped at 0, the middle ones with bandwidth + 1 neighbours, the last ones clipped at 2047.
        (1024, 98_176 + 256 * 1025 + 98_560, 43.8),  # i < 128: 4i + 513; i >= 384: 2560 - 4i
        (512, 24_512 + 384 * 513 + 24_704, 23.5),  # i < 64: 4i + 257; i >= 448: 2304 - 4i (published: 21.9)
        (256, 6_112 + 448 * 257 + 6_208, 12.2),  # i < 32: 4i + 129; i >= 480: 2176 - 4i (published: 10.9)
    ],
)
def test_banded_density_of_gpt2_small_fc1_by_hand(bandwidth, kept, percent):
    mask = banded_mask(2048, 512, bandwidth)
    assert int(mask.count_nonzero()) == kept
    assert band_density(mask) == kept / (2048 * 512) and round(100 * band_density(mask), 1) == percent


def test_band_width_for_picks_the_nearest_even_width():
    # (12, 3), by hand above: width 2 keeps 8/36 = 0.222, width 4 keeps 13/36 = 0.361; width 6 keeps 0.5
    assert band_width_for(12, 3, 0.25) == (2, pytest.approx(8 / 36))
    assert band_width_for(3, 12, 0.35) == (4, pytest.approx(13 / 36))
    # GPT-2 small FC1: the counts of the test above
    assert band_width_for(2048, 512, 0.122) == (256, pytest.approx((6_112 + 448 * 257 + 6_208) / (2048 * 512)))
    for out_features, in_features, density in [(512, 128, 0.12), (128, 512, 0.44), (3072, 768, 0.24)]:
        width, achieved = band_width_for(out_features, in_features, density)
        assert width % 2 == 0 and achieved == band_density(banded_mask(out_features, in_features, width))
        for other in (width - 2, width + 2):  # no even width is nearer
            assert abs(band_density(banded_mask(out_features, in_features, other)) - density) >= abs(achieved - density)


@pytest.mark.parametrize(
    ("out_features", "in_features", "bandwidth"),
    [(12, 3, 4), (12, 3, 2), (12, 3, 1), (12, 3, 7), (3, 12, 4), (3, 12, 2), (16, 4, 6), (4, 16, 5), (5, 5, 2)],
)
def test_banded_matches_formula(out_features, in_features, bandwidth):
    expected = torch.tensor(_band_by_formula(out_features, in_features, bandwidth))
    assert torch.equal(banded_mask(out_features, in_features, bandwidth), expected)


def test_banded_fc2_is_fc1_transposed():
    for bandwidth in (1, 2, 4, 6):
        fc1, fc2 = banded_mask(12, 3, bandwidth), banded_mask(3, 12, bandwidth)
        assert fc2.shape == (3, 12)
        assert torch.equal(fc2, fc1.t())
        assert band_density(fc2) == band_density(fc1)


def test_banded_bandwidth_zero_is_dense_and_wide_band_is_dense():
    for shape in [(12, 3), (3, 12), (7, 7)]:
        mask = banded_mask(*shape, 0)
        assert mask.shape == shape and mask.all()
        assert band_density(mask) == 1.0
    assert band_density(banded_mask(12, 3, 2 * 11)) == 1.0  # |j - 4i| <= 11 covers every entry
    assert band_density(banded_mask(12, 3, 2 * 11 - 1)) < 1.0


@pytest.mark.parametrize("shape", [(10, 3), (3, 10), (8, 6)])
def test_banded_non_integer_ratio_raises_naming_shape(shape):
    with pytest.raises(ValueError, match=rf"\({shape[0]}, {shape[1]}\)"):
        banded_mask(*shape, 4)


def test_banded_negative_bandwidth_raises():
    with pytest.raises(ValueError, match="bandwidth"):
        banded_mask(12, 3, -1)
