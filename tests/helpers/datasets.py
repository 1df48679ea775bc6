"""Builders of tiny datasets in each benchmark's ORIGINAL layout (see shared/datasets.md), and of inputs in the
other formats the scorer reads."""

from __future__ import annotations

import csv
import io
import json
import tarfile
import zlib
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

KONIQ_HEADER = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"]


SPAQ_HEADER = ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"]


EMOSET_LABEL2IDX = {
    "amusement": 0,
    "awe": 1,
    "contentment": 2,
    "excitement": 3,
    "anger": 4,
    "disgust": 5,
    "fear": 6,
    "sadness": 7,
}


EMOTIONROI = ("anger", "disgust", "fear", "joy", "sadness", "surprise")


def write_image(path: Path, size: tuple[int, int] = (40, 30), mode: str = "RGB", **save_kw) -> Path:
    """A small image whose content depends on its file name (so images differ)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(array).convert(mode).save(path, **save_kw)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def cell_column(names: list[str]) -> np.ndarray:
    """A MATLAB Nx1 cell array of strings."""
    cell = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        cell[i, 0] = np.array([name])
    return cell


def cell_row(names: list[str]) -> np.ndarray:
    """A MATLAB 1xN cell array of strings."""
    return cell_column(names).reshape(1, -1)


def make_koniq(root: Path, n: int = 6, folder: str = "1024x768") -> list[float]:
    mos = [round(1.0 + 4.0 * i / max(n - 1, 1), 3) for i in range(n)]
    rows = []
    for i, score in enumerate(mos):
        name = f"{1000 + i}.jpg"
        write_image(root / folder / name)
        rows.append([name, 1, 2, 3, 4, 5, 15, score, 0.5, score * 20])
    write_csv(root / "koniq10k_scores_and_distributions.csv", KONIQ_HEADER, rows)
    return mos


def make_livec(root: Path, n: int = 5) -> list[float]:
    """7 training images first (``Images/trainingImages/t*.bmp``), then ``n`` test images."""
    names, mos = [], []
    for i in range(1, 8):
        write_image(root / "Images" / "trainingImages" / f"t{i}.bmp")
        names.append(f"t{i}.bmp")
        mos.append(50.0)
    for i in range(n):
        write_image(root / "Images" / f"{10 + i}.bmp")
        names.append(f"{10 + i}.bmp")
        mos.append(10.0 + 15.0 * i)
    (root / "Data").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cell_column(names)})
    scipy.io.savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array(mos).reshape(1, -1)})
    return mos[7:]


def make_spaq(root: Path, n: int = 4, rotated_first: bool = True) -> list[float]:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(SPAQ_HEADER)
    mos = []
    for i in range(1, n + 1):
        name = f"{i:05d}.jpg"
        exif = Image.Exif()
        if rotated_first and i == 1:
            exif[0x0112] = 6  # Orientation: rotate 90 CW to display -> displayed size is (30, 40)
        write_image(root / "TestImage" / name, exif=exif)
        mos.append(20.0 * i)
        sheet.append([name, 20.0 * i, 50, 50, 50, 50, 50])
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    workbook.save(root / "Annotations" / "MOS and Image attribute scores.xlsx")
    return mos


def make_flive(root: Path) -> list[float]:
    rows = [["voc_emotic_ava/a.jpg", 60.5], ["AVA__all/b.jpg", 70.25], ["blur_dataset/c.jpg", 55.0]]
    for name, _ in rows:
        write_image(root / "database" / name)
    write_csv(root / "database" / "labels_image.csv", ["name", "mos"], rows)
    return [r[1] for r in rows]


LIVE_COUNTS = {"jp2k": 3, "jpeg": 3, "wn": 2, "gblur": 2, "fastfading": 2}


def make_live(root: Path, counts: dict[str, int] = LIVE_COUNTS) -> dict:
    """Rows in folder order; the last image of each folder is a reference copy (``orgs == 1``)."""
    references = ["bikes.bmp", "house.bmp", "parrots.bmp"]
    dmos, orgs, refs = [], [], []
    for folder, count in counts.items():
        for k in range(1, count + 1):
            write_image(root / folder / f"img{k}.bmp")
            is_org = k == count
            dmos.append(0.0 if is_org else 20.0 + 10 * k + len(dmos))
            orgs.append(1 if is_org else 0)
            refs.append(references[len(refs) % len(references)])
    for ref in references:
        write_image(root / "refimgs" / ref)
    scipy.io.savemat(
        root / "dmos_realigned.mat",
        {
            "dmos_new": np.array(dmos, dtype=float).reshape(1, -1),
            "orgs": np.array(orgs, dtype=float).reshape(1, -1),
            "dmos_std": np.ones((1, len(dmos))),
        },
    )
    scipy.io.savemat(root / "refnames_all.mat", {"refnames_all": cell_row(refs)})
    return {"dmos": dmos, "orgs": orgs, "refs": refs}


def make_tid2013(root: Path, n_refs: int = 3, per_ref: int = 2) -> list[tuple[float, str]]:
    """Names listed lower-case; some files on disk are upper-case (as in the real release)."""
    lines = []
    for r in range(1, n_refs + 1):
        write_image(root / "reference_images" / (f"I{r:02d}.BMP" if r < n_refs else f"i{r:02d}.bmp"))
        for d in range(1, per_ref + 1):
            name = f"i{r:02d}_{d:02d}_{d}.bmp"
            on_disk = name.upper() if r == 2 else name
            write_image(root / "distorted_images" / on_disk)
            lines.append((round(3.0 + r + 0.1 * d, 5), name))
    (root / "mos_with_names.txt").write_text("".join(f"{mos} {name}\n" for mos, name in lines))
    return lines


def make_kadid(root: Path, n_refs: int = 3, per_ref: int = 2) -> list[list]:
    rows = []
    for r in range(1, n_refs + 1):
        write_image(root / "images" / f"I{r:02d}.png")
        for d in range(1, per_ref + 1):
            name = f"I{r:02d}_{d:02d}_{d:02d}.png"
            write_image(root / "images" / name)
            rows.append([name, f"I{r:02d}.png", round(1.0 + r + 0.1 * d, 3), 0.1])
    write_csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    return rows


def make_lamem(root: Path, n: int = 10) -> dict[str, float]:
    """``root/lamem/images`` + ``root/lamem/splits/{train,val,test}_{1..5}.txt``; 6/2/2 per split."""
    base = root / "lamem"
    scores = {f"{i:08d}.jpg": round(0.5 + 0.04 * i, 4) for i in range(n)}
    for name in scores:
        write_image(base / "images" / name)
    names = sorted(scores)
    (base / "splits").mkdir(parents=True, exist_ok=True)
    for split in range(1, 6):
        order = names[split:] + names[:split]
        parts = {"train": order[:6], "val": order[6:8], "test": order[8:]}
        for part, members in parts.items():
            (base / "splits" / f"{part}_{split}.txt").write_text(
                "".join(f"{name} {scores[name]}\n" for name in members)
            )
    return scores


def make_things(root: Path, column: str = "image_name") -> dict[str, float]:
    scores = {"aardvark/aardvark_01b.jpg": 0.8, "aardvark/aardvark_02s.jpg": 0.6, "zebra/zebra_01b.jpg": 0.9}
    for name in scores:
        write_image(root / name)
    rows = [[Path(n).name if column == "image_name" else n, s, 0.1] for n, s in scores.items()]
    write_csv(root / "things_memorability.csv", [column, "cr", "far"], rows)
    return scores


def make_emoset(root: Path, per_class: int = 2) -> dict[str, list]:
    """Splits: train gets per_class images per emotion, val and test one each of the first two."""
    # label2idx written in a non-sorted key order: the loader must order classes by index.
    label2idx = dict(sorted(EMOSET_LABEL2IDX.items(), key=lambda kv: kv[0]))
    (root).mkdir(parents=True, exist_ok=True)
    (root / "info.json").write_text(json.dumps({"emotion": {"label2idx": label2idx}, "brightness": {}}))
    entries: dict[str, list] = {"train": [], "val": [], "test": []}
    counter = 0
    for emotion in EMOSET_LABEL2IDX:
        for i in range(per_class + 2):
            image_id = f"{emotion}_{counter:05d}"
            image_path = f"image/{emotion}/{image_id}.jpg"
            annotation_path = f"annotation/{emotion}/{image_id}.json"
            write_image(root / image_path)
            (root / annotation_path).parent.mkdir(parents=True, exist_ok=True)
            (root / annotation_path).write_text(json.dumps({"emotion": emotion}))
            part = "train" if i < per_class else ("val" if i == per_class else "test")
            entries[part].append([emotion, image_id, image_path, annotation_path])
            counter += 1
    for part, items in entries.items():
        (root / f"{part}.json").write_text(json.dumps(items))
    return entries


def make_emotionroi(root: Path, per_class: int = 3) -> None:
    training, testing = [], []
    for emotion in EMOTIONROI:
        for i in range(1, per_class + 1):
            write_image(root / "images" / emotion / f"{i}.jpg")
            (training if i < per_class else testing).append(f"{emotion}/{i}.jpg")
    split_dir = root / "training_testing_split"
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / "training.txt").write_text("\n".join(training) + "\n")
    (split_dir / "testing.txt").write_text("\n".join(testing) + "\n")


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
