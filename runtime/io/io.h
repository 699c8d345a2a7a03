// io/io.h: the IO layer (README, Architecture): descriptors as tr_io
// (io.c), sockets and name resolution (net.c), buffered reads
// (bufread.c), the blocking pool (blocking.c), signals (signal.c) and
// child processes (process.c), on top of the reactor's registrations. What its files share
// with each other and with the white-box tests is declared here.
//
// Layers, bottom up: base -> task -> sched -> exec -> reactor -> io, fs,
// sync (tests/integration/layers.sh checks every #include "..."). This
// header may include every layer below it: base/base.h, task/task.h,
// sched/sched.h, exec/exec.h, reactor/reactor.h. No back-edge.
#ifndef TR_IO_IO_H
#define TR_IO_IO_H

#include <netdb.h>
#include <signal.h>
#include <sys/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <troupe/blocking.h>
#include <troupe/io.h>
#include <troupe/process.h>
#include <troupe/signal.h>
#include <troupe/task.h>

#include "base/base.h"

// tr__io_op_finish ends a multi-step operation on a tr_io_op (io.c's
// read_exact and write_all, bufread.c's): the count goes to *n (may be
// NULL), op is zeroed so that the next call can use it at once, and *err
// is e. Returns TR_READY.
static inline tr_poll
tr__io_op_finish(tr_io_op *op, size_t *n, tr_err *err, tr_err e)
{
    if (n != NULL) {
        *n = op->iop_done;
    }
    op->iop_done = 0;
    *err = e;
    return TR_READY;
}

// io.c: tr__io_open_ours is tr_io_open for a descriptor above 2 that the
// runtime made itself, already non-blocking and close-on-exec: a pipe
// (stream true) or a pidfd. It skips tr_io_open's fstat and fcntl calls
// (process.c makes three such descriptors per child).
tr_err tr__io_open_ours(tr_rt *rt, int fd, bool stream, tr_io **out) TR__HIDDEN;

// signal.c: tr__signal_poll is tr_signal_wait with an explicit waker and
// no budget: true with *count when the signal came, false when wk is
// registered to be woken at the next delivery. For process.c (its SIGCHLD
// fallback), which may pass a waker of its own; the caller serialises uses
// of one sig.
bool tr__signal_poll(tr_signal *sig, tr_waker wk, uint64_t *count) TR__HIDDEN;
// tr__signal_handled fills set with the signals troupe has handlers for.
void tr__signal_handled(sigset_t *set) TR__HIDDEN;
// tr__signal_rt_ensure creates rt's signal state if it does not exist yet:
// a module whose state uses signals calls it before it sets its own
// runtime-local slot, so that tr_rt_free (last set, first released)
// releases the user before the signals.
tr_err tr__signal_rt_ensure(tr_rt *rt) TR__HIDDEN;
// tr__signal_listeners counts the listeners of signo (tests).
uint32_t tr__signal_listeners(int signo) TR__HIDDEN;

// ---------------------------------------------------------------------------
// blocking.c: the pool's jobs, shared with the built-in operations.

// Job kinds: the user's function, or one of the built-in operations
// (fs.c, net.c); an op struct keeps to one kind until it is idle again.
enum tr__job_kind {
    TR__JOB_USER = 1,
    TR__JOB_OPEN,
    TR__JOB_READ,
    TR__JOB_PREAD,
    TR__JOB_WRITE,
    TR__JOB_PWRITE,
    TR__JOB_FSYNC,
    TR__JOB_FDATASYNC,
    TR__JOB_CLOSE,
    TR__JOB_READ_ALL,
    TR__JOB_WRITE_ALL,
    TR__JOB_RESOLVE,
};

// A job of the blocking pool (see blocking.c's design notes: references,
// j_lock, cleanup). Built-in operations (fs.c, net.c) fill the argument
// fields, set j_run, and keep their products in the job until the joiner
// takes them (clearing the field), so that freeing the job releases what
// nobody collected.
typedef struct tr__job tr__job;
struct tr__job {
    tr__job *j_next; // pool FIFO link, under p_mu
    size_t j_alloc;  // bytes allocated for the job; immutable
    int j_kind;      // immutable
    // The built-in operation, run on a pool thread (NULL: a user job, j_fn).
    void (*j_run)(tr__job *j);

    // User jobs; immutable.
    tr_blocking_fn j_fn;
    void *j_arg;
    tr_blocking_cleanup_fn j_cleanup;

    // The op side and the pool side; the release that reaches 0 frees the
    // job (acq_rel fetch_sub, pairing with the other side's).
    _Atomic uint32_t j_refs;
    // DW_RUNNING, DW_SLEEPING (a thread in tr_blocking_wait sleeps on it) or
    // DW_DONE. Completion exchanges in DW_DONE (release, under j_lock after
    // the outcome) and wakes the futex only if it took DW_SLEEPING.
    _Atomic uint32_t j_done_word;

    tr__mutex j_lock;
    bool j_done;      // under j_lock: the outcome is final
    bool j_ran;       // under j_lock: fn ran (set with j_done)
    bool j_abandoned; // under j_lock: the op side let go
    tr_err j_status;  // under j_lock: TR_OK (ran) or TR_ESHUTDOWN (discarded)
    tr_waker j_waker; // under j_lock: the task awaiting the job

    // The outcome. Written by the pool thread before it sets j_done, read by
    // the op side after it saw j_done (published by j_lock / j_done_word).
    tr_value j_result; // user job's result; bytes moved for built-ins
    tr_err j_err;      // built-ins' error

    // Built-in operations' arguments (immutable once queued) and products
    // (owned by the job until handed over; released by job_free).
    int j_fd;    // dup'ed descriptor, the one to close, or the one opened
    int j_flags; // open(2) flags, TR_FILE_* flags
    mode_t j_mode;
    off_t j_off;
    size_t j_len;            // bytes to move, or the read_all limit
    char *j_path;            // into j_data
    const char *j_host;      // into j_data, or NULL
    const char *j_service;   // into j_data, or NULL
    struct addrinfo j_hints; // ai_flags/family/socktype/protocol only
    bool j_has_hints;
    void *j_out;            // read_all: the buffer (malloc); write_all: the data copy
    size_t j_out_len;       // its length
    struct addrinfo *j_ai;  // resolve: the list
    unsigned char j_data[]; // bounce buffer, path, or host and service strings
};

// tr__job_new returns a job of kind with extra bytes of j_data, holding two
// references (the op side and the pool side). run: the built-in operation
// (NULL for a user job).
tr__job *tr__job_new(int kind, size_t extra, void (*run)(tr__job *j)) TR__HIDDEN;

// How a built-in awaitable's poll goes on (tr__blocking_step): an op of
// another kind is a bug of the caller (TR_EINVAL, READY, op untouched);
// then the budget; then either start the job (idle op) or check on it.
enum tr__step { TR__STEP_PENDING, TR__STEP_START, TR__STEP_DONE, TR__STEP_BAD };
enum tr__step tr__blocking_step(tr_blocking_op *op, tr_cx *cx, int kind, tr__job **jp) TR__HIDDEN;
// tr__blocking_launch starts j for the polling task: PENDING, or READY
// with *err when it could not be submitted (j is then freed).
tr_poll tr__blocking_launch(tr_blocking_op *op, tr_cx *cx, tr__job *j, tr_err *err) TR__HIDDEN;
// tr__blocking_status returns the outcome of a done built-in job: its own
// error, or TR_ESHUTDOWN when the runtime was freed before it ran.
tr_err tr__blocking_status(tr__job *j) TR__HIDDEN;
// tr__blocking_release lets op go of its (done) job and makes op idle.
void tr__blocking_release(tr_blocking_op *op, tr__job *j) TR__HIDDEN;

// blocking.c, for the tests of the keep-alive: tr__blocking_wait_threads
// waits (at most timeout_ms) until rt's pool has at most n threads;
// returns whether it got there.
bool tr__blocking_wait_threads(tr_rt *rt, unsigned n, unsigned timeout_ms) TR__HIDDEN;

// process.c, for the tests: tr__process_force_fallback makes later spawns
// use posix_spawn and SIGCHLD instead of the raw clone3 and a pidfd (on),
// or lets them try those again (off); tr__process_has_pidfd reports
// whether p waits through a pidfd; tr__process_orphans returns how many
// freed children await reaping.
void tr__process_force_fallback(bool on) TR__HIDDEN;
bool tr__process_has_pidfd(const tr_process *p) TR__HIDDEN;
size_t tr__process_orphans(void) TR__HIDDEN;

#endif
