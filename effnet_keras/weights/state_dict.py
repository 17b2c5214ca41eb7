"""Read a PyTorch state dict (timm checkpoints) into NumPy arrays, for every timm converter."""

import os

import numpy as np

from effnet_keras.weights import files
from effnet_keras.weights import torch_file


def read_state_dict(path):
    """{name: np.ndarray} from a `.safetensors` file (needs `safetensors`) or a torch `.pth/.pt/.bin`.

    Torch files are read without torch, by a restricted unpickler that runs no code from the
    file (`torch_file.read_torch_file`); their floating-point tensors come back as float32.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"No such state-dict file: {path!r}")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        with files.reading(path, expected=files.TIMM):  # truncated / not a safetensors file
            return dict(load_file(path))
    if path.endswith((".pth", ".pt", ".bin")):
        state = torch_file.read_torch_file(path)
        return {k: v.astype(np.float32, copy=False) if v.dtype.kind == "f" else v for k, v in state.items()}
    raise ValueError(f"Cannot tell the format of {path!r}: expected .safetensors, .pth, .pt or .bin")
