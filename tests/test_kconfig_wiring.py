"""No dead knobs: every matrix-axis symbol and every choice member of the Kconfig tree reaches code that
implements it, and every registry entry has its Kconfig symbol."""

from __future__ import annotations

import kconfiglib
import pytest

from kernels import KERNELS
from kernels.banded import CPU_PATHS as BANDED_CPU_PATHS
from kernels.banded import GPU_PATHS as BANDED_GPU_PATHS
from kernels.kv_compress.reference import METHODS as KV_COMPRESS_METHODS
from lib import config as cfgmod
from lib.data import DATASETS
from lib.data.corpora import CORPORA
from lib.data.text import TOKENIZERS
from lib.model_registry import MODELS
from lib.oneshot import ONESHOT
from lib.optimizers import OPTIMIZERS
from lib.optimizers.muon import ADJUST_LR_FNS
from lib.optimizers.schedules import LR_SCHEDULES
from lib.pruning import PRUNERS
from lib.pruning.schedule import SPARSITY_SHAPES
from lib.pruning.structured import NM_PATTERNS
from lib.runner import LAUNCHERS
from lib.tracking import TRACKERS
from lib.training import PRECISIONS
from models.gpt2.train import SIZES
from models.lenet5.model import ACTIVATIONS, POOLS

# Each named choice -> the names its implementation accepts (the suffixes of its members).
CHOICES = {
    "PRUNING_SCHEDULE": set(SPARSITY_SHAPES),
    "LENET5_ACTIVATION": set(ACTIVATIONS),
    "LENET5_POOL": set(POOLS),
    "PRUNING_NM_PATTERN": set(NM_PATTERNS),
    "IMAGE_DATASET": set(DATASETS),
    "LR_SCHEDULE": set(LR_SCHEDULES),
    "DEVICE": {"auto", "cuda", "mps", "cpu"},  # lib.training.select_device
    "PRUNING_SCOPE": {"global", "layer"},  # lib.pruning.magnitude
    "ADAMWPRUNE_BASE": set(OPTIMIZERS),
    "PRECISION": set(PRECISIONS),
    "GPT2_SIZE": set(SIZES),
    "GPT2_DATASET": set(CORPORA),
    "GPT2_TOKENIZER": set(TOKENIZERS),
    "MUON_LR_SCALE": {f for f in ADJUST_LR_FNS if f},
    "MUON_LR_AXIS": {"muon", "adamw"},  # the "optimizer" tags of MuonWithAdamW's groups (set_peak_lr)
    "BANDED_KERNEL_GPU": set(BANDED_GPU_PATHS),
    "BANDED_KERNEL_CPU": set(BANDED_CPU_PATHS),
    "LAUNCHER": set(LAUNCHERS.names()),
    "KV_COMPRESS_METHOD": set(KV_COMPRESS_METHODS.names()),
}
# Multi-select axes: bool symbols <PREFIX>_<NAME> <-> registry entries.
AXES = {"MODEL": MODELS, "OPTIMIZER": OPTIMIZERS, "PRUNING": PRUNERS}
# Every bool family: the axes, the kernels (each selected one takes over modules; no matrix axis) and the trackers
# (each selected one mirrors the metrics).
BOOL_FAMILIES = {**AXES, "KERNELS": KERNELS, "TRACKER": TRACKERS, "ONESHOT": ONESHOT}
# Registries that are exactly one named choice: the choice <PREFIX> has one member per entry, and no other.
CHOICE_REGISTRIES = [DATASETS, CORPORA, TOKENIZERS, LR_SCHEDULES, SPARSITY_SHAPES, LAUNCHERS, KV_COMPRESS_METHODS]


@pytest.fixture(scope="module")
def kconf() -> kconfiglib.Kconfig:
    return cfgmod.load_kconfig()


def test_every_named_choice_is_wired(kconf):
    assert {c.name for c in kconf.unique_choices} == set(CHOICES)
    for choice in kconf.unique_choices:
        members = {s.name.removeprefix(choice.name + "_").lower() for s in choice.syms}
        assert members <= CHOICES[choice.name], f"{choice.name}: no implementation for {members - CHOICES[choice.name]}"


@pytest.mark.parametrize("prefix", sorted(BOOL_FAMILIES))
def test_every_registry_entry_has_a_prompted_bool_symbol(kconf, prefix):
    for name in BOOL_FAMILIES[prefix].names():
        sym = kconf.syms.get(f"{prefix}_{name.upper()}")
        assert sym is not None and sym.nodes, f"{prefix}_{name.upper()} is missing from Kconfig"
        assert sym.orig_type == kconfiglib.BOOL and any(n.prompt for n in sym.nodes)


def test_every_kernel_symbol_has_a_kernel(kconf):
    """KERNELS_* is the kernels' namespace: a prompted bool there without a registered kernel is a dead knob."""
    symbols = [s.name for s in kconf.unique_defined_syms if s.name.startswith("KERNELS_") and s.nodes]
    assert [s for s in symbols if s.removeprefix("KERNELS_").lower() not in KERNELS] == []


def test_every_tracker_symbol_has_a_tracker(kconf):
    """A bool TRACKER_* is a tracker (TRACKER_PROJECT, a string, is the setting the trackers share)."""
    symbols = [s.name for s in kconf.unique_defined_syms if s.name.startswith("TRACKER_") and s.nodes]
    bools = [s for s in symbols if kconf.syms[s].orig_type == kconfiglib.BOOL]
    assert sorted(set(symbols) - set(bools)) == ["TRACKER_PROJECT"]
    assert sorted(s.removeprefix("TRACKER_").lower() for s in bools) == sorted(TRACKERS.names())


@pytest.mark.parametrize("registry", CHOICE_REGISTRIES, ids=lambda r: r.prefix)
def test_every_registry_entry_is_a_member_of_its_choice(kconf, registry):
    choice = next((c for c in kconf.unique_choices if c.name == registry.prefix), None)
    assert choice is not None, f"no choice {registry.prefix} in Kconfig for the {registry.family} registry"
    members = {s.name.removeprefix(choice.name + "_").lower() for s in choice.syms}
    assert set(registry.names()) - members == set(), f"{registry.family} entries without a {choice.name}_* member"
    assert members - set(registry.names()) == set(), f"{choice.name}_* members without a {registry.family} entry"


def test_every_promptless_helper_is_selected(kconf):
    """Promptless bool helpers (ADAM_FAMILY, IMAGE_MODEL, ...) replace hand-kept OR lists: each must be set by a
    ``select`` somewhere, or it is a dependency nothing can satisfy."""
    helpers = [
        s
        for s in kconf.unique_defined_syms
        if s.orig_type == kconfiglib.BOOL and s.nodes and not any(n.prompt for n in s.nodes) and s.choice is None
    ]
    assert helpers, "the tree has promptless helpers"
    assert [s.name for s in helpers if s.rev_dep is kconf.n] == []


def test_selected_axes_follow_the_config():
    cfg = cfgmod.Config({OPTIMIZERS.symbol(n): n in ("sgd", "adamw", "muon") for n in OPTIMIZERS.names()})
    assert OPTIMIZERS.selected(cfg) == ["sgd", "adamw", "muon"]


def test_every_attention_gate_symbol_is_an_axis_value(kconf):
    from models.gpt2 import GATE_ACTIVATION_NAMES, GATE_POSITIONS, GATES

    expected = {f"ATTN_GATE_{g.upper()}" for g in GATES}
    expected |= {f"ATTN_GATE_POS_{p.upper()}" for p in GATE_POSITIONS}
    expected |= {f"ATTN_GATE_ACT_{a.upper()}" for a in GATE_ACTIVATION_NAMES}
    assert {name for name in kconf.syms if name.startswith("ATTN_GATE_") and kconf.syms[name].nodes} == expected
