"""The public API: every name in geounet.__all__ resolves to the documented callable."""

from __future__ import annotations

import importlib
import pkgutil

import geounet


def test_public_names_are_not_shadowed_by_submodules() -> None:
    # Importing every submodule sets package attributes named after them; none may replace a
    # public function (e.g. a module geounet/predict.py would shadow geounet.predict()).
    for info in pkgutil.walk_packages(geounet.__path__, "geounet."):
        if ".cli" not in info.name and not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    for name in geounet.__all__:
        value = getattr(geounet, name)
        assert not type(value).__name__ == "module", f"geounet.{name} is a module"
    assert callable(geounet.predict) and callable(geounet.segment) and callable(geounet.vectorize)
