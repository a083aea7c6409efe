"""The mass-quote mode's pre-trade check, in the orders of events that broke it before, over
the model venue of tests/mass_quote_model.py (the gateway's own tracker, position keeper and
mode; the venue's answers and reports in one ordered lane). Each scenario ends with takers
filling, at the venue, everything that could fill, and checks the venue's position."""
from __future__ import annotations

from tests.mass_quote_model import LIMIT, market, settle


def sent_bids(venue) -> float:
    """The bid amount of the last mass quote the gateway sent."""
    params = [params for method, params, _future in venue.sent if method == "private/mass_quote"][-1]
    return round(sum(amount for _price, amount in params["quotes"][0].get("b", [])), 10)


async def deliver_all(venue) -> None:
    while venue.inbox:
        venue.read_request()
    while venue.lane:
        await venue.deliver()


async def test_the_side_just_answered_counts_before_the_venue_has_reported_it():
    venue, gateway = market(0.2)  # long 0.2 of a limit of 1.0
    gateway.quote([[100.0, 0.4]])
    await deliver_all(venue)
    # M1 replaces the bid: 0.2 + 0.4 that may still fill + 0.4 = 1.0, within.
    assert gateway.quote([[110.0, 0.4]]).quotes == 1 and sent_bids(venue) == 0.4
    # While M1 is on its way the old quote fills 0.1, reported; then the venue carries out M1
    # and answers; its report of M1's quote has not been read yet.
    venue.fill(0, 0.25)
    await venue.deliver()
    venue.read_request()
    await venue.deliver()  # the answer, not the report behind it
    assert gateway.positions.position("BTC-PERPETUAL") == 0.3
    # M1's 0.4 may fill before M2 lands: 0.3 + 0.4 leaves 0.3, too little for M2's 0.4.
    actions = gateway.quote([[120.0, 0.4]])
    assert actions.skipped == 1 and sent_bids(venue) == 0.0, actions
    venue.fill(0, 1.0)  # M1's quote fills in full before the venue reads M2
    positions = [venue.position] + await venue.run_out()
    assert max(positions) <= LIMIT + 1e-9, positions


async def test_a_level_the_venue_keeps_counts_twice():
    # A level sent again at the same price and amount keeps its quote only if nothing filled
    # it meanwhile; after a partial fill the venue replaces it with a fresh one in full.
    venue, gateway = market(0.0)
    gateway.quote([[90.0, 0.3]])
    await deliver_all(venue)
    actions = gateway.quote([[92.0, 0.5], [91.0, 0.1], [90.0, 0.3]])
    # 0.3 may still fill of the quote at 90: 0.7 of room, so the level at 90 is held back.
    assert (actions.quotes, actions.skipped) == (1, 1) and sent_bids(venue) == 0.6, actions
    venue.fill(0, 0.25)
    venue.fill(0, 0.5)
    positions = [venue.position] + await venue.run_out()
    assert max(positions) <= LIMIT + 1e-9, positions


async def test_held_back_levels_go_out_once_the_answer_is_in():
    venue, gateway = market(0.0)
    gateway.quote([[100.0, 0.2], [99.0, 0.4]])
    await deliver_all(venue)
    # Every level moves: 0.6 may still fill, so only the first 0.2 of the new side fits.
    actions = gateway.quote([[110.0, 0.2], [109.0, 0.4]])
    assert (actions.quotes, actions.skipped) == (1, 1) and sent_bids(venue) == 0.2
    await deliver_all(venue)
    # Answered: the venue holds the 0.2 only, and the whole side fits beside it.
    assert gateway.quote([[110.0, 0.2], [109.0, 0.4]]).skipped == 0 and sent_bids(venue) == 0.6


async def test_a_request_left_unanswered_counts_both_sides_until_a_later_one_is_answered():
    venue, gateway = market(0.0)
    gateway.quote([[100.0, 0.4]])
    await deliver_all(venue)
    gateway.quote([[110.0, 0.4]])
    venue.inbox.clear()  # lost on the way, or carried out with its answer lost: unknown
    mass_quote = [future for method, _params, future in venue.sent if method == "private/mass_quote"][-1]
    mass_quote.set_exception(TimeoutError())
    await settle()
    # 0.4 + 0.4 may fill: 0.2 of room.
    actions = gateway.quote([[120.0, 0.2], [119.0, 0.2]])
    assert (actions.quotes, actions.skipped) == (1, 1) and sent_bids(venue) == 0.2, actions
