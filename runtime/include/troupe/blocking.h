// troupe/blocking.h: the blocking pool. Some work cannot be made
// non-blocking: a user's CPU-heavy or blocking function, name resolution
// (getaddrinfo: tr_resolve in troupe/net.h), and IO on regular files
// (which epoll refuses with EPERM: troupe/fs.h).
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

// An operation on the blocking pool in progress. Embed it in the task state
// (or keep it on a plain thread's stack); zeroed (or TR_BLOCKING_OP_INIT) it
// is idle. Back to its zeroed state when tr_blocking_join, tr_resolve or a
// tr_file_* awaitable returns TR_READY (and after tr_blocking_wait), so it
// may be reused at once. It holds a reference to a job that is allocated
// separately, so the op may be freed as soon as it is idle again or
// abandoned; it must not be copied while in flight.
typedef struct tr_blocking_op {
    void *b_priv[2]; // private: the job (NULL when idle) and a reserved word
} tr_blocking_op;

_Static_assert(sizeof(tr_blocking_op) == 2 * sizeof(void *), "tr_blocking_op: two words");

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

TR_END_DECLS

#endif
