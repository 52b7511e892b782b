"""Each exercise's hint, read from its notebook: the collapsed Hint cell right above the answer cell
is the one copy of the text, which ``hint("name")`` shows too."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

_COURSE = Path(__file__).resolve().parents[2]
_DETAILS = re.compile(r"<summary>.*?</summary>(.*?)</details>", re.DOTALL)


def hint_text(ex) -> str | None:
    """The text of ``ex``'s Hint cell in the released notebook (``notebooks/``), or None."""
    path = _COURSE / "notebooks" / ex.notebook / f"{ex.notebook}.ipynb"
    return _hints(path, path.stat().st_mtime_ns).get(ex.name) if path.is_file() else None


@lru_cache(maxsize=8)
def _hints(path: Path, mtime_ns: int) -> dict[str, str]:       # the time: an edited notebook is read again
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    found = {}
    for above, cell in zip(cells, cells[1:]):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", "")
        text = _DETAILS.search("".join(above["source"])) if above["cell_type"] == "markdown" else None
        if grade_id.endswith("_answer") and text:
            found[grade_id.removesuffix("_answer")] = text.group(1).strip()
    return found
