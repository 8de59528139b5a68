"""Child processes, stopped when the tool exits, and what /proc says of a running one.
Every process, cluster or listener a tool starts goes into STARTED (each has .close());
suite.workdir closes them all, in reverse, whatever happened."""

import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

STARTED = []  # everything to stop on exit: processes, clusters, sockets (each has .close())
TICKS = os.sysconf("SC_CLK_TCK")


class Process:
    """A child process that is killed on exit if it still runs."""

    def __init__(self, argv, env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 stdin=subprocess.DEVNULL):
        self.popen = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr, stdin=stdin)
        STARTED.append(self)

    @property
    def pid(self):
        return self.popen.pid

    def running(self):
        return self.popen.poll() is None

    def terminate(self):
        if self.running():
            self.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout):
        """The exit code, or None when it still runs after `timeout` s."""
        try:
            return self.popen.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        self.terminate()
        if self.wait(timeout) is None:
            self.close()
        return self.popen.wait()

    def close(self):
        if self.running():
            self.popen.kill()
            self.popen.wait()


def stop_all(processes, timeout):
    """SIGTERM to each at once, then SIGKILL to what still runs after `timeout`; the exit codes."""
    for p in processes:
        p.terminate()
    deadline = time.monotonic() + timeout
    codes = []
    for p in processes:
        code = p.wait(deadline - time.monotonic())
        if code is None:
            p.close()
        codes.append(code)
    return codes


def close_started(tool, grace=0.0):
    """Stops everything in STARTED: with `grace`, the processes get SIGTERM and that long
    first; then each thing is closed, the last started first."""
    if grace:
        stop_all([p for p in STARTED if isinstance(p, Process) and p.running()], grace)
    for thing in reversed(STARTED):
        try:
            thing.close()
        except Exception as err:  # noqa: BLE001 - stop the rest regardless
            print(f"{tool}: cleanup: {err}", file=sys.stderr)
    STARTED.clear()


def parallel(*functions):
    """Runs each function in a thread of its own; their results, in order (an exception is re-raised)."""
    results = [None] * len(functions)

    def run(i, fn):
        try:
            results[i] = (True, fn())
        except Exception as err:  # noqa: BLE001 - handed to the caller
            results[i] = (False, err)

    threads = [threading.Thread(target=run, args=(i, fn), daemon=True) for i, fn in enumerate(functions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ok, value in results:
        if not ok:
            raise value
    return [value for _, value in results]


class Proc:
    """Memory, descriptors and CPU time of a running process, from /proc."""

    def __init__(self, pid):
        self.pid = pid

    def kib(self, key):
        """A line of /proc/PID/status in KiB: VmRSS (now), VmHWM (the peak so far)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def nofile_soft(self):
        for line in Path(f"/proc/{self.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return line.split()[3]
        return "?"

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def raise_fd_limit():
    """Soft RLIMIT_NOFILE to the hard one: the clients open thousands of connections."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def install(command, package, tool):
    """The path of `command`, installed from the distribution's `package` (as root) when missing."""
    found = shutil.which(command) or next(
        (p for p in (f"/usr/sbin/{command}",) if os.access(p, os.X_OK)), None)
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit(f"{tool}: {command} is missing; install {package} (sudo apt-get install {package})")
    print(f"{tool}: installing {package} from the distribution", file=sys.stderr, flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL, timeout=300)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env,
                   stdout=subprocess.DEVNULL, timeout=300)
    return shutil.which(command) or f"/usr/sbin/{command}"
