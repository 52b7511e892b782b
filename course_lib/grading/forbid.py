"""Catch library shortcuts: by reading the answer's source, and by watching it run.

Reading (``scan_source``) resolves import aliases (``import torch.nn.functional as F``) and
flags attribute chains that reach a forbidden target, plus the few constructs an answer cell
never needs and that could switch the watching off (``sys.setprofile``, ``exec``...).
Watching (``CallWatcher``) records, while the answer runs, every call into a forbidden Python
function or class, every forbidden C function called from Python, and every forbidden ATen
operator however it was reached.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import sys
from typing import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .spec import Forbidden


def preload_compiler() -> None:
    """Import torch's compiler (torch._dynamo, sympy: a thousand modules, over a second), which torch imports at a
    dispatch mode's first call (the first check's), an optimizer's first parameter group and a meta tensor's first
    reference op: no course check avoids it. Called where answers run and may be stopped (the kernel, at the
    setup cell's import; the grading sandbox, before the first case): a stop or a case timeout inside that import
    left it half-imported, and every later check failed (05's second learner). Processes that only judge (the
    grading worker, one per submission) never import it."""
    import torch._dynamo  # noqa: F401


# Constructs that no answer in this course needs and that can hide a call from the checks.
ESCAPE_HATCHES = {
    "exec": "it runs code the checks cannot read",
    "eval": "it runs code the checks cannot read",
    "compile": "it builds code the checks cannot read",
    "__import__": "it imports modules behind the checks' back",
    "importlib": "it imports modules behind the checks' back",
    "ctypes": "it reaches into the interpreter",
    "sys.modules": "it reaches modules behind the checks' back",
    "inspect": "it reaches into the checks' own frames",
    "gc": "it reaches objects behind the checks' back",
    "builtins": "it can replace Python's own functions",
    "get_ipython": "it can change how later cells run",
    "course_lib.grading": "it reaches into the grader",
    "course_lib.instructor": "it reaches into the grader",
}
# Settings that change every tensor made after them, the checks' own and every later cell's: an answer
# that needs another dtype or device gives it to its own tensors (dtype=x.dtype, device=x.device).
GLOBAL_SETTINGS = {
    **dict.fromkeys(["torch.set_default_dtype", "torch.set_default_tensor_type"],
                    "it changes the dtype of every tensor made after it, in the checks and in every later "
                    "cell; give dtype= to the tensors that need it (dtype=x.dtype)"),
    "torch.set_default_device": "it changes where every tensor made after it lives, in the checks and in every "
                                "later cell; give device= to the tensors that need it (device=x.device)",
}
# Attributes no answer needs, however they are reached (sys.setprofile, torch.sys.setprofile,
# threading.setprofile, getattr(f, "__code__")):
# how an answer could pause the watcher, or rebuild the answer key so that it is not recognised.
ATTRIBUTE_HATCHES = {
    **dict.fromkeys(["__code__", "__globals__", "__closure__", "__builtins__", "__subclasses__"],
                    "it takes functions apart"),
    "setprofile": "it can switch off the checks",
    "settrace": "it can switch off the checks",
    "_getframe": "it reaches into the checks' own frames",
}

# The hatches that are modules: only an import reaches them, so a variable of the answer's own with one of
# these names (gc for "g, centred", a clip coefficient) is not one. The builtins (exec, eval...) stay
# flagged under any binding: `def f(eval=eval)` would otherwise hide the real one.
MODULE_HATCHES = {"importlib", "ctypes", "inspect", "gc", "builtins"}

DEFAULT_ALIASES = {"F": "torch.nn.functional", "nn": "torch.nn", "np": "numpy", "optim": "torch.optim"}


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    return None


def _matches(name: str, target: str) -> bool:
    if name == target:
        return True
    n, t = name.split("."), target.split(".")
    # Same top package and same final name: torch.nn.functional.layer_norm also matches
    # torch.functional.layer_norm; course_lib.reference.x matches course_lib.reference.heads.x.
    return len(n) >= 2 and n[0] == t[0] and n[-1] == t[-1]


# Magics that only time a cell or hide its output: an answer cell under one is graded as the code it wraps, run
# once (%%time, %%timeit, %%capture on the first line; %time before a statement; a %timeit line is dropped).
TIMING_CELL_MAGICS = {"time", "timeit", "capture"}


def _ipython_call(node: ast.AST) -> tuple[str, list] | None:
    """``get_ipython().method(args...)`` as (method, the string arguments), else None."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Call)
            and isinstance(node.func.value.func, ast.Name) and node.func.value.func.id == "get_ipython"):
        return node.func.attr, [a.value for a in node.args if isinstance(a, ast.Constant)]
    return None


def python_source(source: str) -> str:
    """A notebook cell as plain Python, as the grader runs and reads it: ``%magics`` and ``!shell`` lines become
    the calls IPython makes of them, except the timing magics, which stand for the code they wrap. A cell IPython
    has already transformed (the kernel's input history) comes out the same."""
    from IPython.core.inputtransformer2 import TransformerManager
    code = TransformerManager().transform_cell(source)
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return code
    call = _ipython_call(body[0].value) if len(body) == 1 and isinstance(body[0], ast.Expr) else None
    if call and call[0] == "run_cell_magic" and len(call[1]) == 3 and call[1][0] in TIMING_CELL_MAGICS:
        return "\n" + python_source(call[1][2])           # the magic's line kept, so line numbers stay
    lines = code.split("\n")
    for node in body:
        call = _ipython_call(node.value) if isinstance(node, ast.Expr) else None
        if call and call[0] == "run_line_magic" and len(call[1]) == 2 and call[1][0] in ("time", "timeit"):
            statement = call[1][1] if call[1][0] == "time" else "pass"
            lines[node.lineno - 1] = " " * node.col_offset + statement
    return "\n".join(lines)


def magic_lines(source: str) -> list[str]:
    """The IPython commands a cell runs through get_ipython, as written: ``%magic``, ``%%magic``, ``!shell``."""
    try:
        tree = ast.parse(python_source(source))
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        call = _ipython_call(node)
        if call and call[0] in ("run_line_magic", "run_cell_magic") and len(call[1]) >= 2:
            found.append(f"{'%%' if call[0] == 'run_cell_magic' else '%'}{call[1][0]} {call[1][1]}".strip())
        elif call and call[0] in ("system", "getoutput") and call[1]:
            found.append(f"!{call[1][0]}")
    return found


def scan_source(source: str, forbidden: Iterable[Forbidden], own_names: Iterable[str] = ()) -> list[str]:
    """Problems found by reading ``source`` (a notebook cell, read as ``python_source``); each a
    sentence for the learner."""
    try:
        tree = ast.parse(python_source(source))
    except SyntaxError as e:
        return [f"does not parse: {e.msg} (line {e.lineno})"]
    forbidden = list(forbidden)
    aliases = dict(DEFAULT_ALIASES)
    own = set(own_names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    own_variables = _bound_names(tree) - set(aliases)
    looked_up = _looked_up_strings(tree)
    problems: list[str] = []
    in_defs = {id(n) for top in tree.body if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
               for n in ast.walk(top)}

    def where(node) -> str:
        """A use at the cell's top level, outside the answer's def: a test of the learner's own, most often."""
        if id(node) in in_defs or not hasattr(node, "lineno"):
            return ""
        return (f" (line {node.lineno} of the cell, outside the function: an answer cell may not use it even to "
                f"test your answer; compare in a cell of your own)")

    def add(text: str) -> None:
        if text not in problems:
            problems.append(text)

    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, (ast.Name, ast.Attribute)):
            d = _dotted(node, aliases)
            if d:
                names.append(d)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in ATTRIBUTE_HATCHES:
                add(f"uses {node.value}, which answer cells may not use: {ATTRIBUTE_HATCHES[node.value]}")
            for f in forbidden:
                last = f.target.rsplit(".", 1)[-1]
                if node.value == last and last not in own and id(node) in looked_up:
                    add(f"calls {f.display} (named in a string): {f.reason}")
        attr = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        if attr in ATTRIBUTE_HATCHES:
            add(f"uses {attr}, which answer cells may not use: {ATTRIBUTE_HATCHES[attr]}")
        for d in names:
            hits = [f for f in forbidden if _matches(d, f.target)]
            exact = [f for f in hits if d == f.target or f.target.startswith(d + ".")]  # or the module holding it
            for f in exact or hits:             # one call, one line: a namesake only when nothing is named exactly
                add(f"calls {f.display if f in exact else d}: {f.reason}{where(node)}")   # as written when a namesake
            for hatch, why in (ESCAPE_HATCHES | GLOBAL_SETTINGS).items():
                if (d == hatch or d.startswith(hatch + ".")) and not (
                        hatch in MODULE_HATCHES and _root(node) in own_variables):
                    add(f"uses {hatch}, which answer cells may not use: {why}")
    said, magics = f"uses get_ipython, which answer cells may not use: {ESCAPE_HATCHES['get_ipython']}", magic_lines(source)
    if magics and said in problems:
        problems[problems.index(said)] = (f"has the IPython command `{magics[0]}`, which answer cells may not use "
                                          f"(IPython runs it through get_ipython, which "
                                          f"{ESCAPE_HATCHES['get_ipython'].removeprefix('it ')}): move it into a "
                                          f"cell of your own")
    return problems


def _looked_up_strings(tree: ast.AST) -> set[int]:
    """ids of the string constants used to look a name up: getattr(torch, "softmax"), vars(F)["softmax"],
    torch.__dict__.get("softmax"). A label ("SGD" in a print or a plot's legend) is no call."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            looks_in_namespace = name != "get" or getattr(node.func.value, "attr", None) == "__dict__" or getattr(
                getattr(node.func.value, "func", None), "id", None) in ("vars", "globals", "locals")
            if name in ("getattr", "hasattr", "__getattribute__", "__getattr__", "get", "attrgetter",
                        "import_module", "__import__", "eval") and looks_in_namespace:
                found.update(id(a) for a in node.args if isinstance(a, ast.Constant))
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and (    # not cache["grad"]
                getattr(node.value, "attr", None) == "__dict__"
                or getattr(getattr(node.value, "func", None), "id", None) in ("vars", "globals", "locals")):
            found.add(id(node.slice))
    return found


def _bound_names(tree: ast.AST) -> set[str]:
    """Names the cell binds other than by import: assigned, loop and with targets, parameters, defs."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound


def _root(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _resolve(target: str):
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for p in parts[i:]:
                obj = getattr(obj, p)
        except AttributeError:
            return None
        return obj
    return None


class _AtenWatcher(TorchDispatchMode):
    def __init__(self, watched: dict[str, Forbidden], calls: "CallWatcher"):
        super().__init__()
        self.watched, self.calls = watched, calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        f = self.watched.get(func._schema.name)
        if f is not None:
            self.calls.record(f)
        return func(*args, **(kwargs or {}))


# sys's own switches (C functions, so seen as c_call events); threading's call these.
_SWITCHES = {id(f) for f in (sys.setprofile, sys.settrace, getattr(sys, "_setprofileallthreads", None)) if f}


class CallWatcher:
    """Context manager recording calls to forbidden targets while the answer runs.

    ``hits`` maps the shown name to its :class:`Forbidden`, for the calls the answer makes itself: what a
    forbidden function calls in turn (clip_grad_norm_'s _foreach_norm) is its business, not the answer's.
    ``tampered`` is set when the profiling hook was removed from under it.
    """

    def __init__(self, forbidden: Iterable[Forbidden]):
        self.codes: dict[object, Forbidden] = {}
        self.places: dict[tuple[str, int], Forbidden] = {}   # a copy of a watched code object
        self.builtins: dict[int, Forbidden] = {}
        self.methods: dict[str, Forbidden] = {}
        self.aten: dict[str, Forbidden] = {}
        for f in forbidden:
            for op in f.aten:
                self.aten[op] = f
            obj = _resolve(f.target)
            if obj is None:
                continue
            if isinstance(obj, type):
                for attr in vars(obj).values():
                    # torch.optim wraps Optimizer.step in a profiling wrapper whose code every
                    # optimizer shares: watch the wrapped original, never a shared wrapper.
                    attr = inspect.unwrap(getattr(attr, "__func__", attr))
                    code = getattr(attr, "__code__", None)
                    if code is not None:
                        self._watch(code, f)
            elif hasattr(obj, "__code__"):
                # A decorated function (torch.nn.utils' clipping helpers share one no_grad wrapper):
                # watch the function it wraps, never a wrapper's code that others share.
                self._watch(getattr(inspect.unwrap(obj), "__code__", obj.__code__), f)
            else:
                self.builtins[id(obj)] = f
                if f.target.startswith("torch.Tensor."):
                    self.methods[f.target.rsplit(".", 1)[-1]] = f
        self.hits: dict[str, Forbidden] = {}
        self._within: list = []           # frames of forbidden Python functions running now, outermost first
        self.tampered = False
        self._closing = False

    def _watch(self, code, f: Forbidden) -> None:
        self.codes[code] = f
        if not code.co_filename.startswith("<"):     # "<string>": generated code shares its place
            self.places[(code.co_filename, code.co_firstlineno)] = f

    def record(self, f: Forbidden) -> None:
        if not self._within:
            self.hits.setdefault(f.display, f)

    def _hook(self, frame, event, arg):
        if event == "call":
            code = frame.f_code
            f = self.codes.get(code) or self.places.get((code.co_filename, code.co_firstlineno))
            if f is not None:
                self.record(f)
                self._within.append(frame)
        elif event == "return":
            if self._within and frame is self._within[-1]:
                self._within.pop()
        elif event == "c_call":
            if id(arg) in _SWITCHES and not self._closing:   # even a pause, switched back on after
                self.tampered = True
            f = self.builtins.get(id(arg))
            if f is None and self.methods and isinstance(getattr(arg, "__self__", None), torch.Tensor):
                f = self.methods.get(getattr(arg, "__name__", ""))
            if f is not None:
                self.record(f)

    def __enter__(self):
        self._previous = sys.getprofile()
        self._mode = _AtenWatcher(self.aten, self) if self.aten else None
        if self._mode is not None:
            self._mode.__enter__()
        self._bound = self._hook          # one bound method, so it can be compared later
        sys.setprofile(self._bound)
        return self

    def __exit__(self, exc_type, *exc):
        # Python drops a profile hook that raises, as the hook does when the answer recurses too deep:
        # then the answer's RecursionError is what to report, not a tampering.
        dropped = sys.getprofile() is None and exc_type is not None and issubclass(exc_type, RecursionError)
        if sys.getprofile() is not self._bound and not dropped:
            self.tampered = True
        self._closing = True
        sys.setprofile(self._previous)
        if self._mode is not None:
            self._mode.__exit__(exc_type, *exc)
        return False
