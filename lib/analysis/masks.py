"""What two sets of pruning masks agree on: Jaccard, Hamming distance and cosine similarity, per layer and per
feature (issue 16: Wanda vs SparseGPT, 2:4 vs unstructured).

For two bool masks ``A``, ``B`` of one layer (True = kept) and the pruned weights ``W_A``, ``W_B`` (zero outside
their masks), over the ``n`` entries of the layer or of one feature (an output row, or an input column):

    jaccard      = |A ∩ B| / |A ∪ B|                 (1 when both keep nothing: they agree)
    hamming      = |A xor B|                         (entries kept by one mask and pruned by the other)
    hamming_frac = hamming / n
    cosine       = <W_A, W_B> / (‖W_A‖₂ ‖W_B‖₂)      (NaN when either is all zero, or no weights were given)
    density      = |A| / n                           (the fraction kept: 1 − sparsity)

Saved masks. The one-shot pipeline (``make prune``) writes one file per pruned Linear into its output directory,
in the published analysis's naming ``layer{N}-{component}-{indices}-{sparsity}.pt``, e.g.
``layer0-mlp.down_proj-0-0-0.5.pt``: ``N`` the block, ``component`` the Linear's module path in it (dots, no
``-``), ``indices`` the (row, column) block of the weight the file holds, two integers (``0-0``: ours hold the
whole weight), ``sparsity`` the last field (no ``-``). :func:`load_mask_dir` assumes each file holds a dict with
``"mask"`` (bool, out × in) and ``"weight"`` (the pruned weight, same shape); other keys are ignored. Two
directories are matched by ``(layer, component, indices)``, so a 2:4 run and an unstructured 50 % run of the
same model compare file for file whatever their sparsity fields say.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from lib.errors import UserError

# make prune's files (lib/oneshot/pipeline.py), and the published ones
FILE = re.compile(r"^layer(?P<layer>\d+)-(?P<component>[^-]+)-(?P<indices>\d+-\d+)-(?P<sparsity>[^-]+)\.pt$")
NAME = re.compile(r"^layer(?P<layer>\d+)-(?P<component>[^-]+)(?:-(?P<indices>.+))?$")  # a key of load_mask_dir
COLUMNS = ("layer", "component", "indices", "jaccard", "hamming", "hamming_frac", "cosine", "density_a", "density_b")
FEATURE_COLUMNS = ("feature", "jaccard", "hamming", "hamming_frac", "cosine", "density_a", "density_b")


@dataclass(frozen=True)
class SavedMask:
    """One file of a mask directory: where it belongs, its mask and its pruned weight."""

    layer: int
    component: str
    indices: str
    sparsity: str
    mask: torch.Tensor  # bool, True = kept
    weight: torch.Tensor | None

    @property
    def key(self) -> str:
        """``layer{N}-{component}-{indices}``: what a file of another directory is matched by."""
        return f"layer{self.layer}-{self.component}-{self.indices}"


def load_mask_dir(directory: str | Path) -> dict[str, SavedMask]:
    """Every ``layer{N}-{component}-{indices}-{sparsity}.pt`` of ``directory`` by :attr:`SavedMask.key`, in
    (layer, component, indices) order. Files not named ``layer*.pt`` (``prune.json``, ``model/``) are skipped. A
    directory without such files, a ``layer*.pt`` named otherwise, or a file that is not a dict with a bool
    ``"mask"``: one :class:`UserError`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"mask directory {directory} does not exist: name the output directory of `make prune`")
    found = []
    for path in sorted(directory.glob("layer*.pt")):
        match = FILE.match(path.name)
        if match is None:
            raise UserError(
                f"{path.name} in {directory} is not named layer{{N}}-{{component}}-{{row}}-{{col}}-{{sparsity}}.pt "
                "(e.g. layer0-mlp.down_proj-0-0-0.5.pt; an older `make prune` named its files otherwise): re-run "
                "`make prune` for it (that replaces the directory's files), or move the file out"
            )
        data = torch.load(path, map_location="cpu", weights_only=True)
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("mask"), torch.Tensor)
            or data["mask"].dtype != torch.bool
        ):
            raise UserError(
                f"{path}: expected a dict with a bool 'mask' (and the pruned 'weight'); re-run `make prune`"
            )
        weight = data.get("weight")
        found.append(
            SavedMask(
                int(match["layer"]), match["component"], match["indices"], match["sparsity"], data["mask"], weight
            )
        )
    if not found:
        raise UserError(f"no layer{{N}}-{{component}}-{{indices}}-{{sparsity}}.pt files in {directory}")
    found.sort(key=lambda m: (m.layer, m.component, m.indices))
    return {m.key: m for m in found}


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"masks of different shapes: {tuple(a.shape)} and {tuple(b.shape)}")


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|A ∩ B| / |A ∪ B|`` of two bool masks of one shape (1 when both are empty)."""
    _check(a, b)
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def hamming(a: torch.Tensor, b: torch.Tensor) -> int:
    """The number of positions where two bool masks of one shape differ."""
    _check(a, b)
    return int((a ^ b).sum())


def cosine(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    """Cosine similarity of two tensors of one shape, flattened, in fp64; NaN when either is missing or zero."""
    if a is None or b is None:
        return math.nan
    _check(a, b)
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    norms = float(a.norm() * b.norm())
    return math.nan if norms == 0.0 else float(a @ b) / norms


def _pruned(weight: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor | None:
    return None if weight is None else torch.where(mask, weight.double(), 0.0)


def compare(
    a: torch.Tensor, b: torch.Tensor, weight_a: torch.Tensor | None = None, weight_b: torch.Tensor | None = None
) -> dict[str, Any]:
    """The layer's jaccard, hamming, hamming_frac, cosine (of the weights zeroed outside their masks), density_a
    and density_b (see the module's docstring)."""
    n = a.numel()
    return {
        "jaccard": jaccard(a, b),
        "hamming": hamming(a, b),
        "hamming_frac": hamming(a, b) / n if n else math.nan,
        "cosine": cosine(_pruned(weight_a, a), _pruned(weight_b, b)),
        "density_a": int(a.sum()) / n if n else math.nan,
        "density_b": int(b.sum()) / n if n else math.nan,
    }


def compare_features(
    a: torch.Tensor,
    b: torch.Tensor,
    weight_a: torch.Tensor | None = None,
    weight_b: torch.Tensor | None = None,
    axis: Literal["row", "column"] = "row",
) -> list[dict[str, Any]]:
    """The same measures per feature of two (out, in) masks: per output row (``axis="row"``) or per input column
    (``"column"``); one row per feature with :data:`FEATURE_COLUMNS`."""
    _check(a, b)
    if axis not in ("row", "column"):
        raise ValueError(f"axis {axis!r}: 'row' or 'column'")
    if axis == "column":
        a, b = a.T, b.T
        weight_a = None if weight_a is None else weight_a.T
        weight_b = None if weight_b is None else weight_b.T
    n = a.shape[1]
    inter, union = (a & b).sum(1), (a | b).sum(1)
    jac = torch.where(union == 0, 1.0, inter.double() / union.clamp(min=1))
    ham = (a ^ b).sum(1)
    wa, wb = _pruned(weight_a, a), _pruned(weight_b, b)
    if wa is None or wb is None:
        cos = torch.full((a.shape[0],), math.nan, dtype=torch.float64)
    else:
        norms = wa.norm(dim=1) * wb.norm(dim=1)
        cos = torch.where(norms == 0, math.nan, (wa * wb).sum(1) / norms.clamp(min=torch.finfo(torch.float64).tiny))
    da, db = a.sum(1).double() / n, b.sum(1).double() / n
    return [
        {
            "feature": i,
            "jaccard": float(jac[i]),
            "hamming": int(ham[i]),
            "hamming_frac": int(ham[i]) / n,
            "cosine": float(cos[i]),
            "density_a": float(da[i]),
            "density_b": float(db[i]),
        }
        for i in range(a.shape[0])
    ]


def _where(name: str) -> tuple[int | None, str, str]:
    """(layer, component, indices) of a key ``layer{N}-{component}[-{indices}]``; else (None, name, "")."""
    match = NAME.match(name)
    return (None, name, "") if match is None else (int(match["layer"]), match["component"], match["indices"] or "")


def compare_masks(
    masks_a: Mapping[str, torch.Tensor],
    masks_b: Mapping[str, torch.Tensor],
    weights_a: Mapping[str, torch.Tensor] | None = None,
    weights_b: Mapping[str, torch.Tensor] | None = None,
) -> list[dict[str, Any]]:
    """One row (:data:`COLUMNS`) per name of two mask sets (name -> bool tensor), in ``masks_a``'s order; layer,
    component and indices come from names ``layer{N}-{component}[-{indices}]`` (else layer is None and component
    the name). The sets must have the same names; cosine needs both weight sets (else NaN)."""
    if set(masks_a) != set(masks_b):
        only_a, only_b = sorted(set(masks_a) - set(masks_b)), sorted(set(masks_b) - set(masks_a))
        raise ValueError(f"the mask sets differ: only in the first {only_a}, only in the second {only_b}")
    rows = []
    for name, a in masks_a.items():
        wa = None if weights_a is None else weights_a.get(name)
        wb = None if weights_b is None else weights_b.get(name)
        layer, component, indices = _where(name)
        rows.append({"layer": layer, "component": component, "indices": indices, **compare(a, masks_b[name], wa, wb)})
    return rows


def matched_dirs(dir_a: str | Path, dir_b: str | Path) -> tuple[dict[str, SavedMask], dict[str, SavedMask]]:
    """The saved masks of two directories (:func:`load_mask_dir`), which must hold the same ``(layer, component,
    indices)``; a file in one and not the other is one :class:`UserError`. Load a pair once with this, then
    compare it per layer (:func:`compare_saved`) and per feature (:func:`compare_saved_features`)."""
    a, b = load_mask_dir(dir_a), load_mask_dir(dir_b)
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise UserError(
            f"{dir_a} and {dir_b} prune different layers (only in the first: {only_a or 'none'}; only in the "
            f"second: {only_b or 'none'}): compare two `make prune` outputs of the same model"
        )
    return a, b


def compare_saved(a: Mapping[str, SavedMask], b: Mapping[str, SavedMask]) -> list[dict[str, Any]]:
    """:func:`compare_masks` of two matched sets of saved masks (:func:`matched_dirs`), file for file."""
    weights_a = {k: m.weight for k, m in a.items() if m.weight is not None}
    weights_b = {k: m.weight for k, m in b.items() if m.weight is not None}
    return compare_masks({k: m.mask for k, m in a.items()}, {k: m.mask for k, m in b.items()}, weights_a, weights_b)


def compare_saved_features(a: Mapping[str, SavedMask], b: Mapping[str, SavedMask]) -> list[dict[str, Any]]:
    """:func:`compare_features` per output feature (row) of every file of two matched sets of saved masks
    (:func:`matched_dirs`), each row with the file's ``layer``, ``component`` and ``indices`` first."""
    return [
        {"layer": m.layer, "component": m.component, "indices": m.indices, **row}
        for key, m in a.items()
        for row in compare_features(m.mask, b[key].mask, m.weight, b[key].weight, axis="row")
    ]


def compare_dirs(dir_a: str | Path, dir_b: str | Path) -> list[dict[str, Any]]:
    """:func:`compare_saved` of two directories of saved masks, file for file by ``(layer, component,
    indices)``."""
    return compare_saved(*matched_dirs(dir_a, dir_b))
