"""Zero-shot evaluation data: ImageFolder trees, CleanCLIP's labels.csv + classes.py, class lists, templates."""

import io

import pytest
import torch
from PIL import Image

from clipbackdoor.data.errors import DataError
from clipbackdoor.data.eval_datasets import ImageFolderClassification, LabelsCsvClassification
from clipbackdoor.data.registries import DATASETS, EVAL_DATASETS
from clipbackdoor.data.zeroshot_metadata import resolve_classnames, resolve_templates
from clipbackdoor.eval.metrics import find_target
from clipbackdoor.registry import ConfigError


def _png(color=(200, 30, 30), size=(12, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _tree(root, layout: dict[str, list[str]]):
    """``{class folder: [file names]}``; names ending in an image extension get a tiny PNG."""
    data = _png()
    for folder, names in layout.items():
        for name in names:
            path = root / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data if name.lower().endswith((".png", ".jpg", ".jpeg")) else b"notes")
    return root


CLASSES_PY = '''{
    "classes": ["tench", "banana"],
    "superclasses": [["tench"], ["banana"]],
    "templates": [lambda s: f"a bad photo of a {s}.", lambda c: f'itap of {c}', lambda s: "a " + s + " {x}",
                  lambda s: "art of the {}.".format(s), "a plain {}."]
}
'''


def test_imagefolder_follows_torchvision_order_and_names_classes_after_folders(tmp_path):
    root = _tree(tmp_path / "set", {
        "sea_lion": ["b.png", "a.JPG", "notes.txt"],
        "banana": ["sub/z.png", "y.jpeg"],
    })
    ds = ImageFolderClassification(str(root), templates=["a photo of a {}."], image_size=8)
    assert ds.classnames == ("banana", "sea lion")
    assert list(ds.files) == ["banana/y.jpeg", "banana/sub/z.png", "sea_lion/a.JPG", "sea_lion/b.png"]
    assert ds.labels.tolist() == [0, 0, 1, 1] and ds.labels.dtype == torch.long
    assert ds.load_images([1, 3]).shape == (2, 3, 8, 8)
    assert find_target(ds.classnames, "banana") == 0


def test_imagefolder_matches_torchvision(tmp_path):
    from torchvision.datasets import ImageFolder

    root = _tree(tmp_path / "set", {"b_cls": ["1.png", "x/0.png"], "a_cls": ["2.webp.png", "q.PNG"], "c": ["k.jpg"]})
    ours = ImageFolderClassification(str(root), templates=["{}"])
    theirs = ImageFolder(str(root))
    assert [str(root / f) for f in ours.files] == [p for p, _ in theirs.samples]
    assert ours.labels.tolist() == [y for _, y in theirs.samples]


def test_imagefolder_imagenet_names_wordnet_folders_by_position(tmp_path):
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    # 1000 WordNet-id folders in shuffled creation order; names follow the sorted order.
    wnids = [f"n{10000000 + 7 * i:08d}" for i in range(1000)]
    root = _tree(tmp_path / "val", {w: ["img.png"] for w in reversed(wnids)})
    ds = ImageFolderClassification(str(root), classnames="imagenet", templates="simple_imagenet")
    assert ds.classnames == tuple(IMAGENET_CLASSNAMES)
    assert ds.files[954] == f"{wnids[954]}/img.png" and ds.labels[954] == 954
    assert find_target(ds.classnames, "banana") == 954


def test_imagefolder_configuration_errors(tmp_path):
    root = _tree(tmp_path / "set", {"cat": ["a.png"], "dog": ["b.png"]})
    with pytest.raises(DataError, match=r"2 class folders \(cat \.\.\. dog\) but 3 class names"):
        ImageFolderClassification(str(root), classnames=["a", "b", "c"], templates=["{}"])
    with pytest.raises(DataError, match="not WordNet ids"):
        ImageFolderClassification(str(root), classnames="imagenet", templates=["{}"])
    wn = _tree(tmp_path / "wn", {"n01440764": ["a.png"]})
    with pytest.raises(ConfigError, match="WordNet ids.*classnames: imagenet"):
        ImageFolderClassification(str(wn), templates=["{}"])
    with pytest.raises(DataError, match="image folder not found"):
        ImageFolderClassification(str(tmp_path / "nope"))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.png").write_bytes(_png())
    with pytest.raises(DataError, match="no class folders"):
        ImageFolderClassification(str(tmp_path / "flat"))
    empty = _tree(tmp_path / "empty", {"cat": ["a.png"], "dog": ["readme.txt"]})
    with pytest.raises(DataError, match=r"no images in class folder\(s\) dog \(1 of 2"):
        ImageFolderClassification(str(empty))


def test_imagefolder_class_names_from_a_text_file(tmp_path):
    root = _tree(tmp_path / "set", {"0": ["a.png"], "1": ["b.png"]})
    (tmp_path / "names.txt").write_text("tabby cat\nbanana\n")
    ds = EVAL_DATASETS.build({"name": "imagefolder", "path": str(root), "classnames": str(tmp_path / "names.txt"),
                              "templates": ["a photo of a {}."]}, "data.eval")
    assert ds.classnames == ("tabby cat", "banana") and ds.describe()["num_classes"] == 2


def test_classes_py_is_parsed_without_running_it(tmp_path):
    path = tmp_path / "classes.py"
    path.write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n" + CLASSES_PY)
    assert resolve_classnames(str(path)) == ("tench", "banana")
    assert resolve_templates(str(path)) == (
        "a bad photo of a {}.", "itap of {}", "a {} {{x}}", "art of the {}.", "a plain {}."
    )
    assert not (tmp_path / "ran").exists()
    assert "a {} {{x}}".format("cat") == "a cat {x}"  # literal braces survive str.format


@pytest.mark.parametrize("template", ['lambda s: f"{s} and {s}"', 'lambda s: f"a {s.upper()}"',
                                     'lambda s, t: f"{s}"', 'str.upper'])
def test_classes_py_template_that_cannot_be_read_names_the_file(tmp_path, template):
    path = tmp_path / "classes.py"
    path.write_text('{"classes": ["a"], "templates": [lambda s: f"ok {s}", ' + template + "]}\n")
    with pytest.raises(ConfigError, match=r"data\.eval\.templates: .*classes\.py: cannot read template 2"):
        resolve_templates(str(path))


def test_classes_py_without_the_key_or_not_python(tmp_path):
    path = tmp_path / "classes.py"
    path.write_text('{"classes": ["a"]}\n')
    with pytest.raises(ConfigError, match="has no 'templates' entry"):
        resolve_templates(str(path))
    path.write_text("classes = [\n")
    with pytest.raises(ConfigError, match="not a Python file"):
        resolve_classnames(str(path))
    path.write_text("classes = ['a', 'b']\ntemplates = ['a {}.']\n")  # module-level names work too
    assert resolve_classnames(str(path)) == ("a", "b") and resolve_templates(str(path)) == ("a {}.",)


def test_cleanclip_imagenet_folder_layout(tmp_path):
    """CleanCLIP's validation folder: labels.csv + images/ + classes.py, named once for both lists."""
    folder = tmp_path / "ImageNet1K" / "validation"
    _tree(folder, {"images": ["v1.png", "v2.png"]})
    (folder / "labels.csv").write_text("image,label\nimages/v1.png,1\nimages/v2.png,0\n")
    (folder / "classes.py").write_text(CLASSES_PY)
    section = {"name": "labels_csv", "path": str(folder), "classnames": str(folder / "classes.py"),
               "templates": str(folder / "classes.py")}
    ds = EVAL_DATASETS.build(section, "data.eval", image_size=8)
    assert ds.classnames == ("tench", "banana") and ds.templates[0] == "a bad photo of a {}."
    assert ds.labels.tolist() == [1, 0] and ds.load_images([0, 1]).shape == (2, 3, 8, 8)
    assert find_target(ds.classnames, "banana") == 1


def test_evaluator_finds_the_banana_folder(tmp_path):
    from clipbackdoor.eval.runner import Evaluator
    from clipbackdoor.poison import ATTACKS

    root = _tree(tmp_path / "set", {"apple": ["a.png"], "banana": ["b.png"], "cherry": ["c.png"]})
    ds = ImageFolderClassification(str(root), templates=["a photo of a {}."], image_size=8)
    attack = ATTACKS.build({"name": "badnet", "target": "banana"}, "attack")
    assert Evaluator(ds, tokenizer=None, attack=attack).target == 1


def test_validate_reports_missing_and_corrupt_images(tmp_path):
    root = _tree(tmp_path / "set", {"cat": ["a.png", "b.png"], "dog": ["c.png"]})
    (root / "dog" / "c.png").write_bytes(b"truncated")
    ds = ImageFolderClassification(str(root), templates=["{}"])
    assert ds.validate() == {"rows": 3, "usable": 3, "skipped": {}, "examples": []}
    result = ds.validate(decode=True, workers=2)
    assert result["usable"] == 2 and result["skipped"] == {"unreadable image": 1}
    assert "dog/c.png" in result["examples"][0]

    (root / "labels.csv").write_text("image,label\ncat/a.png,0\ncat/gone.png,1\n")
    labels = LabelsCsvClassification(str(root), classnames=["cat", "dog"], templates=["{}"])
    result = labels.validate()
    assert result["skipped"] == {"image file not found": 1} and result["usable"] == 1
    assert result["examples"] == [f"{root / 'labels.csv'}: line 3: image file not found: {root / 'cat/gone.png'}"]


def test_synthetic_eval_set_validates_trivially():
    ds = EVAL_DATASETS.build({"name": "synthetic", "num_samples": 10}, "data.eval")
    assert ds.validate(decode=True) == {"rows": 10, "usable": 10, "skipped": {}, "examples": []}


def test_where_names_the_section_in_synthetic_errors():
    with pytest.raises(ConfigError, match=r"^data\.validation \(synthetic\)"):
        DATASETS.build({"name": "synthetic", "num_samples": 10, "difficulty": 3.0}, "data.validation")
