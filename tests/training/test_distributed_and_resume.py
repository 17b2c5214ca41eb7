"""SIGKILL mid-stage + rerun resumes exactly; MirroredStrategy on 2 CPUs tracks one device;
MultiWorkerMirroredStrategy with 2 processes on loopback completes a short run."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
# Two stages (16 px at batch 128 with 4x lr, then 32 px at batch 32), 4 steps per host round trip,
# a checkpoint every 8 steps, deterministic ops.
RESUME_HP = (
    "train.epochs=2,train.batch_size=32,train.image_size=32,eval.image_size=32,train.progressive.num_stages=2,"
    "train.progressive.start_image_size=16,train.steps_per_execution=4,train.checkpoint_every_steps=8,"
    "train.lr_base=0.064,train.lr_warmup_epoch=0.5,train.ema_decay=0.9,data.digits_image_size=32,"
    "data.augment=none,data.crop_area_min=0.5,runtime.deterministic=true"
)


def _main_cmd(model_dir):
    return [sys.executable, "-m", "effnet_keras.cli.train", "--dataset_cfg=digits", f"--model_dir={model_dir}",
            "--mode=train", "--verbose=0", "--verbosity=1", f"--hparam_str={RESUME_HP}"]


def _progress(model_dir):
    """(epoch, step_in_epoch, stage, batch) of the latest checkpoint, or None."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(model_dir)
    if not latest:
        return None
    reader = tf.train.load_checkpoint(latest)
    key = next(k for k in reader.get_variable_to_shape_map() if k.startswith("progress"))
    return tuple(int(v) for v in reader.get_tensor(key))


def _weights(model_dir):
    import h5py

    values = []
    with h5py.File(os.path.join(model_dir, "model.weights.h5")) as f:
        f.visititems(lambda name, obj: values.append(np.array(obj).ravel()) if hasattr(obj, "shape") else None)
    return np.concatenate(values)


def _epoch_records(stderr):
    return [json.loads(m) for m in re.findall(r"epoch record: (\{.*\})", stderr)]


@pytest.mark.slow
def test_sigkill_mid_stage_then_rerun_resumes_and_matches_uninterrupted(tmp_path):
    killed_dir, clean_dir = str(tmp_path / "killed"), str(tmp_path / "clean")
    # The uninterrupted reference runs alongside the one we kill.
    clean = subprocess.Popen(_main_cmd(clean_dir), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    victim = subprocess.Popen(_main_cmd(killed_dir), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and victim.poll() is None:
            progress = _progress(killed_dir)
            if progress and progress[2] == 1 and progress[1] > 0:  # mid-epoch, in stage 1 (the grown-batch stage is done)
                break
            time.sleep(0.05)
        assert victim.poll() is None, "training finished before it could be killed"
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
    epoch, step, stage, batch = _progress(killed_dir)
    assert stage == 1 and batch == 32 and 0 < step < 1437 // 32, (epoch, step, stage, batch)

    resumed = subprocess.run(_main_cmd(killed_dir), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"stage 2/2, epoch {epoch + 1}/2, step {step} in the epoch" in resumed.stderr  # 1-based for people
    assert "Stage 1/2 already complete" in resumed.stderr  # no completed stage is redone
    records = _epoch_records(resumed.stderr)
    assert (records[0]["stage"], records[0]["epoch"], records[0]["steps"]) == (1, epoch, 1437 // 32 - step)
    assert [r["epoch"] for r in records] == list(range(epoch, 2))
    assert _progress(killed_dir)[:3] == (2, 0, 1)

    out, err = clean.communicate(timeout=400)
    assert clean.returncode == 0, err[-3000:]
    # Deterministic ops + per-epoch data seeds + checkpointed optimizer/EMA/RNG state: the resumed
    # run retraces the uninterrupted one.
    np.testing.assert_allclose(_weights(killed_dir), _weights(clean_dir), rtol=1e-5, atol=1e-6)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    from effnet_keras.training import config as config_lib, run as run_lib
    mirrored = lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one = lambda: tf.distribute.OneDeviceStrategy("/cpu:0")
    short = sys.argv[2] + ",train.epochs=1,train.max_steps=10"
    long = sys.argv[2] + ",train.epochs=3"
    runs = (("one", long, one), ("mirrored", long, mirrored), ("mirrored_10", short, mirrored),
            ("mirrored_10_spe4", short + ",train.steps_per_execution=4", mirrored))
    losses = {}
    for name, hp, make_strategy in runs:
        config = config_lib.build_config(model_name="efficientnetv2-nano", dataset_cfg="digits", hparam_str=hp)
        strategy = make_strategy()
        result = run_lib.run(config, mode="train", model_dir=sys.argv[1] + "/" + name, verbose=0, strategy=strategy)
        losses[name] = [h["loss"] for h in result["history"]]
        losses[name + "_replicas"] = strategy.num_replicas_in_sync
    print("LOSSES", json.dumps(losses))
    """
)

# Mean loss over 10 steps, multi-step loop vs one step per call. Measured: 6.5e-5 relative
# (2.62553 vs 2.62536; after 4 steps 1.8e-6, weights up to 9e-5 apart); ~15x margin for another
# CPU's rounding. A rerun of the same graph on the same machine repeats to the bit.
SPE_RTOL = 1e-3


@pytest.mark.slow
def test_mirrored_two_cpus_matches_one_device(tmp_path):
    """MirroredStrategy on 2 logical CPUs computes the same training steps as one device, and the
    trainer's own multi-step loop (steps_per_execution=4 under MirroredStrategy) the same as one step
    per call.

    Same global batch (64 = 2 x 32) and lr, dropout and stochastic depth off. Mirrored vs one device
    stays a loose 3-epoch check: BN statistics are per replica (each replica's 32 images vs one
    device's 64), a legitimately different computation (measured 6-17 % apart). Synchronized BN would
    make them equal, but under MirroredStrategy on 2 CPUs (TF 2.21, Keras 3.15) its all-reduces
    abort with "Shape mismatch in the collective instance", even with Keras' own step.

    The two loops are compared over 10 steps (two executions of 4 and a partial one of 2), not whole
    epochs as before: the two sides are different graphs (two devices with an
    all-reduce vs one; the step inside a while loop vs one step per call), so oneDNN / grappler
    fuse and order float ops differently: after 4 steps the weights already differ by up to 9e-5
    (6e-6 with TF_ENABLE_ONEDNN_OPTS=0; a run of the same graph repeats to the bit). Training
    amplifies that: over 3 epochs (66 steps) the multi-step loop's epoch loss drifted 0.4 %, 1.4 %,
    4.3 % from the single-step one on one machine (another passed at 2 %), so a tolerance on epoch
    losses measured the machine's rounding, not the loop. Over 10 steps the difference stays at
    rounding level (see SPE_RTOL).
    """
    hp = ("train.batch_size=64,train.image_size=24,eval.image_size=24,data.digits_image_size=24,"
          "data.augment=none,data.crop_area_min=1.0,model.dropout_rate=0.0,model.drop_connect_rate=0.0,"
          "train.ema_decay=0.0,train.lr_base=0.01,train.lr_warmup_epoch=0.0,runtime.deterministic=true")
    out = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path), hp], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    losses = json.loads(out.stdout.split("LOSSES", 1)[1])
    assert (losses["one_replicas"], losses["mirrored_replicas"]) == (1, 2)
    print({k: v for k, v in losses.items() if not k.endswith("_replicas")})
    # Same global batch (64 = 2 x 32) and lr; BN statistics are per replica (32 vs 64 images), a
    # different computation: measured mirrored 6-17 % above one device over 3 epochs.
    np.testing.assert_allclose(losses["mirrored"], losses["one"], rtol=0.25)
    # The trainer's own multi-step loop runs the same steps as one step per call (up to rounding).
    np.testing.assert_allclose(losses["mirrored_10_spe4"], losses["mirrored_10"], rtol=SPE_RTOL)
    assert losses["mirrored"][-1] < 0.5 * losses["mirrored"][0]
    assert losses["one"][-1] < losses["one"][0]


WORKER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from effnet_keras.training import config as config_lib, run as run_lib
    cfg = config_lib.build_config(model_name="efficientnetv2-nano", dataset_cfg="digits", hparam_str=sys.argv[2])
    result = run_lib.run(cfg, mode="train", model_dir=sys.argv[1], verbose=0)
    print("RESULT", json.dumps({"steps": [h["steps"] for h in result["history"]],
                                "loss": [h["loss"] for h in result["history"]]}))
    """
)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_two_processes_on_loopback(tmp_path):
    hp = ("runtime.strategy=multi_worker,train.epochs=1,train.max_steps=6,train.batch_size=32,train.image_size=24,"
          "data.digits_image_size=24,data.augment=none,train.steps_per_execution=1,train.checkpoint_every_steps=3")
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    model_dir = str(tmp_path / "mw")
    procs = []
    for index in range(2):
        env = dict(ENV, TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, model_dir, hp], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    results = [json.loads(out.split("RESULT", 1)[1]) for out, _ in outputs]
    assert results[0]["steps"] == results[1]["steps"] == [6]
    assert results[0]["loss"] == pytest.approx(results[1]["loss"])  # one synchronous model
    assert _progress(model_dir)[:2] == (0, 6)  # the chief's checkpoint, in model_dir
    assert not [d for d in os.listdir(model_dir) if d.startswith(".worker")]  # worker 1's copy is cleaned up
