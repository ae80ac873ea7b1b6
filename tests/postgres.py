"""A throwaway PostgreSQL cluster for tests: ``initdb`` in a temp dir, started on 127.0.0.1.

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres``
user and every server command runs through ``runuser``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN_DIRS = (
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/17/bin",
)


def find_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for directory in map(Path, BIN_DIRS):
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One initdb'd data directory; ``url`` connects as the trusted superuser."""

    def __init__(self, bin_dir: Path, user: str = "duet", fsync: bool = False) -> None:
        self.bin_dir = bin_dir
        self.root = tempfile.mkdtemp(prefix="duet-pg-")
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        os.chmod(self.root, 0o700)
        self.data = f"{self.root}/data"
        self.sockets = f"{self.root}/sockets"
        self.logfile = f"{self.root}/server.log"
        self.port = free_port()
        self.options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} "
            f"-c fsync={'on' if fsync else 'off'}"
        )
        self.url = f"postgresql://{user}@127.0.0.1:{self.port}/postgres"
        self.run("mkdir", self.sockets)
        self.run(
            str(bin_dir / "initdb"), "-D", self.data, "-A", "trust", "-U", user, "-N", "-E", "UTF8"
        )

    def run(self, *command: str) -> None:
        proc = subprocess.run(
            [*self.prefix, *command], capture_output=True, text=True, timeout=60, cwd=self.root
        )
        if proc.returncode:
            log = Path(self.logfile).read_text() if Path(self.logfile).exists() else ""
            raise RuntimeError(f"{command[0]} failed: {proc.stdout}{proc.stderr}{log}")

    def start(self) -> None:
        pg_ctl = str(self.bin_dir / "pg_ctl")
        self.run(pg_ctl, "-D", self.data, "-l", self.logfile, "-o", self.options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run(str(self.bin_dir / "pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):  # not running
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def throwaway_postgres(user: str = "duet", fsync: bool = False) -> Iterator[Cluster]:
    """Yield a started fresh cluster (trust auth, superuser ``user``); remove it after.

    ``fsync`` is off by default: a test cluster need not survive a power cut, and is faster.
    """
    bin_dir = find_binaries()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) not found")
    cluster = Cluster(bin_dir, user, fsync)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
