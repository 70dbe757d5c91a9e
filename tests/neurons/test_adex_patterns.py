"""AdEx neuron-dynamics validation: the firing patterns of Naud et al. (2008) in snn's units."""

import math

import pytest
import torch

from snn.neurons.patterns import (
    NAUD_2008,
    PATTERNS,
    AdExNeuron,
    classify,
    fi_curve,
    from_physical,
    isi_signature,
    rheobase,
    simulate,
)

F64 = torch.float64


@pytest.fixture(scope="module")
def spike_trains():
    """Spike times (s) of every pattern, simulated once for the module."""
    return {name: simulate(pattern).spike_times for name, pattern in PATTERNS.items()}


# --- the mapping from physical units ------------------------------------------------------------

def test_mapping_from_physical_units_by_hand():
    # tonic: C=200 pF, gL=10 nS, EL=-70, VT=-50 (U = 20 mV), DeltaT=2, a=2 nS, tau_w=30 ms, b=0, Vr=-58, I=500 pA
    p, current, dt, duration = from_physical(NAUD_2008["tonic"], dt=2e-4, duration=0.3)
    expected = dict(tau_mem_inv=50.0, tau_ada_inv=1000 / 30, adaptation_current=0.2, adaptation_spike=0.0,
                    delta_T=0.1, v_leak=0.0, v_th=1.0, v_reset=0.6, tau_syn_inv=5000.0)
    for name, value in expected.items():
        assert getattr(p, name).dtype == F64
        assert float(getattr(p, name)) == pytest.approx(value, rel=1e-12), name
    assert current == pytest.approx(2.5) and (dt, duration) == (2e-4, 0.3)
    # adapting: b = 60 pA over gL U = 12 nS * 20 mV = 240 pA
    p, current, _, _ = from_physical(NAUD_2008["adapting"])
    assert float(p.adaptation_spike) == pytest.approx(0.25) and current == pytest.approx(500 / 240)
    assert float(p.adaptation_current) == pytest.approx(2 / 12) and float(p.tau_mem_inv) == pytest.approx(60.0)


def physical_euler(n: AdExNeuron, dt_ms: float, steps: int):
    """The published equations in mV, ms, pA with the same Euler step and the spike cut at V_T."""
    v, w, vs, ws = n.E_L, 0.0, [], []
    for _ in range(steps):
        # nS * mV = pA and pA / pF = mV / ms
        dv = dt_ms / n.C * (-n.g_L * (v - n.E_L) + n.g_L * n.Delta_T * math.exp((v - n.V_T) / n.Delta_T) + n.I_step - w)
        dw = dt_ms / n.tau_w * (n.a * (v - n.E_L) - w)
        v, w = v + dv, w + dw
        if v > n.V_T:
            v, w = n.V_r, w + n.b
        vs.append(v)
        ws.append(w)
    return torch.tensor(vs, dtype=F64), torch.tensor(ws, dtype=F64)


@pytest.mark.parametrize("name", ["adapting", "initial_burst", "delayed"])
def test_snn_units_reproduce_the_physical_model(name):
    """Integrating the published equations in mV/ms/pA gives the same trajectory, rescaled."""
    source = {"adapting": "adapting", "initial_burst": "initial_burst", "delayed": "delayed_accelerating"}[name]
    changes = {"initial_burst": dict(V_r=-52.0), "delayed": dict(I_step=180.0)}.get(name, {})
    neuron = NAUD_2008[source]._replace(**changes)
    pattern = PATTERNS[name]
    sim = simulate(pattern, duration=0.3)
    v_mV, w_pA = physical_euler(neuron, pattern.dt * 1e3, len(sim.t))
    unit = neuron.V_T - neuron.E_L
    assert sim.spikes.sum() >= 3
    torch.testing.assert_close(sim.v, (v_mV - neuron.E_L) / unit, rtol=0, atol=1e-9)
    torch.testing.assert_close(sim.a, w_pA / (neuron.g_L * unit), rtol=0, atol=1e-9)


def test_the_synaptic_filter_is_a_pass_through():
    """tau_syn_inv = 1/dt: the first step sees exactly the input current, not a filtered one."""
    pattern = PATTERNS["tonic"]
    sim = simulate(pattern, duration=pattern.dt)
    p, x, dt = pattern.p, pattern.current, pattern.dt
    delta = float(p.delta_T)
    expected_v = dt * float(p.tau_mem_inv) * (delta * math.exp(-1 / delta) + x)
    assert float(sim.v[0]) == pytest.approx(expected_v, rel=1e-12)


# --- the five patterns ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PATTERNS))
def test_each_pattern_is_classified_as_itself(name, spike_trains):
    expected = {"regular_bursting": "bursting"}.get(name, name)
    assert classify(spike_trains[name]) == expected


def test_tonic_isis_are_constant(spike_trains):
    isi = isi_signature(spike_trains["tonic"]).isi
    assert len(isi) > 50
    assert (isi.max() - isi.min()) / isi.median() < 0.1
    assert isi[-20:].std() / isi[-20:].mean() < 0.01


def test_adapting_isis_grow_then_settle(spike_trains):
    isi = isi_signature(spike_trains["adapting"]).isi
    assert (isi.diff() > -2 * PATTERNS["adapting"].dt).all()  # never shorter (up to one step of jitter)
    assert isi[-1] > 5 * isi[0]
    assert (isi[-4:].max() - isi[-4:].min()) / isi[-1] < 0.02


def test_initial_burst_then_long_regular_isis(spike_trains):
    isi = isi_signature(spike_trains["initial_burst"]).isi
    short = isi < isi.max() / 5
    n_burst = int(short.sum())
    assert n_burst >= 2 and short[:n_burst].all()  # the burst comes first, and only once
    regular = isi[n_burst + 1:]  # after the transition interval
    assert len(regular) >= 5 and (regular.max() - regular.min()) / regular.mean() < 0.02


def test_regular_bursting_alternates_short_and_long(spike_trains):
    signature = isi_signature(spike_trains["regular_bursting"])
    isi, split = signature.isi, signature.split
    long = (isi > split).nonzero().flatten()
    assert len(long) >= 4
    burst_sizes = long.diff()  # spikes per burst between consecutive long ISIs
    assert (burst_sizes == burst_sizes[0]).all() and burst_sizes[0] >= 2
    assert isi[isi > split].min() > 100 * isi[isi < split].max()
    steady_long = isi[long[1:]]
    assert (steady_long.max() - steady_long.min()) / steady_long.mean() < 0.02


def test_delayed_first_spike_long_after_onset(spike_trains):
    times = spike_trains["delayed"]
    isi = isi_signature(times).isi
    assert times[0] > 0.1  # no spike in the first 100 ms of the step
    assert (isi < times[0] / 3).all()  # then it fires at a steady pace
    assert isi[-5:].std() / isi[-5:].mean() < 0.05


# Each control removes the mechanism behind a pattern, and the pattern goes away.
def test_controls_without_the_mechanism_lose_the_pattern():
    zero = torch.tensor(0.0, dtype=F64)
    adapting = PATTERNS["adapting"]
    no_adaptation = adapting._replace(p=adapting.p._replace(adaptation_current=zero, adaptation_spike=zero))
    assert classify(simulate(no_adaptation).spike_times) == "tonic"
    delayed = PATTERNS["delayed"]  # the slow depolarisation comes from the negative coupling a < 0
    assert classify(simulate(delayed._replace(p=delayed.p._replace(adaptation_current=zero))).spike_times) == "silent"
    burst = PATTERNS["initial_burst"]  # a few large jumps end the burst; small ones adapt gradually
    small_jumps = burst._replace(p=burst.p._replace(adaptation_spike=torch.tensor(0.2, dtype=F64)))
    assert classify(simulate(small_jumps).spike_times) == "adapting"
    bursting = NAUD_2008["regular_bursting"]._replace(V_r=-53.0)  # reset below V_T: no bursts
    assert classify(simulate(from_physical(bursting, duration=1.0)).spike_times) != "bursting"


# --- the classifier on hand-made spike trains ---------------------------------------------------

def train(isis, latency=0.01):
    return latency + torch.tensor([0.0, *isis], dtype=F64).cumsum(0)


@pytest.mark.parametrize(("isis", "latency", "expected"), [
    ([0.01] * 20, 0.01, "tonic"),
    ([0.01 * 1.2**k for k in range(8)] + [0.04] * 10, 0.01, "adapting"),
    ([0.002, 0.002] + [0.05] * 10, 0.005, "initial_burst"),
    ([0.002, 0.002, 0.1] * 6, 0.01, "bursting"),
    ([0.02] * 10, 0.3, "delayed"),
    ([0.04 / 1.2**k for k in range(10)], 0.01, "accelerating"),
    ([0.01], 0.01, "silent"),
])
def test_classify_hand_made_trains(isis, latency, expected):
    assert classify(train(isis, latency)) == expected


def test_isi_signature_by_hand():
    s = isi_signature(train([0.01, 0.02, 0.04, 0.04], latency=0.005))
    assert s.latency == pytest.approx(0.005) and s.split is None
    torch.testing.assert_close(s.isi, torch.tensor([0.01, 0.02, 0.04, 0.04], dtype=F64))
    assert s.growth == pytest.approx(4.0) and s.steady_cv == pytest.approx(0.0)
    s = isi_signature(train([0.001, 0.001, 0.01]))
    assert s.split == pytest.approx(math.sqrt(0.001 * 0.01))
    assert isi_signature(torch.tensor([], dtype=F64)).latency == math.inf


# --- f-I curve --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tonic", "adapting"])
def test_fi_curve_zero_below_rheobase_then_rising(name):
    pattern = PATTERNS[name]
    x_rh = rheobase(pattern.p)
    below = torch.tensor([0.0, 0.5, 0.9, 0.98], dtype=F64) * x_rh
    above = torch.tensor([1.02, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0], dtype=F64) * x_rh
    rates = fi_curve(pattern, torch.cat([below, above]))
    assert (rates[: len(below)] == 0).all()
    assert (rates[len(below):] > 0).all()
    assert (rates[len(below):].diff() > 0).all()


def test_rheobase_matches_the_published_formula_to_second_order():
    """Our threshold v_th is where the v-nullcline (with a = 0) has its minimum; with adaptation the
    published model's saddle-node sits delta_T * ln(1 + kappa) higher: both agree to O(delta_T kappa^2)."""
    p = PATTERNS["tonic"].p
    kappa, delta = float(p.adaptation_current), float(p.delta_T)
    published = (1 + kappa) * (1 - delta + delta * math.log(1 + kappa))
    assert rheobase(p) == pytest.approx(published, abs=delta * kappa**2)
    assert rheobase(p) != pytest.approx(published, abs=1e-6)


def test_input_errors():
    with pytest.raises(ValueError, match="V_T > E_L"):
        from_physical(NAUD_2008["tonic"]._replace(V_T=-80.0))
    with pytest.raises(ValueError, match="1-D"):
        simulate(PATTERNS["tonic"], current=torch.ones(2, 2))
    with pytest.raises(ValueError, match="adaptation_current >= 0"):
        rheobase(PATTERNS["delayed"].p)
    with pytest.raises(ValueError, match="one neuron"):
        _ = simulate(PATTERNS["tonic"], current=torch.ones(3), duration=0.01).spike_times
