"""The course's pretraining loop: AdamW, warmup + cosine, clipping, evaluation, checkpoints.

    trainer = Trainer(model, data.train, data.val, TrainConfig(max_steps=2000))
    trainer.fit()                     # progress bar, live loss plot in a notebook
    trainer.save("ckpt.safetensors"); Trainer.load("ckpt.safetensors", data.train, data.val)

A run resumes exactly: the checkpoint keeps the weights, the optimizer's moments, the step and
every random state the loop draws from, so the losses after a resume are those of a run that was
never interrupted.
"""
from __future__ import annotations

import contextlib
import json
import numbers
import os
import secrets
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .device import fast_bf16, get_device
from .models.gpt import GPT, GPTConfig
from .progress import progress
from .reference.optim import AdamW, clip_grad_norm, lr_at
from .reference.pretraining import get_batch, lm_loss


@dataclass
class TrainConfig:
    max_steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    max_norm: float = 1.0
    eval_every: int = 200
    eval_batches: int = 20
    seed: int = 1337
    bf16: bool | None = None          # None: on where the hardware supports it

    def __post_init__(self):
        """Name a setting that would fail deep inside the loop, or quietly train the wrong way."""
        bad = []
        for names, kind, cast in [(("max_steps", "batch_size", "warmup_steps", "eval_every", "eval_batches", "seed"),
                                   numbers.Integral, int),
                                  (("lr", "min_lr", "weight_decay", "max_norm"), numbers.Real, float)]:
            for name in names:
                value = getattr(self, name)
                if isinstance(value, kind) and not isinstance(value, bool):
                    setattr(self, name, cast(value))          # NumPy's numbers too; the checkpoint stores JSON
                else:
                    bad.append(f"{name}={value!r} must be {'a whole number (int)' if cast is int else 'a number'}")
        if not bad:
            for name in ("max_steps", "batch_size", "eval_every", "eval_batches", "lr", "max_norm"):
                if not getattr(self, name) > 0:
                    bad.append(f"{name}={getattr(self, name)!r} must be above 0")
            for name in ("warmup_steps", "min_lr", "weight_decay"):
                if not getattr(self, name) >= 0:
                    bad.append(f"{name}={getattr(self, name)!r} must not be negative")
        if self.bf16 not in (None, True, False):
            bad.append(f"bf16={self.bf16!r} must be True, False or None (None: where the hardware runs it fast)")
        if bad:
            raise ValueError("TrainConfig: " + "; ".join(bad))
        if self.min_lr > self.lr:       # a warning: a checkpoint saved so must still load
            warnings.warn(f"TrainConfig: min_lr={self.min_lr!r} is above lr={self.lr!r}, so the schedule climbs "
                          "from lr to min_lr instead of decaying; set min_lr too (lr / 10, say)", stacklevel=3)


def autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> AdamW:
    """AdamW; weight decay on matrices only (not on biases, norms or embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "emb" not in name else no_decay).append(p)
    return AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))


class LivePlot:
    """A loss plot that redraws in place in a notebook; does nothing elsewhere."""

    def __init__(self, enabled: bool | None = None):
        if enabled is None:
            try:
                from IPython import get_ipython
                enabled = get_ipython() is not None and "IPKernelApp" in get_ipython().config
            except Exception:
                enabled = False
        self.enabled, self.handle = enabled, None

    def update(self, history: dict) -> None:
        if not self.enabled:
            return
        import matplotlib.pyplot as plt
        from IPython.display import display
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(history["step"], history["train_loss"], alpha=0.4, label="train (per step)")
        if history["eval_step"]:
            ax.plot(history["eval_step"], history["val"], "o-", label="validation")
        ax.set(xlabel="step", ylabel="loss (nats per character)", title="Pretraining loss")
        ax.legend()
        plt.close(fig)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)


class History(dict):
    """A Trainer's record, lists by key: step and train_loss at every step, eval_step, train and val at each
    evaluation. As a cell's last value it shows a line, not every step's number (`trainer.fit()` alone in a cell
    printed thousands of lines); print(history) shows them all, as a dict's would."""

    def __repr__(self) -> str:
        try:
            steps, at = len(self["step"]), self["eval_step"][-1]
            last = f", at step {at} train {self['train'][-1]:.3f} and val {self['val'][-1]:.3f}"
        except (KeyError, IndexError, TypeError, ValueError):
            steps, last = len(self.get("step", []) or []), ""
        return (f"History of {steps} step{'' if steps == 1 else 's'}{last} (a dict of lists: "
                + ", ".join(map(str, self)) + "; history['val'] gives one, print(history) them all)")

    __str__ = dict.__repr__

    def __reduce__(self):              # rebuilt from a plain dict: torch.load's weights_only unpickler sets no
        return History, (dict(self),)  # items on a dict subclass

    def _repr_pretty_(self, p, cycle) -> None:       # IPython's display of a cell's value
        p.text(repr(self))


torch.serialization.add_safe_globals([History])      # torch.save({"history": ...}) loads with weights_only=True


class Trainer:
    def __init__(self, model: GPT, train_data: torch.Tensor, val_data: torch.Tensor,
                 cfg: TrainConfig | None = None, device: torch.device | None = None):
        cfg = TrainConfig() if cfg is None else cfg
        if not isinstance(cfg, TrainConfig):
            hint = ": TrainConfig(**d) makes one from a dict d" if isinstance(cfg, dict) else ""
            raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}{hint} (the device comes after it, "
                            "or as device=)")
        self.device = torch.device(device) if device is not None else get_device()
        self.model = model.to(self.device)
        self.train_data, self.val_data = train_data, val_data
        self.cfg = cfg
        self.use_bf16 = cfg.bf16 is not False and fast_bf16(self.device)      # None: where it is fast
        self.opt = make_optimizer(self.model, cfg)
        self.step = 0
        self.interrupted = False                                    # the last fit() stopped by the stop button
        self.gen = torch.Generator().manual_seed(cfg.seed)          # batches; evaluate() seeds its own per call
        self.history = History(step=[], train_loss=[], eval_step=[], train=[], val=[])

    def _batch(self, data, gen):
        x, y = get_batch(data, self.model.block_size, self.cfg.batch_size, generator=gen)
        return x.to(self.device), y.to(self.device)

    def train_step(self) -> float:
        self.model.train()
        lr = lr_at(self.step, self.cfg.lr, self.cfg.warmup_steps, self.cfg.max_steps, self.cfg.min_lr)
        for group in self.opt.param_groups:
            group["lr"] = lr
        x, y = self._batch(self.train_data, self.gen)
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.device, self.use_bf16):
            loss = lm_loss(self.model(x).float(), y)
        loss.backward()
        clip_grad_norm(self.model.parameters(), self.cfg.max_norm)
        self.opt.step()
        self.step += 1
        value = float(loss.detach())
        self.history["step"].append(self.step)
        self.history["train_loss"].append(value)
        return value

    @torch.no_grad()
    def evaluate(self, batches: int | None = None) -> dict[str, float]:
        """Mean loss on ``batches`` random batches of each split (a fixed generator per call)."""
        self.model.eval()
        out = {}
        for split, data in (("train", self.train_data), ("val", self.val_data)):
            gen = torch.Generator().manual_seed(self.cfg.seed + 2)
            losses = []
            for _ in range(batches or self.cfg.eval_batches):
                x, y = self._batch(data, gen)
                with autocast(self.device, self.use_bf16):
                    losses.append(float(lm_loss(self.model(x).float(), y)))
            out[split] = sum(losses) / len(losses)
        self.history["eval_step"].append(self.step)
        self.history["train"].append(out["train"])
        self.history["val"].append(out["val"])
        return out

    def fit(self, steps: int | None = None, plot: bool | None = None, time_budget: float | None = None,
            desc: str = "training") -> dict:
        """Train to max_steps (or ``steps`` more), evaluating every eval_every steps and at the end.
        ``time_budget`` (seconds) stops early once exceeded. Interrupted (Jupyter's stop button), it finishes the
        step in progress, stops, says so, sets ``interrupted`` and returns the history so far; fit() again goes on from
        there. A second interrupt stops at once."""
        import signal
        import threading
        import time
        end = self.cfg.max_steps if steps is None else min(self.cfg.max_steps, self.step + steps)
        live = LivePlot(plot)
        bar = progress(total=end - self.step, desc=desc, leave=False)
        stop = []

        def interrupted(signum, frame):
            if stop:
                raise KeyboardInterrupt
            stop.append(True)

        previous = (signal.signal(signal.SIGINT, interrupted)
                    if threading.current_thread() is threading.main_thread() else None)
        t0 = time.perf_counter()
        try:
            while self.step < end and not stop:
                loss = self.train_step()
                bar.update(1)
                if self.step % self.cfg.eval_every == 0 or self.step == end:
                    ev = self.evaluate()
                    bar.set_postfix(train=f"{ev['train']:.3f}", val=f"{ev['val']:.3f}")
                    live.update(self.history)
                elif self.step % 10 == 0:
                    bar.set_postfix(loss=f"{loss:.3f}")
                if time_budget is not None and time.perf_counter() - t0 > time_budget:
                    break
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if 0 < self.step < end and self.history["eval_step"][-1:] != [self.step]:      # stopped early
            self.evaluate()
            live.update(self.history)
        bar.close()
        self.interrupted = bool(stop)
        if stop:
            print(f"Interrupted at step {self.step} of {end}: the model and its history so far are kept. fit() on this "
                  f"trainer, in a new cell, goes on from step {self.step}; running the cell that made the trainer "
                  f"starts over.")
        return self.history

    # ------------------------------------------------------------------ checkpoints
    def save(self, path) -> None:
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()
                   if k != "head.weight"}                     # tied to tok_emb.weight
        params = list(self.model.parameters())
        index = {id(p): i for i, p in enumerate(params)}
        for p, st in self.opt.state.items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"opt.{index[id(p)]}.{k}"] = v.detach().cpu().contiguous()
        tensors["rng.batches"] = self.gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":                             # dropout masks on the GPU
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        elif self.device.type == "mps":
            tensors["rng.mps"] = torch.mps.get_rng_state()
        meta = {"step": str(self.step), "model_config": json.dumps(self.model.cfg.to_dict()),
                "train_config": json.dumps(asdict(self.cfg)), "history": json.dumps(self.history),
                "opt_state_keys": json.dumps({str(index[id(p)]): {k: (v if not isinstance(v, torch.Tensor) else None)
                                                                 for k, v in st.items()}
                                              for p, st in self.opt.state.items()})}
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder: give the checkpoint a file name, e.g. {path / 'ckpt.safetensors'}")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"the folder {path.parent} does not exist: make it first "
                                    f"(Path({str(path.parent)!r}).mkdir(parents=True)), or save elsewhere")
        if path.exists() and _checkpoint_metadata(path) is None:
            raise FileExistsError(f"{path} exists and is not a checkpoint of this course: saving would replace it. "
                                  "Choose another name, or move that file first.")
        # a temporary file beside the target, then an atomic rename: a crash mid-write leaves
        # the previous checkpoint intact
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            save_file(tensors, str(tmp), metadata=meta)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path, train_data, val_data, device: torch.device | None = None) -> "Trainer":
        meta = _checkpoint_metadata(Path(path))
        if meta is None:
            if not Path(path).is_file():
                raise FileNotFoundError(f"no checkpoint at {path}")
            raise ValueError(f"{path} is not a checkpoint of this course: Trainer.load reads the files that "
                             "Trainer.save writes (weights, optimizer state and configuration together)")
        tensors = load_file(str(path))
        model = GPT(GPTConfig(**json.loads(meta["model_config"])))
        state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        state["head.weight"] = state["tok_emb.weight"]
        model.load_state_dict(state)
        trainer = cls(model, train_data, val_data, TrainConfig(**json.loads(meta["train_config"])), device)
        params = list(trainer.model.parameters())
        for i, extra in json.loads(meta["opt_state_keys"]).items():
            p = params[int(i)]
            st = {k: v for k, v in extra.items() if v is not None}
            for k in extra:
                if extra[k] is None:
                    st[k] = tensors[f"opt.{i}.{k}"].to(p.device)
            trainer.opt.state[p] = st
        trainer.step = int(meta["step"])
        trainer.gen.set_state(tensors["rng.batches"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and trainer.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], trainer.device)
        if "rng.mps" in tensors and trainer.device.type == "mps":
            torch.mps.set_rng_state(tensors["rng.mps"])
        trainer.history = History(json.loads(meta["history"]))
        return trainer


def _checkpoint_metadata(path: Path) -> dict | None:
    """The metadata of a checkpoint Trainer.save wrote, or None for any other file."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:                   # not a safetensors file at all
        return None
    return meta if {"model_config", "train_config"} <= meta.keys() else None
