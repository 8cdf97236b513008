"""What each chapter notebook shows: functions that read a stage's result files (and the paper's
numbers from :mod:`ust.report.published`) and return a :class:`matplotlib.figure.Figure`, a
:class:`pandas.DataFrame` or a sentence, so that a notebook cell is one call whose value Jupyter
displays. One module per notebook: :mod:`.teacher` (10), :mod:`.oneclass` (20), :mod:`.mvtec`
(30), :mod:`.multiscale` (31), :mod:`.mds` (40) and :mod:`.overview` (00); each imports only what
its stage already depends on, so that editing one chapter's view re-runs only that stage.

The figures of ``ust`` are drawn with matplotlib's Agg backend, which Jupyter does not display by
itself; importing this package registers a PNG formatter for :class:`Figure` in a running IPython
kernel (:func:`enable_inline_figures`), so a Figure as a cell's value appears inline and papermill
keeps it as an ``image/png`` output.

The paper comparisons share one layout (:func:`comparison_table`): one row per quantity, columns
``ours``, ``paper``, ``ours − paper``, ``paper source`` and ``note``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import pandas as pd

__all__ = [
    "COMPARISON_COLUMNS",
    "NOT_IN_PAPER",
    "comparison_table",
    "enable_inline_figures",
    "figure_png",
    "number",
]

#: columns of every paper-comparison table, after the row label ``quantity``
COMPARISON_COLUMNS = ("ours", "paper", "ours − paper", "paper source", "note")
#: the note of a row the papers have no number for
NOT_IN_PAPER = "not in the paper"


def figure_png(fig, dpi: int = 100) -> bytes | None:
    """PNG bytes of a matplotlib Figure (tight bounding box), or None for a figure without axes."""
    if not fig.axes:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def enable_inline_figures() -> bool:
    """Register :func:`figure_png` as the ``image/png`` formatter of :class:`Figure` in the running
    IPython shell; returns False outside IPython (nothing to do)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the dev dependencies
        return False
    shell = get_ipython()
    if shell is None:
        return False
    from matplotlib.figure import Figure

    shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)
    return True


def _value(v) -> float:
    """``v`` as a float, NaN for None."""
    return math.nan if v is None else float(v)


def comparison_table(rows: Sequence[Mapping]) -> pd.DataFrame:
    """One paper-comparison table from ``rows`` of ``{"quantity", "ours", "paper", "source",
    "note"}`` (numbers or None; ``source`` and ``note`` optional strings).

    Returns:
        DataFrame indexed by ``quantity`` with float columns ``ours``, ``paper`` and
        ``ours − paper`` (NaN where a number is missing) and string columns ``paper source`` and
        ``note`` (``"not in the paper"`` when ``paper`` is missing and no note is given).
    """
    records = []
    for row in rows:
        ours, paper = _value(row.get("ours")), _value(row.get("paper"))
        note = row.get("note") or ("" if not math.isnan(paper) else NOT_IN_PAPER)
        records.append(
            {
                "quantity": str(row["quantity"]),
                "ours": ours,
                "paper": paper,
                "ours − paper": ours - paper,
                "paper source": row.get("source") or ("" if math.isnan(paper) else "[P]"),
                "note": note,
            }
        )
    frame = pd.DataFrame(records, columns=["quantity", *COMPARISON_COLUMNS])
    return frame.set_index("quantity")


def number(v, digits: int = 3) -> str:
    """``v`` with ``digits`` decimals, signed differences keep their sign; "–" for None/NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{float(v):.{digits}f}"


enable_inline_figures()
