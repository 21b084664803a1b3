"""fden_tf: Plug-in Factorization for Latent Representation Disentanglement (FDEN) in TensorFlow 2 / Keras 3."""

from setuptools import find_packages, setup

setup(
    name="fden_tf",
    version="0.1.0",
    description="FDEN: disentangle the latent space of a frozen invertible network (TF 2 / Keras 3)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fden_tf", "fden_tf.*"]),
    python_requires=">=3.11,<3.12",
    install_requires=[
        "tensorflow==2.21.0",
        "keras==3.15.1",
        "tensorflow-datasets==4.9.10",
        # tensorflow-datasets imports importlib_resources (dataset_builder.py) but declares it only for
        # Python < 3.9, and etils 1.15.0's [epath] extra does not bring it: without it every
        # download_and_prepare / tfds.load fails with ModuleNotFoundError (issue 16).
        "importlib_resources==6.5.2",
        "scipy==1.17.1",  # scipy.io.loadmat: Oxford Flowers 102's imagelabels.mat (fden_tf/data/flowers.py)
        "absl-py==2.5.1",
        "numpy==2.4.6",
        "matplotlib==3.11.2",
        "pillow==13.0.0",
        "scikit-learn==1.9.1",
        "tensorboard==2.21.0",
        "tensorflow-serving-api==2.21.0",
    ],
    # pytest-xdist: the suite runs on two or more processes (pytest.ini), which halves its wall time on two
    # cores: much of a test's time is single-threaded tracing of tf.functions.
    extras_require={"test": ["pytest==9.2.0", "pytest-xdist==3.8.0"]},
)
