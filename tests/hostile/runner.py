"""Run `cnnlab ...` command lines as separate processes under an address-space limit, fast.

Starting Python and importing torch takes seconds on this machine, and the hostile-input
tests run dozens of command lines. So one server process imports cnnlab's command line once,
under the limit, and forks a child per command line: the child is a process of its own (its
own memory, under the same limit, its own stdout and stderr files, its own exit status) that
runs exactly what `python -m cnnlab ARGS` runs, `cnnlab.cli.main()`. The parent never runs a
torch operation, so forking it is safe. A child still running at its deadline is killed.

Protocol: one JSON request per line on stdin ({"args", "env", "timeout"}, or {"quit": true}),
one JSON reply per line on stdout ({"rc", "stdout", "stderr", "seconds", "timed_out"}).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ADDRESS_SPACE = 3 << 30  # a clean `cnnlab data info` needs about 650 MB of it


def _child(args: list[str], env: dict, out: str, err: str) -> None:
    os.environ.update(env)
    for fd, name in ((1, out), (2, err)):
        os.dup2(os.open(name, os.O_WRONLY | os.O_TRUNC), fd)
    sys.argv = ["cnnlab", *args]
    code = 0
    try:
        from cnnlab.cli import main

        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except BaseException:  # what the interpreter would do: the traceback, status 1
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(request: dict, scratch: str) -> dict:
    out, err = os.path.join(scratch, "out"), os.path.join(scratch, "err")
    for name in (out, err):
        Path(name).write_bytes(b"")
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(request["args"], request.get("env", {}), out, err)
    deadline, timed_out = start + request.get("timeout", 60), False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            timed_out = True
            break
        time.sleep(0.01)
    return {
        "rc": os.waitstatus_to_exitcode(status),
        "stdout": Path(out).read_text(errors="replace"),
        "stderr": Path(err).read_text(errors="replace"),
        "seconds": time.monotonic() - start,
        "timed_out": timed_out,
    }


def serve() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    import cnnlab.cli  # noqa: F401 - the imports every child would otherwise pay for
    import cnnlab.evaluate  # noqa: F401
    import cnnlab.train  # noqa: F401

    with tempfile.TemporaryDirectory() as scratch:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            request = json.loads(line)
            if request.get("quit"):
                break
            print(json.dumps(_run(request, scratch)), flush=True)


class Cli:
    """Client side: `Cli().run("data", "info", path)` -> the reply dict."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.hostile.runner"],
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def run(self, *args, env: dict | None = None, timeout: float = 60) -> dict:
        request = {"args": [str(a) for a in args], "env": env or {}, "timeout": timeout}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        # said, not left to end-of-file: a process forked by the tests may hold the pipe open
        self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    serve()
