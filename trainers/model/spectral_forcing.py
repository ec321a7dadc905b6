"""Spectral Forcing: the time-conditional 2D-DCT low-pass applied to the network input (docs/design.md §1).

    SF_t(z) = IDCT2( DCT2(z) * M(t) ),   M(t)[u, v] = sigmoid( kappa * (c(t) - r[u, v]) ),
    r[u, v] = sqrt(u^2 + v^2) / (sqrt(2) * (n - 1))        (0 at DC, 1 at the highest corner frequency)

The default arguments reproduce the paper's operator exactly (linear c(t) from c_min=0.05 to c_max=1, kappa=30).

    from trainers.model.spectral_forcing import SpectralForcing, fit_power_law
    sf = SpectralForcing(32)                             # the paper's operator for 32x32 images
    z_in = sf(z, t)                                      # z: [B, C, 32, 32], t: [B] in [0, 1] (1 = data)
    alpha, r0 = fit_power_law(train_images)              # the data's own spectrum, same normalisation as training
    sf = SpectralForcing(32, "snr", alpha=alpha, r0=r0)  # cutoff follows the per-band SNR = 1 front

CPU check (prints the operator and how much it changes white noise at t = 0, 0.5 and 1):

    python -c "import torch; from trainers.model.spectral_forcing import SpectralForcing; sf = SpectralForcing(64); print(sf); \
z = torch.randn(3, 3, 64, 64); print(((sf(z, torch.tensor([0., .5, 1.])) - z).pow(2).mean((1, 2, 3)).sqrt()))"

Cutoff schedules c(t) (`SCHEDULES`; alpha is the cutoff exponent):
    none      identity: forward returns z itself, mask is all ones, cutoff is +inf
    linear    c_min + (c_max - c_min) * t                                 (paper)
    contour   min(c_max, c_min * (1 - t)^(-2/alpha));  c(1) = c_max       (the paper's front formula)
    snr       clip(r0 * (t / (1 - t))^(2/alpha), c_min, c_max); c(0) = c_min, c(1) = c_max; r0 from fit_power_law
    constant  c_const at every t: a time-independent low-pass (the real "constant mask" ablation)

Parameters a schedule does not use (alpha for linear, r0 outside snr, c_const outside constant) are accepted and
recorded by `describe()`, so one config can feed every schedule; they change nothing.

`identity_at_data=True` fixes the paper's mask at t = 1 (corner frequencies pass at only 0.5 there):
M'(t) = M(t) + (1 - M(t)) * w(t) with the smoothstep ramp w(t) = s^2 (3 - 2 s), s = clip((t - 1 + t_eps) / t_eps).
w is 0 up to t = 1 - t_eps, so the operator equals the plain one on [0, 1 - t_eps] and only the last t_eps of time
(the region the flow loss already clamps, t_eps = 0.05 by default) changes; w(1) = 1, and samples with w(t) = 1
are returned bit-exactly. M' stays monotone non-decreasing in t because 1 - M' = (1 - M)(1 - w) and both factors
are non-increasing and non-negative. With the `constant` schedule the operator becomes time-dependent on that ramp.

Precision: the transform runs in fp32 (fp64 for fp64 input) with autocast disabled, whatever the caller's autocast
or input dtype; the result is returned in z's dtype. The DCT and radius buffers are non-persistent (state_dict stays
empty) and are rebuilt exactly in fp32 if the module is cast to another dtype (e.g. `model.half()`).
"""
from __future__ import annotations

import math
import numbers
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from specforce_contracts import SF_DEFAULTS, SF_SCHEDULES as SCHEDULES, sf_cutoff

# what specforce_contracts.sf_cutoff needs of an array library, for torch tensors
_TORCH_OPS = SimpleNamespace(where=torch.where, full_like=torch.full_like,
                             clip=lambda x, lo, hi: x.clamp(min=lo, max=hi))


def dct_matrix(n: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """Orthonormal DCT-II matrix D [n, n], rows = frequencies: `D @ x` is the DCT of x, `D.T @ y` the inverse."""
    if not _is_int(n) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    n = int(n)
    # Built in float64 and cast once, so a low-precision dtype gets correctly rounded entries.
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    d = torch.cos(math.pi * (2.0 * i + 1.0) * k / (2.0 * n)) * math.sqrt(2.0 / n)
    d[0] = math.sqrt(1.0 / n)
    return d.to(dtype=dtype, device=device)


def radius_grid(h: int, w: int, *, dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None) -> Tensor:
    """r[u, v] = sqrt((u/(h-1))^2 + (v/(w-1))^2) / sqrt(2): for h = w = n this is sqrt(u^2+v^2) / (sqrt(2)(n-1))."""
    for name, value in (("h", h), ("w", w)):
        if not _is_int(value) or value < 2:
            raise ValueError(f"{name}: expected an int >= 2 (r divides by n - 1), got {value!r}")
    h, w = int(h), int(w)
    u = torch.arange(h, dtype=torch.float64).unsqueeze(1) / (h - 1)
    v = torch.arange(w, dtype=torch.float64).unsqueeze(0) / (w - 1)
    return (torch.sqrt(u * u + v * v) / math.sqrt(2.0)).to(dtype=dtype, device=device)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy ints count, True does not


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return float(value)


def _size2(name: str, value: object) -> tuple[int, int]:
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(pair) != 2 or any(not _is_int(v) or v < 2 for v in pair):
        raise ValueError(f"{name}: expected an int >= 2 or an (H, W) pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


class SpectralForcing(nn.Module):
    """Time-conditional DCT low-pass of the network input; see the module docstring for the schedules."""

    def __init__(
        self,
        image_size: int | tuple[int, int],
        schedule: str = SF_DEFAULTS["schedule"],
        *,
        c_min: float = SF_DEFAULTS["c_min"],
        c_max: float = SF_DEFAULTS["c_max"],
        kappa: float = SF_DEFAULTS["kappa"],
        alpha: float = SF_DEFAULTS["alpha"],
        r0: float | None = None,
        c_const: float = SF_DEFAULTS["c_const"],
        window_size: int | None = None,
        identity_at_data: bool = False,
        t_eps: float = SF_DEFAULTS["t_eps"],
    ) -> None:
        super().__init__()
        self.image_size = _size2("image_size", image_size)
        if not isinstance(schedule, str) or schedule not in SCHEDULES:
            raise ValueError(f"schedule: unknown schedule {schedule!r}; choose one of {SCHEDULES}")
        self.schedule = schedule
        self.c_min = _real("c_min", c_min)
        self.c_max = _real("c_max", c_max)
        self.kappa = _real("kappa", kappa)
        self.alpha = _real("alpha", alpha)
        self.c_const = _real("c_const", c_const)
        self.t_eps = _real("t_eps", t_eps)
        if not 0.0 <= self.c_min <= 1.0:
            raise ValueError(f"c_min: must lie in [0, 1], got {c_min!r}")
        if not 0.0 < self.c_max <= 1.0:
            raise ValueError(f"c_max: must lie in (0, 1], got {c_max!r}")
        if self.c_min > self.c_max:
            raise ValueError(f"c_min: {c_min!r} exceeds c_max={c_max!r}")
        if self.kappa <= 0:
            raise ValueError(f"kappa: must be > 0, got {kappa!r}")
        if self.alpha <= 0:
            raise ValueError(f"alpha: must be > 0, got {alpha!r}")
        if not 0.0 < self.c_const <= 1.0:
            raise ValueError(f"c_const: must lie in (0, 1], got {c_const!r}")
        if not 0.0 < self.t_eps <= 1.0:
            raise ValueError(f"t_eps: must lie in (0, 1], got {t_eps!r}")
        if r0 is not None:
            r0 = _real("r0", r0)
            if r0 <= 0:
                raise ValueError(f"r0: must be > 0, got {r0!r}")
        elif schedule == "snr":
            raise ValueError("r0: the snr schedule needs r0, got None; "
                             "fit it from the training images with trainers.model.spectral_forcing.fit_power_law")
        self.r0 = r0
        if not isinstance(identity_at_data, bool):
            raise TypeError(f"identity_at_data: expected a bool, got {identity_at_data!r}")
        self.identity_at_data = identity_at_data
        if window_size is not None:
            if not _is_int(window_size) or window_size < 2:
                raise ValueError(f"window_size: expected an int >= 2 or None, got {window_size!r}")
            window_size = int(window_size)
            if any(s % window_size for s in self.image_size):
                raise ValueError(f"window_size: {window_size} does not divide image_size {self.image_size}")
        self.window_size = window_size
        self.register_buffer("dct_h", torch.empty(0), persistent=False)
        self.register_buffer("dct_w", torch.empty(0), persistent=False)
        self.register_buffer("radius", torch.empty(0), persistent=False)
        self._build_buffers(torch.device("cpu"))

    # ------------------------------------------------------------------ buffers
    @property
    def block(self) -> tuple[int, int]:
        """Size of one transformed block: the whole image, or one window."""
        return (self.window_size, self.window_size) if self.window_size else self.image_size

    def _build_buffers(self, device: torch.device) -> None:
        bh, bw = self.block
        self.dct_h = dct_matrix(bh, dtype=torch.float32, device=device)
        self.dct_w = dct_matrix(bw, dtype=torch.float32, device=device)
        self.radius = radius_grid(bh, bw, dtype=torch.float32, device=device)

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - torch's signature
        super()._apply(fn, recurse)
        # A dtype cast (model.half(), .to(torch.bfloat16)) would round the DCT to 3 digits, the bug we fix;
        # the buffers are derived data, so rebuild them exactly on whatever device they now live on.
        if self.dct_h.dtype != torch.float32:
            self._build_buffers(self.dct_h.device)
        return self

    # ------------------------------------------------------------------ schedule
    def _times(self, t: Tensor | float, batch: int | None = None) -> Tensor:
        """Validated t as a float [B] tensor (or [1] for a scalar without a batch) on the buffers' device."""
        device = self.radius.device
        if isinstance(t, bool) or not isinstance(t, (Tensor, int, float)):
            raise TypeError(f"t: expected a tensor or a real number, got {type(t).__name__}")
        t = torch.as_tensor(t, device=device)
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"t: expected real values, got dtype {t.dtype}")
        t = t.to(device=device, dtype=torch.float32 if t.dtype != torch.float64 else torch.float64)
        if t.ndim == 0:
            t = t.reshape(1).expand(batch or 1)
        elif t.ndim != 1 or (batch is not None and t.shape[0] != batch):
            want = f"[{batch}]" if batch is not None else "[B]"
            raise ValueError(f"t: expected shape {want} or a scalar, got {list(t.shape)}")
        if t.numel():
            lo, hi = torch.stack([t.min(), t.max()]).tolist()  # one host sync for both bounds
            if not (lo >= 0.0 and hi <= 1.0):  # written so NaN fails too
                raise ValueError(f"t: values must lie in [0, 1], got min={lo!r} max={hi!r}")
        return t

    def _cutoff(self, t: Tensor) -> Tensor:
        return sf_cutoff(self.schedule, t, _TORCH_OPS, c_min=self.c_min, c_max=self.c_max, alpha=self.alpha,
                         r0=self.r0, c_const=self.c_const)

    def _ramp(self, t: Tensor) -> Tensor:
        s = ((t - (1.0 - self.t_eps)) / self.t_eps).clamp(0.0, 1.0)
        return s * s * (3.0 - 2.0 * s)

    def cutoff(self, t: Tensor | float) -> Tensor:
        """c(t) as a [B] tensor (+inf for `none`); the identity_at_data blend acts on the mask, not here."""
        return self._cutoff(self._times(t))

    def _tables(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """(D_h, D_w, r) in fp32 from the buffers, or rebuilt in float64 for the fp64 reference path."""
        if dtype != torch.float64:
            return self.dct_h, self.dct_w, self.radius
        (bh, bw), dev = self.block, self.radius.device
        return (dct_matrix(bh, device=dev), dct_matrix(bw, device=dev), radius_grid(bh, bw, device=dev))

    def _mask(self, t: Tensor) -> Tensor:
        """[B, bh, bw] mask for validated t, in t's dtype (fp32 or fp64)."""
        r = self._tables(t.dtype)[2]
        if self.schedule == "none":
            return torch.ones((t.shape[0],) + tuple(r.shape), dtype=t.dtype, device=t.device)
        m = torch.sigmoid(self.kappa * (self._cutoff(t)[:, None, None] - r))
        if self.identity_at_data:
            w = self._ramp(t)[:, None, None]
            # exactly M where w = 0 and exactly 1 where w = 1 (fp32 m + (1 - m) can miss 1 by an ulp)
            m = torch.where(w >= 1.0, torch.ones_like(m), m + (1.0 - m) * w)
        return m

    def mask(self, t: Tensor | float) -> Tensor:
        """Frequency mask [B, 1, bh, bw]: bh, bw = the image size, or the window size when windowed.

        fp32 (fp64 for fp64 t); multiply it with DCT2 coefficients of z's blocks, DC at [..., 0, 0].
        """
        return self._mask(self._times(t)).unsqueeze(1)

    # ------------------------------------------------------------------ operator
    def forward(self, z: Tensor, t: Tensor | float) -> Tensor:
        if not isinstance(z, Tensor):
            raise TypeError(f"z: expected a tensor, got {type(z).__name__}")
        if z.ndim != 4 or tuple(z.shape[-2:]) != self.image_size:
            raise ValueError(f"z: expected shape [B, C, {self.image_size[0]}, {self.image_size[1]}], "
                             f"got {list(z.shape)}")
        if not z.is_floating_point():
            raise TypeError(f"z: expected a floating-point tensor, got dtype {z.dtype}")
        if z.device != self.radius.device:
            raise ValueError(f"z: is on {z.device} but the operator's buffers are on {self.radius.device}; "
                             "move the module with .to(device)")
        t = self._times(t, batch=z.shape[0])
        if self.schedule == "none":
            return z
        compute = torch.float64 if z.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=z.device.type, enabled=False):
            out = self._filter(z.to(compute), t.to(compute))
            if self.identity_at_data:
                exact = (self._ramp(t) >= 1.0)[:, None, None, None]
                out = torch.where(exact, z.to(compute), out)
        return out.to(z.dtype)

    def _filter(self, x: Tensor, t: Tensor) -> Tensor:
        b, c, h, w = x.shape
        bh, bw = self.block
        nh, nw = h // bh, w // bw
        dh, dw, _ = self._tables(x.dtype)
        # [B, C, nh, bh, nw, bw] -> [B, C, nh, nw, bh, bw]: every window becomes a trailing matrix,
        # so the full image (nh = nw = 1) and windows share one pair of matmuls, Y = D X D^T.
        blocks = x.reshape(b, c, nh, bh, nw, bw).permute(0, 1, 2, 4, 3, 5)
        coeffs = dh @ blocks @ dw.T
        coeffs = coeffs * self._mask(t)[:, None, None, None]
        blocks = dh.T @ coeffs @ dw
        return blocks.permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)

    # ------------------------------------------------------------------ description
    def describe(self) -> dict[str, Any]:
        """Constructor arguments as plain values: `SpectralForcing(**sf.describe())` rebuilds the same operator."""
        h, w = self.image_size
        return {
            "image_size": h if h == w else (h, w), "schedule": self.schedule, "c_min": self.c_min,
            "c_max": self.c_max, "kappa": self.kappa, "alpha": self.alpha, "r0": self.r0, "c_const": self.c_const,
            "window_size": self.window_size, "identity_at_data": self.identity_at_data, "t_eps": self.t_eps,
        }

    def extra_repr(self) -> str:
        if self.schedule == "none":
            return f"schedule=none, image_size={self.image_size}"
        parts = [f"schedule={self.schedule}", f"image_size={self.image_size}", f"kappa={self.kappa:g}"]
        if self.schedule == "constant":
            parts.append(f"c_const={self.c_const:g}")
        else:
            parts += [f"c_min={self.c_min:g}", f"c_max={self.c_max:g}"]
        if self.schedule in ("contour", "snr"):
            parts.append(f"alpha={self.alpha:g}")
        if self.schedule == "snr":
            parts.append(f"r0={self.r0:g}")
        if self.window_size:
            parts.append(f"window_size={self.window_size}")
        if self.identity_at_data:
            parts.append(f"identity_at_data=True, t_eps={self.t_eps:g}")
        return ", ".join(parts)


# ---------------------------------------------------------------------- data spectrum
def _as_images(images: object) -> np.ndarray:
    if isinstance(images, Tensor):
        images = images.detach().cpu().to(torch.float64).numpy()
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images: expected a tensor or ndarray, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] < 1 or min(images.shape[-2:]) < 2:
        raise ValueError(f"images: expected shape [N, C, H, W] with N >= 1 and H, W >= 2, got {list(images.shape)}")
    images = images.astype(np.float64, copy=False)
    if not np.isfinite(images).all():
        raise ValueError("images: contains non-finite values")
    return images


def radial_power_spectrum(images: object, n_bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean DCT-II power per radius bin, in the mask's r units (DC excluded), float64 NumPy.

    images: [N, C, H, W] tensor or ndarray, any range (the power scales with it). The orthonormal DCT of every
    image and channel is squared and averaged over N and C; frequencies are grouped into `n_bins` equal-width bins
    of r over (0, 1], each closed above (default max(H, W) - 1, about 1.4 index steps per bin). Returns
    (r_centers, power) for the non-empty bins only, r_centers being the mean r of the frequencies in each bin
    (the right abscissa for a log-log fit when bins hold few frequencies).
    """
    x = _as_images(images)
    h, w = x.shape[-2:]
    if n_bins is None:
        n_bins = max(h, w) - 1
    if not _is_int(n_bins) or n_bins < 1:
        raise ValueError(f"n_bins: expected a positive int or None, got {n_bins!r}")
    dh, dw = dct_matrix(h).numpy(), dct_matrix(w).numpy()
    power = np.zeros((h, w))
    for chunk in np.array_split(x, max(1, x.shape[0] // 256)):  # bounded memory for large N
        power += ((dh @ chunk @ dw.T) ** 2).sum(axis=(0, 1))
    power /= x.shape[0] * x.shape[1]
    r = radius_grid(h, w).numpy().ravel()
    power = power.ravel()
    keep = r > 0
    r, power = r[keep], power[keep]
    # Bin i holds r in (i/n_bins, (i+1)/n_bins]. Lattice points fall exactly on edges (the diagonal u = v for the
    # default n_bins), where float rounding would pick a side at random: the 1e-9 slack puts them in the lower bin.
    idx = np.clip(np.ceil(r * n_bins - 1e-9).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    filled = counts > 0
    r_centers = np.bincount(idx, weights=r, minlength=n_bins)[filled] / counts[filled]
    mean_power = np.bincount(idx, weights=power, minlength=n_bins)[filled] / counts[filled]
    return r_centers, mean_power


def fit_power_law(
    images: object, *, k_min: float = 0.1, k_max: float = 0.5, noise_var: float = 1.0, n_bins: int | None = None,
) -> tuple[float, float]:
    """Fit S(r) = A r^-alpha to the images' radial DCT power on k_min <= r <= k_max; return (alpha, r0).

    r0 = (A / noise_var)^(1/alpha) places the snr schedule's front where the per-band SNR
    t^2 S(r) / ((1 - t)^2 noise_var) equals 1, i.e. r*(t) = r0 (t / (1 - t))^(2/alpha). Pass the images in the
    normalisation the flow sees (A scales with it) and noise_var = noise_scale^2. The band is in the mask's r units
    (1 = corner): the default [0.1, 0.5] skips the lowest bins, where few frequencies and the image's finite
    extent dominate, and the corner region beyond the inscribed circle (r > 0.71), where resampling and
    periodic-boundary artefacts bend the spectrum. The fit is least squares of log P on log r over the bins.
    """
    k_min, k_max, noise_var = _real("k_min", k_min), _real("k_max", k_max), _real("noise_var", noise_var)
    if not 0.0 < k_min < 1.0:
        raise ValueError(f"k_min: must lie in (0, 1), got {k_min!r}")
    if not k_min < k_max <= 1.0:
        raise ValueError(f"k_max: must lie in (k_min={k_min!r}, 1], got {k_max!r}")
    if noise_var <= 0:
        raise ValueError(f"noise_var: must be > 0, got {noise_var!r}")
    r, power = radial_power_spectrum(images, n_bins=n_bins)
    band = (r >= k_min) & (r <= k_max) & (power > 0)
    if band.sum() < 3:
        raise ValueError(f"k_min, k_max: the band [{k_min!r}, {k_max!r}] holds {int(band.sum())} spectrum bins, "
                         "need at least 3 (widen it or use larger images)")
    slope, log_a = np.polyfit(np.log(r[band]), np.log(power[band]), 1)
    alpha = -float(slope)
    if not alpha > 0:
        raise ValueError(f"images: the radial spectrum does not decay on [{k_min!r}, {k_max!r}] "
                         f"(fitted alpha={alpha:.4g}); the snr schedule needs alpha > 0")
    r0 = math.exp((float(log_a) - math.log(noise_var)) / alpha)
    return alpha, r0


# ------------------------------------------------------------------ how SF attaches to any denoiser (contract, JiT)
def _spectral_pre_hook(module: nn.Module, args: tuple) -> tuple | None:
    # reads module.spectral at call time (no closure): deep copies and `module.spectral = None` behave
    sf = module.spectral
    if sf is None:
        return None
    if len(args) < 2:
        raise TypeError("model: called with fewer than (x_t, t) positional arguments; the contract passes "
                        "model(x_t, t, cond) positionally")
    return (sf(args[0], args[1]), *args[1:])


def attach_spectral(module: nn.Module, spectral: nn.Module | None) -> nn.Module:
    """Register `spectral` as `module.spectral` and filter the module's input x_t with it before its forward.

    One hook per module however often it is called; `spectral=None` leaves the input as it is. The name
    `spectral` must be free (absent or None) on a user's module: it is where the record and figures find SF."""
    if spectral is not None and not isinstance(spectral, nn.Module):
        raise TypeError(f"spectral: expected an nn.Module with forward(z, t) or None, got {spectral!r}")
    current = getattr(module, "spectral", None)
    if current is not None and current is not spectral:
        raise ValueError(f"spectral: {type(module).__name__} already has an attribute 'spectral' "
                         f"({type(current).__name__}); the contract puts Spectral Forcing there")
    module.spectral = spectral
    if _spectral_pre_hook not in module._forward_pre_hooks.values():
        module.register_forward_pre_hook(_spectral_pre_hook)
    return module
