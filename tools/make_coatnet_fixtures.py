"""Make the CoAtNet golden fixtures in tests/fixtures/ from timm (needs torch + timm; the tests do not).

    python tools/make_coatnet_fixtures.py [--out-dir tests/fixtures]

Writes
  coatnet_paper_tiny.npz   timm CoAtNet with the paper overrides (stride on the 1x1 conv,
                           max-2 pooling, TF-"same" padding) = our default knobs
  coatnet_timm_tiny.npz    timm's default coatnet_*_224 block config (strided depthwise,
                           avg-2 pooling, PyTorch padding) = downsample="dwconv", pool="avg",
                           padding="symmetric"
  coatnet_timm_param_counts.npz   instantiated parameter counts of timm's coatnet_{0..5}_224

Each tiny fixture is a tiny model of the same structure as coatnet_0_224 (two blocks per
stage, so both strided and plain blocks, a pre-logits head) with random weights -- BN/LN
statistics and affine terms and the relative position tables made large enough to matter --
at a non-square 64x96 input, so a transposed grid or a wrong bias index cannot pass. It
stores: `w/<timm state-dict key>` (float32), `image` (uint8 NHWC, [0, 255]), `logits`
(computed in float64, NCHW input normalised with timm's mean = std = 0.5), `feature_P1..P5`
(NHWC, image 0: stem and stage outputs) and `config` (JSON: our builder's arguments).
Runs on any machine with torch and timm (CPU is enough, a few seconds).
"""

import argparse
import dataclasses
import json
import os

import numpy as np
import timm
import torch
from timm.models import maxxvit

TINY = dict(stem_filters=8, depths=(2, 2, 2, 2), widths=(8, 16, 24, 32), head_dim=8, classes=10)
IMAGE_HW = (64, 96)
FIXTURES = {
    "coatnet_paper_tiny": (
        dict(conv_stride_mode="1x1", conv_pool_type="max2", transformer_pool_type="max2", conv_padding="same"),
        dict(downsample="conv1x1", pool="max", padding="same"),
    ),
    "coatnet_timm_tiny": ({}, dict(downsample="dwconv", pool="avg", padding="symmetric")),
}


def tiny_timm_model(overrides):
    base = maxxvit.model_cfgs["coatnet_0"]  # the paper-like config family: same block classes and head
    cfg = dataclasses.replace(
        base,
        embed_dim=TINY["widths"],
        depths=TINY["depths"],
        stem_width=TINY["stem_filters"],
        head_hidden_size=TINY["widths"][-1],
    )
    return maxxvit.MaxxVit(
        cfg, img_size=IMAGE_HW, num_classes=TINY["classes"], transformer_dim_head=TINY["head_dim"], **overrides
    )


@torch.no_grad()
def randomize(model, generator):
    """Non-trivial values for everything timm initialises to 0/1 (and larger rel-pos tables)."""

    def normal(t, std):
        t.copy_(torch.randn(t.shape, generator=generator) * std)

    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            continue
        if name.endswith("relative_position_bias_table"):
            normal(tensor, 1.0)
        elif name.endswith("running_var") or (name.endswith(".weight") and tensor.ndim == 1):
            tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
        elif name.endswith(("running_mean", ".bias")):
            normal(tensor, 0.2)


def make_fixture(out_path, overrides, keras_knobs, seed):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = tiny_timm_model(overrides).eval()
    randomize(model, generator)
    weights = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items() if v.is_floating_point()}

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(2,) + IMAGE_HW + (3,), dtype=np.uint8)
    x = torch.from_numpy(image.astype(np.float64) / 255.0 - 0.5).div(0.5).permute(0, 3, 1, 2)
    model = model.double()  # float64 reference: the test's float32 error is then all ours
    with torch.no_grad():
        logits = model(x).numpy()
        features = model.forward_intermediates(x, intermediates_only=True)
    arrays = {f"w/{k}": v for k, v in weights.items()}
    for level, feature in enumerate(features, start=1):
        arrays[f"feature_P{level}"] = feature[0].permute(1, 2, 0).numpy().astype(np.float32)
    config = dict(TINY, input_shape=IMAGE_HW + (3,), **keras_knobs, timm_overrides=overrides, timm=timm.__version__)
    np.savez_compressed(out_path, image=image, logits=logits.astype(np.float64), config=json.dumps(config), **arrays)
    print(f"{out_path}: {os.path.getsize(out_path) / 1e3:.0f} kB, {len(weights)} tensors, logits[0,:3]={logits[0, :3]}")


def timm_param_counts(out_path):
    """Parameter counts of the full timm models, built on the meta device (nothing allocated)."""
    names, counts = [], []
    for variant in range(6):
        name = f"coatnet_{variant}_224"
        with torch.device("meta"):
            model = timm.create_model(name)
        names.append(name)
        counts.append(sum(p.numel() for p in model.parameters()))
    np.savez(out_path, names=np.array(names), params=np.array(counts, dtype=np.int64), timm=timm.__version__)
    print(out_path, dict(zip(names, counts)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for seed, (name, (overrides, knobs)) in enumerate(sorted(FIXTURES.items())):
        make_fixture(os.path.join(args.out_dir, name + ".npz"), overrides, knobs, seed)
    timm_param_counts(os.path.join(args.out_dir, "coatnet_timm_param_counts.npz"))


if __name__ == "__main__":
    main()
