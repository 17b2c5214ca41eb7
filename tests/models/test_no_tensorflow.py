"""The model code must run where TensorFlow is not installed (the JAX GPU box)."""

import os
import subprocess
import sys
import textwrap

# Not marked `backend`: the subprocess already runs the JAX backend, so CI's JAX rerun would repeat it.

BLOCK_TF = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError(f"blocked import of {name}: model code must not need TensorFlow")
            return None

    sys.meta_path.insert(0, BlockTensorFlow())
    """
)


def test_import_and_build_without_tensorflow():
    code = BLOCK_TF + textwrap.dedent(
        """
        import numpy as np
        import effnet_keras
        model = effnet_keras.get_model("efficientnetv2-nano", classes=3)
        out = model(np.zeros((1, 64, 64, 3), "float32"))
        stats = effnet_keras.model_stats(model)
        feats = effnet_keras.feature_extractor(effnet_keras.EfficientNetB0(include_top=False))
        assert "tensorflow" not in sys.modules
        print("OK", tuple(out.shape), stats["params"])
        """
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK (1, 3) 169555" in result.stdout
