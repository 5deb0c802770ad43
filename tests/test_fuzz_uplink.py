"""Fuzz (bounded, in CI): the uplink decoder. No exception but ``UplinkDecodeError`` escapes;
every record accepted is in canonical form; every record of an intact batch is either accepted
or rejected with a reason. Longer runs: ``anju fuzz uplink --minutes N``."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from anju import fuzz


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fuzz.batches())
def test_the_uplink_decoder_takes_anything(example: fuzz.Batch) -> None:
    fuzz.check_uplink(example)


def test_the_fuzz_command_runs_and_counts() -> None:
    figures = fuzz.run("uplink", minutes=0.02)
    assert figures.examples > 0 and figures.failures == 0, figures.failed
