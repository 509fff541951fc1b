"""ClaimMemory (kirby.supervisor.amnesia): what one supervisor process remembers having claimed."""

from datetime import datetime, timedelta, timezone

from kirby.events import Offer
from kirby.supervisor.amnesia import ClaimMemory

T0 = datetime(2026, 12, 2, 3, 0, tzinfo=timezone.utc)
RUN = "tick:e2e:20261202T030000Z"


def _memory() -> ClaimMemory:
    memory = ClaimMemory("s3", "s3-instance", clock=lambda: T0)
    memory.claimed(Offer(RUN, RUN, "tick", "e2e", "pkg", "1.0", T0, epoch=5, not_after=T0 + timedelta(seconds=30)))
    return memory


def test_a_claimed_run_is_remembered_and_written_back_after_amnesia():
    memory = _memory()
    assert memory.knows(RUN)
    assert [claim.run_id for claim in memory.claims()] == [RUN]


def test_a_released_claim_is_forgotten_so_its_re_offer_can_be_claimed_again():
    """Settling presumed the process dead and re-offered the run: remembering it would make this
    process drop the re-offer as a duplicate, and nobody would run the slot."""
    memory = _memory()
    memory.released(RUN)
    assert not memory.knows(RUN)
    assert memory.claims() == []
