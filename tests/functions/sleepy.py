"""Sleeps ``seconds`` (default 30).  With ``pid_file`` it first starts a child ``sleep`` and writes
``"<own pid> <child pid>"`` there, so a test can check that a timeout killed the whole process group."""

import os
import subprocess
import time


def handler(event, context):
    seconds = float(event.get("seconds", 30))
    pid_file = event.get("pid_file")
    if pid_file:
        child = subprocess.Popen(["sleep", str(int(seconds) + 30)])
        with open(pid_file + ".tmp", "w") as out:
            out.write(f"{os.getpid()} {child.pid}")
        os.replace(pid_file + ".tmp", pid_file)
    time.sleep(seconds)
    return {"slept": seconds, "pid": os.getpid()}
