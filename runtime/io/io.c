// Design notes.
//
// Every leaf operation runs one protocol (io_op): charge the budget; if the
// direction is not ready, register the task's waker (tr__io_wait, which
// re-checks under the registration's lock) and return TR_PENDING; else run
// the system call (EINTR retried) inside an in-flight count, and on EAGAIN
// clear the direction's readiness only if its tick is still the one read
// before the call (an edge that came meanwhile is kept), then loop. A short
// read or write on a stream clears readiness the same way: the kernel
// buffer was drained or filled, so the next call would only say EAGAIN.
//
// Close: tr_io_close marks the registration closed (later operations fail
// with TR_ECLOSED), leaves epoll, wakes every waiter, then sets CLOSING in
// io_life: the descriptor is closed by whoever brings the in-flight count
// to zero, so a system call running on another worker never meets a reused
// descriptor number. The registration's memory goes back to the slab with
// the last reference.
//
// Borrowed descriptors (standard streams and TR_IO_BORROW) are never made
// non-blocking. If they are blocking, they are watched level-triggered and
// one-shot: an operation runs only after an event said the direction is
// ready, does one system call, and forgets the readiness; waiting re-arms.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "exec/exec.h"
#include "io/io.h"
#include "reactor/reactor.h"

// ---------------------------------------------------------------------------
// Lifecycle.

static void
fd_close(tr_io *io)
{
    int fd = tr__io_fd_take(io);
    if (fd >= 0 && !(tr__io_flags(io) & TR__IOF_BORROWED)) {
        close(fd);
    }
}

static void
life_exit(tr_io *io)
{
    uint64_t old = tr__io_life_sub(io, TR__LIFE_ONE);
    if ((old & TR__LIFE_CLOSING) && (old & ~TR__LIFE_CLOSING) == 1) {
        fd_close(io); // the close was waiting for us
    }
}

static bool
life_enter(tr_io *io)
{
    uint64_t old = tr__io_life_add(io, TR__LIFE_ONE);
    if (old & TR__LIFE_CLOSING) {
        life_exit(io);
        return false;
    }
    return true;
}

static void
close_now(tr_io *io)
{
    uint64_t old = tr__io_ready_or(io, TR__RD_CLOSED);
    if (old & TR__RD_CLOSED) {
        return;
    }
    if (!(tr__io_flags(io) & TR__IOF_NOPOLL)) {
        // Before the close: epoll watches the open file, not the number.
        tr__rx_del(tr__io_rx(io), io);
    }
    tr__io_wake_all(io);
    old = tr__io_life_or(io, TR__LIFE_CLOSING);
    if ((old & ~TR__LIFE_CLOSING) == 0) {
        fd_close(io);
    }
}

// Descriptors the runtime made itself, non-blocking and close-on-exec
// already, so io_open asks the kernel nothing about them: a connection
// from accept4 or socket (a stream socket), a pipe of process.c's (a
// stream), and a pidfd (pollable, neither).
enum { OPEN_OURS_READY = 1, OPEN_OURS_PIPE, OPEN_OURS_POLL };

static tr_err
io_open(tr_rt *rt, int fd, unsigned flags, unsigned kind, tr_io **out)
{
    uint32_t iof = 0;
    bool blocking = false;
    if (kind == OPEN_OURS_READY) {
        iof |= TR__IOF_STREAM | TR__IOF_SOCKET;
    } else if (kind == OPEN_OURS_PIPE) {
        iof |= TR__IOF_STREAM;
    } else if (kind == OPEN_OURS_POLL) {
        // Pollable, not a stream: nothing to set.
    } else {
        struct stat st;
        if (fstat(fd, &st) != 0) {
            return tr__errno(errno);
        }
        if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISBLK(st.st_mode)) {
            iof |= TR__IOF_NOPOLL;
        }
        if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
            iof |= TR__IOF_STREAM;
        } else if (S_ISSOCK(st.st_mode)) {
            iof |= TR__IOF_SOCKET;
            int type = 0;
            socklen_t len = sizeof type;
            if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM) {
                iof |= TR__IOF_STREAM;
            }
        }
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0) {
            return tr__errno(errno);
        }
        if ((flags & TR_IO_BORROW) || fd <= 2) {
            iof |= TR__IOF_BORROWED;
            blocking = !(fl & O_NONBLOCK);
        } else {
            if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
                return tr__errno(errno);
            }
            // Late, for a descriptor the caller made: ours are created
            // close-on-exec atomically (SOCK_CLOEXEC, accept4, pipe2).
            int fdf = fcntl(fd, F_GETFD);
            if (fdf >= 0 && !(fdf & FD_CLOEXEC)) {
                fcntl(fd, F_SETFD, fdf | FD_CLOEXEC);
            }
        }
        if (blocking && !(iof & TR__IOF_NOPOLL)) {
            iof |= TR__IOF_ONESHOT;
        }
    }
    tr__reactor *rx = tr__rt_reactor(rt);
    tr_io *io = tr__reg_alloc(rx);
    if (io == NULL) {
        return TR_EMFILE;
    }
    tr__io_flags_set(io, iof);
    tr__io_armed_set(io, 0);
    tr__io_fd_set(io, fd);
    tr__io_life_set(io, 0);
    tr__io_refs_set(io, 1);
    // Optimistic: try the system call first (a blocking descriptor must
    // wait for its first event instead).
    uint64_t ready = (iof & TR__IOF_ONESHOT) ? 0 : (TR__RD_READ | TR__RD_WRITE);
    tr__io_ready_set(io, ready);
    if (!(iof & TR__IOF_NOPOLL)) {
        int e = tr__rx_add(rx, io, 0);
        if (e == EPERM) {
            // epoll cannot watch it (e.g. /dev/null): always ready.
            tr__io_flags_set(io, (iof | TR__IOF_NOPOLL) & ~(uint32_t)TR__IOF_ONESHOT);
            tr__io_ready_set(io, TR__RD_READ | TR__RD_WRITE);
        } else if (e != 0) {
            tr__io_fd_set(io, -1);
            tr__io_refs_set(io, 0);
            tr__reg_free(io);
            return tr__errno(e);
        }
    }
    *out = io;
    return TR_OK;
}

tr_err
tr_io_open(tr_rt *rt, int fd, unsigned flags, tr_io **out)
{
    if (rt == NULL || fd < 0 || out == NULL || (flags & ~(unsigned)TR_IO_BORROW) != 0) {
        return TR_EINVAL;
    }
    return io_open(rt, fd, flags, 0, out);
}

tr_err
tr__io_open_ours(tr_rt *rt, int fd, bool stream, tr_io **out)
{
    return io_open(rt, fd, 0, stream ? OPEN_OURS_PIPE : OPEN_OURS_POLL, out);
}

int
tr_io_fd(const tr_io *io)
{
    return tr__io_fd_acquire(io);
}

tr_rt *
tr_io_rt(const tr_io *io)
{
    return tr__io_rt(io);
}

tr_io *
tr_io_ref(tr_io *io)
{
    uint32_t old = tr__io_refs_inc(io);
    TR__ASSERT(old > 0);
    return io;
}

void
tr_io_release(tr_io *io)
{
    if (io == NULL) {
        return;
    }
    uint32_t old = tr__io_refs_dec(io);
    TR__ASSERT(old > 0);
    if (old == 1) {
        close_now(io);
        tr__reg_free(io);
    }
}

void
tr_io_close(tr_io *io)
{
    if (io == NULL) {
        return;
    }
    close_now(io);
    tr_io_release(io);
}

void
tr_io_split(tr_io *io, tr_io **rd, tr_io **wr)
{
    *rd = io;
    *wr = tr_io_ref(io);
}

tr_err
tr_io_shutdown(tr_io *io, int how)
{
    if (!life_enter(io)) {
        return TR_ECLOSED;
    }
    int r = shutdown(tr__io_fd(io), how);
    int e = errno;
    life_exit(io);
    return r == 0 ? TR_OK : tr__errno(e);
}

// ---------------------------------------------------------------------------
// The readiness protocol.

static inline uint64_t
dir_bit(int dir)
{
    return dir == TR_IO_READ ? TR__RD_READ : TR__RD_WRITE;
}

// clear_ready clears bit unless an event newer than `seen` set it again
// (ticks compared under mask: all 48 bits, or the 32 a public tick has).
static void
clear_ready_mask(tr_io *io, uint64_t bit, uint64_t seen, uint64_t mask)
{
    uint64_t cur = tr__io_ready_relaxed(io);
    while ((cur & bit) && (cur & mask) == (seen & mask)) {
        if (tr__io_ready_cas(io, &cur, cur & ~bit)) {
            return;
        }
    }
}

static void
clear_ready(tr_io *io, uint64_t bit, uint64_t seen)
{
    clear_ready_mask(io, bit, seen, TR__RD_TICK_MASK);
}

// io_op runs fn under the readiness protocol. want: the bytes asked for
// (a smaller result on a stream clears readiness), 0 when not a transfer.
// On TR_READY: *err TR_OK and *n fn's result, or *err the error and *n 0.
static tr_poll
io_op(tr_io *io, tr_cx *cx, int dir, tr_io_fn fn, void *arg, size_t want, size_t *out, tr_err *err)
{
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    uint64_t bit = dir_bit(dir);
    for (;;) {
        uint64_t r = tr__io_ready(io);
        if (r & TR__RD_CLOSED) {
            *out = 0;
            *err = TR_ECLOSED;
            return TR_READY;
        }
        if (!(r & bit)) {
            if (tr__io_wait(io, dir, tr_cx_waker(cx))) {
                return TR_PENDING;
            }
            continue;
        }
        bool oneshot = tr__io_flags(io) & TR__IOF_ONESHOT;
        if (oneshot && !tr__io_claim(io, dir)) {
            continue; // another waiter took this event: one call per event
        }
        if (!life_enter(io)) {
            if (oneshot) {
                tr__io_unclaim(io, dir);
            }
            *out = 0;
            *err = TR_ECLOSED;
            return TR_READY;
        }
        int fd = tr__io_fd(io);
        ssize_t n;
        do {
            n = fn(fd, arg);
        } while (n < 0 && errno == EINTR);
        int e = errno;
        life_exit(io);
        if (oneshot) {
            tr__io_unclaim(io, dir);
        }
        if (n >= 0) {
            // (A one-shot descriptor's readiness was claimed before the call.)
            if (!oneshot && (tr__io_flags(io) & TR__IOF_STREAM) && n > 0 && (size_t)n < want &&
                !(r & (dir == TR_IO_READ ? TR__RD_RHUP : TR__RD_WHUP))) {
                clear_ready(io, bit, r);
            }
            *out = (size_t)n;
            *err = TR_OK;
            return TR_READY;
        }
        if (e == EAGAIN || e == EWOULDBLOCK) {
            clear_ready(io, bit, r);
            continue;
        }
        *out = 0;
        *err = tr__errno(e);
        return TR_READY;
    }
}

tr_poll
tr_io_poll_op(tr_io *io, tr_cx *cx, int dir, tr_io_fn fn, void *arg, size_t *n, tr_err *err)
{
    return io_op(io, cx, dir, fn, arg, 0, n, err);
}

tr_poll
tr_io_ready(tr_io *io, tr_cx *cx, int dir, uint32_t *tick, tr_err *err)
{
    uint64_t bit = dir_bit(dir);
    for (;;) {
        uint64_t r = tr__io_ready(io);
        if (r & TR__RD_CLOSED) {
            *err = TR_ECLOSED;
            return TR_READY;
        }
        if (r & bit) {
            *tick = (uint32_t)((r & TR__RD_TICK_MASK) >> TR__RD_TICK_SHIFT);
            *err = TR_OK;
            return TR_READY;
        }
        if (tr__io_wait(io, dir, tr_cx_waker(cx))) {
            return TR_PENDING;
        }
    }
}

void
tr_io_clear_ready(tr_io *io, int dir, uint32_t tick)
{
    if (tr__io_flags(io) & TR__IOF_ONESHOT) {
        tr__io_ready_and(io, ~dir_bit(dir));
        return;
    }
    clear_ready_mask(io, dir_bit(dir), (uint64_t)tick << TR__RD_TICK_SHIFT,
                     (uint64_t)UINT32_MAX << TR__RD_TICK_SHIFT);
}

// ---------------------------------------------------------------------------
// Leaf operations.

typedef struct buf_arg {
    void *buf;
    size_t len;
    int flags;
    struct sockaddr *addr;
    socklen_t *addrlen;
    socklen_t tolen;
    const struct iovec *iov;
    int iovcnt;
    struct msghdr *msg;
} buf_arg;

static size_t
oneshot_cap(const tr_io *io, size_t len)
{
    // A blocking pipe may take only PIPE_BUF bytes without blocking.
    return (tr__io_flags(io) & TR__IOF_ONESHOT) && len > PIPE_BUF ? PIPE_BUF : len;
}

static ssize_t
do_read(int fd, void *a)
{
    buf_arg *b = a;
    return read(fd, b->buf, b->len);
}

static ssize_t
do_write(int fd, void *a)
{
    buf_arg *b = a;
    return write(fd, b->buf, b->len);
}

static ssize_t
do_readv(int fd, void *a)
{
    buf_arg *b = a;
    return readv(fd, b->iov, b->iovcnt);
}

static ssize_t
do_writev(int fd, void *a)
{
    buf_arg *b = a;
    return writev(fd, b->iov, b->iovcnt);
}

// Sockets: sendmsg with MSG_NOSIGNAL, so a closed peer is EPIPE, not SIGPIPE.
static ssize_t
do_sendv(int fd, void *a)
{
    buf_arg *b = a;
    struct msghdr m = {.msg_iov = (struct iovec *)b->iov, .msg_iovlen = (size_t)b->iovcnt};
    return sendmsg(fd, &m, MSG_NOSIGNAL);
}

static ssize_t
do_recv(int fd, void *a)
{
    buf_arg *b = a;
    return recvfrom(fd, b->buf, b->len, b->flags, b->addr, b->addrlen);
}

static ssize_t
do_send(int fd, void *a)
{
    buf_arg *b = a;
    return sendto(fd, b->buf, b->len, b->flags | MSG_NOSIGNAL, b->addr, b->tolen);
}

static ssize_t
do_recvmsg(int fd, void *a)
{
    buf_arg *b = a;
    return recvmsg(fd, b->msg, b->flags | MSG_CMSG_CLOEXEC);
}

static ssize_t
do_sendmsg(int fd, void *a)
{
    buf_arg *b = a;
    return sendmsg(fd, b->msg, b->flags | MSG_NOSIGNAL);
}

static size_t
iov_total(const struct iovec *iov, int n)
{
    size_t t = 0;
    for (int i = 0; i < n; i++) {
        t += iov[i].iov_len;
    }
    return t;
}

tr_poll
tr_read(tr_io *io, tr_cx *cx, void *buf, size_t len, size_t *n, tr_err *err)
{
    buf_arg b = {.buf = buf, .len = oneshot_cap(io, len)};
    return io_op(io, cx, TR_IO_READ, do_read, &b, b.len, n, err);
}

tr_poll
tr_write(tr_io *io, tr_cx *cx, const void *buf, size_t len, size_t *n, tr_err *err)
{
    buf_arg b = {.buf = (void *)buf, .len = oneshot_cap(io, len)};
    return io_op(io, cx, TR_IO_WRITE, (tr__io_flags(io) & TR__IOF_SOCKET) ? do_send : do_write, &b,
                 b.len, n, err);
}

tr_poll
tr_readv(tr_io *io, tr_cx *cx, const struct iovec *iov, int iovcnt, size_t *n, tr_err *err)
{
    buf_arg b = {.iov = iov, .iovcnt = iovcnt};
    return io_op(io, cx, TR_IO_READ, do_readv, &b, iov_total(iov, iovcnt), n, err);
}

tr_poll
tr_writev(tr_io *io, tr_cx *cx, const struct iovec *iov, int iovcnt, size_t *n, tr_err *err)
{
    buf_arg b = {.iov = iov, .iovcnt = iovcnt};
    return io_op(io, cx, TR_IO_WRITE, (tr__io_flags(io) & TR__IOF_SOCKET) ? do_sendv : do_writev,
                 &b, iov_total(iov, iovcnt), n, err);
}

tr_poll
tr_recv(tr_io *io, tr_cx *cx, void *buf, size_t len, int flags, size_t *n, tr_err *err)
{
    buf_arg b = {.buf = buf, .len = len, .flags = flags};
    return io_op(io, cx, TR_IO_READ, do_recv, &b, (flags & MSG_PEEK) ? 0 : len, n, err);
}

tr_poll
tr_send(tr_io *io, tr_cx *cx, const void *buf, size_t len, int flags, size_t *n, tr_err *err)
{
    buf_arg b = {.buf = (void *)buf, .len = len, .flags = flags};
    return io_op(io, cx, TR_IO_WRITE, do_send, &b, len, n, err);
}

tr_poll
tr_recvfrom(tr_io *io, tr_cx *cx, void *buf, size_t len, int flags, struct sockaddr *from,
            socklen_t *fromlen, size_t *n, tr_err *err)
{
    buf_arg b = {.buf = buf, .len = len, .flags = flags, .addr = from, .addrlen = fromlen};
    return io_op(io, cx, TR_IO_READ, do_recv, &b, 0, n, err);
}

tr_poll
tr_sendto(tr_io *io, tr_cx *cx, const void *buf, size_t len, int flags, const struct sockaddr *to,
          socklen_t tolen, size_t *n, tr_err *err)
{
    buf_arg b = {.buf = (void *)buf,
                 .len = len,
                 .flags = flags,
                 .addr = (struct sockaddr *)to,
                 .tolen = tolen};
    return io_op(io, cx, TR_IO_WRITE, do_send, &b, 0, n, err);
}

tr_poll
tr_recvmsg(tr_io *io, tr_cx *cx, struct msghdr *msg, int flags, size_t *n, tr_err *err)
{
    buf_arg b = {.msg = msg, .flags = flags};
    return io_op(io, cx, TR_IO_READ, do_recvmsg, &b, 0, n, err);
}

tr_poll
tr_sendmsg(tr_io *io, tr_cx *cx, const struct msghdr *msg, int flags, size_t *n, tr_err *err)
{
    buf_arg b = {.msg = (struct msghdr *)msg, .flags = flags};
    return io_op(io, cx, TR_IO_WRITE, do_sendmsg, &b, 0, n, err);
}

static ssize_t
do_accept(int fd, void *a)
{
    buf_arg *b = a;
    for (;;) {
        int c = accept4(fd, b->addr, b->addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c >= 0 || (errno != ECONNABORTED && errno != EPROTO)) {
            return c;
        }
        // The peer gave up before we took it: take the next one.
    }
}

tr_poll
tr_accept(tr_io *lis, tr_cx *cx, tr_io **conn, struct sockaddr *addr, socklen_t *addrlen,
          tr_err *err)
{
    buf_arg b = {.addr = addr, .addrlen = addrlen};
    size_t n;
    if (io_op(lis, cx, TR_IO_READ, do_accept, &b, 0, &n, err) == TR_PENDING) {
        return TR_PENDING;
    }
    if (*err != TR_OK) {
        return TR_READY;
    }
    *err = io_open(tr__io_rt(lis), (int)n, 0, OPEN_OURS_READY, conn);
    if (*err != TR_OK) {
        close((int)n);
    }
    return TR_READY;
}

tr_poll
tr_connect(tr_io *io, tr_cx *cx, tr_connect_op *op, const struct sockaddr *addr, socklen_t addrlen,
           tr_err *err)
{
    if (!op->cn_started) {
        if (!tr_cx_budget_spend(cx)) {
            return TR_PENDING;
        }
        if (!life_enter(io)) {
            *err = TR_ECLOSED;
            return TR_READY;
        }
        uint64_t seen = tr__io_ready(io);
        int r = connect(tr__io_fd(io), addr, addrlen);
        int e = errno;
        life_exit(io);
        if (r == 0) {
            *err = TR_OK;
            return TR_READY;
        }
        // (EAGAIN is a failure: no ephemeral port left, or a Unix
        // listener's backlog is full; no event would ever finish it.)
        if (e != EINPROGRESS && e != EINTR) {
            *err = tr__errno(e);
            return TR_READY;
        }
        op->cn_started = 1;
        // The optimistic write readiness says nothing about this connect:
        // wait for the edge it makes.
        clear_ready(io, TR__RD_WRITE, seen);
    }
    for (;;) {
        uint64_t r = tr__io_ready(io);
        if (r & TR__RD_CLOSED) {
            op->cn_started = 0;
            *err = TR_ECLOSED;
            return TR_READY;
        }
        if (!(r & TR__RD_WRITE)) {
            if (tr__io_wait(io, TR_IO_WRITE, tr_cx_waker(cx))) {
                return TR_PENDING;
            }
            continue;
        }
        if (!life_enter(io)) {
            op->cn_started = 0;
            *err = TR_ECLOSED;
            return TR_READY;
        }
        int fd = tr__io_fd(io);
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) {
            soerr = errno;
        }
        if (soerr == 0) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0 && errno == ENOTCONN) {
                life_exit(io);
                clear_ready(io, TR__RD_WRITE, r); // not yet: wait again
                continue;
            }
        }
        life_exit(io);
        op->cn_started = 0;
        *err = tr__errno(soerr);
        return TR_READY;
    }
}

// ---------------------------------------------------------------------------
// Multi-step operations.

tr_poll
tr_read_exact(tr_io *io, tr_cx *cx, tr_io_op *op, void *buf, size_t len, size_t *n, tr_err *err)
{
    while (op->iop_done < len) {
        size_t k;
        if (tr_read(io, cx, (char *)buf + op->iop_done, len - op->iop_done, &k, err) ==
            TR_PENDING) {
            return TR_PENDING;
        }
        if (*err != TR_OK) {
            return tr__io_op_finish(op, n, err, *err);
        }
        if (k == 0) {
            return tr__io_op_finish(op, n, err, TR_EEOF);
        }
        op->iop_done += k;
    }
    return tr__io_op_finish(op, n, err, TR_OK);
}

tr_poll
tr_write_all(tr_io *io, tr_cx *cx, tr_io_op *op, const void *buf, size_t len, size_t *n,
             tr_err *err)
{
    while (op->iop_done < len) {
        size_t k;
        if (tr_write(io, cx, (const char *)buf + op->iop_done, len - op->iop_done, &k, err) ==
            TR_PENDING) {
            return TR_PENDING;
        }
        if (*err != TR_OK) {
            return tr__io_op_finish(op, n, err, *err);
        }
        op->iop_done += k;
    }
    return tr__io_op_finish(op, n, err, TR_OK);
}
