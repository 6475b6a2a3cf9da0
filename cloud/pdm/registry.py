"""A model registry that is just a directory, so a model can be audited, copied and rolled back with ``ls``.

Layout: ``ROOT/<name>/<version>/model.joblib`` + ``meta.json`` (metrics, the training data's SHA-256, the
parameters, library versions, when), and ``ROOT/<name>/active`` holding the version in service. Versions
are never overwritten: a retrain adds one, ``activate`` moves the pointer (back, too). The pointer is
replaced atomically, so a reader sees the old or the new version, never half of one.

Loading unpickles the model: only load a registry you trust (it is code, as any pickled estimator is).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn

from cloud.pdm.model import RulModel

MODEL_FILE = "model.joblib"
META_FILE = "meta.json"
ACTIVE_FILE = "active"
_VERSION = re.compile(r"^v(\d{4,})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class ModelRegistry:
    """Versions of named models under one directory, one of them active per name."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _dir(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ValueError(f"model name {name!r}: use letters, digits, '.', '_' or '-'")
        return self.root / name

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / ACTIVE_FILE).is_file())

    def versions(self, name: str) -> list[str]:
        d = self._dir(name)
        if not d.is_dir():
            return []
        return sorted((p.name for p in d.iterdir() if p.is_dir() and _VERSION.match(p.name)),
                      key=lambda v: int(v[1:]))

    def register(self, name: str, model: RulModel, *, metrics: dict[str, Any], data_sha256: str,
                 data_file: str = "", activate: bool = True) -> str:
        """Store a new version (the next number; never overwrites) and, by default, make it active."""
        d = self._dir(name)
        d.mkdir(parents=True, exist_ok=True)
        existing = self.versions(name)
        number = int(existing[-1][1:]) + 1 if existing else 1
        while True:  # another trainer may take the same number first: mkdir is the lock
            version = f"v{number:04d}"
            try:
                (d / version).mkdir()
                break
            except FileExistsError:
                number += 1
        vdir = d / version
        joblib.dump(model, vdir / MODEL_FILE)
        meta = {"name": name, "version": version, "created": datetime.now(UTC).isoformat(),
                "metrics": metrics, "data": {"file": data_file, "sha256": data_sha256},
                "params": model.params.to_dict(),
                "libraries": {"scikit-learn": sklearn.__version__, "numpy": np.__version__}}
        _write_atomic(vdir / META_FILE, json.dumps(meta, indent=1, default=float) + "\n")
        if activate:
            self.activate(name, version)
        return version

    def activate(self, name: str, version: str) -> None:
        if version not in self.versions(name):
            raise LookupError(f"model {name}: no version {version} (have: {', '.join(self.versions(name)) or 'none'})")
        _write_atomic(self._dir(name) / ACTIVE_FILE, version + "\n")

    def active(self, name: str) -> str | None:
        p = self._dir(name) / ACTIVE_FILE
        return p.read_text().strip() if p.is_file() else None

    def _version_dir(self, name: str, version: str | None) -> Path:
        version = version or self.active(name)
        if version is None:
            raise LookupError(f"model {name}: nothing registered under {self.root}")
        vdir = self._dir(name) / version
        if not (vdir / MODEL_FILE).is_file():
            raise LookupError(f"model {name}: version {version} has no {MODEL_FILE} in {vdir}")
        return vdir

    def meta(self, name: str, version: str | None = None) -> dict[str, Any]:
        return json.loads((self._version_dir(name, version) / META_FILE).read_text())

    def load(self, name: str, version: str | None = None) -> RulModel:
        """The given version, or the active one."""
        return load_model_dir(self._version_dir(name, version))


def load_model_dir(vdir: Path | str) -> RulModel:
    model = joblib.load(Path(vdir) / MODEL_FILE)
    if not isinstance(model, RulModel):
        raise TypeError(f"{vdir}: {MODEL_FILE} holds a {type(model).__name__}, not a RulModel")
    return model


def resolve(path: Path | str, hint: str | None = None) -> Path:
    """The version directory meant by ``path``: a version directory itself, a model's directory (its active
    version), or a registry root (the model named ``hint``, e.g. FD002 from test_FD002.txt, or its only one)."""
    p = Path(path)
    if (p / MODEL_FILE).is_file():
        return p
    if (p / ACTIVE_FILE).is_file():
        return ModelRegistry(p.parent)._version_dir(p.name, None)
    reg = ModelRegistry(p)
    names = reg.names()
    if hint in names:
        return reg._version_dir(hint, None)
    if len(names) == 1:
        return reg._version_dir(names[0], None)
    if not names:
        raise LookupError(f"{p}: not a model version, a model or a registry with any active model")
    raise LookupError(f"{p}: holds models {', '.join(names)}; name one (e.g. {p / names[0]})")
