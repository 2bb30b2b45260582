"""`churn` commands in processes forked from one interpreter that has imported churn already.

Each ``python -m churn.cli`` pays 5-7 s of CPU importing scikit-learn, MLflow, dask and churn
before it reads its arguments; a test that only checks how a command refuses bad input pays
that for every case. :class:`ForkedChurn` starts ``python -m tests.forkcli`` once (it imports the
CLI and the train job, and starts no thread), and each :meth:`ForkedChurn.run` forks it: the
child is a process of its own (own pid, working directory, stdin from /dev/null, stdout and
stderr files) running the same ``main()`` as ``python -m churn.cli``, exiting with its exit code;
an exception that escapes prints its traceback and exits 1, as the interpreter does, and the
``atexit`` handlers run. The child's environment is the caller's (or ``env``), and dask's config
is collected again from it (``DASK_CHURN__...`` settings); a library that reads a variable at import time only
would not see it, so keep to the ones churn, dask and MLflow read when they are used.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import dask.config

ROOT = Path(__file__).resolve().parents[1]


def _child(args: list[str], cwd: str, out: str, err: str, env: dict[str, str] | None) -> None:
    """In the forked child: run the CLI like ``python -m churn.cli ARGS`` and exit with its code
    (never return into the server's loop)."""
    code = 1
    try:
        os.setsid()  # its own process group, as a subprocess started with start_new_session
        os.chdir(cwd)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
            dask.config.refresh()  # DASK_* variables of the new environment, churn.yaml's defaults under them
        for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, out, os.O_WRONLY), (2, err, os.O_WRONLY)):
            new = os.open(path, mode)
            os.dup2(new, fd)
            os.close(new)
        cli = importlib.import_module("churn.cli.app")
        sys.argv = [str(Path(cli.__file__).with_name("__main__.py")), *args]
        sys.modules["__main__"].__package__ = "churn.cli"  # usage lines name `python -m churn.cli`
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - what the interpreter would do with it
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - a fault of this harness: say it, exit
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """The fork server: one JSON request a line on stdin, the child's pid and then its exit code on stdout."""
    import churn.cli.app  # noqa: F401 - what every command imports
    import churn.jobs.train  # noqa: F401 - what train imports when it starts
    print("ready", flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(req["args"], req["cwd"], req["out"], req["err"], req["env"])
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


class ForkedChurn:
    """A started fork server; :meth:`run` runs one ``churn`` command, :meth:`close` stops the server."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="forkcli-")
        self._proc = subprocess.Popen([sys.executable, "-m", "tests.forkcli"], cwd=ROOT, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, start_new_session=True)
        if self._line(300) != "ready":
            self.close()
            raise RuntimeError("the churn fork server did not start")
        self._n = 0

    def _line(self, timeout: float) -> str:
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired("churn (forked)", timeout)
        return self._proc.stdout.readline().strip()

    def start(self, *args: str, cwd: Path | str = ROOT, env: dict[str, str] | None = None) -> ForkedProcess:
        """Start ``churn ARGS`` in a forked child (``env``: its whole environment; None: this process's
        now, as a subprocess inherits it); the server takes the next command once this one ended."""
        assert self._proc.stdin is not None
        self._n += 1
        out, err = Path(self._tmp.name, f"{self._n}.out"), Path(self._tmp.name, f"{self._n}.err")
        out.touch()
        err.touch()
        self._proc.stdin.write(json.dumps({"args": list(args), "cwd": str(cwd), "out": str(out),
                                           "err": str(err),
                                           "env": dict(os.environ) if env is None else env}) + "\n")
        self._proc.stdin.flush()
        return ForkedProcess(self, int(self._line(60)), out, err)

    def run(self, *args: str, cwd: Path | str = ROOT, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``churn ARGS`` run to its end; its exit code, stdout and stderr as from ``subprocess.run``."""
        proc = self.start(*args, cwd=cwd, env=env)
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            proc.kill()
        return subprocess.CompletedProcess(["churn", *args], proc.returncode, out, err)

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._tmp.cleanup()


if __name__ == "__main__":
    serve()


class ForkedProcess:
    """A forked ``churn`` command, read like a ``subprocess.Popen`` with ``stderr=PIPE``: iterate
    :attr:`stderr` for its lines as they come, :meth:`communicate`, :meth:`kill`, :attr:`returncode`."""

    def __init__(self, server: ForkedChurn, pid: int, out: Path, err: Path) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._server, self._out = server, out
        self.stderr = self._lines(err)

    def poll(self) -> int | None:
        """The exit code once the command ended, else None (without waiting)."""
        if self.returncode is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.returncode = int(self._server._line(0))
        return self.returncode

    def _lines(self, path: Path) -> Iterator[str]:
        """stderr's lines as they are written, until the command ended and all is read."""
        with path.open("rb") as file:
            pending = b""
            while True:
                pending += file.readline()
                if pending.endswith(b"\n"):
                    yield pending.decode(errors="replace")
                    pending = b""
                elif self.poll() is not None:  # ended: what it wrote since, and nothing more comes
                    yield from (pending + file.read()).decode(errors="replace").splitlines(keepends=True)
                    return
                else:
                    time.sleep(0.02)

    def communicate(self, timeout: float) -> tuple[str, str]:
        """Wait for the end (TimeoutExpired after ``timeout`` s); stdout, and the stderr not yet read."""
        if self.returncode is None:
            self.returncode = int(self._server._line(timeout))
        return self._out.read_text(), "".join(self.stderr)

    def kill(self) -> None:
        """SIGKILL its process group if it still runs (the server reaps it and answers)."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.returncode = int(self._server._line(60))
