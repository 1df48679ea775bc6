"""Each loader reads its dataset's original layout (tiny fixtures) into the documented columns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
from datasets import ClassLabel, Value

from perceptclip_hf.data import (
    EMOSET_CLASSES,
    EMOTIONROI_CLASSES,
    get_dataset_info,
    get_load_report,
    list_datasets,
    load_benchmark,
    load_emoset,
    load_emotionroi,
    load_flive,
    load_imagefolder,
    load_kadid10k,
    load_koniq10k,
    load_lamem,
    load_live,
    load_livec,
    load_spaq,
    load_table,
    load_things,
    load_tid2013,
    open_image,
)
from tests.helpers.datasets import (
    LIVE_COUNTS,
    make_emoset,
    make_emotionroi,
    make_flive,
    make_kadid,
    make_koniq,
    make_lamem,
    make_live,
    make_livec,
    make_spaq,
    make_things,
    make_tid2013,
    write_csv,
    write_image,
)


def _labels(ds):
    return [round(x, 4) for x in ds["label"]]


def test_koniq_reads_csv_and_image_folder(tmp_path):
    mos = make_koniq(tmp_path)
    ds = load_koniq10k(tmp_path)
    assert len(ds) == 6 and ds.features["label"] == Value("float32")
    assert _labels(ds) == [round(m, 4) for m in mos]
    assert ds["image_name"][0] == "1000.jpg" and ds["sample_id"] == list(range(6))
    assert ds[0]["image"].size == (40, 30)  # Image() feature decodes lazily from the path
    zscores = load_koniq10k(tmp_path, score_column="MOS_zscore")["label"]
    assert zscores[-1] == pytest.approx(100.0)


def test_koniq_falls_back_to_512x384(tmp_path):
    make_koniq(tmp_path, n=3, folder="512x384")
    assert load_koniq10k(tmp_path)["image_name"] == ["1000.jpg", "1001.jpg", "1002.jpg"]


def test_livec_drops_the_seven_training_images(tmp_path):
    mos = make_livec(tmp_path, n=5)
    ds = load_livec(tmp_path)
    assert len(ds) == 5 and ds["image_name"][0] == "10.bmp"
    assert _labels(ds) == mos and ds["sample_id"] == list(range(5))
    assert get_load_report(ds).num_source_rows == 5


def test_spaq_reads_xlsx_and_applies_exif_orientation(tmp_path):
    mos = make_spaq(tmp_path, n=4)
    ds = load_spaq(tmp_path)
    assert _labels(ds) == mos and ds["image_name"] == [f"{i:05d}.jpg" for i in range(1, 5)]
    assert open_image(ds[0]["image_path"]).size == (30, 40)  # rotated by EXIF orientation 6
    assert open_image(ds[1]["image_path"]).size == (40, 30)


def test_flive_names_include_subfolders(tmp_path):
    mos = make_flive(tmp_path)
    ds = load_flive(tmp_path)
    assert ds["image_name"] == ["voc_emotic_ava/a.jpg", "AVA__all/b.jpg", "blur_dataset/c.jpg"]
    assert _labels(ds) == mos


def test_live_keeps_raw_dmos_lower_is_better(tmp_path):
    truth = make_live(tmp_path)
    ds = load_live(tmp_path, folder_counts=LIVE_COUNTS)
    kept = [i for i, o in enumerate(truth["orgs"]) if o != 1]
    assert len(ds) == len(kept) == 7
    assert _labels(ds) == [truth["dmos"][i] for i in kept]  # raw DMOS, not negated
    assert ds["reference"] == [truth["refs"][i] for i in kept]
    assert ds["distortion"][:2] == ["jp2k", "jp2k"] and ds["image_name"][0] == "jp2k/img1.bmp"
    info = get_dataset_info("LIVE")
    assert info.higher_is_better is False and info.n_train_groups == 23


def test_live_skipped_row_keeps_the_other_rows_sample_ids(tmp_path):
    make_live(tmp_path)
    clean = load_live(tmp_path, folder_counts=LIVE_COUNTS)
    assert clean["sample_id"] == list(range(7))  # numbered among the distorted rows (references dropped)
    mat_path = tmp_path / "dmos_realigned.mat"
    mat = {k: v for k, v in scipy.io.loadmat(mat_path).items() if not k.startswith("__")}
    mat["dmos_new"][0, 1] = np.nan  # jp2k/img2.bmp, the 2nd distorted row
    scipy.io.savemat(mat_path, mat)
    skipped = load_live(tmp_path, folder_counts=LIVE_COUNTS, on_error="skip")
    assert get_load_report(skipped).num_skipped == 1 and "jp2k/img2.bmp" not in skipped["image_name"]
    clean_ids = dict(zip(clean["image_name"], clean["sample_id"]))
    assert skipped["sample_id"] == [clean_ids[name] for name in skipped["image_name"]] == [0, 2, 3, 4, 5, 6]


def test_live_default_counts_are_the_official_ones(tmp_path):
    make_live(tmp_path)
    with pytest.raises(ValueError, match="982"):
        load_live(tmp_path)


def test_tid2013_matches_names_case_insensitively(tmp_path):
    lines = make_tid2013(tmp_path)
    ds = load_tid2013(tmp_path)
    assert _labels(ds) == [round(m, 4) for m, _ in lines]
    assert ds["reference"] == ["I01.BMP"] * 2 + ["I02.BMP"] * 2 + ["i03.bmp"] * 2
    assert ds["image_name"][2] == "I02_01_1.BMP" and ds["distortion"][:2] == ["01", "02"]
    assert ds["level"][:2] == [1, 2]


def test_kadid_reads_dmos_csv(tmp_path):
    rows = make_kadid(tmp_path)
    ds = load_kadid10k(tmp_path)
    assert len(ds) == 6 and _labels(ds) == [r[2] for r in rows]
    assert ds["reference"] == [r[1] for r in rows]
    assert get_dataset_info("KADID-10k").higher_is_better is True


def test_lamem_reads_all_split_files(tmp_path):
    scores = make_lamem(tmp_path)
    ds = load_lamem(tmp_path)  # accepts the folder containing lamem/
    assert ds["image_name"] == sorted(scores) and _labels(ds) == [scores[n] for n in sorted(scores)]
    assert len(load_lamem(tmp_path / "lamem")) == 10


def test_lamem_skipped_image_keeps_the_other_images_sample_ids(tmp_path):
    scores = make_lamem(tmp_path)
    clean = load_lamem(tmp_path)
    clean_ids = dict(zip(clean["image_name"], clean["sample_id"]))
    bad = sorted(scores)[3]
    for split_file in (tmp_path / "lamem" / "splits").glob("*.txt"):  # every row of one image unreadable
        split_file.write_text(split_file.read_text().replace(f"{bad} {scores[bad]}", f"{bad} n/a"))
    skipped = load_lamem(tmp_path, on_error="skip")
    assert bad not in skipped["image_name"] and len(skipped) == len(scores) - 1
    assert skipped["sample_id"] == [clean_ids[name] for name in skipped["image_name"]]


@pytest.mark.parametrize("column", ["image_name", "file_path"])
def test_things_finds_images_in_concept_folders(tmp_path, column):
    scores = make_things(tmp_path, column)
    ds = load_things(tmp_path)
    assert sorted(ds["image_name"]) == sorted(scores)
    assert dict(zip(ds["image_name"], _labels(ds))) == scores


def test_emoset_classes_follow_label2idx(tmp_path):
    entries = make_emoset(tmp_path)
    ds = load_emoset(tmp_path)
    assert (
        ds.features["label"].names
        == list(EMOSET_CLASSES)
        == ["amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness"]
    )
    assert len(ds) == sum(len(v) for v in entries.values())
    first = entries["train"][0]
    assert ds[0]["label"] == EMOSET_CLASSES.index(first[0]) and ds[0]["image_id"] == first[1]
    assert sorted(set(ds["split"])) == ["test", "train", "validation"]
    assert get_dataset_info("emoset").positive_classes == ("amusement", "awe", "contentment", "excitement")


def test_emotionroi_class_from_folder_and_official_split(tmp_path):
    make_emotionroi(tmp_path)
    ds = load_emotionroi(tmp_path)
    assert ds.features["label"].names == list(EMOTIONROI_CLASSES)
    assert list(EMOTIONROI_CLASSES) == ["anger", "disgust", "fear", "joy", "sadness", "surprise"]
    assert len(ds) == 18 and ds["image_name"][3] == "disgust/1.jpg" and ds["label"][3] == 1
    assert ds["split"].count("train") == 12 and ds["split"].count("test") == 6
    assert get_dataset_info("EmotionROI").positive_classes == ("joy", "surprise")


def test_custom_csv_and_json_tables(tmp_path):
    for name in ("a.png", "b.jpg"):
        write_image(tmp_path / "img" / name)
    write_csv(tmp_path / "scores.csv", ["file", "quality"], [["img/a.png", 1.5], ["img/b.jpg", 2.5]])
    ds = load_table(tmp_path / "scores.csv", image_column="file", label_column="quality")
    assert ds["label"] == [1.5, 2.5] and ds["image_name"] == ["img/a.png", "img/b.jpg"]
    (tmp_path / "cls.json").write_text(json.dumps({"path": ["a.png", "b.jpg"], "label": ["sad", "happy"]}))
    cls = load_table(tmp_path / "cls.json", image_root=tmp_path / "img", task="classification")
    assert cls.features["label"] == ClassLabel(names=["happy", "sad"]) and cls["label"] == [1, 0]
    (tmp_path / "rows.jsonl").write_text('{"path": "img/a.png", "score": 3}\n{"path": "img/b.jpg", "score": 4}\n')
    assert load_table(tmp_path / "rows.jsonl")["label"] == [3.0, 4.0]


def test_imagefolder_classes_from_subfolders(tmp_path):
    for cls, n in (("cats", 2), ("dogs", 1)):
        for i in range(n):
            write_image(tmp_path / cls / f"{i}.png")
    ds = load_imagefolder(tmp_path)
    assert ds.features["label"].names == ["cats", "dogs"] and ds["label"] == [0, 0, 1]


def test_registry_covers_the_papers_datasets():
    assert set(list_datasets()) >= {
        "koniq10k",
        "livec",
        "spaq",
        "flive",
        "live",
        "tid2013",
        "kadid10k",
        "agiqa3k",
        "lamem",
        "things",
        "emoset",
        "emotionroi",
    }
    replicas = {"koniq10k": 3, "livec": 5, "spaq": 3, "flive": 1, "live": 5, "tid2013": 10, "kadid10k": 3, "agiqa3k": 3}
    assert {name: get_dataset_info(name).replicas for name in replicas} == replicas
    assert set(replicas) <= set(list_datasets("quality"))
    assert get_dataset_info("emotionroi").class_names == EMOTIONROI_CLASSES
    with pytest.raises(KeyError, match="known"):
        get_dataset_info("imagenet")


def test_load_benchmark_dispatches_by_name(tmp_path):
    make_kadid(tmp_path)
    assert len(load_benchmark("KADID-10k", tmp_path)) == 6
