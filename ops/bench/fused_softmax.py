"""The fused softmax cross-entropy (``towers/losses/fused.py``) in blocks of rows against one block of all rows.

The training step's largest tensor is the [B, N] score matrix of the softmax (N = the corpus for the full-corpus
softmax, B + uniform negatives otherwise). ``scored_cross_entropy`` computes the loss and its gradients a block of R
rows at a time so that no [B, N] tensor outlives its block. This bench times forward + backward at the shapes of the
shipped configurations, each with the default block and with one block of all B rows (the former, whole-matrix
form), alternating, best of ``--repeats``, in this process, and prints the speed-up (target >= 1.0: the default
block is never slower) and, with ``--sweep``, the time of each block size. ``--matmul`` also times the default
block with ``matmul="bfloat16"`` (``loss.softmax_matmul``) and prints its speed-up over float32 and the relative
error of its query gradient.

    .venv/bin/python ops/bench/fused_softmax.py                 # B 1024, D 64; N 1,682 / 5,120 / 9,742 / 30,000
    .venv/bin/python ops/bench/fused_softmax.py --sweep
    .venv/bin/python ops/bench/fused_softmax.py --matmul
"""

from __future__ import annotations

import argparse
import time
from typing import Any
from unittest.mock import patch

import torch

from towers.losses import fused
from towers.training.allocator import retain_freed_memory


def timed(queries: torch.Tensor, candidates: torch.Tensor, labels: torch.Tensor, *, steps: int,
          matmul: str = "float32") -> float:
    """Milliseconds per forward + backward."""
    def step() -> None:
        queries.grad = candidates.grad = None
        fused.scored_cross_entropy(queries, candidates, labels, matmul=matmul).backward()

    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps * 1000.0


def gradient_error(queries: torch.Tensor, candidates: torch.Tensor, labels: torch.Tensor) -> float:
    """|g_bf16 - g_fp32| / |g_fp32| of the query gradient."""
    gradients = []
    for matmul in ("float32", "bfloat16"):
        loss = fused.scored_cross_entropy(queries, candidates, labels, matmul=matmul)
        gradients.append(torch.autograd.grad(loss, [queries])[0])
    return float((gradients[1] - gradients[0]).norm() / gradients[0].norm())


def with_block_elements(elements: int | None) -> Any:
    """A context that sets the CPU block size (elements per block; None: the default)."""
    return patch.dict(fused._BLOCK_ELEMENTS, {} if elements is None else {"cpu": elements})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--columns", type=int, nargs="+", default=[1682, 5120, 9742, 30000])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sweep", action="store_true", help="also time blocks of 2^18 .. 2^25 elements")
    parser.add_argument("--matmul", action="store_true", help="also time the default block with bfloat16 matmuls")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    retain_freed_memory()  # as the Trainer does on a CPU
    generator = torch.Generator().manual_seed(0)
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, dim {args.dim}, steps {args.steps}, "
          f"best of {args.repeats}; default block {fused._BLOCK_ELEMENTS['cpu']:,} elements")
    ratios = []
    for columns in args.columns:
        queries = (torch.nn.functional.normalize(torch.randn(args.batch, args.dim, generator=generator), dim=1)
                   / 0.05).requires_grad_()
        candidates = torch.nn.functional.normalize(torch.randn(columns, args.dim, generator=generator),
                                                   dim=1).requires_grad_()
        labels = torch.randint(0, columns, (args.batch,), generator=generator)
        variants: dict[str, tuple[int | None, str]] = {"default": (None, "float32"),
                                                       "one block": (args.batch * columns, "float32")}
        if args.sweep:
            variants.update({f"2^{k}": (1 << k, "float32") for k in range(18, 26)})
        if args.matmul:
            variants["bfloat16"] = (None, "bfloat16")
        best = {name: float("inf") for name in variants}
        for _ in range(args.repeats):
            for name, (elements, matmul) in variants.items():
                with with_block_elements(elements):
                    best[name] = min(best[name], timed(queries, candidates, labels, steps=args.steps, matmul=matmul))
        rows = fused._block_rows(args.batch, columns, queries.device)
        ratio = best["one block"] / best["default"]
        ratios.append(ratio)
        sweep = "   " + ", ".join(f"{n} {t:.1f}" for n, t in best.items() if n.startswith("2^")) if args.sweep else ""
        low = f"   bfloat16 {best['bfloat16']:6.1f} ms, {best['default'] / best['bfloat16']:.2f}x float32, " \
              f"query gradient error {gradient_error(queries, candidates, labels):.1e}" if args.matmul else ""
        print(f"N {columns:>6,}: default ({rows} rows) {best['default']:6.1f} ms, "
              f"one block {best['one block']:6.1f} ms,"
              f" speed-up {ratio:.2f}x{sweep}{low}")
    print(f"smallest speed-up one block / default = {min(ratios):.2f}   (target >= 1.0)")


if __name__ == "__main__":
    main()
