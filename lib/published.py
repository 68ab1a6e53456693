"""The published tables this framework reproduces, as data: every cell with the figure published for it, the
runs that fill it here, and the settings of the published setup that the reproducing defconfig must have.

This is the one place published figures live. The defconfig tests (``tests/lib/test_published.py``) check each
reproduction defconfig against its table's settings and cells, the report section
(:mod:`scripts.update_graphs.sections.reproduction`) prints our figures beside these, and ``docs/reproductions.md``
lists them. A figure here is the publication's, never ours: ours come from the runs.

The source of every table is the experiment write-ups this framework was built from, as issue 14 ("The published
experiments, exactly") summarises them; a figure missing there is ``None`` here, not a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

SOURCE = "the AdamWPrune / experiment write-ups as summarised in issue 14 (docs/reproductions.md)"

# Published AdamWPrune GPT-2 iteration budgets: 10,000; bitter2 +21%; bitter3 and bitter4 +30%.
GPT2_ITERS = 10_000
GPT2_ITERS_BITTER2 = 12_100
GPT2_ITERS_BITTER34 = 13_000


def _frozen(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Cell:
    """One published cell: its row and column labels, the figure (None: the table has none for it) and what a
    run must have to fill it: ``match`` names axes of the run (``optimizer``, ``pruning``, ``variant``,
    ``target_sparsity``) and, as ``base``, AdamWPrune's ADAMWPRUNE_BASE."""

    row: str
    column: str
    value: float | None
    match: Mapping[str, Any]
    iterations: int | None = None  # the published iteration budget of the run, where the table gives one

    def __post_init__(self) -> None:
        object.__setattr__(self, "match", _frozen(self.match))

    def matches(self, axes: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
        """Whether a run with these axes and resolved Kconfig values fills this cell."""
        for key, want in self.match.items():
            have = values.get("ADAMWPRUNE_BASE") if key == "base" else axes.get(key)
            if key == "target_sparsity":
                if have is None or abs(float(have) - float(want)) > 1e-9:
                    return False
            elif have != want:
                return False
        return True


@dataclass(frozen=True)
class Table:
    """A published table: its layout (``grid``: rows x columns of one metric; ``runs``: the AdamWPrune GPT-2
    layout, one row per run with its iterations, training time and memory), its cells and the defconfigs that
    reproduce it, with the published settings (Kconfig symbol -> value) they must have."""

    key: str
    title: str
    metric: str  # the runs' eval metric: "accuracy" (a fraction; published in %) or "perplexity"
    unit: str  # "%" or ""
    layout: str  # "grid" or "runs"
    row_header: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    cells: tuple[Cell, ...]
    defconfigs: tuple[str, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    source: str = SOURCE

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", _frozen(self.settings))
        for cell in self.cells:
            if cell.row not in self.rows or cell.column not in self.columns:
                raise ValueError(f"{self.key}: cell ({cell.row}, {cell.column}) is outside the table's rows/columns")

    def cell(self, row: str, column: str) -> Cell | None:
        return next((c for c in self.cells if c.row == row and c.column == column), None)

    def published(self) -> list[float]:
        return [c.value for c in self.cells if c.value is not None]


# --------------------------------------------------------------------------- AdamWPrune, GPT-2 124M

_BITTER_RUNS = (
    # (optimizer label, algorithm label, match, perplexity, iterations)
    ("AdamWSpam", "magnitude", {"optimizer": "adamwspam", "pruning": "magnitude"}, 42.82, GPT2_ITERS),
    ("AdamWPrune", "bitter3", {"optimizer": "adamwprune", "variant": "bitter3"}, 43.11, GPT2_ITERS_BITTER34),
    ("AdamWPrune", "bitter4", {"optimizer": "adamwprune", "variant": "bitter4"}, 44.88, GPT2_ITERS_BITTER34),
    ("AdamWPrune", "bitter2", {"optimizer": "adamwprune", "variant": "bitter2"}, 46.07, GPT2_ITERS_BITTER2),
    ("AdamWPrune", "bitter1", {"optimizer": "adamwprune", "variant": "bitter1"}, 49.99, GPT2_ITERS),
    ("AdamWPrune", "bitter0", {"optimizer": "adamwprune", "variant": "bitter0"}, 51.51, GPT2_ITERS),
)

ADAMWPRUNE_GPT2 = Table(
    key="adamwprune-gpt2",
    title="AdamWPrune on GPT-2 124M / FineWeb-Edu at 50% sparsity",
    metric="perplexity",
    unit="",
    layout="runs",
    row_header="Optimizer | Algorithm",
    rows=tuple(f"{o} | {a}" for o, a, *_ in _BITTER_RUNS),
    columns=("Final perplexity",),
    cells=tuple(
        Cell(f"{o} | {a}", "Final perplexity", ppl, {**m, "target_sparsity": 0.5}, iters)
        for o, a, m, ppl, iters in _BITTER_RUNS
    ),
    defconfigs=("gpt2-adamwprune-bitter",),
    settings={
        "MODEL_GPT2": True,
        "GPT2_SIZE": "124m",
        "GPT2_DATASET": "fineweb_edu",
        "GPT2_MAX_ITERS": GPT2_ITERS,
        "ADAMWPRUNE_BUDGET_SCALE": 1.21,
        "ADAMWPRUNE_BUDGET_SCALE_LONG": 1.30,
        "ADAMWPRUNE_BASE": "adamwspam",
        "ADAMWPRUNE_VARIANTS": ("bitter0", "bitter1", "bitter2", "bitter3", "bitter4"),
        "TARGET_SPARSITIES": (0.5,),
        "PRUNING_SCHEDULE": "late",  # s(t) = s_final * ((t - t_w) / (T - t_w))^3 for every method
        "PRUNING_END_PERCENT": 100,  # T: the end of each run, bitter2/3/4's longer ones included
    },
    note="Iterations, training time and memory are our runs'; the published summary gives the iteration budgets "
    "(above), not the training times or memory.",
)

# --------------------------------------------------------------------------- ResNet-18 / CIFAR-10

_R18_SPARSITY = {"0%": None, "50%": 0.5, "70%": 0.7, "90%": 0.9}
_R18_ROWS = (
    ("AdamW", {"optimizer": "adamw", "pruning": "none"}, (90.30, None, None, None)),
    ("AdamWPrune 0%", {"optimizer": "adamwprune", "pruning": "none", "base": "adamw"}, (90.28, None, None, None)),
    ("AdamW movement", {"optimizer": "adamw", "pruning": "movement"}, (None, 90.69, 89.68, 89.10)),
    ("AdamWPrune state", {"optimizer": "adamwprune", "pruning": "state", "base": "adamw"}, (None, 90.69, 89.37, 88.65)),
    ("AdamW magnitude", {"optimizer": "adamw", "pruning": "magnitude"}, (None, 88.97, 88.44, 86.85)),
)


def _r18_cells() -> tuple[Cell, ...]:
    cells = []
    for label, match, values in _R18_ROWS:
        dense = match["pruning"] == "none"
        for column, value in zip(_R18_SPARSITY, values, strict=True):
            sparsity = _R18_SPARSITY[column]
            if dense != (sparsity is None):
                continue
            cells.append(Cell(label, column, value, match if dense else {**match, "target_sparsity": sparsity}))
    return tuple(cells)


RESNET18_PRUNING = Table(
    key="resnet18-pruning",
    title="ResNet-18 / CIFAR-10: AdamW, AdamWPrune and pruning methods (top-1 %)",
    metric="accuracy",
    unit="%",
    layout="grid",
    row_header="Method",
    rows=tuple(label for label, *_ in _R18_ROWS),
    columns=tuple(_R18_SPARSITY),
    cells=_r18_cells(),
    defconfigs=("resnet18-adam-all-pruning-methods",),
    settings={
        "MODEL_RESNET18": True,
        "IMAGE_DATASET": "cifar10",
        "ADAMWPRUNE_BASE": "adamw",
        "ADAMWPRUNE_DENSE_BASELINE": True,
        "TARGET_SPARSITIES": (0.5, 0.7, 0.9),
    },
)

_RANKING = (("AdamW", "adamw", 90.30), ("Adam", "adam", 89.85), ("AdamWSpam", "adamwspam", 89.75))
_RANKING += (("AdamWAdv", "adamwadv", 89.42), ("SGD", "sgd", 89.22))

RESNET18_OPTIMIZERS = Table(
    key="resnet18-optimizers",
    title="ResNet-18 / CIFAR-10: optimizer ranking, dense (top-1 %)",
    metric="accuracy",
    unit="%",
    layout="grid",
    row_header="Optimizer",
    rows=tuple(label for label, _, _ in _RANKING),
    columns=("dense",),
    cells=tuple(Cell(label, "dense", v, {"optimizer": o, "pruning": "none"}) for label, o, v in _RANKING),
    defconfigs=("resnet18-comprehensive-pruning-compare",),
    settings={"MODEL_RESNET18": True, "IMAGE_DATASET": "cifar10", "PRUNING_NONE": True},
)

# --------------------------------------------------------------------------- ResNet-50 / CIFAR-100

_R50_ROWS = ("50%", "70%", "90%", "baseline")
_R50_SPARSITY = {"50%": 0.5, "70%": 0.7, "90%": 0.9, "baseline": None}
_R50_COLUMNS = {
    "AdamWPrune (AdamWSpam base)": {"optimizer": "adamwprune", "pruning": "state", "base": "adamwspam"},
    "AdamWSpam + magnitude": {"optimizer": "adamwspam", "pruning": "magnitude"},
    "AdamWPrune (AdamW base)": {"optimizer": "adamwprune", "pruning": "state", "base": "adamw"},
}
_R50_VALUES = {
    # The two published baselines, 72.60 and 71.86, are the dense runs of the two bases: AdamWSpam (shared by
    # the first two columns, the same dense training) and AdamW.
    "AdamWPrune (AdamWSpam base)": (74.56, 74.11, 74.54, 72.60),
    "AdamWSpam + magnitude": (73.89, 73.11, 72.30, 72.60),
    "AdamWPrune (AdamW base)": (72.84, 72.63, 73.26, 71.86),
}
_R50_DENSE = {  # the run that is each column's baseline
    "AdamWPrune (AdamWSpam base)": {"optimizer": "adamwprune", "pruning": "none", "base": "adamwspam"},
    "AdamWSpam + magnitude": {"optimizer": "adamwspam", "pruning": "none"},
    "AdamWPrune (AdamW base)": {"optimizer": "adamwprune", "pruning": "none", "base": "adamw"},
}

RESNET50_CIFAR100 = Table(
    key="resnet50-cifar100",
    title="ResNet-50 / CIFAR-100: AdamWPrune vs AdamWSpam + magnitude (top-1 %)",
    metric="accuracy",
    unit="%",
    layout="grid",
    row_header="Sparsity",
    rows=_R50_ROWS,
    columns=tuple(_R50_COLUMNS),
    cells=tuple(
        Cell(
            row,
            column,
            value,
            _R50_DENSE[column] if _R50_SPARSITY[row] is None else {**match, "target_sparsity": _R50_SPARSITY[row]},
        )
        for column, match in _R50_COLUMNS.items()
        for row, value in zip(_R50_ROWS, _R50_VALUES[column], strict=True)
    ),
    defconfigs=("resnet50-adamwspam-vs-adamwprune", "resnet50-adamwprune-adamw-base"),
    settings={
        "MODEL_RESNET50": True,
        "IMAGE_DATASET": "cifar100",
        "ADAMWPRUNE_DENSE_BASELINE": True,
        "TARGET_SPARSITIES": (0.5, 0.7, 0.9),
    },
    note="The AdamWSpam base uses SPAM theta = 50. The matrix has no ADAMWPRUNE_BASE axis, so the two bases are "
    "two defconfigs; each report fills the columns of its own runs.",
)

# --------------------------------------------------------------------------- attention-output gating

# Per stage defconfig: (attn_gate, gate_act, or the learning rate where the stage compares rates) -> the published
# final validation loss. Stage 2 (800 iterations, the learning-rate sweep) publishes no finals. The stages' own
# report section (``scripts/update_graphs/sections/attn_gating.py``) renders these.
GATING_FINAL_LOSS: Mapping[str, Mapping[tuple, float]] = _frozen(
    {
        "gpt2-attn-gating-stage1": _frozen(
            {
                ("const", "sigmoid"): 3.5383,
                ("elementwise", "sigmoid"): 3.5159,
                ("headwise", "ns_sigmoid"): 3.5272,
                ("headwise", "sigmoid"): 3.5312,
                ("none", None): 3.5334,
            }
        ),
        "gpt2-attn-gating-stage2": _frozen({}),
        "gpt2-attn-gating-stage2_5": _frozen({("elementwise", 0.00468): 3.5099, ("none", 0.00468): 3.5298}),
        "gpt2-attn-gating-stage3": _frozen({("elementwise", 0.00468): 3.2723, ("none", 0.00468): 3.2927}),
        "gpt2-attn-gating-stage3-baseline": _frozen({("none", 0.0036): 3.2938}),
    }
)


def _gating_cells() -> tuple[Cell, ...]:
    return tuple(
        Cell(" ".join(str(k) for k in key if k is not None), stage, loss, {})
        for stage, finals in GATING_FINAL_LOSS.items()
        for key, loss in finals.items()
    )


GATING = Table(
    key="attn-gating",
    title="Attention-output gating, GPT-2 124M speedrun (final validation loss)",
    metric="loss",
    unit="",
    layout="grid",
    row_header="attn_gate",
    rows=tuple(dict.fromkeys(c.row for c in _gating_cells())),
    columns=tuple(GATING_FINAL_LOSS),
    cells=_gating_cells(),
    defconfigs=(),  # rendered by the gating stages' own section, not by the reproduction section
    note="stage 1: 1500 iterations at LR 0.0036; stage 2.5: 1500 at 0.00468; stage 3: 5100 (warm-down 1450), "
    "3 seeds at 0.00468 and one baseline seed at 0.0036.",
)

# The banded FC1 table (GPT-2 small, FC1 2048 x 512): bandwidth -> FC1 density in %, as published and as the
# table's own formula |j - i*r| <= bandwidth/2 gives it (512 and 256 disagree; 1024 agrees).
BANDED_FC1_SHAPE = (2048, 512)
BANDED_FC1_DENSITY_PUBLISHED: Mapping[int, float] = _frozen({1024: 43.8, 512: 21.9, 256: 10.9})
BANDED_FC1_DENSITY_FORMULA: Mapping[int, float] = _frozen({1024: 43.8, 512: 23.5, 256: 12.2})

TABLES: tuple[Table, ...] = (ADAMWPRUNE_GPT2, RESNET18_PRUNING, RESNET18_OPTIMIZERS, RESNET50_CIFAR100, GATING)


def tables_for(matrix_name: str) -> list[Table]:
    """The published tables a matrix (named after its defconfig) reproduces."""
    return [t for t in TABLES if matrix_name in t.defconfigs]
