"""Progressive stages at full accelerator speed (issue 9): img/s per stage, with and without batch growth,
and the wall time of a progressive run versus a fixed-size run over the same epochs.

Model code only — synthetic data already on the device, no TensorFlow — so it runs on the
JAX/GPU box. Each stage is one model (dynamic input size: JAX compiles one step per image
size and keeps it) trained with the recipe optimizer (RMSProp + coupled L2 + EMA with
warm-up, lr from the recipe schedule). Step kinds:

  lean   the jitted stateless step (state donated) dispatched back to back; the host reads
         the loss once per K steps (--spe), never per step.
  loop   K steps per host round trip inside one compiled function (`lax.fori_loop`).
  keras  `model.train_on_batch`: Keras' trainer, one host sync per step (the baseline).

The batch-growth rule is the trainer's (`effnet_keras.training.plan.stage_batch_sizes`):
batch x (final size / stage size)^2, rounded down to a multiple of 8, same activation memory.

GPU box (JAX backend, bf16, V2-S, four stages 128 -> 300):
    KERAS_BACKEND=jax python benchmarks/train_step.py --model efficientnetv2-s --sizes 128,300 \\
        --stages 4 --batch 128 --precision bf16 --spe 20 --epoch-images 25600 --json out.jsonl
CPU here (small sizes):
    KERAS_BACKEND=jax python benchmarks/train_step.py --model efficientnetv2-nano --sizes 32,64 \\
        --stages 3 --batch 32 --precision float32 --spe 8 --epoch-images 2048
Targets on one H100: >= 6,000 img/s at 128 px, >= 2,600 img/s at 300 px, progressive <= 0.65x fixed.
"""

import argparse
import json
import os
import platform
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from effnet_keras.training import optim  # noqa: E402
from effnet_keras.training import plan as plan_lib  # noqa: E402
from effnet_keras.models.factory import build_classifier  # noqa: E402
from effnet_keras.training.progressive import ProgressiveSchedule  # noqa: E402

CLASSES = 1000


def device_description():
    if keras.backend.backend() == "jax":
        import jax

        return f"jax {jax.__version__} {jax.devices()[0].device_kind} x{jax.device_count()}"
    return f"{keras.backend.backend()} {platform.processor() or platform.machine()} x{os.cpu_count()}"


def build(name, lr_base=0.016, base_batch=128):
    # The trainer's model: headless at a dynamic input size + the standard head.
    model = build_classifier(name, CLASSES, drop_connect_rate=0.2)
    schedule = optim.RecipeLearningRate(lr_base * base_batch / 256, [(0, 0, 100, 1.0)], total_epochs=350)
    # The recipe's optimizer settings (base.yaml's train section: what make_optimizer reads of a TrainConfig).
    recipe = types.SimpleNamespace(optimizer="rmsprop", ema_decay=0.9999, weight_decay=1e-5, gclip=0.0)
    optimizer = optim.make_optimizer(recipe, schedule)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def synthetic_batch(batch, size):
    """float32 RGB in [0, 255] (what the input pipeline feeds) and one-hot labels, on the device."""
    rng = np.random.default_rng(0)
    images = keras.ops.convert_to_tensor(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    labels = keras.ops.convert_to_tensor(np.eye(CLASSES, dtype="float32")[rng.integers(0, CLASSES, batch)])
    return images, labels


class LeanStepper:
    """`run(k)`: k train steps, one host sync (the last loss) per k steps.

    loop=False: the jitted step dispatched k times back to back (JAX dispatch is asynchronous,
    so the host queues work ahead of the device). loop=True: one compiled call runs
    `lax.fori_loop` over k steps (one compile per image size and k, cached by JAX).
    """

    def __init__(self, model, optimizer, loop=False):
        import jax

        self.loop = loop
        loss_obj = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)

        def loss_fn(trainable, non_trainable, x, y):
            logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            return loss_obj(y, keras.ops.cast(logits, "float32")), non_trainable

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def one_step(state, x, y):
            trainable, non_trainable, opt_vars = state
            (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            return (trainable, non_trainable, opt_vars), loss

        def k_steps(state, x, y, k):
            def body(_, carry):
                return one_step(carry[0], x, y)

            return jax.lax.fori_loop(0, k, body, (state, keras.ops.zeros((), "float32")))

        self.one_step = jax.jit(one_step, donate_argnums=0)
        self.k_steps = jax.jit(k_steps, static_argnums=3, donate_argnums=0)
        self.state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
                      [v.value for v in optimizer.variables])

    def run(self, x, y, k):
        if self.loop:
            self.state, loss = self.k_steps(self.state, x, y, k)
        else:
            for _ in range(k):
                self.state, loss = self.one_step(self.state, x, y)
        return float(loss)  # the one host sync per k steps


class KerasStepper:
    def __init__(self, model, optimizer):
        model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                                                      label_smoothing=0.1))
        self.model = model

    def run(self, x, y, k):
        for _ in range(k):
            loss = self.model.train_on_batch(x, y)
        return float(loss)


def measure_stage(stepper, size, batch, steps, spe):
    """Run `steps` steps (rounded up to whole host round trips) at one size and batch.

    -> (compile seconds, steady img/s, wall seconds). The first round trip traces and
    compiles the step for this size; the steady rate excludes it.
    """
    x, y = synthetic_batch(batch, size)
    calls = max(2, -(-steps // spe))
    start = time.perf_counter()
    stepper.run(x, y, spe)
    first = time.perf_counter() - start
    for _ in range(calls - 1):
        loss = stepper.run(x, y, spe)
    wall = time.perf_counter() - start
    if not np.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss} at {size} px, batch {batch}")
    per_step = (wall - first) / ((calls - 1) * spe)
    return max(0.0, first - spe * per_step), batch / per_step, wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnetv2-s")
    parser.add_argument("--sizes", default="128,300", help="first,last stage image size")
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128, help="base (final-stage) batch")
    parser.add_argument("--max-batch", type=int, default=None, help="cap on a grown batch")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "float32"])
    parser.add_argument("--spe", type=int, default=20, help="steps per host round trip (lean step)")
    parser.add_argument("--step", default="lean,loop", help="comma list of: lean (jitted step dispatched back to "
                        "back), loop (k steps in one compiled fori_loop), keras (train_on_batch)")
    parser.add_argument("--epoch-images", type=int, default=25600, help="images per synthetic epoch")
    parser.add_argument("--epochs", type=int, default=None, help="total epochs (default: one per stage)")
    parser.add_argument("--json", default=None, help="append JSON lines here too")
    args = parser.parse_args(argv)

    policy = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16", "float32": "float32"}[args.precision]
    keras.mixed_precision.set_global_policy(policy)
    start_size, final_size = (int(s) for s in args.sizes.split(","))
    epochs = args.epochs or args.stages
    schedule = ProgressiveSchedule(args.stages, epochs, (start_size, final_size))
    grown = plan_lib.stage_batch_sizes(schedule.stages, args.batch, replicas=1, growth=True, cap=args.max_batch)
    steps_kinds = args.step.split(",")
    unknown = set(steps_kinds) - {"lean", "loop", "keras"}
    if unknown:
        raise SystemExit(f"--step: unknown {sorted(unknown)}; use lean, loop, keras")
    device = device_description()
    lines = []

    def emit(record):
        record.update(model=args.model, precision=args.precision, device=device, backend=keras.backend.backend())
        print(json.dumps(record), flush=True)
        lines.append(record)

    for kind in steps_kinds:
        spe = 1 if kind == "keras" else args.spe
        # Progressive run (batch growth), then the same stages at the base batch, then fixed size.
        runs = {"progressive_growth": list(zip(schedule.stages, grown)),
                "progressive_fixed_batch": [(s, args.batch) for s in schedule.stages],
                "fixed_size": [(schedule.stages[-1], args.batch)]}
        wall, steady = {}, {}
        for run_name, stages in runs.items():
            model, optimizer = build(args.model, base_batch=args.batch)
            stepper = KerasStepper(model, optimizer) if kind == "keras" else LeanStepper(model, optimizer, kind == "loop")
            total = steady_total = 0.0
            for stage, batch in stages:
                stage_epochs = stage.end_epoch - stage.start_epoch if run_name != "fixed_size" else epochs
                steps = max(spe, args.epoch_images // batch * stage_epochs)
                compile_s, img_s, seconds = measure_stage(stepper, stage.image_size, batch, steps, spe)
                total += seconds
                steady_total += steps * batch / img_s
                emit({"run": run_name, "step": kind, "spe": spe, "stage": stage.index, "size": stage.image_size,
                      "batch": batch, "steps": steps, "img_per_s": round(img_s, 1),
                      "compile_s": round(compile_s, 2), "stage_seconds": round(seconds, 2)})
            wall[run_name], steady[run_name] = total, steady_total
        emit({"run": "summary", "step": kind, "spe": spe, "epochs": epochs, "epoch_images": args.epoch_images,
              **{f"{k}_seconds": round(v, 2) for k, v in wall.items()},
              "growth_vs_fixed_size": round(wall["progressive_growth"] / wall["fixed_size"], 3),
              "fixed_batch_vs_fixed_size": round(wall["progressive_fixed_batch"] / wall["fixed_size"], 3),
              # Without the one compile per image size: the ratio a long run converges to.
              **{f"{k}_steady_seconds": round(v, 2) for k, v in steady.items()},
              "growth_vs_fixed_size_steady": round(steady["progressive_growth"] / steady["fixed_size"], 3)})
    if args.json:
        with open(args.json, "a") as f:
            for record in lines:
                f.write(json.dumps(record) + "\n")
    return lines


if __name__ == "__main__":
    main()
