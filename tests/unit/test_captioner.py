"""Captioners: tiny BLIP build/train/save/reload, IR training pairs, config, SynthTri attribute parsing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from layouts import build_regdb, regdb_files
from PIL import Image

from tvifm.captioning.config import CaptionConfig, caption_config
from tvifm.captioning.finetune import TrainPair, ir_pairs, load_pixels, rgb_pairs, train_captioner
from tvifm.captioning.model import build_tiny_captioner, load_captioner, train_tokenizer
from tvifm.captioning.quality import (
    ATTRIBUTES,
    COLOUR_ATTRIBUTES,
    SHAPE_ATTRIBUTES,
    parse_attributes,
    pid_of,
    score_captions,
)
from tvifm.config import load_config
from tvifm.data.base import Sample
from tvifm.data.images import SkipReport
from tvifm.data.sidecars import Caption, TextIndex
from tvifm.data.synth import sample_identities
from tvifm.data.synth_text import caption
from tvifm.errors import ConfigError, DatasetError
from tvifm.text.colour import has_colour


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest, and never stall on a busy machine, with one torch thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = {
    "image_size": 32,
    "patch_size": 8,
    "vision_width": 48,
    "vision_layers": 1,
    "text_width": 48,
    "text_layers": 1,
    "heads": 2,
    "vocab_size": 120,
    "max_length": 24,
    "batch_size": 4,
    "lr": 3e-3,
    "warmup_fraction": 0.05,
    "flip": False,
}


def _images(tmp_path: Path) -> list[TrainPair]:
    """Four flat-colour images, two captions that depend on the colour."""
    pairs = []
    for i, (rgb, text) in enumerate(
        [
            ((220, 20, 20), "a man in a red coat."),
            ((20, 20, 220), "a lady in a blue skirt and boots."),
            ((230, 30, 30), "a man in a red coat."),
            ((30, 30, 230), "a lady in a blue skirt and boots."),
        ]
    ):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (16, 32), rgb).save(path)
        pairs.append(TrainPair(str(path), text))
    return pairs


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, list[TrainPair]]:
    import torch

    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("captioner")
    pairs = _images(tmp)
    cfg = caption_config({**TINY, "steps": 80})
    captioner = build_tiny_captioner(cfg, [p.text for p in pairs])
    pixels, texts = load_pixels(captioner, pairs, SkipReport(), progress=False)
    train_captioner(captioner, pixels, texts, cfg, progress=False)
    return captioner, pairs


def test_tiny_captioner_learns_its_training_captions(trained: tuple) -> None:
    captioner, pairs = trained
    images = [Image.open(p.path).convert("RGB") for p in pairs]
    assert captioner.caption(images) == [p.text for p in pairs]


def test_saved_captioner_reloads_with_from_pretrained(trained: tuple, tmp_path: Path) -> None:
    from transformers import BlipForConditionalGeneration, BlipProcessor

    captioner, pairs = trained
    captioner.save(tmp_path / "rgb", {"modality": "visible"})
    assert (tmp_path / "rgb" / "model.safetensors").is_file()
    assert isinstance(
        BlipForConditionalGeneration.from_pretrained(tmp_path / "rgb"), BlipForConditionalGeneration
    )
    assert isinstance(BlipProcessor.from_pretrained(tmp_path / "rgb"), BlipProcessor)
    reloaded = load_captioner(tmp_path / "rgb")
    images = [Image.open(p.path).convert("RGB") for p in pairs]
    assert reloaded.caption(images) == captioner.caption(images)
    assert reloaded.meta["modality"] == "visible" and reloaded.max_length == TINY["max_length"]


def test_a_captioner_that_would_end_at_once_still_says_something(trained: tuple) -> None:
    import copy

    import torch

    captioner, pairs = trained
    eager = copy.deepcopy(captioner)
    tok = eager.processor.tokenizer
    bias = eager.model.text_decoder.cls.predictions.decoder.bias
    with torch.no_grad():  # the end of caption first, then the silent special tokens, then words
        bias[tok.sep_token_id] += 1000.0
        bias[[tok.unk_token_id, tok.pad_token_id, tok.mask_token_id]] += 500.0
    images = [Image.open(p.path).convert("RGB") for p in pairs]
    pixels = eager.pixel_values(images)

    plain = eager.model.generate(pixel_values=pixels, max_length=eager.max_length)
    assert eager.processor.batch_decode(plain, skip_special_tokens=True) == [""] * len(images)
    texts = eager.caption(images)
    ids = eager.generate_ids(pixels)
    assert all(texts) and not set(ids[:, 1:].flatten().tolist()) & set(eager.silent_token_ids())


def test_load_captioner_explains_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fine-tun"):
        load_captioner(tmp_path / "nothing-here")


def test_tokenizer_trained_on_captions_round_trips_them() -> None:
    texts = ["a man with short black hair wearing a red t - shirt.", "a lady in a long coat."]
    tokenizer = train_tokenizer(texts, vocab_size=80)
    ids = tokenizer(texts[0])["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == texts[0]
    assert "[DEC]" in tokenizer.get_vocab()
    with pytest.raises(ConfigError, match="no caption text"):
        train_tokenizer(["", "  "], vocab_size=80)


def test_unreadable_training_images_are_skipped_and_reported(tmp_path: Path) -> None:
    pairs = _images(tmp_path)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    captioner = build_tiny_captioner(caption_config(TINY), [p.text for p in pairs])
    report = SkipReport()
    pixels, texts = load_pixels(captioner, [*pairs, TrainPair(str(bad), "x")], report, progress=False)
    assert pixels.shape[0] == len(texts) == len(pairs)
    assert [path for path, _ in report.items] == [str(bad)]
    with pytest.raises(DatasetError, match="no readable training image"):
        load_pixels(captioner, [TrainPair(str(bad), "x")], SkipReport(), progress=False)


def _sample(rel: str, pid: int, modality: str) -> Sample:
    return Sample(
        path=f"/d/{rel}", rel=rel, pid=pid, cam=1 if modality == "visible" else 3, modality=modality
    )  # type: ignore[arg-type]


def test_ir_pairs_use_a_visible_image_of_the_same_identity_without_colours() -> None:
    visible = [_sample(f"cam1/000{p}/0001.jpg", p, "visible") for p in (1, 2)]
    ir = [_sample(f"cam3/000{p}/0001.jpg", p, "ir") for p in (1, 2, 3)]
    texts = {
        visible[0].path: "a man with short black hair wearing a red t - shirt",
        visible[1].path: "a lady in a dark blue coat and white boots",
    }
    pairs = ir_pairs(ir, visible, lambda s: texts[s.path], seed=0)
    assert [(p.path, p.text) for p in pairs] == [
        (ir[0].path, "a man with short hair wearing a t - shirt"),
        (ir[1].path, "a lady in a coat and boots"),
    ]  # identity 3 has no visible image: left out


def test_rgb_pairs_skip_uncaptioned_images() -> None:
    visible = [_sample("cam1/0001/0001.jpg", 1, "visible"), _sample("cam1/0001/0002.jpg", 1, "visible")]
    index = TextIndex()
    index.captions["visible"]["cam1/0001/0001.jpg"] = Caption("a man in a coat")
    assert rgb_pairs(visible, index) == [TrainPair("/d/cam1/0001/0001.jpg", "a man in a coat")]


def test_caption_config_overrides_and_errors() -> None:
    cfg = load_config("tiny", ["caption.actors=1", "caption.modalities=[ir]", "data.dataset=regdb"])
    ccfg = cfg.caption
    assert isinstance(ccfg, CaptionConfig) and ccfg.actors == 1 and ccfg.modalities == ["ir"]
    assert cfg.data.dataset == "regdb"
    with pytest.raises(ConfigError, match=r"caption\.actorz"):
        load_config("tiny", ["caption.actorz=2"])
    with pytest.raises(ConfigError, match=r"caption\.augmenter"):
        caption_config({}, ["caption.augmenter=vicuna"])
    with pytest.raises(ConfigError, match="too small"):
        caption_config({}, ["caption.actors=0"])
    with pytest.raises(ConfigError, match=r"caption\.key=value"):  # one override style for every job
        caption_config({}, ["actors=1"])


def _synth_captions(colour: bool) -> tuple[dict[str, str], dict[int, dict]]:
    people = sample_identities(40, seed=5)
    captions, truth = {}, {}
    for person in people:
        truth[person.pid] = person.attributes()
        for index in range(1, 6):
            rng = np.random.default_rng([person.pid, index])
            text = caption(person.shape, person.colours if colour else None, rng, noise=False)
            captions[f"cam{1 if colour else 3}/{person.pid:04d}/{index:04d}.jpg"] = text
    return captions, truth


def test_parser_reads_every_attribute_of_synthtri_ground_truth_captions() -> None:
    captions, truth = _synth_captions(colour=True)
    report = score_captions(captions, truth)
    assert set(report.accuracy) == set(ATTRIBUTES)
    assert all(acc == 1.0 for acc in report.accuracy.values()), report.accuracy
    assert report.colour_word_rate == 1.0


def test_ir_ground_truth_scores_shape_only_and_names_no_colour() -> None:
    captions, truth = _synth_captions(colour=False)
    report = score_captions(captions, truth, SHAPE_ATTRIBUTES)
    assert all(acc == 1.0 for acc in report.accuracy.values())
    assert report.colour_word_rate == 0.0
    assert not any(has_colour(t) for t in captions.values())


def test_wrong_colours_are_counted_as_errors() -> None:
    text = "a slim man with short black straight hair, wearing a red plain t - shirt with short sleeves, "
    text += "blue jeans and white sneakers."
    parsed = parse_attributes(text)
    assert parsed["hair_colour"] == "black" and parsed["upper_colour"] == "red"
    assert parsed["lower_colour"] == "blue" and parsed["shoes_colour"] == "white"
    truth = {1: {**parsed, "upper_colour": "green"}}
    report = score_captions({"cam1/0001/0001.jpg": text}, truth, COLOUR_ATTRIBUTES)
    assert report.accuracy["upper_colour"] == 0.0 and report.accuracy["lower_colour"] == 1.0
    assert pid_of("cam1/0012/0003.jpg") == 12
    with pytest.raises(DatasetError):
        pid_of("x.jpg")


def test_caption_quality_json_round_trip() -> None:
    captions, truth = _synth_captions(colour=True)
    data = score_captions(captions, truth).to_dict()
    assert json.loads(json.dumps(data))["colour_accuracy"] == 1.0


def test_manifest_takes_each_image_modality_from_the_dataset_layout(tmp_path: Path) -> None:
    from tvifm.captioning.job import build_manifest
    from tvifm.data.registry import load_dataset

    root = build_regdb(tmp_path / "RegDB", regdb_files([1, 2], 2), {1: [1]}, decodable=False)
    rows = build_manifest(str(root), "regdb")
    splits = load_dataset("regdb", root)
    loaded = [*splits.train_visible, *splits.train_ir, *splits.test_query, *splits.test_gallery]
    assert {r["rel"]: r["modality"] for r in rows} == {s.rel: s.modality for s in loaded}
    assert [r["rel"] for r in rows] == sorted(r["rel"] for r in rows)
    with pytest.raises(DatasetError, match="no sysu images"):
        build_manifest(str(root), "sysu")
    with pytest.raises(ConfigError, match=r"unknown dataset 'market'.*synth, sysu, regdb, llcm"):
        build_manifest(str(root), "market")


def test_parts_keep_one_row_per_image_and_report_only_never_captioned(tmp_path: Path) -> None:
    import pyarrow as pa

    from tvifm.captioning.job import COLUMNS, NO_TEXT, collect, done_set, part_name, table_bytes
    from tvifm.data import storage

    def part(rows: list[tuple[str, str, str]]) -> None:
        cols = {name: [] for name in COLUMNS}
        for rel, status, text in rows:
            reason = "" if status == "ok" else "bad"
            for name, value in zip(COLUMNS, (rel, "visible", text, text + "!", status, reason), strict=True):
                cols[name].append(value)
        parts = tmp_path / "parts" / "visible"
        storage.write_bytes(parts / part_name(r[0] for r in rows), table_bytes(pa.table(cols)))

    part([("a.jpg", "ok", "a man"), ("b.jpg", "skipped", "")])
    part([("b.jpg", "ok", "a lady"), ("c.jpg", "skipped", "")])
    part([("d.jpg", "ok", "")])  # an earlier version wrote empty generations as results
    assert part_name(["x", "y"]) == part_name(["y", "x"]) != part_name(["x"])
    assert done_set(str(tmp_path), "visible") == {"a.jpg", "b.jpg"}
    captions, skipped = collect(str(tmp_path), "visible")
    assert list(captions) == ["a.jpg", "b.jpg"] and captions["b.jpg"] == Caption("a lady", "a lady!")
    assert skipped.items == [("c.jpg", "bad"), ("d.jpg", NO_TEXT)]


def test_caption_write_stage_writes_one_part_per_call_in_small_forward_passes(
    trained: tuple, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    from tvifm.captioning.job import CaptionWriteStage

    captioner, pairs = trained
    captioner.save(tmp_path / "rgb", {"modality": "visible"})
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    uris = [pairs[0].path, pairs[1].path, str(broken), pairs[2].path, pairs[3].path]
    rels = [f"cam1/0001/{i:04d}.png" for i in range(len(uris))]
    stage = CaptionWriteStage(
        caption={
            "checkpoint": str(tmp_path / "rgb"),
            "modality": "visible",
            "threads": 1,
            "filter_colours": True,
            "endpoint": None,
            "batch_size": 2,
        },
        augment={
            "kind": "rule",
            "options": {"seed": 0},
            "parts_dir": str(tmp_path / "parts"),
            "endpoint": None,
        },
    )
    passes: list[int] = []
    caption_fn = stage.caption.captioner.caption
    stage.caption.captioner.caption = lambda images: passes.append(len(images)) or caption_fn(images)  # type: ignore[method-assign]

    summary = stage({"rel": rels, "modality": ["visible"] * len(uris), "uri": uris})

    assert passes == [2, 1, 1]  # chunks of batch_size images (0-1, 2-3, 4); the corrupt one left out
    assert summary["rows"] == [5] and summary["ok"] == [4]
    (part,) = (tmp_path / "parts").glob("*.parquet")
    rows = pq.read_table(part).to_pylist()
    assert [r["rel"] for r in rows] == rels
    assert [r["status"] for r in rows] == ["ok", "ok", "skipped", "ok", "ok"] and rows[2]["reason"]
    expected = [p.text for p in pairs]
    assert [r["description"] for r in rows if r["status"] == "ok"] == expected
    assert all(r["aug_description"] for r in rows if r["status"] == "ok")


def test_a_caption_without_words_is_skipped_and_reported_never_written_or_augmented(
    trained: tuple, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    from tvifm.captioning.job import NO_TEXT, ONLY_COLOURS, CaptionWriteStage

    captioner, pairs = trained
    captioner.save(tmp_path / "ir", {"modality": "ir"})
    stage = CaptionWriteStage(
        caption={"checkpoint": str(tmp_path / "ir"), "modality": "ir", "threads": 1,
                 "filter_colours": True, "endpoint": None},
        augment={"kind": "rule", "options": {"seed": 0}, "parts_dir": str(tmp_path / "parts"),
                 "endpoint": None},
    )  # fmt: skip
    generated = ["", " . ", "red and blue", "a man in a red shirt"]
    augmented: list[list[str]] = []
    stage.caption.captioner.caption = lambda images: generated[: len(images)]  # type: ignore[method-assign]
    augment_fn = stage.write.augmenter.augment

    def augment(texts: list[str], modality: str) -> list[str]:
        augmented.append(texts)
        return augment_fn(texts, modality)

    stage.write.augmenter.augment = augment  # type: ignore[method-assign]
    rels = [f"cam3/0001/{i:04d}.png" for i in range(4)]

    summary = stage({"rel": rels, "modality": ["ir"] * 4, "uri": [p.path for p in pairs[:4]]})

    assert summary["rows"] == [4] and summary["ok"] == [1]
    (part,) = (tmp_path / "parts").glob("*.parquet")
    rows = pq.read_table(part).to_pylist()
    assert [(r["status"], r["reason"]) for r in rows] == [
        ("skipped", NO_TEXT),
        ("skipped", NO_TEXT),
        ("skipped", ONLY_COLOURS),
        ("ok", ""),
    ]
    assert [r["description"] for r in rows] == ["", "", "", "a man in a shirt"]
    assert augmented == [["a man in a shirt"]]  # the augmenter only sees real captions
    assert all(not r["aug_description"] for r in rows[:3]) and rows[3]["aug_description"]


def test_job_timing_starts_the_steady_rate_once_every_actor_has_written_a_part() -> None:
    from tvifm.captioning.job import ModalityCounts, _set_timing

    written = [(100.0, 8), (101.0, 8), (102.0, 8), (103.0, 8), (104.0, 4)]
    two = ModalityCounts()
    _set_timing(two, started=95.0, ended=105.5, written=written, actors=2)
    assert (two.seconds, two.first_part_seconds) == (10.5, 5.0)
    assert two.steady_images_per_second == pytest.approx(20 / 3, abs=0.01)  # after the 2nd part
    one = ModalityCounts()
    _set_timing(one, started=95.0, ended=105.5, written=written, actors=1)
    assert one.steady_images_per_second == pytest.approx(28 / 4, abs=0.01)
    single = ModalityCounts()
    _set_timing(single, started=95.0, ended=101.0, written=written[:1], actors=2)
    assert single.first_part_seconds == 5.0 and single.steady_images_per_second == 0.0


def test_a_failed_modality_leaves_no_pending_list_and_keeps_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tvifm.captioning import job
    from tvifm.captioning.job import read_table

    seen: list[list[str]] = []

    class Broken:
        def iter_rows(self) -> Iterator[dict]:
            yield {"ok": 1, "rows": 1, "written": 1.0}
            raise RuntimeError("actor died")

    def pipeline(pending_uri: str, *_: object) -> Broken:
        seen.append(read_table(pending_uri).column("rel").to_pylist())
        return Broken()

    monkeypatch.setattr(job, "_pipeline", pipeline)
    rows = [{"rel": f"{i}.jpg", "modality": "visible", "uri": f"/x/{i}.jpg"} for i in range(3)]
    rows.append({"rel": "ir.jpg", "modality": "ir", "uri": "/x/ir.jpg"})
    with pytest.raises(RuntimeError, match="actor died"):
        job._run_modality(rows, str(tmp_path), "visible", caption_config(), progress=False)
    assert seen == [["0.jpg", "1.jpg", "2.jpg"]]  # only this modality's rows were handed to Ray Data
    assert not list(tmp_path.glob("pending-*.parquet"))
