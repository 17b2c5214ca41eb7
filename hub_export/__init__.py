"""Export our models as reusable TF2 SavedModels (TF Hub / Kaggle Models), TFLite, and upload bundles.

    import hub_export
    hub_export.export(model, "out/feature_vector", kind="feature_vector", image_size=224, tflite=True, bundle=True)
    python -m hub_export --model_name=efficientnetv2-b0 --model_dir=runs/x --export_dir=out --kind=feature_vector
"""

from hub_export.api import export  # noqa: F401

__all__ = ["export"]
