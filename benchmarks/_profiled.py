"""Run ``python -m MODULE ARGS...`` under cProfile counting CPU time (not wall time, which
a loaded machine would blur), only between SIGUSR1 (start) and SIGUSR2 (stop, and write
the profile to PATH): so that a benchmark profiles its measured window, not the start.

    python benchmarks/_profiled.py PATH MODULE [ARGS...]
"""

import cProfile
import runpy
import signal
import sys
import time

path, module = sys.argv[1], sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
profiler = cProfile.Profile(time.process_time)


def _start(signum: int, frame: object) -> None:
    profiler.enable()


def _stop(signum: int, frame: object) -> None:
    profiler.disable()
    profiler.dump_stats(path)


signal.signal(signal.SIGUSR1, _start)
signal.signal(signal.SIGUSR2, _stop)
runpy.run_module(module, run_name="__main__", alter_sys=True)
