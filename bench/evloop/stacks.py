#!/usr/bin/env python3
"""bench/evloop/stacks.py [TOP] < perf script output

Reads `perf script -F event,trace,ip,sym` of a recording made with
PERF_EVENTS="-e raw_syscalls:sys_enter" (bench/evloop/profile.sh) and
prints, per operation (the recording's socket(2) calls: one backend
connection per login or SMTP session), every system call by how it was
made:

  raw           syscall.RawSyscall (postern's sockio, x/sys): the runtime
                does not account for it
  ENTERSYSCALL  syscall.Syscall: the runtime's entry for blocking calls,
                which wakes its monitor thread (sysmon) when it sleeps
  runtime       the runtime's own (netpoll, futex, sysmon's usleep)

then the TOP (default 40) call sites, each with its first frames.

  perf script -i /tmp/pf/login.data -F event,trace,ip,sym | bench/evloop/stacks.py
"""
import collections
import re
import sys

NAMES = {0: 'read', 1: 'write', 3: 'close', 9: 'mmap', 11: 'munmap', 13: 'rt_sigaction',
         14: 'rt_sigprocmask', 15: 'rt_sigreturn', 16: 'ioctl', 24: 'sched_yield', 28: 'madvise',
         35: 'nanosleep', 39: 'getpid', 41: 'socket', 42: 'connect', 44: 'sendto', 45: 'recvfrom',
         48: 'shutdown', 51: 'getsockname', 52: 'getpeername', 54: 'setsockopt', 55: 'getsockopt',
         72: 'fcntl', 186: 'gettid', 202: 'futex', 228: 'clock_gettime', 232: 'epoll_wait',
         233: 'epoll_ctl', 234: 'tgkill', 275: 'splice', 281: 'epoll_pwait', 288: 'accept4',
         290: 'eventfd2', 293: 'pipe2'}
SKIP = ('syscall_trace', 'do_syscall', 'entry_SYSCALL', 'internal/runtime/syscall')


def how(frames):
    if not frames:
        return 'raw'
    if frames[0].startswith('runtime.'):
        return 'runtime'
    for f in frames:
        if f.startswith('syscall.RawSyscall'):
            return 'raw'
        if f.startswith('syscall.Syscall'):
            return 'ENTERSYSCALL'
    return 'raw'


def main():
    top = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    kinds, sites = collections.Counter(), collections.Counter()
    nr, frames = None, []

    def flush():
        if nr is None:
            return
        fs = [f for f in frames if not f.startswith(SKIP)]
        name = NAMES.get(nr, str(nr))
        kinds[(name, how(fs))] += 1
        sites[(name, how(fs), ' < '.join(fs[:8]))] += 1

    for line in sys.stdin:
        m = re.match(r'\S*raw_syscalls:sys_enter: NR (\d+)', line.strip())
        if m:
            flush()
            nr, frames = int(m.group(1)), []
            continue
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            frames.append(parts[1])
    flush()
    ops = sum(v for (name, _), v in kinds.items() if name == 'socket')
    if not ops:
        sys.exit('stacks.py: no socket(2) calls in the recording')
    print(f'{ops} operations, {sum(kinds.values()) / ops:.2f} system calls each')
    for (name, kind), v in kinds.most_common():
        if v / ops >= 0.05:
            print(f'{v / ops:8.2f}  {name:<14} {kind}')
    print()
    for (name, kind, chain), v in sites.most_common(top):
        print(f'{v / ops:8.2f}  {name} {kind} | {chain[:300]}')


if __name__ == '__main__':
    main()
