"""Jobs for the pool tests of tests/test_hostile.py: importable by a spawned worker without torch, so that its start
costs little."""

import os
import sys
import time


def job(spec: tuple) -> str:
    """``("ok", name)`` returns the name; ``("kill", signal)`` kills its own worker; ``("raise", text)`` raises;
    ``("exit", code)`` exits."""
    what, value = spec
    if what == "kill":
        os.kill(os.getpid(), value)
        time.sleep(60)
    if what == "raise":
        raise ValueError(value)
    if what == "exit":
        sys.exit(value)
    time.sleep(0.2)
    return value
