from setuptools import find_packages
from setuptools import setup

setup(
    name="effnet-keras",
    version="0.1.0",
    description="EfficientNet, EfficientNetV2 and CoAtNet for Keras 3: build, train, export, fine-tune.",
    long_description=open("README.md", encoding="utf8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # main.py stays a checkout convenience; the wheel's jobs are the console scripts below.
    packages=find_packages(include=["effnet_keras", "effnet_keras.*", "hub_export", "hub_export.*"]),
    # The recipes and dataset configs live in the package (read with importlib.resources).
    package_data={"effnet_keras": ["configs/*.yaml", "configs/*/*.yaml", "weights/*.json", "labels/*.txt"]},
    install_requires=[
        "tensorflow~=2.21.0",
        # The training loop uses Keras internals checked on 3.15 only (effnet_keras/_keras_internals.py);
        # CI runs 3.15.x. The model builders alone work on any Keras 3.
        "keras>=3.15,<3.16",
        "absl-py",
        "pyyaml",
        "numpy",
        "h5py",
        "scikit-learn",
        "tensorflow-datasets",
        "pillow",
    ],
    extras_require={
        "hub": ["tensorflow-hub==0.16.1", "tf-keras~=2.21.0", "setuptools<81"],  # hub 0.16 imports pkg_resources
        "convert": ["safetensors"],  # timm .safetensors state dicts (torch only for .pth)
        "test": ["pytest", "jax[cpu]", "safetensors", "tensorflow-hub==0.16.1", "tf-keras~=2.21.0", "setuptools<81", "pillow"],
    },
    entry_points={
        "console_scripts": [
            "effnet-train=effnet_keras.training.cli:main",
            "effnet-export=hub_export.__main__:main",
            "effnet-cam=effnet_keras.explain.__main__:main",
            "effnet-convert=effnet_keras.convert:main",
            "effnet-predict=effnet_keras.predict:main",
        ]
    },
)
