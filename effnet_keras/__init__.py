"""effnet-keras: EfficientNet, EfficientNetV2 and CoAtNet for Keras 3.

Importing this package never imports TensorFlow: the models run on the
TensorFlow, JAX and torch backends. Data, training and export live in
TF-only subpackages that import TensorFlow when used.
"""

from effnet_keras.cli import startup as _startup

if _startup.running_our_command():  # effnet-train & co.: TF is imported below, through keras
    _startup.quiet_tensorflow_startup()

from effnet_keras.features import feature_extractor  # noqa: E402
from effnet_keras.features import feature_layers  # noqa: E402
from effnet_keras.labels import decode_predictions  # noqa: E402
from effnet_keras.layers import StochasticDepth  # noqa: E402
from effnet_keras.models.coatnet import CoAtNet  # noqa: E402
from effnet_keras.models.coatnet import CoAtNet0  # noqa: E402
from effnet_keras.models.coatnet import CoAtNet1  # noqa: E402
from effnet_keras.models.coatnet import CoAtNet2  # noqa: E402
from effnet_keras.models.coatnet import CoAtNet3  # noqa: E402
from effnet_keras.models.coatnet import CoAtNet4  # noqa: E402
from effnet_keras.models.coatnet import CoAtNet5  # noqa: E402
from effnet_keras.models.coatnet import CoAtNet6  # noqa: E402
from effnet_keras.models.coatnet import CoAtNet7  # noqa: E402
from effnet_keras.models.efficientnet import EfficientNet  # noqa: E402
from effnet_keras.models.efficientnet import EfficientNetB0  # noqa: E402
from effnet_keras.models.efficientnet import EfficientNetB1  # noqa: E402
from effnet_keras.models.efficientnet import EfficientNetB2  # noqa: E402
from effnet_keras.models.efficientnet import EfficientNetB3  # noqa: E402
from effnet_keras.models.efficientnet import EfficientNetB4  # noqa: E402
from effnet_keras.models.efficientnet import EfficientNetB5  # noqa: E402
from effnet_keras.models.efficientnet import EfficientNetB6  # noqa: E402
from effnet_keras.models.efficientnet import EfficientNetB7  # noqa: E402
from effnet_keras.models.efficientnet import EfficientNetB8  # noqa: E402
from effnet_keras.models.efficientnet import EfficientNetL2  # noqa: E402
from effnet_keras.models.efficientnet import compound_scaling  # noqa: E402
from effnet_keras.models.efficientnet_lite import EfficientNetLite0  # noqa: E402
from effnet_keras.models.efficientnet_lite import EfficientNetLite1  # noqa: E402
from effnet_keras.models.efficientnet_lite import EfficientNetLite2  # noqa: E402
from effnet_keras.models.efficientnet_lite import EfficientNetLite3  # noqa: E402
from effnet_keras.models.efficientnet_lite import EfficientNetLite4  # noqa: E402
from effnet_keras.models.efficientnet_v2 import EfficientNetV2B0  # noqa: E402
from effnet_keras.models.efficientnet_v2 import EfficientNetV2B1  # noqa: E402
from effnet_keras.models.efficientnet_v2 import EfficientNetV2B2  # noqa: E402
from effnet_keras.models.efficientnet_v2 import EfficientNetV2B3  # noqa: E402
from effnet_keras.models.efficientnet_v2 import EfficientNetV2L  # noqa: E402
from effnet_keras.models.efficientnet_v2 import EfficientNetV2M  # noqa: E402
from effnet_keras.models.efficientnet_v2 import EfficientNetV2Nano  # noqa: E402
from effnet_keras.models.efficientnet_v2 import EfficientNetV2S  # noqa: E402
from effnet_keras.models.efficientnet_v2 import EfficientNetV2XL  # noqa: E402
from effnet_keras.models.factory import build_classifier  # noqa: E402
from effnet_keras.models.registry import get_model  # noqa: E402
from effnet_keras.models.registry import get_spec  # noqa: E402
from effnet_keras.models.registry import list_models  # noqa: E402
from effnet_keras.models.registry import register_model  # noqa: E402
from effnet_keras.preprocessing import preprocess_input  # noqa: E402
from effnet_keras.stats import model_stats  # noqa: E402

__version__ = "0.1.0"

# Regularisation control is training's (effnet_keras.training.regularization); the
# top-level names stay for convenience, imported on first use so that importing the
# models never imports the training package (which checks the Keras version).
_TRAINING_NAMES = ("set_regularization", "enable_runtime_rates", "disable_runtime_rates")


def __getattr__(name):
    if name in _TRAINING_NAMES:
        from effnet_keras.training import regularization

        return getattr(regularization, name)
    raise AttributeError(f"module 'effnet_keras' has no attribute {name!r}")
