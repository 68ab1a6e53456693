"""Text samples: each done GPT-2 run with GPT2_REPORT_SAMPLE_TOKENS > 0 continues the prompt from its best
checkpoint (cached in the run's ``sample.json``)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

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


def add(report: Report) -> None:
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
        fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
        report.add(f"### `{run.run_id}`", "", f"{fence}text", text, fence, "")
