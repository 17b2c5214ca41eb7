"""Parameter and multiply-add counts, so the paper tables can be checked by anyone.

MACs are counted analytically from each layer's input/output shapes at the
requested image size: convolutions, depthwise convolutions and dense layers
(the same convention as the reference numbers: V2-S 8.37 B at 384). A custom
layer with other matrix work (attention) reports its own by defining
`count_macs(input_shapes, output_shape) -> int`.
"""

import math

import keras
import numpy as np

from effnet_keras import _keras_internals as keras_internals


def _prod(values):
    return int(math.prod(int(v) for v in values))


def layer_macs(layer, input_shapes, output_shape):
    """Multiply-adds of one layer call with the given (batch-free) shapes."""
    if hasattr(layer, "count_macs"):
        return int(layer.count_macs(input_shapes, output_shape))
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return _prod(output_shape[:-1]) * int(output_shape[-1]) * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        cin = int(input_shapes[0][-1]) // layer.groups
        return _prod(output_shape) * kh * kw * cin
    if isinstance(layer, keras.layers.Dense):
        return _prod(output_shape) * int(input_shapes[0][-1])
    if isinstance(layer, keras.Model):
        return _graph_macs(layer, input_shapes)
    return 0


def _graph_macs(model, input_shapes):
    """Walk a Functional graph symbolically (no weights touched, no compute)."""
    total = [0]

    def wrap(op):
        def run(*args, **kwargs):
            flat = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
            out = op.compute_output_spec(*args, **kwargs)
            out_first = keras.tree.flatten(out)[0]
            total[0] += layer_macs(op, [tuple(t.shape[1:]) for t in flat], tuple(out_first.shape[1:]))
            return out

        return run

    inputs = [keras.KerasTensor((1,) + tuple(shape)) for shape in input_shapes]
    keras_internals.run_through_graph(model, inputs, wrap)
    return total[0]


def model_stats(model, image_size=None):
    """-> dict(params, trainable_params, non_trainable_params, macs, image_size).

    `image_size`: int or (height, width); default the model's static input size.
    """
    params = int(model.count_params())
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    shape = tuple(model.inputs[0].shape[1:])
    if image_size is not None:
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if shape[0] is not None and (shape[0], shape[1]) != (height, width) and _has_flatten_head(model):
            raise ValueError(f"{model.name} has a fixed-size head; it cannot be counted at {image_size}.")
        shape = (height, width, shape[2])
    if shape[0] is None or shape[1] is None:
        raise ValueError(
            f"{model.name} has a dynamic input size {shape}; pass `image_size=` to count multiply-adds."
        )
    macs = _graph_macs(model, [shape])
    return {
        "params": params,
        "trainable_params": trainable,
        "non_trainable_params": params - trainable,
        "macs": int(macs),
        "image_size": (int(shape[0]), int(shape[1])),
    }


def _has_flatten_head(model):
    return any(isinstance(layer, keras.layers.Flatten) for layer in model.layers)
