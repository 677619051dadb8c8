"""Tri- text sidecars: file formats, joining keys to images, precedence, writing, and the real RegDB files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from layouts import SysuPlan, build_regdb, build_sysu, shared_dir

from tvifm.data.regdb import load_regdb
from tvifm.data.sidecars import (
    Caption,
    caption_dict_path,
    load_text,
    load_text_for,
    match_key,
    read_caption_file,
    write_caption_dict,
)
from tvifm.data.sysu import load_sysu
from tvifm.errors import DatasetError

TRI = shared_dir() / "data" / "tri-captions"
FILTERED = "llm_color_filterd_output/regdb_ir_blip_caption_LLM_filtered_dict.json"


def dump(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4))
    return path


# --- file formats ----------------------------------------------------------------------------------------


def test_reads_the_three_formats(tmp_path: Path) -> None:
    plain = read_caption_file(dump(tmp_path / "caption_dict_x.json", {"a/1/x.jpg": {"description": "d"}}))
    assert plain.kind == "captions"
    assert plain.captions == {"a/1/x.jpg": Caption("d", None)}
    llm = read_caption_file(
        dump(tmp_path / "caption_llm_dict_x.json", {"k": {"description": "d", "aug_description": "r"}})
    )
    assert llm.captions == {"k": Caption("d", "r")}
    id_map = read_caption_file(dump(tmp_path / "id_caption_map_x.json", {"12": ["a", "b"], "3": []}))
    assert id_map.kind == "id_map"
    assert id_map.id_captions == {12: ["a", "b"], 3: []}


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"a": {"description": "x"},\n  oops}', r"bad\.json:2: not valid JSON"),
        ('["cam1/0001/0001.jpg"]', r"bad\.json: top level is a JSON list; expected an object"),
        ('{"cam1/0001/0001.jpg": "a man"}', r"bad\.json: entry 'cam1/0001/0001\.jpg' is a str"),
        ('{"p1": {"description": "x"}, "p2": {"aug_description": "y"}}', r"entry 'p2' is malformed"),
        ('{"p1": {"description": 3}}', r"entry 'p1' is malformed"),
        ('{"p1": {"description": "x", "aug_description": 5}}', r"entry 'p1' is malformed"),
        ('{"p1": {"description": "x"}, "7": ["y"]}', r"entry '7' is malformed"),
        ('{"7": ["y"], "seven": ["z"]}', r"key 'seven' is not an integer identity id"),
        ('{"7": ["y", 2]}', r"entry '7' is malformed; expected a list of caption strings"),
    ],
)
def test_malformed_caption_file_names_file_and_key(tmp_path: Path, content: str, pattern: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=pattern):
        read_caption_file(path)


def test_not_utf8_caption_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(DatasetError, match=r"bad\.json: cannot read caption file"):
        read_caption_file(path)


# --- joining to a dataset --------------------------------------------------------------------------------


@pytest.fixture
def sysu_root(tmp_path: Path) -> Path:
    plan = SysuPlan(
        train=[1], val=[2], test=[3], images={(1, 1): 2, (3, 1): 1, (2, 2): 1, (6, 3): 1, (4, 3): 1}
    )
    return build_sysu(tmp_path / "sysu", plan, decodable=False)


def test_keys_join_by_longest_suffix_whatever_their_prefix(sysu_root: Path) -> None:
    text = sysu_root / "Text"
    dump(
        text / "Blip_RGB" / "caption_llm_dict_Blip_RGB.json",
        {
            "cam1/0001/0001.jpg": {"description": "v1", "aug_description": "v1 again"},
            "/data0/SYSU-MM01/cam1/0001/0002.jpg": {"description": "v2", "aug_description": "v2 again"},
            "datasets\\sysu\\cam4\\0003\\0001.jpg": {"description": "v3", "aug_description": "v3 again"},
            "cam1/0099/0001.jpg": {"description": "nobody", "aug_description": "nobody"},
            "cam3/0001/0001.jpg": {"description": "an IR key in the RGB file", "aug_description": "-"},
        },
    )
    dump(text / "Blip_IR" / "caption_dict_Blip_IR.json", {"./sysu/cam6/0003/0001.jpg": {"description": "i3"}})
    dump(text / "Blip_IR" / "id_caption_map_Blip_IR.json", {"3": ["a person"], "0001": ["someone"]})
    splits = load_sysu(sysu_root)
    index = load_text_for(splits)
    by_rel = {s.rel: s for s in (*splits.train_visible, *splits.train_ir, *splits.test_gallery)}
    by_rel |= {s.rel: s for s in (*splits.test_query, *splits.val_visible)}
    assert index.caption(by_rel["cam1/0001/0001.jpg"]) == Caption("v1", "v1 again")
    assert index.caption(by_rel["cam1/0001/0002.jpg"]) == Caption("v2", "v2 again")
    assert index.caption(by_rel["cam4/0003/0001.jpg"]) == Caption("v3", "v3 again")
    assert index.caption(by_rel["cam6/0003/0001.jpg"]) == Caption("i3", None)
    assert index.caption(by_rel["cam3/0001/0001.jpg"]) is None
    assert index.caption(by_rel["cam2/0002/0001.jpg"]) is None
    assert index.num_captioned == 4
    assert index.num_captioned_by_modality() == {"visible": 3, "ir": 1}
    assert sorted(index.unmatched_keys) == ["cam1/0099/0001.jpg", "cam3/0001/0001.jpg"]
    assert "2 caption keys matched no image" in index.unmatched_summary()
    assert index.id_captions("ir", 3) == ["a person"]
    assert index.id_captions("ir", 1) == ["someone"]
    assert index.id_captions("visible", 3) == []


def test_match_key_prefers_the_longest_suffix() -> None:
    rels = {"a/b.jpg", "x/a/b.jpg"}
    assert match_key("/root/x/a/b.jpg", rels) == "x/a/b.jpg"
    assert match_key("/root/y/a/b.jpg", rels) == "a/b.jpg"
    assert match_key("b.jpg", rels) is None


def test_filtered_subfolder_wins_for_aug_description_only(sysu_root: Path) -> None:
    ir = sysu_root / "Text" / "Blip_IR"
    dump(ir / "caption_dict_Blip_IR.json", {"cam3/0001/0001.jpg": {"description": "plain"}})
    dump(
        ir / "caption_llm_dict_Blip_IR.json",
        {"cam3/0001/0001.jpg": {"description": "d", "aug_description": "red"}},
    )
    dump(
        ir / "filtered" / "x_filtered_dict.json",
        {"/x/cam3/0001/0001.jpg": {"description": "f", "aug_description": "ok"}},
    )
    splits = load_sysu(sysu_root)
    index = load_text(sysu_root, splits.train_ir)
    assert index.caption(splits.train_ir[0]) == Caption("d", "ok")


def test_sidecar_of_the_wrong_format_for_its_name(sysu_root: Path) -> None:
    dump(
        sysu_root / "Text" / "Blip_RGB" / "id_caption_map_Blip_RGB.json", {"c/1/1.jpg": {"description": "x"}}
    )
    with pytest.raises(
        DatasetError, match=r"id_caption_map_Blip_RGB\.json: file holds the other sidecar format"
    ):
        load_text(sysu_root, [])


def test_root_without_text_has_no_captions(sysu_root: Path) -> None:
    splits = load_sysu(sysu_root)
    index = load_text_for(splits)
    assert index.num_captioned == 0
    assert index.caption(splits.train_visible[0]) is None
    assert index.unmatched_keys == []


# --- writing ---------------------------------------------------------------------------------------------


def test_write_caption_dict_round_trips_in_the_published_format(tmp_path: Path) -> None:
    path = caption_dict_path(tmp_path, "ir")
    assert path == tmp_path / "Text" / "Blip_IR" / "caption_llm_dict_Blip_IR.json"
    captions = {"cam3/0001/0001.jpg": Caption("a man", "a male person"), "cam6/0002/0001.jpg": Caption("é")}
    write_caption_dict(path, captions)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw == {
        "cam3/0001/0001.jpg": {"description": "a man", "aug_description": "a male person"},
        "cam6/0002/0001.jpg": {"description": "é"},
    }
    assert read_caption_file(path).captions == captions
    assert os.listdir(path.parent) == [path.name]


def test_write_caption_dict_replaces_atomically_and_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "caption_dict_x.json"
    write_caption_dict(path, {"a/1/x.jpg": Caption("first")})
    write_caption_dict(path, {"a/1/x.jpg": Caption("second")})
    assert read_caption_file(path).captions == {"a/1/x.jpg": Caption("second")}
    with pytest.raises(TypeError, match="must hold strings"):
        write_caption_dict(path, {"a/1/x.jpg": Caption(None)})  # type: ignore[arg-type]
    assert read_caption_file(path).captions == {"a/1/x.jpg": Caption("second")}
    assert os.listdir(tmp_path) == [path.name]


# --- the real published RegDB captions -------------------------------------------------------------------


def real_keys(name: str) -> dict[str, dict[str, str]]:
    return json.loads((TRI / "regdb" / "Text" / name).read_text(encoding="utf-8"))


def tail(key: str) -> str:
    return "/".join(key.split("/")[-3:])


@pytest.fixture(scope="module")
def regdb_real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RegDB tree whose 412 x (10 + 10) image names are those of the published caption keys."""
    if not (TRI / "regdb" / "Text").is_dir():
        pytest.skip(f"shared Tri- captions not found at {TRI} (set TVIFM_SHARED)")
    files: dict[str, dict[int, list[str]]] = {"Visible": {}, "Thermal": {}}
    for name in ("Blip_RGB/caption_llm_dict_Blip_RGB.json", "Blip_IR/caption_llm_dict_Blip_IR.json"):
        for key in real_keys(name):
            folder, pid, image = tail(key).split("/")
            files[folder].setdefault(int(pid), []).append(image)
    root = tmp_path_factory.mktemp("regdb") / "RegDB"
    ids = sorted(files["Visible"])
    assert len(ids) == 412 and all(len(files[f][pid]) == 10 for f in files for pid in ids)
    return build_regdb(root, files, {1: ids[::2]}, decodable=False)


def test_real_regdb_captions_join_every_image(regdb_real: Path) -> None:
    link = regdb_real / "Text"
    link.symlink_to(TRI / "regdb" / "Text", target_is_directory=True)
    try:
        splits = load_regdb(regdb_real, trial=1)
        index = load_text_for(splits)
    finally:
        link.unlink()
    assert len(splits.train_ids) == len(splits.test_ids) == 206
    assert index.num_captioned_by_modality() == {"visible": 4120, "ir": 4120}
    assert index.unmatched_keys == []
    rgb = {tail(k): v for k, v in real_keys("Blip_RGB/caption_llm_dict_Blip_RGB.json").items()}
    for s in (*splits.train_visible, *splits.test_gallery):
        assert index.caption(s) == Caption(rgb[s.rel]["description"], rgb[s.rel]["aug_description"])
    assert any(src.endswith(FILTERED) for src in index.sources)
    id_map = real_keys("Blip_RGB/id_caption_map_Blip_RGB.json")
    assert all(index.id_captions("visible", int(pid)) == texts for pid, texts in id_map.items())


def test_real_regdb_filtered_ir_file_takes_precedence(regdb_real: Path, tmp_path: Path) -> None:
    text = tmp_path / "Text"
    shutil.copytree(TRI / "regdb" / "Text", text)
    filtered = real_keys(f"Blip_IR/{FILTERED}")
    dump(
        text / "Blip_IR" / FILTERED,
        {k: v | {"aug_description": "F:" + v["aug_description"]} for k, v in filtered.items()},
    )
    (regdb_real / "Text").symlink_to(text, target_is_directory=True)
    try:
        splits = load_regdb(regdb_real, trial=1)
        index = load_text_for(splits)
    finally:
        (regdb_real / "Text").unlink()
    unfiltered = {tail(k): v for k, v in real_keys("Blip_IR/caption_llm_dict_Blip_IR.json").items()}
    ir = [*splits.train_ir, *splits.test_query]
    assert len(ir) == 4120
    for s in ir:
        caption = index.caption(s)
        assert caption is not None
        assert caption.description == unfiltered[s.rel]["description"]
        assert caption.aug_description == "F:" + filtered["/data0/hzy_data/RegDB/" + s.rel]["aug_description"]


def test_real_sysu_ir_id_caption_map(sysu_root: Path) -> None:
    source = TRI / "sysu" / "Text"
    if not source.is_dir():
        pytest.skip(f"shared Tri- captions not found at {TRI} (set TVIFM_SHARED)")
    (sysu_root / "Text").symlink_to(source, target_is_directory=True)
    index = load_text_for(load_sysu(sysu_root))
    real = json.loads((source / "Blip_IR" / "id_caption_map_Blip_IR.json").read_text(encoding="utf-8"))
    assert index.id_captions("ir", 1) == real["1"]
    assert index.id_captions("ir", 533) == real["533"]
    assert index.num_captioned == 0
