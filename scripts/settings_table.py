"""Print the README's settings table from gateway.settings (or rewrite it in place with --write)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.settings import Settings

START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    rows += [f"| `{env}` | `{default}` | {doc} |" for env, default, doc in Settings.documentation()]
    return "\n".join(rows)


def rewrite(readme: Path) -> None:
    text = readme.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{START}\n{table()}\n{END}{tail}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        rewrite(Path(__file__).resolve().parent.parent / "README.md")
    else:
        print(table())
