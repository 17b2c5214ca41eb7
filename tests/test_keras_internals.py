"""Private Keras API is used in one module only, and training refuses Keras versions it was not checked on."""

import importlib
import io
import pathlib
import re
import subprocess
import sys
import tokenize

import keras
import pytest

from effnet_keras import _keras_internals

ROOT = pathlib.Path(__file__).resolve().parents[1]
INTERNALS = ROOT / "effnet_keras" / "_keras_internals.py"
# Private Keras names the package uses (through _keras_internals) or must not reach for directly.
PRIVATE_NAMES = (
    "_flatten_layers", "_seed_generators", "_symbolic_build", "_maybe_symbolic_build", "_trainable_variables",
    "_model_variables_moving_average", "_update_model_variables_moving_average", "_run_through_graph",
    "_keras_history", "_get_seed_generator", "_get_shear_matrix", "_get_translation_matrix",
    "_compute_crop_bounds", "_transform_images", "_tracker", "_layers", "_backend",
)
# A private hook overridden by a method can only live in the subclass: its `def` and the
# `super()` call to the parent's version are allowed there (the name is checked by check_private_hooks).
OVERRIDES = {
    "effnet_keras/training/optim.py": {"_update_model_variables_moving_average"},
    "effnet_keras/data/fast_layers.py": {"_transform_images"},
}


def _code(text):
    """The source without its comments (a comment may name a Keras internal it explains; code may not)."""
    lines = text.splitlines(keepends=True)
    for token in reversed(list(tokenize.generate_tokens(io.StringIO(text).readline))):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            lines[row - 1] = lines[row - 1][:col] + lines[row - 1][token.end[1]:]
    return "".join(lines)


def _sources():
    for package in ("effnet_keras", "hub_export"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path != INTERNALS:
                yield path.relative_to(ROOT).as_posix(), _code(path.read_text())


def test_only_the_internals_module_touches_private_keras():
    offenders = []
    for name, text in _sources():
        if "keras.src" in text:
            offenders.append(f"{name}: keras.src")
        for private in PRIVATE_NAMES:
            for match in re.finditer(rf"(?<![\w]){re.escape(private)}\b", text):
                line = text[text.rfind("\n", 0, match.start()) + 1: text.find("\n", match.end())]
                if private in OVERRIDES.get(name, ()) and (
                        f"def {private}(" in line or f"super().{private}(" in line):
                    continue
                if f".{private}" in line or f"def {private}(" in line or f'"{private}"' in line:
                    offenders.append(f"{name}: {line.strip()}")
        # Our own runtime-rate attribute belongs to layers/drop.py (attach/detach/runtime_rate).
        if name != "effnet_keras/layers/drop.py" and "._runtime_rate" in text:
            offenders.append(f"{name}: ._runtime_rate")
    assert not offenders, "private Keras use outside effnet_keras/_keras_internals.py:\n" + "\n".join(offenders)


def test_internals_module_imports_without_tensorflow():
    code = ("import sys; import effnet_keras._keras_internals as k; k.check_keras_version(); "
            "k.check_private_hooks(); assert 'tensorflow' not in sys.modules, 'imported tensorflow'")
    env = {"KERAS_BACKEND": "numpy", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("version", ["3.14.2", "3.16.0", "3.16.0rc1", "4.0.0", "2.15.0"])
def test_check_keras_version_refuses_unchecked_versions(monkeypatch, version):
    monkeypatch.setattr(keras, "__version__", version)
    with pytest.raises(ImportError) as error:
        _keras_internals.check_keras_version()
    message = str(error.value)
    assert "\n" not in message
    assert message == (
        f"effnet_keras.training supports Keras >=3.15,<3.16 (its training loop uses Keras internals checked on "
        f"those versions); found keras {version}. Install keras~=3.15.0, or use the model builders only "
        "(effnet_keras without .training), which work on any Keras 3."
    )


@pytest.mark.parametrize("version", ["3.15.0", "3.15.1", "3.15.2.dev20250101"])
def test_check_keras_version_accepts_checked_versions(monkeypatch, version):
    monkeypatch.setattr(keras, "__version__", version)
    _keras_internals.check_keras_version()


def test_training_import_fails_on_an_unchecked_keras(monkeypatch):
    import effnet_keras.training as training

    monkeypatch.setattr(keras, "__version__", "3.16.0")
    with pytest.raises(ImportError, match="found keras 3.16.0"):
        importlib.reload(training)
    monkeypatch.setattr(keras, "__version__", "3.15.1")
    importlib.reload(training)


def test_private_hooks_exist_and_a_missing_one_fails_loudly(monkeypatch):
    _keras_internals.check_private_hooks()
    monkeypatch.setattr(_keras_internals, "OPTIMIZER_EMA_HOOK", "_renamed_ema_hook")
    with pytest.raises(RuntimeError, match="_renamed_ema_hook"):
        _keras_internals.check_private_hooks()
