"""Train-step and inference throughput: our models vs keras.applications (and timm), same process.

One JSON line per measurement on stdout; `--markdown FILE` also writes a table.
Runs on any Keras backend (set KERAS_BACKEND before launching). On the JAX
backend the train step can also be a single jitted stateless function
(`--step jax`), the lean step the gpu-peers notes measure; `--step keras` is
`train_on_batch` after a default `compile()`, what `model.fit` does per step for a user
(on CPU that is without XLA); `--step keras-xla` compiles with `jit_compile=True`.

CPU here (small sizes):
    python benchmarks/throughput.py --models efficientnet-b0,efficientnetv2-s --size 128 --batch 8
GPU box (no TensorFlow there; JAX backend, bf16):
    KERAS_BACKEND=jax python benchmarks/throughput.py --models efficientnetv2-s --size 300 \
        --batch 128 --precision bf16 --step jax --infer-size 384
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import effnet_keras  # noqa: E402

# Our registry name -> the keras.applications builder of the same network.
KERAS_APPLICATIONS = {
    "efficientnet-b0": "EfficientNetB0",
    "efficientnet-b3": "EfficientNetB3",
    "efficientnetv2-b0": "EfficientNetV2B0",
    "efficientnetv2-s": "EfficientNetV2S",
    "efficientnetv2-m": "EfficientNetV2M",
}
# Our registry name -> timm model name (measured only when torch + timm import).
TIMM = {
    "efficientnet-b0": "tf_efficientnet_b0",
    "efficientnetv2-s": "tf_efficientnetv2_s",
    "efficientnetv2-m": "tf_efficientnetv2_m",
    "coatnet-0": "coatnet_0_224",
}


def device_description():
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return f"jax {jax.__version__} {jax.devices()[0].device_kind}"
    if backend == "torch":
        import torch

        return f"torch {torch.__version__} {'cuda' if torch.cuda.is_available() else 'cpu'}"
    return f"{backend} cpu {platform.processor() or platform.machine()} x{os.cpu_count()}"


def peak_memory_gib():
    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            return stats["peak_bytes_in_use"] / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # host RSS (KiB -> GiB)


def build(impl, name, size, classes=1000):
    shape = (size, size, 3)
    if impl == "ours":
        return effnet_keras.get_model(name, weights=None, input_shape=shape, classes=classes, classifier_activation=None)
    builder = getattr(keras.applications, KERAS_APPLICATIONS[name])
    return builder(weights=None, input_shape=shape, classes=classes, classifier_activation=None)


def _timed(fn, warmup, iters, sync):
    for _ in range(warmup):
        sync(fn())
    start = time.perf_counter()
    for _ in range(iters):
        out = fn()
    sync(out)
    return time.perf_counter() - start


def _sync(x):
    for leaf in keras.tree.flatten(x):
        np.asarray(keras.ops.convert_to_numpy(leaf)).ravel()[:1]
    return x


def train_throughput_keras(model, images, labels, warmup, iters, jit_compile="auto"):
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,  # "auto": compile()'s default, what a user's fit() runs
    )
    seconds = _timed(lambda: model.train_on_batch(images, labels), warmup, iters, _sync)
    return iters * images.shape[0] / seconds


def train_throughput_jax(model, images, labels, warmup, iters):
    """One jitted stateless step (forward, backward, SGD update), state donated."""
    import jax

    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)

    def compute_loss(trainable, non_trainable, x, y):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, logits), non_trainable

    grad_fn = jax.value_and_grad(compute_loss, has_aux=True)

    @jax.jit
    def step(state, x, y):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, (trainable, non_trainable, opt_vars)

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    x, y = jax.device_put(images), jax.device_put(labels)
    holder = {"state": state}

    def run():
        loss, holder["state"] = step(holder["state"], x, y)
        return loss

    seconds = _timed(run, warmup, iters, lambda out: out.block_until_ready())
    return iters * images.shape[0] / seconds


def infer_throughput(model, images, warmup, iters):
    return iters * images.shape[0] / _timed(lambda: model.predict_on_batch(images), warmup, iters, _sync)


def timm_throughput(name, size, batch, warmup, iters, compiled, mode):
    """timm in a child process (benchmarks/timm_peer.py): TF and torch in one process segfault."""
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "timm_peer.py"), TIMM[name],
           str(size), str(batch), str(warmup), str(iters), mode] + (["--compile"] if compiled else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ImportError(f"timm peer failed ({done.returncode}): {tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="efficientnet-b0,efficientnetv2-s")
    parser.add_argument("--impls", default="ours,keras", help="comma list of ours, keras, timm")
    parser.add_argument("--size", type=int, default=128, help="train image size")
    parser.add_argument("--infer-size", type=int, default=None, help="inference size (default --size)")
    parser.add_argument("--native-sizes", action="store_true",
                        help="each model at its recipe sizes (train: V2-S 300, eval: V2-S 384, ...)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--step", choices=["keras", "keras-xla", "jax"], default="keras",
                        help="keras: compile()'s default (no XLA on CPU); keras-xla: jit_compile=True; "
                             "jax: one jitted stateless step")
    parser.add_argument("--modes", default="train,infer")
    parser.add_argument("--timm-compile", default="off", choices=["off", "on", "both"],
                        help="timm peer with torch.compile: off, on, or both rows")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--markdown", default=None, help="also write a markdown table here")
    args = parser.parse_args(argv)

    policy = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[args.precision]
    keras.mixed_precision.set_global_policy(policy)
    if args.step == "jax" and keras.backend.backend() != "jax":
        parser.error(f"--step jax needs KERAS_BACKEND=jax; the backend is {keras.backend.backend()!r}")
    args.timm_compile = {"off": [False], "on": [True], "both": [False, True]}[args.timm_compile]
    impls = args.impls.split(",")
    unknown = set(impls) - {"ours", "keras", "timm"}
    if unknown:
        parser.error(f"unknown --impls {sorted(unknown)}; allowed: ours, keras, timm")
    rng = np.random.default_rng(0)
    rows = []
    for name in args.models.split(","):
        for mode in args.modes.split(","):
            size = args.size if mode == "train" else (args.infer_size or args.size)
            if args.native_sizes:  # the recipe's sizes: train size for training, eval size for inference
                spec = effnet_keras.get_spec(name)
                size = spec.train_size if mode == "train" else spec.default_size
            images = rng.uniform(0, 255, (args.batch, size, size, 3)).astype("float32")
            labels = np.eye(1000, dtype="float32")[rng.integers(0, 1000, args.batch)]
            results, peer_memory = {}, {}
            for impl in impls:
                if impl == "keras" and name not in KERAS_APPLICATIONS:
                    continue
                if impl == "timm":
                    if name not in TIMM:
                        continue
                    for compiled in args.timm_compile:
                        label = "timm_compiled" if compiled else "timm"
                        try:
                            peer = timm_throughput(name, size, args.batch, args.warmup, args.iters, compiled, mode)
                            results[label], peer_memory[label] = peer["img_per_s"], peer["peak_mem_gib"]
                        except ImportError as error:
                            print(json.dumps({"model": name, "impl": label, "skipped": str(error)}), flush=True)
                    continue
                keras.backend.clear_session()
                model = build(impl, name, size)
                if mode == "train":
                    if args.step == "jax":
                        results[impl] = train_throughput_jax(model, images, labels, args.warmup, args.iters)
                    else:
                        results[impl] = train_throughput_keras(model, images, labels, args.warmup, args.iters,
                                                               jit_compile=True if args.step == "keras-xla" else "auto")
                else:
                    results[impl] = infer_throughput(model, images, args.warmup, args.iters)
                del model
            for impl, img_s in results.items():
                row = {
                    "model": name,
                    "impl": impl,
                    "mode": mode,
                    "size": size,
                    "batch": args.batch,
                    "precision": args.precision,
                    "step": args.step if mode == "train" else "predict",
                    "img_per_s": round(img_s, 1),
                    "ratio_vs_keras": round(img_s / results["keras"], 3) if "keras" in results else None,
                    # JAX's peak is process-wide (so far in this run); timm's is per measurement.
                    "peak_mem_gib": (round(peer_memory[impl], 2) if peer_memory.get(impl) is not None else None)
                    if impl.startswith("timm") else round(peak_memory_gib(), 2),
                    "device": device_description(),
                    "keras": keras.__version__,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("| model | impl | mode | size | batch | precision | step | img/s | vs keras.applications |\n")
            f.write("|---|---|---|---|---|---|---|---|---|\n")
            for r in rows:
                f.write(
                    f"| {r['model']} | {r['impl']} | {r['mode']} | {r['size']} | {r['batch']} | {r['precision']} | "
                    f"{r['step']} | {r['img_per_s']:,} | {r['ratio_vs_keras'] or '-'} |\n"
                )
    return rows


if __name__ == "__main__":
    main()
