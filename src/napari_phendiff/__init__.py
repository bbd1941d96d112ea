"""napari-phendiff: reveal cell phenotypes by translating microscopy images between conditions (PhenDiff).

>>> import napari_phendiff as pd
>>> model = pd.load_checkpoint("demo")
>>> treated = pd.translate(model, image, source="untreated", target="TNFa")
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-phendiff")  # one place for the version: pyproject.toml
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

# Public API, imported on first use so `import napari_phendiff` (and napari's plugin discovery) stays fast.
_API = {
    "load_checkpoint": "core.models",
    "PhenDiffModel": "core.models.pixel",
    "PixelModel": "core.models.pixel",
    "translate": "core.translate",
    "iter_translate": "core.translate",
    "TranslateEvent": "core.translate",
    "TranslateOptions": "core.options",
    "calibrate": "core.calibrate",
    "translate_morph": "core.explore",
    "translate_samples": "core.explore",
    "measure_translation": "core.explore",
    "reveal": "core.reveal",
    "estimate_translation": "core.estimate",
    "train": "core.training.run",
    "iter_train": "core.training.run",
    "TrainConfig": "core.options",
    "TrainEvent": "core.training.run",
    "read_image": "core.images",
    "write_image": "core.images",
    "simulate_dataset": "core.simulate",
    "simulate_field": "core.simulate",
    "PhenDiffError": "core.errors",
    "DataError": "core.errors",
    "ConfigError": "core.errors",
    "CheckpointError": "core.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
