"""The analysis tables of the results database, interactively: a marimo notebook (issue 16).

Opens ``RESULTS_DIR/results.duckdb`` read-only, lists its tables, runs the SQL you write and draws histograms of
the analysis tables (``docs/analysis.md``). marimo is an optional extra, not part of the test install:

    .venv/bin/pip install -e '.[notebook]'     # or: .venv/bin/pip install marimo
    .venv/bin/marimo edit notebooks/analysis.py    # RESULTS_DIR=<dir> to open another results directory
"""

import marimo

app = marimo.App(width="medium")


@app.cell
def _():
    import os
    from pathlib import Path

    import duckdb
    import marimo as mo

    results_dir = Path(os.environ.get("RESULTS_DIR", "results"))
    database = results_dir / "results.duckdb"
    con = duckdb.connect(str(database), read_only=True) if database.is_file() else None
    mo.md(f"**Database:** `{database}`" + ("" if con else " — missing: run an analysis or `make update-graphs`"))
    return con, mo


@app.cell
def _(con, mo):
    tables = [] if con is None else [row[0] for row in con.execute("SHOW TABLES").fetchall()]
    mo.md("**Tables:** " + (", ".join(f"`{t}`" for t in tables) or "none"))
    return (tables,)


@app.cell
def _(mo):
    sql = mo.ui.code_editor(
        value="SELECT layer, component, jaccard, hamming_frac, cosine FROM mask_comparison ORDER BY layer, component",
        language="sql",
        label="SQL (read-only)",
    )
    sql  # noqa: B018  # the last expression is what a marimo cell shows
    return (sql,)


@app.cell
def _(con, mo, sql):
    def run(query):
        try:
            result = con.execute(query)
            names = [d[0] for d in result.description or []]
            return mo.ui.table([dict(zip(names, row, strict=True)) for row in result.fetchall()])  # no pandas needed
        except Exception as e:  # a bad query is shown, not raised: the notebook stays usable
            return mo.md(f"**error:** {e}")

    run(sql.value) if con is not None else mo.md("no database")
    return


@app.cell
def _(mo, tables):
    analysis = [
        t for t in ("mask_comparison", "coactivation_clusters", "coactivation_hamming", "mmm_coherence") if t in tables
    ]
    choice = mo.ui.dropdown(options=analysis, value=analysis[0] if analysis else None, label="analysis table")
    choice  # noqa: B018  # the last expression is what a marimo cell shows
    return (choice,)


@app.cell
def _(choice, con, mo):
    from matplotlib.figure import Figure

    columns = {
        "mask_comparison": "jaccard",
        "coactivation_clusters": "separation",
        "mmm_coherence": "coherence",
    }
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.subplots()
    if choice.value == "coactivation_hamming":
        rows = con.execute(
            "SELECT bin_lo, sum(pairs) FROM coactivation_hamming GROUP BY bin_lo ORDER BY bin_lo"
        ).fetchall()
        ax.bar(
            [r[0] for r in rows],
            [r[1] for r in rows],
            width=rows[1][0] - rows[0][0] if len(rows) > 1 else 0.02,
            align="edge",
        )
        ax.set_xlabel("Hamming distance (fraction of tokens)")
        ax.set_ylabel("feature pairs")
    elif choice.value:
        column = columns[choice.value]
        values = [r[0] for r in con.execute(f"SELECT {column} FROM {choice.value} WHERE isfinite({column})").fetchall()]
        ax.hist(values, bins=30)
        ax.set_xlabel(column)
        ax.set_ylabel("rows")
    ax.set_title(choice.value or "no analysis table yet")
    mo.as_html(fig)
    return


if __name__ == "__main__":
    app.run()
