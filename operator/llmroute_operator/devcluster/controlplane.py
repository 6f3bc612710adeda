"""``ControlPlane``: etcd + kube-apiserver on free loopback ports, the way envtest runs them.

It takes the binaries from :mod:`.binaries`, certificates and service-account keys from :mod:`.pki`,
starts both servers through :mod:`.processes` (own process groups, stopped at exit or on SIGTERM),
writes an admin kubeconfig with :mod:`.kubeconfig` and waits for ``/readyz``. RBAC is on and
service-account tokens are issued and verified, so TokenRequest and TokenReview work. There is no
controller-manager, scheduler or kubelet: namespaces get no default ServiceAccount and are never
garbage-collected, and Pod objects are stored but never run. Logs stay in the work directory
(``etcd.log``, ``kube-apiserver.log``). Used by :mod:`.target` (tests, demo) and :mod:`.background`.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from llmroute_operator.devcluster import kubeconfig, pki, ports, processes
from llmroute_operator.devcluster.binaries import Binaries
from llmroute_operator.devcluster.kubectl import Kubectl

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
_PORT_IN_USE = "address already in use"
_START_ATTEMPTS = 3


class ControlPlaneError(RuntimeError):
    """The plane did not come up; the message carries the tail of the logs."""


class _PortTakenError(Exception):
    pass


class ControlPlane:
    """A local etcd + kube-apiserver. Use as a context manager, or call :meth:`start` / :meth:`stop`.

    ``persistent`` planes (``make cluster-up``) are meant to outlive this Python process: no exit
    hook and no parent-death signal, so stopping them is up to the caller (by PID).
    """

    def __init__(
        self,
        binaries: Binaries,
        *,
        work_dir: Path | None = None,
        persistent: bool = False,
        keep_work_dir: bool = False,
        start_timeout: float = 90.0,
        extra_apiserver_args: Sequence[str] = (),
    ) -> None:
        self.binaries = binaries
        self._owns_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="llmroute-plane-"))
        self.persistent = persistent
        self.keep_work_dir = keep_work_dir or persistent
        self.start_timeout = start_timeout
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.etcd_port = 0
        self.secure_port = 0
        self.startup_seconds: float | None = None
        self._pki: pki.Pki | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._exit_hook: int | None = None

    # -- paths ---------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.work_dir / "kubeconfig"

    @property
    def etcd_log(self) -> Path:
        return self.work_dir / "etcd.log"

    @property
    def apiserver_log(self) -> Path:
        return self.work_dir / "kube-apiserver.log"

    @property
    def logs(self) -> list[Path]:
        return [self.etcd_log, self.apiserver_log]

    @property
    def server(self) -> str:
        return f"https://{ports.LOOPBACK}:{self.secure_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://{ports.LOOPBACK}:{self.etcd_port}"

    def kubectl(self) -> Kubectl:
        return Kubectl(self.binaries.kubectl.path, self.kubeconfig)

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def is_running(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self._etcd, self._apiserver))

    def pids(self) -> dict[str, int]:
        found = {"etcd": self._etcd, "kube-apiserver": self._apiserver}
        return {name: proc.pid for name, proc in found.items() if proc is not None}

    def start(self) -> None:
        """Start etcd and kube-apiserver and wait until ``/readyz`` answers (or raise)."""
        if self._apiserver is not None:
            raise ControlPlaneError("this control plane is already started")
        started = time.monotonic()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self.persistent and self._exit_hook is None:
            self._exit_hook = processes.on_exit(self.stop)
        self._pki = pki.write_pki(self.work_dir / "pki")
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.etcd_port = ports.free_port()
            self.secure_port = ports.free_port()
            while self.secure_port == self.etcd_port:
                self.secure_port = ports.free_port()
            kubeconfig.write(self.kubeconfig, self.server, self._pki)
            try:
                self._launch(started + self.start_timeout)
                break
            except _PortTakenError:
                self._stop_processes(grace=1.0)  # a half-started server: nothing worth a graceful stop
                if attempt == _START_ATTEMPTS:
                    raise ControlPlaneError(f"ports kept being taken; see {self.work_dir}") from None
            except BaseException:
                self._stop_processes(grace=1.0)
                raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, then SIGKILL), and remove a temporary work dir."""
        if self._exit_hook is not None:
            processes.cancel(self._exit_hook)
            self._exit_hook = None
        self._stop_processes()
        if self._owns_work_dir and not self.keep_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def restart_apiserver(self, *, down_seconds: float = 0.0) -> float:
        """Stop kube-apiserver (etcd keeps the data), stay down ``down_seconds``, start it again on the
        same port and certificates; returns the seconds from the start until it was ready again.
        For fault tests: clients see refused connections, then the same server back."""
        if self._apiserver is None or self._pki is None:
            raise ControlPlaneError("this control plane is not started")
        processes.stop_child(self._apiserver, grace=10.0)
        self._apiserver = None
        time.sleep(down_seconds)
        started = time.monotonic()
        self._apiserver = processes.spawn(
            self.apiserver_args(), log_path=self.apiserver_log, persistent=self.persistent
        )
        context = self._ssl_context()
        while not self._ready(context):
            if self._apiserver.poll() is not None:
                raise ControlPlaneError(
                    f"kube-apiserver exited with code {self._apiserver.returncode} on restart; last lines "
                    f"of {self.apiserver_log}:\n{_tail(self.apiserver_log)}"
                )
            if time.monotonic() - started > self.start_timeout:
                raise ControlPlaneError(
                    f"kube-apiserver was not ready {self.start_timeout:.0f}s after a restart"
                )
            time.sleep(0.2)
        return time.monotonic() - started

    def copy_logs(self, dest: Path) -> list[Path]:
        """Copy the logs into ``dest`` (for test artifacts); returns the copies."""
        dest.mkdir(parents=True, exist_ok=True)
        copies = []
        for log in self.logs:
            if log.is_file():
                copies.append(Path(shutil.copy2(log, dest / log.name)))
        return copies

    # -- internals -----------------------------------------------------------------------------
    def _stop_processes(self, grace: float = 10.0) -> None:
        # The API server first, so that it does not log a storm of etcd errors on the way down.
        if self._apiserver is not None:
            processes.stop_child(self._apiserver, grace=grace)
            self._apiserver = None
        if self._etcd is not None:
            processes.stop_child(self._etcd, grace=grace)
            self._etcd = None

    def etcd_args(self) -> list[str]:
        return [
            str(self.binaries.etcd.path),
            f"--data-dir={self.work_dir / 'etcd-data'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            "--listen-peer-urls=http://localhost:0",
            "--unsafe-no-fsync=true",
        ]

    def apiserver_args(self) -> list[str]:
        assert self._pki is not None
        issuer = f"https://{ports.LOOPBACK}:{self.secure_port}/"
        return [
            str(self.binaries.kube_apiserver.path),
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={self.work_dir / 'apiserver-certs'}",
            f"--tls-cert-file={self._pki.serving_cert}",
            f"--tls-private-key-file={self._pki.serving_key}",
            f"--client-ca-file={self._pki.ca_cert}",
            f"--secure-port={self.secure_port}",
            f"--bind-address={ports.LOOPBACK}",
            f"--advertise-address={ports.LOOPBACK}",
            # A loopback address is not a valid Endpoints address; nothing needs that object here.
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={issuer}",
            f"--service-account-key-file={self._pki.service_account_pub}",
            f"--service-account-signing-key-file={self._pki.service_account_key}",
            *self.extra_apiserver_args,
        ]

    def _launch(self, deadline: float) -> None:
        persistent = self.persistent
        etcd = self._etcd = processes.spawn(self.etcd_args(), log_path=self.etcd_log, persistent=persistent)
        apiserver = self._apiserver = processes.spawn(
            self.apiserver_args(), log_path=self.apiserver_log, persistent=persistent
        )
        context = self._ssl_context()
        while True:
            for name, proc, log in (
                ("etcd", etcd, self.etcd_log),
                ("kube-apiserver", apiserver, self.apiserver_log),
            ):
                if proc.poll() is not None:
                    text = _tail(log)
                    if _PORT_IN_USE in text:
                        raise _PortTakenError
                    raise ControlPlaneError(
                        f"{name} exited with code {proc.returncode} during start-up; "
                        f"last lines of {log}:\n{text}"
                    )
            if self._ready(context):
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"kube-apiserver was not ready after {self.start_timeout:.0f}s; last lines of "
                    f"{self.apiserver_log}:\n{_tail(self.apiserver_log)}"
                )
            time.sleep(0.2)

    def _ssl_context(self) -> ssl.SSLContext:
        assert self._pki is not None
        context = ssl.create_default_context(cafile=str(self._pki.ca_cert))
        context.load_cert_chain(str(self._pki.admin_cert), str(self._pki.admin_key))
        return context

    def _ready(self, context: ssl.SSLContext) -> bool:
        try:
            with urllib.request.urlopen(f"{self.server}/readyz", context=context, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
            return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
