"""Reading what an executed notebook showed: the outputs of the cells tagged for a lesson.

A notebook cell that shows a lesson carries a tag ``lesson-<name>`` (``lesson-predict-one``,
``lesson-t4-estimate``); a test finds it in the executed copy from the `runs` fixture and checks what it
displayed: a picture (``has_plot``), a table's rows (``tables``, from the text/html a pandas DataFrame
displays), or printed text (``text``).
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd

__all__ = ["lesson_cells", "lesson_outputs", "has_plot", "tables", "text"]


def _notebook(executed: Any) -> Any:
    """A NotebookNode from a path, a NotebookRun (its `output`), or a NotebookNode."""
    if getattr(executed, "ok", True) is False:  # a failed run's later cells show nothing: say why
        raise AssertionError(f"{executed.notebook} failed, so its lessons cannot show: {executed.error}")
    executed = getattr(executed, "output", executed)
    if isinstance(executed, (str, Path)):
        return nbformat.read(str(executed), as_version=4)
    return executed


def lesson_cells(executed: Any, tag: str) -> list:
    """The cells tagged `tag`, in order; an AssertionError naming the tags there are when there is none."""
    nb = _notebook(executed)
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    if not cells:
        tags = sorted({t for c in nb.cells for t in c.metadata.get("tags", [])})
        raise AssertionError(f"no cell tagged {tag!r}; the notebook's tags: {', '.join(tags) or 'none'}")
    return cells


def lesson_outputs(executed: Any, tag: str) -> list[dict]:
    """Every output of the cells tagged `tag` (a code cell's outputs; a markdown cell has none).
    An error output fails here, with its message: a lesson that raised shows nothing."""
    outputs = [o for c in lesson_cells(executed, tag) for o in c.get("outputs", [])]
    for o in outputs:
        if o.get("output_type") == "error":
            raise AssertionError(f"the cell tagged {tag!r} raised {o.get('ename')}: {o.get('evalue')}")
    return outputs


def has_plot(outputs: list[dict]) -> bool:
    """Whether the outputs hold a picture (matplotlib's PNG, or an SVG)."""
    return any(k in o.get("data", {}) for o in outputs for k in ("image/png", "image/svg+xml"))


def text(outputs: list[dict]) -> str:
    """What the outputs printed (streams) and displayed as plain text, joined.

    Consecutive writes to one stream are one text, as Jupyter shows them: a kernel may flush a single
    `print` in two messages (seen in CI: "...above:" then " True"), and that split must not matter.
    """
    parts: list[str] = []
    last_stream = None
    for o in outputs:
        if o.get("output_type") == "stream":
            chunk = "".join(o.get("text", ""))
            if parts and o.get("name") == last_stream:
                parts[-1] += chunk
            else:
                parts.append(chunk)
            last_stream = o.get("name")
        elif "text/plain" in o.get("data", {}):
            parts.append("".join(o["data"]["text/plain"]))
            last_stream = None
    return "\n".join(parts)


class _Tables(HTMLParser):
    """The <table>s of an HTML fragment: for each, its header rows (<thead>) and body rows, as cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[list[list[str]], list[list[str]]]] = []
        self._head = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append(([], []))
        elif tag == "thead":
            self._head = True
        elif tag == "tr" and self.tables:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1][0 if self._head else 1].append(self._row)
            self._row = None
        elif tag == "thead":
            self._head = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(outputs: list[dict]) -> list[pd.DataFrame]:
    """The tables a cell displayed (a DataFrame's text/html), each as a DataFrame of the cells' texts:
    the header row names the columns, the index comes first (named as the index is, else "")."""
    found = []
    for o in outputs:
        html = o.get("data", {}).get("text/html")
        if html is None:
            continue
        parser = _Tables()
        parser.feed("".join(html) if isinstance(html, list) else html)
        for head, body in parser.tables:
            width = max([len(r) for r in head + body] or [0])
            columns = (head[0] if head else [str(i) for i in range(width)]) + [""] * width
            columns = columns[:width]
            if len(head) > 1 and head[1] and not any(head[1][1:]):  # pandas' row of the index's name
                columns[0] = head[1][0]
            found.append(pd.DataFrame([r + [""] * (width - len(r)) for r in body], columns=columns))
    return found
