"""How results are printed: JSON with ``--json`` or when not on a terminal, aligned text on a terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO


class Output:
    def __init__(self, as_json: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.as_json = as_json or not self.stream.isatty()

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def json_line(self, value: Any) -> None:
        self.line(json.dumps(value, separators=(",", ":"), ensure_ascii=False))

    def show(self, value: Any, columns: Sequence[str] = ()) -> None:
        """A result: indented JSON, or a table (a list with ``columns``) / ``key: value`` lines (a dict)."""
        if self.as_json:
            self.line(json.dumps(value, indent=2, ensure_ascii=False))
        elif isinstance(value, list) and columns:
            self.table(value, columns)
        elif isinstance(value, dict):
            width = max((len(k) for k in value), default=0)
            for key, item in value.items():
                text = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
                self.line(f"{key.ljust(width)}  {text}")
        elif value is not None:
            self.line(value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False))

    def table(self, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
        cells = [[_cell(row.get(c)) for c in columns] for row in rows]
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        self.line("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for row in cells:
            self.line("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if not rows:
            self.line("(none)")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def error(message: str) -> None:
    sys.stderr.write(f"flowgate: {message}\n")
    sys.stderr.flush()
