"""automl (EfficientNetV2) and tensorflow/tpu (EfficientNet V1) TF checkpoints -> our EfficientNets.

The released archives (`efficientnetv2-s-21k.tgz`, `advprop/efficientnet-b0.tar.gz`, ...)
hold a name-based TF checkpoint whose variables live under the model's scope:

    <scope>/stem/conv2d/kernel                 <scope>/stem/tpu_batch_normalization/gamma ...
    <scope>/blocks_<n>/conv2d/kernel           first 1x1 (expansion) or fused kxk conv; with
                                               expansion 1 it is the block's only/project conv
    <scope>/blocks_<n>/depthwise_conv2d/depthwise_kernel
    <scope>/blocks_<n>/se/conv2d/{kernel,bias}, .../se/conv2d_1/{kernel,bias}
    <scope>/blocks_<n>/conv2d_1/kernel         project conv (when there is an expansion)
    <scope>/blocks_<n>/tpu_batch_normalization[_1,_2]/...   BNs in call order
    <scope>/head/conv2d/kernel, <scope>/head/tpu_batch_normalization/..., <scope>/head/dense/{kernel,bias}

Training checkpoints also hold `<var>/ExponentialMovingAverage` copies (the weights the
papers evaluate): those are preferred when present. TF conv/depthwise/dense layouts equal
Keras', so values are copied as they are. Reading a TF checkpoint needs TensorFlow.
"""

import os
import re
import tarfile
import tempfile

from effnet_keras.weights import files as weights_files  # `files` is a loop name below
from effnet_keras.weights import layout

BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")
EMA_SUFFIX = "/ExponentialMovingAverage"
BN_NAMES = ("tpu_batch_normalization", "batch_normalization")

# Block kind, expands? -> our role -> the checkpoint layer inside `blocks_<n>` (BNs by call order).
BLOCK_NAMES = {
    ("mbconv", True): {"expand_conv": "conv2d", "expand_bn": 0, "dwconv": "depthwise_conv2d", "bn": 1,
                       "project_conv": "conv2d_1", "project_bn": 2},
    ("mbconv", False): {"dwconv": "depthwise_conv2d", "bn": 0, "project_conv": "conv2d", "project_bn": 1},
    ("fused", True): {"expand_conv": "conv2d", "expand_bn": 0, "project_conv": "conv2d_1", "project_bn": 1},
    ("fused", False): {"project_conv": "conv2d", "project_bn": 0},
}


def find_checkpoint(src, workdir=None):
    """A checkpoint prefix from a `.tar.gz`/`.tgz` archive, a directory, or a prefix itself."""
    src = os.fspath(src)
    if os.path.isfile(src) and (src.endswith((".tar.gz", ".tgz", ".tar"))):
        workdir = workdir or tempfile.mkdtemp(prefix="effnet_ckpt_")
        tar_errors = (tarfile.TarError, EOFError, OSError)  # truncated download / not a tar: WeightsFileError
        with weights_files.reading(src, expected=weights_files.TF_CHECKPOINT, only=tar_errors):
            with tarfile.open(src) as archive:
                archive.extractall(workdir, filter="data")
        return find_checkpoint(workdir)
    if os.path.exists(src + ".index"):
        return src
    if os.path.isdir(src):
        indexes = []
        for root, _, files in os.walk(src):
            indexes += [os.path.join(root, f[: -len(".index")]) for f in files if f.endswith(".index")]
        if len(indexes) == 1:
            return indexes[0]
        if indexes:
            # Several checkpoints (training dir): the newest by step number, else by mtime.
            def step(prefix):
                numbers = re.findall(r"\d+", os.path.basename(prefix))
                return (int(numbers[-1]) if numbers else -1, os.path.getmtime(prefix + ".index"))

            return max(indexes, key=step)
    raise ValueError(
        f"No TF checkpoint at {src!r}: expected a .tar.gz/.tgz archive, a directory holding "
        "`<prefix>.index` + `<prefix>.data-*`, or such a prefix."
    )


def read_checkpoint(src):
    """{variable name: np.ndarray} of a TF checkpoint (archive, directory or prefix)."""
    try:
        import tensorflow as tf
    except ImportError as err:
        raise ImportError("Reading automl / tensorflow/tpu TF checkpoints needs TensorFlow.") from err
    with tempfile.TemporaryDirectory(prefix="effnet_ckpt_") as workdir:
        prefix = find_checkpoint(src, workdir)
        with weights_files.reading(src, expected=weights_files.TF_CHECKPOINT, only=(tf.errors.OpError, ValueError)):
            reader = tf.train.load_checkpoint(prefix)  # damaged index / data shards: WeightsFileError
            return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def model_scope(variables):
    """The scope the checkpoint's model lives under (`efficientnetv2-s`, `efficientnet-b0`, ...)."""
    scopes = {m.group(1) for name in variables for m in [re.match(r"^(.*)/stem/conv2d/kernel$", name)] if m}
    if len(scopes) != 1:
        raise ValueError(
            f"Not an automl / tensorflow/tpu EfficientNet checkpoint: expected one '<scope>/stem/conv2d/kernel' "
            f"variable, found scopes {sorted(scopes)}."
        )
    return scopes.pop()


def convert_automl_checkpoint(variables, model, *, prefer_ema=True):
    """{our layer name: [arrays in Keras weight order]} for `model` from checkpoint `variables` (pure:
    `model` is only read, for its parts and blocks)."""
    scope = model_scope(variables)

    def get(name):
        full = f"{scope}/{name}"
        ema = full + EMA_SUFFIX
        key = ema if prefer_ema and ema in variables else full
        if key not in variables:
            raise ValueError(f"checkpoint has no variable {full!r} (scope {scope!r}): does the model match?")
        return variables[key]

    bn_name = next((b for b in BN_NAMES if f"{scope}/stem/{b}/gamma" in variables), BN_NAMES[0])

    def bn(where, number=0):
        name = f"{where}/{bn_name}" + (f"_{number}" if number else "")
        return [get(f"{name}/{v}") for v in BN_VARS]

    out = {}
    roles = layout.stem_and_head(model)
    out[roles["stem_conv"]] = [get("stem/conv2d/kernel")]
    out[roles["stem_bn"]] = bn("stem")
    blocks = layout.efficientnet_blocks(model)
    available = {int(m.group(1)) for name in variables for m in [re.match(rf"^{re.escape(scope)}/blocks_(\d+)/", name)] if m}
    if available and max(available) + 1 != len(blocks):
        raise ValueError(
            f"checkpoint scope {scope!r} has {max(available) + 1} blocks, model {model.name!r} has {len(blocks)}: "
            "another model size?"
        )
    for block in blocks:
        where = f"blocks_{block.index}"
        for role, ckpt_name in BLOCK_NAMES[(block.kind, block.expands)].items():
            ours = block.layers[role]
            if isinstance(ckpt_name, int):
                out[ours] = bn(where, ckpt_name)
            elif role == "dwconv":
                out[ours] = [get(f"{where}/{ckpt_name}/depthwise_kernel")]
            else:
                out[ours] = [get(f"{where}/{ckpt_name}/kernel")]
                if len(model.get_layer(ours).weights) == 2:  # a conv with bias
                    out[ours].append(get(f"{where}/{ckpt_name}/bias"))
        for role, ckpt_name in (("se_reduce", "se/conv2d"), ("se_expand", "se/conv2d_1")):
            if role in block.layers:
                out[block.layers[role]] = [get(f"{where}/{ckpt_name}/kernel"), get(f"{where}/{ckpt_name}/bias")]
    out[roles["top_conv"]] = [get("head/conv2d/kernel")]
    out[roles["top_bn"]] = bn("head")
    if f"{scope}/head/dense/kernel" in variables:  # the assigner leaves it out for a headless model
        out[roles["logits"]] = [get("head/dense/kernel"), get("head/dense/bias")]
    return out
