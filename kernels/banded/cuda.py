"""The CUDA banded forward kernel (``banded.cu``): built on first use, cached, launched on CUDA tensors.

``y = x (W ⊙ M)ᵀ + b`` where row ``n`` of the mask keeps the input columns ``[lo[n], hi[n])``
(:func:`ranges_from_mask`; every mask of :func:`lib.pruning.patterns.banded_mask` is one interval per row). The
kernel (math, tiling and references in ``banded.cu``'s header) runs only over the K tiles inside each output
tile's band and accumulates in fp32 for fp32, fp16 and bf16 inputs. Forward only: there is no backward kernel.

How it is built, and why this way. The kernel file includes only the CUDA runtime headers and exports one
``extern "C"`` launcher taking raw pointers and a ``cudaStream_t``; ``banded_binding.cpp`` (torch's tensor and
pybind11 headers, no CUDA header: the stream comes from Python as an integer) unpacks tensors into it.
:func:`load` builds the two with ``torch.utils.cpp_extension.load`` on first use (nvcc for the ``.cu``, for the
GPUs present or ``TORCH_CUDA_ARCH_LIST``, linked against ``c10_cuda``, ``torch_cuda`` and ``cudart``) into
``$XDG_CACHE_HOME/sparsity-lab/torch_extensions/`` (default ``~/.cache``), one directory per torch and CUDA
version; nothing is written into the repository, later processes load the cached library, and cpp_extension
rebuilds it when a source changes. That build needs a CUDA build of torch (and ``ninja``). On a CPU-only torch,
where the tests also run, :func:`build_check` does the rest of the work instead: nvcc compiles ``banded.cu`` to
an object with the flags cpp_extension uses (:func:`compile_object`: ``COMMON_NVCC_FLAGS``, ``-std=c++20``,
``-fPIC``, ``-O3``, one architecture; about 2 s, as the ``.cu`` includes no torch header), and
``cpp_extension.load`` builds the binding as a plain C++ extension linked against that object and ``cudart``,
then imports it (about 10-15 s). That proves both sources compile and link and that the module loads; only the
launch itself needs a GPU. Keeping torch out of the ``.cu`` and CUDA out of the binding is what makes this
possible and cheap.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import torch

from kernels.runtime import cache_root

NAME = "sparsity_lab_banded"
HERE = Path(__file__).resolve().parent
KERNEL_SOURCE = HERE / "banded.cu"
BINDING_SOURCE = HERE / "banded_binding.cpp"
LAUNCHER = "sparsity_lab_banded_forward"  # the extern "C" symbol banded.cu exports
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def cache_dir() -> Path:
    """Where :func:`load` builds: one directory per torch and CUDA version, outside the repository."""
    return cache_root() / "torch_extensions" / f"{NAME}-torch{torch.__version__}-cuda{torch.version.cuda}"


def cuda_home() -> Path | None:
    """The CUDA toolkit cpp_extension would use (its ``CUDA_HOME``, which a CPU build of torch leaves unset),
    else ``$CUDA_HOME``, ``$CUDA_PATH``, ``/usr/local/cuda`` or the one of the ``nvcc`` on ``PATH``: the first
    with ``bin/nvcc``; None when there is none."""
    from torch.utils import cpp_extension

    homes = [cpp_extension.CUDA_HOME, os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    if found := shutil.which("nvcc"):
        homes.append(str(Path(found).resolve().parent.parent))
    return next((Path(h) for h in homes if h and (Path(h) / "bin" / "nvcc").is_file()), None)


def nvcc() -> Path | None:
    """``bin/nvcc`` of :func:`cuda_home`, or None."""
    home = cuda_home()
    return None if home is None else home / "bin" / "nvcc"


def nvcc_flags(arch: str) -> list[str]:
    """The flags cpp_extension passes nvcc for a ``.cu`` source, plus ``-O3``, for compute capability ``arch``
    (``"80"`` for A100, ``"90"`` for H100/H200)."""
    from torch.utils import cpp_extension

    gencode = f"-gencode=arch=compute_{arch},code=sm_{arch}"
    return [*cpp_extension.COMMON_NVCC_FLAGS, "--compiler-options", "-fPIC", "-O3", "-std=c++20", gencode]


def compile_object(out_dir: Path, arch: str = "80") -> Path:
    """Compile ``banded.cu`` alone with nvcc into ``out_dir/banded.o`` (the build check for machines without
    a GPU or a CUDA torch); raises RuntimeError with nvcc's output when it fails or nvcc is absent."""
    compiler = nvcc()
    if compiler is None:
        raise RuntimeError("banded CUDA kernel: nvcc not found; set CUDA_HOME or put nvcc on PATH")
    out = Path(out_dir) / "banded.o"
    cmd = [str(compiler), "-c", str(KERNEL_SOURCE), "-o", str(out), *nvcc_flags(arch)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"banded CUDA kernel: nvcc failed ({' '.join(cmd)}):\n{done.stderr}")
    return out


def build_check(out_dir: Path, arch: str = "80") -> ModuleType:
    """Build the extension the way a CPU-only torch allows, in ``out_dir``: ``banded.cu`` to an object with
    :func:`compile_object`, then the binding with ``cpp_extension.load`` as a plain C++ extension linked
    against that object and the CUDA runtime, and import it. On a CPU-only torch this proves that both sources
    compile and link; calling it there fails cleanly (no CUDA tensors). Raises RuntimeError on failure."""
    from torch.utils import cpp_extension

    obj = compile_object(out_dir, arch)
    home = cuda_home()  # not None: compile_object found nvcc
    cuda_lib = next((d for d in (home / "lib64", home / "lib") if d.is_dir()), home / "lib64")
    return cpp_extension.load(
        name=f"{NAME}_check",
        sources=[str(BINDING_SOURCE)],
        extra_ldflags=[str(obj), f"-L{cuda_lib}", "-lcudart", f"-Wl,-rpath,{cuda_lib}"],
        build_directory=str(out_dir),
        with_cuda=False,
        verbose=False,
    )


@functools.cache
def load() -> ModuleType:
    """The compiled extension, built on the first call of the process (minutes the first time on a machine,
    then loaded from :func:`cache_dir`). Raises RuntimeError on a CPU-only torch."""
    if torch.version.cuda is None:
        raise RuntimeError(
            f"banded CUDA kernel: torch {torch.__version__} is a CPU build, so the extension cannot be built or "
            "run; use kernels.banded.reference, or build_check() to check that the extension compiles and links"
        )
    from torch.utils import cpp_extension

    build = cache_dir()
    build.mkdir(parents=True, exist_ok=True)
    return cpp_extension.load(
        name=NAME,
        sources=[str(BINDING_SOURCE), str(KERNEL_SOURCE)],
        build_directory=str(build),
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3"],
        verbose=False,
    )


@torch.no_grad()
def ranges_from_mask(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi)``, int32 (out,) on ``mask``'s device: row ``n`` of bool ``mask`` (out, in) keeps exactly the
    columns ``[lo[n], hi[n])`` (an empty row is ``[0, 0)``). Raises ValueError when a row's kept columns are not
    one interval (the kernel's masks are; a banded mask always is)."""
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"banded CUDA kernel: mask must be a 2-D bool tensor, got {mask.dtype} {tuple(mask.shape)}")
    in_features = mask.shape[1]
    keep = mask.to(torch.int8)
    count = keep.sum(1)
    lo = torch.where(count > 0, keep.argmax(1), 0)  # argmax: the first maximum, i.e. the first kept column
    hi = torch.where(count > 0, in_features - keep.flip(1).argmax(1), 0)
    bad = (hi - lo != count).nonzero()
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"banded CUDA kernel: row {row} of the mask keeps {int(count[row])} columns spread over "
            f"[{int(lo[row])}, {int(hi[row])}); the kernel needs one interval of kept columns per row"
        )
    return lo.to(torch.int32), hi.to(torch.int32)


def cuda_banded_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, ranges: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """``x (W ⊙ M)ᵀ + b`` for ``x`` (..., in) and ``weight`` (out, in) on one CUDA device, one dtype (fp32, fp16
    or bf16) shared with ``bias`` (out,) or None; ``ranges`` is ``(lo, hi)``, int (out,) each, row ``n`` keeping
    columns ``[lo[n], hi[n])`` (:func:`ranges_from_mask`; ``lo >= hi`` is an empty row, and the kernel clamps
    ranges to ``[0, in]``). Entries of ``weight`` outside the ranges are read as zero. Returns (..., out) in
    ``x``'s dtype."""
    lo, hi = ranges
    out_features, in_features = weight.shape
    if x.dtype not in DTYPES:
        raise ValueError(f"banded CUDA kernel: dtype {x.dtype}; one of {', '.join(map(str, DTYPES))}")
    tensors = {"weight": weight, "bias": bias, "lo": lo, "hi": hi}
    if not x.is_cuda or any(t.device != x.device for t in tensors.values() if t is not None):
        devices = ", ".join(f"{k} {t.device}" for k, t in {"x": x, **tensors}.items() if t is not None)
        raise ValueError(f"banded CUDA kernel: every tensor must be on one CUDA device, got {devices}")
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise ValueError(
            f"banded CUDA kernel: x, weight and bias must share a dtype, got {x.dtype}, {weight.dtype}"
            f"{'' if bias is None else f', {bias.dtype}'}; cast the weights to the input's dtype first"
        )
    if x.shape[-1] != in_features or (bias is not None and bias.shape != (out_features,)):
        raise ValueError(
            f"banded CUDA kernel: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
            f"bias {None if bias is None else tuple(bias.shape)} do not match"
        )
    if lo.shape != (out_features,) or hi.shape != (out_features,):
        raise ValueError(f"banded CUDA kernel: ranges must be two ({out_features},) tensors, one per output row")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_features)  # (M, in)
    if x2.shape[0] > 2**30:  # int32 token indices in the kernel, with room for a tile past the last one
        raise ValueError(f"banded CUDA kernel: {x2.shape[0]} tokens; at most 2**30 per call (split the batch)")
    x2 = x2 if x2.stride(1) == 1 else x2.contiguous()
    weight = weight if weight.stride(1) == 1 else weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    lo, hi = lo.to(torch.int32).contiguous(), hi.to(torch.int32).contiguous()
    y = torch.empty(x2.shape[0], out_features, dtype=x.dtype, device=x.device)  # (M, out)
    module = load()
    with torch.cuda.device(x.device):
        module.forward(x2, weight, bias, lo, hi, y, torch.cuda.current_stream().cuda_stream)
    return y.view(*lead, out_features)


class CudaBandedLinearFunction(torch.autograd.Function):
    """The CUDA forward with the block-banded PyTorch backward (:mod:`kernels.banded.reference`): there is no
    backward kernel. ``ranges``: a :class:`kernels.banded.kernel.BandRanges` of a banded mask (one interval per
    row); ``p``: the reference's plan of the same mask."""

    @staticmethod
    def forward(ctx, x, weight, bias, ranges, p):
        from kernels.banded.reference import tokens_last

        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        w, b = weight.to(x.dtype), None if bias is None else bias.to(x.dtype)
        y = cuda_banded_forward(x, w, b, (ranges.row_lo, ranges.row_hi))
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(tokens_last(x2), torch.where(p.mask, w, 0))
        ctx.plan, ctx.lead, ctx.has_bias = p, x.shape[:-1], bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        from kernels.banded.reference import banded_backward

        xt, wm = ctx.saved_tensors
        p = ctx.plan
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2])
        dx, dw, db = banded_backward(dy.reshape(-1, p.out_features), xt, wm, p, need)
        dx = None if dx is None else dx.reshape(*ctx.lead, p.in_features)
        dw = None if dw is None else dw.to(ctx.dtypes[0])
        db = None if db is None else db.to(ctx.dtypes[1])
        return dx, dw, db, None, None


def cuda_banded_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, ranges, p) -> torch.Tensor:
    """``x (W ⊙ M)ᵀ + b`` through the CUDA forward, differentiable (backward: the reference's)."""
    if not ranges.banded:
        raise ValueError("banded CUDA kernel: the mask is not a band (one interval of kept columns per row needed)")
    return CudaBandedLinearFunction.apply(x, weight, bias, ranges, p)
