"""The moves on the parameters outside the ELBO: settings that change the mixture between
epochs by a rule of their own, not by a gradient of the ELBO. ``metrics.json`` lists those a
fit turns on under ``moves_outside_elbo``.

- ``revive_clusters``: a cluster holding too few data takes half of the largest
  (:mod:`.revival`).
- ``mixture_restart_epoch``: the mixture starts again at one fitted to the codes
  (:func:`.warm_start.restart_mixture`).
"""

from __future__ import annotations

__all__ = ["MOVES_OUTSIDE_ELBO", "moves_outside_elbo"]

#: the settings of moves on the parameters outside the ELBO, each named after its field
MOVES_OUTSIDE_ELBO = ("revive_clusters", "mixture_restart_epoch")


def moves_outside_elbo(config) -> list[str]:
    """The moves outside the ELBO that a :class:`~varclust.config.FitConfig` turns on, as
    ``metrics.json`` lists them."""
    return [name for name in MOVES_OUTSIDE_ELBO if getattr(config, name)]
