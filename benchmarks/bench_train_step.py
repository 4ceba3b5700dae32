"""Training-step cost with Sun et al.'s default targets quantized vs the unquantized model.

Side by side in one process (interleaved repetitions, median of each) so machine load affects
both alike.  Prints one line per model size and the ratio quantized/unquantized (target
<= 1.3x on the CPU).  Not a test.

    python3 benchmarks/bench_train_step.py [--format e4m3] [--block none] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from explorer.train.model import Decoder, ModelConfig, param_count
from explorer.train.qlinear import QuantConfig, quantize_model, specialize_kernels
from explorer.train.trainer import set_threads


def step_time(model: torch.nn.Module, opt, x, y) -> float:
    t = time.perf_counter()
    loss = model.loss(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--format", default="e4m3")
    ap.add_argument("--block", default="none", help="int, channel, tensor or none (element format)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--sizes", default="2x64,4x128,4x256", help="LAYERSxD_MODEL list")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args()
    set_threads(a.threads)
    print(f"format {a.format} block {a.block}, default targets (fwd_w, dgrad_w, wgrad_x), "
          f"{a.batch}x{a.seq_len} tokens/step, {a.threads} thread(s), median of {a.reps}")
    for s in a.sizes.split(","):
        L, d = (int(v) for v in s.split("x"))
        cfg = ModelConfig(layers=L, d_model=d, max_seq_len=a.seq_len)
        torch.manual_seed(0)
        plain = Decoder(cfg)
        quant = Decoder(cfg)
        quant.load_state_dict(plain.state_dict())
        quantize_model(quant, QuantConfig(fmt=a.format, block=a.block))
        specialize_kernels(quant)                   # what the trainer does for long runs
        opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (plain, quant)]
        x = torch.randint(0, 256, (a.batch, a.seq_len))
        y = torch.randint(0, 256, (a.batch, a.seq_len))
        for m, o in zip((plain, quant), opts):      # warm up (numba compilation, allocator)
            for _ in range(3):
                step_time(m, o, x, y)
        tp, tq = [], []
        for _ in range(a.reps):
            tp.append(step_time(plain, opts[0], x, y))
            tq.append(step_time(quant, opts[1], x, y))
        mp_, mq = statistics.median(tp), statistics.median(tq)
        print(f"L={L} d={d} N={param_count(cfg):>9,}: unquantized {mp_ * 1e3:8.2f} ms  quantized "
              f"{mq * 1e3:8.2f} ms  ratio {mq / mp_:.3f}x  "
              f"({a.batch * a.seq_len / mq:,.0f} tok/s quantized)")


if __name__ == "__main__":
    main()
