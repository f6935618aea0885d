"""Drive one QPS level: launch rounds of idle users at the target rate and collect results."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mrqa.stats import percentile
from mrqa.stream_client import RequestResult, StreamRequest, stream_chat
from mrqa.workload import UserFactory, UserSession, WorkloadShape, arrival_gaps


@dataclass
class RunConfig:
    """Every knob of a benchmark run (built from the command line)."""

    model: str
    base_url: str
    label: str
    shape: WorkloadShape
    users: int
    qps_levels: list[float]
    arrival: str = "poisson"
    duration_s: float | None = 60.0
    requests_per_level: int | None = None
    warmup_requests: int = 2
    cooldown_s: float = 2.0
    request_timeout_s: float = 300.0
    session_header: str | None = None
    api_key: str | None = None
    include_usage: bool = True
    ignore_eos: bool = False
    temperature: float = 0.0
    seed: int = 0
    progress_interval_s: float = 1.0

    @property
    def chat_url(self) -> str:
        """The chat completions endpoint under the OpenAI base URL."""
        return self.base_url.rstrip("/") + "/chat/completions"


@dataclass
class RequestRecord:
    """One request of a level, with its place in the workload."""

    qps: float
    index: int
    user_id: str
    round: int
    launch_offset_s: float
    result: RequestResult


@dataclass
class FailureWatch:
    """Stops a run whose first requests all fail: a wrong model or URL, or prompts longer than
    the model's context, fail every request alike, and minutes of them tell nothing more."""

    limit: int = 5
    seen: int = 0
    succeeded: bool = False
    first_failure: RequestResult | None = None

    def record(self, result: RequestResult) -> None:
        self.seen += 1
        self.succeeded = self.succeeded or result.ok
        if not result.ok and self.first_failure is None:
            self.first_failure = result

    @property
    def hopeless(self) -> bool:
        """True once the first ``limit`` requests of the run have all failed."""
        return not self.succeeded and self.seen >= self.limit

    def explain(self) -> str:
        """One line for the user: how many failed, and what the server said the first time."""
        first = self.first_failure
        said = "" if first is None else first.reason
        if first is not None and first.message:
            said += f": {first.message}"
        return f"the first {self.seen} requests all failed, stopping early ({said})"


@dataclass
class LevelRun:
    """The raw outcome of one level, before aggregation."""

    qps: float
    records: list[RequestRecord] = field(default_factory=list)
    wall_s: float = 0.0
    launch_window_s: float = 0.0
    delayed_launches: int = 0
    in_flight: int = 0


def build_request(config: RunConfig, user: UserSession, messages: list[Any]) -> StreamRequest:
    """The streamed chat completion for one round of ``user``."""
    payload: dict[str, Any] = {
        "model": config.model,
        "messages": messages,
        "max_tokens": config.shape.answer_tokens,
        "temperature": config.temperature,
        "stream": True,
    }
    if config.include_usage:
        payload["stream_options"] = {"include_usage": True}
    if config.ignore_eos:
        payload["ignore_eos"] = True  # vLLM extension: always generate max_tokens
    headers = {}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    if config.session_header:
        headers[config.session_header] = user.user_id
    return StreamRequest(config.chat_url, payload, headers, config.request_timeout_s)


async def ask_round(
    session: aiohttp.ClientSession, config: RunConfig, user: UserSession, watch: FailureWatch
) -> RequestResult:
    """Send the user's next round, record the answer in its history, return the result."""
    messages = user.next_messages()
    result = await stream_chat(session, build_request(config, user, messages))
    user.record_round(messages, result.answer if result.ok else None)
    watch.record(result)
    return result


async def run_warmup(
    session: aiohttp.ClientSession, config: RunConfig, factory: UserFactory, watch: FailureWatch
) -> Counter[str]:
    """Send the warm-up requests one after another; return outcome counts (not measured)."""
    outcomes: Counter[str] = Counter()
    user = factory.new_user()
    for _ in range(config.warmup_requests):
        if user.finished:
            user = factory.new_user()
        result = await ask_round(session, config, user, watch)
        outcomes["ok" if result.ok else result.reason] += 1
        if watch.hopeless:
            break
    return outcomes


class ProgressLine:
    """Live one-line status on stderr: rewritten in place on a terminal, a line per tick else."""

    def __init__(self, config: RunConfig, level: LevelRun, started: float) -> None:
        self._config = config
        self._level = level
        self._started = started
        self._tty = sys.stderr.isatty()

    def render(self) -> str:
        """The current status text."""
        level, records = self._level, self._level.records
        ok = [r.result for r in records if r.result.ok]
        failures = Counter(r.result.reason for r in records if not r.result.ok)
        ttft = percentile([r.ttft * 1000 for r in ok if r.ttft is not None], 50)
        target = (
            f"{self._config.duration_s:.0f}s"
            if self._config.duration_s
            else f"{self._config.requests_per_level} req"
        )
        text = (
            f"[{self._config.label} qps={level.qps:g}] {time.monotonic() - self._started:5.1f}s"
            f"/{target} launched {len(records) + level.in_flight} ok {len(ok)}"
            f" failed {sum(failures.values())} in-flight {level.in_flight}"
        )
        if ttft is not None:
            text += f" ttft-p50 {ttft:.0f}ms"
        if failures:
            text += " (" + ", ".join(f"{k} {v}" for k, v in failures.most_common(3)) + ")"
        return text

    async def run(self) -> None:
        """Print until cancelled."""
        while True:
            await asyncio.sleep(self._config.progress_interval_s)
            self.emit()

    def emit(self, final: bool = False) -> None:
        """Write the status once; ``final`` ends the line on a terminal."""
        if self._tty:
            sys.stderr.write("\r\x1b[2K" + self.render() + ("\n" if final else ""))
        else:
            sys.stderr.write(self.render() + "\n")
        sys.stderr.flush()


async def run_level(
    session: aiohttp.ClientSession,
    config: RunConfig,
    qps: float,
    factory: UserFactory,
    watch: FailureWatch,
) -> LevelRun:
    """Run one level: fresh users, launches at ``qps``, then wait for everything in flight.

    A launch goes to the idle user that has waited longest; when every user is busy the launch
    waits for one (counted in ``delayed_launches``: the target rate needs more users). Launches
    stop early when ``watch`` finds the run hopeless.
    """
    level = LevelRun(qps=qps)
    idle: asyncio.Queue[UserSession] = asyncio.Queue()
    for _ in range(config.users):
        idle.put_nowait(factory.new_user())
    gaps = arrival_gaps(qps, config.arrival, random.Random(f"arrivals-{config.seed}-{qps}"))
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    progress = ProgressLine(config, level, start)
    progress_task = asyncio.create_task(progress.run())

    async def one_round(user: UserSession, index: int, offset: float) -> None:
        round_number = user.round_index + 1
        result = await ask_round(session, config, user, watch)
        level.in_flight -= 1
        level.records.append(RequestRecord(qps, index, user.user_id, round_number, offset, result))
        idle.put_nowait(factory.new_user() if user.finished else user)

    next_at = start
    launched = 0
    try:
        while True:
            if config.requests_per_level is not None and launched >= config.requests_per_level:
                break
            if config.duration_s is not None and next_at - start >= config.duration_s:
                break
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if watch.hopeless:
                break
            if idle.empty():
                level.delayed_launches += 1
            user = await idle.get()
            offset = time.monotonic() - start
            if config.duration_s is not None and offset >= config.duration_s:
                break  # waiting for a free user ran past the level's end
            level.in_flight += 1
            task = asyncio.create_task(one_round(user, launched, offset))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            launched += 1
            next_at += next(gaps)
        level.launch_window_s = next_at - start
        if watch.hopeless:
            level.launch_window_s = time.monotonic() - start
        elif config.duration_s is not None:
            level.launch_window_s = min(level.launch_window_s, config.duration_s)
        await asyncio.gather(*tasks)
        # A level lasts at least its launch window, so rates divide by the time it was offered.
        await asyncio.sleep(max(0.0, start + level.launch_window_s - time.monotonic()))
    finally:
        progress_task.cancel()
        for task in tasks:
            task.cancel()
    level.wall_s = time.monotonic() - start
    progress.emit(final=True)
    level.records.sort(key=lambda r: r.index)
    return level
