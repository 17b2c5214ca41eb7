"""Read a PyTorch state dict (timm checkpoints) into NumPy arrays, for every timm converter."""

import os

from effnet_keras.weights import files


def read_state_dict(path):
    """{name: np.ndarray} from a `.safetensors` file (needs `safetensors`) or a torch `.pth/.pt/.bin` (needs torch)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"No such state-dict file: {path!r}")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        with files.reading(path, expected=files.TIMM):  # truncated / not a safetensors file
            return dict(load_file(path))
    if path.endswith((".pth", ".pt", ".bin")):
        try:
            import torch
        except ImportError as err:  # pragma: no cover - depends on the machine
            raise ImportError(f"Reading {path!r} needs PyTorch; convert it to .safetensors or install torch.") from err
        with files.reading(path, expected=files.TIMM):
            state = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model", "state_dict_ema"):
            if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
                state = state[wrapper]
                break
        return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}
    raise ValueError(f"Cannot tell the format of {path!r}: expected .safetensors, .pth, .pt or .bin")
