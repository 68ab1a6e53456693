"""The report's sections, in the order they appear. A section is a function that reads the matrix from a
:class:`~scripts.update_graphs.report.Report`, draws the figures it shows and appends its lines (nothing when
it has nothing to say). Adding a section = one module here and one entry below."""

from __future__ import annotations

from scripts.update_graphs.sections import banded, curves, failed, header, run_curves, runs, samples, sparsity

SECTIONS = (
    header.add,  # title, description, counts
    sparsity.add,  # final metric vs target sparsity: figures and tables
    banded.add,  # banded-MLP runs vs their dense baseline, per band width
    curves.add,  # every run's curves overlaid
    runs.add,  # a table of every run
    failed.add,  # the failed runs and why
    samples.add,  # text samples of GPT-2 runs
    run_curves.add,  # each run's own curves
)
