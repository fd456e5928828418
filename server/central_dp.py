"""Central differential privacy on the SecAgg+ sum (``privacy.dp-mode = "central"``).

DP-FedAvg with fixed clipping (McMahan et al. 2018, https://arxiv.org/abs/1710.06963;
Andrew et al. 2021, https://arxiv.org/abs/1905.03871) as Flower ships it:
``DifferentialPrivacyClientSideFixedClipping`` on the server and ``fixedclipping_mod`` on the
clients (``client.privacy``). Each client clips its update to L2 norm C; SecAgg+ gives the
server only the *unweighted* mean of the m clipped updates (clients upload with equal weight,
so one client moves the mean by at most C/m); the wrapper adds Gaussian noise of standard
deviation z·C/m once, to the aggregate. Adding or removing one client's update is then a
Gaussian mechanism with noise multiplier z, whatever the other clients sent.

The (ε, δ) spent over the rounds is tracked by Flower's ``RdpAccountant`` (Rényi DP, Mironov
2017, https://arxiv.org/abs/1702.07476), whose backend is Google's ``dp-accounting``; with
``privacy.dp-target-epsilon`` the noise multiplier is calibrated to the whole run with
``dp_accounting.calibrate_dp_mechanism`` on the same backend. No client sampling is assumed
(every sampled client could be anyone), so no amplification by sampling is claimed.

Noise on the aggregate is only valid when the strategy's new adapter *is* global + mean update:
a server optimiser (FedAdam) or a partial average (FFA-LoRA) would change the sensitivity or
noise frozen factors, so only :data:`CENTRAL_DP_STRATEGIES` are accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import dp_accounting
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping
from flwr.supercore.differential_privacy import compute_stdv
from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from runconfig.fields import ConfigError
from runconfig.schema import RunConfig

log = logging.getLogger(__name__)

# Strategies whose aggregate under SecAgg+ is exactly global + mean update.
CENTRAL_DP_STRATEGIES = ("fedavg", "fedprox")
# Without sampling amplification the population does not enter the bound; Flower's accountant
# still wants one at least as large as any round's sample.
POPULATION = 2**31 - 1
METRICS_KEY = "central_dp"  # RoundRecord.central_dp, the per-round entry in metrics.jsonl


def _rdp_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """ε at δ after ``releases`` Gaussian releases, on the accountant's own backend."""
    accountant = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.GaussianDpEvent(noise_multiplier)
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, releases))
    return float(accountant.get_epsilon(delta))


def calibrate_noise_multiplier(target_epsilon: float, delta: float, releases: int) -> float:
    """The smallest noise multiplier whose ``releases`` rounds spend at most ``target_epsilon``.

    ``calibrate_dp_mechanism`` returns a value within 1e-6 of the optimum on either side; the
    result is nudged up until the accountant confirms the budget holds.
    """
    z = float(
        dp_accounting.calibrate_dp_mechanism(
            dp_accounting.rdp.RdpAccountant,
            lambda z: dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), releases),
            target_epsilon,
            delta,
        )
    )
    while _rdp_epsilon(z, releases, delta) > target_epsilon:
        z += 1e-6
    return z


class CentralDp:
    """Flower's client-side-clipping DP wrapper around the round's strategy, plus the run's
    privacy accountant. The round loop calls :meth:`configure_train` and
    :meth:`aggregate_train` instead of the strategy's own."""

    noise_seed: int | None = None  # None: fresh OS entropy every round (always, but tests)

    def __init__(self, strategy: Any, cfg: RunConfig) -> None:
        privacy = cfg.privacy
        if cfg.strategy.name not in CENTRAL_DP_STRATEGIES:
            raise ConfigError(
                f"privacy.dp-mode = 'central' cannot be combined with strategy.name = "
                f"{cfg.strategy.name!r}: the noise goes on the aggregate, which must be "
                f"global + mean update; strategies that allow it: "
                f"{', '.join(CENTRAL_DP_STRATEGIES)}."
            )
        rounds = cfg.run.num_server_rounds
        self.noise_multiplier = privacy.dp_noise_multiplier or calibrate_noise_multiplier(
            privacy.dp_target_epsilon, privacy.dp_delta, rounds
        )
        self.clip_norm, self.delta = privacy.dp_clip_norm, privacy.dp_delta
        # num_sampled_clients is reset every round to the number of updates actually summed.
        self.wrapper = DifferentialPrivacyClientSideFixedClipping(
            strategy, self.noise_multiplier, self.clip_norm, num_sampled_clients=1
        )
        self.accountant = RdpAccountant(
            PrivacyConfig(
                target_delta=self.delta,
                population_size=POPULATION,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
            )
        )
        self.planned_epsilon = _rdp_epsilon(self.noise_multiplier, rounds, self.delta)
        log.info(
            "central DP: clip norm %g, noise multiplier %.4f; %d rounds spend ε = %.3f at δ = %g",
            self.clip_norm,
            self.noise_multiplier,
            rounds,
            self.planned_epsilon,
            self.delta,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid
    ) -> Iterable[Message]:
        """The strategy's train messages, with the clip norm ``fixedclipping_mod`` reads."""
        return self.wrapper.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The strategy's aggregate plus N(0, (z·C/m)²) per coordinate; one accounted release."""
        if not replies:  # nothing to release, nothing spent (the loop never gets here)
            return None, None
        # Sensitivity is C/m for the m updates actually in the mean: a dropout must raise the
        # noise, not keep the level set for the sampled count.
        self.wrapper.num_sampled_clients = len(replies)
        # Flower draws the noise from NumPy's global generator: reseed it from OS entropy so
        # that no seed anyone knows can replay (and subtract) it. Tests alone set noise_seed.
        np.random.seed(self.noise_seed)
        arrays, metrics = self.wrapper.aggregate_train(server_round, replies)
        if arrays is not None:
            self.accountant.compose(
                GaussianPrivacyEvent(self.noise_multiplier, len(replies), POPULATION)
            )
            spent = self.accountant.get_privacy_spent()
            log.info(
                "central DP round %d: noise std %.4g on the mean of %d clipped updates; "
                "(ε, δ) = (%.3f, %g) spent after %d releases",
                server_round,
                compute_stdv(self.noise_multiplier, self.clip_norm, len(replies)),
                len(replies),
                spent.epsilon,
                spent.delta,
                spent.num_releases,
            )
        return arrays, metrics

    def restore(self, records: Iterable[dict]) -> None:
        """Re-compose the releases of rounds already in ``metrics.jsonl`` (resume)."""
        for record in records:
            if entry := record.get(METRICS_KEY):
                self.accountant.compose(
                    GaussianPrivacyEvent(entry["noise_multiplier"], entry["clients"], POPULATION)
                )

    def round_log(self, clients: int) -> dict[str, float | int]:
        """The ``central_dp`` entry of this round's record (``RoundRecord.central_dp``)."""
        spent = self.accountant.get_privacy_spent()
        return {
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
            "clients": clients,
            "noise_std": compute_stdv(self.noise_multiplier, self.clip_norm, max(clients, 1)),
            "epsilon_spent": spent.epsilon,
            "delta": spent.delta,
            "releases": spent.num_releases,
            "epsilon_planned": self.planned_epsilon,
        }


def build_central_dp(strategy: Any, cfg: RunConfig) -> CentralDp | None:
    return CentralDp(strategy, cfg) if cfg.privacy.central_dp else None
