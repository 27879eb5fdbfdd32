import os
import shutil

import pytest
from PIL import Image
from conftest import SAMPLES, SHARED
from hemocount_train.data import (CLASSES, Defects, Sample, mark_unlabelled, normalise_class, read_class_names,
                                  read_dataset, read_voc, read_yolo, relabel, shared_images, shared_split)


def test_class_names_normalised():
    assert [normalise_class(n) for n in ("RBC", "wbc", "Platelets", "Platelet", "platelets", "PC", "dog")] == \
        ["RBC", "WBC", "Platelets", "Platelets", "Platelets", "Platelets", None]


def test_voc_reader_on_labelimg_files():
    s = read_voc(os.path.join(SAMPLES, "truth"), SAMPLES)
    by = {os.path.basename(x.image): x for x in s}
    x = by["BloodImage_00004.jpg"]
    assert (x.width, x.height) == (640, 480)
    xml = open(os.path.join(SAMPLES, "truth", "BloodImage_00004.xml")).read()
    assert len(x.boxes) == xml.count("<object>")
    assert all(0 <= b[0] < b[2] <= 640 and 0 <= b[1] < b[3] <= 480 for b in x.boxes)
    assert x.labels.count(CLASSES.index("WBC")) == xml.count("<name>WBC</name>")


def test_yolo_reader_reports_defects(tmp_path):
    img_dir, lab_dir = tmp_path / "images", tmp_path / "labels"
    img_dir.mkdir()
    lab_dir.mkdir()
    shutil.copy(os.path.join(SAMPLES, "BloodImage_00011.jpg"), img_dir / "a.jpg")
    (lab_dir / "a.txt").write_text(
        "1 0.5 0.5 0.1 0.1\n"      # RBC (TXL-PBC ids: 0 WBC, 1 RBC, 2 platelet)
        "1 0.5 0.5 0.1 0.1\n"      # exact repeat
        "2 0.99 0.5 0.1 0.1\n"     # platelet running off the right edge: clipped
        "0 0.5 0.5 0.0 0.1\n"      # zero width: dropped
        "5 0.5 0.5 0.1 0.1\n"      # unknown class id
        "3 0.5 0.5 0.1 0.1\n"      # a class hemocount does not count
        "1 1.5 0.5 0.1 0.1\n"      # wholly outside (cx = 1.5): dropped
        "1 0.5 0.5 -0.1 0.1\n"     # inverted: dropped
        "garbage\n")
    (lab_dir / "missing.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    shutil.copy(os.path.join(SAMPLES, "BloodImage_00004.jpg"), img_dir / "unlabelled.jpg")
    d = Defects()
    s = read_yolo(str(img_dir), str(lab_dir), ["WBC", "RBC", "Platelet", "Eosinophil"], defects=d)
    assert len(s) == 1
    assert [CLASSES[i] for i in s[0].labels] == ["RBC", "Platelets"]
    assert s[0].boxes[1][2] == 640
    text = d.summary(100)
    for needle in ("repeats", "partly outside", "lies outside the image: dropped", "inverted corners: dropped",
                   "zero size", "unknown class id 5", "unknown class id 3 (Eosinophil)", "not 'class", "no image",
                   "unlabelled.jpg: no label file unlabelled.txt"):
        assert needle in text, needle


def test_read_dataset_autodetects_and_names_problems(tmp_path):
    with pytest.raises(ValueError, match="no VOC XML"):
        read_dataset(str(tmp_path))
    (tmp_path / "labels").mkdir()
    with pytest.raises(ValueError, match="classes.txt"):
        read_dataset(str(tmp_path))
    (tmp_path / "data.yaml").write_text("names: ['WBC', 'RBC','Platelets']\n")
    assert read_class_names(str(tmp_path / "data.yaml")) == ["WBC", "RBC", "Platelets"]


def yolo_sets(root, sets):
    """A YOLO folder (ultralytics layout) with one sample smear per image named in `sets`."""
    (root / "data.yaml").write_text("names: ['WBC', 'RBC', 'Platelets']\n")
    for split, names in sets.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for name in names:
            shutil.copy(os.path.join(SAMPLES, f"{name}.jpg"), root / "images" / split / f"{name}.jpg")
            (root / "labels" / split / f"{name}.txt").write_text("1 0.5 0.5 0.1 0.1\n")


def test_a_yolo_split_is_read_alone_and_copies_across_sets_are_found(tmp_path):
    yolo_sets(tmp_path, {"train": ["BloodImage_00004", "BloodImage_00011"], "val": ["BloodImage_00017"]})
    stems = lambda ss: sorted(os.path.splitext(os.path.basename(x.image))[0] for x in ss)  # noqa: E731
    assert stems(read_dataset(str(tmp_path))) == ["BloodImage_00004", "BloodImage_00011", "BloodImage_00017"]
    train = read_dataset(str(tmp_path / "data.yaml"), split="train")
    val = read_dataset(str(tmp_path), split="val")
    assert stems(train) == ["BloodImage_00004", "BloodImage_00011"] and stems(val) == ["BloodImage_00017"]
    with pytest.raises(ValueError, match="no split 'valid'.*its splits: train, val"):
        read_dataset(str(tmp_path), split="valid")
    assert shared_images(train, val) == []
    # the same smear under another name in the validation set is a training image all the same
    shutil.copy(os.path.join(SAMPLES, "BloodImage_00011.jpg"), tmp_path / "images" / "val" / "copy.jpg")
    (tmp_path / "labels" / "val" / "copy.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    val = read_dataset(str(tmp_path), split="val")
    assert [tuple(os.path.basename(p) for p in pair) for pair in shared_images(train, val)] == \
        [("copy.jpg", "BloodImage_00011.jpg")]
    assert len(shared_images(train, read_dataset(str(tmp_path)))) == 3  # both training images and the copy
    # ... and so is the same smear saved again: another JPEG quality, or PNG
    Image.open(os.path.join(SAMPLES, "BloodImage_00004.jpg")).save(tmp_path / "images" / "val" / "again.jpg", quality=70)
    Image.open(os.path.join(SAMPLES, "BloodImage_00004.jpg")).save(tmp_path / "images" / "val" / "again2.png")
    for name in ("again", "again2"):
        (tmp_path / "labels" / "val" / f"{name}.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    val = read_dataset(str(tmp_path), split="val")
    assert sorted(tuple(os.path.basename(p) for p in pair) for pair in shared_images(train, val)) == \
        [("again.jpg", "BloodImage_00004.jpg"), ("again2.png", "BloodImage_00004.jpg"), ("copy.jpg", "BloodImage_00011.jpg")]
    # a folder that also holds VOC files is read as YOLO, as `hemocount evaluate` reads it, and a split is honoured
    (tmp_path / "annotations").mkdir()
    shutil.copy(os.path.join(SAMPLES, "truth", "BloodImage_00004.xml"), tmp_path / "annotations")
    assert stems(read_dataset(str(tmp_path), split="train")) == ["BloodImage_00004", "BloodImage_00011"]
    with pytest.raises(ValueError, match="picks one set of a YOLO folder"):
        read_dataset(os.path.join(SAMPLES), split="train")


def test_a_roboflow_export_is_read_through_its_data_yaml(tmp_path):
    # train/images + train/labels, valid/...; data.yaml's '../' paths as Roboflow writes them
    for split, names in {"train": ["BloodImage_00004", "BloodImage_00011"], "valid": ["BloodImage_00017"]}.items():
        for d in ("images", "labels"):
            (tmp_path / split / d).mkdir(parents=True)
        for name in names:
            shutil.copy(os.path.join(SAMPLES, f"{name}.jpg"), tmp_path / split / "images" / f"{name}.jpg")
            (tmp_path / split / "labels" / f"{name}.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: ../valid/images  # comment\n\nnc: 3\n"
                                        "names: ['WBC', 'RBC', 'Platelets']\n")
    stems = lambda ss: sorted(os.path.splitext(os.path.basename(x.image))[0] for x in ss)  # noqa: E731
    assert stems(read_dataset(str(tmp_path / "data.yaml"), split="train")) == ["BloodImage_00004", "BloodImage_00011"]
    val = read_dataset(str(tmp_path), split="val")
    assert stems(val) == ["BloodImage_00017"] and [CLASSES[i] for i in val[0].labels] == ["RBC"]
    assert len(read_dataset(str(tmp_path))) == 3
    with pytest.raises(ValueError, match="data.yaml names no set 'test'; its sets: train, val"):
        read_dataset(str(tmp_path), split="test")
    # any yaml name; a set whose labels are not where the yaml says is named, not skipped silently
    (tmp_path / "blood.yaml").write_text("train: ../train/images\nval: ../validation/images\nnames: [WBC, RBC, Platelets]\n")
    with pytest.raises(ValueError, match="blood.yaml's val set: no labels at .*validation/labels"):
        read_dataset(str(tmp_path / "blood.yaml"), split="val")
    d = Defects()
    assert len(read_dataset(str(tmp_path / "blood.yaml"), d)) == 2
    assert "its val set has no labels" in d.summary()


def test_images_missing_a_dense_class_are_ignored_for_that_class():
    group = [Sample(f"i{k}", 10, 10, boxes=[[0, 0, 1, 1]], labels=[0], source="s") for k in range(19)]
    group.append(Sample("no_rbc", 10, 10, boxes=[[0, 0, 1, 1]], labels=[1], source="s"))
    d = Defects()
    mark_unlabelled(group, d)
    assert group[-1].unlabelled == {0}
    assert all(not s.unlabelled for s in group[:-1])
    assert "no_rbc" in d.summary()


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="shared datasets not present")
def test_shared_split_is_group_aware_and_complete():
    from hemocount_train.data import read_groups
    train, val = shared_split(SHARED)
    rel = lambda s: os.path.relpath(s.image, SHARED)  # noqa: E731
    units = read_groups(os.path.join(SHARED, "bccd-groups.csv"))
    unit = lambda s: units.get(rel(s), rel(s))  # noqa: E731
    # no smear (group, or overlapping field) on both sides
    assert not {unit(s) for s in train} & {unit(s) for s in val}
    for a, b in (("00223", "00263"), ("00229", "00258")):
        sides = {unit(s) in {unit(v) for v in val} for s in train + val
                 if os.path.basename(s.image) in (f"BloodImage_{a}.jpg", f"BloodImage_{b}.jpg")}
        assert len(sides) <= 1, "overlapping fields stay on one side"
    # validation has complete labels only, and both subsets
    assert {s.source for s in val} == {"full", "closeup"}
    assert all(not s.incomplete for s in val)
    # a CBC smear with a pixel-identical TXL-PBC copy is represented by that copy (complete labels)
    cbc_train = {os.path.basename(s.image) for s in train if s.source == "cbc-partial"}
    assert "BloodImage_00095.jpg" not in cbc_train  # its TXL-PBC copy is in the collection
    assert all(s.incomplete == {0, 2} for s in train if s.source == "cbc-partial")
    full_val = [s for s in val if s.source == "full"]
    assert len(full_val) >= 20 and sum(len(s.boxes) for s in full_val) > 400
    # byte copies: no training file has the same content as a validation file
    import hashlib
    digest = lambda p: hashlib.sha1(open(p, "rb").read()).hexdigest()  # noqa: E731
    assert not {digest(s.image) for s in val} & {digest(s.image) for s in train}


def test_voc_difficult_objects_are_not_truth(tmp_path):
    """hemocount exports cells to review with <difficult>1</difficult>: not labels until reviewed."""
    shutil.copy(os.path.join(SAMPLES, "BloodImage_00004.jpg"), tmp_path / "a.jpg")
    obj = "<object><name>{}</name><difficult>{}</difficult><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>60</xmax><ymax>60</ymax></bndbox></object>"
    (tmp_path / "a.xml").write_text("<annotation><filename>a.jpg</filename>" + obj.format("RBC", 0) + obj.format("WBC", 1) + "</annotation>")
    d = Defects()
    s = read_voc(str(tmp_path), str(tmp_path), defects=d)
    assert [CLASSES[i] for i in s[0].labels] == ["RBC"]
    # undecided, not background: kept apart so that the loss leaves the cell alone
    assert [(b, CLASSES[k]) for b, k in s[0].ignore] == [([9.0, 9.0, 60.0, 60.0], "WBC")]
    assert not d.items


def test_relabel_replaces_incomplete_labels_with_a_complete_file(tmp_path):
    """Completed labels (reviewed, or a teacher's, with undecided cells as difficult) replace
    an incomplete image's boxes and make it complete; a file for another image is refused."""
    s = read_voc(os.path.join(SAMPLES, "truth"), SAMPLES)
    x = next(v for v in s if v.image.endswith("BloodImage_00004.jpg"))
    x.incomplete = {0, 2}
    obj = "<object><name>{}</name><difficult>{}</difficult><bndbox><xmin>{}</xmin><ymin>10</ymin><xmax>{}</xmax><ymax>60</ymax></bndbox></object>"
    head = "<annotation><filename>{}</filename><size><width>640</width><height>480</height></size>"
    (tmp_path / "BloodImage_00004.xml").write_text(head.format("BloodImage_00004.jpg") + obj.format("RBC", 0, 10, 60)
                                                   + obj.format("RBC", 1, 100, 150) + "</annotation>")
    d = Defects()
    assert relabel(s, str(tmp_path), d) == 1
    assert [CLASSES[k] for k in x.labels] == ["RBC"] and len(x.ignore) == 1
    assert x.incomplete == set() and x.source == "voc"  # --oversample by source still finds it
    # a file named after one image but describing another is not applied to either
    (tmp_path / "BloodImage_00004.xml").write_text(head.format("BloodImage_00011.jpg") + "</annotation>")
    d = Defects()
    assert relabel(s, str(tmp_path), d) == 0
    assert "not used" in d.summary()
    # one written for a resized copy, or naming no training image, is reported, not used
    (tmp_path / "BloodImage_00004.xml").write_text(head.format("BloodImage_00004.jpg").replace("640", "320")
                                                   + obj.format("RBC", 0, 10, 60) + "</annotation>")
    (tmp_path / "elsewhere.xml").write_text(head.format("elsewhere.jpg") + "</annotation>")
    d = Defects()
    assert relabel(s, str(tmp_path), d) == 0
    assert "describes a 320x480 image, BloodImage_00004.jpg is 640x480: skipped" in d.summary()
    assert "elsewhere.xml: names no training image: not used" in d.summary()
    with pytest.raises(ValueError, match="no such folder"):
        relabel(s, str(tmp_path / "missing"))


def test_vocabulary_aliases_match_the_shared_file():
    import json
    from hemocount_train.data import normalise_class
    vocab = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "vocabulary.json")))
    for c in vocab["classes"]:
        for a in [c["name"], *c["aliases"]]:
            assert normalise_class(a) == c["name"], a
    assert normalise_class("Red Blood Cell") == "RBC"


def test_pseudo_labels_keep_the_expert_and_add_only_new_cells():
    """scripts/pseudo-labels.py's merge: expert boxes stay; a teacher's red cell or platelet
    that overlaps no kept box is added, as a cell from --cell up and undecided from --floor."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("pseudo", os.path.join(os.path.dirname(__file__), "..", "..",
                                                                         "scripts", "pseudo-labels.py"))
    pseudo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pseudo)
    expert = [([0, 0, 100, 100], "RBC"), ([200, 0, 400, 200], "WBC")]
    det = lambda k, s, b: {"label": k, "score": s, "box": b}  # noqa: E731
    teacher = [det("RBC", 0.9, [5, 5, 100, 100]),      # the expert's cell again
               det("RBC", 0.8, [100, 100, 200, 200]),  # a new cell
               det("RBC", 0.5, [110, 100, 210, 200]),  # a second box on it
               det("Platelets", 0.3, [500, 0, 530, 30]),
               det("RBC", 0.1, [0, 300, 100, 400]),    # below the floor: background
               det("WBC", 0.9, [600, 300, 700, 400])]  # CBC boxes every white cell
    out = pseudo.merge(expert, teacher, cell=0.6, floor=0.2)
    assert [(k, d) for _, k, d in out] == [("RBC", False), ("WBC", False), ("RBC", False), ("Platelets", True)]
    # the expert's own undecided cells stay undecided, and a teacher's cell there is not added
    kept = pseudo.merge(expert, teacher, cell=0.6, floor=0.2, undecided=[([100, 100, 200, 200], "RBC")])
    assert [(k, d) for _, k, d in kept] == [("RBC", False), ("WBC", False), ("RBC", True), ("Platelets", True)]
    xml = pseudo.voc("/x/a.jpg", 640, 480, out)
    assert "<filename>a.jpg</filename>" in xml and xml.count("<difficult>1</difficult>") == 1
    assert "<xmin>1</xmin>" in xml and "<xmax>100</xmax>" in xml  # 1-based inclusive, as LabelImg


def test_coco_round_trip_keeps_undecided_cells_apart(tmp_path):
    """write_coco writes undecided cells with iscrowd 1 (the evaluator leaves them out), and
    read_coco reads them back as undecided, not as cells."""
    from hemocount_train.coco import write_coco
    from hemocount_train.data import read_coco
    s = read_voc(os.path.join(SAMPLES, "truth"), SAMPLES)[:1]
    s[0].ignore = [([5.0, 5.0, 50.0, 50.0], 2)]
    write_coco(s, str(tmp_path / "set.json"))
    back = read_coco(str(tmp_path / "set.json"), str(tmp_path))
    assert back[0].boxes == [[round(v, 2) for v in b] for b in s[0].boxes] and back[0].labels == s[0].labels
    assert back[0].ignore == [([5.0, 5.0, 50.0, 50.0], 2)]


def test_a_lab_model_keeps_its_own_magnification_band():
    # red cells of 50 px in the lab's data: --scale auto must not enlarge its images to 96 px
    from hemocount_train.data import median_cell_px
    from hemocount_train.export import SCALE, scale_for
    rbc = CLASSES.index("RBC")
    cells = [[x, 0.0, x + 50.0, 50.0] for x in range(0, 300, 60)]
    lab = [Sample("a.jpg", 640, 480, boxes=cells, labels=[rbc] * 5),
           Sample("b.jpg", 640, 480, boxes=[[0.0, 0.0, 10.0, 10.0]], labels=[rbc])]  # too few cells to measure
    assert median_cell_px(lab) == 50.0
    assert median_cell_px(lab[1:]) is None
    own = scale_for({"cell_px": 50.0, "config": {"data": "/lab/smears"}})
    assert own["reference_px"] == 50.0 and own["min_px"] < 50.0 < own["max_px"]
    assert own["max_px"] / own["min_px"] == pytest.approx(SCALE["max_px"] / SCALE["min_px"], rel=0.01)
    # the shipped recipe (hemocount's own split, no --data) keeps the shipped band
    assert scale_for({"cell_px": 80.0, "config": {"data": None}}) == SCALE
    assert scale_for({"config": {"data": "/lab/smears"}}) == SCALE  # checkpoints from before it was recorded


def test_two_voc_files_labelling_one_image_keep_the_one_named_after_it(tmp_path):
    from hemocount_train.data import read_voc
    for n in ("BloodImage_00004", "BloodImage_00011"):
        shutil.copy(os.path.join(SAMPLES, f"{n}.jpg"), tmp_path / f"{n}.jpg")
    shutil.copy(os.path.join(SAMPLES, "truth", "BloodImage_00011.xml"), tmp_path / "BloodImage_00011.xml")
    xml = open(os.path.join(SAMPLES, "truth", "BloodImage_00004.xml")).read()
    (tmp_path / "BloodImage_00004.xml").write_text(xml.replace("BloodImage_00004.jpg", "BloodImage_00011.jpg"))
    d = Defects()
    got = read_voc(str(tmp_path), defects=d)
    own = read_voc(str(tmp_path), only="BloodImage_00011.xml")
    assert [os.path.basename(s.image) for s in got] == ["BloodImage_00011.jpg"]
    assert got[0].boxes == own[0].boxes
    assert any(p.endswith("BloodImage_00004.xml") and "which BloodImage_00011.xml describes too: skipped" in m for p, m in d.items)


def test_training_sees_images_as_count_does_exif_turned_and_alpha_on_white(tmp_path):
    # a phone or camera picture stored on its side with an EXIF orientation: count, evaluate and
    # the VOC / YOLO files hemocount writes use the turned picture, so training must too
    import numpy as np
    from hemocount_train.data import _image_size
    from hemocount_train.train import load_rgb
    src = os.path.join(SAMPLES, "BloodImage_00004.jpg")
    turned = str(tmp_path / "turned.jpg")
    with Image.open(src) as im:
        exif = Image.Exif()
        exif[0x0112] = 6  # shown turned 90 degrees clockwise
        im.transpose(Image.Transpose.ROTATE_90).save(turned, quality=95, exif=exif)
    with Image.open(turned) as im:
        assert im.size == (480, 640)
    assert _image_size(turned, Defects()) == (640, 480)
    a, b = load_rgb(src), load_rgb(turned)
    assert a.shape == b.shape == (3, 480, 640)
    assert (a.float() - b.float()).abs().mean() < 3  # the same picture, up to JPEG re-encoding
    # transparency is flattened onto white, as count's sharp does
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:4, ..., 3] = 255  # top half opaque red-ish, bottom half transparent
    png = str(tmp_path / "alpha.png")
    Image.fromarray(rgba, "RGBA").save(png)
    t = load_rgb(png)
    assert t[:, :4].tolist() == [[[200] * 8] * 4, [[0] * 8] * 4, [[0] * 8] * 4]
    assert (t[:, 4:] == 255).all()
