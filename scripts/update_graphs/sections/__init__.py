"""The report's sections, in the order they appear. A section is a function that reads the matrix from a
:class:`~scripts.update_graphs.report.Report`, draws the figures it shows and appends its lines (nothing when
it has nothing to say; "not measured: ..." when its runs do not record what it shows). Adding a section = one
module here and one entry below."""

from __future__ import annotations

from scripts.update_graphs.sections import (
    analysis,
    attn_gating,
    banded,
    curves,
    efficiency,
    evolution,
    failed,
    header,
    memory_bars,
    memory_panels,
    memory_scatter,
    memory_timeline,
    oneshot,
    perplexity,
    reciprocal,
    reproduction,
    run_curves,
    runs,
    samples,
    sparsity,
)

SECTIONS = (
    header.add,  # title, description, counts
    sparsity.add,  # final metric vs target sparsity, every method: figures and tables, differences from dense
    evolution.add,  # eval metric and train loss vs step, per method (mean over seeds)
    perplexity.add,  # final perplexity per method, for language models
    oneshot.add,  # one-shot pruning of the trained runs: perplexity after vs target, per method
    analysis.add,  # make analyze on the runs: mask agreement, MMM coherence, co-activation clusters
    reciprocal.add,  # reciprocal attention / MLP variants: loss mean ± std, parameters, FLOPs, speed, noise flag
    reproduction.add,  # our figures beside the published table the matrix reproduces (lib.published)
    attn_gating.add,  # the published attention-gating stages: our final loss beside the published one
    memory_bars.add,  # peak (GPU) memory per method
    memory_panels.add,  # the six-panel training-memory comparison
    memory_scatter.add,  # peak memory vs final metric, one point per run
    efficiency.add,  # accuracy per 100 MiB of peak memory, ranked
    memory_timeline.add,  # sampled memory over time, per run
    banded.add,  # banded-MLP runs vs their dense baseline, per band width
    curves.add,  # every run's curves overlaid
    runs.add,  # a table of every run
    failed.add,  # the failed runs and why
    samples.add,  # text samples of GPT-2 runs
    run_curves.add,  # each run's own curves
)
