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
