"""Instructor commands: release the notebooks, autograde a class in parallel, write grades."""
import sys


def skip_iri_grammars() -> None:
    """Keep jsonschema from loading ``rfc3987_syntax`` in this process.

    jsonschema, which nbformat imports, loads ``rfc3987_syntax`` (when installed, as JupyterLab's
    dependencies install it) for its "iri" string format, and that module compiles 38 grammars
    on import: 2.5-4 s of every grading worker's start (of the 23 s one 00_welcome submission
    took to grade on a slow 2-core machine). No notebook schema uses that format, so nbformat
    validates exactly as before. Call it before anything imports nbformat; it does nothing once
    jsonschema is loaded."""
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)      # None: `import` raises ImportError
