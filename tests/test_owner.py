"""A record's owner: a pid alone is not a process (pids are reused), so the start time and host say."""

import os
import socket
import subprocess
import sys

from mixlab.owner import Owner


def test_this_process_owns_what_it_records_and_a_reused_pid_is_another_process():
    me = Owner.here()
    assert me.pid == os.getpid() and me.host == socket.gethostname() and me.alive()
    assert not Owner(me.pid, me.host, me.started - 1000).alive()  # the same pid, started earlier: another process
    assert Owner(me.pid).alive()  # a record of an older mixlab (pid only) is checked by pid


def test_an_ended_process_is_gone_and_another_hosts_cannot_be_checked():
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)
    assert not Owner(pid, socket.gethostname(), 1.0).alive() and not Owner(pid).alive()
    assert Owner(pid, "another-host." + socket.gethostname(), 1.0).alive()  # unknown there: not declared dead
    assert Owner(pid, "elsewhere", 1.0).describe() == f"process {pid} on host elsewhere"


def test_the_watcher_ends_what_it_watches_once_its_driver_is_gone_and_kill_tree_ends_a_tree():
    """end_when_gone (the local Ray cluster's agents): the driver is killed with -9; the process it handed to
    the watcher ends. kill_tree: a child and its grandchild both end."""
    import psutil

    from mixlab.owner import kill_tree

    driver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time, psutil\n"
            "from mixlab.owner import end_when_gone\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
            "end_when_gone([psutil.Process(child.pid)])\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = psutil.Process(int(driver.stdout.readline()))
    driver.kill()
    driver.wait()
    gone, alive = psutil.wait_procs([child], timeout=60)  # the watcher polls each second, then waits 2 s
    assert gone and not alive

    tree = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
            "print(g.pid, flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    grandchild = psutil.Process(int(tree.stdout.readline()))
    kill_tree(tree.pid)
    tree.wait()
    gone, alive = psutil.wait_procs([grandchild], timeout=30)
    assert gone and not alive
