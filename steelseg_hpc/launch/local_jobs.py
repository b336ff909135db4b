"""The processes of a submitit local job, so ``cancel`` and ``status`` act on what really runs.

A local job's id is the pid of what submitit started: a shell running the profile's ``setup``
lines, which starts submitit's controller (``submitit.local._local``), which starts one task per
rank (``submitit.core._submit``), which runs the training. Signalling the job id alone reaches only
the shell: the training carried on and a relaunch started a second trainer on the same run dir.
So signals go to the task processes, where the training's stop handler is: SIGTERM saves at the
next optimiser step and exits; USR2 saves and asks submitit to requeue, which the controller does
by starting the tasks again. A job with no task yet (still starting) is killed outright.

A pid outlives its process: once the job has ended, the kernel hands the number to the next
process (after only 32,768 on many machines). Given the job's submission time, every function
here treats a process started after it as someone else's, so ``cancel`` of an old experiment
never signals an unrelated process and ``status`` never calls an ended job RUNNING.

Example:
    >>> is_alive(2 ** 22 + 12345)  # no such process
    False
    >>> import os, time
    >>> is_alive(os.getpid()), is_alive(os.getpid(), submitted_at=time.time() - 3600)
    (True, False)
"""
from __future__ import annotations

import signal

import psutil

_TASK_MODULE = "submitit.core._submit"
#: How much later than the recorded submission the job's own first process may have started
#: (the index records the time just after submitit started it; clocks are read to ~10 ms).
START_SLACK_S = 10.0


def _tree(pid: int, submitted_at: float | None = None) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        if submitted_at and root.create_time() > submitted_at + START_SLACK_S:  # 0 / None: not known
            return []  # the pid was reused: this process started after the job was submitted
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def is_alive(pid: int | str, submitted_at: float | None = None) -> bool:
    """Whether the job still has a living process (an exited, unreaped one does not count)."""
    try:
        return any(_alive(process) for process in _tree(int(pid), submitted_at))
    except ValueError:
        return False


def task_processes(pid: int | str, submitted_at: float | None = None) -> list[psutil.Process]:
    """The job's task processes (one per rank), the ones that run the training."""
    found = []
    for process in _tree(int(pid), submitted_at):
        try:
            if _alive(process) and _TASK_MODULE in " ".join(process.cmdline()):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def signal_job(pid: int | str, sig: signal.Signals, submitted_at: float | None = None) -> int:
    """Send ``sig`` to the job's tasks; returns how many processes were signalled.

    Without tasks (the job is still starting, or already ending) the whole process tree is
    killed for SIGTERM (there is nothing to save yet), and nothing is sent for other signals.
    """
    tasks = task_processes(pid, submitted_at)
    targets = tasks or ([p for p in _tree(int(pid), submitted_at) if _alive(p)] if sig == signal.SIGTERM else [])
    final = sig if tasks else signal.SIGKILL
    sent = 0
    for process in targets:
        try:
            process.send_signal(final)
            sent += 1
        except psutil.NoSuchProcess:
            continue
    return sent
