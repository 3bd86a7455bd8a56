#!/usr/bin/env python3
"""What a page fault costs on this host, in CPU µs a 4 KiB page (bench/README.md, "Session 24").

  fault_cost.py [--mb N] [--rounds R]

Maps N MiB (128) of anonymous memory without huge pages and times, on the thread's own CPU
clock (not the wall clock: a busy host's run-queue waits stay out), one write a page
  - first touch: the kernel gives the page its first frame;
  - after a fork, while the child lives: a copy-on-write fault (what Redis's main thread pays
    for each page it writes first after forking an AOF rewrite child);
  - after the child has exited: a write to a page the fork left write-protected and that is
    now the parent's alone (a fault that copies nothing, paid once a page after every rewrite);
  - a write to a page already writable (the loop's own cost, subtracted from the others);
and the fork itself (ms, wall clock). On bare metal or a VM with hardware nested paging a fault
costs ~0.5-2 µs; a guest whose page tables the hypervisor shadows pays many times that."""
import mmap
import os
import sys
import time

PAGE = 4096


def touch(m, pages, value):
    """CPU µs a page for one write in each page of pages."""
    t = time.thread_time_ns()
    for i in pages:
        m[i * PAGE] = value
    return (time.thread_time_ns() - t) / 1000 / len(pages)


def one(mb):
    n = mb * 256
    m = mmap.mmap(-1, n * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(m, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
        m.madvise(mmap.MADV_NOHUGEPAGE)
    pages = range(n)
    first = touch(m, pages, 1)
    loop = touch(m, pages, 2)
    r, w = os.pipe()
    t = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.read(r, 1)
        os._exit(0)
    fork_ms = (time.monotonic() - t) * 1000
    cow = touch(m, range(n // 2), 3)
    os.write(w, b"x")
    os.waitpid(pid, 0)
    after = touch(m, range(n // 2, n), 4)
    m.close()
    return first - loop, cow - loop, after - loop, loop, fork_ms


def main():
    mb, rounds = 128, 3
    a = sys.argv[1:]
    while a:
        if a[0] == "--mb" and len(a) > 1:
            mb, a = int(a[1]), a[2:]
        elif a[0] == "--rounds" and len(a) > 1:
            rounds, a = int(a[1]), a[2:]
        else:
            sys.exit(__doc__)
    if mb < 1 or rounds < 1:
        sys.exit("fault_cost.py: --mb and --rounds must be >= 1")
    print(f"| round | first touch µs a page | copy-on-write µs | after the child's exit µs | "
          f"a plain write µs | fork ms ({mb} MiB) |")
    print("|---|---|---|---|---|---|")
    for k in range(rounds):
        f, c, x, p, fk = one(mb)
        print(f"| {k + 1} | {f:.2f} | {c:.2f} | {x:.2f} | {p:.3f} | {fk:.1f} |")


if __name__ == "__main__":
    main()
