"""FedYogi: as FedAdam's test, with Yogi's second moment."""

from strategies.maths.server_opt import fedyogi_step
from tests.strategies.test_fedadam import check_server_step


def test_fedyogi_steps_from_the_sent_arrays_and_resumes():
    check_server_step("fedyogi", fedyogi_step)
