"""The pod runner's main loop: the kubelet of every kwok node.

It watches all pods; a pod that kwok has given an IP (and left Pending) gets a `PodRun`; a pod
with a deletionTimestamp is stopped gracefully and then deleted; a pod that disappears at once
(force deletion) has its processes killed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp

from tests.cluster.podrunner.images import ENGINES_LABEL, ImageRuntimes
from tests.cluster.podrunner.kube import KubeApi
from tests.cluster.podrunner.pod import PodRun
from tests.cluster.podrunner.podspec import Json

log = logging.getLogger("podrunner")


class Kubelet:
    """Runs and stops a `PodRun` for each pod as the watch reports it."""

    def __init__(self, api: KubeApi, state_dir: Path) -> None:
        self.api = api
        self.state_dir = state_dir
        self.runtimes = ImageRuntimes(state_dir)
        self.runs: dict[str, PodRun] = {}
        self.stopping: set[str] = set()
        self.session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, ready: asyncio.Event) -> None:
        self.session = aiohttp.ClientSession()
        try:
            async for kind, obj in self.api.watch_pods():
                if kind == "SYNCED":
                    for uid in set(self.runs) - set(obj["uids"]):
                        self._gone(uid)
                    ready.set()
                elif kind == "DELETED":
                    self._gone(obj["metadata"]["uid"])
                else:
                    await self._seen(obj)
        finally:
            await self.shutdown()

    async def _seen(self, pod: Json) -> None:
        meta, status = pod["metadata"], pod.get("status") or {}
        uid = meta["uid"]
        run = self.runs.get(uid)
        if meta.get("deletionTimestamp"):
            if run is not None and uid not in self.stopping:
                self.stopping.add(uid)
                grace = float(meta.get("deletionGracePeriodSeconds") or 0)
                log.info("%s: deleted, grace %.0fs", run.name, grace)
                self._spawn(self._terminate(run, grace))
            return
        if (
            run is not None
            or not status.get("podIP")
            or status.get("phase") not in ("Pending", None)
        ):
            if run is not None:
                run.pod = pod
            return
        labels = await self.api.namespace_labels(meta["namespace"])
        assert self.session is not None
        engines = labels.get(ENGINES_LABEL, "vllm")
        run = PodRun(pod, self.api, self.state_dir, self.session, self.runtimes, engines)
        self.runs[uid] = run
        log.info("%s: running at %s (engines: %s)", run.name, run.pod_ip, run.engines)
        run.task = self._spawn(run.run())

    async def _terminate(self, run: PodRun, grace: float) -> None:
        await run.terminate(grace)
        self.runs.pop(run.pod["metadata"]["uid"], None)
        self.stopping.discard(run.pod["metadata"]["uid"])

    def _gone(self, uid: str) -> None:
        run = self.runs.pop(uid, None)
        if run is not None:
            log.info("%s: gone from the API, killing its processes", run.name)
            run.kill()

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("pod task failed", exc_info=t.exception())

        task.add_done_callback(done)
        return task

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop every process this runner started (the runner itself is going away)."""
        runs = list(self.runs.values())
        self.runs.clear()
        for run in runs:
            run.terminating = True
            run.stop.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        await asyncio.gather(
            *(run._stop_container(c, deadline) for run in runs for c in run.containers + run.inits),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
