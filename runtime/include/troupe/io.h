// troupe/io.h: async IO over any file descriptor. A tr_io wraps a
// descriptor registered once with the runtime's reactor (epoll, edge
// triggered); its leaf operations try the system call, retry on EINTR, and
// on EAGAIN record the task's waker for that direction and return
// TR_PENDING. Readiness is cached per direction, so an edge that arrives
// before anyone waits is not lost, and a reader task and a writer task on
// one descriptor never take each other's wake-ups.
//
// Results: every awaitable here follows the library's convention (README,
// "Conventions"): on TR_READY, *err is TR_OK or the error, and a byte count
// comes back in *n (0 when *err is not TR_OK). End of file for a read is
// TR_READY with *err TR_OK and *n == 0. Every leaf operation charges the
// poll budget once.
//
// Cancellation: a leaf operation (read, write, recv, send, accept, ...)
// holds nothing while it is pending, so a task cancelled at an await on one
// loses nothing that was not yet transferred. Multi-step operations keep
// their progress in caller-owned op structs (tr_io_op, tr_connect_op): if
// the task is cancelled mid-way, what was already transferred is counted
// in the op (tr_io_op_done) and the rest was not; nothing needs to be
// dropped.
#ifndef TROUPE_IO_H
#define TROUPE_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

typedef struct tr_io tr_io;

// tr_io_open flags.
enum {
    // The descriptor stays the caller's: closing the tr_io does not close
    // it, and it is not made non-blocking (the reactor then reports
    // readiness one event at a time, and each operation does one system
    // call once ready). Implied for descriptors 0, 1 and 2, which a
    // program inherits and shares with its parent.
    TR_IO_BORROW = 1u << 0,
};

// tr_io_open registers fd with rt's reactor. Unless borrowed, the tr_io owns
// fd: it is made non-blocking and close-on-exec, and closed with the last
// reference. Takes ownership of fd on TR_OK only. Regular files and other
// descriptors epoll cannot watch are accepted and are always ready (their
// operations then block the worker: use troupe/blocking.h for files).
// Any thread. The new tr_io holds one reference.
TR_API tr_err tr_io_open(tr_rt *rt, int fd, unsigned flags, tr_io **out);

// tr_io_fd returns the descriptor (-1 once closed).
TR_API int tr_io_fd(const tr_io *io);

// tr_io_rt returns the runtime io belongs to.
TR_API tr_rt *tr_io_rt(const tr_io *io);

// tr_io_ref takes another reference to io (e.g. for a second task) and
// returns io. Any thread.
TR_API tr_io *tr_io_ref(tr_io *io);

// tr_io_release drops one reference; the last one closes the descriptor
// (when owned) and frees io. Any thread. Release every tr_io before
// tr_rt_free (tasks do so from their drop functions, which tr_rt_free runs):
// it closes the owned descriptors of any left over, and a tr_io must not be
// used after its runtime is freed.
TR_API void tr_io_release(tr_io *io);

// tr_io_close closes the descriptor now, whoever else holds references:
// it leaves the reactor first, the close itself waits for a system call in
// flight on another thread, and tasks waiting on io wake and get
// TR_ECLOSED (so do later operations). Then drops the caller's reference.
// Any thread.
TR_API void tr_io_close(tr_io *io);

// tr_io_split makes a read half and a write half for two tasks: both are
// references to io (*rd is io itself, *wr a new reference) and each is
// released on its own. Reads and writes keep separate wakers, so the two
// tasks never steal each other's wake-ups.
TR_API void tr_io_split(tr_io *io, tr_io **rd, tr_io **wr);

// tr_io_shutdown shuts down the write side (how = SHUT_WR), the read side
// or both of a socket (shutdown(2)). Any thread.
TR_API tr_err tr_io_shutdown(tr_io *io, int how);

// ---------------------------------------------------------------------------
// Leaf operations (see the header comment for results and cancellation).

// tr_read reads up to len bytes: *n the count, 0 at end of file.
TR_API tr_poll tr_read(tr_io *io, tr_cx *cx, void *buf, size_t len, size_t *n, tr_err *err);
// tr_write writes up to len bytes: *n the count (a short write is TR_OK).
TR_API tr_poll tr_write(tr_io *io, tr_cx *cx, const void *buf, size_t len, size_t *n, tr_err *err);
TR_API tr_poll tr_readv(tr_io *io, tr_cx *cx, const struct iovec *iov, int iovcnt, size_t *n,
                        tr_err *err);
TR_API tr_poll tr_writev(tr_io *io, tr_cx *cx, const struct iovec *iov, int iovcnt, size_t *n,
                         tr_err *err);
// Sockets. Sends add MSG_NOSIGNAL: a closed peer is TR_EPIPE, not SIGPIPE.
TR_API tr_poll tr_recv(tr_io *io, tr_cx *cx, void *buf, size_t len, int flags, size_t *n,
                       tr_err *err);
TR_API tr_poll tr_send(tr_io *io, tr_cx *cx, const void *buf, size_t len, int flags, size_t *n,
                       tr_err *err);
TR_API tr_poll tr_recvfrom(tr_io *io, tr_cx *cx, void *buf, size_t len, int flags,
                           struct sockaddr *from, socklen_t *fromlen, size_t *n, tr_err *err);
TR_API tr_poll tr_sendto(tr_io *io, tr_cx *cx, const void *buf, size_t len, int flags,
                         const struct sockaddr *to, socklen_t tolen, size_t *n, tr_err *err);
TR_API tr_poll tr_recvmsg(tr_io *io, tr_cx *cx, struct msghdr *msg, int flags, size_t *n,
                          tr_err *err);
TR_API tr_poll tr_sendmsg(tr_io *io, tr_cx *cx, const struct msghdr *msg, int flags, size_t *n,
                          tr_err *err);

// tr_accept accepts a connection on a listening socket: TR_READY with
// *err TR_OK and *conn a new tr_io (owned by the caller; non-blocking and
// close-on-exec from accept4) and the peer address in addr/addrlen when
// addr is not NULL; or *err set. Cancel-safe: no connection is taken
// unless the call returns TR_READY.
TR_API tr_poll tr_accept(tr_io *lis, tr_cx *cx, tr_io **conn, struct sockaddr *addr,
                         socklen_t *addrlen, tr_err *err);

// A connect in progress: embed it in the task state, zeroed. Back to its
// zeroed state when tr_connect returns TR_READY.
typedef struct tr_connect_op {
    int cn_started; // private: connect(2) returned EINPROGRESS; waiting for writability
} tr_connect_op;

_Static_assert(sizeof(tr_connect_op) == sizeof(int), "tr_connect_op: one int");

// tr_connect connects a non-blocking socket: TR_READY with *err TR_OK, or
// the failure (TR_ECONNREFUSED for a closed port), read from SO_ERROR.
// Cancelled mid-way: the socket is half-connected; close it.
TR_API tr_poll tr_connect(tr_io *io, tr_cx *cx, tr_connect_op *op, const struct sockaddr *addr,
                          socklen_t addrlen, tr_err *err);

// ---------------------------------------------------------------------------
// Readiness, for descriptors whose operations are not listed above (an
// eventfd, a pidfd, nng's pollable descriptors...).

enum { TR_IO_READ = 0, TR_IO_WRITE = 1 };

// tr_io_fn performs one non-blocking system call on fd and returns its
// result (>= 0), or -1 with errno set (EAGAIN: not ready). It keeps the
// system call's own shape on purpose (`return read(fd, ...)` is a whole
// tr_io_fn): tr_io_poll_op maps errno to a tr_err in one place.
typedef ssize_t (*tr_io_fn)(int fd, void *arg);

// tr_io_poll_op runs fn when direction dir is ready, with the readiness
// protocol of the leaf operations: TR_READY with *err TR_OK and *n fn's
// result, or *err the mapped errno and *n 0; TR_PENDING when fn reported
// EAGAIN (the task wakes at the next edge). Charges the budget once.
TR_API tr_poll tr_io_poll_op(tr_io *io, tr_cx *cx, int dir, tr_io_fn fn, void *arg, size_t *n,
                             tr_err *err);

// tr_io_ready waits until direction dir is (believed) ready, without any
// system call: TR_READY with *err TR_OK and *tick the readiness event seen,
// or *err TR_ECLOSED. When an operation of the caller's own then gets
// EAGAIN, call tr_io_clear_ready with that tick before waiting again.
TR_API tr_poll tr_io_ready(tr_io *io, tr_cx *cx, int dir, uint32_t *tick, tr_err *err);

// tr_io_clear_ready forgets direction dir's readiness, unless an event newer
// than tick arrived meanwhile (that one is kept: no edge is lost).
TR_API void tr_io_clear_ready(tr_io *io, int dir, uint32_t tick);

// ---------------------------------------------------------------------------
// Multi-step operations. Their progress is a tr_io_op in the task state.

// The progress of one tr_read_exact or tr_write_all: embed it in the task
// state, zeroed. Back to its zeroed state when the awaitable returns
// TR_READY, so it may be reused at once for the next call. An operation
// given up while pending (a timeout expired, or the task chose to stop)
// leaves its count in the op: read it with tr_io_op_done, then
// tr_io_op_abandon before the op is used again.
typedef struct tr_io_op {
    size_t iop_done; // private: bytes transferred so far
} tr_io_op;

_Static_assert(sizeof(tr_io_op) == sizeof(void *), "tr_io_op: one word");

// tr_io_op_done returns the bytes a pending operation has moved so far.
static inline size_t
tr_io_op_done(const tr_io_op *op)
{
    return op->iop_done;
}

// tr_io_op_abandon gives up a pending operation: op is zeroed again. The
// bytes already moved stay moved. Nothing else is held, so a drop function
// need not call it.
static inline void
tr_io_op_abandon(tr_io_op *op)
{
    op->iop_done = 0;
}

// tr_read_exact reads exactly len bytes into buf: TR_READY with *err TR_OK,
// or TR_EEOF when the stream ended first, or the read error; *n (may be
// NULL) is the bytes read into buf (len on TR_OK).
TR_API tr_poll tr_read_exact(tr_io *io, tr_cx *cx, tr_io_op *op, void *buf, size_t len, size_t *n,
                             tr_err *err);

// tr_write_all writes all len bytes of buf: TR_READY with *err TR_OK or the
// write error; *n (may be NULL) is the bytes written (len on TR_OK).
TR_API tr_poll tr_write_all(tr_io *io, tr_cx *cx, tr_io_op *op, const void *buf, size_t len,
                            size_t *n, tr_err *err);

TR_END_DECLS

#endif
