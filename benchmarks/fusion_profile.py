"""Where a trained fusion's training step spends its time at the study's scale.

On the study-shaped random data of `fusion_speed.py` (23,318 users, 38,493 items, 384-d
text, 768-d vision), the attention fusion's training steps under the default objective
`user`, batch 256: the distinct items each batch fuses, the dense multiply-adds that
implies, milliseconds per step (float32 and the opt-in bfloat16), and torch's profiler
split of a step by operator (matrix products, dropout, ...). The floor this sets for an
epoch is steps per epoch x milliseconds per step, before the validation pass.

    python benchmarks/fusion_profile.py [--threads 2] [--steps 60] [--scale 1.0]

Writes JSON (date, machine, load, command) to benchmarks/results/fusion_profile.json.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch
from fusion_speed import study_shaped

from lvlmrec.represent.base import l2_normalise
from lvlmrec.represent.fusion import AttentionFusion, _Pairs, modalities_present
from lvlmrec.represent.training import adam

#: operator groups of the profile (aten names)
GROUPS = {"matrix products": ("aten::mm", "aten::addmm", "aten::bmm"),
          "dropout": ("aten::bernoulli_",), "tanh": ("aten::tanh", "aten::tanh_backward"),
          "gather (item rows)": ("aten::index",), "Adam": ("aten::_fused_adam_",)}


def multiply_adds(n_items: int, model: AttentionFusion) -> int:
    """Forward multiply-adds of fusing `n_items` items: both projections, the attention
    scorer over the two modality tokens, the output projection."""
    h = model.hidden
    return n_items * (model.text_dim_ * h + model.vision_dim_ * h + 2 * (h * h + h) + h * h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    from _results import Load, save_results

    load = Load()
    torch.set_num_threads(args.threads)
    data = study_shaped(args.scale)
    text = torch.from_numpy(l2_normalise(data.embedding("text")))
    vision = torch.from_numpy(l2_normalise(data.embedding("vision")))
    present = modalities_present(text, vision)
    results: dict = {"scale": args.scale, "threads": args.threads, "steps": args.steps,
                     "objective": "user", "batch_size": 256}
    for precision in ("float32", "bfloat16"):
        model = AttentionFusion("text", "vision", precision=precision)
        model.text_dim_, model.vision_dim_ = text.shape[1], vision.shape[1]
        torch.manual_seed(0)
        net = model._new_net()
        optimiser = adam(net.parameters(), lr=model.lr)
        pairs = _Pairs(data.train, np.random.default_rng(0))
        batches = pairs.batches(model.batch_size)
        distinct: list[int] = []

        def step() -> None:
            batch = next(batches)
            users, anchors, _ = batch
            history = pairs.history_without(users, anchors)
            distinct.append(len(np.unique(np.concatenate([history.indices, anchors]))))
            with torch.autocast("cpu", dtype=torch.bfloat16,
                                enabled=precision == "bfloat16"):
                loss = model._loss(net, (text, vision), present, pairs, batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

        for _ in range(5):  # warm up
            step()
        distinct.clear()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        ms = (time.perf_counter() - t0) / args.steps * 1e3
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                step()
        self_us: dict[str, float] = defaultdict(float)
        for event in prof.key_averages():
            self_us[event.key] += event.self_cpu_time_total
        total = sum(self_us.values())
        shares = {group: round(sum(self_us.get(op, 0.0) for op in ops) / total, 3)
                  for group, ops in GROUPS.items()}
        shares["everything else"] = round(1 - sum(shares.values()), 3)
        n = float(np.mean(distinct))
        steps_per_epoch = int(np.ceil(len(pairs.positions) / model.batch_size))
        results[precision] = {
            "ms_per_step": round(ms, 1), "steps_per_epoch": steps_per_epoch,
            "epoch_training_s_at_this_rate": round(ms * steps_per_epoch / 1e3, 1),
            "distinct_items_per_step": round(n),
            "forward_gflop_per_step": round(2 * multiply_adds(round(n), model) / 1e9, 2),
            "profile_self_cpu_share": shares}
        print(f"{precision}: {ms:.1f} ms per step ({n:.0f} distinct items), "
              f"{steps_per_epoch} steps per epoch -> {ms * steps_per_epoch / 1e3:.1f} s; "
              f"profile {shares}", flush=True)
    save_results("fusion_profile", results, load)


if __name__ == "__main__":
    main()
