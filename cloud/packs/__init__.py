"""Packs: what each kind of asset means to the cloud (see README.md beside this file).

``PACKS`` maps an asset type to its pack, the way ``edge.detect.registry.KINDS`` maps a detector kind to its
class: the rule runner, the explain and what-if routes and the dashboard look a kind up here and know nothing
else about it. A pack that is not shipped here is loaded from its folder (``load_pack_dir``; ``TWIN_PACK_DIRS``).
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from cloud.packs.base import Alarm, Assessment, NotRecomputable, Pack, RuleContext, SimulationError
from cloud.packs.person import PersonPack
from cloud.packs.refrigerated_trailer import ReeferPack
from cloud.packs.rotating_machine import MachinePack
from cloud.packs.turbofan import TurbofanPack
from cloud.packs.vessel import VesselPack
from models.catalogue import builtin_types, load_type, register_type

__all__ = ["PACKS", "Alarm", "Assessment", "NotRecomputable", "Pack", "PackError", "RuleContext",
           "SimulationError", "load_pack_dir", "load_pack_dirs", "pack_for", "pack_for_source", "register"]

#: Asset type id -> its pack.
PACKS: dict[str, type[Pack]] = {}
_loaded: dict[Path, type[Pack]] = {}


class PackError(ValueError):
    """A pack folder that cannot be loaded; says which and why (start-up stops on it)."""


def register(pack: type[Pack], folder: Path | None = None) -> type[Pack]:
    """Make ``pack`` the one for its ``type_id`` (a later registration for the same type replaces it)."""
    pack.folder = folder or Path(inspect.getfile(pack)).resolve().parent
    PACKS[pack.type_id] = pack
    return pack


for _pack in (ReeferPack, MachinePack, TurbofanPack, VesselPack, PersonPack):
    register(_pack)


def pack_for(type_id: str | None) -> type[Pack] | None:
    return PACKS.get(type_id) if type_id else None


def pack_for_source(source: object) -> type[Pack] | None:
    """The pack whose alerts name ``source`` in their evidence (how ``explain`` finds who recomputes them)."""
    return next((p for p in PACKS.values() if source in p.sources), None)


def load_pack_dir(path: str | Path) -> type[Pack]:
    """Load a pack from its folder: ``__init__.py`` defines exactly one ``Pack`` subclass; ``type.yaml``, when
    present, is its asset type, registered in the catalogue beside the shipped ones. Loading a folder again
    returns the pack already loaded."""
    folder = Path(path).resolve()
    if folder in _loaded:
        return _loaded[folder]
    init = folder / "__init__.py"
    if not init.is_file():
        raise PackError(f"pack folder {folder}: no __init__.py (it defines the pack's Pack subclass)")
    type_file = folder / "type.yaml"
    if type_file.is_file():
        try:
            register_type(load_type(type_file))
        except (OSError, ValueError) as exc:
            raise PackError(f"{type_file}: {exc}") from None
    name = "twin_packs." + re.sub(r"\W", "_", folder.name)
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None:
        raise PackError(f"pack folder {folder}: {init} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, Pack) and v.__module__ == name]
    if len(found) != 1:
        raise PackError(f"pack folder {folder}: its __init__.py must define exactly one Pack subclass, "
                        f"found {len(found)}")
    pack = found[0]
    if getattr(pack, "type_id", None) not in builtin_types():
        raise PackError(f"pack folder {folder}: asset type {getattr(pack, 'type_id', None)!r} is neither shipped "
                        "(models/types) nor in the folder's type.yaml")
    _loaded[folder] = register(pack, folder)
    return pack


def load_pack_dirs(paths: Iterable[str | Path]) -> list[type[Pack]]:
    return [load_pack_dir(p) for p in paths]
