"""CPU throughput of the describe and encode stages, per stage, in items per second.

On the demo catalog (drawn here, 128 px images; or a prepared workdir) and on MovieLens
posters (`/work/shared/data/movielens-100k-posters`, skipped when absent), it times:

- `image_pass`: decoding, letterboxing to 224 px and one EfficientNet-Lite0 forward per
  image (features and ImageNet classes together), into an empty cache;
- `describe_attributes`: the attributes describer over every item, its labels read from
  that pass (what the describe stage does after the pass), and `describe_attributes_full`:
  the same including the pass (a describe stage on a fresh workdir);
- `image_encode_cached`: the encode stage's image step once the pass is cached;
- `image_encode_separate`: EfficientNet over every image without the shared pass (before);
- `text_encode`: all-MiniLM-L6-v2 over the descriptions with the default settings (each
  distinct text encoded once, as the encode stage does; `distinct_texts_per_s` is the
  model's own rate); `text_encode_tokens_order`, `text_encode_bfloat16` and
  `text_encode_bfloat16_tokens_order`: the same with `encode.text_order: tokens` and/or
  `encode.text_precision: bfloat16`, each with its largest difference from the default's
  embeddings and lowest cosine to them; `text_work`: tokens per text, the share of padding
  in each order, and the default's GFLOP/s next to a plain float32 matrix product's here.

Each step runs `--repeats` times (3) and each row gives the fastest run's items/s of wall
time and of process CPU time (CPU seconds are less sensitive to a busy machine than wall
seconds), every run's wall seconds and the median run's items/s; the JSON (date, machine, load,
command) goes to benchmarks/results/cpu_stages.json.

    python benchmarks/cpu_stages.py [--items 2000] [--posters DIR] [--threads N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from record import run_record, write_result

POSTERS = Path("/work/shared/data/movielens-100k-posters")


#: runs of each timed step (`--repeats`); the fastest is reported, as `timeit` advises:
#: slower runs measure the machine's other work, not the code
REPEATS = 3


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def fastest(fn, repeats: int):
    """`timed(fn)` run `repeats` times: the last output, the fastest run's wall and CPU
    seconds, and every run's wall seconds."""
    runs = [timed(fn) for _ in range(repeats)]
    _, wall, cpu = min(runs, key=lambda run: run[1])
    return runs[-1][0], wall, cpu, [run[1] for run in runs]


def rate(n: int, wall: float, cpu: float, walls: list[float] | None = None) -> dict:
    out = {"items": n, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
           "items_per_s": round(n / wall, 2) if wall else None,
           "items_per_cpu_s": round(n / cpu, 2) if cpu else None}
    if walls:
        out["runs_wall_s"] = [round(w, 2) for w in walls]
        out["median_items_per_s"] = round(n / float(np.median(walls)), 2)
    return out


def text_work(encoder, distinct: list[str], wall: float) -> dict:
    """What float32 text encoding asks of the CPU: tokens per text (and the share of a
    batch's token positions that are padding, in each order) and the model's
    multiply-adds (the linear layers, and attention's two products, per layer and token),
    as GFLOP/s over `wall`, next to what a plain float32 matrix product of the model's shape
    reaches here (the ceiling for a compute-bound model)."""
    import torch

    from lvlmrec.encode.text import DEFAULT_BATCH, length_order

    model = encoder._load()
    config = model[0].auto_model.config
    h, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens = np.array([len(ids) for ids in model.tokenizer(
        distinct, truncation=True, max_length=model.max_seq_length)["input_ids"]])
    macs = layers * (tokens * (4 * h * h + 2 * h * ffn) + 2 * tokens * tokens * h)
    a, b = torch.randn(4096, h), torch.randn(h, ffn)
    torch.mm(a, b)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 1.0:
        torch.mm(a, b)
        n += 1
    matmul = 2 * 4096 * h * ffn * n / (time.perf_counter() - start) / 1e9
    by_characters = tokens[np.argsort([-len(t) for t in distinct], kind="stable")]
    by_tokens = tokens[length_order(model, distinct)]
    return {"mean_tokens_per_text": round(float(tokens.mean()), 1),
            "padding_share_characters_order": padding_share(
                by_characters, DEFAULT_BATCH["characters"]),
            "padding_share_tokens_order": padding_share(by_tokens, DEFAULT_BATCH["tokens"]),
            "gflop_per_text": round(2 * float(macs.mean()) / 1e9, 3),
            "model_gflop_per_s": round(2 * float(macs.sum()) / wall / 1e9, 1),
            "float32_matmul_gflop_per_s": round(matmul, 1)}


def padding_share(tokens: np.ndarray, batch_size: int) -> float:
    """The share of token positions that are padding when `tokens` (lengths, in batch
    order) are cut into batches of `batch_size`, each padded to its longest."""
    padded = sum(int(tokens[i:i + batch_size].max()) * len(tokens[i:i + batch_size])
                 for i in range(0, len(tokens), batch_size))
    return round(1 - float(tokens.sum()) / padded, 4)


TEXT_SETTINGS = {  # result name -> TextEncoder settings; the first is the default
    "text_encode": {},
    "text_encode_tokens_order": {"order": "tokens"},
    "text_encode_bfloat16": {"precision": "bfloat16"},
    "text_encode_bfloat16_tokens_order": {"precision": "bfloat16", "order": "tokens"},
}


def measure_texts(texts: list[str], label: str, repeats: int) -> dict:
    """Text encoding's rate in each of `TEXT_SETTINGS`, with each setting's largest
    difference from (and lowest cosine to) the default's embeddings, and `text_work`."""
    from lvlmrec.encode.text import TextEncoder

    n, distinct = len(texts), len(set(texts))
    out: dict = {"distinct_descriptions": distinct}
    default = None
    for name, settings in TEXT_SETTINGS.items():
        encoder = TextEncoder(device="cpu", **settings)
        encoder.encode(texts[:16], show_progress_bar=False)  # load, warm up
        emb, w, c, walls = fastest(lambda: encoder.encode(texts, show_progress_bar=False),
                                      repeats)
        # repeated texts are encoded once (TextEncoder.encode): the model's own rate is over
        # distinct texts
        row = out[name] = {**rate(n, w, c, walls), "distinct_texts_per_s": round(distinct / w, 2),
                           "batch_size": encoder.batch_size}
        if default is None:
            default = emb
            out["text_work"] = text_work(encoder, sorted(set(texts)), w)
        else:
            rows = np.linalg.norm(default, axis=1) > 0
            row["max_abs_diff_to_default"] = float(np.abs(emb - default).max())
            row["min_cosine_to_default"] = round(float((emb * default).sum(1)[rows].min()), 6)
        print(f"[{label}] {name} ({settings or 'default'}): {n / w:.1f} texts/s "
              f"({distinct / w:.1f} distinct texts/s)", flush=True)
    work = out["text_work"]
    print(f"[{label}] text model: {work['mean_tokens_per_text']} tokens per text, "
          f"{work['model_gflop_per_s']} GFLOP/s; a float32 matrix product of its shape: "
          f"{work['float32_matmul_gflop_per_s']} GFLOP/s; padding "
          f"{work['padding_share_characters_order']:.1%} in characters order, "
          f"{work['padding_share_tokens_order']:.1%} in tokens order", flush=True)
    return out


def measure(paths: list[Path], tmp: Path, label: str, repeats: int) -> dict:
    from lvlmrec.describe.attributes import AttributesDescriber
    from lvlmrec.describe.base import DescribeItem, load_item_image
    from lvlmrec.encode.image import ImageEncoder
    from lvlmrec.encode.image_pass import ImagePassCache, image_pass
    from lvlmrec.encode.run import LocalEncoders
    from lvlmrec.workdir import Workdir

    n = len(paths)
    out: dict = {"catalog": label, "n_images": n}
    encoder = ImageEncoder(device="cpu")
    encoder.encode_and_classify(paths[:8], show_progress_bar=False)  # load, warm up
    fresh = iter(range(repeats))

    def pass_into_empty_cache() -> Workdir:
        wd = Workdir(tmp / f"{label}_{next(fresh)}")
        cache = ImagePassCache.for_workdir(wd)
        image_pass(encoder, paths, cache, show_progress_bar=False)
        cache.close()
        return wd

    wd, w, c, walls = fastest(pass_into_empty_cache, repeats)
    out["image_pass"] = rate(n, w, c, walls)
    print(f"[{label}] image pass (decode + EfficientNet, 224 px): {n / w:.1f} images/s", flush=True)

    describer = AttributesDescriber(device="cpu", image_encoder=encoder)
    describer.share_image_pass(wd, paths)

    def describe() -> list[str]:
        describer.load()  # reads the pass from the cache
        items = [DescribeItem(i, p, "") for i, p in enumerate(paths)]
        texts: list[str] = []
        for start in range(0, n, 64):
            images = [load_item_image(it)[0] for it in items[start:start + 64]]
            texts += describer.describe(images)
        return texts

    texts, w, c, walls = fastest(describe, repeats)
    describer.close()
    out["describe_attributes"] = rate(n, w, c, walls)
    full_w, full_c = out["image_pass"]["wall_s"] + w, out["image_pass"]["cpu_s"] + c
    out["describe_attributes_full"] = rate(n, full_w, full_c)
    print(f"[{label}] attributes describer: {n / w:.1f} items/s after the pass, "
          f"{n / full_w:.1f} items/s with it", flush=True)

    _, cached_w, c, walls = fastest(lambda: LocalEncoders(False, wd).images(encoder, paths),
                                           repeats)
    out["image_encode_cached"] = rate(n, cached_w, c, walls)
    sub = paths[:min(n, 512)]
    _, w, c, walls = fastest(lambda: encoder.encode(sub, show_progress_bar=False), repeats)
    out["image_encode_separate"] = rate(len(sub), w, c, walls)
    print(f"[{label}] image encoding: {n / cached_w:.1f} images/s "
          f"from the pass; {len(sub) / w:.1f} images/s on its own", flush=True)

    out.update(measure_texts(texts, label, repeats))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000, help="demo catalog size")
    parser.add_argument("--posters", type=Path, default=POSTERS)
    parser.add_argument("--max-posters", type=int, default=2000)
    parser.add_argument("--threads", type=int, help="torch threads (default: every core)")
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help="runs of each timed step; the fastest is reported")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "cpu_stages.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    import torch

    from lvlmrec.device import set_cpu_threads

    set_cpu_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}; 1-min load {load_before[0]:.1f}")
    results: dict = {"catalogs": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        from lvlmrec.data.synthetic import generate_synthetic

        generate_synthetic(tmp / "demo", n_items=args.items, n_users=50, seed=0,
                           show_progress=False)
        demo = sorted((tmp / "demo" / "images").glob("*.png"), key=lambda p: int(p.stem))
        results["catalogs"].append(measure(demo, tmp, "demo", args.repeats))
        posters = args.posters / "posters"
        if posters.is_dir():
            files = sorted(posters.glob("*.jpg"), key=lambda p: int(p.stem))[:args.max_posters]
            results["catalogs"].append(measure(files, tmp, "movielens_posters", args.repeats))
        else:
            print(f"no posters at {posters}: skipped")
            results["posters_skipped"] = str(posters)
    write_result(args.out, run_record(results, load_before))


if __name__ == "__main__":
    main()
