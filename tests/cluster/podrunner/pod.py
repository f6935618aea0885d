"""One pod, run the way a kubelet runs it: volumes, init containers in order, containers with
their startup/readiness/liveness probes and restart policy, status written back to the API
server, and on deletion preStop, SIGTERM, the grace period, SIGKILL and the final delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.cluster.podrunner import images, probes
from tests.cluster.podrunner.container import ContainerProcess
from tests.cluster.podrunner.kube import KubeApi
from tests.cluster.podrunner.mounts import MountTable, materialise_volumes, mount_table
from tests.cluster.podrunner.podspec import (
    Json,
    Lookups,
    UnsupportedSpec,
    container_env,
    expand,
    service_links,
)

log = logging.getLogger("podrunner")
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
MAX_BACKOFF_S = 10.0  # a kubelet backs off to 5 min; tests would rather see the next try


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerState:
    """What the kubelet reports for one container."""

    spec: Json
    ready: bool = False
    started: bool = False
    restarts: int = 0
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    proc: ContainerProcess | None = None

    def status(self) -> dict[str, Any]:
        return {
            "name": self.spec["name"],
            "image": self.spec["image"],
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restarts,
            "state": self.state,
            "lastState": self.last_state,
        }


class PodRun:
    """Runs one pod until it is deleted (or the runner stops)."""

    def __init__(
        self,
        pod: Json,
        api: KubeApi,
        state_dir: Path,
        session: aiohttp.ClientSession,
        runtimes: images.ImageRuntimes,
        engines: str,
    ) -> None:
        meta = pod["metadata"]
        self.pod = pod
        self.api = api
        self.session = session
        self.runtimes = runtimes
        self.engines = engines
        self.dir = state_dir / "pods" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
        self.pod_ip: str = pod["status"]["podIP"]
        spec = pod["spec"]
        self.inits = [
            ContainerState(c, state={"waiting": {"reason": "PodInitializing"}})
            for c in spec.get("initContainers") or []
        ]
        self.containers = [ContainerState(c) for c in spec["containers"]]
        self.initialized = not self.inits
        self.terminating = False
        self.stop = asyncio.Event()
        self.volumes: dict[str, Path] = {}
        self.base_env: dict[str, str] = {}
        self._publish_lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    # --- status ---------------------------------------------------------------------------
    async def publish(self) -> None:
        """Write the pod's phase, conditions and container statuses (a kubelet status sync)."""
        async with self._publish_lock:
            all_ready = all(c.ready for c in self.containers)
            running = any("running" in c.state for c in self.containers)
            ended = all("terminated" in c.state for c in self.containers)
            phase = "Running" if running else "Pending"
            if ended and self.pod["spec"].get("restartPolicy") == "Never":
                failed = any(c.state["terminated"].get("exitCode") for c in self.containers)
                phase = "Failed" if failed else "Succeeded"

            def cond(kind: str, ok: bool) -> dict[str, str]:
                c = {
                    "type": kind,
                    "status": "True" if ok else "False",
                    "lastTransitionTime": _now(),
                }
                if not ok and kind in ("Ready", "ContainersReady"):
                    c["reason"] = "ContainersNotReady"
                return c

            status: dict[str, Any] = {
                "phase": phase,
                "conditions": [
                    cond("Initialized", self.initialized),
                    cond("ContainersReady", all_ready),
                    cond("Ready", all_ready),
                ],
                "containerStatuses": [c.status() for c in self.containers],
            }
            if self.inits:
                status["initContainerStatuses"] = [c.status() for c in self.inits]
            await self.api.patch_status(self.pod, status)

    async def fail_config(self, holder: ContainerState, message: str) -> None:
        """A container that cannot be started here: shown as kubectl would show it."""
        log.error("%s: %s", self.name, message)
        holder.state = {"waiting": {"reason": "CreateContainerConfigError", "message": message}}
        await self.publish()

    # --- start-up -------------------------------------------------------------------------
    async def run(self) -> None:
        holder = (self.inits or self.containers)[0]
        try:
            await self._prepare()
            for init in self.inits:
                holder = init
                if not await self._run_init(init):
                    return
            self.initialized = True
            await asyncio.gather(*(self._supervise(c) for c in self.containers))
        except UnsupportedSpec as exc:
            await self.fail_config(holder, str(exc))

    async def _prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.volumes = await materialise_volumes(self.api, self.pod, self.dir)
        namespace = self.pod["metadata"]["namespace"]
        if self.pod["spec"].get("enableServiceLinks", True):
            self.base_env.update(service_links(await self.api.services(namespace)))
        master = [
            s for s in await self.api.services("default") if s["metadata"]["name"] == "kubernetes"
        ]
        self.base_env.update(
            {k: v for k, v in service_links(master).items() if k.startswith("KUBERNETES_")}
        )
        forwards = [
            {"ports": [port], "target": {"address": self.pod_ip, "port": port}}
            for c in self.pod["spec"]["containers"]
            for port in (p["containerPort"] for p in c.get("ports") or [])
        ]
        if forwards:
            await self.api.create_kwok_object("portforwards", self.pod, {"forwards": forwards})

    async def _lookups(self, container: Json) -> Lookups:
        """Prefetch the ConfigMaps and Secrets the container's env reads."""
        namespace = self.pod["metadata"]["namespace"]
        wanted: set[tuple[str, str]] = set()
        for source in container.get("envFrom") or []:
            for kind in ("configMapRef", "secretRef"):
                if kind in source:
                    wanted.add((kind[:-3], source[kind]["name"]))
        for var in container.get("env") or []:
            for kind in ("configMapKeyRef", "secretKeyRef"):
                if kind in var.get("valueFrom", {}):
                    wanted.add((kind[:-6], var["valueFrom"][kind]["name"]))
        found: dict[tuple[str, str], dict[str, str]] = {}
        for kind, name in wanted:
            fetch = self.api.config_map if kind == "configMap" else self.api.secret
            data = await fetch(namespace, name)
            if data is not None:
                found[(kind, name)] = {k: v.decode(errors="replace") for k, v in data.items()}
        return Lookups(
            config_map=lambda _ns, name: found.get(("configMap", name)),
            secret=lambda _ns, name: found.get(("secret", name)),
        )

    async def _launch(self, holder: ContainerState) -> ContainerProcess:
        """Work out the container's process exactly from its spec, and start it."""
        spec = holder.spec
        node = await self.api.node(self.pod["spec"]["nodeName"])
        env = container_env(
            self.pod,
            spec,
            await self._lookups(spec),
            self.base_env,
            node["status"].get("allocatable", {}),
        )
        table = mount_table(spec, self.volumes)
        command = [expand(str(a), env) for a in spec.get("command") or []]
        args = [expand(str(a), env) for a in spec.get("args") or []]
        if not command:
            raise UnsupportedSpec(
                f"container {spec['name']!r} has no command: image entrypoints are not modelled"
            )
        runtime = self.runtimes.for_image(spec["image"], self.engines)
        argv = [runtime.resolve(command[0]), *(table.rewrite(a) for a in command[1:] + args)]
        env = {k: table.rewrite(v) for k, v in env.items()}
        home = self.dir / "home" / spec["name"]
        home.mkdir(parents=True, exist_ok=True)
        kubeconfig = self._kubeconfig(table)
        if kubeconfig is not None:
            env.setdefault("KUBECONFIG", str(kubeconfig))
        workdir = (
            table.rewrite(spec["workingDir"])
            if spec.get("workingDir")
            else str(self.dir / "rootfs")
        )
        proc = ContainerProcess(
            argv,
            runtime.process_env(env, self.pod_ip, home),
            Path(workdir),
            self.dir / f"{spec['name']}.log",
        )
        await proc.start()
        log.info("%s/%s: started pid %d: %s", self.name, spec["name"], proc.pid, " ".join(argv))
        return proc

    def _kubeconfig(self, table: MountTable) -> Path | None:
        """The pod's own ServiceAccount token as a kubeconfig.

        The in-cluster files would have to be at /var/run/secrets/... in the process's own
        filesystem; the token the kubelet mounted there is handed over through KUBECONFIG
        instead, so the API server sees the pod's ServiceAccount and RBAC applies unchanged.
        """
        folder = table.host_path(SA_MOUNT)
        if folder is None or not (folder / "token").is_file():
            return None
        path = self.dir / "kubeconfig"
        namespace = self.pod["metadata"]["namespace"]
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: c, cluster: {{server: '{self.api.server}', "
            f"certificate-authority: '{folder / 'ca.crt'}'}}}}]\n"
            f"users: [{{name: u, user: {{token: '{(folder / 'token').read_text()}'}}}}]\n"
            f"contexts: [{{name: c, context: {{cluster: c, user: u, namespace: {namespace}}}}}]\n"
            "current-context: c\n"
        )
        return path

    async def _run_init(self, holder: ContainerState) -> bool:
        """Run one init container to success, retrying as the restart policy says."""
        while not self.stop.is_set():
            holder.proc = await self._launch(holder)
            holder.state = {"running": {"startedAt": _now()}}
            await self.publish()
            code = await holder.proc.wait()
            holder.state = {
                "terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
            }
            if code == 0:
                holder.ready = True
                await self.publish()
                return True
            log.error(
                "%s: init container %s exited %d:\n%s",
                self.name,
                holder.spec["name"],
                code,
                holder.proc.log_tail(),
            )
            holder.restarts += 1
            await self.publish()
            if self.pod["spec"].get("restartPolicy") == "Never":
                return False
            await self._backoff(holder.restarts)
        return False

    # --- running --------------------------------------------------------------------------
    async def _supervise(self, holder: ContainerState) -> None:
        """Start the container, probe it, restart it when it exits or its liveness fails."""
        policy = self.pod["spec"].get("restartPolicy", "Always")
        while not self.stop.is_set():
            holder.proc = await self._launch(holder)
            holder.state = {"running": {"startedAt": _now()}}
            holder.started = "startupProbe" not in holder.spec
            await self.publish()
            probing = asyncio.Event()
            prober = asyncio.create_task(self._probe(holder, probing))
            code = await holder.proc.wait()
            probing.set()
            prober.cancel()
            holder.ready = False
            holder.started = False
            reason = "Completed" if code == 0 else ("Error" if code > 0 else "Signaled")
            holder.state = {
                "terminated": {"exitCode": code, "reason": reason, "finishedAt": _now()}
            }
            if not self.terminating:
                log.warning(
                    "%s/%s exited %d:\n%s",
                    self.name,
                    holder.spec["name"],
                    code,
                    holder.proc.log_tail(),
                )
            if self.terminating or policy == "Never" or (policy == "OnFailure" and code == 0):
                await self.publish()
                return
            holder.last_state, holder.restarts = holder.state, holder.restarts + 1
            holder.state = {"waiting": {"reason": "CrashLoopBackOff" if code else "Completed"}}
            await self.publish()
            await self._backoff(holder.restarts)

    async def _probe(self, holder: ContainerState, stop: asyncio.Event) -> None:
        spec = holder.spec

        def check(kind: str) -> probes.ProbeCheck | None:
            if kind not in spec:
                return None
            return probes.ProbeCheck(
                spec[kind], spec, self.pod_ip, self.session, self._exec_runner(holder)
            )

        startup = check("startupProbe")
        if startup is not None:
            if not await probes.wait_for_success(startup, stop):
                if not stop.is_set():
                    log.warning(
                        "%s/%s: startup probe %s failed",
                        self.name,
                        spec["name"],
                        startup.describe(),
                    )
                    await self._restart(holder)
                return
            holder.started = True
            await self.publish()
        tasks = []
        readiness = check("readinessProbe")
        if readiness is None:
            holder.ready = True
            await self.publish()
        else:
            tasks.append(
                probes.watch_state(readiness, stop, lambda ok: self._set_ready(holder, ok), False)
            )
        liveness = check("livenessProbe")
        if liveness is not None:

            async def on_liveness(ok: bool) -> None:
                if not ok:
                    log.warning(
                        "%s/%s: liveness probe %s failed",
                        self.name,
                        spec["name"],
                        liveness.describe(),
                    )
                    await self._restart(holder)

            tasks.append(probes.watch_state(liveness, stop, on_liveness, True))
        await asyncio.gather(*tasks)

    async def _set_ready(self, holder: ContainerState, ready: bool) -> None:
        holder.ready = ready
        await self.publish()

    async def _restart(self, holder: ContainerState) -> None:
        """Kill the container as a failed probe does; _supervise starts it again."""
        if holder.proc is not None and not self.terminating:
            await holder.proc.stop(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))

    def _exec_runner(self, holder: ContainerState) -> probes.ExecRunner:
        async def run(command: list[str], timeout: float) -> int:
            assert holder.proc is not None
            runtime = self.runtimes.for_image(holder.spec["image"], self.engines)
            table = mount_table(holder.spec, self.volumes)
            proc = await asyncio.create_subprocess_exec(
                runtime.resolve(command[0]),
                *(table.rewrite(a) for a in command[1:]),
                env=holder.proc.env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                return await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                return -1

        return run

    async def _backoff(self, restarts: int) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), min(MAX_BACKOFF_S, 0.5 * 2**restarts))

    # --- shutdown -------------------------------------------------------------------------
    async def terminate(self, grace_s: float) -> None:
        """Graceful deletion: preStop, SIGTERM, up to `grace_s` in all, then the final delete."""
        self.terminating = True
        deadline = asyncio.get_running_loop().time() + grace_s
        await asyncio.gather(
            *(self._stop_container(c, deadline) for c in self.containers + self.inits)
        )
        self.stop.set()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        await self.api.delete_pod_now(self.pod)
        log.info("%s: stopped and deleted", self.name)

    async def _stop_container(self, holder: ContainerState, deadline: float) -> None:
        proc = holder.proc
        if proc is None or proc.proc is None or proc.proc.returncode is not None:
            return
        loop = asyncio.get_running_loop()
        pre_stop = (holder.spec.get("lifecycle") or {}).get("preStop")
        if pre_stop and "terminated" not in holder.state:
            try:
                await asyncio.wait_for(
                    self._pre_stop(holder, pre_stop), max(deadline - loop.time(), 0)
                )
            except TimeoutError:
                log.warning(
                    "%s/%s: preStop ran out of the grace period", self.name, holder.spec["name"]
                )
        await proc.stop(max(deadline - loop.time(), 0.0))

    async def _pre_stop(self, holder: ContainerState, hook: Mapping[str, Any]) -> None:
        if "sleep" in hook:
            await asyncio.sleep(float(hook["sleep"]["seconds"]))
        elif "exec" in hook:
            await self._exec_runner(holder)(list(hook["exec"]["command"]), 3600)
        elif "httpGet" in hook:
            check = probes.ProbeCheck(
                {"httpGet": hook["httpGet"], "timeoutSeconds": 3600},
                holder.spec,
                self.pod_ip,
                self.session,
                self._exec_runner(holder),
            )
            await check.check()

    def kill(self) -> None:
        """Force deletion or runner shutdown: every process goes at once."""
        self.terminating = True
        self.stop.set()
        for holder in self.containers + self.inits:
            if holder.proc is not None:
                holder.proc.kill()
