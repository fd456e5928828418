"""FedYogi on the shared LoRA factors (Reddi et al. 2021, https://arxiv.org/abs/2003.00295).

As ``fedadam`` but with Yogi's additive second moment,
v_t = v_{t-1} - (1 - beta2) * Delta^2 * sign(v_{t-1} - Delta^2), which cannot jump up by a factor
as Adam's can (``strategies.maths.server_opt.fedyogi_step``). Keys, state and everything else are
FedAdam's.
"""

from __future__ import annotations

from strategies.fedadam import FedAdam
from strategies.maths.server_opt import fedyogi_step


class FedYogi(FedAdam, name="fedyogi"):
    """FedAvg of the replies, then a server Yogi step with persistent moments."""

    server_update = staticmethod(fedyogi_step)
