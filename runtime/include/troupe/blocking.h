// troupe/blocking.h: the blocking pool. Some work cannot be made
// non-blocking: a user's CPU-heavy or blocking function, name resolution
// (getaddrinfo), and IO on regular files (which epoll refuses with EPERM).
// Each runtime has a bounded pool of threads, created on first use, that runs
// such jobs in FIFO order; a task awaits a job through an op struct embedded
// in its state, and the pool wakes the task when the job is done. Plain
// threads can use the pool too (tr_blocking_wait, tr_blocking_run).
//
// Cancellation. A job that has started cannot be stopped. A task that is
// cancelled while an operation is in flight calls tr_blocking_abandon(&op)
// from its drop function (a no-op on an idle op, so drop may call it
// unconditionally). From then on the job never touches the op or any buffer
// of the caller: it owns a copy of everything it needs, and its result is
// discarded (an fd it opened is closed, memory it allocated is freed, a user
// job's cleanup callback runs). A job that has not started yet is skipped
// (tr_file_close excepted: it always closes). What a job that had started
// did to the world (bytes written, a file created) stays done: each
// function says.
//
// Pool size: at most TROUPE_BLOCKING_THREADS threads (default 64, or
// tr_blocking_set_max_threads); jobs beyond that wait in a FIFO queue.
// Threads start on demand and exit after TROUPE_BLOCKING_KEEPALIVE_MS
// (default 10000) without work. tr_rt_free discards the jobs still queued
// and waits for the running ones to return.
#ifndef TROUPE_BLOCKING_H
#define TROUPE_BLOCKING_H

#include <sys/types.h>

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

struct addrinfo; // <netdb.h>

// An operation on the blocking pool in progress. Embed it in the task state
// (or keep it on a plain thread's stack); zeroed (or TR_BLOCKING_OP_INIT) it
// is idle. Private fields. It holds a reference to a job that is allocated
// separately, so the op may be freed as soon as it is idle again (after
// TR_READY) or abandoned; it must not be copied while in flight.
typedef struct tr_blocking_op {
    void *b_priv[2];
} tr_blocking_op;

#define TR_BLOCKING_OP_INIT \
    {                       \
        {                   \
            NULL, NULL      \
        }                   \
    }

// The largest number of pool threads tr_blocking_set_max_threads accepts.
#define TR_BLOCKING_MAX_THREADS 4096u

// ---------------------------------------------------------------------------
// The pool.

// tr_blocking_set_max_threads sets the most threads rt's pool runs at once
// (1 .. TR_BLOCKING_MAX_THREADS, else TR_EINVAL). Lowering it lets the
// extra threads finish their jobs and exit; raising it starts threads for
// jobs already queued. Any thread; overrides TROUPE_BLOCKING_THREADS.
TR_API tr_err tr_blocking_set_max_threads(tr_rt *rt, unsigned n);

// tr_blocking_set_keepalive sets how long an idle pool thread waits for work
// before it exits (ms; 0 means at once). Applies to threads that go idle
// from now on. Any thread; overrides TROUPE_BLOCKING_KEEPALIVE_MS.
TR_API tr_err tr_blocking_set_keepalive(tr_rt *rt, uint32_t ms);

typedef struct tr_blocking_stats {
    unsigned threads;     // live pool threads
    unsigned idle;        // of which waiting for work
    unsigned running;     // jobs whose work has begun and not yet returned
    unsigned max_threads; // the cap
    uint32_t keepalive_ms;
    uint64_t queued;          // jobs waiting for a thread
    uint64_t completed;       // jobs that ran, in total
    uint64_t discarded;       // jobs dropped unrun (abandoned while queued, or at tr_rt_free)
    uint64_t threads_started; // threads created, in total
} tr_blocking_stats;

// tr_blocking_get_stats fills *out with a snapshot of rt's pool. Any
// thread. Before the pool's first use only the settings are filled in.
TR_API void tr_blocking_get_stats(tr_rt *rt, tr_blocking_stats *out);

// ---------------------------------------------------------------------------
// User jobs.

// A job: runs on a pool thread (never a worker), may block. Its result is
// handed to the joiner.
typedef tr_value (*tr_blocking_fn)(void *arg);

// A job's cleanup: runs exactly once for every job whose result its joiner
// does not receive with TR_OK: when the op was abandoned (ran tells whether
// fn ran; result is fn's when it did, zero otherwise), or when the runtime
// was freed before the job could start (ran false, and the joiner then gets
// TR_ESHUTDOWN). It releases what arg and result own. It runs on whichever
// thread comes last: a pool thread, the thread calling tr_blocking_abandon
// or the join, or the one in tr_rt_free. It must not block for long.
typedef void (*tr_blocking_cleanup_fn)(void *arg, tr_value result, bool ran);

// tr_spawn_blocking queues fn(arg) on rt's pool and ties it to op, which
// must be idle (TR_EBUSY otherwise). Any thread; never blocks. The job is
// awaited with tr_blocking_join (a task) or tr_blocking_wait (a plain
// thread), or given up with tr_blocking_abandon: exactly one of those must
// follow for each TR_OK, even after tr_rt_free (the job outlives the
// runtime until then). arg must stay valid until fn has returned and, if
// the op is abandoned, until cleanup (may be NULL) has run: if the task may
// be cancelled, arg must not live in its state. On an error (TR_EINVAL,
// TR_EBUSY, TR_ESHUTDOWN once tr_rt_free has begun, TR_EAGAIN when no pool
// thread could be started) fn and cleanup never run and op stays idle.
TR_API tr_err tr_spawn_blocking(tr_rt *rt, tr_blocking_op *op, tr_blocking_fn fn, void *arg,
                                tr_blocking_cleanup_fn cleanup);

// tr_blocking_join awaits the job of op (from tr_spawn_blocking): TR_READY
// with *err TR_OK and *result fn's result, or TR_ESHUTDOWN (the runtime was
// freed before the job ran; the cleanup has run), and op idle again; or
// TR_EINVAL at once for an idle op or one of another kind. TR_PENDING until
// fn has returned. A leaf operation: charges the poll budget. Cancellation:
// the drop function calls tr_blocking_abandon(&op); the job runs on (or is
// skipped if it has not started) and its result goes to the cleanup.
TR_API tr_poll tr_blocking_join(tr_blocking_op *op, tr_cx *cx, tr_value *result, tr_err *err);

// tr_blocking_wait blocks the calling thread until the job of op is done,
// then stores fn's result in *result (may be NULL) and returns TR_OK (op is
// idle again), or TR_ESHUTDOWN as for tr_blocking_join. TR_EINVAL for an
// idle op. Not from a runtime's worker thread: there it returns
// TR_EDEADLOCK at once and op is left as it was. A job that waits for
// another job can deadlock when the pool is at its cap.
TR_API tr_err tr_blocking_wait(tr_blocking_op *op, tr_value *result);

// tr_blocking_abandon gives up the operation in op, whatever its kind
// (user job, resolve, file op): the result is discarded as described at the
// top of this header and op becomes idle. A job not yet started is skipped.
// Any thread, never blocks (a user cleanup may run in it when the job had
// already finished). A no-op on an idle op.
TR_API void tr_blocking_abandon(tr_blocking_op *op);

// tr_blocking_is_done reports whether op's job has finished (so that a join
// or wait would not wait). False for an idle op. Any thread.
TR_API bool tr_blocking_is_done(const tr_blocking_op *op);

// tr_blocking_run runs fn(arg) on rt's pool and blocks the calling thread
// until it returns: tr_spawn_blocking plus tr_blocking_wait. TR_EDEADLOCK
// (fn not run) from a worker thread; the errors of tr_spawn_blocking.
TR_API tr_err tr_blocking_run(tr_rt *rt, tr_blocking_fn fn, void *arg, tr_value *result);

// ---------------------------------------------------------------------------
// Name resolution.

// tr_resolve runs getaddrinfo(host, service, hints) on the pool of the
// polling task's runtime. host or service may be NULL (not both); both
// strings are copied on the first poll, and of hints (may be NULL) only
// ai_flags, ai_family, ai_socktype and ai_protocol are read. TR_READY with
// *err TR_OK and *res the list (free it with tr_resolve_free or
// freeaddrinfo), or an error and *res NULL: TR_ENAME (no such name or
// service, or no address of the family asked for), TR_EAGAIN (temporary
// failure of the name server), TR_EINVAL (bad hints), TR_ENOMEM, or an
// errno mapping for a system error. Pass the same op (and arguments) on
// every poll until TR_READY; op is then idle. A leaf operation. Cancellation:
// tr_blocking_abandon(&op) from drop; a lookup in progress runs to its end
// and its list is freed.
TR_API tr_poll tr_resolve(tr_blocking_op *op, tr_cx *cx, const char *host, const char *service,
                          const struct addrinfo *hints, struct addrinfo **res, tr_err *err);

// tr_resolve_free frees a list from tr_resolve (NULL is a no-op).
TR_API void tr_resolve_free(struct addrinfo *res);

// ---------------------------------------------------------------------------
// Regular-file IO on the pool of the polling task's runtime.
//
// Every function here is an awaitable with the same shape: pass the same op
// and arguments on every poll until TR_READY; op is then idle again and
// *err holds the outcome (errno values map through tr_err_from_errno: a
// full disk is TR_ENOSPC, a file too large for the process limit
// TR_ETOOBIG). All are leaf operations. A job that takes a descriptor works
// on a duplicate made on the first poll, so fd may be closed once the
// operation is READY or abandoned without the pool ever reaching a reused
// descriptor number; a bad fd fails at once with TR_EBADF. Data moves
// through the job's own buffer: the caller's buffer is only read on the
// first poll (writes) or written on the final one (reads), so it may live
// in the task's state. Cancellation: the drop function calls
// tr_blocking_abandon(&op).

// The most bytes one tr_file_read/pread/write/pwrite moves (larger requests
// are short).
#define TR_FILE_MAX_CHUNK ((size_t)2 << 20)

// tr_file_open opens path (copied) with open(2) flags (O_CLOEXEC is added)
// and mode (with O_CREAT); *fd receives the descriptor, or -1 on error.
// Cancelled: a descriptor opened after all is closed (a file that O_CREAT
// created stays); an open not yet started never happens.
TR_API tr_poll tr_file_open(tr_blocking_op *op, tr_cx *cx, const char *path, int flags, mode_t mode,
                            int *fd, tr_err *err);

// tr_file_read reads up to len bytes (at most TR_FILE_MAX_CHUNK) at fd's
// file position into buf; *n is the count, 0 at end of file. Cancelled: the
// bytes read are discarded, but the file position has moved past them.
TR_API tr_poll tr_file_read(tr_blocking_op *op, tr_cx *cx, int fd, void *buf, size_t len, size_t *n,
                            tr_err *err);

// tr_file_pread is tr_file_read at offset off (the file position is not
// used or moved). Cancelled: nothing is delivered.
TR_API tr_poll tr_file_pread(tr_blocking_op *op, tr_cx *cx, int fd, void *buf, size_t len,
                             off_t off, size_t *n, tr_err *err);

// tr_file_write writes up to len bytes (at most TR_FILE_MAX_CHUNK; buf is
// copied on the first poll) at fd's file position, retrying short writes;
// *n is the count. When an error follows partial progress, *n is the
// progress with TR_OK and the next call reports the error. Cancelled: a
// write that had started completes (moving the file position); one not
// yet started never happens.
TR_API tr_poll tr_file_write(tr_blocking_op *op, tr_cx *cx, int fd, const void *buf, size_t len,
                             size_t *n, tr_err *err);

// tr_file_pwrite is tr_file_write at offset off (the file position is not
// used or moved). Cancelled: as tr_file_write.
TR_API tr_poll tr_file_pwrite(tr_blocking_op *op, tr_cx *cx, int fd, const void *buf, size_t len,
                              off_t off, size_t *n, tr_err *err);

// tr_file_fsync flushes fd's data and metadata to the device (fsync(2)).
// Cancelled: a flush that had started completes; one not yet started is
// skipped.
TR_API tr_poll tr_file_fsync(tr_blocking_op *op, tr_cx *cx, int fd, tr_err *err);

// tr_file_fdatasync flushes fd's data (fdatasync(2)). Cancelled: as fsync.
TR_API tr_poll tr_file_fdatasync(tr_blocking_op *op, tr_cx *cx, int fd, tr_err *err);

// tr_file_close closes fd on the pool (close can block, on NFS for one, and
// report a late write error). Ownership of fd passes to the operation on
// the first poll: it is closed exactly once whatever happens, including
// when the task is cancelled, so never close it again. The error (if any)
// is close's; the descriptor is gone either way.
TR_API tr_poll tr_file_close(tr_blocking_op *op, tr_cx *cx, int fd, tr_err *err);

// The limit tr_file_read_all applies when max is 0.
#define TR_FILE_READ_ALL_MAX ((size_t)1 << 30)

// tr_file_read_all reads the whole file at path (copied) into a new buffer:
// *data (free it with free(); one extra NUL byte follows the content, so
// text can be used as a string) and *len; NULL and 0 on error. TR_ETOOBIG
// when the file holds more than max bytes (0: TR_FILE_READ_ALL_MAX),
// TR_ENOMEM when the buffer cannot be had. Cancelled: the buffer is freed.
TR_API tr_poll tr_file_read_all(tr_blocking_op *op, tr_cx *cx, const char *path, size_t max,
                                void **data, size_t *len, tr_err *err);

// Flags of tr_file_write_all.
#define TR_FILE_SYNC 0x1u   // fsync before closing
#define TR_FILE_APPEND 0x2u // append instead of truncating
#define TR_FILE_EXCL 0x4u   // fail with TR_EEXIST if path exists

// tr_file_write_all writes len bytes of data (copied on the first poll;
// TR_ENOMEM if that copy cannot be had) to path, creating it with mode if
// needed and truncating it (see the flags), then closes it. A close error
// is reported when nothing failed before it. Cancelled: once started, the
// whole file is written and closed all the same; not yet started, nothing
// happens.
TR_API tr_poll tr_file_write_all(tr_blocking_op *op, tr_cx *cx, const char *path, const void *data,
                                 size_t len, mode_t mode, unsigned flags, tr_err *err);

TR_END_DECLS

#endif
