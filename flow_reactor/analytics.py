"""Online analytics: concentrations from the inline UV-vis spectrum, yield, and the objectives.

Beer-Lambert: A(lambda) = l * sum_i eps_i(lambda) c_i. With the molar absorptivities of each
species at a few wavelengths (a calibration measured on standards: ``AnalyticsParams``), the
concentrations are the non-negative least-squares solution of that linear system at those
wavelengths. Yield = c_product / c_DFNB fed (the fed concentration follows from the flows the
pumps actually deliver and the stock concentrations).

The objectives (space-time yield, E-factor) are computed here from measured concentrations; the
twin's kinetic model has its own copy (flow_reactor never imports sim/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from scipy.optimize import nnls

from aichemist.errors import ConfigurationError

MOLAR_MASS_G_MOL = {"dfnb": 159.09, "pyrrolidine": 71.12, "ortho": 210.21, "para": 210.21, "bis": 261.33}
ETHANOL_G_L = 789.0


@dataclass(frozen=True)
class BeerLambertCalibration:
    path_length_cm: float
    wavelengths_nm: tuple[float, ...]
    absorptivity_l_mol_cm: Mapping[str, tuple[float, ...]]

    def __post_init__(self) -> None:
        if not self.absorptivity_l_mol_cm:
            raise ConfigurationError("detector calibration has no species (analytics.absorptivity_l_mol_cm)")
        for species, values in self.absorptivity_l_mol_cm.items():
            if len(values) != len(self.wavelengths_nm):
                raise ConfigurationError(
                    f"detector calibration: {species} has {len(values)} absorptivities for "
                    f"{len(self.wavelengths_nm)} wavelengths",
                    problems=[{"field": f"analytics.absorptivity_l_mol_cm.{species}", "value": len(values),
                               "limit": len(self.wavelengths_nm)}])

    @classmethod
    def from_params(cls, p) -> "BeerLambertCalibration":  # p: config.AnalyticsParams
        return cls(p.path_length_cm, tuple(p.wavelengths_nm),
                   {k: tuple(v) for k, v in p.absorptivity_l_mol_cm.items()})

    @property
    def species(self) -> tuple[str, ...]:
        return tuple(self.absorptivity_l_mol_cm)

    def matrix(self) -> np.ndarray:
        """(n_wavelengths, n_species) of l * eps."""
        return self.path_length_cm * np.array([self.absorptivity_l_mol_cm[s] for s in self.species]).T

    def absorbance(self, conc_m: Mapping[str, float]) -> np.ndarray:
        return self.matrix() @ np.array([conc_m.get(s, 0.0) for s in self.species])

    def concentrations(self, absorbance_au: np.ndarray) -> dict[str, float]:
        """Non-negative least squares: absorbances at ``wavelengths_nm`` -> mol/L per species."""
        solution, _residual = nnls(self.matrix(), np.asarray(absorbance_au, dtype=float))
        return {s: float(c) for s, c in zip(self.species, solution)}

    def concentrations_from_spectrum(self, wavelengths_nm: np.ndarray,
                                     absorbance_au: np.ndarray) -> dict[str, float]:
        a = np.interp(self.wavelengths_nm, wavelengths_nm, absorbance_au)
        return self.concentrations(a)


def space_time_yield_kg_m3_h(conc_product_m: float, tau_min: float, product: str = "ortho") -> float:
    return 60.0 * MOLAR_MASS_G_MOL[product] * conc_product_m / tau_min


def e_factor(conc_m: Mapping[str, float], product: str = "ortho", cap: float = 1000.0) -> float:
    """(solvent + everything that is not product) / product, per litre of outlet; capped."""
    product_g_l = MOLAR_MASS_G_MOL[product] * conc_m.get(product, 0.0)
    if product_g_l <= 0:
        return cap
    waste = ETHANOL_G_L + sum(MOLAR_MASS_G_MOL[s] * c for s, c in conc_m.items()
                              if s != product and s in MOLAR_MASS_G_MOL)
    return min(waste / product_g_l, cap)


# --- chromatography ----------------------------------------------------------------------
@dataclass(frozen=True)
class Peak:
    name: str
    retention_min: float
    area_mau_min: float
    height_mau: float
    conc_m: float


def integrate_peaks(times_min: np.ndarray, signal_mau: np.ndarray,
                    windows_min: Mapping[str, tuple[float, float]],
                    response_mau_min_per_m: Mapping[str, float]) -> list[Peak]:
    """Integrate one peak per species inside its retention window.

    The baseline is the straight line through the median signal at the window's two edges (a
    drifting baseline is removed, not integrated); area by the trapezoid rule above it; the
    concentration from the species' response factor (peak area per mol/L, from standards).
    """
    t = np.asarray(times_min, dtype=float)
    y = np.asarray(signal_mau, dtype=float)
    peaks = []
    for name, (lo, hi) in windows_min.items():
        inside = (t >= lo) & (t <= hi)
        if inside.sum() < 5:
            peaks.append(Peak(name, float("nan"), 0.0, 0.0, 0.0))
            continue
        tw, yw = t[inside], y[inside]
        edge = max(2, min(5, len(tw) // 20))
        t0, t1 = tw[:edge].mean(), tw[-edge:].mean()
        y0, y1 = np.median(yw[:edge]), np.median(yw[-edge:])
        baseline = y0 + (y1 - y0) * (tw - t0) / (t1 - t0 if t1 > t0 else 1.0)
        above = yw - baseline
        area = float(np.sum((above[1:] + above[:-1]) * np.diff(tw)) / 2.0)
        area = max(area, 0.0)
        i_max = int(np.argmax(above))
        response = response_mau_min_per_m.get(name)
        conc = area / response if response else 0.0
        peaks.append(Peak(name, float(tw[i_max]), area, float(above[i_max]), float(conc)))
    return peaks


def measure_sample(chromatograph: Any, params: Any, vial: str, *, volume_ul: float | None = None,
                   run_time_min: float | None = None, conc_dfnb_fed_m: float = 0.0,
                   on_phase: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Inject ``vial``, run, integrate: chromatogram, peaks and (with ``conc_dfnb_fed_m``) yield.

    ``params`` is a ``config.HplcParams`` (windows, response factors, product)."""
    phase = on_phase or (lambda _p: None)
    phase("injecting")
    chromatograph.inject(vial, volume_ul)
    phase("running")
    chromatograph.run(run_time_min)
    phase("integrating")
    chrom = chromatograph.read_chromatogram()
    windows = {k: (float(v[0]), float(v[1])) for k, v in params.peak_windows_min.items()}
    peaks = integrate_peaks(chrom.times_min, chrom.signal_mau, windows, params.response_mau_min_per_m)
    product = next((p for p in peaks if p.name == params.product), None)
    yield_fraction = (product.conc_m / conc_dfnb_fed_m) if (product and conc_dfnb_fed_m > 0) else 0.0
    return {"chromatogram": chrom, "peaks": peaks, "yield_fraction": float(yield_fraction),
            "conc_m": {p.name: p.conc_m for p in peaks}}
