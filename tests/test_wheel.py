"""The wheel is the product: install it into a new virtualenv and run its console scripts from an
empty folder, as a user would (no checkout on sys.path, no `main.py`, configs from the package).

The wheel is $EFFNET_WHEEL (.ci/run builds it once and tests it), else built here from the checkout
these tests sit in. The new venv gets the wheel with `--no-deps`; its dependencies (TensorFlow etc.)
come from the environment running the tests through a `.pth` line, after the venv's own
site-packages, so effnet_keras itself can only come from the wheel. That the dependency list is
complete is what .ci/run checks: it installs the same wheel with its dependencies into a venv it
creates afresh and runs this whole suite there.
"""

import glob
import json
import os
import re
import site
import subprocess
import sys
import sysconfig

import pytest

pytestmark = pytest.mark.slow

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A few steps of the digits demo at 32 px; the demo's own recipe otherwise (stages, EMA, export).
FEW_STEPS = ("train.epochs=2,train.image_size=32,eval.image_size=32,data.digits_image_size=32,"
             "train.progressive.num_stages=2,train.progressive.start_image_size=24,train.max_steps=6,"
             "train.steps_per_execution=2")


def _run(cmd, cwd, timeout=600, env=None):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {})))
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    given = os.environ.get("EFFNET_WHEEL")
    if given:
        assert os.path.isfile(given), f"EFFNET_WHEEL={given} is not a file"
        return given
    if not os.path.exists(os.path.join(CHECKOUT, "setup.py")):
        pytest.fail("No wheel to test: set EFFNET_WHEEL to a built effnet_keras wheel, or run the tests from a "
                    "checkout (setup.py next to tests/).")
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), CHECKOUT], cwd=CHECKOUT)
    (path,) = glob.glob(str(out / "effnet_keras-*.whl"))
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", str(root)], cwd=str(root))
    python = str(root / "bin" / "python")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=str(root))
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=str(root)).stdout.strip()
    parents = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if os.path.isdir(p)]
    with open(os.path.join(purelib, "zz_test_dependencies.pth"), "w") as f:
        f.write("\n".join(dict.fromkeys(parents)) + "\n")
    return root


def test_wheel_contents(wheel):
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "main.py" not in names, "the wheel must not install a top-level `main` module"
    for required in ("effnet_keras/configs/base.yaml", "effnet_keras/configs/recipes/digits_demo.yaml",
                     "effnet_keras/configs/datasets/imagenet.yaml", "effnet_keras/weights/registry.json",
                     "effnet_keras/cli/train.py", "effnet_keras/export/savedmodel.py", "hub_export/__main__.py",
                     "effnet_keras/labels/imagenet1k.txt", "effnet_keras/labels/imagenet21k.txt"):
        assert required in names, f"{required} missing from {os.path.basename(wheel)}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in ("effnet-train", "effnet-export", "effnet-cam", "effnet-convert", "effnet-predict"):
        assert f"{script} =" in text


def test_base_install_is_models_weights_predict(wheel):
    """A JAX / torch user who installs the wheel without extras gets no TensorFlow; [train] brings it
    as a range (a TPU VM's own 2.16+ satisfies it), [train-tpu] everything but it."""
    import zipfile

    archive = zipfile.ZipFile(wheel)
    metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = sorted(r.split(";")[0].replace(" ", "") for r in requires if "extra ==" not in r)
    assert base == ["h5py", "keras>=3.0", "numpy", "pillow", "pyyaml"], base
    def extra(name):
        return sorted(r.split(";")[0].replace(" ", "") for r in requires if f'extra == "{name}"' in r)
    assert "tensorflow>=2.16" in extra("train") and "keras<3.16,>=3.15" in extra("train"), extra("train")
    names = {re.split(r"[<>=~!]", r)[0] for r in extra("train-tpu")}
    assert "tensorflow" not in names and "tensorflow-datasets" in names, extra("train-tpu")


def test_console_scripts_from_an_empty_folder(venv, tmp_path):
    bin_dir = venv / "bin"
    work = tmp_path / "empty"
    work.mkdir()
    where = _run([str(bin_dir / "python"), "-c", "import effnet_keras, importlib.util; print(effnet_keras.__file__); "
                  "print(importlib.util.find_spec('main'))"], cwd=str(work)).stdout.split()
    assert where[0].startswith(str(venv)), f"effnet_keras imported from {where[0]}, not the wheel in {venv}"
    assert where[1] == "None", "a top-level `main` module is importable from the installed wheel"

    train = _run([str(bin_dir / "effnet-train"), f"--hparam_str={FEW_STEPS}", "--verbose=0"], cwd=str(work))
    summary = json.loads(train.stdout[train.stdout.index("{"): train.stdout.index("\n}") + 2])
    run_dir = work / "runs" / "efficientnetv2-nano-digits"
    assert summary["model_dir"] == str(run_dir)
    assert [s[0] for s in summary["stages"]] == [24, 32]
    assert 0.0 <= summary["eval"]["top1"] <= 1.0
    assert os.path.exists(run_dir / "ema.weights.h5") and os.path.exists(run_dir / "config.yaml")
    assert os.path.exists(os.path.join(summary["export"], "saved_model.pb"))
    for noise in ("oneDNN", "cuInit", "cuda drivers", "Sharding callback", "Epoch 1/1"):  # quiet start, our lines
        assert noise not in train.stdout + train.stderr, f"{noise!r} in effnet-train's output"
    assert (run_dir / "labels.txt").read_text().split() == [str(d) for d in range(10)]

    export = _run([str(bin_dir / "effnet-export"), f"--model_dir={run_dir}", "--export_dir=cls",
                   "--kind=classification"], cwd=str(work))
    result = json.loads(export.stdout[export.stdout.index("{"):])
    assert result["num_outputs"] == 10 and result["max_abs_diff"] <= 1e-5
    assert os.path.exists(work / "cls" / "saved_model.pb")
    # Nothing but the run and the export appeared in the user's folder.
    assert sorted(os.listdir(work)) == ["cls", "runs"]

    from PIL import Image

    image = tmp_path / "seven.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(image)
    predicted = _run([str(bin_dir / "effnet-predict"), "--export_dir=cls", "--image_size=64", "--top_k=3", "--json",
                      str(image)], cwd=str(work))
    top = json.loads(predicted.stdout)[0]
    names = [entry["name"] for entry in top["predictions"]]
    assert len(names) == 3 and set(names) <= {str(d) for d in range(10)}, top  # the run's labels.txt travelled

    usage = _run([str(bin_dir / "effnet-convert"), "--help"], cwd=str(work)).stdout
    assert usage.startswith("usage: effnet-convert")
    usage = _run([str(bin_dir / "effnet-cam"), "--help"], cwd=str(work)).stdout
    assert usage.startswith("usage: effnet-cam")
