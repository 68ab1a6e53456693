"""The analysis suite on one model (``make analyze RUN=... [SPARSITY=0.9] [SAMPLES=8] [BLOCKS=4,16]``,
docs/analysis.md).

``RUN`` is what ``make prune`` takes (:func:`scripts.prune.find_model`): a GPT-2 run directory or run id, or a
Hugging Face causal LM (Hub name or ``save_pretrained`` directory).

1. One-shot pruning. Each method selected in the .config (``ONESHOT_*``) at each point of the one-shot grid
   (``ONESHOT_SPARSITIES``, ``ONESHOT_PATTERNS``: :func:`scripts.prune.grid`) whose result is not there yet is
   pruned as ``make prune`` prunes it (``oneshot/<method>-<target>/``). With no method selected, the results
   ``make prune`` left are compared.
2. Co-activation, of the unpruned model (a run's best checkpoint, or the pretrained weights). ``SAMPLES``
   (default 8) calibration windows, drawn as ``make prune`` draws them (the same corpus, ``ONESHOT_SEQLEN``,
   seed), run block by block; forward pre-hooks on each block's Linears (:func:`lib.oneshot.models.components`)
   capture every projection's input. Per projection: the threshold at the target activation sparsity
   ``SPARSITY`` (default 0.9, the published setting), the binary matrix, the reference feature (the most active
   feature: the most tokens above the threshold, ties by the lowest index), k-means with k = 4, 8, 16 (those at
   most the features) over the 128 features nearest the reference (all when fewer), the Hamming-distance
   histogram of those features' pairs, and MMM coherence for the block sizes ``BLOCKS`` (default 4 and 16) in
   index and in Hamming order. Tables: ``coactivation_clusters``, ``coactivation_hamming``, ``mmm_coherence``.
3. Mask comparison (:func:`mask_pairs`), of the one-shot results of the model (``oneshot/<method>-<target>/``,
   those with a ``prune.json``): every two methods at one target, each method at two consecutive sparsities,
   and each method's ``<m>-<s>-<N>of<M>`` against its ``<m>-<s>`` (structured vs unstructured). Tables
   ``mask_comparison`` (per layer) and ``mask_features`` (per output feature).

Rows go to ``RESULTS_DIR/results.duckdb`` (:func:`lib.analysis.store.write`, source = the model's name: a run's
directory name, or e.g. ``facebook--opt-125m``). Figures go to ``<run>/analysis/`` (a Hugging Face model:
``RESULTS_DIR/oneshot/<model>/analysis/``): a spy plot (Hamming order), a cluster heatmap (k = 8, or the largest
k that fits) and the Hamming histograms of block 0's projections only, one agreement heatmap per mask
comparison, and the t-SNE projection of the clustered features of block 0's projections, coloured by the same
k-means clusters (exact t-SNE of at most 128 points: about 2 s per projection on 2 cores).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import torch

from lib import config as config_mod
from lib import results
from lib.analysis import coactivation as coact
from lib.analysis import figures, masks, store
from lib.database import DATABASE
from lib.errors import ArgumentParser, UserError, run_cli
from lib.oneshot import ONESHOT
from lib.oneshot.models import CausalLM
from lib.oneshot.pipeline import windows
from scripts.prune import (
    add_model_arguments,
    corpus_tokens,
    describe,
    find_model,
    load_model,
    parse_fraction,
    parse_samples,
    prune_grid,
)

logger = logging.getLogger(__name__)

SAMPLES = 8  # calibration windows by default: enough tokens for the thresholds, fast on a CPU
KS = coact.PUBLISHED_KS
BLOCK_SIZES = (4, 16)  # MMM coherence's block sizes by default (BLOCKS=)
FIGURE_BLOCK = 0  # figures of this block's projections only, to stay fast
STRUCTURED = re.compile(r"^(?P<base>.+)-(?P<n>\d+)of(?P<m>\d+)$")  # a target with an N:M pattern: 0.5-2of4


@torch.no_grad()
def projection_inputs(lm: CausalLM, calibration: torch.Tensor, batch_size: int = 8):
    """Per block, in order: (block index, {component: its inputs (tokens × features), fp32 on the CPU}), running
    the blocks one after the other on the calibration windows, as the one-shot pipeline does (unpruned)."""
    inputs = [lm.embed(batch.to(lm.device)) for batch in calibration.split(batch_size)]
    for index, block in enumerate(lm.blocks()):
        captured: dict[str, list[torch.Tensor]] = {}

        def keep(name: str, captured: dict[str, list[torch.Tensor]] = captured):
            def hook(module, args) -> None:
                x = args[0]
                captured.setdefault(name, []).append(x.reshape(-1, x.shape[-1]).float().cpu())

            return hook

        hooks = [lin.register_forward_pre_hook(keep(name)) for name, lin in lm.linears(block).items()]
        try:
            inputs = [(lm.run_block(block, hidden, context), context) for hidden, context in inputs]
        finally:
            for h in hooks:
                h.remove()
        yield index, {name: torch.cat(xs) for name, xs in captured.items()}


def reference_feature(binary: torch.Tensor) -> int:
    """The most active feature (most tokens above the threshold), the lowest index among ties."""
    return int(torch.argmax(binary.sum(1)))  # argmax returns the first maximum


def analyze_projection(x: torch.Tensor, sparsity: float, seed: int, block_sizes: tuple[int, ...] = BLOCK_SIZES) -> dict:
    """The rows of one projection's inputs ``x`` (tokens × features) for the three co-activation tables, and
    what its figures need."""
    threshold = coact.calibrate_thresholds({"x": x}, sparsity)["x"]
    binary = coact.binarize(x, threshold)
    reference = reference_feature(binary)
    count = min(coact.PUBLISHED_FEATURES, binary.shape[0])
    near = coact.nearest_features(binary, reference, count)
    act = {"sparsity": sparsity, "threshold": threshold}
    clusterings = [coact.cluster_features(binary, reference, k, count, seed) for k in KS if k <= count]
    clusters = [
        {**act, "reference": reference, "features": count, **row} for c in clusterings for row in coact.cluster_rows(c)
    ]
    distances = coact.pair_distances(binary[near])
    hamming = [{**act, "reference": reference, "features": count, **row} for row in coact.hamming_histogram(distances)]
    order = coact.hamming_order(binary, reference)
    mmm = [
        {**act, **coact.mmm_row(binary, b, o, ordering)}
        for b in block_sizes
        for o, ordering in ((None, "index"), (order, "hamming"))
    ]
    return {
        "clusters": clusters,
        "hamming": hamming,
        "mmm": mmm,
        "binary": binary,
        "order": order,
        "clusterings": clusterings,
        "distances": distances,
    }


def mask_dirs(out: Path) -> list[Path]:
    """The ``make prune`` output directories under ``out`` (those with a prune.json), by name."""
    return sorted(d for d in out.iterdir() if (d / results.PRUNE_JSON).is_file()) if out.is_dir() else []


def mask_pairs(dirs: list[Path]) -> list[tuple[str | None, Path, Path]]:
    """What is compared, as (method, a, b): every two methods' results at one target (method None), each
    method's unstructured results at two consecutive sparsities, and each method's N:M result against its
    unstructured result at the same sparsity (``wanda-0.5-2of4`` vs ``wanda-0.5``). A directory is
    ``<method>-<target>``; the method includes its settings' variant (``wanda+per_layer``)."""
    split = {d: d.name.split("-", 1) for d in dirs if "-" in d.name}
    pairs: list[tuple[str | None, Path, Path]] = [
        (None, a, b)
        for i, a in enumerate(dirs)
        for b in dirs[i + 1 :]
        if a in split and b in split and split[a][1] == split[b][1]
    ]
    unstructured = {d: float(t) for d, (_, t) in split.items() if re.fullmatch(r"\d*\.?\d+(e-?\d+)?", t)}
    for method in sorted({m for m, _ in split.values()}):
        levels = sorted((unstructured[d], d) for d in unstructured if split[d][0] == method)
        pairs += [(method, a, b) for (_, a), (_, b) in zip(levels, levels[1:], strict=False)]
    by_name = {d.name: d for d in dirs}
    for d, (method, target) in split.items():
        match = STRUCTURED.match(target)
        if match and f"{method}-{match['base']}" in by_name:
            pairs.append((method, d, by_name[f"{method}-{match['base']}"]))
    return pairs


def mask_clusters(directory: Path, seed: int) -> list[dict]:
    """k-means of every saved mask of a one-shot result (``make prune``'s files), its columns (input features)
    as binary vectors over the outputs, as the published feature-clustering analysis clusters a pruned weight's
    "feature vectors (columns)", and as the co-activation clusters features over tokens: the 128 columns
    nearest the reference (the column keeping the most weights; the lowest index among ties; the published
    analysis drew one at random), k = 4, 8, 16; one row per clustering (table ``mask_clusters``). Features
    whose kept positions line up cluster tightly: a high separation (published: SparseGPT up to 17.1, Wanda's
    MLP projections near 1)."""
    found = []
    for saved in masks.load_mask_dir(directory).values():
        binary = saved.mask.t()  # (in, out): one input feature's kept outputs per row
        reference = reference_feature(binary)
        count = min(coact.PUBLISHED_FEATURES, binary.shape[0])
        where = {"label": directory.name, "layer": saved.layer, "component": saved.component, "indices": saved.indices}
        for k in (k for k in KS if k <= count):
            c = coact.cluster_features(binary, reference, k, count, seed)
            found.append(
                {**where, "reference": reference, "features": count, "k": k, "seed": seed,
                 "within_all": c.within, "between_all": c.between, "separation": c.separation}
            )  # fmt: skip
    return found


def parse_block_sizes(text: str | None) -> tuple[int, ...]:
    """BLOCKS= as distinct positive ints (``4,16``; default :data:`BLOCK_SIZES`), or one UserError."""
    if not text:
        return BLOCK_SIZES
    items = text.replace(",", " ").split()
    if not items or not all(i.isdigit() and int(i) > 0 for i in items) or len(set(items)) != len(items):
        raise UserError(f"BLOCKS={text!r} is not a list of distinct positive integers: e.g. BLOCKS=4,16")
    return tuple(int(i) for i in items)


def analyze(
    run: str,
    sparsity: float = coact.PUBLISHED_SPARSITY,
    samples: int | None = None,
    seed: int = 0,
    config: str | Path = config_mod.DOTCONFIG,
    overrides: list[str] | None = None,
    matrix: str | None = None,
    block_sizes: tuple[int, ...] = BLOCK_SIZES,
) -> dict:
    """Run the suite (see the module docstring); a summary: source, database, figures dir, rows per table, the
    new one-shot results and the mask directories found."""
    overrides = overrides or []
    if not 0 < sparsity < 1:
        raise UserError(f"SPARSITY={sparsity:g} is not a fraction in (0, 1): the activation sparsity, e.g. 0.9")
    place = results.resolve_matrix(config, overrides, matrix)
    cfg = place.config or config_mod.from_defaults(overrides)
    samples = samples or SAMPLES
    run_dir = find_model(run, config, overrides, matrix)
    loaded = load_model(run, run_dir, cfg)
    pruned = prune_grid(lambda: load_model(run, run_dir, cfg), loaded.out, cfg, seed) if ONESHOT.selected(cfg) else []
    lm, source = loaded.lm, loaded.lm.name
    lm.model.eval()
    seqlen = loaded.seqlen(cfg)
    train, _ = corpus_tokens(loaded.corpus, loaded.data_cfg, lm, loaded.tokenizer, samples * seqlen + 1)
    calib = windows(train, samples, seqlen, seed)
    fig_dir = (run_dir if run_dir is not None else loaded.out) / "analysis"
    fig_dir.mkdir(parents=True, exist_ok=True)
    results_dir = results.results_dir(cfg)

    tables: dict[str, list[dict]] = {"coactivation_clusters": [], "coactivation_hamming": [], "mmm_coherence": []}
    written: list[Path] = []
    for index, inputs in projection_inputs(lm, calib):
        histograms = {}
        for component, x in inputs.items():
            where = {"layer": index, "component": component}
            found = analyze_projection(x, sparsity, seed, block_sizes)
            tables["coactivation_clusters"] += [{**where, **r} for r in found["clusters"]]
            tables["coactivation_hamming"] += [{**where, **r} for r in found["hamming"]]
            tables["mmm_coherence"] += [{**where, **r} for r in found["mmm"]]
            if index != FIGURE_BLOCK:
                continue
            name = f"layer{index}-{component}"
            binary = found["binary"]
            written.append(figures.spy(binary, found["order"], fig_dir / f"spy-{name}.png", title=f"{source} {name}"))
            if found["clusterings"]:
                c = next((c for c in found["clusterings"] if c.k == 8), found["clusterings"][-1])
                path = fig_dir / f"clusters-{name}-k{c.k}.png"
                title = f"{source} {name}: k = {c.k}, separation {c.separation:.2f}"
                clustered = binary[torch.from_numpy(c.features)]
                written.append(figures.cluster_heatmap(clustered, c.labels, path, title))
                if len(c.features) >= 3:  # t-SNE of the same features, coloured by the same clusters
                    points = coact.tsne(clustered, seed=seed)
                    path = fig_dir / f"tsne-{name}-k{c.k}.png"
                    written.append(figures.tsne_scatter(points, c.labels, path, f"{source} {name}: t-SNE, k = {c.k}"))
            histograms[component] = found["distances"]
        if index == FIGURE_BLOCK and histograms:
            path = fig_dir / f"hamming-layer{index}.png"
            written.append(figures.hamming_histograms(histograms, path, title=f"{source} block {index}: Hamming"))
        logger.info("block %d analysed (%s)", index, ", ".join(inputs))

    dirs = mask_dirs(loaded.out)
    pairs = mask_pairs(dirs)
    if pairs:
        tables["mask_comparison"], tables["mask_features"] = [], []
    for method, a, b in pairs:
        labels = {"method": method, "label_a": a.name, "label_b": b.name}
        saved = masks.matched_dirs(a, b)  # each pair's files read once, for both tables
        rows = masks.compare_saved(*saved)
        tables["mask_comparison"] += [{**labels, **r} for r in rows]
        tables["mask_features"] += [{**labels, **r} for r in masks.compare_saved_features(*saved)]
        path = fig_dir / f"agreement-{a.name}-vs-{b.name}.png"
        written.append(figures.agreement_heatmap(rows, path, title=f"{source}: {a.name} vs {b.name} (Jaccard)"))
    for d in dirs:
        rows = mask_clusters(d, seed)
        tables.setdefault("mask_clusters", []).extend(rows)
        if rows:  # k = 8, or the largest k that fits
            k = 8 if any(r["k"] == 8 for r in rows) else max(r["k"] for r in rows)
            path, title = fig_dir / f"mask-clusters-{d.name}-k{k}.png", f"{source} {d.name}: separation of the kept"
            picked = [r for r in rows if r["k"] == k]
            written.append(figures.agreement_heatmap(picked, path, "separation", f"{title} rows, k = {k}", None))

    database = results_dir / DATABASE
    for table, rows in tables.items():
        database = store.write(results_dir, table, source, rows)
    return {
        "source": source,
        "database": database,
        "figures": fig_dir,
        "written": written,
        "rows": {t: len(r) for t, r in tables.items()},
        "pruned": pruned,
        "mask_dirs": dirs,
        "mask_root": loaded.out,
        "tokens": calib.numel(),
        "sparsity": sparsity,
    }


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m scripts.analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--sparsity", default=str(coact.PUBLISHED_SPARSITY), help="activation sparsity (default 0.9)")
    parser.add_argument("--samples", help=f"calibration windows (default {SAMPLES})")
    parser.add_argument("--blocks", help="MMM coherence's block sizes (default 4,16)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    sparsity = parse_fraction(args.sparsity, "0.9")
    samples = parse_samples(args.samples, SAMPLES)
    block_sizes = parse_block_sizes(args.blocks)
    s = analyze(
        args.run,
        sparsity,
        samples,
        args.seed,
        args.config,
        config_mod.split_overrides(args.set),
        args.matrix,
        block_sizes,
    )
    for summary in s["pruned"]:
        print(f"one-shot: {describe(summary)}")
    print(f"{s['source']}: {s['tokens']} tokens, thresholds at {s['sparsity']:g} activation sparsity")
    for table, count in s["rows"].items():
        print(f"{table}: {count} rows ({s['source']}) in {s['database']}")
    if not s["mask_dirs"]:
        print(
            f"mask_comparison: no one-shot results in {s['mask_root']}; skipped (select ONESHOT_* methods in "
            "`make menuconfig` for make analyze to prune them, or run `make prune`)"
        )
    elif "mask_comparison" not in s["rows"]:
        print(f"mask_comparison: no two comparable one-shot results in {s['mask_root']}; skipped")
    print(f"figures: {len(s['written'])} in {s['figures']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
