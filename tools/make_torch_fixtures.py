"""Make the torch-file fixtures in tests/fixtures/ (needs torch; the tests do not).

    python tools/make_torch_fixtures.py

Writes one tiny state dict, saved by `torch.save` in both containers, and what a reader must
return for it:

    torch_zip.pth        zip container (torch >= 1.6 default), wrapped as {"state_dict": ..., "epoch": 3}
    torch_legacy.pth     legacy container (_use_new_zipfile_serialization=False), the bare OrderedDict
    torch_expected.npz   every tensor as NumPy (bfloat16 as float32), same names

The state dict has every dtype the reader keeps, tensors that share one storage (a
transposed view, a slice with a storage offset, a channels-last tensor), 0-d and empty
tensors: what tests/weights/test_torch_file.py checks `read_torch_file` against, exactly.
Runs on any machine with torch, in a second; the files are a few KB.
"""

import collections
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")


def fixture_state_dict():
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    matrix = randn(4, 6)
    state = collections.OrderedDict()
    state["conv.weight"] = randn(3, 2, 2, 2)
    state["conv.weight_channels_last"] = randn(2, 3, 2, 2).to(memory_format=torch.channels_last)
    state["matrix"] = matrix
    state["matrix.t"] = matrix.t()  # same storage, strides (1, 6)
    state["matrix.block"] = matrix[1:3, 2:5]  # same storage, offset 8, strides (6, 1)
    state["half"] = randn(5).half()
    state["bfloat16"] = randn(2, 3).bfloat16()
    state["double"] = randn(3).double()
    state["int64"] = torch.arange(-3, 3)
    state["int32"] = torch.tensor([-(2**31), 0, 2**31 - 1], dtype=torch.int32)
    state["int16"] = torch.tensor([-300, 7], dtype=torch.int16)
    state["int8"] = torch.tensor([-128, 127], dtype=torch.int8)
    state["uint8"] = torch.tensor([0, 255], dtype=torch.uint8)
    state["mask"] = torch.tensor([True, False, True])
    state["bn.num_batches_tracked"] = torch.tensor(7)  # 0-d int64, as BatchNorm keeps it
    state["scalar"] = torch.tensor(1.5)
    state["empty"] = torch.zeros(0, 3)
    return state


def as_numpy(tensor):
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


def main():
    state = fixture_state_dict()
    assert not state["matrix.t"].is_contiguous() and state["matrix.block"].storage_offset() == 8
    torch.save({"state_dict": state, "epoch": 3}, os.path.join(OUT, "torch_zip.pth"))
    torch.save(state, os.path.join(OUT, "torch_legacy.pth"), _use_new_zipfile_serialization=False)
    np.savez(os.path.join(OUT, "torch_expected.npz"), **{name: as_numpy(t) for name, t in state.items()})
    for name in ("torch_zip.pth", "torch_legacy.pth", "torch_expected.npz"):
        print(name, os.path.getsize(os.path.join(OUT, name)), "bytes")


if __name__ == "__main__":
    main()
