from pdrouter.stats.request_stats import RequestStats


def test_window_reports_recent_requests_only() -> None:
    stats = RequestStats(window=10.0)
    for t in range(20):
        stats.on_start(float(t))
        stats.on_first_token(float(t), 0.1 if t < 10 else 0.3)
        stats.on_finish(float(t), 1.0)
    snap = stats.snapshot(now=19.0, in_flight=2)
    assert snap.qps == 1.1  # arrivals at t=9..19 inside the 10 s window
    assert snap.ttft is not None and abs(snap.ttft - (0.1 + 10 * 0.3) / 11) < 1e-9
    assert snap.in_flight == 2 and stats.finished_total == 20


def test_memory_stays_bounded_under_a_burst() -> None:
    stats = RequestStats(window=3600.0)
    for i in range(100_000):
        stats.on_start(i * 1e-6)
        stats.on_token_gaps(i * 1e-6, 0.64, 64)
    assert stats.snapshot(0.1, 0).qps <= 4096 / 3600.0 + 1e-9


def test_empty_window_has_no_latency_figures() -> None:
    snap = RequestStats(5.0).snapshot(100.0, 0)
    assert snap.ttft is None and snap.itl is None and snap.latency is None and snap.qps == 0


def test_itl_is_the_mean_gap_over_streams_of_different_lengths() -> None:
    stats = RequestStats(window=10.0)
    stats.on_token_gaps(-20.0, 9.0, 1)  # out of the window
    stats.on_token_gaps(1.0, 0.01 * 100, 100)  # a long stream, 10 ms apart
    stats.on_token_gaps(2.0, 0.05 * 2, 2)  # a short one, 50 ms apart
    snap = stats.snapshot(now=5.0, in_flight=0)
    assert snap.itl is not None and abs(snap.itl - (1.0 + 0.1) / 102) < 1e-12
