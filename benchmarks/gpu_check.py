"""One prepared GPU check of the `hf` describe engines (driven by benchmarks/gpu_check.sh).

In one call of at most 8 minutes on one GPU, with random weights built from configs
(nothing downloaded):

1. versions: GPU, torch, CUDA, transformers;
2. LLaVA-NeXT-7B (llava-v1.6-mistral-7b architecture), bf16, 672x672 images (2,928 image
   tokens), 150 new tokens: greedy-token agreement of `fast` against `generate` on 8
   items, then both paths timed through the real describe loop (steady items/s,
   generated tokens/s, peak memory) — benchmarks/describe_throughput.py's code;
3. Qwen2-VL-7B at max_pixels 448x448 (256 image tokens) through the `hf` backend: both
   engines if `fast` serves the family, else `generate` alone with the reason.

Writes gpu_check.json to $OUT when set, else to benchmarks/results/, after every step, so
a run cut short keeps what it measured. `--tiny` runs the same code on a CPU with 2-layer
models in well under 2 minutes (tests/test_gpu_check.py runs it so).

    bash benchmarks/gpu_check.sh            # on a GPU
    bash benchmarks/gpu_check.sh --tiny     # on a CPU
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

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import describe_throughput as dt  # noqa: E402

from lvlmrec.describe.engine import FastEngine  # noqa: E402
from lvlmrec.describe.hf import HFDescriber, pick_dtype  # noqa: E402
from lvlmrec.describe.prompts import resolve_prompt  # noqa: E402
from lvlmrec.device import available_cpus, set_cpu_threads  # noqa: E402

QWEN2_VL_VOCAB = 152064
QWEN2_VL_7B = {  # Qwen/Qwen2-VL-7B-Instruct's config.json
    "text": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
             "num_attention_heads": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-6,
             "max_position_embeddings": 32768, "rope_theta": 1e6,
             "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}},
    "vision": {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "num_heads": 16,
               "mlp_ratio": 4},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="2-layer models on the CPU")
    p.add_argument("--check-items", type=int, default=8, help="items of the token check")
    p.add_argument("--items", type=int, default=None,
                   help="items per timed path (default 256 on a GPU, 8 with --tiny)")
    p.add_argument("--path-budget-s", type=float, default=70.0,
                   help="stop a timed path after this many seconds (its figures stay)")
    p.add_argument("--qwen-image-size", type=int, default=448)
    p.add_argument("--llava-image-size", type=int, default=None,
                   help="672 on a GPU; 336 with --tiny (the same code, fewer tokens)")
    p.add_argument("--new-tokens", type=int, default=None, help="150; 8 with --tiny")
    p.add_argument("--skip", default="", help="comma-separated steps to skip: llava,qwen")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.check_items < 1 or (args.items is not None and args.items < 1):
        p.error("--check-items and --items must be at least 1")
    unknown = set(filter(None, args.skip.split(","))) - {"llava", "qwen"}
    if unknown:
        p.error(f"--skip: unknown step(s) {', '.join(sorted(unknown))}; steps: llava, qwen")
    args.items = args.items or (8 if args.tiny else 256)
    args.llava_image_size = args.llava_image_size or (336 if args.tiny else 672)
    args.new_tokens = args.new_tokens or (8 if args.tiny else 150)
    return args


def output_path(args: argparse.Namespace) -> Path:
    if args.json is not None:
        return args.json
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_check.json"
    return HERE / "results" / "gpu_check.json"


def environment(cuda: bool) -> dict[str, Any]:
    import transformers

    env: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                           "transformers": transformers.__version__,
                           "python": platform.python_version(), "cpus": available_cpus(),
                           "device": torch.cuda.get_device_name(0) if cuda else dt._cpu_name()}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
    return env


def throughput_args(args: argparse.Namespace, cuda: bool) -> argparse.Namespace:
    """The settings describe_throughput's functions read."""
    return argparse.Namespace(
        tiny=args.tiny, seed=args.seed, new_tokens=args.new_tokens, prompt="study_readme",
        prefill_batch=4, max_decode_batch=None, no_cuda_graphs=False,
        dtype="bf16" if cuda else "fp32", preprocess_workers=min(8, available_cpus()),
        path_budget_s=args.path_budget_s)


def free(*objects: Any) -> None:
    del objects
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def llava_next(args: argparse.Namespace, device: str, cuda: bool, tmp: Path,
               save) -> dict[str, Any]:
    """Token agreement and timing of both engines on LLaVA-NeXT-7B (bf16, 672 px)."""
    targs = throughput_args(args, cuda)
    out: dict[str, Any] = {"model": "llava-next-7b (random weights)" if not args.tiny
                           else "llava-next tiny", "image_size": args.llava_image_size,
                           "new_tokens": args.new_tokens, "dtype": targs.dtype}
    t0 = time.perf_counter()
    processor, model = dt.build(targs, device, pick_dtype(targs.dtype, device))
    out["build_seconds"] = round(time.perf_counter() - t0, 1)
    out["parameters_b"] = round(sum(p.numel() for p in model.parameters()) / 1e9, 3)
    items = dt.write_images(tmp, max(args.items, args.check_items), args.llava_image_size,
                            args.seed)
    describers = {name: dt.describer(targs, name, processor, model, device)
                  for name in ("generate", "fast")}
    probe = describers["generate"].prepare([dt.Image.open(items[0].image_path).convert("RGB")],
                                           [items[0].title])
    out["prompt_tokens_per_item"] = int(probe.chunks[0]["input_ids"].shape[1])
    save(out)
    out["token_check"] = dt.check_tokens(targs, describers["generate"], describers["fast"],
                                         items[:args.check_items])
    save(out)
    batches = {"generate": 128 if cuda else 4, "fast": 192 if cuda else 4}
    for name in ("generate", "fast"):
        print(f"llava-next {name}: {args.items} items, batch {batches[name]}", flush=True)
        out[name] = dt.measure(targs, describers[name], items[:args.items], batches[name],
                               tmp / f"llava-{name}", device)
        describers[name].engine.release()
        free()
        save(out)
    rates = [out[n].get("steady_items_per_s") or out[n].get("items_per_s")
             for n in ("generate", "fast")]
    if all(rates):
        out["speedup"] = round(rates[1] / rates[0], 2)
    free(describers, model, processor)
    return out


def qwen2_vl_parts(args: argparse.Namespace, device: str, dtype: torch.dtype
                   ) -> tuple[Any, Any]:
    """Qwen2-VL-7B (or the tiny one) with random weights, capped at qwen_image_size px."""
    from lvlmrec.describe import tiny

    side = args.qwen_image_size
    if args.tiny:
        processor, model = tiny.tiny_qwen2_vl("2", seed=args.seed)
        processor.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": side * side}
        return processor, model.to(device=device, dtype=dtype)
    import transformers as tf

    words = tiny.tiny_words() + ["user", "assistant"]
    words += [f"w{i}" for i in range(QWEN2_VL_VOCAB - len(tiny._QWEN_SPECIALS) - len(words))]
    tok = tiny.word_level_tokenizer(tiny._QWEN_SPECIALS, words, unk_token="<unk>",
                                    eos_token="<|im_end|>", pad_token="<|endoftext|>")
    vocab = tok.get_vocab()
    image_processor = tf.Qwen2VLImageProcessor(
        size={"shortest_edge": 56 * 56, "longest_edge": side * side}, patch_size=14,
        merge_size=2, temporal_patch_size=2)
    processor = tiny.image_only_processor(tf.Qwen2VLProcessor, image_processor=image_processor,
                                          tokenizer=tok, chat_template=tiny._QWEN_TEMPLATE)
    spec = QWEN2_VL_7B
    config = tf.Qwen2VLConfig(
        text_config={**spec["text"], "vocab_size": len(vocab)},
        vision_config={**spec["vision"], "patch_size": 14, "spatial_merge_size": 2,
                       "temporal_patch_size": 2},
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"], eos_token_id=vocab["<|im_end|>"],
        pad_token_id=1, tie_word_embeddings=False)
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = tf.AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.eval()
    model.generation_config = tf.GenerationConfig(
        eos_token_id=vocab["<|im_end|>"], pad_token_id=1,
        suppress_tokens=list(range(len(tiny._QWEN_SPECIALS))))
    return processor, model


def qwen2_vl(args: argparse.Namespace, device: str, cuda: bool, tmp: Path,
             save) -> dict[str, Any]:
    """Qwen2-VL-7B through the hf backend: each engine that can serve it, timed."""
    targs = throughput_args(args, cuda)
    dtype = pick_dtype(targs.dtype, device)
    out: dict[str, Any] = {"model": "qwen2-vl-7b (random weights)" if not args.tiny
                           else "qwen2-vl tiny", "image_size": args.qwen_image_size,
                           "new_tokens": args.new_tokens, "dtype": targs.dtype}
    t0 = time.perf_counter()
    processor, model = qwen2_vl_parts(args, device, dtype)
    out["build_seconds"] = round(time.perf_counter() - t0, 1)
    out["parameters_b"] = round(sum(p.numel() for p in model.parameters()) / 1e9, 3)
    model.generation_config.max_new_tokens = args.new_tokens
    model.generation_config.min_new_tokens = args.new_tokens
    items = dt.write_images(tmp, args.items, args.qwen_image_size, args.seed)
    reason = FastEngine().unsupported(model, {"max_new_tokens": args.new_tokens})
    engines = ["generate"] if reason else ["generate", "fast"]
    out["fast_unsupported"] = reason
    if reason:
        print(f"qwen2-vl: fast cannot serve it ({reason}); timing generate only", flush=True)
    for name in engines:
        d = HFDescriber(resolve_prompt("study_readme", False), model=out["model"],
                        max_new_tokens=args.new_tokens, device=device, dtype=targs.dtype,
                        engine=name, preprocess_workers=targs.preprocess_workers)
        d.attach(processor, model)
        probe = d.prepare([dt.Image.open(items[0].image_path).convert("RGB")],
                          [items[0].title])
        out["prompt_tokens_per_item"] = int(probe.chunks[0]["input_ids"].shape[1])
        d.generate_ids([dt.Image.open(it.image_path).convert("RGB") for it in items[:2]],
                       [it.title for it in items[:2]])  # warm-up
        batch = (256 if name == "fast" else 128) if cuda else 4
        print(f"qwen2-vl {name}: {args.items} items, batch {batch}", flush=True)
        out[name] = dt.measure(targs, d, items, batch, tmp / f"qwen-{name}", device)
        d.engine.release()
        free()
        save(out)
    free(model, processor)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        raise SystemExit("no CUDA GPU here: pass --tiny for the CPU run of the same code")
    device = "cuda" if cuda else "cpu"
    set_cpu_threads(None if cuda else 1)
    path = output_path(args)
    report: dict[str, Any] = {
        "script": "benchmarks/gpu_check.sh" + (" --tiny" if args.tiny else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": environment(cuda), "steps": {}}
    t_start = time.perf_counter()

    def saver(step: str):
        def save(result: dict[str, Any]) -> None:
            report["steps"][step] = result
            report["seconds"] = round(time.perf_counter() - t_start, 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=2, default=str))
        return save

    print(json.dumps(report["environment"]), flush=True)
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        for step, run in (("llava_next", llava_next), ("qwen2_vl", qwen2_vl)):
            if step.split("_")[0] in skip:
                continue
            save = saver(step)
            folder = Path(tmp) / step
            folder.mkdir()
            try:
                save(run(args, device, cuda, folder, save))
            except Exception as err:  # noqa: BLE001 - recorded; the next step still runs
                print(f"{step} failed: {type(err).__name__}: {err}", flush=True)
                save({**report["steps"].get(step, {}),
                      "error": f"{type(err).__name__}: {err}"})
                free()
    saver("done")({"seconds": round(time.perf_counter() - t_start, 1)})
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
