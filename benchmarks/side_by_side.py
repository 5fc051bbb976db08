"""Run `betterconv` trainings side by side, a fixed number at a time, each in its own process logging to
FOLDER/NAME/train.log (shared by det_ladder.py and det_small_objects.py)."""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def run_side_by_side(names: Sequence[str], argv_for: Callable[[str, Path], list[str]], folder: Path, slots: int,
                     env: Mapping[str, str] | None = None) -> dict[str, float]:
    """Run `python -m betterconv ARGV` for each name (`argv_for(name, run_folder)`), `slots` at a time, in order;
    stop them all when one fails (with the tail of its log). Returns the wall seconds each took."""
    pending, running, seconds = list(names), {}, {}
    while pending or running:
        while pending and len(running) < slots:
            name = pending.pop(0)
            run = folder / name
            run.mkdir(parents=True, exist_ok=True)
            log = open(run / "train.log", "w")
            cmd = [sys.executable, "-m", "betterconv", *argv_for(name, run)]
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                              env=dict(env) if env is not None else None), log, time.time())
            print(f"started {name}: {shlex.join(cmd[3:])}", flush=True)
        time.sleep(1)
        for name, (proc, log, started) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            if proc.returncode:
                for other, _, _ in running.values():
                    other.kill()
                tail = (folder / name / "train.log").read_text(errors="replace").replace("\r", "\n")
                sys.exit(f"{name}: training failed (exit {proc.returncode}):\n" + tail[-3000:])
            seconds[name] = round(time.time() - started, 1)
            print(f"finished {name} in {seconds[name]:.0f} s", flush=True)
    return seconds
