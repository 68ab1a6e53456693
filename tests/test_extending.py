"""docs/extending.md followed to the letter, in a copy of the tree: a throw-away pruning method and a throw-away
optimizer, each exactly one new module plus one Kconfig entry (nothing else is edited), appear in `make plan`
and train a short run to the end; a throw-away kernel (one new package plus one Kconfig entry) takes over the
modules it claims in that run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lib import results
from tests.helpers import HANG_GUARD_SECONDS, ROOT, make_env

pytestmark = pytest.mark.slow

PRUNER = '''"""Row-scaled magnitude: |W| times its output row's L1 norm (a throw-away method for the extending test)."""

import torch

from lib.pruning.base import PRUNERS, Pruner


@PRUNERS.register("rowscaled")
class RowScaledPruner(Pruner):
    @torch.no_grad()
    def update_mask(self, sparsity: float) -> None:
        def score(w):
            flat = w.detach().abs().float().flatten(1)
            return (flat * flat.sum(1, keepdim=True)).view_as(w)

        fns = [self.keep_pruned(lambda w=m.weight: score(w), m.weight_mask) for _, m in self.modules]
        self.keep_top(fns, sparsity)
'''

PRUNER_KCONFIG = """config PRUNING_ROWSCALED
\tbool "row-scaled magnitude"
\tselect PRUNING_SPARSE
\thelp
\t  |W| times the L1 norm of its output row (a throw-away method).

"""

OPTIMIZER = '''"""signSGD (Bernstein et al. 2018): w <- w - lr * sign(g); a throw-away for the extending test."""

import torch

from lib.optimizers import OPTIMIZERS, Setup, param_groups


class SignSGD(torch.optim.Optimizer):
    def __init__(self, params, lr: float) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": 0.0})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(torch.sign(p.grad), alpha=-group["lr"])


@OPTIMIZERS.register("signsgd")
def build_signsgd(model, cfg) -> Setup:
    return Setup(SignSGD(param_groups(model, 0.0), lr=1e-3))
'''

OPTIMIZER_KCONFIG = """config OPTIMIZER_SIGNSGD
\tbool "signSGD"
\thelp
\t  w <- w - lr * sign(g), lr 1e-3 (a throw-away optimizer).

"""


KERNEL = '''"""Linear as a plain matmul (a throw-away kernel for the extending test): it takes over every Linear."""

import torch
from torch import nn

from kernels import KERNELS, Kernel


class MatmulLinear(nn.Module):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias  # the same Parameters: optimizer and checkpoints agree
        for name, buffer in linear.named_buffers(recurse=False):  # the pruner's weight_mask
            self.register_buffer(name, buffer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.weight.t()) + self.bias


@KERNELS.register("matmul_linear")
class MatmulLinearKernel(Kernel):
    PURPOSES = ("train",)

    def apply(self, model, purpose, device):
        names = [name for name, m in model.named_modules() if type(m) is nn.Linear]
        for name in names:
            parent, _, child = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            setattr(owner, child, MatmulLinear(getattr(owner, child)))
        return names
'''

KERNEL_KCONFIG = """config KERNELS_MATMUL_LINEAR
\tbool "Linear as a plain matmul"
\thelp
\t  Every Linear computed as x @ W.T + b (a throw-away kernel).

"""


def _copy_tree(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked, and new ones not ignored), without results or caches."""
    listing = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    files = subprocess.run(listing, cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        source, target = ROOT / name.decode(), dest / name.decode()
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return dest


def _insert_before(path: Path, marker: str, text: str) -> None:
    content = path.read_text()
    assert marker in content, f"{marker!r} not in {path}"
    path.write_text(content.replace(marker, text + marker, 1))


def _make(tree: Path, *args: str) -> subprocess.CompletedProcess:
    stamp = Path(sys.prefix) / ".sparsity-lab-installed"  # up to date: nothing is installed
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(tree), "-o", str(stamp), *args],
        env=make_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )


def test_a_new_pruning_method_optimizer_and_kernel_are_one_module_and_one_kconfig_entry_each(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path / "tree")
    before = {p for p in tree.rglob("*") if p.is_file()}
    # The recipe: the method's module and its Kconfig entry; the optimizer's module and its Kconfig entry.
    (tree / "lib/pruning/rowscaled.py").write_text(PRUNER)
    _insert_before(tree / "lib/pruning/Kconfig", "config PRUNING_SPARSE\n", PRUNER_KCONFIG)
    (tree / "lib/optimizers/signsgd.py").write_text(OPTIMIZER)
    _insert_before(tree / "lib/optimizers/Kconfig", "menuconfig OPTIMIZER_SGD\n", OPTIMIZER_KCONFIG)
    (tree / "kernels/matmul_linear").mkdir()
    (tree / "kernels/matmul_linear/__init__.py").write_text(KERNEL)
    _insert_before(tree / "kernels/Kconfig", "endmenu\n", KERNEL_KCONFIG)
    assert {p for p in tree.rglob("*") if p.is_file()} - before == {
        tree / "lib/pruning/rowscaled.py",
        tree / "lib/optimizers/signsgd.py",
        tree / "kernels/matmul_linear/__init__.py",
    }

    config = tmp_path / ".config"
    written = _make(tree, "defconfig", "DEFCONFIG=quickstart", f"KCONFIG_CONFIG={config}")
    assert written.returncode == 0, written.stderr
    settings = (
        "SET=OPTIMIZER_SGD=n OPTIMIZER_ADAMW=n OPTIMIZER_SIGNSGD=y PRUNING_NONE=n PRUNING_MAGNITUDE=n "
        f"PRUNING_ROWSCALED=y TARGET_SPARSITIES=0.5 KERNELS_MATMUL_LINEAR=y RESULTS_DIR={tmp_path / 'results'} "
        "MATRIX_NAME=extended"
    )
    plan = _make(tree, "plan", f"KCONFIG_CONFIG={config}", settings)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[1:] == [
        "  lenet5-signsgd-rowscaled-s0.5-seed0  1,350 steps  model=lenet5  optimizer=signsgd  pruning=rowscaled  "
        "target_sparsity=0.5  seed=0",
        "steps: 1,350 in all",
        f"time: estimated once a run of {tmp_path / 'results' / 'extended'} is done",
        "1 run",
    ]

    run = _make(tree, "run", f"KCONFIG_CONFIG={config}", "EPOCHS=2", settings)
    assert run.returncode == 0, run.stderr
    summary = results.read_json(tmp_path / "results/extended/lenet5-signsgd-rowscaled-s0.5-seed0/summary.json")
    assert summary["status"] == "done"
    assert abs(summary["sparsity"] - 0.5) < 0.005
    assert summary["final"]["accuracy"] > 0.5  # it learned: ten classes, chance is 0.1
    assert summary["kernels"] == {"matmul_linear": ["fc1", "fc2", "fc3"]}  # it trained through the kernel
