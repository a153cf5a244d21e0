"""The keeper of ``xrm run``'s embedded workflow worker: a small process of its own that
starts the worker, starts it again whenever it dies (with back-off, saying so on stderr
each time), and stops it on SIGTERM or SIGINT, or when ``xrm run`` is gone.

Why a process of its own: gunicorn's arbiter, which ``xrm run`` becomes, reaps every child
that exits (``waitpid(-1)``), so a keeper inside it could not learn how the worker ended;
and a thread there would be running while the arbiter forks its web workers.  This module
imports only the standard library, so what breaks the worker cannot break its keeper.

Both the keeper and the worker start with ``python -P``: the current folder is not put on
``sys.path``, so a folder named ``xrm`` where ``xrm run`` was started cannot stand in for
the package.

Environment: ``XRM_WORKER_DATABASE_URL`` (the database; not on the command line, where any
user could read a password in it) and ``XRM_WORKER_PARENT`` (the pid of ``xrm run``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

#: The worker's program; its parent is the keeper, whose pid it gets in the environment.
WORKER_PROGRAM = (
    "import os; from xrm.workflow.worker import serve; "
    "serve(os.environ['XRM_WORKER_DATABASE_URL'], parent=int(os.environ['XRM_WORKER_PARENT']))"
)
FIRST_DELAY = 1.0  # seconds before the first restart
MAX_DELAY = 60.0  # the longest wait between restarts
STEADY_AFTER = 60.0  # a worker that ran this long had recovered: back-off starts over
STOP_GRACE = 30.0  # seconds a stopping worker gets to finish its batch
TICK = 0.2  # how often the keeper looks at the worker and at its own parent


def command() -> list[str]:
    """How ``xrm run`` starts the keeper."""
    return [sys.executable, "-P", "-m", "xrm.supervisor"]


def say(message: str) -> None:
    print(f"xrm run: {message}", file=sys.stderr, flush=True)


def ending(returncode: int) -> str:
    """How a process ended, in words: ``exited with code 1``, ``was killed by SIGKILL``."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


class Keeper:
    """Runs one worker process at a time (``program``, Python source) until told to stop."""

    def __init__(
        self,
        env: dict[str, str],
        parent: int,
        *,
        program: str = WORKER_PROGRAM,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        steady_after: float = STEADY_AFTER,
    ):
        self.env = env
        self.parent = parent
        self.program = program
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.steady_after = steady_after
        self.stopping = False
        self.worker: subprocess.Popen | None = None
        self.started = 0.0

    def stop(self, *_signal) -> None:
        self.stopping = True

    def done(self) -> bool:
        """Told to stop, or orphaned: ``xrm run`` was killed and cannot say so."""
        return self.stopping or os.getppid() != self.parent

    def start(self) -> None:
        self.worker = subprocess.Popen(
            [sys.executable, "-P", "-c", self.program],
            env={**self.env, "XRM_WORKER_PARENT": str(os.getpid())},
            # Its own session: a Ctrl-C in the terminal reaches the keeper, which stops the
            # worker in order, rather than interrupting the worker mid-batch.
            start_new_session=True,
        )
        self.started = time.monotonic()

    def run(self) -> int:
        delay = self.first_delay
        self.start()
        while True:
            while self.worker.poll() is None and not self.done():
                time.sleep(TICK)
            if self.done():
                self.halt()
                return 0
            ran = time.monotonic() - self.started
            if ran >= self.steady_after:
                delay = self.first_delay
            say(
                f"the workflow worker (pid {self.worker.pid}) {ending(self.worker.returncode)} "
                f"after {ran:.1f} s; processes, reminders and email wait until it is back; "
                f"starting it again in {delay:g} s"
            )
            resume = time.monotonic() + delay
            while time.monotonic() < resume and not self.done():
                time.sleep(TICK)
            if self.done():
                return 0
            delay = min(delay * 2, self.max_delay)
            self.start()
            say(f"the workflow worker is started again (pid {self.worker.pid})")

    def halt(self) -> None:
        """SIGTERM: the worker finishes its batch and stops; killed if it takes too long."""
        if self.worker is None or self.worker.poll() is not None:
            return
        self.worker.terminate()
        try:
            self.worker.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            say(f"the workflow worker (pid {self.worker.pid}) did not stop; killing it")
            self.worker.kill()
            self.worker.wait()


def main() -> int:
    keeper = Keeper(dict(os.environ), int(os.environ["XRM_WORKER_PARENT"]))
    signal.signal(signal.SIGTERM, keeper.stop)
    signal.signal(signal.SIGINT, keeper.stop)
    return keeper.run()


if __name__ == "__main__":
    sys.exit(main())
