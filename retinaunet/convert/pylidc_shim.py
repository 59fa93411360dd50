"""Importing pylidc (the LIDC-IDRI annotation database) on current NumPy and setuptools.

pylidc 0.2.3 imports ``pkg_resources`` (gone from recent setuptools) only to find its own database file,
and uses the aliases ``np.int``, ``np.float`` and ``np.bool`` that NumPy 2 removed. :func:`import_pylidc`
supplies both before the import; nothing else changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path

__all__ = ["import_pylidc"]

_ALIASES = {"int": int, "float": float, "bool": bool, "object": object}


def _pkg_resources_shim() -> types.ModuleType:
    module = types.ModuleType("pkg_resources")

    def resource_filename(package: str, name: str) -> str:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ImportError(f"package {package} not found")
        return str(Path(spec.origin).parent / name)

    module.resource_filename = resource_filename
    return module


def import_pylidc():
    """The ``pylidc`` module, or ImportError saying how to install it."""
    if importlib.util.find_spec("pylidc") is None:
        raise ImportError("pylidc is not installed: pip install 'retinaunet-detection[lidc]' (or pip install pylidc)")
    import numpy as np

    for name, value in _ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        sys.modules["pkg_resources"] = _pkg_resources_shim()
    with warnings.catch_warnings():  # its own deprecation warnings (SQLAlchemy 2, SciPy) are not the user's
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", Warning)
        return importlib.import_module("pylidc")
