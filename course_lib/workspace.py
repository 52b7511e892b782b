"""The learner's working copies: ``notebooks/<id>/`` (the release) -> ``work/<id>/``.

Rules (``./course lab`` runs :func:`sync_workspace` before starting JupyterLab):

* A release file whose working copy does not exist is copied (so a new notebook folder in a
  later release appears beside the old ones, and deleting a working copy restores it).
* An existing working copy is never overwritten.
* If a release file changed since it was copied, the new release is written beside the
  learner's file as ``<name>.updated<suffix>`` (e.g. ``05_attention.updated.ipynb``), only
  if that file does not exist yet, and a message tells the learner. If it does exist, the
  learner is told once and the new release is saved on the first run after it is gone.

What was copied is remembered in ``<work_dir>/.course-copies.json`` (the SHA-256 of each
release file at copy time). Hidden files, ``.ipynb_checkpoints`` and ``__pycache__`` are
skipped. Command line: ``python -m course_lib.workspace [release_dir] [work_dir]``
(defaults ``notebooks`` and ``$COURSE_WORKDIR`` or ``work``).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["STATE_FILE", "sync_workspace", "updated_name"]

STATE_FILE = ".course-copies.json"
_SKIP_DIRS = {".ipynb_checkpoints", "__pycache__"}


def updated_name(path: Path) -> Path:
    """``a/05_attention.ipynb`` -> ``a/05_attention.updated.ipynb``."""
    return path.with_name(f"{path.stem}.updated{path.suffix}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _release_files(release_dir: Path) -> list[Path]:
    """Files under ``release_dir/<id>/``, relative to ``release_dir``, sorted."""
    found = []
    for folder in sorted(p for p in release_dir.iterdir() if p.is_dir()):
        if folder.name.startswith(".") or folder.name in _SKIP_DIRS:
            continue
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
            for name in sorted(files):
                if not name.startswith("."):
                    found.append((Path(root) / name).relative_to(release_dir))
    return found


def _load_state(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        if isinstance(state, dict) and isinstance(state.get("files"), dict):
            return state
    except (OSError, ValueError):
        pass
    return {"version": 1, "files": {}}


def _atomic_copy(src: Path, dest: Path) -> None:
    """Copy ``src`` to a new file ``dest``; never replaces an existing ``dest``.

    The copy is written to a temporary name first and then hard-linked into place, so a
    half-written notebook never appears; the file gets the user's normal permissions.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(src, "rb") as fsrc, open(tmp, "xb") as ftmp:
            shutil.copyfileobj(fsrc, ftmp)
        try:
            os.link(tmp, dest)  # fails if dest exists: nothing is overwritten
        except FileExistsError:
            raise
        except OSError:  # file systems without hard links: exclusive create instead
            with open(src, "rb") as fsrc, open(dest, "xb") as fdest:
                shutil.copyfileobj(fsrc, fdest)
    finally:
        tmp.unlink(missing_ok=True)


def _save_state(path: Path, state: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sync_workspace(release_dir: str | os.PathLike, work_dir: str | os.PathLike) -> list[str]:
    """Bring ``work_dir`` up to date with ``release_dir`` without touching learner files.

    Returns one human-readable message per folder that received copies and per file whose
    newer release was saved as ``.updated`` (nothing when all is up to date).
    """
    release_dir, work_dir = Path(release_dir), Path(work_dir)
    if not release_dir.is_dir():
        raise FileNotFoundError(f"release folder not found: {release_dir}")
    work_dir.mkdir(parents=True, exist_ok=True)
    state_path = work_dir / STATE_FILE
    state = _load_state(state_path)
    records: dict = state["files"]
    copied: dict[str, int] = {}
    messages: list[str] = []
    changed = False

    for rel in _release_files(release_dir):
        key = rel.as_posix()
        src, dest = release_dir / rel, work_dir / rel
        release_sha = _sha256(src)
        record = records.get(key)

        if not dest.exists():
            _atomic_copy(src, dest)
            records[key] = {"sha256": release_sha}
            copied[rel.parts[0]] = copied.get(rel.parts[0], 0) + 1
            changed = True
            continue
        if record is None:
            # A file we did not copy (or the record was lost): leave it alone. If it is
            # identical to the release, adopt it so later releases are noticed.
            if _sha256(dest) == release_sha:
                records[key] = {"sha256": release_sha}
                changed = True
            continue
        if record.get("sha256") == release_sha:
            continue  # release unchanged since the copy
        if _sha256(dest) == release_sha:
            records[key] = {"sha256": release_sha}  # the learner already has this release
            changed = True
            continue
        if record.get("updated_sha256") == release_sha:
            continue  # already told the learner about this release
        beside = updated_name(dest)
        shown = (Path(work_dir.name) / rel).as_posix()
        if beside.exists():
            # Not delivered: tell the learner once, and copy it as soon as the file is gone.
            if record.get("blocked_sha256") != release_sha:
                messages.append(
                    f"{shown}: a newer release exists, but {beside.name} is already there; "
                    f"delete or rename it and start the course again to get the newest one."
                )
                record["blocked_sha256"] = release_sha
                changed = True
            continue
        _atomic_copy(src, beside)
        messages.append(
            f"{shown}: a newer release was saved beside your file as {beside.name} "
            f"(your file is unchanged)."
        )
        record["updated_sha256"] = release_sha
        record.pop("blocked_sha256", None)
        changed = True

    messages[:0] = [
        f"copied {count} {'file' if count == 1 else 'files'} into {work_dir.name}/{folder}/"
        for folder, count in copied.items()
    ]
    if changed or not state_path.exists():
        _save_state(state_path, state)
    return messages


def _main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 2 or any(a in ("-h", "--help") for a in args):
        print("usage: python -m course_lib.workspace [release_dir] [work_dir]")
        return 0 if args and args[0] in ("-h", "--help") else 2
    release = args[0] if args else "notebooks"
    work = args[1] if len(args) > 1 else os.environ.get("COURSE_WORKDIR") or "work"
    if not Path(release).is_dir():
        print(f"course: no release folder {release}/ here; run this from the course folder",
              file=sys.stderr)
        return 1
    for line in sync_workspace(release, work):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
