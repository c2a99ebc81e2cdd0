"""The `fast` engine yields exactly plain generate's greedy tokens (tiny models, fp32, CPU)."""

import logging
from types import SimpleNamespace

import pytest
from PIL import Image

from lvlmrec.config import DescribeConfig
from lvlmrec.describe.base import DescribeItem, describe_items
from lvlmrec.describe.engine import (
    FastEngine,
    PlainGenerate,
    decode_capacity,
    plan_waves,
    strip_after_eos,
)
from lvlmrec.describe.registry import make_describer
from lvlmrec.describe.store import DescriptionStore
from lvlmrec.describe.tiny import build_tiny_idefics3
from lvlmrec.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TITLES = ["red cotton shirt", "boots", "a long title about blue suede shoes for the beach", "",
          "navy wool coat", "gold ring", "striped linen summer dress with pockets", "cap", "bag"]


def _images(n):
    """Mixed sizes and aspect ratios: different image grids and token counts per item."""
    sizes = [(30, 60), (64, 32), (47, 51), (32, 32), (90, 40), (32, 32), (20, 70), (64, 32),
             (33, 33)]
    return [Image.new("RGB", sizes[i % len(sizes)], (200, 25 * i % 255, 30)) for i in range(n)]


def _describer(model_dir, engine, max_new_tokens=12, engine_options=None, **kw):
    options = {"engine": engine, **({"engine_options": engine_options} if engine_options else {})}
    cfg = {"backend": "hf", "model": str(model_dir), "device": "cpu",
           "max_new_tokens": max_new_tokens, "options": options, **kw}
    d = make_describer(DescribeConfig(**cfg))
    d.load()
    return d


@pytest.fixture(scope="module")
def plain(tiny_llava):
    return _describer(tiny_llava, "generate", prompt="study_code", include_title=True)


@pytest.mark.parametrize("n_items,prefill_batch,max_decode_batch", [
    (1, 4, None), (5, 2, None), (9, 1, None), (9, 4, 3), (7, 3, 2)])
def test_fast_equals_generate(tiny_llava, plain, n_items, prefill_batch, max_decode_batch):
    fast = _describer(tiny_llava, "fast", prompt="study_code", include_title=True,
                      engine_options={"prefill_batch": prefill_batch,
                                      "max_decode_batch": max_decode_batch})
    assert isinstance(fast.engine, FastEngine)
    images, titles = _images(n_items), TITLES[:n_items]
    expected = plain.generate_ids(images, titles)
    assert fast.generate_ids(images, titles) == expected
    assert all(len(ids) == 12 for ids in expected)  # the tiny model never emits EOS
    assert fast.describe(images, titles) == plain.describe(images, titles)


def test_without_titles_every_prompt_is_alike(tiny_llava):
    plain = _describer(tiny_llava, "generate", max_new_tokens=10)
    fast = _describer(tiny_llava, "fast", max_new_tokens=10,
                      engine_options={"prefill_batch": 3})
    images = _images(8)
    assert fast.generate_ids(images, [""] * 8) == plain.generate_ids(images, [""] * 8)


def _with_kwargs(describer, **extra):
    """A describer whose generate calls also pass `extra` (EOS ids, min_new_tokens)."""
    base = describer.generate_kwargs
    describer.generate_kwargs = lambda: {**base(), **extra}
    return describer


def _eos_stopping_some_rows(rows, early):
    """A token that some rows emit mid-way, one of them before step `early`, and at least
    one row never emits."""
    for token in sorted({t for row in rows for t in row}):
        stopped = [row for row in rows if token in row[1:-1]]
        if (stopped and len(stopped) < len(rows) and all(token != row[0] for row in rows)
                and any(token in row[1:early] for row in rows)):
            return token
    raise AssertionError("no token stops only some rows")


@pytest.mark.parametrize("min_new_tokens", [0, 4])
def test_rows_stop_at_their_own_eos(tiny_llava, min_new_tokens):
    images, titles = _images(9), TITLES
    max_new = 16
    free = _describer(tiny_llava, "generate", max_new_tokens=max_new, prompt="study_code",
                      include_title=True).generate_ids(images, titles)
    eos = _eos_stopping_some_rows(free, early=4)  # min_new_tokens=4 then moves its stop
    extra = {"eos_token_id": eos, "min_new_tokens": min_new_tokens}
    plain = _with_kwargs(_describer(tiny_llava, "generate", max_new_tokens=max_new,
                                    prompt="study_code", include_title=True), **extra)
    fast = _with_kwargs(_describer(tiny_llava, "fast", max_new_tokens=max_new,
                                   prompt="study_code", include_title=True,
                                   engine_options={"prefill_batch": 2, "max_decode_batch": 4,
                                                   "check_every": 3}), **extra)
    expected = plain.generate_ids(images, titles)
    assert fast.generate_ids(images, titles) == expected
    stopped = [row for row in expected if len(row) < max_new]
    assert stopped and len(stopped) < len(expected)
    assert all(row[-1] == eos and eos not in row[:min_new_tokens] for row in stopped)
    # after its EOS a row emits only padding, as with generate
    prepared = fast.prepare(images, titles)
    pad = fast.hf_model.generation_config.pad_token_id
    raw = fast.engine.generate(fast.hf_model, [c.to("cpu") for c in prepared.chunks],
                               **fast.generate_kwargs())
    for row in (r for ids in raw for r in ids.tolist()):
        if eos in row:
            assert set(row[row.index(eos) + 1:]) <= {pad}


def test_beyond_a_sliding_window_it_generates_plainly(tiny_llava):
    windowed = []
    for engine in ("generate", "fast"):
        d = _describer(tiny_llava, engine, prompt="study_code", include_title=True)
        # shorter than every prompt: a full static cache would attend where the model does not
        d.hf_model.config.get_text_config(decoder=True).sliding_window = 16
        windowed.append(d)
    plain, fast = windowed
    images = _images(4)
    assert fast.generate_ids(images, TITLES[:4]) == plain.generate_ids(images, TITLES[:4])
    assert fast.engine._wave is None  # never built one


def test_waves_of_one_shape_reuse_their_cache(tiny_llava):
    fast = _describer(tiny_llava, "fast", max_new_tokens=6)
    images = [Image.new("RGB", (32, 32), (i, 0, 0)) for i in range(4)]
    fast.generate_ids(images, [""] * 4)
    wave = fast.engine._wave
    fast.generate_ids(images[::-1], [""] * 4)
    assert fast.engine._wave is wave


def test_another_family(tmp_path):
    model_dir = build_tiny_idefics3(tmp_path / "idefics3")
    plain = _describer(model_dir, "generate", prompt="study_code", include_title=True)
    fast = _describer(model_dir, "fast", prompt="study_code", include_title=True,
                      engine_options={"prefill_batch": 2, "max_decode_batch": 3})
    assert isinstance(fast.engine, FastEngine)
    images = _images(6)
    assert fast.generate_ids(images, TITLES[:6]) == plain.generate_ids(images, TITLES[:6])


def test_what_it_cannot_reproduce_goes_to_plain_generate(tiny_llava, caplog):
    with caplog.at_level(logging.WARNING, logger="lvlmrec.describe.hf"):
        sampled = _describer(tiny_llava, "fast", temperature=0.7)
    assert isinstance(sampled.engine, PlainGenerate)
    assert "sampling" in caplog.text and "using plain generate" in caplog.text
    model = sampled.hf_model
    engine = FastEngine()
    assert "repetition_penalty=1.3" in engine.unsupported(
        model, {"max_new_tokens": 4, "repetition_penalty": 1.3})
    assert "num_beams=2" in engine.unsupported(model, {"max_new_tokens": 4, "num_beams": 2})
    assert "does not handle" in engine.unsupported(model, {"max_new_tokens": 4, "foo": 1})
    assert engine.unsupported(model, {"max_new_tokens": 4, "min_new_tokens": 2}) is None
    qwen = SimpleNamespace(config=SimpleNamespace(model_type="qwen2_vl"))
    assert "'qwen2_vl' is not one it is verified on" in engine.unsupported(qwen, {})


def test_engine_choice_and_options(tiny_llava):
    assert isinstance(_describer(tiny_llava, "auto").engine, PlainGenerate)  # CPU
    with pytest.raises(ConfigError, match="engine 'fast'.*unexpected keyword.*turbo"):
        _describer(tiny_llava, "fast", engine_options={"turbo": True})
    with pytest.raises(ConfigError, match="prefill_batch and max_decode_batch must be"):
        _describer(tiny_llava, "fast", engine_options={"prefill_batch": 0})
    with pytest.raises(ConfigError, match="engine 'generate' \\(on cpu\\)"):
        _describer(tiny_llava, "auto", engine_options={"prefill_batch": 2})


def test_the_describe_loop_prepares_ahead(tiny_llava, tmp_path, plain):
    items = []
    for i, img in enumerate(_images(9)):
        path = tmp_path / f"{i}.png"
        img.save(path)
        items.append(DescribeItem(i, path, TITLES[i]))
    items.append(DescribeItem(9, tmp_path / "missing.png", "gone"))
    fast = _describer(tiny_llava, "fast", prompt="study_code", include_title=True,
                      engine_options={"prefill_batch": 2})
    with DescriptionStore(tmp_path / "d.sqlite") as store:
        summary = describe_items(fast, store, items, batch_size=4, show_progress=False)
        texts = store.texts(fast.model_id, fast.prompt_hash)
    assert summary.n_described == 9 and list(summary.failures) == [9]
    expected = plain.describe([Image.open(it.image_path).convert("RGB") for it in items[:9]],
                              TITLES)
    assert [texts[i] for i in range(9)] == expected

    def broken(images, titles):
        raise RuntimeError("preprocessing failed")

    fast.prepare = broken  # a failed prepare: the batch is described item by item
    fast.describe = lambda images, titles: ["text"] * len(images)
    with DescriptionStore(tmp_path / "e.sqlite") as store:
        summary = describe_items(fast, store, items[:3], batch_size=3, show_progress=False)
    assert summary.n_described == 3


def test_plan_waves_and_capacity():
    assert plan_waves([4, 4, 4], None) == [[0, 1, 2]]
    assert plan_waves([4, 4, 4], 12) == [[0, 1, 2]]
    assert plan_waves([4, 4, 4, 4, 4], 12) == [[0, 1, 2], [3, 4]]
    assert plan_waves([4] * 96, 250) == [list(range(48)), list(range(48, 96))]  # 192 + 192
    assert plan_waves([4, 4, 4, 4], 10) == [[0, 1], [2, 3]]
    assert plan_waves([5, 1], 2) == [[0], [1]]  # a chunk wider than the cap: a wave of its own
    assert plan_waves([], 3) == []
    gib = 1 << 30
    assert decode_capacity(100 * gib, gib, 10 * gib, 0.9) == 81
    assert decode_capacity(gib, gib, 10 * gib, 0.9) == 1


def test_strip_after_eos():
    assert strip_after_eos([5, 2, 0, 0], [2]) == [5, 2]
    assert strip_after_eos([5, 6], [2, 9]) == [5, 6]


def test_auto_follows_the_gpu_measurement_table(tiny_llava, monkeypatch):
    from lvlmrec.describe import hf

    assert hf.choose_engine("auto", "cpu", str(tiny_llava))[0] == "generate"
    engine, why = hf.choose_engine("auto", "cuda", str(tiny_llava))
    assert engine == "generate" and "not matched generate's tokens on a GPU" in why
    monkeypatch.setitem(hf.GPU_VERIFIED_MODEL_TYPES, "llava_next", "gpu_check.json")
    assert hf.choose_engine("auto", "cuda", str(tiny_llava)) == (
        "fast", "auto: fast matched generate on a GPU for llava_next (gpu_check.json)")
    assert hf.choose_engine("auto", "cuda", str(tiny_llava), greedy=False)[0] == "generate"
    monkeypatch.setitem(hf.GPU_VERIFIED_MODEL_TYPES, "llava_next", "x")
    monkeypatch.delitem(hf.GPU_VERIFIED_MODEL_TYPES, "llava_next")
    monkeypatch.setitem(hf.GPU_VERIFIED_MODEL_TYPES, "idefics3", "x")
    engine, why = hf.choose_engine("auto", "cuda", str(tiny_llava))
    assert engine == "generate" and "'llava_next'" in why


def test_engine_and_resolved_dtype_are_in_the_key_old_keys_mean_generate(tiny_llava, tmp_path):
    from lvlmrec.describe.base import DescribeItem, adopt_legacy, describe_items
    from lvlmrec.describe.store import DescriptionStore

    plain = _describer(tiny_llava, "generate")
    fast = _describer(tiny_llava, "fast")
    assert plain.settings()["engine"] == "generate" and fast.settings()["engine"] == "fast"
    assert plain.settings()["resolved_dtype"] == "float32"
    assert plain.prompt_hash != fast.prompt_hash
    assert fast.legacy_prompt_hashes() == []
    (legacy,) = plain.legacy_prompt_hashes()
    with DescriptionStore(tmp_path / "d.sqlite") as store:
        store.put_many(plain.model_id, legacy, [(0, "old text", None, 0.5),
                                                (1, "older text", None, 0.5)])
        assert adopt_legacy(fast, store) == 0
        assert adopt_legacy(plain, store) == 2
        assert store.texts(plain.model_id, plain.prompt_hash) == {0: "old text",
                                                                  1: "older text"}
        items = [DescribeItem(i, None, "t") for i in range(2)]
        summary = describe_items(plain, store, items, show_progress=False)
        assert summary.n_done_before == 2 and summary.n_described == 0
        assert adopt_legacy(plain, store) == 0  # only into an empty set
