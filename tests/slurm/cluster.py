"""A real SLURM cluster on this machine for the tests: Debian's ``slurm-wlm`` (22.05).

One ``slurmctld`` and one ``slurmd -N <node>`` per node (each on its own port) make a multi-node
cluster on one host: no systemd, no cgroups (``proctrack/linuxproc``, ``task/none``), no munge
(``auth/none``, ``cred/none``), everything under one temporary folder, as root. Accounting is off
(no slurmdbd): ``tests/slurm/bin/sacct`` answers submitit's one ``sacct`` question from
``squeue``, and the controller keeps finished jobs for an hour (``MinJobAge``) so it can.

The daemons are started by :meth:`SlurmCluster.start` and stopped by PID in :meth:`stop`, which
first cancels every job and kills what is left of them (the processes whose environment names
this cluster's ``SLURM_CONF``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAKE_BIN = HERE / "bin"  # sacct


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONF = """\
ClusterName=torchopt-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
# a requeued job may start again after cred_expire + 1 s (default 120 s)
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# the nodes declare more CPUs than this machine has: a README's --cpus-per-task=4 fits
SlurmdParameters=config_overrides
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=5
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
{nodes}
PartitionName=debug Nodes={node_list} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """``nodes`` SLURM nodes of ``cpus`` CPUs each, all on this host, configured under ``root``."""

    def __init__(self, root: Path, nodes: tuple[str, ...] = ("n1", "n2"), cpus: int = 4):
        self.root, self.nodes, self.cpus = Path(root), nodes, cpus
        self.conf = self.root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.startup_s: float | None = None

    @staticmethod
    def available() -> str | None:
        """Why this machine cannot run the cluster, or None."""
        missing = [c for c in ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")
                   if shutil.which(c) is None]
        if missing:
            return f"SLURM is not installed ({', '.join(missing)} missing): make test-slurm installs slurm-wlm"
        if os.geteuid() != 0:
            return "the test cluster runs its daemons as root (SlurmUser=root)"
        return None

    @property
    def env(self) -> dict[str, str]:
        """The environment of a process that uses this cluster (and of the jobs it submits)."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{FAKE_BIN}:{os.environ['PATH']}"}

    def start(self, timeout: float = 60.0) -> "SlurmCluster":
        for sub in ("state", "log", *(f"spool/{n}" for n in self.nodes)):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        nodes = "\n".join(f"NodeName={n} NodeHostname=localhost NodeAddr=127.0.0.1 Port={_free_port()} "
                          f"CPUs={self.cpus} RealMemory=8000 State=UNKNOWN" for n in self.nodes)
        self.conf.write_text(CONF.format(ctld_port=_free_port(), root=self.root, nodes=nodes,
                                         node_list=",".join(self.nodes)))
        t0 = time.monotonic()
        self._daemon(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld")
        # a slurmd that registers before the controller listens retries only much later: wait for it
        self._until(lambda: "UP" in self.run(["scontrol", "ping"], check=False).stdout, t0, timeout)
        for n in self.nodes:
            self._daemon(["slurmd", "-D", "-N", n, "-f", str(self.conf)], f"slurmd-{n}")
        self._until(self._all_idle, t0, timeout)
        self.startup_s = time.monotonic() - t0
        return self

    def _all_idle(self) -> bool:
        out = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False).stdout.split()
        return {out[i] for i in range(0, len(out) - 1, 2) if out[i + 1] == "idle"} >= set(self.nodes)

    def _until(self, ready, t0: float, timeout: float) -> None:
        while not ready():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() - t0 > timeout:
                logs = "\n".join(p.read_text()[-2000:] for p in sorted((self.root / "log").glob("*.out")))
                self.stop()
                raise RuntimeError(f"the test SLURM cluster did not come up ({', '.join(dead) or 'timeout'}):\n{logs}")
            time.sleep(0.05)

    def _daemon(self, cmd: list[str], name: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))
        log.close()

    def run(self, cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check, **kw)

    def jobs(self, job: str | None = None) -> list[dict[str, str]]:
        """Every job (array task) the controller holds, or those of ``job``: id, state, node, name."""
        cmd = ["squeue", "-h", "--states=all", "-o", "%i|%T|%N|%j"] + (["-j", job] if job else [])
        out = self.run(cmd, check=False).stdout
        return [dict(zip(("id", "state", "node", "name"), line.split("|"))) for line in out.splitlines() if line]

    def wait_idle(self, timeout: float = 300.0) -> None:
        """Until no job is pending, running or completing."""
        deadline = time.monotonic() + timeout
        while any(j["state"] in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED")
                  for j in self.jobs()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still active after {timeout:.0f} s: {self.jobs()}")
            time.sleep(0.5)

    def stop(self) -> None:
        self.run(["scancel", "--full", "--user", "root"], check=False)
        try:
            self.wait_idle(timeout=15)
        except TimeoutError:
            pass
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        self._kill_job_leftovers()

    def _kill_job_leftovers(self) -> None:
        """Job processes this cluster started (their environment holds its SLURM_CONF)."""
        mark = f"SLURM_CONF={self.conf}".encode()
        for env in Path("/proc").glob("[0-9]*/environ"):
            try:
                if mark in env.read_bytes().split(b"\0") and int(env.parent.name) != os.getpid():
                    os.kill(int(env.parent.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue
