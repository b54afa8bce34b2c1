"""``python -m worker run`` under a profiler, for ``bench/throughput.py --profile DIR``.

    WECOM_...=... python bench/profile_worker.py OUT.prof         # cProfile
    WECOM_...=... python bench/profile_worker.py OUT.pyisession   # pyinstrument, if installed

The worker runs exactly as ``python -m worker run`` does (same settings from the
environment, uvloop, SIGTERM shutdown); profiling of its main thread (the event
loop) starts on SIGUSR1 and stops on SIGUSR2, when the profile is written to
OUT. ``throughput.py`` sends the two signals at the start and the end of the
measured window, so start-up and shutdown are left out. The SQLite writer
thread is not profiled (both profilers follow one thread); ``throughput.py``
reports its CPU time from ``/proc/PID/task`` instead.

cProfile times every call (exact counts, Python code slowed down a lot);
pyinstrument samples the main thread's stack every millisecond of wall time and
distorts much less; time the loop spends idle or in uvloop's C code shows as
the self time of the outermost frame. pyinstrument is not a dependency of the
project: ``.venv/bin/pip install pyinstrument`` to use it.
"""

from __future__ import annotations

import cProfile
import importlib
import signal
import sys
from collections.abc import Callable

SAMPLE_INTERVAL = 0.001  # seconds


def profiler_controls(path: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """Start and stop-and-write functions for the profiler that ``path``'s suffix names."""
    if path.endswith(".pyisession"):
        pyinstrument = importlib.import_module("pyinstrument")
        sampling = pyinstrument.Profiler(interval=SAMPLE_INTERVAL, async_mode="disabled")

        def stop_sampling() -> None:
            sampling.stop().save(path)

        return sampling.start, stop_sampling
    tracing = cProfile.Profile()

    def stop_tracing() -> None:
        tracing.disable()
        tracing.dump_stats(path)

    return tracing.enable, stop_tracing


def install(path: str) -> None:
    """Profile from SIGUSR1 to SIGUSR2, then write the profile to ``path``."""
    start, finish = profiler_controls(path)
    signal.signal(signal.SIGUSR1, lambda *_: start())
    signal.signal(signal.SIGUSR2, lambda *_: finish())


def main() -> int:
    """Install the signal-driven profiler and run the worker."""
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    install(sys.argv[1])
    from worker.service import run_from_environment  # noqa: PLC0415 - bench/ceiling.py imports install() only

    return run_from_environment()


if __name__ == "__main__":
    sys.exit(main())
