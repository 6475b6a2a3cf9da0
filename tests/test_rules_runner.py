"""The rule runner's scheduling on a real platform (SQLite registry, embedded store): an asset whose assessment
raises (a rule bug, a locked database) is assessed again on the next cycle until it succeeds, and the assets
after it in the same cycle are assessed all the same. Before, the exception left the cycle: that asset and the
rest were only looked at again when new data came, which for an engine's last cycle is never."""

from __future__ import annotations

import time

from sqlalchemy import select

from cloud.packs.base import Alarm, Assessment, Pack
from cloud.platform import Platform
from cloud.registry import Alert, Asset, Tenant
from cloud.rules.runner import RuleRunner
from cloud.settings import CloudSettings
from models.wire import PointSeries, TelemetryBatch


class Flaky(Pack):
    """A pack whose assessment of an asset raises the first ``fails[asset]`` times, then raises an alarm."""

    type_id = "flaky"

    def __init__(self, platform, rules=None) -> None:
        super().__init__(platform, rules)
        self.fails = {"asset-b": 2}
        self.calls: list[tuple[str, int | None]] = []

    def assess(self, tenant: str, asset: str, now_ns: int) -> Assessment | None:
        self.calls.append((asset, self.rules.written_from(tenant, asset)))  # where its new data starts
        if self.fails.get(asset, 0) > 0:
            self.fails[asset] -= 1
            raise RuntimeError("database is locked")
        return Assessment(alarms=[Alarm("flaky-rule", "high", f"{asset} judged", {"source": "flaky"}, now_ns)])


def test_a_failing_assessment_is_retried_next_cycle_and_spares_the_other_assets(tmp_path):
    p = Platform.open(CloudSettings(database_url=f"sqlite:///{tmp_path / 'r.sqlite'}", store="embedded",
                                    embedded_path=str(tmp_path / "ts.sqlite")))
    assets = ("asset-a", "asset-b", "asset-c")
    with p.registry.session() as s:
        s.add(Tenant(id="acme"))
        s.flush()
        s.add_all(Asset(tenant="acme", id=a, type="flaky") for a in assets)
    runner = RuleRunner(p, interval_s=3600)
    pack = runner._packs["flaky"] = Flaky(p, runner)
    now = time.time_ns()
    runner.on_written([TelemetryBatch(tenant="acme", gateway="gw", seq=1, series=[
        PointSeries(asset=a, point="x", t_ns=[now - 5], values=[1.0], quality=[0]) for a in assets])])

    assert runner.assess_now(now) == 2  # a and c, although b (between them) raised
    assert (pack.calls, runner.counters["rules_errors"]) == ([(a, now - 5) for a in assets], 1)
    assert runner.assess_now(now) == 0  # b again, with no new data: it raises a second time
    assert runner.assess_now(now) == 1  # and now succeeds
    assert runner.assess_now(now) == 0  # nothing is left to do
    # each retry reads back to where the data it failed on started
    assert pack.calls == [*[(a, now - 5) for a in assets], ("asset-b", now - 5), ("asset-b", now - 5)]
    assert runner.counters["rules_errors"] == 2
    with p.registry.session() as s:
        assert sorted(s.scalars(select(Alert.asset).where(Alert.rule == "flaky-rule"))) == list(assets)
    p.close()


class Timed(Pack):
    """A pack whose assessment of ``asset-a`` (first by name) takes 0.3 s, of ``asset-c`` 0.1 s, the others none."""

    type_id = "timed"

    def __init__(self, platform, rules=None) -> None:
        super().__init__(platform, rules)
        self.calls: list[str] = []

    def assess(self, tenant: str, asset: str, now_ns: int) -> Assessment | None:
        self.calls.append(asset)
        time.sleep({"asset-a": 0.3, "asset-c": 0.1}.get(asset, 0.0))
        return Assessment()


def test_a_cycle_assesses_the_quickest_assets_first_and_new_ones_last(tmp_path):
    """A slow assessment (an engine's first RUL backfill) must not hold up a quick, urgent one (a trailer's
    excursion forecast): a cycle goes by how long each asset took last time, never-assessed ones last."""
    p = Platform.open(CloudSettings(database_url=f"sqlite:///{tmp_path / 'r.sqlite'}", store="embedded",
                                    embedded_path=str(tmp_path / "ts.sqlite")))
    with p.registry.session() as s:
        s.add(Tenant(id="acme"))
        s.flush()
        s.add_all(Asset(tenant="acme", id=a, type="timed") for a in ("asset-a", "asset-b", "asset-c", "asset-d"))
    runner = RuleRunner(p, interval_s=3600)
    pack = runner._packs["timed"] = Timed(p, runner)
    now = time.time_ns()

    def written(*assets: str) -> None:
        runner.on_written([TelemetryBatch(tenant="acme", gateway="gw", seq=1, series=[
            PointSeries(asset=a, point="x", t_ns=[now], values=[1.0], quality=[0]) for a in assets])])

    written("asset-a", "asset-b")
    runner.assess_now(now)
    written("asset-a", "asset-b", "asset-c")
    runner.assess_now(now)
    written("asset-d", "asset-a", "asset-c", "asset-b")
    runner.assess_now(now)
    assert pack.calls == ["asset-a", "asset-b", "asset-b", "asset-a", "asset-c", "asset-b", "asset-c", "asset-a",
                          "asset-d"]
    p.close()
