"""The scripts of bench/ (not a package), loaded as modules for the tests of their parts."""
from __future__ import annotations

import importlib.util
from pathlib import Path


def load_bench(name: str):
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
