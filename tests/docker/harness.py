"""A small lab of containers shaped like the official Supabase stack, for the docker.* tests.

There is no registry here, so the only image is imported from a tar built in Python: an empty
root with ``/bin``, ``/lib`` and ``/lib64`` pointing into ``/usr``, which each container mounts
read-only from the host. Containers therefore run the host's python3 (the Realtime stand-in in
``tests/fixtures/docker/realtime_standin.py``), ``getent`` and busybox (``nslookup``, ``wget``)
and start in well under a second even on the vfs storage driver.

Every object carries the ``rtbooktest-<random>`` prefix and is removed by :meth:`Lab.close`.
"""

from __future__ import annotations

import io
import secrets
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.types import Ulimit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "docker"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
TEST_LABEL = "io.rtbook.test"
OFFICIAL_HEALTH_PATH = "/api/tenants/realtime-dev/health"
RT_VERSION = "v2.134.10"


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, kind: bytes, target: str = "", data: bytes = b"") -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.linkname = target
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in ("usr", "tmp", "etc", "proc", "sys", "dev", "sbin", "standin", "root"):
            add(d, tarfile.DIRTYPE)
        # /sbin stays a real directory: the engine bind-mounts docker-init at /sbin/docker-init.
        for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
            add(link, tarfile.SYMTYPE, target)
        add("etc/nsswitch.conf", tarfile.REGTYPE, data=b"hosts: files dns\n")
        add("etc/passwd", tarfile.REGTYPE, data=b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", tarfile.REGTYPE, data=b"root:x:0:\n")
    return buf.getvalue()


def _busybox_tar() -> bytes:
    """A root with only a static busybox (like an Alpine-based Kong: nslookup, no getent)."""
    buf = io.BytesIO()
    busybox = Path("/bin/busybox").read_bytes()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "sbin"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(busybox)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(busybox))
        for applet in ("sh", "nslookup", "sleep", "cat"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buf.getvalue()


@dataclass
class Lab:
    """Images, networks and containers of one test session (or one test)."""

    client: Any
    prefix: str
    realtime_image: str
    gateway_image: str
    network: str
    stack_dir: Path | None = None
    stack_env: Mapping[str, str] = field(default_factory=dict)
    realtime_env: Mapping[str, str] = field(default_factory=dict)
    containers: list[Any] = field(default_factory=list)
    networks: list[Any] = field(default_factory=list)
    extra_tags: list[str] = field(default_factory=list)

    # ---------------------------------------------------------------- construction
    @classmethod
    def create(cls, client: Any) -> Lab:
        """Import the image and create the project network."""
        prefix = f"rtbooktest-{secrets.token_hex(4)}"
        rt_repo = f"{prefix}.local/rtbooktest/realtime"
        gw_repo = f"{prefix}.local/rtbooktest/kong"
        client.api.import_image_from_data(
            _rootfs_tar(),
            repository=rt_repo,
            tag=RT_VERSION,
            changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        )
        client.images.get(f"{rt_repo}:{RT_VERSION}").tag(gw_repo, "3.9.3")
        lab = cls(client, prefix, f"{rt_repo}:{RT_VERSION}", f"{gw_repo}:3.9.3", f"{prefix}_default")
        lab.networks.append(lab._network("default"))
        return lab

    def _network(self, compose_name: str) -> Any:
        return self.client.networks.create(
            f"{self.prefix}_{compose_name}",
            driver="bridge",
            labels={PROJECT_LABEL: self.prefix, "com.docker.compose.network": compose_name, TEST_LABEL: "1"},
        )

    def extra_network(self, compose_name: str) -> str:
        """Create another network of the project and return its engine name."""
        net = self._network(compose_name)
        self.networks.append(net)
        return str(net.name)

    def tag_image(self, repository: str, tag: str) -> str:
        """Give the stand-in image another name (removed by :meth:`close`); return it."""
        self.client.images.get(self.realtime_image).tag(repository, tag)
        ref = f"{repository}:{tag}"
        self.extra_tags.append(ref)
        return ref

    # ---------------------------------------------------------------- containers
    def _run(
        self,
        image: str,
        command: Sequence[str],
        *,
        name: str,
        service: str | None,
        network: str,
        aliases: Sequence[str] = (),
        environment: Mapping[str, str] | None = None,
        healthcheck: Mapping[str, Any] | None = None,
        restart: str | None = None,
        ulimits: Sequence[Ulimit] | None = None,
        mem_limit: str | None = None,
        dns_opt: Sequence[str] = (),
        mount_usr: bool = True,
    ) -> Any:
        labels = {TEST_LABEL: "1"}
        if service is not None:
            labels |= {PROJECT_LABEL: self.prefix, SERVICE_LABEL: service}
        kwargs: dict[str, Any] = {}
        if restart:
            kwargs["restart_policy"] = {"Name": restart}
        if ulimits:
            kwargs["ulimits"] = list(ulimits)
        if mem_limit:
            kwargs["mem_limit"] = mem_limit
        if dns_opt:
            kwargs["dns_opt"] = list(dns_opt)
        container = self.client.containers.create(
            image,
            list(command),
            name=name,
            labels=labels,
            environment=dict(environment or {}),
            volumes=(
                {"/usr": {"bind": "/usr", "mode": "ro"}, str(FIXTURES): {"bind": "/standin", "mode": "ro"}}
                if mount_usr else {}
            ),
            init=True,
            network=network,
            networking_config={network: self.client.api.create_endpoint_config(aliases=list(aliases))},
            healthcheck=healthcheck,
            **kwargs,
        )
        self.containers.append(container)
        container.start()
        return container

    def realtime(
        self,
        *,
        name: str | None = None,
        aliases: Sequence[str] = ("realtime", "realtime-dev.supabase-realtime"),
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        health_path: str = OFFICIAL_HEALTH_PATH,
        healthcheck: bool = True,
        restart: str | None = None,
        network: str | None = None,
        service: str | None = "realtime",
        ulimits: Sequence[Ulimit] | None = None,
        mem_limit: str | None = None,
        image: str | None = None,
        command: Sequence[str] | None = None,
    ) -> Any:
        """Start the Realtime stand-in with the stack's Realtime environment (plus ``env``).

        ``command`` replaces the stand-in's command line (``args`` are then ignored).
        """
        environment = {**self.realtime_env, **(env or {})}
        token = self.stack_env.get("ANON_KEY", "")
        hc = None
        if healthcheck:
            # The official probe is curl with the interpolated ANON_KEY; the stand-in image has
            # busybox wget, which fails the same way on a non-2xx answer.
            base = f"http://localhost:{environment.get('PORT', '4000')}"
            # A loaded CI machine can take longer than one probe interval to start python: wait (at
            # most ~4 s) for the listener, so that one probe gives the verdict, good or bad.
            wait = f"for i in $(seq 40); do busybox wget -q -O /dev/null {base}/healthcheck && break; sleep 0.1; done; "
            probe = wait + f'busybox wget -q -O /dev/null --header "Authorization: Bearer {token}" {base}{health_path}'
            hc = {"test": ["CMD-SHELL", probe], "interval": 300_000_000, "timeout": 8_000_000_000,
                  "retries": 1, "start_period": 0}
        return self._run(
            image or self.realtime_image,
            list(command) if command else ["/usr/bin/python3", "-u", "/standin/realtime_standin.py", *args],
            name=name or f"{self.prefix}-realtime",
            service=service,
            network=network or self.network,
            aliases=aliases,
            environment=environment,
            healthcheck=hc,
            restart=restart,
            ulimits=ulimits,
            mem_limit=mem_limit,
        )

    def busybox_gateway_image(self) -> str:
        """Import (once) an image with nothing but a static busybox; return its name."""
        ref = f"{self.prefix}.local/rtbooktest/kong-alpine:2.8.1"
        if ref not in self.extra_tags:
            repo, tag = ref.rsplit(":", 1)
            self.client.api.import_image_from_data(
                _busybox_tar(), repository=repo, tag=tag, changes=["ENV PATH=/bin"]
            )
            self.extra_tags.append(ref)
        return ref

    def gateway(
        self, *, name: str | None = None, network: str | None = None, service: str = "api-gw",
        busybox_only: bool = False,
    ) -> Any:
        """Start the gateway stand-in (it only needs to stay up and have getent or nslookup)."""
        return self._run(
            self.busybox_gateway_image() if busybox_only else self.gateway_image,
            ["/bin/sleep", "3600"],
            name=name or f"{self.prefix}-kong",
            service=service,
            network=network or self.network,
            aliases=("kong", "envoy"),
            # This machine has no upstream DNS: fail unknown names fast instead of after 10 s.
            dns_opt=("timeout:1", "attempts:1"),
            mount_usr=not busybox_only,
        )

    # ---------------------------------------------------------------- waiting
    def wait_health(self, container: Any, want: Sequence[str] = ("healthy", "unhealthy"), timeout: float = 20) -> str:
        """Wait until the container's health status is one of ``want``; return it."""
        deadline = time.monotonic() + timeout
        status = ""
        while time.monotonic() < deadline:
            container.reload()
            status = ((container.attrs.get("State") or {}).get("Health") or {}).get("Status", "")
            if status in want:
                return str(status)
            time.sleep(0.2)
        raise AssertionError(f"{container.name}: health stayed {status!r}, wanted {want}")

    def wait_restarts(self, container: Any, count: int = 2, timeout: float = 20) -> int:
        """Wait until the engine has restarted the container ``count`` times."""
        deadline = time.monotonic() + timeout
        restarts = 0
        while time.monotonic() < deadline:
            container.reload()
            restarts = int(container.attrs.get("RestartCount") or 0)
            if restarts >= count:
                return restarts
            time.sleep(0.2)
        raise AssertionError(f"{container.name}: only {restarts} restarts after {timeout}s")

    # ---------------------------------------------------------------- cleanup
    def remove_containers(self) -> None:
        """Remove every container this lab created (force, volumes included)."""
        for container in self.containers:
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
        self.containers.clear()

    def close(self) -> None:
        """Remove containers, networks and images; errors are collected, not raised midway."""
        errors: list[str] = []
        self.remove_containers()
        for net in self.networks:
            try:
                net.remove()
            except docker.errors.NotFound:
                pass
            except Exception as exc:
                errors.append(f"network {net.name}: {exc}")
        self.networks.clear()
        for image in (*self.extra_tags, self.gateway_image, self.realtime_image):
            try:
                self.client.images.remove(image, force=True)
            except docker.errors.ImageNotFound:
                pass
            except Exception as exc:
                errors.append(f"image {image}: {exc}")
        if errors:
            raise RuntimeError("docker test cleanup left objects behind: " + "; ".join(errors))

    @staticmethod
    def sweep_stale(client: Any, max_age_s: float = 1800) -> list[str]:
        """Remove test objects (label io.rtbook.test / prefix rtbooktest-) left by a killed run.

        Only objects older than ``max_age_s`` go, so a concurrent test session keeps its own.
        """
        import datetime as dt

        def old(created: str | int | None) -> bool:
            if isinstance(created, int):
                ts = float(created)
            elif isinstance(created, str) and created:
                ts = dt.datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00").timestamp()
            else:
                return False
            return time.time() - ts > max_age_s

        removed: list[str] = []
        for c in client.containers.list(all=True, filters={"label": TEST_LABEL}):
            if old(c.attrs.get("Created")):
                c.remove(force=True, v=True)
                removed.append(c.name)
        for n in client.networks.list(filters={"label": TEST_LABEL}):
            n.reload()
            if old(n.attrs.get("Created")):
                n.remove()
                removed.append(n.name)
        for image in client.images.list():
            tags = [t for t in image.tags if t.startswith("rtbooktest-")]
            if tags and old(image.attrs.get("Created")):
                for tag in tags:
                    client.images.remove(tag, force=True)
                removed.extend(tags)
        return removed

    def leftovers(self) -> list[str]:
        """Names of containers, networks and images with this lab's prefix still on the engine."""
        out = [c.name for c in self.client.containers.list(all=True) if c.name.startswith(self.prefix)]
        out += [n.name for n in self.client.networks.list() if n.name.startswith(self.prefix)]
        out += [t for i in self.client.images.list() for t in i.tags if t.startswith(self.prefix)]
        return out
