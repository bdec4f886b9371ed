"""The ExpConcrete distribution (Maddison, Mnih & Teh 2017) as a Pyro distribution.

``torch.distributions.ExpRelaxedCategorical`` is the law of y = log w for w ~
RelaxedOneHotCategorical(T, logits) (the Concrete / Gumbel-softmax distribution of Jang et al.
2017): y_k = (logits_k + g_k) / T - logsumexp_j((logits_j + g_j) / T) with Gumbel noise g. Its
density is, with K categories and alpha = exp(logits),

    log p(y) = log (K-1)! + (K-1) log T + sum_k (log alpha_k - T y_k)
               - K logsumexp_k (log alpha_k - T y_k).

Working with y rather than w is what Maddison et al. recommend (their appendix C): at low
temperatures w has coordinates that underflow to 0, where log w is -inf, while y stays finite.
The change of variables y -> w = exp(y) has the same Jacobian under any two such laws, so
E_q[log q(y) - log p(y)] = E_q[log q(w) - log p(w)]: a bound written over y is the bound over w.

Pyro wraps most torch distributions in ``pyro.distributions``; this one it does not, so it is
wrapped here with Pyro's mixin (``expand`` and the plate broadcasting then work as for any Pyro
distribution).
"""

from __future__ import annotations

from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch.distributions import relaxed_categorical

__all__ = ["ExpRelaxedCategorical"]


class ExpRelaxedCategorical(relaxed_categorical.ExpRelaxedCategorical, TorchDistributionMixin):
    """y = log w for w ~ RelaxedOneHotCategorical(temperature, logits): event shape (K,),
    batch shape ``logits.shape[:-1]``; ``rsample`` is reparameterised (Gumbel noise)."""

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ExpRelaxedCategorical, _instance)
        return super().expand(batch_shape, _instance=new)
