import os
import shutil

import pytest
from conftest import SAMPLES, SHARED
from hemocount_train.data import (CLASSES, Defects, Sample, mark_unlabelled, normalise_class, read_class_names,
                                  read_dataset, read_voc, read_yolo, shared_split)


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
        "1 1.5 0.5 0.1 0.1\n"      # wholly outside (cx = 1.5): dropped
        "1 0.5 0.5 -0.1 0.1\n"     # inverted: dropped
        "garbage\n")
    (lab_dir / "missing.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    d = Defects()
    s = read_yolo(str(img_dir), str(lab_dir), ["WBC", "RBC", "Platelet"], defects=d)
    assert len(s) == 1
    assert [CLASSES[i] for i in s[0].labels] == ["RBC", "Platelets"]
    assert s[0].boxes[1][2] == 640
    text = d.summary(100)
    for needle in ("repeats", "partly outside", "lies outside the image: dropped", "inverted corners: dropped",
                   "zero size", "unknown class id 5", "not 'class", "no image"):
        assert needle in text, needle


def test_read_dataset_autodetects_and_names_problems(tmp_path):
    with pytest.raises(ValueError, match="no VOC XML"):
        read_dataset(str(tmp_path))
    (tmp_path / "labels").mkdir()
    with pytest.raises(ValueError, match="classes.txt"):
        read_dataset(str(tmp_path))
    (tmp_path / "data.yaml").write_text("names: ['WBC', 'RBC','Platelets']\n")
    assert read_class_names(str(tmp_path / "data.yaml")) == ["WBC", "RBC", "Platelets"]


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
    assert "marked difficult" in d.summary()


def test_vocabulary_aliases_match_the_shared_file():
    import json
    from hemocount_train.data import normalise_class
    vocab = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "vocabulary.json")))
    for c in vocab["classes"]:
        for a in [c["name"], *c["aliases"]]:
            assert normalise_class(a) == c["name"], a
    assert normalise_class("Red Blood Cell") == "RBC"
