"""Text samples: each done GPT-2 run with GPT2_REPORT_SAMPLE_TOKENS > 0 continues the prompt from its best
checkpoint (cached in the run's ``sample.json``); runs with GPT2_SAMPLE_INTERVAL > 0 show the samples they wrote
during training (``samples.jsonl``), per step."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lib import results
from lib.errors import UserError
from lib.results import Run

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report

log = logging.getLogger(__name__)


def report_samples(runs: Sequence[Run]) -> list[tuple[Run, str]]:
    """(run, sample text or why there is none) for each done run whose config asks for a sample."""
    wanted = [r for r in runs if r.state == "done" and r.values.get("GPT2_REPORT_SAMPLE_TOKENS")]
    if not wanted:
        return []
    from scripts.sample import report_sample  # torch: only when a run asks for samples

    out = []
    for run in wanted:
        prompt, tokens = run.values.get("GPT2_REPORT_SAMPLE_PROMPT") or "", run.values["GPT2_REPORT_SAMPLE_TOKENS"]
        try:
            text = report_sample(run.path, prompt, tokens, run.best()[1])
        except (UserError, OSError, RuntimeError) as exc:  # the rest of the report is still written
            log.warning("%s: no sample: %s", run.run_id, exc)
            text = f"(no sample: {exc})"
        out.append((run, text))
    return out


def training_samples(run: Run) -> list[dict]:
    """The rows of the run's ``samples.jsonl`` by step; a step sampled again after a resume keeps its last row
    (the same text: sampling uses a generator of its own and the resumed weights are bit-identical)."""
    rows = {row["step"]: row for row in results.read_jsonl(run.path / results.SAMPLES) if "step" in row}
    return [rows[step] for step in sorted(rows)]


def _fenced(text: str) -> list[str]:
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return [f"{fence}text", text, fence]


def add_training_samples(report: Report) -> None:
    runs = [(run, rows) for run in report.matrix.runs if (rows := training_samples(run))]
    if not runs:
        return
    report.heading("Samples during training")
    report.add(
        "Every GPT2_SAMPLE_INTERVAL steps the model being trained continues the prompt (seed 0, temperature 0.8,"
        " top-k 200, a generator of its own): what each run writes as it learns.",
        "",
    )
    for run, rows in runs:
        report.heading(f"`{run.run_id}`", level=3)
        for row in rows:
            report.add(f"Step {row['step']}:", "", *_fenced(row.get("text", "")), "")


def add(report: Report) -> None:
    add_training_samples(report)
    samples = report_samples(report.matrix.runs)
    if not samples:
        return
    prompt = samples[0][0].values.get("GPT2_REPORT_SAMPLE_PROMPT") or ""
    report.heading("Samples")
    report.add(
        f"Each done run's best checkpoint continues the prompt {prompt!r} with `make sample`'s default seed,"
        " temperature and top-k; `make sample RUN=<run dir>` draws more.",
        "",
    )
    for run, text in samples:
        report.add(f"### `{run.run_id}`", "", *_fenced(text), "")
