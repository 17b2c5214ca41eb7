"""See what a model looks at: Grad-CAM heatmaps and PNG overlays, on any Keras backend.

    heatmaps = effnet_keras.explain.class_activation_map(model, images)   # [batch, H, W] in [0, 1]
    effnet-cam cat.jpg dog.png --model_name=efficientnetv2-s --weights=imagenet   (effnet_keras/cli/cam.py)
"""

from effnet_keras.explain.gradcam import class_activation_map
from effnet_keras.explain.gradcam import default_feature_layer
from effnet_keras.explain.overlay import blend
from effnet_keras.explain.overlay import grid
from effnet_keras.explain.overlay import overlay_panel

__all__ = ["class_activation_map", "default_feature_layer", "blend", "grid", "overlay_panel"]
