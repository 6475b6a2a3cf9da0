"""The demo tour's trailer story, judged by the real rule and thermal twin (no processes: the library calls the
rule runner makes). For start times that broke it before, the clock's hold falls where the predictive alert
can come — confirmation passed, the air not yet at the limit — and the alert comes.

Two ways it broke on CI: a fixed hold 6.5 min after the air warmed, with the air already at 5 °C for a trailer
that failed at the warm end of its thermostat cycle (start 5); and a day of data that pinned the thermal twin's
cargo coupling at its bound, whose band draws overflowed and took the whole forecast with them (4, 8)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cloud.rules.coldchain import predict
from cloud.rules.coldchain.live import ReeferRuleSettings
from cloud.rules.coldchain.profiles import load_profile
from cloud.rules.coldchain.reefer import assess_trailer
from cloud.thermal import TrailerHistory, fit
from twin import tour

NS = 10**9


@pytest.mark.parametrize("start", [4, 5, 8])
def test_the_tour_holds_its_clock_where_the_trailers_excursion_is_predicted(start):
    now = 1_796_000_000 * NS + start * 7_919 * NS
    story = tour.Story(start_ns=now - 840 * NS)
    tour._trailers(story, ["trailer-001"], now, now + 3600 * NS)
    hold = story.start_ns + int(story.hold_s * NS)
    samples = {}
    for (asset, point), (t, v, q) in story.series.items():
        if asset == tour.TRAILER:
            seen = (t <= hold) & (t > hold - 86_400 * NS)
            samples[point] = SimpleNamespace(t_ns=t[seen], values=v[seen], quality=q[seen])
    settings = ReeferRuleSettings()
    assert samples["supply_air"].values[-1] < 5.0 - 0.2  # the limit not reached: a prediction is still one
    stop = predict.cooling_stopped(samples, 5.0, settings, now_ns=hold)
    assert stop is not None and hold - stop.warm_since_ns >= settings.predict_confirm_s * NS
    defrosts = [(e.start_ns, e.end_ns) for e in assess_trailer(samples, load_profile("who-type-1")).events
                if e.kind == "defrost"]
    model = fit(TrailerHistory.from_samples(samples), exclude=defrosts)
    alarm = predict.predict_excursion(samples, model, stop, 5.0, settings)
    assert alarm is not None and alarm.title.startswith("excursion expected in ")
    assert 0 < alarm.evidence["lead_s"] <= 6 * 60


def test_without_the_shared_data_sets_the_tour_unpacks_its_cmapss_excerpt(tmp_path):
    """A fresh clone without ``../shared/data``: the tour's engines and its model's training engines come from
    the excerpt in ``twin/data/cmapss``, unchanged rows of the published files."""
    from cloud.pdm.data import load_trajectories
    from simulators.turbofan import load_engines

    at = tour.cmapss_for_demo(tmp_path / "nowhere", tmp_path / "cmapss")
    assert at == tmp_path / "cmapss"
    assert sorted(p.name for p in at.iterdir()) == ["RUL_FD001.txt", "test_FD001.txt", "train_FD001.txt"]
    engines = load_engines(at, "FD001", "test")
    assert [(e.unit, len(e.cycles), e.failure_cycle - len(e.cycles)) for e in engines] == [
        (31, 196, 8), (34, 203, 7), (35, 198, 11)]
    train = load_trajectories(at / "train_FD001.txt")
    assert train.units.tolist() == list(range(1, 31)) and len(train.cycle) == 5987
    assert tour.cmapss_for_demo(tmp_path / "nowhere", tmp_path / "cmapss") == at  # unpacked once
