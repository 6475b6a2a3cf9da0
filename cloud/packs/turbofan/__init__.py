"""The turbofan pack: a C-MAPSS engine's type and dashboard panel, and no cloud rules yet.

``assess`` judges nothing (None): remaining-useful-life rules are another issue. The RUL models of
``twin pdm`` (``cloud/pdm``) are trained and evaluated offline; when they run live, they run here.
"""

from __future__ import annotations

from cloud.packs.base import Pack


class TurbofanPack(Pack):
    type_id = "turbofan"
