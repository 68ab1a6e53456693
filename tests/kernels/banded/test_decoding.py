"""GPT-2 decoding with its MLPs on the banded C kernel: ``GPT2.generate`` with the key/value cache hands every MLP
Linear (B, 1, C) steps after a (B, T, C) prompt, and a (B, block_size, C) window again when the context is full;
the kernel's modules give the masked dense model's tokens and logits."""

from __future__ import annotations

import copy

import pytest
import torch

from kernels.banded import BandedKernel, BandedLinear
from kernels.banded import cpu as cpu_kernel
from models.gpt2.model import GPT2, GPT2Config
from scripts.bench_kernels import band_mlps

pytestmark = pytest.mark.skipif(cpu_kernel.unavailable() is not None, reason="the banded C kernel is not built here")


def _banded_gpt2() -> GPT2:
    torch.manual_seed(0)
    model = GPT2(GPT2Config(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64, dropout=0.0))
    return band_mlps(model, 0.25).eval()


@pytest.mark.parametrize("batch", [1, 2])
def test_greedy_decoding_on_the_kernel_gives_the_masked_dense_tokens(batch: int) -> None:
    dense = _banded_gpt2()
    banded = copy.deepcopy(dense)
    taken = BandedKernel(BandedKernel.Settings(cpu="c")).apply(banded, "inference", torch.device("cpu"))
    assert len(taken) == 4 and all(isinstance(banded.get_submodule(name), BandedLinear) for name in taken)
    prompt = torch.randint(64, (batch, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # 5 + 20 tokens: past block_size (16), so the cache is rebuilt from a full window once
        tokens = {name: m.generate(prompt, 20, temperature=0.0) for name, m in (("dense", dense), ("c", banded))}
        assert torch.equal(tokens["c"], tokens["dense"])
        window = tokens["dense"][:, -16:]
        torch.testing.assert_close(banded(window), dense(window), rtol=1e-4, atol=1e-5)
    kept = [banded.get_submodule(name).cpu_plan().kept for name in taken]
    assert all("args" in k and "panel" in k for k in kept)  # inference kept its packed weights and arguments
