"""One-shot prune a trained model (``make prune RUN=... METHOD=magnitude|wanda|sparsegpt SPARSITY=0.5``).

``RUN`` is a GPT-2 run directory or a run id of the matrix every command finds (as ``make sample``), or else a
Hugging Face causal LM: a Hub name (``facebook/opt-125m``; ``HF_HUB_OFFLINE=1`` reads only the cache) or a
directory saved by ``save_pretrained`` (needs ``make env EXTRAS=hf``).

Calibration: ``SAMPLES`` random windows (seeded) of ``ONESHOT_SEQLEN`` tokens (a run: at most its block_size) of
the training split of ``CALIBRATION``, a corpus of the framework (``GPT2_DATASET_*``); by default the run's own
training text, for a Hugging Face model the .config's GPT2_DATASET, tokenised with the model's tokenizer. The
perplexity before and after is measured on ``ONESHOT_EVAL_WINDOWS`` windows of that corpus's validation split.
``METHOD`` defaults to the methods selected in the .config's "One-shot pruning" menu, each in turn.

Output: ``<run>/oneshot/<method>-<target>/`` (a Hugging Face model: ``RESULTS_DIR/oneshot/<model>/<method>-<target>/``)
with one ``layer{N}-{component}-{out}x{in}-{target}.pt`` per Linear (:mod:`lib.oneshot.pipeline`), ``model.pt``
(``{"model": state_dict}``) and ``prune.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path

from lib import config as config_mod
from lib import results
from lib.config_types import nm_pattern
from lib.data.corpora import CORPORA, TextCorpus
from lib.data.shards import read_shard
from lib.errors import ArgumentParser, UserError, run_cli
from lib.oneshot import ONESHOT
from lib.oneshot.models import CausalLM, NanoGPT, load_hf
from lib.oneshot.pipeline import perplexity, prune_model, target_name, windows
from lib.spec import RunSpec
from lib.tasks import ConcatTokens
from lib.trainer import Interrupted
from scripts.sample import find_run, load_run, sampling_device

logger = logging.getLogger(__name__)
FIX_METHOD = "give METHOD=<name> or select one in `make menuconfig` (One-shot pruning)"


def parse_pattern(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    pattern = nm_pattern(text)
    if pattern is None:
        raise UserError(f"PATTERN={text!r} is not N:M with 1 <= N < M; e.g. PATTERN=2:4, or leave it out")
    return pattern


def grid(cfg) -> list[tuple[float, tuple[int, int] | None]]:
    """The one-shot grid of ``cfg``: (sparsity, None) per ``ONESHOT_SPARSITIES``, then (1 - N/M, (N, M)) per
    ``ONESHOT_PATTERNS``; what runs after training and what ``make analyze`` prunes."""
    return [(s, None) for s in cfg["ONESHOT_SPARSITIES"]] + [(1 - n / m, (n, m)) for n, m in cfg["ONESHOT_PATTERNS"]]


def prune_grid(
    load: Callable[[], Loaded], out: Path, cfg, seed: int, stop_requested: Callable[[], bool] = lambda: False
) -> list[dict]:
    """Each selected method at each point of :func:`grid` whose ``prune.json`` is not yet under ``out`` (a
    resumed caller finishes the rest), the model loaded afresh (``load()``) for each; a stop request between two
    raises :class:`Interrupted`. The new summaries."""
    done = []
    for name in ONESHOT.selected(cfg):
        pruner = build_method(name, cfg)
        for sparsity, pattern in grid(cfg):
            result = out / result_name(name, pruner, sparsity, pattern)
            if (result / results.PRUNE_JSON).is_file():
                continue
            if stop_requested():
                raise Interrupted(f"stopped before one-shot {result.name}")
            summary = prune_one(load, name, cfg, sparsity, pattern, None, seed)
            logger.info("one-shot: %s", describe(summary))
            done.append(summary)
    return done


def methods_to_run(method: str | None, cfg) -> list[str]:
    if method:
        if method not in ONESHOT:
            raise UserError(f"METHOD={method!r} is not a one-shot method: allowed values are {', '.join(ONESHOT)}")
        return [method]
    chosen = ONESHOT.selected(cfg)
    if not chosen:
        raise UserError(f"no METHOD given and no ONESHOT_* selected in the .config: {FIX_METHOD}")
    return chosen


def build_method(name: str, cfg):
    """The method with its Settings read from ``ONESHOT_<NAME>_<FIELD>`` (SparseGPT's percdamp, blocksize)."""
    cls = ONESHOT[name]
    fields = dataclasses.fields(cls.Settings)
    return cls(cls.Settings(**{f.name: cfg[f"{ONESHOT.symbol(name)}_{f.name.upper()}"] for f in fields}))


def corpus_tokens(name: str, cfg, lm: CausalLM, tokenizer: str | None, need: int) -> tuple[object, object]:
    """(train, validation) tokens of corpus ``name``: the framework's shards for ``tokenizer`` (a run's), else the
    corpus's documents encoded by ``lm`` until ``need`` tokens of each split (or the split's end)."""
    data_dir = Path(cfg["DATA_DIR"])
    data_dir = data_dir if data_dir.is_absolute() else config_mod.ROOT / data_dir
    corpus = CORPORA[name](cfg)
    if tokenizer is not None:
        train, val = corpus.shards(data_dir, tokenizer)
        return ConcatTokens(read_shard(p) for p in train), ConcatTokens(read_shard(p) for p in val)
    if not isinstance(corpus, TextCorpus):
        raise UserError(f"CALIBRATION={name} is pre-tokenised for GPT-2's BPE: choose a text corpus for {lm.name}")

    def encode(docs) -> list[int]:
        ids: list[int] = []
        for doc in docs:
            ids += [lm.eos, *lm.encode(doc)]
            if len(ids) >= need:
                break
        return ids

    train, val = corpus.splits(data_dir)
    return encode(train), encode(val)


def find_model(run: str, config, overrides: list[str], matrix: str | None) -> Path | None:
    """The run directory ``run`` names (a directory or a run id), or ``None`` for a Hugging Face model (a
    save_pretrained directory, whose config.json has a model_type, or a Hub name org/name); else one UserError."""
    if "model_type" in (results.read_json(Path(run) / results.CONFIG) or {}):
        return None
    try:
        return find_run(run, config, overrides, matrix)
    except UserError as e:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", run):
            raise UserError(
                f"{e}; or a Hugging Face model (a Hub name org/name or a save_pretrained directory)"
            ) from None
    return None


@dataclasses.dataclass
class Loaded:
    """A model to prune or analyse: its adapter, where its text comes from, and its output directory."""

    lm: CausalLM
    data_cfg: object  # the config whose GPT2_DATASET_* and DATA_DIR find the corpus
    tokenizer: str | None  # a run's tokenizer name (its shards), None: the model's tokenizer encodes the text
    corpus: str
    out: Path  # <run>/oneshot, or RESULTS_DIR/oneshot/<model>

    def seqlen(self, cfg) -> int:
        return min(cfg["ONESHOT_SEQLEN"], self.lm.max_length or cfg["ONESHOT_SEQLEN"])


def load_model(run: str, run_dir: Path | None, cfg, calibration: str | None = None) -> Loaded:
    """The model of :func:`find_model`'s answer, on the sampling device, with its calibration corpus."""
    if run_dir is not None:
        model, tokenizer, spec = load_run(run_dir)
        lm: CausalLM = NanoGPT(model.to(sampling_device()), tokenizer, run_dir.name)
        corpus = calibration or spec.cfg["GPT2_DATASET"]
        return Loaded(lm, spec.cfg, spec.cfg["GPT2_TOKENIZER"], corpus, run_dir / results.ONESHOT_DIR)
    lm = load_hf(run, sampling_device())
    data_cfg = config_mod.with_model_defaults(cfg, "gpt2")  # the corpus settings, also when the .config has no GPT-2
    out = results.results_dir(cfg) / results.ONESHOT_DIR / lm.name
    return Loaded(lm, data_cfg, None, calibration or data_cfg["GPT2_DATASET"], out)


def prune(
    run: str,
    method: str | None,
    sparsity: float,
    pattern: tuple[int, int] | None = None,
    calibration: str | None = None,
    samples: int | None = None,
    seed: int = 0,
    config: str | Path = config_mod.DOTCONFIG,
    overrides: list[str] | None = None,
    matrix: str | None = None,
) -> list[dict]:
    """Prune ``run`` with each method; the ``prune.json`` summaries."""
    overrides = overrides or []
    place = results.resolve_matrix(config, overrides, matrix)
    cfg = place.config or config_mod.from_defaults(overrides)
    names = methods_to_run(method, cfg)
    if calibration is not None and calibration not in CORPORA:
        raise UserError(f"CALIBRATION={calibration!r} is not a corpus: allowed values are {', '.join(CORPORA)}")
    if pattern is None and not 0 < sparsity < 1:
        raise UserError(f"SPARSITY={sparsity:g} is not a fraction in (0, 1): e.g. SPARSITY=0.5")
    run_dir = find_model(run, config, overrides, matrix)
    return [
        prune_one(lambda: load_model(run, run_dir, cfg, calibration), name, cfg, sparsity, pattern, samples, seed)
        for name in names
    ]


def result_name(name: str, pruner, sparsity: float, pattern: tuple[int, int] | None) -> str:
    """A result's directory name: the method, its settings' variant, the target (``wanda-0.5``,
    ``wanda+per_layer-0.5``, ``sparsegpt-0.5-2of4``)."""
    return f"{name}{pruner.variant}-{target_name(sparsity, pattern)}"


def prune_one(
    load: Callable[[], Loaded],
    name: str,
    cfg,
    sparsity: float,
    pattern: tuple[int, int] | None,
    samples: int | None,
    seed: int,
) -> dict:
    """One method on a freshly loaded model (``load()``), with ``cfg``'s ONESHOT_* settings: the pruned layers,
    ``model.pt`` and ``prune.json`` in ``<out>/<method>-<target>/``; the summary, with its ``dir``."""
    pruner = build_method(name, cfg)
    samples = samples or cfg["ONESHOT_SAMPLES"]
    loaded = load()
    lm, corpus, out = loaded.lm, loaded.corpus, loaded.out
    seqlen = loaded.seqlen(cfg)
    evals = cfg["ONESHOT_EVAL_WINDOWS"]
    train, val = corpus_tokens(corpus, loaded.data_cfg, lm, loaded.tokenizer, max(samples, evals) * seqlen + 1)
    calib = windows(train, samples, seqlen, seed)
    valid = windows(val, evals, seqlen, None)
    before = perplexity(lm, valid)
    out_dir = out / result_name(name, pruner, sparsity, pattern)
    for stale in [out_dir / results.PRUNE_JSON, *out_dir.glob("layer*.pt")]:  # a rerun replaces every file
        stale.unlink(missing_ok=True)
    result = prune_model(lm, pruner, sparsity, pattern, calib, out_dir)
    after = perplexity(lm, valid)
    lm.save(out_dir)
    summary = {
        "model": lm.name,
        "method": name,
        "variant": pruner.variant,
        "settings": dataclasses.asdict(pruner.settings),
        "target": sparsity if pattern is None else 1 - pattern[0] / pattern[1],
        "pattern": None if pattern is None else f"{pattern[0]}:{pattern[1]}",
        "calibration": {"corpus": corpus, "samples": samples, "seqlen": seqlen, "seed": seed},
        "validation": {"corpus": corpus, "windows": len(valid), "seqlen": seqlen},
        "perplexity": {"before": before, "after": after},
        **result.to_json(),
    }
    results.atomic_write_json(out_dir / results.PRUNE_JSON, summary)  # last: its presence means the result is whole
    return {**summary, "dir": str(out_dir)}


def after_training(run_dir: Path, stop_requested: Callable[[], bool] = lambda: False) -> list[dict]:
    """``ONESHOT_AFTER_TRAINING`` (a GPT-2 run's stage after training, :func:`lib.training.run_training`): each
    selected method at each point of the one-shot :func:`grid` on the run's best checkpoint, with the run's own
    config, calibration text and seed (:func:`prune_grid`: results already there are skipped, so a resumed run
    finishes the rest; a stop request between two raises :class:`Interrupted`). The new summaries."""
    spec = RunSpec.from_json(results.read_json(run_dir / results.CONFIG))
    cfg = spec.cfg
    if not cfg.get("ONESHOT_AFTER_TRAINING"):
        return []
    load = lambda: load_model(str(run_dir), run_dir, cfg)  # noqa: E731
    return prune_grid(load, run_dir / results.ONESHOT_DIR, cfg, spec.axes["seed"], stop_requested)


def describe(s: dict) -> str:
    """One line of a ``prune_one`` summary: perplexity before -> after, what was pruned, where."""
    ppl = s["perplexity"]
    return (
        f"{s['model']} {s['method']} {s['pattern'] or s['target']}: perplexity {ppl['before']:.4g} -> "
        f"{ppl['after']:.4g} ({100 * (ppl['after'] / ppl['before'] - 1):+.1f}%; {s['validation']['windows']} "
        f"windows of {s['validation']['seqlen']} tokens of {s['validation']['corpus']}); "
        f"{len(s['layers'])} Linears at {s['sparsity']:.3f} sparsity in {s['seconds']:.1f} s; {s['dir']}"
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every command on one model takes (make prune, make analyze): the model, the seed, and where
    the .config, its overrides and the matrix are."""
    parser.add_argument("run", help="a GPT-2 run directory or run id, or a Hugging Face model (Hub name or directory)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=str(config_mod.DOTCONFIG))
    parser.add_argument("--set", default="", help="overrides: 'SYM=VALUE ...'")
    parser.add_argument("--matrix", metavar="DIR")


def parse_fraction(text: str, example: str) -> float:
    """SPARSITY= as a float, or one UserError naming ``example``."""
    try:
        return float(text)
    except ValueError:
        raise UserError(f"SPARSITY={text!r} is not a number: a fraction in (0, 1), e.g. {example}") from None


def parse_samples(text: str | None, example: int) -> int | None:
    """SAMPLES= as a positive int (None when not given), or one UserError naming ``example``."""
    if text is not None and not (text.isdigit() and int(text) > 0):
        raise UserError(f"SAMPLES={text!r} is not a positive integer: e.g. SAMPLES={example}")
    return int(text) if text else None


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m scripts.prune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--method", help=f"one of {', '.join(ONESHOT)} (default: the .config's ONESHOT_* selection)")
    parser.add_argument("--sparsity", default="0.5", help="fraction of each Linear's weights pruned (default 0.5)")
    parser.add_argument("--pattern", help="N:M, e.g. 2:4 (then the sparsity is 1 - N/M)")
    parser.add_argument("--calibration", help=f"corpus: {', '.join(CORPORA)} (default: the run's own)")
    parser.add_argument("--samples", help="calibration sequences (default ONESHOT_SAMPLES)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    sparsity = parse_fraction(args.sparsity, "SPARSITY=0.5")
    samples = parse_samples(args.samples, 128)
    summaries = prune(
        args.run,
        args.method,
        sparsity,
        parse_pattern(args.pattern),
        args.calibration,
        samples,
        args.seed,
        args.config,
        config_mod.split_overrides(args.set),
        args.matrix,
    )
    for s in summaries:
        print(describe(s))
    return 0


if __name__ == "__main__":
    run_cli(main)
