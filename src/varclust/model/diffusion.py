"""A conditional denoising diffusion model (DDPM) as the generator p(x | z) (ClusterDDPM).

Forward process (Ho et al. 2020): x_0 = 2 x - 1 for pixels x in [0, 1], and

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{s <= t} (1 - beta_s),

for t = 0 .. T-1 (index t is Ho's step t + 1). A small U-Net eps_theta(x_t, t, z) predicts the
noise; the latent code z enters through an embedding added to the time embedding. The
noise-prediction loss of one datum,

    L(x, z) = || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, z) ||^2,
    t ~ Uniform{0..T-1}, eps ~ N(0, I)  (summed over pixels),

is Ho's simplified objective: with the per-step weights restored, T * E_t[w_t L_t] plus
constants is the variational bound -ELBO >= -log p(x | z); the simplified loss drops the
weights w_t, as DDPM and ClusterDDPM train it. :class:`DiffusionClusteringModel` puts
``-weight * L(x, z)`` into the Pyro model as the log-factor ``x``, so the same model/guide pair
and ``TraceEnum_ELBO`` train encoder and generator.

During training the latent is dropped (its embedding replaced by a learned "no latent" vector)
with probability ``latent_dropout``, so sampling can use classifier-free guidance:
eps = (1 + w) eps(x_t, t, z) - w eps(x_t, t, none). On CUDA the U-Net runs under bfloat16
autocast whatever the ``precision`` setting, on the CPU when it is "bfloat16" (mixed precision,
:mod:`varclust.model.precision`; the loss is taken in float32).
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch.nn import functional as F

from ..modes import evaluating
from .generative import GenerativeModel, data_plate
from .precision import MixedPrecisionNetwork
from .pretraining_losses import DiffusionAutoencoderLoss

__all__ = [
    "ConditionalDDPM",
    "ConditionalUNet",
    "DiffusionClusteringModel",
    "check_unit_interval",
    "noise_schedule",
    "SCHEDULES",
]


def check_unit_interval(x: Tensor) -> None:
    """The diffusion generator models pixels in [0, 1]: raise ValueError otherwise."""
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"the ddpm generator needs pixels in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
            "rescale the data (e.g. divide 8-bit images by 255)"
        )


def noise_schedule(kind: str, num_steps: int) -> Tensor:
    """betas (T,) in float64.

    ``linear``: Ho et al.'s 1e-4 .. 0.02 for T = 1000, scaled by 1000 / T for other T (as in
    Nichol & Dhariwal's code), so that the total noise, hence abar_T, stays about the same:
    T = 400 gives 2.5e-4 .. 0.05. ``clusterddpm``: 1e-4 .. 0.02 at any T, as ClusterDDPM (and
    Ho et al. at T = 1000); at T = 400 abar_T is then 0.018 (sqrt 0.13 of the image is left at
    the last step) and at T = 200 it is 0.13. ``cosine``: Nichol & Dhariwal's
    abar(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2), s = 0.008, betas capped at 0.999.
    """
    if num_steps < 1:
        raise ValueError(f"the diffusion needs at least 1 step, got {num_steps}")
    if kind in ("linear", "clusterddpm"):
        scale = 1000.0 / num_steps if kind == "linear" else 1.0
        return torch.linspace(scale * 1e-4, min(scale * 0.02, 0.999), num_steps,
                              dtype=torch.float64)
    if kind == "cosine":
        s = 0.008
        steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        abar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown noise schedule {kind!r}; choose {' '.join(map(repr, SCHEDULES))}")


#: the noise schedules :func:`noise_schedule` knows
SCHEDULES = ("linear", "clusterddpm", "cosine")


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer steps t (B,) -> (B, dim) (Transformer / DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([args.sin(), args.cos()], -1)
    return F.pad(emb, (0, dim % 2))


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResidualBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the embedding added in between, a 1x1 skip when widths differ."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))
        self.conv2 = nn.Sequential(_norm(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        out = self.conv1(h) + self.emb(emb)[:, :, None, None]
        return self.conv2(out) + self.skip(h)


class ConditionalUNet(MixedPrecisionNetwork):
    """eps_theta(x_t, t, z): images (B, C, H, W) with H, W divisible by 4, steps (B,), codes
    (B, D) -> predicted noise (B, C, H, W), float32.

    Two resolutions down (stride-2 convolutions) and up (nearest upsampling + convolution),
    widths ``width`` and ``2 * width``, one residual block per level with skip connections.
    The code enters as MLP(z) added to the time embedding; ``keep`` (B,) in {0, 1} drops it
    (then a learned "no latent" vector stands in), for classifier-free guidance.
    """

    def __init__(self, channels: int, latent_dim: int, width: int = 64,
                 compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__(compute_dtype)
        emb = 4 * width
        self.width = width
        self.time_mlp = nn.Sequential(nn.Linear(width, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.latent_mlp = nn.Sequential(nn.Linear(latent_dim, emb), nn.SiLU(),
                                        nn.Linear(emb, emb))
        self.no_latent = nn.Parameter(torch.zeros(emb))
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.down1 = ResidualBlock(width, width, emb)
        self.pool1 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.down2 = ResidualBlock(width, 2 * width, emb)
        self.pool2 = nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1)
        self.mid = ResidualBlock(2 * width, 2 * width, emb)
        self.up2 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.dec2 = ResidualBlock(4 * width, 2 * width, emb)
        self.up1 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.dec1 = ResidualBlock(3 * width, width, emb)
        self.head = nn.Sequential(_norm(width), nn.SiLU(), nn.Conv2d(width, channels, 3,
                                                                     padding=1))

    def compute_dtype_on(self, device: torch.device) -> torch.dtype:
        """bfloat16 on CUDA (as the U-Net has always run there), else :attr:`compute_dtype`."""
        return torch.bfloat16 if device.type == "cuda" else self.compute_dtype

    def forward(self, x: Tensor, t: Tensor, z: Tensor, keep: Tensor | None = None) -> Tensor:
        with self.autocast(x):
            noise = self._predict_noise(x, t, z, keep)
        return self.leave_autocast(noise)

    def _predict_noise(self, x: Tensor, t: Tensor, z: Tensor, keep: Tensor | None) -> Tensor:
        latent = self.latent_mlp(z)
        if keep is not None:
            k = keep.to(latent.dtype)[:, None]
            latent = k * latent + (1 - k) * self.no_latent
        emb = self.time_mlp(timestep_embedding(t, self.width)) + latent
        h1 = self.down1(self.stem(x), emb)                    # (B, w, H, W)
        h2 = self.down2(self.pool1(h1), emb)                  # (B, 2w, H/2, W/2)
        h = self.mid(self.pool2(h2), emb)                     # (B, 2w, H/4, W/4)
        h = self.up2(F.interpolate(h, size=h2.shape[-2:], mode="nearest"))
        h = self.dec2(torch.cat([h, h2], 1), emb)
        h = self.up1(F.interpolate(h, size=h1.shape[-2:], mode="nearest"))
        h = self.dec1(torch.cat([h, h1], 1), emb)
        return self.head(h)


class ConditionalDDPM(nn.Module):
    """The diffusion generator: schedule, noise-prediction loss and the two samplers.

    Args:
        data_shape: (C, H, W) of one image, H and W divisible by 4.
        latent_dim: D.
        num_steps: T.
        schedule: one of :data:`SCHEDULES` (see :func:`noise_schedule`).
        width: the U-Net's base width.
        latent_dropout: probability of dropping z during training (classifier-free guidance).
        compute_dtype: the U-Net's on the CPU (:class:`ConditionalUNet`).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        latent_dim: int,
        num_steps: int = 1000,
        schedule: str = "linear",
        width: int = 64,
        latent_dropout: float = 0.1,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if len(data_shape) != 3 or data_shape[1] % 4 or data_shape[2] % 4:
            raise ValueError(
                f"the ddpm generator takes (C, H, W) images with H and W divisible by 4, not "
                f"data of shape {tuple(data_shape)}; use generator='mlp' for vectors"
            )
        if not 0.0 <= latent_dropout < 1.0:
            raise ValueError(f"latent_dropout must be in [0, 1), got {latent_dropout}")
        self.data_shape = tuple(data_shape)
        self.num_steps = num_steps
        self.latent_dropout = latent_dropout
        self.unet = ConditionalUNet(data_shape[0], latent_dim, width, compute_dtype)
        betas = noise_schedule(schedule, num_steps)
        abar = torch.cumprod(1 - betas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        # derived from the config, not learned: kept out of the state dict
        for name, value in {
            "betas": betas,
            "alpha_bar": abar,
            "alpha_bar_prev": abar_prev,
            # q(x_{t-1} | x_t, x_0) = N(c0 x_0 + ct x_t, var)
            "posterior_var": betas * (1 - abar_prev) / (1 - abar),
            "posterior_c0": betas * abar_prev.sqrt() / (1 - abar),
            "posterior_ct": (1 - betas) .sqrt() * (1 - abar_prev) / (1 - abar),
        }.items():
            self.register_buffer(name, value.float(), persistent=False)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise; x0 (B, C, H, W) in [-1, 1], t (B,)."""
        abar = self.alpha_bar[t].view(-1, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def noise_loss(
        self, x: Tensor, z: Tensor, t: Tensor | None = None, noise: Tensor | None = None
    ) -> Tensor:
        """The noise-prediction loss per datum (B,), summed over pixels.

        Args:
            x: (B, C, H, W) pixels in [0, 1].
            z: (B, D) codes.
            t, noise: the step (B,) and noise (B, C, H, W); drawn when not given.
        """
        x0 = 2 * x - 1
        if t is None:
            t = torch.randint(0, self.num_steps, (x.shape[0],), device=x.device)
        if noise is None:
            noise = torch.randn_like(x0)
        keep = None
        if self.training and self.latent_dropout > 0:
            keep = torch.rand(x.shape[0], device=x.device) >= self.latent_dropout
        eps = self.unet(self.q_sample(x0, t, noise), t, z, keep)
        return (noise - eps).pow(2).flatten(1).sum(-1)

    @torch.no_grad()
    def latent_reliance(self, x: Tensor, z: Tensor, seed: int = 0) -> float:
        """How much the noise prediction relies on the codes: the relative rise of the mean
        noise loss on x (B, C, H, W) when the codes z (B, D) are shuffled across the batch,
        at the same steps and noise, the latent never dropped.

        About 0 means the generator ignores z; then nothing but the prior term acts on the
        encoder in the M-step, and the codes collapse into one mixture component.
        """
        gen = torch.Generator().manual_seed(seed)
        t = torch.randint(0, self.num_steps, (x.shape[0],), generator=gen).to(x.device)
        noise = torch.randn(x.shape, generator=gen).to(x.device)
        perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
        with evaluating(self):  # no latent dropout
            own = self.noise_loss(x, z, t, noise).mean()
            other = self.noise_loss(x, z[perm], t, noise).mean()
        return float((other - own) / own)

    def _guided_eps(self, x_t: Tensor, t: Tensor, z: Tensor, guidance: float) -> Tensor:
        eps = self.unet(x_t, t, z)
        if guidance != 0:
            none = torch.zeros(len(z), dtype=torch.bool, device=z.device)
            eps = (1 + guidance) * eps - guidance * self.unet(x_t, t, z, none)
        return eps

    def _predict_x0(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        abar = self.alpha_bar[t].view(-1, 1, 1, 1)
        return ((x_t - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1, 1)

    @torch.no_grad()
    def sample(
        self, z: Tensor, steps: int | None = None, guidance: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Images for codes z (B, D): (B, C, H, W) in [0, 1].

        ``steps`` None or T: the ancestral sampler over all T steps (x_0 predictions clipped to
        [-1, 1]). ``steps`` < T: the deterministic strided sampler (DDIM, eta = 0) over
        ``steps`` evenly spaced steps. ``guidance`` w: classifier-free guidance weight.
        """
        with evaluating(self):  # no latent dropout
            steps = self.num_steps if steps is None else int(steps)
            if not 1 <= steps <= self.num_steps:
                raise ValueError(f"steps must be in [1, {self.num_steps}], got {steps}")
            shape = (z.shape[0], *self.data_shape)
            x = torch.randn(shape, device=z.device, generator=generator)
            if steps == self.num_steps:
                x = self._ancestral(x, z, guidance, generator)
            else:
                x = self._strided(x, z, steps, guidance)
        return ((x + 1) / 2).clamp(0, 1)

    def _ancestral(self, x: Tensor, z: Tensor, guidance: float, generator) -> Tensor:
        for step in reversed(range(self.num_steps)):
            t = torch.full((len(z),), step, device=z.device, dtype=torch.long)
            x0 = self._predict_x0(x, t, self._guided_eps(x, t, z, guidance))
            mean = self.posterior_c0[step] * x0 + self.posterior_ct[step] * x
            if step > 0:
                noise = torch.randn(x.shape, device=x.device, generator=generator)
                x = mean + self.posterior_var[step].sqrt() * noise
            else:
                x = mean
        return x

    def _strided(self, x: Tensor, z: Tensor, steps: int, guidance: float) -> Tensor:
        times = torch.linspace(self.num_steps - 1, 0, steps).round().long().tolist()
        for i, step in enumerate(times):
            t = torch.full((len(z),), step, device=z.device, dtype=torch.long)
            eps = self._guided_eps(x, t, z, guidance)
            x0 = self._predict_x0(x, t, eps)
            abar = self.alpha_bar[step]
            eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
            abar_next = self.alpha_bar[times[i + 1]] if i + 1 < len(times) else x.new_tensor(1.0)
            x = abar_next.sqrt() * x0 + (1 - abar_next).sqrt() * eps
        return x


class DiffusionClusteringModel(GenerativeModel):
    """p(c) p(z | c) with the diffusion generator: c and z as in :class:`ClusteringModel`, and
    the datum scored by the log-factor ``x`` = -weight * L(x, z) (see the module docstring).

    Args:
        prior: emits ``cluster`` and ``z`` inside the data plate, returns z (..., B, D).
        generator: the :class:`ConditionalDDPM`.
        weight: the factor's scale; 10 reproduces ClusterDDPM's 1 : 0.1 weighting of noise loss
            and KL.
    """

    #: the factor ``x`` is a noise-prediction loss, not a density of x
    scores_with_likelihood = False

    def __init__(self, prior: PyroModule, generator: ConditionalDDPM, weight: float = 10.0
                 ) -> None:
        super().__init__()
        self.prior = prior
        self.generator = generator
        self.weight = float(weight)
        self.data_shape = generator.data_shape

    def forward(self, x: Tensor, indices: Tensor | None = None, num_data: int | None = None,
                cluster: Tensor | None = None, cluster_mask: Tensor | None = None):
        """x: (B, C, H, W) pixels in [0, 1]; indices: (B,) into the full data; num_data: N;
        cluster (B,), cluster_mask (B,) bool: semi-supervised labels, the cluster observed
        where the mask is true (see :meth:`MixturePrior.forward`)."""
        with data_plate(x, indices, num_data):
            z = self.prior(None, cluster, cluster_mask)
            pyro.factor("x", -self.weight * self.generator.noise_loss(x, z))

    def generate(self, z: Tensor, steps: int | None = None, guidance: float = 0.0) -> Tensor:
        """Run the reverse chain for codes z (B, D): images (B, C, H, W) in [0, 1]."""
        return self.generator.sample(z, steps=steps, guidance=guidance)

    def check_data(self, x: Tensor) -> None:
        """Pixels in [0, 1]."""
        check_unit_interval(x)

    def generator_modules(self) -> list[nn.Module]:
        return [self.generator]

    def pretraining_loss(self, encoder: nn.Module) -> nn.Module:
        """The diffusion autoencoder's noise loss given z = loc(x)."""
        return DiffusionAutoencoderLoss(encoder, self.generator)

    def latent_reliance(self, x: Tensor, codes: Tensor, seed: int) -> float:
        """:meth:`ConditionalDDPM.latent_reliance` of the generator."""
        return self.generator.latent_reliance(x, codes, seed)
