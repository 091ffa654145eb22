"""CPU time and memory of process trees, and the machine's other load, from /proc.

cpu_seconds: utime+stime of each process (all its threads, live and exited) from
/proc/PID/stat. pss_kib: the proportional set size from /proc/PID/smaps_rollup, so pages
shared between a proxy's processes (sslsplit's privilege-separation parent and its worker)
are counted once in total. Background load: the machine's busy time less ours (proxy, nginx,
load tools), i.e. what other work on the machine took from the two cores meanwhile.
"""
import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # the command name may hold spaces and parentheses: split after the last ')'
    return data[data.rindex(")") + 2:].split()


def children_map():
    """{ppid: [pid, ...]} over every process of the machine."""
    kids = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                ppid = int(_stat_fields(name)[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(name))
    return kids


def tree(pid):
    """pid and all its live descendants."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if os.path.exists(f"/proc/{p}"):
            out.append(p)
            todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids, kernel_only=False):
    """utime + stime of the processes, or stime alone (kernel_only). This kernel has no
    IRQ time accounting (CONFIG_IRQ_TIME_ACCOUNTING unset), so softirq work done while a
    process runs, such as delivering the packets it sends to a peer's socket, is its stime."""
    total = 0
    for pid in pids:
        try:
            f = _stat_fields(pid)
            # utime, stime: fields 14 and 15 of stat
            total += int(f[12]) + (0 if kernel_only else int(f[11]))
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def pss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def machine_busy_seconds():
    """CPU seconds the whole machine has spent in user, nice and system mode since boot."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return sum(int(x) for x in fields[1:4]) / CLK_TCK


def children_cpu_seconds():
    """CPU seconds of this process's waited-for children (the load tools)."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime
