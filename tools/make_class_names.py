"""Regenerate effnet_keras/labels/imagenet1k.txt and imagenet21k.txt (the shipped ImageNet class names).

    python tools/make_class_names.py                 # fetches the timm wheel with pip (no deps)
    python tools/make_class_names.py --info_dir DIR  # DIR = an unpacked timm/data/_info/

Source: the `timm` wheel on PyPI (Apache-2.0; pinned below), its `timm/data/_info/` files:
- imagenet_synsets.txt          ImageNet-1k WordNet ids in class-index order (= the sorted ids; also
                                tensorflow_datasets' imagenet2012/labels.txt, checked when installed);
- imagenet21k_goog_synsets.txt  Google's ImageNet-21k (21,843 classes) in class-index order: the
                                head of the automl EfficientNetV2 `imagenet21k` checkpoints;
- imagenet22k_synsets.txt       fall11 ImageNet-22k (21,841 classes): the Google list without two
                                ids (checked here; effnet_keras.labels derives it from imagenet21k.txt);
- imagenet_synset_to_lemma.txt  WordNet lemmas per id ("tench, Tinca tinca").
A class's name is its first lemma ("tench", "golden retriever"), as keras.applications'
imagenet_class_index.json has it (with spaces instead of underscores); the WordNet id is the class id.
Output lines: `wnid<TAB>name`, one per class, in class-index order.
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import zipfile

TIMM = "timm==1.0.31"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "effnet_keras", "labels")
FALL11_ABSENT = ("n03931044", "n09859684")  # keep in step with effnet_keras/labels/__init__.py
FILES = ("imagenet_synsets.txt", "imagenet21k_goog_synsets.txt", "imagenet22k_synsets.txt",
         "imagenet_synset_to_lemma.txt")


def _fetch_info(tmp):
    subprocess.run([sys.executable, "-m", "pip", "download", TIMM, "--no-deps", "-q", "-d", tmp], check=True)
    (wheel,) = glob.glob(os.path.join(tmp, "timm-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        for name in FILES:
            zf.extract(f"timm/data/_info/{name}", tmp)
    return os.path.join(tmp, "timm", "data", "_info")


def _lines(path):
    with open(path, encoding="utf8") as f:
        return [line.strip() for line in f if line.strip()]


def _write(path, ids, lemmas):
    names = [lemmas[w].split(",")[0].strip() for w in ids]
    assert all(names) and not any("\t" in n for n in names)
    with open(path, "w", encoding="utf8", newline="\n") as f:
        f.writelines(f"{w}\t{n}\n" for w, n in zip(ids, names))
    print(f"wrote {path}: {len(ids)} classes")
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--info_dir", default=None, help="an unpacked timm/data/_info/ (default: pip download)")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        info = args.info_dir or _fetch_info(tmp)
        one = _lines(os.path.join(info, "imagenet_synsets.txt"))
        goog = _lines(os.path.join(info, "imagenet21k_goog_synsets.txt"))
        fall11 = _lines(os.path.join(info, "imagenet22k_synsets.txt"))
        lemmas = dict(line.split("\t", 1) for line in _lines(os.path.join(info, "imagenet_synset_to_lemma.txt")))
    assert len(one) == 1000 and one == sorted(one), "ImageNet-1k: 1000 sorted WordNet ids"
    assert len(goog) == 21843 and len(set(goog)) == 21843
    assert [w for w in goog if w not in FALL11_ABSENT] == fall11, "fall11 22k = Google 21k less two ids"
    try:  # a second, independent source for the 1k order when tensorflow_datasets is installed
        import importlib.resources

        tfds_ids = importlib.resources.files("tensorflow_datasets").joinpath(
            "datasets/imagenet2012/labels.txt").read_text().split()
        assert tfds_ids == one, "tensorflow_datasets' imagenet2012 labels disagree with timm's"
    except (ImportError, FileNotFoundError):
        pass
    os.makedirs(args.out, exist_ok=True)
    names = _write(os.path.join(args.out, "imagenet1k.txt"), one, lemmas)
    assert (names[0], names[1], names[207], names[999]) == ("tench", "goldfish", "golden retriever", "toilet tissue")
    _write(os.path.join(args.out, "imagenet21k.txt"), goog, lemmas)
    return 0


if __name__ == "__main__":
    sys.exit(main())
