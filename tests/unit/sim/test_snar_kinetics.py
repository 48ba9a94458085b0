"""SnAr kinetics: conservation, Arrhenius, model variants and objectives.

Reference numbers are computed here, independently, from the rate laws as published (a fixed-step
RK4 written out below), not pasted from the module under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from aichemist.errors import ValidationError
from sim.kinetics import snar

R = 8.314
M = {"dfnb": 159.09, "pyrrolidine": 71.12, "ortho": 210.21, "para": 210.21, "bis": 261.33}


def _k_per_min(k_ref, ea_kj, temp_c):
    return 0.6 * k_ref * math.exp(-(ea_kj * 1000 / R) * (1 / (temp_c + 273.15) - 1 / (90 + 273.15)))


def _reference_outlet(tau, equiv, c_dfnb, temp_c, published=False, steps=4000):
    """Classic RK4 on the rate laws of Hone et al. 2017, written out independently."""
    ka = _k_per_min(57.9, 33.3, temp_c)
    kb = _k_per_min(2.70, 35.3, temp_c)
    kc = _k_per_min(0.865, 38.9, temp_c)
    kd = _k_per_min(1.63, 44.8, temp_c)

    def f(c):
        c0, c1, c2, c3, _ = c
        r3 = (ka if published else kb) * c0 * c1 - kd * c1 * c3
        return [-(ka + kb) * c0 * c1,
                -(ka + kb) * c0 * c1 - kc * c1 * c2 - kd * c1 * c3,
                ka * c0 * c1 - kc * c1 * c2,
                r3,
                kc * c1 * c2 + kd * c1 * c3]

    c = [c_dfnb, equiv * c_dfnb, 0.0, 0.0, 0.0]
    h = tau / steps
    for _ in range(steps):
        k1 = f(c)
        k2 = f([x + h / 2 * d for x, d in zip(c, k1)])
        k3 = f([x + h / 2 * d for x, d in zip(c, k2)])
        k4 = f([x + h * d for x, d in zip(c, k3)])
        c = [x + h / 6 * (a + 2 * b + 2 * cc + d) for x, a, b, cc, d in zip(c, k1, k2, k3, k4)]
    return np.array(c)


CONDITIONS = [(0.5, 1.0, 0.1, 30.0), (1.0, 2.0, 0.3, 90.0), (2.0, 5.0, 0.5, 120.0), (1.5, 3.0, 0.2, 60.0)]


def test_species_and_masses():
    assert snar.SPECIES == ("dfnb", "pyrrolidine", "ortho", "para", "bis")
    assert snar.MOLAR_MASS_G_MOL == M


@pytest.mark.parametrize("tau,equiv,c0,temp", CONDITIONS)
def test_mass_balance(tau, equiv, c0, temp):
    c = snar.outlet_concentrations(tau, equiv, c0, temp, model="current")
    assert c.shape == (5,)
    # every aromatic ring is DFNB, ortho, para or bis
    assert c[0] + c[2] + c[3] + c[4] == pytest.approx(c0, rel=1e-6)
    # pyrrolidine is free or bound once (ortho, para) or twice (bis)
    assert c[1] + c[2] + c[3] + 2 * c[4] == pytest.approx(equiv * c0, rel=1e-6)
    assert np.all(c >= 0)
    assert c[2] > 0 and c[0] < c0


@pytest.mark.parametrize("tau,equiv,c0,temp", CONDITIONS)
@pytest.mark.parametrize("model", ["current", "published"])
def test_outlet_matches_independent_integration(tau, equiv, c0, temp, model):
    got = snar.outlet_concentrations(tau, equiv, c0, temp, model=model)
    want = _reference_outlet(tau, equiv, c0, temp, published=(model == "published"))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)


def test_published_variant_does_not_conserve_rings():
    # Its para formation uses ka while DFNB is consumed at ka + kb: the known flaw of the
    # published model, kept so that benchmark numbers are comparable.
    c = snar.outlet_concentrations(1.0, 2.0, 0.3, 90.0, model="published")
    assert c[0] + c[2] + c[3] + c[4] > 0.3 * 1.01


def test_arrhenius():
    k90 = snar.rate_constants_per_min(90.0)
    assert k90["ka"] == pytest.approx(0.6 * 57.9)
    assert k90["kd"] == pytest.approx(0.6 * 1.63)
    k30 = snar.rate_constants_per_min(30.0)
    expected_ratio = math.exp(-(33300 / R) * (1 / 303.15 - 1 / 363.15))
    assert k30["ka"] / k90["ka"] == pytest.approx(expected_ratio, rel=1e-9)
    # higher activation energy -> stronger temperature dependence
    assert k30["kd"] / k90["kd"] < k30["kc"] / k90["kc"] < k30["ka"] / k90["ka"]
    # and the outlet conversion rises with temperature
    low = snar.outlet_concentrations(1.0, 2.0, 0.2, 30.0)
    high = snar.outlet_concentrations(1.0, 2.0, 0.2, 120.0)
    assert high[0] < low[0]


def test_published_variant_differs_only_in_r3():
    k = snar.rate_constants_per_min(75.0)
    rng = np.random.default_rng(3)
    for _ in range(20):
        c = rng.uniform(0.0, 1.0, size=5)
        cur = snar.reaction_rates(c, k, "current")
        pub = snar.reaction_rates(c, k, "published")
        np.testing.assert_array_equal(cur[[0, 1, 2, 4]], pub[[0, 1, 2, 4]])
        assert pub[3] - cur[3] == pytest.approx((k["ka"] - k["kb"]) * c[0] * c[1])
    # ka >> kb, so the published version makes much more para product
    cur = snar.outlet_concentrations(1.0, 2.0, 0.3, 90.0, model="current")
    pub = snar.outlet_concentrations(1.0, 2.0, 0.3, 90.0, model="published")
    assert pub[3] > 5 * cur[3]


def test_objectives_known_numbers():
    conc = np.array([0.01, 0.2, 0.25, 0.02, 0.03])
    tau = 1.5
    sty, e_factor = snar.objectives(conc, tau)
    assert sty == pytest.approx(60 * 210.21 * 0.25 / 1.5)
    waste = 789 + 159.09 * 0.01 + 71.12 * 0.2 + 210.21 * 0.02 + 261.33 * 0.03
    assert e_factor == pytest.approx(waste / (210.21 * 0.25))


def test_objectives_floor_and_cap():
    sty, e_factor = snar.objectives(np.array([0.1, 0.2, 0.0, 0.0, 0.0]), 1.0)
    assert sty == 1e-6 and e_factor == 1000.0
    # a trace of product: STY above the floor but E-factor capped
    sty, e_factor = snar.objectives(np.array([0.1, 0.2, 1e-6, 0.0, 0.0]), 1.0)
    assert sty == pytest.approx(60 * 210.21e-6)
    assert e_factor == 1000.0


def test_evaluate_without_and_with_noise():
    exact = snar.evaluate(1.0, 2.0, 0.3, 90.0)
    c = _reference_outlet(1.0, 2.0, 0.3, 90.0)
    assert exact["yield_fraction"] == pytest.approx(c[2] / 0.3, rel=1e-5)
    assert exact["sty_kg_m3_h"] == pytest.approx(60 * 210.21 * c[2] / 1.0, rel=1e-5)
    noisy = [snar.evaluate(1.0, 2.0, 0.3, 90.0, noise_pct=5.0, rng=np.random.default_rng(s))
             for s in range(40)]
    ortho = np.array([n["conc"][2] for n in noisy])
    assert not np.allclose(ortho, c[2])
    assert ortho.std() / c[2] == pytest.approx(0.05, rel=0.4)
    same = snar.evaluate(1.0, 2.0, 0.3, 90.0, noise_pct=5.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(same["conc"], noisy[0]["conc"])


def test_bad_inputs_rejected():
    with pytest.raises(ValidationError, match="tau_min"):
        snar.outlet_concentrations(0.0, 2.0, 0.3, 90.0)
    with pytest.raises(ValidationError, match="model"):
        snar.outlet_concentrations(1.0, 2.0, 0.3, 90.0, model="summit")  # type: ignore[arg-type]


def test_feed_flows():
    q = snar.feed_flows_ml_min(3.0, 1.5, 2.0, 0.4)
    assert q["total"] == pytest.approx(2.0)
    assert q["dfnb"] == pytest.approx(0.4 / 2.0 * 2.0)
    assert q["pyrrolidine"] == pytest.approx(0.8 / 4.2 * 2.0)
    assert q["dfnb"] + q["pyrrolidine"] + q["ethanol"] == pytest.approx(2.0)
    with pytest.raises(ValidationError, match="stock"):
        snar.feed_flows_ml_min(3.0, 1.0, 5.0, 0.9)


@pytest.mark.parametrize("model", ["current", "published"])
def test_in_place_rates_equal_rates(model):
    k = snar.rate_constants_per_min(80.0)
    conc = np.random.default_rng(1).uniform(0, 1, size=(5, 7))
    out = np.ones((5, 7))
    snar.add_reaction_rates(conc, k, model, out)
    np.testing.assert_allclose(out, 1.0 + snar.reaction_rates(conc, k, model))
