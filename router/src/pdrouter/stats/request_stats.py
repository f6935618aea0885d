"""Per-engine request statistics over a sliding time window, with bounded memory."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# Hard cap per series so a burst inside one window cannot grow memory without bound.
_MAX_SAMPLES = 4096


class _Window:
    """Timestamped samples of the last `window` seconds. A sample stands for `count` values
    summing to `total`: one value, or a stream's token gaps reported when it ends; the mean is
    over the values, whatever the streams' lengths."""

    __slots__ = ("_samples", "_window")

    def __init__(self, window: float) -> None:
        self._window = window
        self._samples: deque[tuple[float, float, int]] = deque(maxlen=_MAX_SAMPLES)

    def add(self, now: float, total: float, count: int = 1) -> None:
        self._samples.append((now, total, count))

    def prune(self, now: float) -> None:
        horizon = now - self._window
        samples = self._samples
        while samples and samples[0][0] < horizon:
            samples.popleft()

    def count(self, now: float) -> int:
        """Samples in the window."""
        self.prune(now)
        return len(self._samples)

    def mean(self, now: float) -> float | None:
        self.prune(now)
        count = sum(s[2] for s in self._samples)
        return sum(s[1] for s in self._samples) / count if count else None


@dataclass(frozen=True, slots=True)
class RequestStatsSnapshot:
    """What the window says about one engine right now (None: no samples in the window)."""

    qps: float
    in_flight: int
    ttft: float | None
    itl: float | None
    latency: float | None
    finished: int


class RequestStats:
    """Arrivals, TTFT, ITL and latency of the requests the router sent to one engine."""

    __slots__ = ("_arrivals", "_failures", "_itl", "_latency", "_ttft", "finished_total", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._arrivals = _Window(window)
        self._ttft = _Window(window)
        self._itl = _Window(window)
        self._latency = _Window(window)
        self._failures: deque[float] = deque(maxlen=_MAX_SAMPLES)  # times of charged failures
        self.finished_total = 0

    def on_start(self, now: float) -> None:
        self._arrivals.add(now, 1.0)

    def on_first_token(self, now: float, ttft: float) -> None:
        self._ttft.add(now, ttft)

    def on_token_gaps(self, now: float, total: float, count: int) -> None:
        """`count` inter-token gaps of one stream, summing to `total` seconds."""
        self._itl.add(now, total, count)

    def on_finish(self, now: float, latency: float) -> None:
        self._latency.add(now, latency)
        self.finished_total += 1

    def on_failure(self, now: float) -> None:
        self._failures.append(now)

    def failures_since(self, horizon: float) -> int:
        """Failures charged to the engine after `horizon` (older ones are forgotten)."""
        failures = self._failures
        while failures and failures[0] < horizon:
            failures.popleft()
        return len(failures)

    def qps(self, now: float) -> float:
        return self._arrivals.count(now) / self.window

    def snapshot(self, now: float, in_flight: int) -> RequestStatsSnapshot:
        return RequestStatsSnapshot(
            qps=self._arrivals.count(now) / self.window,
            in_flight=in_flight,
            ttft=self._ttft.mean(now),
            itl=self._itl.mean(now),
            latency=self._latency.mean(now),
            finished=self._latency.count(now),
        )

    def prune(self, now: float) -> None:
        for series in (self._arrivals, self._ttft, self._itl, self._latency):
            series.prune(now)
