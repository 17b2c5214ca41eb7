from setuptools import find_packages
from setuptools import setup

setup(
    name="effnet-keras",
    version="0.1.0",
    description="EfficientNet, EfficientNetV2 and CoAtNet for Keras 3: build, train, export, fine-tune.",
    long_description=open("README.md", encoding="utf8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["effnet_keras", "effnet_keras.*", "hub_export", "hub_export.*"]),
    py_modules=["main"],
    include_package_data=True,
    package_data={"": ["*.yaml", "*.json"]},
    install_requires=[
        "tensorflow~=2.21.0",
        "keras>=3.15",
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
    entry_points={"console_scripts": ["effnet-convert=effnet_keras.convert:main"]},
)
