"""SnAr kinetics: 2,4-difluoronitrobenzene + pyrrolidine in ethanol, plug flow.

Second-order rate laws and constants from Hone et al. 2017 (React. Chem. Eng. 2, 103), in the
form used by the Summit benchmark (Felton et al. 2021). Species, in order:

    0 dfnb        2,4-difluoronitrobenzene (limiting reagent)
    1 pyrrolidine
    2 ortho       2-(pyrrolidin-1-yl)-4-fluoronitrobenzene, the target
    3 para        4-(pyrrolidin-1-yl)-2-fluoronitrobenzene
    4 bis         2,4-di(pyrrolidin-1-yl)nitrobenzene

    r0 = -(ka+kb) C0 C1
    r1 = -(ka+kb) C0 C1 - kc C1 C2 - kd C1 C3
    r2 =   ka C0 C1 - kc C1 C2
    r3 =   kb C0 C1 - kd C1 C3        model="current"
    r3 =   ka C0 C1 - kd C1 C3        model="published" (the version of the published benchmark)
    r4 =   kc C1 C2 + kd C1 C3

k = 0.6 k_ref exp(-(Ea/R)(1/T - 1/T_ref)), T_ref = 90 C; 0.6 converts 1e-2 M^-1 s^-1 to
M^-1 min^-1. Concentrations in mol/L, time in minutes.

The functions here are also used point-wise along the reactor by the reactor twin
(``rate_constants_per_min`` and ``reaction_rates``), so the twin and the integrated model share
one set of rate laws.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.integrate import solve_ivp

from aichemist.errors import ValidationError

SPECIES: tuple[str, ...] = ("dfnb", "pyrrolidine", "ortho", "para", "bis")
MOLAR_MASS_G_MOL: dict[str, float] = {
    "dfnb": 159.09,
    "pyrrolidine": 71.12,
    "ortho": 210.21,
    "para": 210.21,
    "bis": 261.33,
}
_MOLAR_MASS = np.array([MOLAR_MASS_G_MOL[s] for s in SPECIES])

ETHANOL_DENSITY_G_ML = 0.789
GAS_CONSTANT_J_MOL_K = 8.314
KELVIN_OFFSET = 273.15
T_REF_C = 90.0
# Pre-factor converting k_ref from 1e-2 M^-1 s^-1 to M^-1 min^-1.
_UNIT_FACTOR = 0.6

# (k_ref at 90 C in 1e-2 M^-1 s^-1, activation energy in kJ/mol)
RATE_PARAMETERS: dict[str, tuple[float, float]] = {
    "ka": (57.9, 33.3),
    "kb": (2.70, 35.3),
    "kc": (0.865, 38.9),
    "kd": (1.63, 44.8),
}

# Stock solutions feeding the reactor (mol/L); the third feed is ethanol make-up.
STOCK_DFNB_M = 2.0
STOCK_PYRROLIDINE_M = 4.2

STY_FLOOR_KG_M3_H = 1e-6
E_FACTOR_CAP = 1000.0

Model = Literal["current", "published"]
_MODELS = ("current", "published")


def rate_constants_per_min(temp_c: float) -> dict[str, float]:
    """Arrhenius rate constants (M^-1 min^-1) at ``temp_c``."""
    t_k = temp_c + KELVIN_OFFSET
    t_ref_k = T_REF_C + KELVIN_OFFSET
    out = {}
    for name, (k_ref, ea_kj_mol) in RATE_PARAMETERS.items():
        out[name] = _UNIT_FACTOR * k_ref * np.exp(
            -(ea_kj_mol * 1000.0 / GAS_CONSTANT_J_MOL_K) * (1.0 / t_k - 1.0 / t_ref_k))
    return out


def reaction_rates(conc: np.ndarray, k: dict[str, float], model: Model = "current") -> np.ndarray:
    """d C / d t (mol L^-1 min^-1) for concentrations ``conc``.

    ``conc`` has the species on its first axis (shape (5,) or (5, n)), so the twin can evaluate
    all of its axial cells in one call.
    """
    c0, c1, c2, c3 = conc[0], conc[1], conc[2], conc[3]
    ka, kb, kc, kd = k["ka"], k["kb"], k["kc"], k["kd"]
    para_k = kb if model == "current" else ka
    r_ortho_formation = ka * c0 * c1
    r_ortho_to_bis = kc * c1 * c2
    r_para_to_bis = kd * c1 * c3
    return np.stack([
        -(ka + kb) * c0 * c1,
        -(ka + kb) * c0 * c1 - r_ortho_to_bis - r_para_to_bis,
        r_ortho_formation - r_ortho_to_bis,
        para_k * c0 * c1 - r_para_to_bis,
        r_ortho_to_bis + r_para_to_bis,
    ])


def add_reaction_rates(conc: np.ndarray, k: dict[str, float], model: Model, out: np.ndarray) -> None:
    """``out += reaction_rates(conc, k, model)`` without temporaries (the twin's inner loop)."""
    c0, c1, c2, c3 = conc[0], conc[1], conc[2], conc[3]
    ka, kb, kc, kd = k["ka"], k["kb"], k["kc"], k["kd"]
    para_k = kb if model == "current" else ka
    c01 = c0 * c1
    ortho_to_bis = kc * c1 * c2
    para_to_bis = kd * c1 * c3
    out[0] -= (ka + kb) * c01
    out[1] -= (ka + kb) * c01 + ortho_to_bis + para_to_bis
    out[2] += ka * c01 - ortho_to_bis
    out[3] += para_k * c01 - para_to_bis
    out[4] += ortho_to_bis + para_to_bis


def _rate_jacobian(conc: np.ndarray, k: dict[str, float], model: Model) -> np.ndarray:
    """d(reaction_rates)/dC for one concentration vector (lets LSODA take fewer steps)."""
    c0, c1, c2, c3 = conc[0], conc[1], conc[2], conc[3]
    ka, kb, kc, kd = k["ka"], k["kb"], k["kc"], k["kd"]
    s = ka + kb
    kp = kb if model == "current" else ka
    return np.array([
        [-s * c1, -s * c0, 0.0, 0.0, 0.0],
        [-s * c1, -s * c0 - kc * c2 - kd * c3, -kc * c1, -kd * c1, 0.0],
        [ka * c1, ka * c0 - kc * c2, -kc * c1, 0.0, 0.0],
        [kp * c1, kp * c0 - kd * c3, 0.0, -kd * c1, 0.0],
        [0.0, kc * c2 + kd * c3, kc * c1, kd * c1, 0.0],
    ])


def _check_model(model: str) -> None:
    if model not in _MODELS:
        raise ValidationError(f"unknown SnAr model {model!r}; expected one of {_MODELS}",
                              problems=[{"field": "model", "value": model, "allowed": list(_MODELS)}])


def _check_positive(**values: float) -> None:
    problems = [{"field": name, "value": v, "limit": 0.0, "bound": "min"}
                for name, v in values.items() if not (np.isfinite(v) and v > 0)]
    if problems:
        names = ", ".join(f"{p['field']}={p['value']!r}" for p in problems)
        raise ValidationError(f"SnAr kinetics needs positive finite inputs: {names}", problems=problems)


def inlet_concentrations(equiv: float, conc_dfnb_m: float) -> np.ndarray:
    """Concentrations (mol/L) after mixing, at the reactor inlet."""
    c = np.zeros(len(SPECIES))
    c[0] = conc_dfnb_m
    c[1] = equiv * conc_dfnb_m
    return c


def outlet_concentrations(tau_min: float, equiv: float, conc_dfnb_m: float, temp_c: float, *,
                          model: Model = "current") -> np.ndarray:
    """Outlet concentrations (shape (5,), mol/L) of an ideal plug-flow reactor.

    Integrates the rate laws over the residence time ``tau_min`` at constant ``temp_c``.
    """
    _check_model(model)
    _check_positive(tau_min=tau_min, equiv=equiv, conc_dfnb_m=conc_dfnb_m)
    if not np.isfinite(temp_c) or temp_c <= -KELVIN_OFFSET:
        raise ValidationError(f"SnAr kinetics: temp_c={temp_c!r} is not a physical temperature",
                              problems=[{"field": "temp_c", "value": temp_c}])
    k = rate_constants_per_min(temp_c)
    sol = solve_ivp(lambda _t, c: reaction_rates(c, k, model), (0.0, float(tau_min)),
                    inlet_concentrations(equiv, conc_dfnb_m), method="LSODA",
                    jac=lambda _t, c: _rate_jacobian(c, k, model), rtol=1e-8, atol=1e-11)
    if not sol.success:  # pragma: no cover - LSODA on this smooth system does not fail in range
        raise ValidationError(f"SnAr integration failed: {sol.message}")
    return np.maximum(sol.y[:, -1], 0.0)


def objectives(conc: np.ndarray, tau_min: float) -> tuple[float, float]:
    """(space-time yield in kg m^-3 h^-1, E-factor) from outlet concentrations.

    STY = 60 M_ortho C_ortho / tau, floored at 1e-6 (so a log scale stays defined).
    E-factor = (ethanol mass + mass of every non-target species) / mass of the target, per litre
    of outlet: (789 + sum_{i != ortho} M_i C_i) / (M_ortho C_ortho), capped at 1000.
    """
    conc = np.asarray(conc, dtype=float)
    c_ortho = conc[2]
    sty = 60.0 * MOLAR_MASS_G_MOL["ortho"] * c_ortho / tau_min
    sty = max(float(sty), STY_FLOOR_KG_M3_H)
    product_g_l = MOLAR_MASS_G_MOL["ortho"] * c_ortho
    if product_g_l <= 0:
        return sty, E_FACTOR_CAP
    waste_g_l = ETHANOL_DENSITY_G_ML * 1000.0 + float(np.dot(np.delete(_MOLAR_MASS, 2), np.delete(conc, 2)))
    return sty, float(min(waste_g_l / product_g_l, E_FACTOR_CAP))


def evaluate(tau_min: float, equiv: float, conc_dfnb_m: float, temp_c: float, *,
             model: Model = "current", noise_pct: float = 0.0,
             rng: np.random.Generator | None = None) -> dict:
    """One simulated experiment: outlet concentrations, objectives and yield.

    With ``noise_pct`` > 0 every concentration is multiplied by (1 + N(0, noise_pct)/100), as a
    measurement would be; negative results (possible only with very large noise) become 0.
    """
    conc = outlet_concentrations(tau_min, equiv, conc_dfnb_m, temp_c, model=model)
    if noise_pct > 0:
        rng = rng if rng is not None else np.random.default_rng()
        conc = np.maximum(conc * (1.0 + rng.normal(0.0, noise_pct, size=conc.shape) / 100.0), 0.0)
    sty, e_factor = objectives(conc, tau_min)
    return {
        "conc": conc,
        "sty_kg_m3_h": sty,
        "e_factor": e_factor,
        "yield_fraction": float(conc[2] / conc_dfnb_m),
    }


def feed_flows_ml_min(reactor_volume_ml: float, tau_min: float, equiv: float, conc_dfnb_m: float,
                      stock_dfnb_m: float = STOCK_DFNB_M,
                      stock_pyrrolidine_m: float = STOCK_PYRROLIDINE_M) -> dict[str, float]:
    """Flows of the three feeds (DFNB stock, pyrrolidine stock, ethanol) for the given conditions.

    Raises ValidationError when the stocks are too dilute for the requested concentrations
    (the ethanol make-up would be negative).
    """
    _check_positive(reactor_volume_ml=reactor_volume_ml, tau_min=tau_min, equiv=equiv,
                    conc_dfnb_m=conc_dfnb_m)
    total = reactor_volume_ml / tau_min
    q_dfnb = conc_dfnb_m / stock_dfnb_m * total
    q_pyrr = equiv * conc_dfnb_m / stock_pyrrolidine_m * total
    q_etoh = total - q_dfnb - q_pyrr
    if q_etoh < -1e-12:
        raise ValidationError(
            f"conc_dfnb_m={conc_dfnb_m} with equiv={equiv} needs more than the stock solutions "
            f"({stock_dfnb_m} M DFNB, {stock_pyrrolidine_m} M pyrrolidine) can deliver",
            problems=[{"field": "conc_dfnb_m", "value": conc_dfnb_m},
                      {"field": "equiv", "value": equiv}])
    return {"dfnb": q_dfnb, "pyrrolidine": q_pyrr, "ethanol": max(q_etoh, 0.0), "total": total}
