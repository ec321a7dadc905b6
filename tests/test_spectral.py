"""Spectral Forcing operator (trainers/model/spectral_forcing.py) against SciPy/NumPy references written independently
(tests/spectral_helpers.py): the DCT matrix, the operator and its schedules, identity cases, monotonicity, dtypes and
batching, windows, module hygiene and the errors. The radial spectrum and power-law fit are in
tests/test_spectral_spectrum.py.

    .venv/bin/python -m pytest tests/test_spectral.py -q
"""
import numpy as np
import pytest
import scipy.fft
import torch

from spectral_helpers import ALL, FILTERING, make, ref_cutoff, ref_operator, ref_radius
from trainers.model.spectral_forcing import SpectralForcing, dct_matrix


# ---------------------------------------------------------------------- dct_matrix
@pytest.mark.parametrize("n", [1, 2, 7, 32])
def test_dct_matrix_equals_scipy_dct_of_identity(n):
    expected = scipy.fft.dct(np.eye(n), norm="ortho", axis=0)
    np.testing.assert_allclose(dct_matrix(n).numpy(), expected, atol=1e-13)


def test_dct_matrix_rows_are_frequencies_and_it_is_orthonormal():
    n = 24
    d = dct_matrix(n)
    x = np.random.default_rng(0).standard_normal((n, 5))
    y = d.numpy() @ x
    np.testing.assert_allclose(y, scipy.fft.dct(x, norm="ortho", axis=0), atol=1e-12)  # D @ x is the DCT
    np.testing.assert_allclose((d @ d.T).numpy(), np.eye(n), atol=1e-13)
    np.testing.assert_allclose(d.numpy().T @ y, x, atol=1e-12)  # round trip
    np.testing.assert_allclose((y**2).sum(0), (x**2).sum(0), rtol=1e-12)  # Parseval
    # row k oscillates k times: sign changes along the row
    signs = np.sign(d.numpy())
    assert [(np.diff(signs[k]) != 0).sum() for k in range(n)] == list(range(n))


def test_dct_matrix_dtype_and_bad_n():
    d32 = dct_matrix(9, dtype=torch.float32)
    assert d32.dtype == torch.float32 and d32.shape == (9, 9)
    assert torch.equal(d32, dct_matrix(9).float())  # rounded once from float64
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match=rf"n: .*{bad!r}"):
            dct_matrix(bad)


# ---------------------------------------------------------------------- operator vs reference
def _times(b, rng):
    return np.concatenate([[0.0, 1.0, 0.5], rng.uniform(0, 1, b - 3)])


@pytest.mark.parametrize("schedule", FILTERING)
@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.5])
def test_forward_matches_scipy_reference(schedule, alpha):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((7, 3, 16, 16))
    t = _times(7, rng)
    sf = make(16, schedule, alpha=alpha)
    out = sf(torch.tensor(z, dtype=torch.float32), torch.tensor(t, dtype=torch.float32))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref_operator(z, t, schedule, alpha=alpha), atol=1e-5)
    np.testing.assert_allclose(sf.cutoff(torch.tensor(t)).numpy(), ref_cutoff(t, schedule, alpha=alpha), atol=1e-6)


@pytest.mark.parametrize("schedule", FILTERING)
def test_non_default_parameters_match_reference_in_float64(schedule):
    rng = np.random.default_rng(2)
    z = rng.standard_normal((5, 2, 12, 12))
    t = _times(5, rng)
    kw = dict(c_min=0.1, c_max=0.8, alpha=1.5, r0=0.2, c_const=0.35)
    sf = SpectralForcing(12, schedule, kappa=12.0, **kw)
    out = sf(torch.tensor(z), torch.tensor(t))
    assert out.dtype == torch.float64  # fp64 input runs the fp64 reference path
    np.testing.assert_allclose(out.numpy(), ref_operator(z, t, schedule, kappa=12.0, **kw), atol=1e-12)


def test_default_arguments_are_the_papers_operator():
    sf = SpectralForcing(32)
    assert (sf.schedule, sf.c_min, sf.c_max, sf.kappa, sf.identity_at_data, sf.window_size) == (
        "linear", 0.05, 1.0, 30.0, False, None)
    rng = np.random.default_rng(3)
    z, t = rng.standard_normal((4, 3, 32, 32)), rng.uniform(0, 1, 4)
    np.testing.assert_allclose(sf(torch.tensor(z).float(), torch.tensor(t).float()).numpy(),
                               ref_operator(z, t, "linear"), atol=1e-5)


def test_rectangular_image_uses_per_axis_normalised_radius():
    rng = np.random.default_rng(4)
    z, t = rng.standard_normal((3, 2, 8, 12)), np.array([0.2, 0.6, 0.9])
    out = SpectralForcing((8, 12))(torch.tensor(z), torch.tensor(t))
    np.testing.assert_allclose(out.numpy(), ref_operator(z, t, "linear"), atol=1e-12)


# ---------------------------------------------------------------------- identity cases
def test_schedule_none_is_the_identity():
    sf = make(16, "none")
    z = torch.randn(3, 2, 16, 16)
    assert sf(z, torch.rand(3)) is z
    assert torch.equal(sf.mask(torch.rand(3)), torch.ones(3, 1, 16, 16))
    assert torch.isinf(sf.cutoff(0.3)).all()


@pytest.mark.parametrize("schedule", FILTERING)
def test_identity_at_data_is_exact_at_t1_and_unchanged_before_the_ramp(schedule):
    sf = make(16, schedule, identity_at_data=True)
    plain = make(16, schedule)
    z = torch.randn(4, 3, 16, 16) * 1e3  # large values: a DCT round trip alone would miss 1e-5
    t = torch.tensor([1.0, 0.3, 1.0, 0.95])  # 0.95 = 1 - t_eps: the ramp has not started
    out = sf(z, t)
    assert (out[[0, 2]] - z[[0, 2]]).abs().max() < 1e-5
    torch.testing.assert_close(out[[1, 3]], plain(z, t)[[1, 3]], rtol=0, atol=0)
    assert torch.equal(sf.mask(1.0), torch.ones(1, 1, 16, 16))
    # inside the ramp the mask lies between the plain mask and one
    m, m_plain = sf.mask(0.975), plain.mask(0.975)
    assert (m >= m_plain).all() and (m <= 1).all() and (m > m_plain).any()
    if schedule == "constant":  # documented: the ramp makes the constant schedule time-dependent near t = 1
        assert not torch.equal(sf.mask(0.975), sf.mask(0.5))


def test_identity_ramp_is_the_documented_smoothstep():
    sf = make(16, "linear", identity_at_data=True, t_eps=0.2)
    plain = make(16, "linear")
    for t in (0.85, 0.9, 0.97):
        s = (t - 0.8) / 0.2
        w = s * s * (3 - 2 * s)
        expected = plain.mask(t).double() + (1 - plain.mask(t).double()) * w
        torch.testing.assert_close(sf.mask(t).double(), expected, atol=1e-6, rtol=0)


def test_paper_operator_is_not_the_identity_at_t1():
    # Corner frequencies pass at sigmoid(0) = 0.5 at t = 1. On white noise the relative RMS change is
    # sqrt(mean((1 - M)^2)) over frequencies: 3.3% at 32px, 2.8% at 64, 2.7% at 128, 2.5% at 256.
    n = 128
    sf = SpectralForcing(n)
    z = torch.randn(4, 3, n, n, generator=torch.Generator().manual_seed(0))
    change = ((sf(z, 1.0) - z).pow(2).mean() / z.pow(2).mean()).sqrt().item()
    m = 1 / (1 + np.exp(-30 * (1 - ref_radius(n, n))))
    closed_form = np.sqrt(np.mean((1 - m) ** 2))
    assert 0.02 <= change <= 0.035
    assert change == pytest.approx(closed_form, rel=0.02)
    assert sf.mask(1.0).min().item() == pytest.approx(0.5, abs=1e-6)


# ---------------------------------------------------------------------- monotonicity
@pytest.mark.parametrize("identity_at_data", [False, True])
@pytest.mark.parametrize("schedule", ALL)
def test_mask_is_monotone_in_t_for_every_frequency(schedule, identity_at_data):
    sf = make(16, schedule, identity_at_data=identity_at_data, alpha=1.5)
    t = torch.linspace(0, 1, 401)
    m = sf.mask(t)[:, 0]  # [T, H, W]
    assert torch.isfinite(m).all() and m.min() >= 0 and m.max() <= 1
    assert (m.diff(dim=0) >= -1e-6).all()
    if schedule in ("linear", "contour", "snr") or (schedule == "constant" and identity_at_data):
        assert (m[-1] - m[0]).max() > 0.4  # the check above is not vacuous: the mask really moves
    c = sf.cutoff(t)
    if schedule == "none":
        assert torch.isinf(c).all()
    else:
        assert (c.diff() >= 0).all() and torch.isfinite(c).all()


@pytest.mark.parametrize("c_min", [0.0, 0.05])
def test_contour_and_snr_are_finite_at_both_ends(c_min):
    for schedule in ("contour", "snr"):
        sf = make(8, schedule, c_min=c_min, alpha=0.25)  # steep exponent: (1-t)^-8 overflows fp32 near t = 1
        t = torch.tensor([0.0, 1e-7, 0.5, 1 - 1e-7, 1.0])
        c = sf.cutoff(t)
        assert torch.isfinite(c).all(), (schedule, c)
        assert c[0].item() == pytest.approx(c_min) and c[-1].item() == 1.0
        assert torch.isfinite(sf(torch.randn(5, 1, 8, 8), t)).all()


# ---------------------------------------------------------------------- dtypes, shapes, batching
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_input_is_filtered_in_fp32_and_returned_in_its_dtype(dtype):
    sf = make(32)
    z = torch.randn(4, 3, 32, 32).to(dtype)
    t = torch.rand(4)
    out = sf(z, t)
    assert out.dtype == dtype
    assert torch.equal(out, sf(z.float(), t).to(dtype))  # only the output is rounded


def test_bf16_autocast_does_not_reach_the_dct():
    sf = make(32)
    z, t = torch.randn(4, 3, 32, 32), torch.rand(4)
    exact = sf(z, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = sf(z, t)
        under_bf16_input = sf(z.bfloat16(), t)
        # what the authors' code does: the same matmuls, left to autocast
        d = sf.dct_h
        naive = (d.T @ ((d @ z @ d.T) * sf.mask(t)) @ d).float()
    assert under.dtype == torch.float32 and under_bf16_input.dtype == torch.bfloat16
    torch.testing.assert_close(under, exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(under_bf16_input, sf(z.bfloat16().float(), t).bfloat16(), atol=0, rtol=0)
    assert (naive - exact).abs().max() > 1e-3  # the check can tell bf16 matmuls apart


def test_casting_the_module_keeps_exact_fp32_buffers():
    sf = make(16)
    ref = sf(torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)), 0.4)
    for cast in (lambda m: m.half(), lambda m: m.to(torch.bfloat16), lambda m: m.double()):
        cast(sf)
        assert sf.dct_h.dtype == torch.float32 and torch.equal(sf.dct_h, dct_matrix(16, dtype=torch.float32))
        assert torch.equal(sf.radius, torch.tensor(ref_radius(16, 16), dtype=torch.float32))
    torch.testing.assert_close(sf(torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)), 0.4), ref,
                               atol=0, rtol=0)


def test_batched_t_matches_a_per_sample_loop_and_scalar_t():
    sf = make(16, "contour")
    z, t = torch.randn(6, 2, 16, 16), torch.rand(6)
    batched = sf(z, t)
    looped = torch.cat([sf(z[i : i + 1], t[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(batched, looped, atol=1e-6, rtol=0)
    for scalar in (0.3, torch.tensor(0.3)):
        torch.testing.assert_close(sf(z, scalar), sf(z, torch.full((6,), 0.3)), atol=0, rtol=0)
    assert sf.mask(t).shape == (6, 1, 16, 16) and sf.mask(0.3).shape == (1, 1, 16, 16)
    assert sf.cutoff(t).shape == (6,) and sf.cutoff(0.3).shape == (1,)


def test_output_is_differentiable_with_respect_to_z():
    sf = make(8)
    z = torch.randn(2, 1, 8, 8, requires_grad=True)
    sf(z, torch.tensor([0.2, 0.7])).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


# ---------------------------------------------------------------------- windowed DCT
@pytest.mark.parametrize("schedule", ["linear", "snr"])
def test_windowed_equals_the_operator_on_each_window(schedule):
    w = 8
    sf = make(24, schedule, window_size=w)
    per_window = make(w, schedule)
    z, t = torch.randn(3, 2, 24, 24), torch.rand(3)
    out = sf(z, t)
    for i in range(0, 24, w):
        for j in range(0, 24, w):
            torch.testing.assert_close(out[..., i : i + w, j : j + w],
                                       per_window(z[..., i : i + w, j : j + w], t), atol=1e-6, rtol=0)
    assert sf.mask(t).shape == (3, 1, w, w)
    torch.testing.assert_close(sf.mask(t), per_window.mask(t), atol=0, rtol=0)  # r uses n = window_size


def test_window_equal_to_image_is_the_full_image_operator():
    z, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    torch.testing.assert_close(make(16, window_size=16)(z, t), make(16)(z, t), atol=0, rtol=0)


# ---------------------------------------------------------------------- module hygiene
def test_no_parameters_empty_state_dict_and_describe_round_trip():
    sf = SpectralForcing(16, "snr", r0=0.25, alpha=1.7, window_size=8, identity_at_data=True)
    assert sum(p.numel() for p in sf.parameters()) == 0
    assert sf.state_dict() == {}
    assert {name for name, _ in sf.named_buffers()} == {"dct_h", "dct_w", "radius"}
    again = SpectralForcing(**sf.describe())
    assert again.describe() == sf.describe()
    t = torch.rand(5)
    assert torch.equal(again.mask(t), sf.mask(t))
    text = repr(sf)
    for part in ("schedule=snr", "alpha=1.7", "r0=0.25", "window_size=8", "identity_at_data=True", "kappa=30"):
        assert part in text, text


def test_numpy_scalars_are_accepted_as_config_values():
    sf = SpectralForcing(np.int64(16), c_min=np.float32(0.1), window_size=np.int64(8))
    assert sf.image_size == (16, 16) and sf.window_size == 8 and sf.c_min == pytest.approx(0.1)
    assert type(sf.describe()["window_size"]) is int  # plain values, safe to log


def test_extra_repr_shows_only_what_the_schedule_uses():
    assert "c_const=0.3" in make(8, "constant", c_const=0.3).extra_repr()
    assert "alpha" not in make(8, "linear").extra_repr()
    assert make(8, "none").extra_repr() == "schedule=none, image_size=(8, 8)"


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, words", [
    (dict(schedule="cosine"), ["schedule", "'cosine'"]),
    (dict(c_min=-0.1), ["c_min", "-0.1"]),
    (dict(c_min=1.5, c_max=1.0), ["c_min", "1.5"]),
    (dict(c_max=0.0), ["c_max", "0.0"]),
    (dict(c_max=1.2), ["c_max", "1.2"]),
    (dict(c_min=0.6, c_max=0.5), ["c_min", "0.6", "c_max=0.5"]),
    (dict(kappa=0.0), ["kappa", "0.0"]),
    (dict(kappa=-3.0), ["kappa", "-3.0"]),
    (dict(alpha=0.0), ["alpha", "0.0"]),
    (dict(alpha=-1.0), ["alpha", "-1.0"]),
    (dict(window_size=5), ["window_size", "5", "16"]),
    (dict(window_size=1), ["window_size", "1"]),
    (dict(schedule="snr"), ["r0", "None", "fit_power_law"]),
    (dict(schedule="snr", r0=-0.2), ["r0", "-0.2"]),
    (dict(c_const=0.0), ["c_const", "0.0"]),
    (dict(t_eps=0.0), ["t_eps", "0.0"]),
    (dict(kappa=float("nan")), ["kappa", "nan"]),
    (dict(image_size=1), ["image_size", "1"]),
    (dict(image_size=(16, 16, 3)), ["image_size", "(16, 16, 3)"]),
])
def test_constructor_errors_name_argument_and_value(kwargs, words):
    kwargs = {"image_size": 16, **kwargs}
    with pytest.raises(ValueError) as err:
        SpectralForcing(**kwargs)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_constructor_type_errors():
    with pytest.raises(TypeError, match="kappa"):
        SpectralForcing(16, kappa="30")
    with pytest.raises(TypeError, match="identity_at_data"):
        SpectralForcing(16, identity_at_data=1)


@pytest.mark.parametrize("z_shape, t, words", [
    ((2, 16, 16), torch.rand(2), ["z", "[2, 16, 16]"]),
    ((2, 3, 8, 8), torch.rand(2), ["z", "[2, 3, 8, 8]", "16"]),
    ((4, 3, 16, 16), torch.rand(4, 1), ["t", "[4, 1]"]),
    ((4, 3, 16, 16), torch.rand(3), ["t", "[3]", "[4]"]),
    ((4, 3, 16, 16), 1.5, ["t", "1.5"]),
    ((4, 3, 16, 16), torch.tensor([0.1, -0.2, 0.5, 0.5]), ["t", "-0.2"]),
    ((4, 3, 16, 16), torch.tensor([0.1, float("nan"), 0.5, 0.5]), ["t", "nan"]),
])
def test_forward_errors_name_argument_and_value(z_shape, t, words):
    with pytest.raises(ValueError) as err:
        make(16)(torch.zeros(z_shape), t)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_forward_type_errors():
    with pytest.raises(TypeError, match="z: .*int64"):
        make(8)(torch.zeros(1, 1, 8, 8, dtype=torch.long), 0.5)
    with pytest.raises(TypeError, match="t: "):
        make(8)(torch.zeros(1, 1, 8, 8), "0.5")
    with pytest.raises(ValueError, match=r"t: values must lie in \[0, 1\], got min=2.0"):
        make(8).mask(2.0)
