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
- `text_encode`: all-MiniLM-L6-v2 over the descriptions (each distinct text encoded once,
  as the encode stage does; `distinct_texts_per_s` is the model's own rate), and
  `text_encode_bfloat16`: the same with `encode.text_precision: bfloat16`, with the lowest
  cosine between its embeddings and float32's; `text_work`: tokens per text and the text
  model's GFLOP/s next to a plain float32 matrix product's on this machine.

Each row gives items/s of wall time and of process CPU time (CPU seconds are less
sensitive to a busy machine than wall seconds), and the JSON (date, machine, load,
command) goes to benchmarks/results/cpu_stages.json.

    python benchmarks/cpu_stages.py [--items 2000] [--posters DIR] [--threads N]
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


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def rate(n: int, wall: float, cpu: float) -> dict:
    return {"items": n, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "items_per_s": round(n / wall, 2) if wall else None,
            "items_per_cpu_s": round(n / cpu, 2) if cpu else None}


def text_work(encoder, distinct: list[str], wall: float) -> dict:
    """What float32 text encoding asks of the CPU: tokens per text and the model's
    multiply-adds (the linear layers, and attention's two products, per layer and token),
    as GFLOP/s over `wall`, next to what a plain float32 matrix product of the model's shape
    reaches here (the ceiling for a compute-bound model)."""
    import torch

    from lvlmrec.encode.text import length_order

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
            "padding_share_characters_order_128": padding_share(by_characters, 128),
            "padding_share_tokens_order": padding_share(by_tokens, encoder.batch_size),
            "gflop_per_text": round(2 * float(macs.mean()) / 1e9, 3),
            "model_gflop_per_s": round(2 * float(macs.sum()) / wall / 1e9, 1),
            "float32_matmul_gflop_per_s": round(matmul, 1)}


def padding_share(tokens: np.ndarray, batch_size: int) -> float:
    """The share of token positions that are padding when `tokens` (lengths, in batch
    order) are cut into batches of `batch_size`, each padded to its longest."""
    padded = sum(int(tokens[i:i + batch_size].max()) * len(tokens[i:i + batch_size])
                 for i in range(0, len(tokens), batch_size))
    return round(1 - float(tokens.sum()) / padded, 4)


def measure(paths: list[Path], tmp: Path, label: str) -> dict:
    from lvlmrec.describe.attributes import AttributesDescriber
    from lvlmrec.describe.base import DescribeItem, load_item_image
    from lvlmrec.encode.image import ImageEncoder
    from lvlmrec.encode.image_pass import ImagePassCache, image_pass
    from lvlmrec.encode.run import LocalEncoders
    from lvlmrec.encode.text import TextEncoder
    from lvlmrec.workdir import Workdir

    n = len(paths)
    out: dict = {"catalog": label, "n_images": n}
    encoder = ImageEncoder(device="cpu")
    encoder.encode_and_classify(paths[:8], show_progress_bar=False)  # load, warm up
    wd = Workdir(tmp / label)
    cache = ImagePassCache.for_workdir(wd)
    _, w, c = timed(lambda: image_pass(encoder, paths, cache, show_progress_bar=False))
    cache.close()
    out["image_pass"] = rate(n, w, c)
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

    texts, w, c = timed(describe)
    out["describe_attributes"] = rate(n, w, c)
    full_w, full_c = out["image_pass"]["wall_s"] + w, out["image_pass"]["cpu_s"] + c
    out["describe_attributes_full"] = rate(n, full_w, full_c)
    print(f"[{label}] attributes describer: {n / w:.1f} items/s after the pass, "
          f"{n / full_w:.1f} items/s with it", flush=True)

    _, cached_w, c = timed(lambda: LocalEncoders(False, wd).images(encoder, paths))
    out["image_encode_cached"] = rate(n, cached_w, c)
    sub = paths[:min(n, 512)]
    _, w, c = timed(lambda: encoder.encode(sub, show_progress_bar=False))
    out["image_encode_separate"] = rate(len(sub), w, c)
    print(f"[{label}] image encoding: {n / cached_w:.1f} images/s "
          f"from the pass; {len(sub) / w:.1f} images/s on its own", flush=True)

    text_encoder = TextEncoder(device="cpu")
    text_encoder.encode(texts[:16], show_progress_bar=False)
    _, w, c = timed(lambda: text_encoder.encode(texts, show_progress_bar=False))
    distinct = len(set(texts))
    out["text_encode"] = rate(n, w, c)
    # repeats are encoded once (TextEncoder.encode): the model's own rate is over distinct texts
    out["text_encode"]["distinct_texts_per_s"] = round(distinct / w, 2)
    print(f"[{label}] text encoding: {n / w:.1f} texts/s ({distinct} distinct: "
          f"{distinct / w:.1f} distinct texts/s)", flush=True)
    out["distinct_descriptions"] = distinct
    out["text_work"] = work = text_work(text_encoder, sorted(set(texts)), w)
    # before: sentence-transformers' own order (by characters), 128 texts a batch
    model, distinct_texts = text_encoder._load(), list(dict.fromkeys(t for t in texts if t))
    before, w, c = timed(lambda: model.encode(distinct_texts, batch_size=128,
                                              show_progress_bar=False, normalize_embeddings=True))
    out["text_encode_characters_order_128"] = rate(n, w, c)
    after = text_encoder.encode(distinct_texts, show_progress_bar=False)
    out["text_encode_characters_order_128"]["max_abs_diff"] = float(np.abs(after - before).max())
    print(f"[{label}] text encoding before (characters order, 128 a batch): {n / w:.1f} "
          f"texts/s; largest difference {np.abs(after - before).max():.1e}", flush=True)
    print(f"[{label}] text model: {work['mean_tokens_per_text']} tokens per text, "
          f"{work['model_gflop_per_s']} GFLOP/s; a float32 matrix product of its shape: "
          f"{work['float32_matmul_gflop_per_s']} GFLOP/s", flush=True)
    # opt-in `encode.text_precision: bfloat16`: speed, and agreement with float32
    bf16_encoder = TextEncoder(device="cpu", precision="bfloat16")
    bf16_encoder.encode(texts[:16], show_progress_bar=False)
    bf16, w, c = timed(lambda: bf16_encoder.encode(texts, show_progress_bar=False))
    out["text_encode_bfloat16"] = rate(n, w, c)
    out["text_encode_bfloat16"]["distinct_texts_per_s"] = round(distinct / w, 2)
    fp32 = text_encoder.encode(texts, show_progress_bar=False)
    cosines = (bf16 * fp32).sum(1)[np.linalg.norm(fp32, axis=1) > 0]
    out["text_encode_bfloat16"]["min_cosine_to_float32"] = round(float(cosines.min()), 6)
    print(f"[{label}] text encoding in bfloat16: {n / w:.1f} texts/s ({distinct / w:.1f} "
          f"distinct texts/s), min cosine to float32 {cosines.min():.5f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000, help="demo catalog size")
    parser.add_argument("--posters", type=Path, default=POSTERS)
    parser.add_argument("--max-posters", type=int, default=2000)
    parser.add_argument("--threads", type=int, help="torch threads (default: every core)")
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
        results["catalogs"].append(measure(demo, tmp, "demo"))
        posters = args.posters / "posters"
        if posters.is_dir():
            files = sorted(posters.glob("*.jpg"), key=lambda p: int(p.stem))[:args.max_posters]
            results["catalogs"].append(measure(files, tmp, "movielens_posters"))
        else:
            print(f"no posters at {posters}: skipped")
            results["posters_skipped"] = str(posters)
    write_result(args.out, run_record(results, load_before))


if __name__ == "__main__":
    main()
