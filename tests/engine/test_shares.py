"""The one way TuneDesk writes the share of parameters that train (Layers area, plans, Runs table)."""

from tunedesk.engine.shares import percent


def test_a_partial_share_never_reads_0_or_100_percent():
    assert [percent(p, 1000) for p in (0, 1000, 120, 44, 3.5, 0.05)] == ["0%", "100%", "12%", "4.4%", "0.35%", "<0.01%"]
    assert percent(999, 1000) == "99.9%" and percent(9999, 10000) == "99.9%"  # not rounded up to 100%
    assert percent(5, 0) == "0%"
