"""scripts/simulate_scaling.py: its queueing maths against cases with known answers, and its simulation against them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from scripts.simulate_scaling import (
    Exponential,
    Figures,
    LogNormal,
    Simulation,
    Station,
    mm1,
    mmc_wait,
    saturation,
    simulate,
    station_loads,
)


def test_mm1_utilisation_and_time_in_system() -> None:
    assert mm1(0.5, 1.0) == pytest.approx((0.5, 2.0))
    assert mm1(9.0, 10.0) == pytest.approx((0.9, 1.0))
    with pytest.raises(ValueError, match="unstable"):
        mm1(1.0, 1.0)


def test_erlang_c_wait() -> None:
    # One server: M/M/1's wait in queue, W - 1/mu.
    assert mmc_wait(0.5, 1.0, 1) == pytest.approx(2.0 - 1.0)
    # Two servers, a = 1 (rho 0.5): P(wait) = 1/3, Wq = (1/3) / (2 - 1).
    assert mmc_wait(1.0, 1.0, 2) == pytest.approx(1 / 3)


def test_lognormal_is_fitted_to_its_median_and_99th_percentile() -> None:
    rng = np.random.default_rng(1)
    fitted = LogNormal(0.1, 0.4)
    samples = np.array([fitted.sample(rng) for _ in range(40_000)])
    assert np.percentile(samples, 50) == pytest.approx(0.1, rel=0.03)
    assert np.percentile(samples, 99) == pytest.approx(0.4, rel=0.06)
    assert samples.mean() == pytest.approx(fitted.mean, rel=0.03)


def _mm1_run(arrival_per_s: float, service: Exponential, customers: int, seed: int) -> tuple[float, float]:
    """The event loop with one station: measured utilisation and mean time in the system."""
    rng = np.random.default_rng(seed)
    sim = Simulation()
    station = Station("server")
    times: list[float] = []

    def customer() -> Iterator[float | Station]:
        start = sim.now
        yield station
        yield service.sample(rng)
        station.release(sim)
        times.append(sim.now - start)

    def arrivals() -> Iterator[float | Station]:
        for _ in range(customers):
            yield float(rng.exponential(1 / arrival_per_s))
            sim.start(customer())  # type: ignore[arg-type]

    sim.start(arrivals())  # type: ignore[arg-type]
    horizon = customers / arrival_per_s
    sim.run(horizon)
    station._account(horizon)
    return station.utilisation(0.0, horizon), float(np.mean(times))


def test_the_event_loop_reproduces_mm1() -> None:
    utilisation, mean_s = _mm1_run(0.5, Exponential(1.0), customers=60_000, seed=3)
    expected_utilisation, expected_mean_s = mm1(0.5, 1.0)
    assert utilisation == pytest.approx(expected_utilisation, abs=0.02)
    assert mean_s == pytest.approx(expected_mean_s, rel=0.06)


def test_queries_saturate_the_model_and_edits_the_shared_store() -> None:
    figures = Figures()
    limit, first = saturation(4, 0.0, figures)
    assert first == "model"
    assert limit == pytest.approx(4 / figures.generate.mean)  # four model threads, one generation each at a time
    # Edits only: one write lock for the whole cluster, and every replica embeds every other's edits, so more
    # replicas do not raise the limit.
    limit_4, first_4 = saturation(4, 1.0, figures)
    limit_16, first_16 = saturation(16, 1.0, figures)
    assert first_4 == "store lock"
    assert limit_4 == pytest.approx(1 / figures.store_write.mean)
    assert first_16 in ("store lock", "follower")
    assert limit_16 <= limit_4
    # One replica: its write lane (embedding, then the commit) is the narrower door.
    assert saturation(1, 1.0, figures)[1] == "write lane"
    assert station_loads(1, 1.0, figures)["follower"] == 0.0  # nobody else to follow


def test_the_simulation_loads_the_first_station_as_the_bound_says() -> None:
    figures = Figures()
    limit, first = saturation(4, 0.3, figures)
    result = simulate(4, 0.8 * limit, 0.3, figures, duration_s=4000, seed=5)
    assert first == "model"
    assert result.utilisation["model"] == pytest.approx(0.8, abs=0.08)  # the busiest replica's model
    assert max(u for name, u in result.utilisation.items() if name != "model") < 0.1
    assert result.follow_s and min(result.follow_s) > 0  # every edit reached the other replicas
