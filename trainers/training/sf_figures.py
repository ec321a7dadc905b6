"""Pictures a trial logs about itself: the Spectral Forcing mask over time and its cutoff schedule c(t).

    python -c "from trainers.model.spectral_forcing import SpectralForcing; from trainers.training.sf_figures import plot_spectral_mask; \
plot_spectral_mask(SpectralForcing(32), '/tmp/mask.png')"
"""
from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")  # workers have no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

MASK_TIMES = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)


def plot_spectral_mask(spectral: torch.nn.Module, path: str | pathlib.Path) -> pathlib.Path:
    """Top row: the DCT-domain mask M(t) at a few t (DC top-left). Bottom: c(t) over t."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(2.0 * len(MASK_TIMES), 4.6), layout="constrained")
    grid = fig.add_gridspec(2, len(MASK_TIMES), height_ratios=[1.0, 0.9])
    with torch.no_grad():
        for i, t in enumerate(MASK_TIMES):
            ax = fig.add_subplot(grid[0, i])
            mask = spectral.mask(torch.tensor([t])).float().cpu()
            mask = mask.reshape(-1, *mask.shape[-2:])[0]
            ax.imshow(mask.numpy(), vmin=0, vmax=1, cmap="magma")
            ax.set_title(f"t = {t:g}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        ts = torch.linspace(0, 1, 201)
        cutoff = spectral.cutoff(ts).float().cpu().reshape(-1).numpy()
        ax = fig.add_subplot(grid[1, :])
        ax.plot(ts.numpy(), cutoff, lw=2)
        ax.set_xlabel("diffusion time t (0 = noise, 1 = data)")
        ax.set_ylabel("cutoff c(t) (radius, 1 = corner)")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Spectral Forcing mask: {spectral.extra_repr()}", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
