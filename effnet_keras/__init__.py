"""effnet-keras: EfficientNet, EfficientNetV2 and CoAtNet for Keras 3.

Importing this package never imports TensorFlow: the models run on the
TensorFlow, JAX and torch backends. Data, training and export live in
TF-only subpackages that import TensorFlow when used.
"""

from effnet_keras.features import feature_extractor
from effnet_keras.features import feature_layers
from effnet_keras.layers import StochasticDepth
from effnet_keras.models.coatnet import CoAtNet
from effnet_keras.models.coatnet import CoAtNet0
from effnet_keras.models.coatnet import CoAtNet1
from effnet_keras.models.coatnet import CoAtNet2
from effnet_keras.models.coatnet import CoAtNet3
from effnet_keras.models.coatnet import CoAtNet4
from effnet_keras.models.coatnet import CoAtNet5
from effnet_keras.models.coatnet import CoAtNet6
from effnet_keras.models.coatnet import CoAtNet7
from effnet_keras.models.efficientnet import EfficientNet
from effnet_keras.models.efficientnet import EfficientNetB0
from effnet_keras.models.efficientnet import EfficientNetB1
from effnet_keras.models.efficientnet import EfficientNetB2
from effnet_keras.models.efficientnet import EfficientNetB3
from effnet_keras.models.efficientnet import EfficientNetB4
from effnet_keras.models.efficientnet import EfficientNetB5
from effnet_keras.models.efficientnet import EfficientNetB6
from effnet_keras.models.efficientnet import EfficientNetB7
from effnet_keras.models.efficientnet import EfficientNetB8
from effnet_keras.models.efficientnet import EfficientNetL2
from effnet_keras.models.efficientnet import compound_scaling
from effnet_keras.models.efficientnet_v2 import EfficientNetV2B0
from effnet_keras.models.efficientnet_v2 import EfficientNetV2B1
from effnet_keras.models.efficientnet_v2 import EfficientNetV2B2
from effnet_keras.models.efficientnet_v2 import EfficientNetV2B3
from effnet_keras.models.efficientnet_v2 import EfficientNetV2L
from effnet_keras.models.efficientnet_v2 import EfficientNetV2M
from effnet_keras.models.efficientnet_v2 import EfficientNetV2Nano
from effnet_keras.models.efficientnet_v2 import EfficientNetV2S
from effnet_keras.models.efficientnet_v2 import EfficientNetV2XL
from effnet_keras.models.factory import build_classifier
from effnet_keras.models.registry import get_model
from effnet_keras.models.registry import get_spec
from effnet_keras.models.registry import list_models
from effnet_keras.models.registry import register_model
from effnet_keras.stats import model_stats

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
