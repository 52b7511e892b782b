"""Pretraining benchmark for notebook 08 (not a test): speed and the 3-minute budget run.

    python bench/pretrain.py               # both parts
    python bench/pretrain.py --speed       # tokens/s at nanoGPT's CPU size only
    python bench/pretrain.py --budget 180  # the budget run only, 180 s

Speed: nanoGPT's CPU configuration (4 layers, 4 heads, 128 dims, context 64, batch 12), with
and without bf16 autocast; prints tokens/s and the fraction of this machine's measured fp32
matmul peak that the model's FLOPs per token account for. Budget: a close variant of notebook
08's budget run, trained for a fixed wall-clock budget on the course split; prints the val loss.
It has 08's CPU or GPU model and batch, but min_lr 3e-4 or 1e-4 where 08 keeps the default
2e-4, on a GPU 200 warmup steps where 08 takes 100, 180 s, and no evaluation.
Numbers depend on how busy the machine is: run it on a quiet one.
"""
from __future__ import annotations

import argparse
import time

import torch

from course_lib.device import fast_bf16, get_device
from course_lib.models.gpt import GPT, GPTConfig, n_flops_per_token
from course_lib.runmode import configure_threads
from course_lib.shakespeare import load
from course_lib.training import Trainer, TrainConfig

NANOGPT_CPU = dict(n_layer=4, n_head=4, n_embd=128, block_size=64)
# Chosen among three 180 s runs, one each (val loss: 192 dims/context 128/batch 32 1.710; 128/128/32
# 1.638; 192/64/64 1.627): at 192 dims, context 64 with batch 64 ended 0.08 lower than context 128
# with batch 32 (by step times measured later, it also saw about 14 % more tokens); the smaller
# 128-dim model at context 128 came within about 0.01.
BUDGET_CPU = dict(model=dict(n_layer=4, n_head=4, n_embd=192, block_size=64),
                  train=dict(batch_size=64, lr=3e-3, min_lr=3e-4, warmup_steps=50))
BUDGET_GPU = dict(model=dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
                  train=dict(batch_size=64, lr=1e-3, min_lr=1e-4, warmup_steps=200))


def sync(device) -> None:
    """Wait for a GPU's queued work (CUDA or Apple's MPS) before reading the clock."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def matmul_peak(device, n: int = 1024, reps: int = 20) -> float:
    """Measured fp32 matmul FLOP/s on this device."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def speed(ds, device, steps: int = 40, rounds: int = 5) -> None:
    """Median over ``rounds`` of (matmul peak, tokens/s with bf16 off and on), measured in turns
    so that a noisy neighbour slows every figure alike."""
    cfg = GPTConfig(vocab_size=ds.vocab_size, **NANOGPT_CPU)
    flops = n_flops_per_token(cfg)
    modes = [False, True] if fast_bf16(device) else [False]
    trainers = {}
    for bf16 in modes:
        torch.manual_seed(0)
        trainers[bf16] = Trainer(GPT(cfg), ds.train, ds.val, TrainConfig(max_steps=10 ** 6, batch_size=12,
                                                                         bf16=bf16, eval_every=10 ** 6), device)
        for _ in range(10):
            trainers[bf16].train_step()                        # warm-up
    peaks, tps = [], {m: [] for m in modes}
    for _ in range(rounds):
        peaks.append(matmul_peak(device))
        for bf16, tr in trainers.items():
            sync(device)
            t = time.perf_counter()
            for _ in range(steps):
                tr.train_step()
            sync(device)
            tps[bf16].append(steps * 12 * cfg.block_size / (time.perf_counter() - t))
    med = lambda xs: sorted(xs)[len(xs) // 2]
    peak = med(peaks)
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s on {device} (median of {rounds})")
    for bf16 in modes:
        t = med(tps[bf16])
        print(f"nanoGPT CPU size (4 layers, 4 heads, 128 dims, context 64, batch 12), bf16 {'on ' if bf16 else 'off'}: "
              f"{t:,.0f} tokens/s (median of {rounds}; range {min(tps[bf16]):,.0f}-{max(tps[bf16]):,.0f}), "
              f"{t * flops / peak:.0%} of the fp32 matmul peak ({flops / 1e6:.2f} MFLOP/token)")


def budget(ds, device, seconds: float) -> float:
    spec = BUDGET_GPU if device.type == "cuda" else BUDGET_CPU
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=ds.vocab_size, **spec["model"]))
    tr = Trainer(model, ds.train, ds.val, TrainConfig(max_steps=100_000, eval_every=100_000, **spec["train"]), device)
    for _ in range(5):                           # warm-up, then time steps to fit the schedule to the budget
        tr.train_step()
    t = time.perf_counter()
    for _ in range(20):
        tr.train_step()
    per_step = (time.perf_counter() - t) / 20
    total = int(seconds / per_step * 0.97)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=ds.vocab_size, **spec["model"]))
    # No evaluation inside the budget: all of it goes to training; the loss is measured after.
    tr = Trainer(model, ds.train, ds.val, TrainConfig(max_steps=total, eval_every=10 ** 9, **spec["train"]), device)
    t = time.perf_counter()
    tr.fit(time_budget=seconds, desc="budget run")
    wall = time.perf_counter() - t
    ev = tr.evaluate(batches=50)
    print(f"budget run: {spec['model']} {spec['train']} bf16={tr.use_bf16}: {tr.step} steps in {wall:.0f} s, "
          f"val loss {ev['val']:.3f} (train {ev['train']:.3f})")
    return ev["val"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--budget", type=float, default=None)
    args = ap.parse_args()
    configure_threads()
    device = get_device()
    ds = load()
    if args.speed or args.budget is None:
        speed(ds, device)
    if not args.speed:
        budget(ds, device, args.budget or 180.0)


if __name__ == "__main__":
    main()
