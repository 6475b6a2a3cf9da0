"""Live cold-chain rules judge each shipment by its own profile, over its own time in the trailer, and judge data
from an outage of days when it arrives: a trailer replayed through the real ingest pipeline (``Ingest.process``
into the embedded store, the rule runner after each tick, as in tests/test_coldchain_scenarios.py) carries one
shipment, then, after a hand-over, another with a different profile; its gateway is offline for two days, during
which the compressor fails."""

from __future__ import annotations

import pytest

from cloud.platform import Platform
from cloud.registry import Asset, Site, Tenant
from cloud.shipments import attach
from simulators.trailer import Trailer, TrailerParams, simulate_fleet
from tests.test_coldchain_scenarios import TENANT, WINDOW_S, Gateway, close, fault, replay

S = 10**9
H = 3600 * S
T0 = 1_748_822_400 * S
EARLY_FAILURE = fault("compressor_failure", 10, 85)  # warms the load above 8 °C for well over 30 min, under 10 h
OUTAGE = (T0 + 30 * H, T0 + 78 * H)  # the gateway is offline two days ...
LATE_FAILURE = fault("compressor_failure", 40, 85)  # ... and the compressor fails inside it
HAND_OVER = T0 + 24 * H


def _load(platform: Platform) -> None:
    """Shipment ``early`` (WHO 30-day refrigerator: 10 h above 8 °C) until the hand-over, then ``late`` (the
    deployment's chilled profile: 30 min above 8 °C) in the same trailer; one lot each, and a second lot on ``late``
    whose product names the WHO profile."""
    with platform.registry.session() as s:
        s.add(Tenant(id=TENANT, name=TENANT))
        s.add_all([Site(tenant=TENANT, id="dc-1"), Site(tenant=TENANT, id="store-7")])
        s.add(Asset(tenant=TENANT, id="trailer-x", type="refrigerated-trailer", gateway="gw-trailer-x",
                    first_seen_ns=T0))
    svc = attach(platform)
    for sid, profile, start, end in (("early", "who-30-day-refrigerator", T0, HAND_OVER),
                                     ("late", "chilled-2-8", HAND_OVER, None)):
        svc.create_shipment(TENANT, "dispatcher", profile=profile, origin_site="dc-1", destination_site="store-7",
                            shipment_id=sid)
        svc.add_leg(TENANT, "dispatcher", sid, "trailer-x", start, end)
        svc.add_batch(TENANT, "dispatcher", sid, lot=f"LOT-{sid}", product="vaccine", quantity=100)
    svc.add_batch(TENANT, "dispatcher", "late", lot="LOT-hardy", product="insulin", quantity=10,
                  profile="who-30-day-refrigerator")


@pytest.fixture(scope="module")
def outage(tmp_path_factory):
    (run,) = simulate_fleet([Trailer("trailer-x", TrailerParams(), seed=31, faults=[EARLY_FAILURE, LATE_FAILURE])],
                            T0, 84 * 3600, 60)
    gw = Gateway(run)
    gw.down.append(OUTAGE)
    platform, alerts = replay(tmp_path_factory.mktemp("custody"), [gw], 84 * 3600, setup=_load)
    yield run, alerts, platform
    close(platform)


def test_an_excursion_inside_a_two_day_outage_is_found_by_the_shipments_own_profile_and_marked_late(outage):
    _, alerts, _ = outage
    assert OUTAGE[1] - OUTAGE[0] > 8 * WINDOW_S * S  # far beyond the rules' look-back
    (excursion,) = [a for a in alerts if a["rule"].startswith("coldchain:chilled-2-8:")]
    assert excursion["rule"] == "coldchain:chilled-2-8:warm:late"
    assert LATE_FAILURE.start_ns < excursion["opened_ns"] < LATE_FAILURE.end_ns + H  # when it happened
    ev = excursion["evidence"]
    assert ev["detected_late"] is True
    assert (ev["values"]["shipment"], ev["values"]["lots"], ev["values"]["except_lots"]) == ("late", None,
                                                                                              ["LOT-hardy"])
    assert ev["thresholds"]["profile"] == "chilled-2-8"
    assert ev["assessment"]["from_ns"] <= OUTAGE[0]  # read back to where the late data began


def test_the_batches_on_board_are_quarantined_by_the_late_excursion_and_no_other(outage):
    _, _, platform = outage
    svc = attach(platform)
    states = {lot: svc.get_batch(TENANT, lot)["state"] for lot in ("LOT-early", "LOT-late", "LOT-hardy")}
    # LOT-hardy's product is judged by the WHO profile (10 h): 85 min warm is no excursion for it.
    assert states == {"LOT-early": "available", "LOT-late": "quarantined", "LOT-hardy": "available"}
    (exc,) = svc.get_batch(TENANT, "LOT-late")["excursions"]
    assert LATE_FAILURE.start_ns < exc["start_ns"] < LATE_FAILURE.end_ns + H


def test_the_earlier_shipment_in_the_same_trailer_is_judged_by_its_own_profile(outage):
    run, alerts, _ = outage
    sa = run.points["supply_air"]
    early = (sa.t_ns >= EARLY_FAILURE.start_ns) & (sa.t_ns < EARLY_FAILURE.end_ns + H)
    warm_s = int(((sa.values >= 8.0) & early).sum()) * 60
    assert 30 * 60 < warm_s < 10 * 3600  # an excursion by the chilled profile, none by the WHO 30-day one
    product = [a for a in alerts if a["evidence"]["classification"] == "excursion"]
    assert [a["rule"] for a in product] == ["coldchain:chilled-2-8:warm:late"]
    # The equipment alarms are the trailer's, whoever's load it carried: both compressor failures.
    failures = sorted(a["opened_ns"] for a in alerts if a["rule"] == "coldchain:compressor-failure")
    assert len(failures) == 1  # one open alert per rule: the second failure refreshed it, while it was open
    assert EARLY_FAILURE.start_ns < failures[0] < EARLY_FAILURE.end_ns
