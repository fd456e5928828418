"""Client-side privacy mods: local differential privacy and the SecAgg+ bridge.

**Local DP** (``local_dp_mod``) follows the Gaussian mechanism of Dwork & Roth 2014 (Thm A.1) as
Flower's ``LocalDpMod`` applies it: the shared update (reply minus the adapter that was sent) is
clipped to L2 norm C with Flower's ``clip_inputs_inplace`` and Gaussian noise of standard
deviation σ = Δ·sqrt(2 ln(1.25/δ))/ε is added before the reply leaves the client. Δ = 2C: any
two clipped updates differ by at most 2C, and local DP must hide the update itself, not just
one example's part of it. ``LocalDpMod`` itself is not used because it insists on a single
ArrayRecord per message, and FLoRA/FedEx-LoRA messages carry the merged term beside the adapter.
The per-round (ε, δ) and the total spent so far (basic composition over the rounds this client
took part in, kept in a ledger in its state directory) are reported as metrics; the raw update's
norm is only logged locally, since reporting it would leak what the noise protects.

**Central DP** (``privacy.dp-mode = "central"``, see ``server.central_dp``): inside SecAgg+,
Flower's ``fixedclipping_mod`` clips the update to the clip norm and every client uploads with
weight 1; the server adds the noise once, to the secure sum.

**SecAgg+** (``secagg_mod``): Flower's ``secaggplus_mod`` masks the upload so the server only
learns the weighted sum (Bell et al. 2020, https://arxiv.org/abs/2009.08294). It speaks the
legacy FitIns/FitRes layout; the bridge here turns that into the ``arrays``/``config`` messages
the train handler reads and uploads the *update* (not the weights): its coordinates are small,
so the fixed-point quantisation of SecAgg+ loses little precision.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.differential_privacy import clip_inputs_inplace, get_norm

from client.data import client_identity
from codetasks.data.jsonl import read_json_object
from colora.contract import SECAGG_KEYS, SECAGG_MAX_WEIGHT
from colora.keys import lora_rank, truncate_rank
from runconfig import parse_run_config
from runconfig.schema import PrivacySettings

log = logging.getLogger(__name__)

LEDGER_FILE = "privacy_ledger.json"


def gaussian_sigma(privacy: PrivacySettings) -> float:
    """Noise standard deviation of the Gaussian mechanism for one clipped update."""
    sensitivity = 2.0 * privacy.dp_clip_norm
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / privacy.dp_delta)) / privacy.dp_epsilon


class LedgerError(ValueError):
    """The privacy ledger cannot be read as one; the message names the file and why."""


def read_ledger(path: Path) -> dict[str, list[float]]:
    """The ledger at ``path`` (``{"<round>": [ε, δ]}``), empty if there is none.

    A damaged ledger is a :class:`LedgerError`, never read as empty: that would restart the
    count and understate the spend. The client then fails closed (the round's noisy update is
    not sent) until the file is restored or removed knowingly; the file is left as it is.
    """
    if not path.is_file():
        return {}
    try:
        ledger = read_json_object(path)
    except (OSError, ValueError) as error:  # DataError is a ValueError
        raise LedgerError(_damaged(path, f"unreadable: {error}")) from None
    for key, spend in ledger.items():
        numbers = isinstance(spend, list) and len(spend) == 2
        numbers = numbers and all(
            type(x) in (int, float) and math.isfinite(x) and x >= 0 for x in spend
        )
        if not (key.isdecimal() and numbers):
            why = f"entry {key[:40]!r} is not '<round>': [ε, δ] with both finite and >= 0"
            raise LedgerError(_damaged(path, why))
    return ledger


def _damaged(path: Path, why: str) -> str:
    return (
        f"privacy ledger {path} is damaged ({why}); no update is sent while this client's "
        "privacy spend is unknown: restore the file, or remove it to count from zero"
    )


def record_spend(
    state_dir: Path, server_round: int, privacy: PrivacySettings
) -> tuple[float, float]:
    """Add this round's (ε, δ) to the client's ledger; returns the totals spent so far.

    Keyed by round, so a round that is re-run (a resumed server) is not counted twice.
    """
    path = state_dir / LEDGER_FILE
    ledger = read_ledger(path)
    ledger[str(server_round)] = [privacy.dp_epsilon, privacy.dp_delta]
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ledger, sort_keys=True))
    tmp.replace(path)
    return sum(e for e, _ in ledger.values()), sum(d for _, d in ledger.values())


def privatise(
    sent: dict[str, np.ndarray],
    reply: dict[str, np.ndarray],
    privacy: PrivacySettings,
    rng: np.random.Generator | None = None,
) -> tuple[dict[str, np.ndarray], float]:
    """Clip ``reply - sent`` to ``dp-clip-norm`` and add Gaussian noise; returns the new reply
    and the update's norm before clipping. ``rng`` is for tests only: clients always draw the
    noise from fresh OS entropy (None)."""
    keys = list(reply)
    if reply and lora_rank(reply) != lora_rank(sent):  # HetLoRA: compare the first r_k ranks
        sent = truncate_rank(sent, lora_rank(reply))
    base = [np.asarray(sent[k], dtype=np.float32) for k in keys]
    update = [np.asarray(reply[k], dtype=np.float32) - b for k, b in zip(keys, base, strict=True)]
    norm = get_norm(update)
    clip_inputs_inplace(update, privacy.dp_clip_norm)
    # Fresh OS entropy on every call: noise from a seeded generator could be replayed and
    # subtracted by anyone who knows the seed.
    rng = np.random.default_rng() if rng is None else rng
    sigma = gaussian_sigma(privacy)
    noisy = {
        k: b + u + rng.normal(0.0, sigma, u.shape).astype(np.float32)
        for k, b, u in zip(keys, base, update, strict=True)
    }
    return noisy, norm


def local_dp_mod(msg: Message, ctxt: Context, call_next) -> Message:
    """Clip and noise the shared update of a train reply when ``privacy.dp-clip-norm`` > 0."""
    cfg = parse_run_config(ctxt.run_config)
    reply = call_next(msg, ctxt)
    if not cfg.privacy.local_dp or reply.has_error():
        return reply
    sent = {k: a.numpy() for k, a in msg.content["arrays"].items()}
    arrays = {k: a.numpy() for k, a in reply.content["arrays"].items()}
    if not arrays:  # nothing leaves this client (local-only): nothing to protect
        return reply
    noisy, norm = privatise(sent, arrays, cfg.privacy)
    sigma = gaussian_sigma(cfg.privacy)
    metrics = reply.content["metrics"]
    server_round = int(msg.content["config"]["server-round"])
    state_dir = client_identity(dict(ctxt.node_config), cfg).state_dir
    eps_total, delta_total = record_spend(state_dir, server_round, cfg.privacy)
    metrics.update(
        {
            "dp-epsilon": cfg.privacy.dp_epsilon,
            "dp-delta": cfg.privacy.dp_delta,
            "dp-epsilon-spent": eps_total,
            "dp-delta-spent": delta_total,
            "dp-noise-std": sigma,
            # Not the update's norm or whether it was clipped: both are functions of the raw
            # update, outside the mechanism's guarantee. They stay in this client's log.
        }
    )
    reply.content["arrays"] = ArrayRecord({k: Array(v) for k, v in noisy.items()})
    log.info(
        "[client %s] local DP: update norm %.4g clipped to %.4g, noise std %.4g; "
        "(ε, δ) = (%.3g, %.1e) this round, (%.3g, %.1e) spent",
        metrics["client-id"],
        norm,
        cfg.privacy.dp_clip_norm,
        sigma,
        cfg.privacy.dp_epsilon,
        cfg.privacy.dp_delta,
        eps_total,
        delta_total,
    )
    return reply


def _from_fitins(call_next):
    """FitIns -> our train message; our reply -> a FitRes of the new adapter (legacy layout,
    which Flower's ``fixedclipping_mod`` reads)."""

    def bridged(msg: Message, ctxt: Context) -> Message:
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        config = dict(fitins.config)
        keys = str(config.pop(SECAGG_KEYS)).split(",")
        sent = dict(zip(keys, parameters_to_ndarrays(fitins.parameters), strict=True))
        secagg_config = msg.content.config_records[RECORD_KEY_CONFIGS]
        msg.content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in sent.items()}),
                "config": ConfigRecord(config),
                RECORD_KEY_CONFIGS: secagg_config,
            }
        )
        reply = call_next(msg, ctxt)
        if reply.has_error():
            return reply
        arrays = {k: a.numpy() for k, a in reply.content["arrays"].items()}
        if list(arrays) != keys:
            raise ValueError("secure aggregation: the reply's adapter keys differ from those sent")
        metrics = dict(reply.content["metrics"])
        fitres = FitRes(
            Status(Code.OK, "ok"),
            ndarrays_to_parameters([arrays[k] for k in keys]),
            int(metrics["num-examples"]),
            metrics,
        )
        reply.content = compat.fitres_to_recorddict(fitres, keep_input=False)
        return reply

    return bridged


def _to_update(call_next, central: PrivacySettings | None):
    """Outermost inside ``secaggplus_mod``: the FitRes of new weights -> a FitRes of the update
    (reply minus what was sent), the vector SecAgg+ masks.

    Under central DP every client uploads with the same weight, so the secure sum is the
    unweighted mean and one client moves it by at most C/m (the sensitivity the server's noise
    is calibrated to); example counts stay in the metrics. That weight is SecAgg+'s max_weight:
    a weight ratio of 1 keeps the fixed-point quantisation step at its finest.
    """

    def bridged(msg: Message, ctxt: Context) -> Message:
        sent = parameters_to_ndarrays(compat.recorddict_to_fitins(msg.content, True).parameters)
        reply = call_next(msg, ctxt)
        if reply.has_error():
            return reply
        fitres = compat.recorddict_to_fitres(reply.content, keep_input=False)
        # float64: SecAgg+ shifts each weighted coordinate (~1e-6) by its clipping range before
        # quantising, which in float32 would round away ~1% of it.
        weights = parameters_to_ndarrays(fitres.parameters)
        update = [
            w.astype(np.float64) - s.astype(np.float64) for w, s in zip(weights, sent, strict=True)
        ]
        if not all(np.isfinite(u).all() for u in update):
            # The server cannot screen a masked upload, so an honest client checks its own.
            raise ValueError("secure aggregation: refusing to upload a non-finite update")
        weight = fitres.num_examples
        if central is not None:
            # fixedclipping_mod clipped sent + update in float32; clip again in float64 so that
            # rounding cannot leave the norm a hair above C.
            clip_inputs_inplace(update, central.dp_clip_norm)
            weight = int(SECAGG_MAX_WEIGHT)
        fitres = FitRes(fitres.status, ndarrays_to_parameters(update), weight, fitres.metrics)
        reply.content = compat.fitres_to_recorddict(fitres, keep_input=False)
        return reply

    return bridged


def secagg_mod(msg: Message, ctxt: Context, call_next) -> Message:
    """Flower's ``secaggplus_mod`` for SecAgg+ rounds; other train messages pass through.

    Under central DP Flower's ``fixedclipping_mod`` sits between the update and the adapter
    the client trained: it clips (reply - sent) to the clip norm the server's
    ``DifferentialPrivacyClientSideFixedClipping`` put in the config.
    """
    if RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, ctxt)
    privacy = parse_run_config(ctxt.run_config).privacy
    inner = _from_fitins(call_next)
    if privacy.central_dp:
        inner = functools.partial(fixedclipping_mod, call_next=inner)
    return secaggplus_mod(msg, ctxt, _to_update(inner, privacy if privacy.central_dp else None))
