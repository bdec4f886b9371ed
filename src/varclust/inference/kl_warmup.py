"""The KL warm-up: the latent terms of the ELBO scaled by beta in (0, 1] early in training
(Bowman et al. 2016; Sonderby et al. 2016), in SVI epochs and EM's M-steps alike.

    ELBO_beta = E_q[log p(x | z)] - beta * KL(q(z, c | x) || p(z, c))

Applied as a Pyro messenger around the steps, so model and guide stay the plain ELBO's.
"""

from __future__ import annotations

from collections.abc import Callable

from pyro.poutine.messenger import Messenger

__all__ = ["KLScale", "kl_warmup", "kl_warmup_weight"]


def kl_warmup_weight(epoch: int, warmup_epochs: int) -> float:
    """beta_e = min(1, (e + 1) / E) for epoch e (0-based) and E warm-up epochs; 1 when E = 0."""
    if warmup_epochs < 0:
        raise ValueError(f"the KL warm-up needs warmup_epochs >= 0, got {warmup_epochs}")
    return 1.0 if warmup_epochs == 0 else min(1.0, (epoch + 1) / warmup_epochs)


def kl_warmup(iterations: int) -> Callable[[int], float]:
    """The M-step's KL weight over EM iterations i = 0, 1, ...: (i + 1) / (W + 1) for the first
    W = ``iterations``, then 1 (W = 0: always 1)."""
    if iterations < 0:
        raise ValueError(f"the KL warm-up needs iterations >= 0, got {iterations}")
    return lambda i: kl_warmup_weight(i, iterations + 1)


class KLScale(Messenger):
    """Scale the log-probability of every site but the data site ``x`` by ``beta`` (in model and
    guide alike, when the ELBO is computed inside the block): the ELBO becomes
    E_q[log p(x | z)] - beta * KL(q(z, c | x) || p(z, c)), the KL warm-up of the M-step. Every
    enumerated site gets the same factor, as ``TraceEnum_ELBO`` requires."""

    def __init__(self, beta: float, data_site: str = "x") -> None:
        super().__init__()
        if not 0 < beta <= 1:
            raise ValueError(f"the KL weight must be in (0, 1], got {beta}")
        self.beta, self.data_site = float(beta), data_site

    def _process_message(self, msg: dict) -> None:
        if msg["name"] != self.data_site:
            msg["scale"] = self.beta * msg["scale"]
