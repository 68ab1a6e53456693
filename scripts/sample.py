"""Generate text from a GPT-2 run's checkpoint (``make sample RUN=<run dir or run id>``).

``RUN`` is a run directory, or the id of a run in the matrix every command finds (``MATRIX=``, else
``RESULTS_DIR/latest`` with ``SET="RESULTS_DIR=<dir>"`` honoured; :func:`lib.results.resolve_matrix`).

The model is rebuilt from the run's own ``config.json`` (size, gate axes, tokenizer), its weights loaded from
``best.pt`` (the best validation loss; ``--checkpoint last`` for ``checkpoint.pt``), and ``--num`` samples of
``--tokens`` tokens drawn after the prompt (each prompt starts with the end-of-text token, as every training
document does). ``--temperature 0`` is greedy; ``--top-k`` keeps the k likeliest tokens; ``--seed`` makes the
samples reproducible. Sampling runs on CUDA when there is a GPU, else on the CPU.

The model is handed to the kernels the run selects (:func:`kernels.prepare`, purpose ``"inference"``), or those
``SET=`` selects: assignments of the inference kernels' symbols (:func:`kernels.inference_symbols`, e.g.
``SET="KERNELS_KV_COMPRESS=y KV_COMPRESS_RANK=8"``) replace the run's recorded ones, checked by Kconfig against
the run's own settings (2:4 Linears need a run pruned 2:4); the rest of ``SET=`` only finds the run. When one
of them calibrates (``KERNELS_SPARSE_GEMV``: activation thresholds), it observes the model on a few windows of
the run's validation text, and one line on stderr gives the validation perplexity of the model with and without
the kernels' approximation, measured on other validation windows just before it. Another gives the sampling
speed (tokens per second, and the device), so the effect of a kernel on decoding shows there.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import kernels
from lib import checkpoint, results
from lib import config as config_mod
from lib.data.corpora import CORPORA
from lib.data.shards import read_shard
from lib.data.text import TOKENIZERS
from lib.errors import ArgumentParser, UserError, run_cli
from lib.pruning.base import squash_state
from lib.spec import RunSpec
from lib.tasks import ConcatTokens, LanguageModeling
from models.gpt2.model import GPT2
from models.gpt2.train import model_config

logger = logging.getLogger(__name__)

CHECKPOINTS = {"best": results.BEST_CHECKPOINT, "last": results.CHECKPOINT}
DEFAULTS = {"tokens": 200, "temperature": 0.8, "top_k": 200, "seed": 0}
# A calibrating kernel's validation windows (block_size tokens each): the perplexity is measured on the first
# PERPLEXITY_WINDOWS, the kernel observes CALIBRATION_WINDOWS drawn from the tokens after them
PERPLEXITY_WINDOWS, CALIBRATION_WINDOWS = 8, 4


def find_run(run: str, config: str | Path, overrides: list[str], matrix: str | None) -> Path:
    """``run`` itself when it is a run directory, else the run of that id in the resolved matrix."""
    path = Path(run)
    if (path / results.CONFIG).is_file():
        return path
    place = results.resolve_matrix(config, overrides, matrix)
    if run and (place.path / run / results.CONFIG).is_file():
        return place.path / run
    raise UserError(
        f"{run} is not a run directory (no {results.CONFIG}), nor a run of the matrix {place.path}; give "
        'RUN=results/<matrix>/<run>, or a run id with MATRIX=<matrix dir> or SET="RESULTS_DIR=<dir>"'
    )


def sampling_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def validation_task(spec: RunSpec, block_size: int, device: torch.device) -> LanguageModeling:
    """A few windows of the run's validation text, as a task: its ``evaluate`` is the perplexity over the first
    ``PERPLEXITY_WINDOWS`` windows; its training batches are ``CALIBRATION_WINDOWS`` windows of the tokens after
    them (so a kernel never calibrates on the text its cost is measured on)."""
    cfg = spec.cfg
    data_dir = Path(cfg["DATA_DIR"])
    data_dir = data_dir if data_dir.is_absolute() else config_mod.ROOT / data_dir
    _, val = CORPORA[cfg["GPT2_DATASET"]](cfg).shards(data_dir, cfg["GPT2_TOKENIZER"])
    tokens = ConcatTokens(read_shard(p) for p in val)
    end = min(len(tokens), (PERPLEXITY_WINDOWS + CALIBRATION_WINDOWS) * (block_size + 1))
    cut = end * PERPLEXITY_WINDOWS // (PERPLEXITY_WINDOWS + CALIBRATION_WINDOWS)

    def span(start: int, stop: int) -> np.ndarray:  # too short a span is LanguageModeling's one clear error
        return tokens[start:stop] if stop > start else np.zeros(0, dtype=np.uint16)

    return LanguageModeling(
        span(cut, end),
        span(0, cut),
        device,
        batch_size=CALIBRATION_WINDOWS,
        block_size=block_size,
        eval_batches=PERPLEXITY_WINDOWS // CALIBRATION_WINDOWS,
    )


def load_run(run_dir: Path, which: str = "best") -> tuple[GPT2, object, RunSpec]:
    """(model, tokenizer, spec) of a GPT-2 run: the model rebuilt from the run's ``config.json`` with the chosen
    checkpoint's weights, each multiplied by its mask and the masks dropped (movement pruning keeps the values of
    masked weights; the others have them at 0 already), in eval mode on the CPU; no kernels (``make prune``
    starts here too)."""
    config = results.read_json(run_dir / results.CONFIG)
    if config is None:
        raise UserError(f"{run_dir} is not a run directory (no {results.CONFIG}); give RUN=results/<matrix>/<run>")
    spec = RunSpec.from_json(config)
    if spec.axes["model"] != "gpt2":
        raise UserError(f"{run_dir} is a {spec.axes['model']} run; sampling needs a gpt2 run")
    path = run_dir / CHECKPOINTS[which]
    if not path.exists():
        raise UserError(f"{path} does not exist yet: the run has not evaluated once; try --checkpoint last")
    tokenizer = TOKENIZERS[spec.cfg["GPT2_TOKENIZER"]]()
    model = GPT2(model_config(spec.cfg, spec.axes, tokenizer.vocab_size))
    try:  # never run code from a checkpoint someone handed over (weights_only; one line if it asks to)
        state = checkpoint.load(path)["model"]
    except checkpoint.UnreadableCheckpoint as e:
        raise UserError(f"{e}; sample another run, or train this one again") from None
    model.load_state_dict(squash_state(state))
    return model.eval(), tokenizer, spec


def split_kernel_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """``SET=``'s assignments to the inference kernels' symbols, and the rest (which find the run)."""
    if not overrides:
        return [], []
    kconf = config_mod.load_kconfig()
    names = kernels.inference_symbols(kconf)
    mine = [o for o in overrides if config_mod.override_name(kconf, o) in names]
    return mine, [o for o in overrides if o not in mine]


def inference_config(cfg: config_mod.Config, overrides: list[str]) -> config_mod.Config:
    """The run's recorded ``cfg`` with its inference kernels' symbols as ``overrides`` set them, checked by
    Kconfig on top of the run's own settings; every other value stays the run's."""
    if not overrides:
        return cfg
    kconf = config_mod.recorded_kconfig(cfg.values)
    config_mod.apply_overrides(kconf, overrides)
    ours = config_mod.to_config(kconf)
    values = dict(cfg.values)
    for name in kernels.inference_symbols(kconf):
        if name in ours:
            values[name] = ours[name]
        else:
            values.pop(name, None)  # a choice whose kernel is now off has no selection
    chosen = kernels.selected(config_mod.Config(values), "inference")
    logger.info("inference kernels from SET=: %s (%s)", ", ".join(chosen) or "none", " ".join(overrides))
    return config_mod.Config(values)


def load_model(run_dir: Path, which: str = "best", overrides: list[str] | None = None) -> tuple[GPT2, object]:
    """The run's GPT-2 (:func:`load_run`) on the sampling device, handed to its inference kernels: the run's,
    or those ``overrides`` (``SET=``'s inference-kernel assignments, :func:`split_kernel_overrides`) select."""
    model, tokenizer, spec = load_run(run_dir, which)
    cfg = inference_config(spec.cfg, overrides or [])
    device = sampling_device()
    model.to(device).eval()
    if not kernels.calibrating(cfg, "inference"):
        kernels.prepare(model, cfg, "inference", device)
        return model, tokenizer
    task = validation_task(spec, model.config.block_size, device)
    calibration, _ = next(task.batches(spec.axes["seed"], 0, steps=1))
    before = task.evaluate(model)["perplexity"]
    taken = kernels.prepare(model, cfg, "inference", device, calibration)
    after = task.evaluate(model)["perplexity"]
    logger.info(
        "validation perplexity %.4g with %s, %.4g without (%+.2f%%; %d windows of %d tokens of %s)",
        after,
        ", ".join(f"{name} ({len(modules)} layers)" for name, modules in taken.items()),
        before,
        100 * (after / before - 1),
        PERPLEXITY_WINDOWS,
        model.config.block_size,
        spec.cfg["GPT2_DATASET"],
    )
    return model, tokenizer


def sample(
    run_dir: Path,
    prompt: str = "",
    tokens: int = DEFAULTS["tokens"],
    temperature: float = DEFAULTS["temperature"],
    top_k: int | None = DEFAULTS["top_k"],
    seed: int = DEFAULTS["seed"],
    num: int = 1,
    which: str = "best",
    overrides: list[str] | None = None,
) -> list[str]:
    model, tokenizer = load_model(run_dir, which, overrides)
    start = [tokenizer.eot, *tokenizer.encode(prompt)]
    generator = torch.Generator().manual_seed(seed)  # on the CPU: generate draws there, on any device
    device = next(model.parameters()).device
    out = []
    tick = time.perf_counter()
    for _ in range(num):
        ids = model.generate(torch.tensor([start], device=device), tokens, temperature, top_k, generator=generator)
        out.append(prompt + tokenizer.decode(ids[0, len(start) :].tolist()))  # (the list waits for the device)
    seconds = time.perf_counter() - tick
    logger.info("sampled %d x %d tokens in %.2f s on %s: %.1f tokens/s", num, tokens, seconds, device.type,
                num * tokens / seconds)  # fmt: skip
    return out


def report_sample(run_dir: Path, prompt: str, tokens: int, best_step: int | None) -> str:
    """The report's sample of a run: ``tokens`` tokens after ``prompt`` from ``best.pt`` with the default
    temperature, top-k and seed, cached in the run's ``sample.json`` until any of those or the best step
    changes."""
    request = {**DEFAULTS, "prompt": prompt, "tokens": tokens, "best_step": best_step}
    cached = results.read_json(run_dir / results.SAMPLE)
    if cached and cached.get("request") == request:
        return cached["text"]
    (text,) = sample(run_dir, prompt, tokens, DEFAULTS["temperature"], DEFAULTS["top_k"], DEFAULTS["seed"])
    results.atomic_write_json(run_dir / results.SAMPLE, {"request": request, "text": text})
    return text


def _number(kind: type[int] | type[float], low: float | None, make_var: str = "") -> Callable[[str], float]:
    """An argparse type: a finite ``kind`` of at least ``low``; its error names ``make sample``'s variable."""
    what = ("an integer" if kind is int else "a number") + ("" if low is None else f" >= {low:g}")

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or (low is not None and value < low):
            given = f"{make_var}={text!r}" if make_var else repr(text)
            raise argparse.ArgumentTypeError(f"{given} is not {what}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m scripts.sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", help="a GPT-2 run directory (results/<matrix>/<run-id>), or a run id of the matrix")
    parser.add_argument("--config", default=str(config_mod.DOTCONFIG), help="the .config that names RESULTS_DIR")
    parser.add_argument(
        "--set",
        default="",
        help="overrides: 'SYM=VALUE ...': RESULTS_DIR=<dir> finds the run, inference kernels' symbols "
        "(KERNELS_KV_COMPRESS=y KV_COMPRESS_RANK=8 ...) replace the run's",
    )
    parser.add_argument("--matrix", metavar="DIR", help="where a run id is looked up (default: RESULTS_DIR/latest)")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--tokens", type=_number(int, 1, "TOKENS"), default=DEFAULTS["tokens"])
    parser.add_argument("--temperature", type=_number(float, 0, "TEMPERATURE"), default=DEFAULTS["temperature"])
    parser.add_argument("--top-k", type=_number(int, 0, "TOP_K"), default=DEFAULTS["top_k"], help="0 keeps every token")
    parser.add_argument("--seed", type=_number(int, None, "SEED"), default=DEFAULTS["seed"])
    parser.add_argument("--num", type=_number(int, 1), default=1)
    parser.add_argument("--checkpoint", choices=sorted(CHECKPOINTS), default="best")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)  # the kernels' lines
    kernel_overrides, where = split_kernel_overrides(config_mod.split_overrides(args.set))
    texts = sample(
        find_run(args.run, args.config, where, args.matrix),
        args.prompt,
        tokens=args.tokens,
        temperature=args.temperature,
        top_k=args.top_k or None,
        seed=args.seed,
        num=args.num,
        which=args.checkpoint,
        overrides=kernel_overrides,
    )
    for i, text in enumerate(texts):
        print(f"--- sample {i} (seed {args.seed}, temperature {args.temperature}, top-k {args.top_k or 'all'})")
        print(text)
    return 0


if __name__ == "__main__":
    run_cli(main)
