/*
 * A seccomp filter that makes one system call fail, for the unit tests that check how the
 * io_uring paths fall back (test_conn_fanout, test_send_batch). Included by the test files; not
 * a module. The filter cannot be removed: call it in a forked child.
 */
#ifndef TP_TEST_REFUSE_SYSCALL_H
#define TP_TEST_REFUSE_SYSCALL_H

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>

/* In this process from now on, system call `nr` fails with errno `err`, as under a container's
 * seccomp profile. 0, or -1 when the filter could not be installed. */
static int refuse_syscall(unsigned nr, int err)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

#endif
