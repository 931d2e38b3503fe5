"""Start a real `cnnlab serve` process on a free loopback port for the server tests."""

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(run, *extra):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(run), "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"server did not start: {proc.stdout.read()}") from None
            time.sleep(0.2)
    try:
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
