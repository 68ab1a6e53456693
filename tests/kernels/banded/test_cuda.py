"""The CUDA banded forward kernel: its build wherever nvcc is (no GPU needed), its results against fp64 masked
dense on a GPU, and the host-side helpers everywhere."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

from kernels.banded import cuda
from lib.pruning.patterns import banded_mask

needs_nvcc = pytest.mark.skipif(cuda.nvcc() is None, reason="nvcc not found (CUDA_HOME, PATH, /usr/local/cuda)")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="the kernel runs on a CUDA GPU; none here")

# dtype -> (atol, rtol) against fp64 masked dense of the same (rounded) inputs: fp32 accumulation error for
# fp32, the output's rounding (2^-11, 2^-8 relative) for fp16 and bf16
TOLERANCES = {torch.float32: (1e-5, 1e-4), torch.float16: (1e-3, 1e-3), torch.bfloat16: (8e-3, 8e-3)}

# (out, in, band width): FC1 and FC2, sizes that are no multiple of the 64 x 64 tile or the 16-wide K slice,
# bands narrower and wider than a tile
SHAPES = [(111, 37, 10), (37, 111, 10), (96, 24, 7), (24, 96, 30), (512, 128, 60), (128, 512, 60), (384, 96, 200)]


def _arch() -> str:
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f"{major}{minor}"
    return "80"


@needs_nvcc
def test_the_kernel_compiles_with_nvcc_and_exports_its_launcher(tmp_path: Path) -> None:
    obj = cuda.compile_object(tmp_path, _arch())
    symbols = subprocess.run(["nm", "-g", "--defined-only", str(obj)], capture_output=True, text=True, check=True)
    assert any(line.split()[-2:] == ["T", cuda.LAUNCHER] for line in symbols.stdout.splitlines())
    # Linked alone (static cudart), the launcher answers argument errors before touching a device.
    library = tmp_path / "libbanded.so"
    subprocess.run([str(cuda.nvcc()), "-shared", str(obj), "-o", str(library)], capture_output=True, check=True)
    launcher = getattr(ctypes.CDLL(str(library)), cuda.LAUNCHER)
    launcher.restype = ctypes.c_char_p
    launcher.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 6 + [ctypes.c_int] * 3 + [ctypes.c_int64] * 3
    launcher.argtypes += [ctypes.c_void_p]
    assert launcher(0, None, None, None, None, None, None, 0, 5, 5, 5, 5, 5, None) is None  # no tokens: no launch
    assert b"dtype" in launcher(7, None, None, None, None, None, None, 1, 1, 1, 1, 1, 1, None)


@needs_nvcc
@pytest.mark.skipif(not cpp_extension.is_ninja_available(), reason="cpp_extension.load needs ninja; not on PATH")
def test_the_extension_builds_links_and_imports_without_a_gpu(tmp_path: Path) -> None:
    module = cuda.build_check(tmp_path, _arch())
    lo = hi = torch.zeros(4, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="CUDA device"):  # the binding's own check: these are CPU tensors
        module.forward(torch.randn(2, 3), torch.randn(4, 3), None, lo, hi, torch.empty(2, 4), 0)


def test_ranges_of_a_small_band_by_hand() -> None:
    # FC1 (8, 2), r = 4, width 2: |j - 4i| <= 1 keeps rows 0-1 of column 0 and rows 3-5 of column 1
    lo, hi = cuda.ranges_from_mask(banded_mask(8, 2, 2))
    assert lo.tolist() == [0, 0, 0, 1, 1, 1, 0, 0] and hi.tolist() == [1, 1, 0, 2, 2, 2, 0, 0]
    assert lo.dtype == hi.dtype == torch.int32
    lo, hi = cuda.ranges_from_mask(banded_mask(2, 8, 2))  # FC2: the transpose
    assert lo.tolist() == [0, 3] and hi.tolist() == [2, 6]


def test_ranges_rebuild_every_banded_mask_and_refuse_gaps() -> None:
    for out_features, in_features, width in SHAPES:
        mask = banded_mask(out_features, in_features, width)
        lo, hi = cuda.ranges_from_mask(mask)
        cols = torch.arange(in_features)
        assert torch.equal((lo[:, None] <= cols) & (cols < hi[:, None]), mask)
    with pytest.raises(ValueError, match="row 1 "):
        cuda.ranges_from_mask(torch.tensor([[True, True, False], [True, False, True]]))


def test_the_launcher_refuses_cpu_tensors_before_building() -> None:
    weight, x = torch.randn(8, 2), torch.randn(3, 2)
    with pytest.raises(ValueError, match="one CUDA device"):
        cuda.cuda_banded_forward(x, weight, None, cuda.ranges_from_mask(banded_mask(8, 2, 2)))


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch is a CUDA build: load() builds")
def test_load_says_why_a_cpu_torch_cannot_build() -> None:
    with pytest.raises(RuntimeError, match="CPU build"):
        cuda.load()


def test_the_build_goes_to_a_cache_outside_the_repository() -> None:
    repo = Path(__file__).resolve().parents[3]
    assert not cuda.cache_dir().resolve().is_relative_to(repo)


@needs_gpu
@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("tokens", [1, 130])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_fp64_masked_dense(shape: tuple[int, int, int], tokens: int, dtype: torch.dtype) -> None:
    out_features, in_features, width = shape
    torch.manual_seed(0)
    mask = banded_mask(out_features, in_features, width).cuda()
    # Nonzero weights outside the band: the kernel must read them as zero (it computes W ⊙ M).
    weight = (torch.randn(out_features, in_features, device="cuda") / in_features**0.5).to(dtype)
    bias = torch.randn(out_features, device="cuda").to(dtype)
    x = torch.randn(tokens, 3, 2 * in_features, device="cuda").to(dtype)[..., ::2]  # non-contiguous
    y = cuda.cuda_banded_forward(x, weight, bias, cuda.ranges_from_mask(mask))
    expected = x.double() @ (weight.double() * mask).T + bias.double()
    atol, rtol = TOLERANCES[dtype]
    assert y.dtype == dtype and y.shape == (tokens, 3, out_features)
    torch.testing.assert_close(y.double(), expected, atol=atol, rtol=rtol)


@needs_gpu
@pytest.mark.parametrize("dtype", list(TOLERANCES))
def test_forward_with_any_row_ranges_empty_rows_and_no_bias(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    out_features, in_features = 200, 150
    lo = torch.randint(0, in_features, (out_features,), device="cuda")
    hi = (lo + torch.randint(0, 70, (out_features,), device="cuda")).clamp(max=in_features)
    hi[::7] = lo[::7]  # empty rows: y = 0 there
    cols = torch.arange(in_features, device="cuda")
    mask = (lo[:, None] <= cols) & (cols < hi[:, None])
    weight = torch.randn(out_features, in_features, device="cuda").to(dtype)
    x = torch.randn(77, in_features, device="cuda").to(dtype)
    y = cuda.cuda_banded_forward(x, weight, None, (lo.int(), hi.int()))
    atol, rtol = TOLERANCES[dtype]
    scale = in_features**0.5  # unscaled weights: |y| ~ sqrt(kept columns)
    expected = x.double() @ (weight.double() * mask).T
    torch.testing.assert_close(y.double(), expected, atol=atol * scale, rtol=rtol)
    assert not y[:, ::7].any()  # empty rows of the mask: zero outputs
