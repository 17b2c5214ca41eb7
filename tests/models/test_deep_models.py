"""The deepest models (V2-XL 1251 layers, L2 1211, B8 839) at Python's default recursion limit.

Keras maps a functional graph with a recursive depth-first walk over each layer's
inputs (`keras.src.ops.function._build_map_helper`), so the Python stack it needs
is the longest path that walk takes. Residual adds list the shortcut first, which
keeps that path near #blocks + one block instead of #layers (before: V2-XL needed
a limit of 1022, L2 958, B8 667; now about 160 each). Each check runs in a fresh
interpreter, so pytest's own stack depth and earlier tests don't blur the limit.
"""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(code, timeout):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result.stdout


@pytest.mark.slow
def test_largest_models_need_a_small_recursion_limit():
    """Regression guard: every deep model (and XL's from_config / clone) builds at limit 400.

    Before the shortcut-first adds, V2-S already needed ~410 and XL 1022; now ~160. The
    builds are stateless (no weight values), the graph is the same.
    """
    out = _run(
        """
        import sys
        import keras
        import effnet_keras

        sys.setrecursionlimit(400)
        built = {}
        with keras.StatelessScope():
            for name in ("efficientnetv2-xl", "efficientnet-l2", "efficientnet-b8", "coatnet-4"):
                model = effnet_keras.get_model(name, input_shape=(64, 64, 3))
                built[name] = len(model.layers)
            xl = effnet_keras.EfficientNetV2XL(include_top=False, pooling="avg", input_shape=(64, 64, 3))
            again = keras.Model.from_config(xl.get_config())
            clone = keras.models.clone_model(xl)
            names = [l.name for l in xl.layers[1:]]  # (the input layer's auto name differs)
            assert [l.name for l in again.layers[1:]] == names == [l.name for l in clone.layers[1:]]
        assert sys.getrecursionlimit() == 400
        print("BUILT", built)
        """,
        timeout=600,
    )
    assert "'efficientnetv2-xl': 1251" in out and "'efficientnet-l2': 1211" in out, out


@pytest.mark.slow
def test_v2_xl_round_trip_at_default_recursion_limit(tmp_path):
    """V2-XL at 64 px (random weights): every builder option, .weights.h5, .keras,
    from_config (keras.Model and the model's class), clone_model, all exact. (B8 and L2 build at
    limit 400 above and with weights in test_param_counts.py.)"""
    out = _run(
        f"""
        import gc, os, sys
        assert sys.getrecursionlimit() == 1000, sys.getrecursionlimit()
        import keras
        import numpy as np
        import effnet_keras

        def np_(x):
            return keras.ops.convert_to_numpy(x)

        tmp = {str(tmp_path)!r}
        keras.utils.set_random_seed(0)
        images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
        model = effnet_keras.EfficientNetV2XL(input_shape=(64, 64, 3), classes=10, classifier_activation=None)
        assert len(model.layers) == 1251 and "block6af_add" in [l.name for l in model.layers]
        expected = np_(model(images))
        assert expected.shape == (2, 10) and np.isfinite(expected).all()

        path = os.path.join(tmp, "xl.weights.h5")
        model.save_weights(path)
        other = keras.Model.from_config(model.get_config())
        assert [l.name for l in other.layers] == [l.name for l in model.layers]
        assert not np.array_equal(np_(other(images)), expected)  # fresh random weights
        other.load_weights(path)
        np.testing.assert_array_equal(np_(other(images)), expected)
        del other; gc.collect()

        path = os.path.join(tmp, "xl.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_array_equal(np_(loaded(images)), expected)
        del loaded; gc.collect()

        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        np.testing.assert_array_equal(np_(clone(images)), expected)
        del clone; gc.collect()

        again = type(model).from_config(model.get_config())
        assert again.count_params() == model.count_params()
        del again, model; gc.collect()

        # keras.applications-style options: graph only (no weight values needed).
        with keras.StatelessScope():
            cases = {{
                "avg": dict(include_top=False, pooling="avg", input_shape=(64, 64, 3)),
                "max": dict(include_top=False, pooling="max", input_shape=(64, 64, 3)),
                "features": dict(include_top=False, input_shape=(None, None, 3)),
                "gray": dict(include_top=False, pooling="avg", input_shape=(64, 64, 1)),
                "tensor": dict(input_tensor=keras.Input((96, 96, 3)), classes=3, classifier_activation="softmax"),
            }}
            shapes = {{k: tuple(effnet_keras.EfficientNetV2XL(**kw).output.shape) for k, kw in cases.items()}}
        assert shapes == {{"avg": (None, 1280), "max": (None, 1280), "features": (None, None, None, 1280),
                          "gray": (None, 1280), "tensor": (None, 3)}}, shapes

        assert sys.getrecursionlimit() == 1000
        print("DONE")
        """,
        timeout=900,
    )
    assert "DONE" in out, out


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EFFNET_DEEP_HUB_EXPORT"),
                    reason="~6 min on a 2-core CPU (tracing 1251 layers three times); set EFFNET_DEEP_HUB_EXPORT=1")
def test_v2_xl_hub_export_at_default_recursion_limit(tmp_path):
    """The TF-Hub export of V2-XL's graph (narrow widths: same 1251 layers, ~2 M params)."""
    pytest.importorskip("tensorflow")
    out = _run(
        f"""
        import dataclasses, os, sys
        assert sys.getrecursionlimit() == 1000, sys.getrecursionlimit()
        import hub_export
        from effnet_keras.models import efficientnet_v2, mbconv_net

        spec = dataclasses.replace(efficientnet_v2.V2_SPECS["efficientnetv2-xl"], width=0.1, default_name="narrow_xl")
        model = mbconv_net.build_mbconv_net(spec, input_shape=(32, 32, 3), classes=5)
        assert len(model.layers) == 1251
        result = hub_export.export(model, os.path.join({str(tmp_path)!r}, "cls"), kind="classification", image_size=32)
        assert result["num_outputs"] == 5 and result["max_abs_diff"] <= 1e-5, result
        print("EXPORTED")
        """,
        timeout=1200,
    )
    assert "EXPORTED" in out


@pytest.mark.backend
@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnetv2-b0"])
def test_shortcut_first_add_changes_nothing_else(name, monkeypatch):
    """Against the old Add([branch, shortcut]): same layer order (legacy .h5 files load by
    order, endpoints pick the last layer per stride), weights, params; the depth-first
    walk is shallower; outputs are bitwise equal."""
    import keras
    import numpy as np
    from keras import layers

    import effnet_keras
    from effnet_keras.layers import mbconv

    def build():
        keras.utils.set_random_seed(1)
        return effnet_keras.get_model(name, input_shape=(64, 64, 3))

    def dfs_depth(model):
        """Longest stack of Keras' recursive `_build_map_helper` walk, computed iteratively."""
        deepest, seen, stack = 0, set(), [(model.output, 1)]
        while stack:
            tensor, depth = stack.pop()
            node = tensor._keras_history.operation._inbound_nodes[tensor._keras_history.node_index]
            if node in seen:
                continue
            seen.add(node)
            deepest = max(deepest, depth)
            stack.extend((t, depth + 1) for t in reversed(node.input_tensors))  # first input walked first
        return deepest

    new = build()
    monkeypatch.setattr(mbconv, "_residual", lambda x, inputs, drop_connect_rate, schedule_fraction, prefix: layers.Add(
        name=prefix + "add")([mbconv.StochasticDepth(drop_connect_rate, schedule_fraction=schedule_fraction,
                                                     name=prefix + "drop")(x), inputs]))
    old = build()
    assert [l.name for l in new.layers[1:]] == [l.name for l in old.layers[1:]]
    assert [w.path for w in new.weights] == [w.path for w in old.weights]
    assert new.count_params() == old.count_params()
    assert dfs_depth(new) < dfs_depth(old) / 2
    old.set_weights(new.get_weights())
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(new(images)), keras.ops.convert_to_numpy(old(images)))
