"""Make the timm EfficientNet golden fixtures in tests/fixtures/ (needs torch + timm; the tests do not).

    python tools/make_weight_fixtures.py [--out-dir tests/fixtures]

Writes
  timm_tf_efficientnet_tiny.safetensors     timm `tf_efficientnet_b0` generator at width 0.25,
                                            depth 0.34 (every block kind of V1: DepthwiseSeparable,
                                            InvertedResidual with 3x3 and 5x5 kernels), 10 classes
  timm_tf_efficientnetv2_tiny.safetensors   timm `tf_efficientnetv2_b0` generator at the same
                                            scale (ConvBnAct, EdgeResidual, InvertedResidual) =
                                            our `efficientnetv2-nano`, 10 classes
  timm_efficientnet_tiny_outputs.npz        `image` (uint8 NHWC, non-square 64x96), `x` (the
                                            normalised float input both sides get), `logits_v1`,
                                            `logits_v2` (timm eval mode, float64)

Weights are timm's random init with every BN's statistics and affine terms randomised, so a
BN mapped to the wrong slot cannot pass. Both use TF "SAME" padding and BN eps 1e-3 (the `tf_`
variants). Runs on CPU in seconds.
"""

import argparse
import os

import numpy as np
import torch
from safetensors.torch import save_file
from timm.models import efficientnet as timm_efficientnet

SCALE = dict(channel_multiplier=0.25, depth_multiplier=0.34, bn_eps=1e-3, pad_type="same", num_classes=10)


def build(generator, variant, seed):
    torch.manual_seed(seed)
    model = generator(variant, pretrained=False, **SCALE)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return model.eval().double()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    x = (image.astype(np.float64) / 255.0 - 0.5) / 0.5
    outputs = {"image": image, "x": x.astype(np.float32)}
    for tag, generator, variant in (("v1", timm_efficientnet._gen_efficientnet, "tf_efficientnet_b0"),
                                    ("v2", timm_efficientnet._gen_efficientnetv2_base, "tf_efficientnetv2_b0")):
        model = build(generator, variant, seed=1 if tag == "v1" else 2)
        with torch.no_grad():
            logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
        outputs[f"logits_{tag}"] = logits.numpy()
        state = {k: v.float().contiguous() for k, v in model.state_dict().items()}
        name = "timm_tf_efficientnet_tiny" if tag == "v1" else "timm_tf_efficientnetv2_tiny"
        save_file(state, os.path.join(args.out_dir, name + ".safetensors"))
        print(f"{name}: {sum(v.numel() for k, v in state.items() if 'num_batches' not in k)} values, "
              f"logits[0,:3]={outputs[f'logits_{tag}'][0, :3]}")
    np.savez_compressed(os.path.join(args.out_dir, "timm_efficientnet_tiny_outputs.npz"), **outputs)


if __name__ == "__main__":
    main()
