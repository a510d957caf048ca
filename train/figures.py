"""The report's figures, one PNG each, every run of the report side by side (matplotlib's Agg canvas).

    latent.png         mu of test images coloured by label, each VAE point with its 1-sigma ellipse; for D > 2
                       the two dimensions with the highest KL (a VAE) or variance of the code (an AE)
    prior_samples.png  decode(z), z ~ N(0, I): plausible images from a VAE, mostly garbage from an AE
    manifold.png       decode a grid of normal quantiles (Kingma & Welling, Fig. 4); other dimensions at 0
    interpolation.png  test image a, decode of the straight line from mu(a) to mu(b), test image b
    kl_per_dim.png     KL(q(z_u|x) || N(0, 1)) per dimension, active units marked (VAEs only)

Used by `edgevae report` (train/report.py), which encodes each run once into a `Panel`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .report import make_grid

PANEL_INCHES = 5.2  # side of one run's panel
DPI = 110
PRIOR_SAMPLES = 64  # images decoded from N(0, I) per run
PRIOR_SEED = 0  # their z
MANIFOLD_STEPS = 20  # grid side; quantiles evenly spaced in [0.05, 0.95] as runtime.Model.manifold
INTERPOLATION_PAIRS, INTERPOLATION_STEPS = 8, 10  # strips, and decoded points on each
ELLIPSE_ALPHA = 0.15  # fill of the sigma regions: overlapping regions darken, isolated ones stay faint


@dataclass
class Panel:
    """One run, encoded on its test set."""
    title: str  # "VAE  runs/mnist"
    model: torch.nn.Module
    x: torch.Tensor  # (N, C, H, W) test images in [0, 1]
    y: torch.Tensor  # (N,) labels
    classes: tuple[str, ...]
    mu: torch.Tensor  # (N, D): a spatial latent (C, h, w) flattened, so a dimension is one number of it
    logvar: torch.Tensor | None  # (N, D); None for the AE
    kl: torch.Tensor | None  # (D,) KL per dimension; None for the AE
    activity: torch.Tensor  # (D,) variance of mu over images

    @property
    def variational(self) -> bool:
        return self.logvar is not None

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The mean images of flat latents (N, D), reshaped to the model's latent shape."""
        return self.model.decode(z.view(len(z), *self.model.latent_shape), labels)

    def dims(self) -> tuple[int, int]:
        """The two dimensions drawn: 0, 1 for D = 2; else the highest KL (VAE) or code variance (AE)."""
        if self.mu.shape[1] <= 2:
            return 0, min(1, self.mu.shape[1] - 1)
        score = self.kl if self.variational else self.activity
        first, second = torch.argsort(score, descending=True)[:2].tolist()
        return first, second

    def dims_note(self) -> str:
        d = self.mu.shape[1]
        if d <= 2:
            return "z1, z2"
        a, b = self.dims()
        return f"dims {a}, {b} of {d} ({'highest KL' if self.variational else 'largest variance'})"

    def labels(self, n: int) -> torch.Tensor | None:
        """Labels to decode n latents with: None, or for a conditional model one class per row of 8."""
        if not self.model.conditional:
            return None
        return torch.arange(n) // 8 % self.model.num_classes


def _figure(columns: int, rows: int = 1, height: float = PANEL_INCHES, width: float = PANEL_INCHES):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * columns, height * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


def _show(ax, images: torch.Tensor, nrow: int, title: str) -> None:
    pixels = make_grid(images, nrow)
    pixels = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def _colours(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    return [cmap(i / max(n - 1, 1)) if n > 20 else cmap(i) for i in range(n)]


def latent_space(panels: list[Panel], path, points: int) -> None:
    from matplotlib.collections import EllipseCollection
    from matplotlib.lines import Line2D

    figure, axes = _figure(len(panels))
    for ax, p in zip(axes[0], panels):
        a, b = p.dims()
        n = min(points, len(p.mu))
        mu, labels = p.mu[:n, [a, b]].numpy(), p.y[:n].numpy()
        colours = np.array(_colours(len(p.classes)))[labels]
        if p.variational:
            sigma = (0.5 * p.logvar[:n, [a, b]]).exp().numpy()
            ax.add_collection(EllipseCollection(2 * sigma[:, 0], 2 * sigma[:, 1], np.zeros(n), units="xy",
                                                offsets=mu, offset_transform=ax.transData,
                                                facecolors=np.c_[colours[:, :3], np.full(n, ELLIPSE_ALPHA)],
                                                edgecolors="none"))
            reach = np.abs(mu) + sigma
        else:
            reach = np.abs(mu)
        ax.scatter(mu[:, 0], mu[:, 1], s=4, c=colours, linewidths=0)
        for r, style in ((1, "--"), (2, ":")):
            ax.add_patch(_circle(r, style))
        limit = max(3.0, float(np.percentile(reach, 99.5)) * 1.05)
        ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal",
               xlabel=f"z[{a}]", ylabel=f"z[{b}]")
        what = "mu and its 1-sigma region" if p.variational else "code z (a point, no sigma)"
        ax.set_title(f"{p.title}\n{what} of {n} test images\n{p.dims_note()}", fontsize=10)
        ax.grid(alpha=0.2)
    handles = [Line2D([], [], marker="o", linestyle="", color=c, label=name)
               for c, name in zip(_colours(len(panels[0].classes)), panels[0].classes)]
    handles += [Line2D([], [], color="0.3", linestyle="--", label="N(0, I): 1 sd"),
                Line2D([], [], color="0.3", linestyle=":", label="N(0, I): 2 sd")]
    figure.legend(handles=handles, loc="outside right center", fontsize=9, frameon=False)
    figure.savefig(path)


def _circle(radius: float, style: str):
    from matplotlib.patches import Circle

    return Circle((0, 0), radius, fill=False, edgecolor="0.3", linestyle=style, linewidth=1.0)


def prior_samples(panels: list[Panel], path) -> None:
    figure, axes = _figure(len(panels))
    for ax, p in zip(axes[0], panels):
        z = torch.randn(PRIOR_SAMPLES, p.mu.shape[1], generator=torch.Generator().manual_seed(PRIOR_SEED))
        _show(ax, p.decode(z, p.labels(PRIOR_SAMPLES)), 8,
              f"{p.title}\ndecode(z), z ~ N(0, I), seed {PRIOR_SEED}")
    figure.savefig(path)


def manifold(panels: list[Panel], path) -> None:
    figure, axes = _figure(len(panels))
    q = torch.special.ndtri(torch.linspace(0.05, 0.95, MANIFOLD_STEPS, dtype=torch.float64)).float()
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")  # rows: z2 descending ("up" is +z2); columns: z1
    for ax, p in zip(axes[0], panels):
        a, b = p.dims()
        z = torch.zeros(MANIFOLD_STEPS ** 2, p.mu.shape[1])
        z[:, a], z[:, b] = z1.flatten(), z2.flatten()
        labels = None if not p.model.conditional else torch.zeros(len(z), dtype=torch.int64)
        notes = ([] if p.mu.shape[1] <= 2 else ["the other dimensions 0"]) + \
            ([f"class {p.classes[0]}"] if labels is not None else [])
        _show(ax, p.decode(z, labels), MANIFOLD_STEPS,
              f"{p.title}\nnormal quantiles 0.05..0.95 on {p.dims_note()}" + ("\n" + ", ".join(notes) if notes else ""))
    figure.savefig(path)


def interpolation(panels: list[Panel], path) -> None:
    height = PANEL_INCHES * INTERPOLATION_PAIRS / (INTERPOLATION_STEPS + 2) + 0.6  # the strips' aspect + a title
    figure, axes = _figure(len(panels), height=height)
    for ax, p in zip(axes[0], panels):
        a, b = _pairs(p.y, p.model.conditional)
        t = torch.linspace(0, 1, INTERPOLATION_STEPS).view(1, -1, 1)  # (1, S, 1)
        z = (1 - t) * p.mu[a].unsqueeze(1) + t * p.mu[b].unsqueeze(1)  # (pairs, S, D)
        labels = p.y[a].repeat_interleave(INTERPOLATION_STEPS) if p.model.conditional else None
        decoded = p.decode(z.flatten(0, 1), labels).view(len(a), INTERPOLATION_STEPS, *p.x.shape[1:])
        strips = torch.cat([p.x[a].unsqueeze(1), decoded, p.x[b].unsqueeze(1)], dim=1)  # (pairs, S + 2, C, H, W)
        _show(ax, strips.flatten(0, 1), INTERPOLATION_STEPS + 2,
              f"{p.title}\ntest image, decode of mu(a) -> mu(b) in {INTERPOLATION_STEPS} steps, test image")
    figure.savefig(path)


def _pairs(y: torch.Tensor, same_class: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """INTERPOLATION_PAIRS (a, b) index pairs of test images: different classes (the same for conditional)."""
    labels, a, b, used = y.tolist(), [], [], set()
    for i in range(len(labels)):
        j = next((j for j in range(i + 1, len(labels))
                  if j not in used and (labels[i] == labels[j]) == same_class), None)
        if i not in used and j is not None:
            a.append(i)
            b.append(j)
            used |= {i, j}
        if len(a) == INTERPOLATION_PAIRS:
            break
    if not a:  # no such pair (one class only): neighbours
        a = list(range(0, len(labels) - 1, 2))[:INTERPOLATION_PAIRS]
        b = [i + 1 for i in a]
    return torch.tensor(a), torch.tensor(b)


def kl_per_dim(panels: list[Panel], path, threshold: float) -> None:
    shown = [p for p in panels if p.variational]
    width = max(PANEL_INCHES, 0.16 * max(p.mu.shape[1] for p in shown))  # ~0.16 inch a bar
    figure, axes = _figure(len(shown), height=PANEL_INCHES * 0.6, width=width)
    for ax, p in zip(axes[0], shown):
        order = torch.argsort(p.kl, descending=True)
        active = (p.activity[order] > threshold).numpy()
        ax.bar(np.arange(len(order)), p.kl[order].numpy(), color=np.where(active, "tab:blue", "0.7"))
        ax.set_xticks(np.arange(len(order)), [str(u) for u in order.tolist()], fontsize=7 if len(order) > 20 else 9,
                      rotation=90 if len(order) > 20 else 0)
        ax.set(xlabel="latent dimension (sorted by KL)", ylabel="nats per image")
        ax.set_title(f"{p.title}\nKL(q(z_u|x) || N(0, 1)) per dimension; {int(active.sum())} of {len(order)} "
                     f"active\n(blue: Cov_x(E_q[z_u|x]) > {threshold}; grey: inactive)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    figure.savefig(path)
