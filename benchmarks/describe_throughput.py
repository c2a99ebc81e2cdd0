"""Describe throughput of the `hf` backend: plain `generate` against the `fast` engine.

Builds the LLaVA-NeXT-7B architecture (llava-v1.6-mistral-7b: Mistral-7B text model,
CLIP ViT-L/14-336 vision tower, anyres grid pinpoints) from a config, with random weights
directly on the GPU (no download), and a processor assembled offline (the LLaVA-NeXT image
processor, a word-level tokenizer of Mistral's vocabulary size). Every item is one
fixed-size image (672x672: 2,928 image tokens) and the study's prompt; every item gets
exactly --new-tokens tokens (min_new_tokens = max_new_tokens, so EOS never stops a row).
Both paths run in one process on the same items through the real describe loop (images
read from disk, preprocessed ahead on CPU threads, texts written to a store), and the
script prints items/s, generated tokens/s and peak GPU memory for each. `--check-tokens N`
first compares the two engines' greedy tokens on N items (and, for scale, plain generate
batched against plain generate one item at a time: in bf16 batch shapes alone change
near-tied tokens). `--tiny` runs the same code on the CPU with a 2-layer model.

    python benchmarks/describe_throughput.py --check-tokens 8            # one GPU, ~4 min
    python benchmarks/describe_throughput.py --tiny --check-tokens 4     # CPU, 2-layer model

Results go to $OUT/describe_throughput.json when OUT is set (or to --json), rewritten after
every stage, so a run stopped by a time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lvlmrec.describe.base import DescribeItem, describe_items  # noqa: E402
from lvlmrec.describe.engine import FastEngine  # noqa: E402
from lvlmrec.describe.hf import HFDescriber, pick_dtype  # noqa: E402
from lvlmrec.describe.prompts import resolve_prompt  # noqa: E402
from lvlmrec.describe.store import DescriptionStore  # noqa: E402
from lvlmrec.describe.tiny import llava_next_parts  # noqa: E402
from lvlmrec.device import available_cpus, set_cpu_threads  # noqa: E402
from _results import Load, save_results  # noqa: E402

PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]  # llava-v1.6
MISTRAL_VOCAB = 32064  # llava-v1.6-mistral-7b-hf's text vocabulary (32,000 + image/pad tokens)
LLAVA_NEXT_7B = {
    "text": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
             "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 1e6,
             "sliding_window": None},  # Mistral-7B-Instruct-v0.2
    "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
               "num_attention_heads": 16, "projection_dim": 768, "hidden_act": "quick_gelu",
               "layer_norm_eps": 1e-5},  # CLIP ViT-L/14 at 336 px
    "vision_feature_layer": -2,
}
TINY = {  # the same shapes of inputs (336-px tiles, 14-px patches), 2-layer towers
    "text": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
             "max_position_embeddings": 8192, "sliding_window": None},
    "vision": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 4, "projection_dim": 64},
    "vision_feature_layer": -2,
}


class PathStopped(BaseException):
    """Stops one path (its time budget is spent, or a batch failed) without the describe
    loop's item-by-item retry, which would take hours on a 7B model."""


def build(args: argparse.Namespace, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """Processor and random-weight model, built in place on `device` in `dtype`."""
    from transformers import AutoModelForImageTextToText, LlavaNextImageProcessor

    spec = TINY if args.tiny else LLAVA_NEXT_7B
    # on transformers 5 this class uses torchvision when installed, else PIL (as AutoProcessor)
    processor, config, generation_config = llava_next_parts(
        336, 14, PINPOINTS, spec["text"], spec["vision"], spec["vision_feature_layer"],
        vocab_size=MISTRAL_VOCAB, image_processor_class=LlavaNextImageProcessor)
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.eval()
    generation_config.max_new_tokens = generation_config.min_new_tokens = args.new_tokens
    model.generation_config = generation_config
    return processor, model


def describer(args: argparse.Namespace, engine: str, processor: Any, model: Any,
              device: str) -> HFDescriber:
    options = ({"prefill_batch": args.prefill_batch, "max_decode_batch": args.max_decode_batch,
                "cuda_graphs": not args.no_cuda_graphs} if engine == "fast" else {})
    d = HFDescriber(resolve_prompt(args.prompt, args.prompt == "study_code"),
                    model=f"random-llava-next-{'tiny' if args.tiny else '7b'}",
                    max_new_tokens=args.new_tokens,
                    device=device, dtype=args.dtype, engine=engine, engine_options=options,
                    preprocess_workers=args.preprocess_workers)
    d.attach(processor, model)
    if engine == "fast" and not isinstance(d.engine, FastEngine):
        raise SystemExit("the fast engine fell back to plain generate (see the warning above)")
    return d


def write_images(folder: Path, n: int, size: int, seed: int) -> list[DescribeItem]:
    """n smooth random product-like images (a small random grid, upscaled), as JPEG files."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        path = folder / f"{i}.jpg"
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(path, quality=90)
        items.append(DescribeItem(i, path, f"product {i} cotton shirt blue"))
    return items


def check_tokens(args: argparse.Namespace, plain: HFDescriber, fast: HFDescriber,
                 items: list[DescribeItem]) -> dict[str, Any]:
    """Greedy tokens of the fast engine against plain generate on the same items."""
    images = [Image.open(it.image_path).convert("RGB") for it in items]
    titles = [it.title for it in items]
    t0 = time.perf_counter()
    reference = plain.generate_ids(images, titles)
    ours = fast.generate_ids(images, titles)
    one_by_one = [plain.generate_ids([img], [t])[0] for img, t in zip(images, titles)]

    def agreement(a: list[list[int]], b: list[list[int]]) -> dict[str, Any]:
        prefixes = [next((i for i, (x, y) in enumerate(zip(r, s)) if x != y), min(len(r), len(s)))
                    for r, s in zip(a, b)]
        return {"identical": sum(r == s for r, s in zip(a, b)), "items": len(a),
                "first_difference": [p if p < max(len(r), len(s)) else None
                                     for p, r, s in zip(prefixes, a, b)]}

    fast.engine.release()
    result = {"fast_vs_generate": agreement(ours, reference),
              "generate_batched_vs_one_by_one": agreement(reference, one_by_one),
              "seconds": round(time.perf_counter() - t0, 1)}
    ours_vs, noise = result["fast_vs_generate"], result["generate_batched_vs_one_by_one"]
    print(f"tokens: fast vs generate identical on {ours_vs['identical']}/{len(items)} items "
          f"(first differences {ours_vs['first_difference']}); generate batched vs one by "
          f"one: {noise['identical']}/{len(items)} (first differences "
          f"{noise['first_difference']})", flush=True)
    return result


def measure(args: argparse.Namespace, d: HFDescriber, items: list[DescribeItem], batch: int,
            workdir: Path, device: str) -> dict[str, Any]:
    """One path through the describe loop: items/s, tokens/s, peak GPU memory.

    `items_per_s` counts from the start, so it includes filling the pipeline (loading and
    preprocessing the first batch, which nothing overlaps); `steady_items_per_s` counts
    the batches after the first, as in a long catalog run; `engine_items_per_s` counts
    only the time inside the engine (generation without loading and preprocessing).
    """
    done: list[tuple[float, int, int]] = []  # per batch: finished at, items, tokens
    in_engine = [0.0]  # seconds inside the engine: generation alone, without the pipeline
    engine_generate = d.engine.generate
    start = time.perf_counter()

    def counting(model: Any, chunks: Any, **kwargs: Any) -> list[torch.Tensor]:
        t0 = time.perf_counter()
        try:
            out = engine_generate(model, chunks, **kwargs)
        except Exception as err:  # noqa: BLE001 - reported, not retried item by item
            raise PathStopped(f"{type(err).__name__}: {err}") from err
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        in_engine[0] += time.perf_counter() - t0
        # every row has exactly min = max new tokens: no padding is counted
        done.append((time.perf_counter(), sum(ids.shape[0] for ids in out),
                     sum(ids.numel() for ids in out)))
        n_done = sum(n for _, n, _ in done)
        print(f"  {d.engine.name}: {n_done}/{len(items)} items, "
              f"{n_done / (done[-1][0] - start):.2f} items/s", flush=True)
        if done[-1][0] - start > args.path_budget_s and n_done < len(items):
            raise PathStopped(f"time budget of {args.path_budget_s}s spent")
        return out

    d.engine.generate = counting  # type: ignore[method-assign]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    stopped = None
    workdir.mkdir(exist_ok=True)
    try:
        with DescriptionStore(workdir / f"{d.engine.name}.sqlite") as store:
            describe_items(d, store, items, batch_size=batch, show_progress=False)
    except PathStopped as err:
        stopped = str(err)
        print(f"  {d.engine.name} stopped: {stopped}", flush=True)
    finally:
        del d.engine.generate  # the engine's own method again
    result: dict[str, Any] = {"engine": d.engine.name, "batch_size": batch, "stopped": stopped}
    if done:
        n_items, n_tokens = sum(n for _, n, _ in done), sum(t for _, _, t in done)
        seconds = done[-1][0] - start
        result.update(items=n_items, seconds=round(seconds, 2),
                      items_per_s=round(n_items / seconds, 3),
                      generated_tokens_per_s=round(n_tokens / seconds, 1),
                      engine_seconds=round(in_engine[0], 2),
                      engine_items_per_s=round(n_items / in_engine[0], 3))
        if len(done) > 1:
            steady = done[-1][0] - done[0][0]
            result["steady_items_per_s"] = round((n_items - done[0][1]) / steady, 3)
            result["steady_tokens_per_s"] = round((n_tokens - done[0][2]) / steady, 1)
    if device.startswith("cuda"):
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["peak_gpu_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    if isinstance(d.engine, FastEngine):
        result["last_wave"] = d.engine.last_wave
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="2-layer model on the CPU")
    parser.add_argument("--image-size", type=int, default=672, help="672 (default) or 336")
    parser.add_argument("--items", type=int, default=None,
                        help="items per path (default 384 on a GPU, 32 with --tiny)")
    parser.add_argument("--new-tokens", type=int, default=150)
    parser.add_argument("--prompt", default="study_readme",
                        help="study_readme (no title) or study_code (with the item's title)")
    parser.add_argument("--generate-batch", type=int, default=None,
                        help="plain generate's batch (default 128; 8 with --tiny)")
    parser.add_argument("--fast-batch", type=int, default=None,
                        help="the fast engine's describe batch (default 192; 8 with --tiny)")
    parser.add_argument("--prefill-batch", type=int, default=4)
    parser.add_argument("--max-decode-batch", type=int, default=None)
    parser.add_argument("--no-cuda-graphs", action="store_true")
    parser.add_argument("--preprocess-workers", type=int, default=None)
    parser.add_argument("--check-tokens", type=int, default=0, metavar="N",
                        help="first compare both engines' tokens on N items")
    parser.add_argument("--dtype", default=None, help="bf16 on a GPU (default), fp32 on a CPU")
    parser.add_argument("--paths", default="generate,fast")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs of each path, alternating (default 1 on a GPU, 3 with --tiny)")
    parser.add_argument("--path-budget-s", type=float, default=150.0,
                        help="stop a path after this many seconds (its figures stay)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the CPUs granted; on a GPU, those "
                             "divided by the preprocessing threads; 1 on a busy machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import transformers

    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        raise SystemExit("no CUDA GPU here: pass --tiny for the CPU run of the same code")
    device = "cuda" if cuda else "cpu"
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    args.items = args.items if args.items is not None else (384 if cuda else 32)
    args.generate_batch = args.generate_batch or (128 if cuda else 8)
    args.fast_batch = args.fast_batch or (192 if cuda else 8)
    args.repeats = args.repeats or (1 if cuda else 3)
    args.preprocess_workers = args.preprocess_workers or min(8, available_cpus())
    if cuda and args.threads is None:  # preprocessing threads x torch threads <= cores
        args.threads = max(1, available_cpus() // args.preprocess_workers)
    args.threads = set_cpu_threads(args.threads)
    if cuda and args.dtype in ("fp32", "float32"):  # an exactness check: no TF32 anywhere
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    out_path = args.json or (Path(os.environ["OUT"]) / "describe_throughput.json"
                             if os.environ.get("OUT") else None)
    report: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {"device": torch.cuda.get_device_name(0) if cuda else _cpu_name(),
                        "cpus": available_cpus(), "torch": torch.__version__,
                        "transformers": transformers.__version__,
                        "python": platform.python_version()},
        "results": {}}

    load = Load()

    def save() -> None:
        if out_path is not None:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(report, indent=2))
        # the committed copy, with date, machine, load and command (benchmarks/_results.py)
        save_results("describe_throughput" + ("_tiny" if args.tiny else ""),
                     {k: v for k, v in report.items()}, load)

    print(json.dumps(report["environment"]), flush=True)
    t0 = time.perf_counter()
    processor, model = build(args, device, pick_dtype(args.dtype, device))
    report["environment"]["image_processor"] = type(processor.image_processor).__name__
    report["model"] = {"parameters_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
                       "build_seconds": round(time.perf_counter() - t0, 1)}
    print(f"model: {report['model']}, image processor "
          f"{report['environment']['image_processor']}", flush=True)
    save()

    paths = [p for p in args.paths.split(",") if p]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        n_images = max(args.items, args.check_tokens, 4)
        items = write_images(workdir, n_images, args.image_size, args.seed)
        describers = {name: describer(args, name, processor, model, device)
                      for name in ("generate", "fast")}
        probe = describers["generate"].prepare(
            [Image.open(items[0].image_path).convert("RGB")], [items[0].title])
        report["prompt_tokens_per_item"] = int(probe.chunks[0]["input_ids"].shape[1])
        print(f"prompt tokens per item: {report['prompt_tokens_per_item']}", flush=True)
        if args.check_tokens:
            report["token_check"] = check_tokens(args, describers["generate"],
                                                 describers["fast"], items[:args.check_tokens])
        else:  # warm both paths up (kernels, allocator) on a few items
            for d in describers.values():
                d.generate_ids([Image.open(it.image_path).convert("RGB") for it in items[:4]],
                               [it.title for it in items[:4]])
        save()
        for run in range(args.repeats):
            for name in paths:
                batch = args.generate_batch if name == "generate" else args.fast_batch
                print(f"{name} (run {run + 1}): {args.items} items, describe batch {batch}",
                      flush=True)
                result = measure(args, describers[name], items[:args.items], batch,
                                 workdir / f"run{run}", device)
                print(f"{name}: {json.dumps(result)}", flush=True)
                summary = report["results"].setdefault(name, {"runs": []})
                summary["runs"].append(result)
                for key in ("items_per_s", "steady_items_per_s", "generated_tokens_per_s",
                            "engine_items_per_s"):
                    values = [r[key] for r in summary["runs"] if r.get(key)]
                    summary[f"median_{key}"] = float(np.median(values)) if values else None
                describers[name].engine.release()  # the fast engine's KV cache
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
                save()
    results = report["results"]
    for key in ("items_per_s", "steady_items_per_s", "engine_items_per_s"):
        rates = {name: results.get(name, {}).get(f"median_{key}") for name in ("generate", "fast")}
        if all(rates.values()):
            report[f"speedup_{key}"] = round(rates["fast"] / rates["generate"], 2)
            print(f"{key} (median of {args.repeats}): generate {rates['generate']:.2f}, fast "
                  f"{rates['fast']:.2f}; speed-up {report[f'speedup_{key}']}x", flush=True)
    save()


if __name__ == "__main__":
    main()
