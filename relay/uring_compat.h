/* What the kernel's io_uring has and Debian's liburing 2.3 lacks, defined once for relay/. */
#ifndef RLY_URING_COMPAT_H
#define RLY_URING_COMPAT_H

#include <errno.h>
#include <liburing.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Linux 6.12: io_uring_getevents_arg's former `pad` is min_wait_usec. */
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15)
#endif

/* Publishes the SQEs liburing has handed out (the kernel sees them from here on) and returns
 * how many are waiting to be submitted. Mirrors liburing 2.3's internal __io_uring_flush_sq
 * for a ring without SQPOLL, whose SQ array liburing maps one-to-one at set-up. */
static inline unsigned rly__uring_flush_sq(struct io_uring *ring)
{
    struct io_uring_sq *sq = &ring->sq;
    unsigned tail = sq->sqe_tail;
    if (sq->sqe_head != tail) {
        sq->sqe_head = tail;
        io_uring_smp_store_release(sq->ktail, tail);
    }
    return tail - io_uring_smp_load_acquire(sq->khead);
}

/* Submits what is queued and sleeps once: until wait_nr completions are ready, or min_wait_us
 * has passed with at least one ready, or (nothing ready at min_wait_us) until the next single
 * completion or timeout. One wake-up per batch, and a worker that goes quiet is not woken by a
 * batch timer. Needs IORING_FEAT_MIN_TIMEOUT. Returns the submitted count, or -errno (-ETIME
 * when the timeout passed with nothing ready). */
static inline int rly__uring_submit_and_wait_min(struct io_uring *ring, unsigned wait_nr,
                                                 unsigned min_wait_us,
                                                 struct __kernel_timespec *timeout)
{
    struct io_uring_getevents_arg arg = {
        .sigmask = 0,
        .sigmask_sz = _NSIG / 8,
        .pad = min_wait_us, /* min_wait_usec */
        .ts = (unsigned long long)(uintptr_t)timeout,
    };
    unsigned submit = rly__uring_flush_sq(ring);
    long rc = syscall(__NR_io_uring_enter, ring->ring_fd, submit, wait_nr,
                      IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof(arg));
    return rc < 0 ? -errno : (int)rc;
}

#endif
