"""KV compression (kernels/kv_compress): the PCA round trip on data of known rank, the monotone spline on
hand-computed knots and the spline + PCA variant on curved data, the model with compressed values against the
exact one, the cache's measured bytes, decoding through the compressed cache, and make sample's line."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kernels
from kernels.kv_compress import KVCompressKernel, cache_bytes, head_projections
from kernels.kv_compress.reference import MonotoneSpline, SplineBasis, fit, fit_spline, relative_error
from lib import config as cfgmod
from models.gpt2.model import GPT2, GPT2Config
from scripts import sample
from tests.helpers import HANG_GUARD_SECONDS, ROOT, gpt2_run


def test_pca_reconstructs_data_of_its_rank_and_orders_the_axes() -> None:
    """Vectors mean + a·u + b·w (u, w orthonormal, a of larger spread than b) in 8 dimensions: rank 2 is exact,
    rank 1 keeps u (the larger spread) and leaves b·w as error."""
    gen = torch.Generator().manual_seed(0)
    u, w = torch.linalg.qr(torch.randn(8, 2, generator=gen, dtype=torch.float64))[0].T
    coords = torch.randn(500, 2, generator=gen, dtype=torch.float64)
    coords = torch.linalg.qr(coords - coords.mean(0))[0] * 500**0.5  # mean 0, uncorrelated, unit variance
    a, b = 3 * coords[:, :1], coords[:, 1:]
    x = (torch.full((8,), 2.0, dtype=torch.float64) + a * u + b * w)[None]  # (1 head, 500, 8)
    two = fit(x, 2)
    assert relative_error(x[None], two) < 1e-12
    torch.testing.assert_close(two.axes[0].T @ two.axes[0], torch.eye(2, dtype=torch.float64))
    one = fit(x, 1)
    assert abs(abs(float(one.axes[0, :, 0] @ u)) - 1) < 1e-6  # the first axis is u, up to sign
    error = x - one.decode(one.encode(x[None]))[0]
    torch.testing.assert_close(error[0], b * w, atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="rank 9"):
        fit(x, 9)


def _model() -> GPT2:
    torch.manual_seed(0)
    return GPT2(GPT2Config(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=64)).eval()


def _kernel(model: GPT2, rank: int, keys: bool = False) -> KVCompressKernel:
    kernel = KVCompressKernel(KVCompressKernel.Settings(rank=rank, keys=keys))
    kernel.calibrate(model, torch.randint(64, (4, 32), generator=torch.Generator().manual_seed(1)))
    return kernel


def test_full_rank_is_exact_and_a_low_rank_changes_the_model_by_its_error() -> None:
    model, idx = _model(), torch.randint(64, (2, 20))
    with torch.no_grad():
        exact = model(idx)
        assert _kernel(model, 16, keys=True).apply(model, "inference", torch.device("cpu")) == [
            "transformer.h.0.attn",
            "transformer.h.1.attn",
        ]
        torch.testing.assert_close(model(idx), exact, atol=1e-5, rtol=1e-5)  # rank = head dim: a rotation
        kernel = _kernel(model := _model(), 2)
        kernel.apply(model, "inference", torch.device("cpu"))
        assert 0 < max(e["v"] for e in kernel.errors.values()) < 1 and all("k" not in e for e in kernel.errors.values())
        assert (model(idx) - exact).abs().max() > 1e-4


def test_the_cache_holds_codes_and_decoding_through_it_matches_a_full_pass() -> None:
    """Measured cache bytes, 2 layers x 2 sequences x 2 heads x 20 tokens, fp32: keys and values 16 dims each,
    2 · 2 · 2 · 20 · 32 · 4 = 20,480 bytes; values at rank 4: 2 · 2 · 2 · 20 · (16 + 4) · 4 = 12,800."""
    model, idx = _model(), torch.randint(64, (2, 20))
    assert cache_bytes(model, idx) == 20_480
    _kernel(model, 4).apply(model, "inference", torch.device("cpu"))
    assert cache_bytes(model, idx) == 12_800
    with torch.no_grad():
        cache = model.new_cache()
        steps = torch.cat([model(idx[:, :7], cache), model(idx[:, 7:8], cache), model(idx[:, 8:], cache)], dim=1)
        torch.testing.assert_close(steps, model(idx), atol=1e-5, rtol=1e-5)
    assert torch.equal(
        model.generate(idx[:, :5], 40, temperature=0), model.generate(idx[:, :5], 40, 0, use_cache=False)
    )


def test_head_projections_are_the_keys_and_values_the_attention_uses() -> None:
    model, idx = _model(), torch.randint(64, (3, 10))
    k, v = head_projections(model, idx)["transformer.h.1.attn"]
    assert k.shape == v.shape == (2, 30, 16)
    attn = model.transformer.h[0].attn
    x = model.transformer.h[0].ln_1(model.transformer.wte(idx) + model.transformer.wpe(torch.arange(10)))
    _, _, v0 = attn.c_attn(x).split(32, dim=2)
    torch.testing.assert_close(
        head_projections(model, idx)["transformer.h.0.attn"][1], v0.reshape(30, 2, 16).transpose(0, 1)
    )


def test_make_sample_reports_the_perplexity_cost_of_the_compression(tmp_path: Path, caplog) -> None:
    run = gpt2_run(tmp_path, f"DATA_DIR={tmp_path}", "KERNELS_KV_COMPRESS=y", "KV_COMPRESS_RANK=4")
    with caplog.at_level(logging.INFO, logger="scripts.sample"):
        model, _ = sample.load_model(run)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "scripts.sample"]
    assert line.startswith("validation perplexity ") and "with kv_compress (1 layers)" in line
    assert model.transformer.h[0].attn.kv_basis["v"].rank == 4
    cfg = cfgmod.from_defaults(["KERNELS_KV_COMPRESS=y", "KV_COMPRESS_RANK=8", "KV_COMPRESS_KEYS=y"])
    assert KVCompressKernel.from_config(cfg).settings == KVCompressKernel.Settings(rank=8, keys=True)
    spline = cfgmod.from_defaults(
        ["KERNELS_KV_COMPRESS=y", "KV_COMPRESS_METHOD=spline_pca", "KV_COMPRESS_SPLINE_KNOTS=8"]
    )
    assert KVCompressKernel.from_config(spline).settings == KVCompressKernel.Settings(method="spline_pca", knots=8)
    recorded = {k: v for k, v in cfg.values.items() if not k.startswith("KV_COMPRESS_METHOD")}
    assert KVCompressKernel.from_config(cfgmod.Config(recorded)).settings.method == "pca"  # a run from before
    assert kernels.calibrating(cfg, "inference") and not kernels.selected(cfg, "train")


def test_the_monotone_spline_interpolates_its_knots_and_inverts_exactly() -> None:
    """Knots (0, 0), (1, 2), (3, 3): slope 2 then 1/2, and the end segments' lines beyond the ends."""
    spline = MonotoneSpline(torch.tensor([[[0.0, 1.0, 3.0]]]), torch.tensor([[[0.0, 2.0, 3.0]]]))  # 1 head, d = 1
    x = torch.tensor([-1.0, 0.5, 1.0, 2.0, 4.0]).view(1, 1, 5, 1)  # (B, nh, T, d)
    assert spline(x).flatten().tolist() == [-2.0, 1.0, 2.0, 2.5, 3.5]
    assert spline.inverse(spline(x)).flatten().tolist() == x.flatten().tolist()


def _curved(n: int = 4000) -> torch.Tensor:
    """Two heads of (t, t³, 2t + 1) with t Gaussian: one degree of freedom on a curve, not a line."""
    t = torch.randn(2, n, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return torch.cat([t, t**3, 2 * t + 1], dim=-1)


def test_spline_pca_straightens_a_curve_that_pca_cannot_flatten() -> None:
    """Gaussianising t³ gives back a multiple of t: after the warp the data is a line, which rank 1 holds up
    to the spline's own error, which shrinks as its segments do (measured: 0.12, 0.042, 0.017 at 4, 16 and 64
    segments, against PCA's 0.28)."""
    x = _curved()
    pca = relative_error(x[None], fit(x, 1))
    spline = [relative_error(x[None], fit_spline(x, 1, knots)) for knots in (4, 16, 64)]
    assert pca > 0.25 and spline[0] > spline[1] > spline[2] and spline[1] < pca / 5
    assert fit_spline(x, 1).blend.tolist() == [1.0, 1.0]  # the full Gaussianising warp in both heads
    assert fit_spline(x, 1).rank == 1 and fit_spline(x, 1).encode(x[None]).shape == (1, 2, 4000, 1)


def test_spline_pca_is_never_worse_than_pca_on_its_calibration_data() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 600, 8, generator=gen) @ torch.randn(8, 8, generator=gen)  # Gaussian: PCA's own case
    x[1] = x[1].exp()  # a skewed head
    x[2, :, 5] = 4.0  # a constant dimension
    x[2, :, 6] = torch.randint(0, 3, (600,), generator=gen).float()  # a dimension of three values
    for rank in (1, 3, 8):
        basis = fit_spline(x, rank)
        back = basis.decode(basis.encode(x[None]))
        assert torch.isfinite(back).all()
        assert relative_error(x[None], basis) <= relative_error(x[None], fit(x, rank)) + 1e-5
    assert relative_error(x[None], fit_spline(x, 8)) < 1e-5  # full rank: the warp and a rotation, both invertible
    with pytest.raises(ValueError, match="knots 1: at least 2"):
        fit_spline(x, 2, knots=1)


def test_spline_pca_in_the_model_caches_the_same_bytes_as_pca() -> None:
    model, idx = _model(), torch.randint(64, (2, 20))
    with torch.no_grad():
        exact = model(idx)
        kernel = KVCompressKernel(KVCompressKernel.Settings(rank=16, keys=True, method="spline_pca"))
        kernel.calibrate(model, torch.randint(64, (4, 32), generator=torch.Generator().manual_seed(1)))
        kernel.apply(model, "inference", torch.device("cpu"))
        torch.testing.assert_close(model(idx), exact, atol=1e-4, rtol=1e-4)  # full rank: invertible
    low = _model()
    kernel = KVCompressKernel(KVCompressKernel.Settings(rank=4, method="spline_pca"))
    kernel.calibrate(low, torch.randint(64, (4, 32), generator=torch.Generator().manual_seed(1)))
    kernel.apply(low, "inference", torch.device("cpu"))
    assert cache_bytes(low, idx) == 12_800  # as PCA at rank 4 (above)
    with torch.no_grad():
        cache = low.new_cache()
        steps = torch.cat([low(idx[:, :7], cache), low(idx[:, 7:], cache)], dim=1)
        torch.testing.assert_close(steps, low(idx), atol=1e-5, rtol=1e-5)


def test_make_sample_set_selects_inference_kernels_for_a_run_trained_without_them(tmp_path: Path, caplog) -> None:
    run = gpt2_run(tmp_path, f"DATA_DIR={tmp_path}")
    given = ["RESULTS_DIR=/elsewhere", "KERNELS_KV_COMPRESS=y", "KV_COMPRESS_RANK=4", "KV_COMPRESS_METHOD=spline_pca"]
    overrides, where = sample.split_kernel_overrides(given)
    assert where == ["RESULTS_DIR=/elsewhere"] and overrides == given[1:]
    with caplog.at_level(logging.INFO, logger="scripts.sample"):
        model, _ = sample.load_model(run, overrides=overrides)
    lines = [r.getMessage() for r in caplog.records if r.name == "scripts.sample"]
    assert lines[0].startswith("inference kernels from SET=: kv_compress (KERNELS_KV_COMPRESS=y")
    assert "with kv_compress (1 layers)" in lines[1]
    basis = model.transformer.h[0].attn.kv_basis["v"]
    assert isinstance(basis, SplineBasis) and basis.rank == 4
    plain, _ = sample.load_model(run)  # the run itself recorded no kernel
    assert getattr(plain.transformer.h[0].attn, "kv_basis", None) is None
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.sample", str(run), "--set", "KERNELS_SEMI_STRUCTURED=y", "--tokens", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )
    assert proc.returncode != 0 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "KERNELS_SEMI_STRUCTURED" in line and "PRUNING_NM_PATTERN_2_4" in line, line
