"""What the Triton kernels compile to on an NVIDIA GPU, read without one.

Each kernel of :data:`CASES` is compiled for a GPU target (Hopper, sm_90, by default) by Triton's own compiler
and ptxas, and its machine code (SASS, through the ``cuobjdump`` Triton carries) is counted for the instructions
that say whether it takes the fast paths: ``HGMMA`` (wgmma, Hopper's warpgroup tensor-core product), ``HMMA``
(the older tensor-core product), ``LDGSTS`` (``cp.async``: the copies of a software-pipelined loop), ``LDL`` and
``STL`` (local memory: register spills), ``ATOMG`` and ``REDG`` (global atomics, returning the old value or
not), ``MEMBAR`` (memory fences: an atomic with acquire/release semantics brings them), ``LDG``/``STG`` (plain
global loads and stores). A GPU run shows how fast a kernel is; this shows, on any machine, whether its loops
compiled into the form that can be fast (docs/kernels.md).

    python -m kernels.codegen               # a table: kernel, config, counts, shared memory
    python -m kernels.codegen --json        # the same as JSON (tests/kernels/test_codegen.py reads it)

Arguments are specialised as Triton specialises them at run time for the usual shapes: pointers and the integer
arguments named in a case's ``aligned`` are divisible by 16 (Triton's JIT does that for any such value it is
called with; a tensor from PyTorch's allocator is 16-byte aligned), unit strides are constants. Run it with
``TRITON_INTERPRET`` unset: under the interpreter the kernels are not compiled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from kernels.runtime import interpreting

COUNTED = ("HGMMA", "HMMA", "LDGSTS", "LDL", "STL", "ATOMG", "REDG", "MEMBAR", "LDG", "STG")


@dataclasses.dataclass(frozen=True)
class Case:
    """One compilation: ``kernel`` (``module:function``, a ``@triton.jit`` function), pointer dtypes by argument
    name (others: ``default_pointer``), other arguments' types by name (others: i32), constexprs (block sizes,
    flags and unit strides), the integer arguments taken as multiples of 16, warps and pipeline stages."""

    name: str
    kernel: str
    constexprs: dict
    pointers: dict = dataclasses.field(default_factory=dict)
    default_pointer: str = "*fp16"
    scalars: dict = dataclasses.field(default_factory=dict)  # non-pointer arguments' types by name (others: i32)
    aligned: tuple[str, ...] = ()
    num_warps: int = 4
    num_stages: int = 3


_BANDED = "kernels.banded.kernel"
_FP16 = {"FP64": False, "INTERPRET": False, "PRECISION": "tf32"}
CASES = [
    Case("banded forward", f"{_BANDED}:_banded_fwd_kernel",
         {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "HAS_BIAS": True, **_FP16, "stride_xk": 1, "stride_wk": 1,
          "stride_yn": 1},
         pointers={"row_lo_ptr": "*i32", "row_hi_ptr": "*i32"},
         aligned=("M", "N", "K", "stride_xm", "stride_wn", "stride_ym"), num_warps=8),
    Case("banded dX", f"{_BANDED}:_banded_dx_kernel",
         {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 128, **_FP16, "stride_dyn": 1, "stride_wk": 1, "stride_dxk": 1},
         pointers={"col_lo_ptr": "*i32", "col_hi_ptr": "*i32"},
         aligned=("M", "N", "K", "stride_dym", "stride_wn", "stride_dxm"), num_warps=8),
    *(
        Case(f"banded dW, {split} run{'s' if split > 1 else ''} of tokens", f"{_BANDED}:_banded_dw_kernel",
             {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "BANDED": True, "WIDE_OUT": True, **_FP16,
              "SPLIT_M": split, "stride_dyn": 1, "stride_xk": 1, "stride_dwk": 1},
             pointers={"dw_ptr": "*fp32", "mask_ptr": "*u8", "row_lo_ptr": "*i32", "row_hi_ptr": "*i32"},
             aligned=("M", "N", "K", "stride_dym", "stride_xm", "stride_dwn"), num_stages=4)
        for split in (1, 4)
    ),
    Case("banded masked_weight", f"{_BANDED}:_masked_weight_kernel",
         {"BLOCK_N": 32, "BLOCK_K": 128, "BANDED": True, "WIDE_OUT": True, "INTERPRET": False, "stride_wk": 1,
          "stride_ok": 1},
         pointers={"w_ptr": "*fp32", "mask_ptr": "*u8"}, aligned=("N", "K", "stride_wn", "stride_on"),
         num_stages=1),
    Case("sparse_gemv", "kernels.sparse_gemv.kernel:_sparse_gemv_kernel",
         {"HAS_BIAS": True, "BLOCK_B": 1, "BLOCK_N": 128, "BLOCK_K": 32, "SPLIT_K": 8, "STAGES": 3, "stride_xk": 1,
          "stride_wn": 1},
         pointers={"sums_ptr": "*fp32", "count_ptr": "*i32"}, scalars={"threshold": "fp32"},
         aligned=("N", "K", "stride_wk", "stride_yb")),
]  # fmt: skip


def _jit_function(path: str):
    """The ``@triton.jit`` function behind ``module:name`` (an autotuned one's inner function)."""
    import importlib

    module, name = path.split(":")
    fn = getattr(importlib.import_module(module), name)
    while not hasattr(fn, "arg_names") or hasattr(fn, "configs"):  # triton.autotune wraps the JITFunction
        fn = fn.fn
    return fn


def _bin(tool: str) -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / tool


def compile_case(case: Case, capability: int = 90) -> dict:
    """``case`` compiled for ``sm_{capability}``: the instruction counts of :data:`COUNTED` and its shared memory
    (bytes)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _jit_function(case.kernel)
    signature = {
        name: "constexpr" if name in case.constexprs else case.pointers.get(name, case.default_pointer)
        if name.endswith("_ptr") else case.scalars.get(name, "i32")
        for name in fn.arg_names
    }  # fmt: skip
    attrs = {
        (i,): [["tt.divisibility", 16]]
        for i, name in enumerate(fn.arg_names)
        if signature[name].startswith("*") or name in case.aligned
    }
    source = ASTSource(fn, signature, case.constexprs, attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                              options={"num_warps": case.num_warps, "num_stages": case.num_stages})  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        sass = subprocess.run([str(_bin("cuobjdump")), "-sass", str(cubin)], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
    opcodes = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", sass)
    counts = {op: sum(1 for o in opcodes if o == op) for op in COUNTED}
    return {"kernel": case.name, **counts, "shared": compiled.metadata.shared}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capability", type=int, default=90, help="compute capability x 10 (90: Hopper)")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    if interpreting():
        print("error: TRITON_INTERPRET is set: the kernels are not compiled under the interpreter; unset it")
        return 2
    if not _bin("cuobjdump").exists():
        print(f"error: {_bin('cuobjdump')} is missing: this Triton carries no NVIDIA tools to read the code with")
        return 2
    rows = [compile_case(case, args.capability) for case in CASES]
    if args.json:
        print(json.dumps(rows))
        return 0
    columns = ["kernel", *COUNTED, "shared"]
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
