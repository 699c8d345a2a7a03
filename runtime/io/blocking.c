// Design notes.
//
// The pool. One per runtime, created on first use and installed in the
// runtime's runtime-local slot; tr_rt_free calls pool_fini once every task
// is gone and every worker has exited. It is a FIFO of jobs and up to p_max
// threads under one pthread mutex, p_mu, with two condition variables:
// p_work_cv (idle threads wait on it, timed, for the keep-alive) and
// p_exit_cv (signalled when a thread exits). Thread management follows
// tokio's blocking pool: a submit that finds an idle thread hands it a
// "notification" (p_idle--, p_notify++, signal one); otherwise it starts a
// thread if fewer than p_max run; otherwise the job waits in the queue for
// the next thread that finishes a job. A woken thread consumes a
// notification if there is one, so a wake-up that races with the keep-alive
// timeout is never lost: the thread that timed out still takes the
// notification and works. Spurious wake-ups wait again until the same
// deadline. Threads are created under p_mu (tens of microseconds, and only
// when the pool grows): a failure can then be handled in the same critical
// section, by taking back the job when no thread at all runs.
//
// Joining exited threads without lists: a thread that exits swaps itself
// into p_zombie and joins the previous occupant after dropping the lock. So
// at most one exited thread is unjoined at a time, and pool_fini, once
// p_threads is 0, joins p_zombie, whose exit waited for the one before.
//
// Jobs. A job is allocated apart from the caller's op (the op only points at
// it), because a cancelled task's state is freed while its job may still run.
// Two references: the op side (released by the join/wait that collects the
// result, or by abandon) and the pool side (released after completion);
// whichever is last frees the job. j_lock (a short futex mutex) guards the
// handshake: completion sets j_done and takes the waker in one critical
// section, and a poll either finds j_done or stores its waker in one
// critical section, so no wake-up is lost. Wakers are copied out and fired
// after the unlock. A plain thread waits on j_done_word with a futex. The
// pool thread never touches the op, only the job.
//
// Cleanup: a user job's cleanup runs when its result is not delivered, in
// whichever of completion and abandon comes second (or in the join that
// finds TR_ESHUTDOWN). The built-in operations keep what they produce in the
// job (j_fd, j_out, j_ai) and hand it over by clearing the field, so that
// freeing the job releases whatever was not delivered: an abandoned open
// closes its descriptor, an abandoned read_all frees its buffer.
//
// Descriptors. A file operation on fd works on a duplicate made (close-on-
// exec) on the calling task's thread when the operation starts. The caller
// may then close fd as soon as it likes, even while a cancelled job still
// runs, and the pool can never reach a reused descriptor number (the trap
// README's Architecture names for deferred closes). Data moves through the job's own
// buffer for the same reason: a cancelled task's buffers are gone.
//
// Signals. Pool threads block every signal except the synchronous ones, so
// that process signals go to threads that expect them (the program's own,
// whose masks the library never touches: README's Architecture), and a
// write past RLIMIT_FSIZE fails with EFBIG (TR_ETOOBIG) instead of killing
// the process with SIGXFSZ.
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <troupe/blocking.h>

#include "base/base.h"
#include "exec/exec.h"
#include "io/io.h"

#define DEFAULT_MAX_THREADS 64u
#define DEFAULT_KEEPALIVE_MS 10000u

static const tr_waker no_waker = {NULL, NULL};

// j_done_word values.
enum { DW_RUNNING = 0, DW_DONE = 1, DW_SLEEPING = 2 };

// ---------------------------------------------------------------------------
// Jobs (tr__job: io/io.h).

typedef tr__job job;

job *
tr__job_new(int kind, size_t extra, void (*run)(tr__job *j))
{
    size_t sz = sizeof(job) + extra;
    job *j = tr__alloc(sz);
    memset(j, 0, sizeof *j);
    j->j_alloc = sz;
    j->j_kind = kind;
    j->j_run = run;
    j->j_fd = -1;
    j->j_lock = (tr__mutex)TR__MUTEX_INIT;
    atomic_init(&j->j_refs, 2);
    atomic_init(&j->j_done_word, DW_RUNNING);
    return j;
}

// job_free releases what the job still owns (products nobody collected).
static void
job_free(job *j)
{
    if (j->j_fd >= 0) {
        // EINTR: Linux has closed the descriptor all the same.
        (void)close(j->j_fd);
    }
    if (j->j_ai != NULL) {
        freeaddrinfo(j->j_ai);
    }
    free(j->j_out);
    tr__free(j, j->j_alloc);
}

// job_unref drops one side's reference.
static void
job_unref(job *j)
{
    // Pairs with the other side's release: the last one sees every write.
    if (atomic_fetch_sub_explicit(&j->j_refs, 1, memory_order_acq_rel) == 1) {
        job_free(j);
    }
}

// job_discard_user runs a user job's cleanup for a result nobody receives.
static void
job_discard_user(job *j)
{
    if (j->j_kind == TR__JOB_USER && j->j_cleanup != NULL) {
        j->j_cleanup(j->j_arg, j->j_result, j->j_ran);
    }
}

// job_complete publishes the outcome (pool thread, or pool_fini for a job
// that never ran), then wakes the waiter or, when the op side has gone,
// discards the result. Drops the pool side's reference.
static void
job_complete(job *j, bool ran, tr_err status)
{
    tr__mutex_lock(&j->j_lock);
    j->j_done = true;
    j->j_ran = ran;
    j->j_status = status;
    bool abandoned = j->j_abandoned;
    tr_waker w = j->j_waker;
    j->j_waker = no_waker;
    // Pairs with the acquire loads in tr_blocking_wait/is_done; acq_rel
    // as it also reads the sleeper's mark.
    uint32_t was = atomic_exchange_explicit(&j->j_done_word, DW_DONE, memory_order_acq_rel);
    tr__mutex_unlock(&j->j_lock);
    if (abandoned) {
        job_discard_user(j);
    } else {
        if (was == DW_SLEEPING) {
            tr__futex_wake(&j->j_done_word, INT_MAX);
        }
        tr_wake(w);
    }
    job_unref(j);
}

static void
job_execute(job *j)
{
    if (j->j_run != NULL) {
        j->j_run(j); // a built-in operation (fs.c, net.c)
    } else {
        j->j_result = j->j_fn(j->j_arg);
    }
}

// ---------------------------------------------------------------------------
// The pool.

typedef struct pool_thread {
    struct pool *t_pool;
    pthread_t t_id; // written by the creator under p_mu; read by the joiner
} pool_thread;

typedef struct pool {
    pthread_mutex_t p_mu;
    pthread_cond_t p_work_cv; // idle threads wait for a notification
    pthread_cond_t p_exit_cv; // a thread exited (pool_fini, the test hook)

    // All below: under p_mu.
    job *p_head; // FIFO of queued jobs
    job *p_tail;
    uint64_t p_queued;
    unsigned p_max;
    uint32_t p_keepalive_ms;
    unsigned p_threads; // live threads (incl. one about to exit)
    unsigned p_idle;    // threads waiting without a notification
    unsigned p_notify;  // notifications not yet taken by a woken thread
    bool p_shutdown;
    pool_thread *p_zombie; // the last thread that exited, not yet joined
    uint64_t p_started;

    // Statistics updated outside p_mu, before the job's completion is
    // published (so that whoever saw a job finish sees it counted):
    // relaxed atomics, read by tr_blocking_get_stats.
    _Atomic uint32_t p_running;   // jobs whose fn has started, not returned
    _Atomic uint64_t p_completed; // jobs that ran
    _Atomic uint64_t p_discarded; // jobs dropped unrun
} pool;

static void
queue_push(pool *p, job *j)
{
    j->j_next = NULL;
    if (p->p_tail != NULL) {
        p->p_tail->j_next = j;
    } else {
        p->p_head = j;
    }
    p->p_tail = j;
    p->p_queued++;
}

static job *
queue_pop(pool *p)
{
    job *j = p->p_head;
    if (j != NULL) {
        p->p_head = j->j_next;
        if (p->p_head == NULL) {
            p->p_tail = NULL;
        }
        p->p_queued--;
        j->j_next = NULL;
    }
    return j;
}

// queue_remove unlinks j. O(n): only on the failure path of submit.
static void
queue_remove(pool *p, job *j)
{
    job **pp = &p->p_head;
    job *prev = NULL;
    while (*pp != NULL && *pp != j) {
        prev = *pp;
        pp = &(*pp)->j_next;
    }
    TR__ASSERT(*pp == j);
    *pp = j->j_next;
    if (p->p_tail == j) {
        p->p_tail = prev;
    }
    p->p_queued--;
}

static struct timespec
deadline_after(uint32_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

// run_job runs (or skips, if abandoned before it started) one job. Called
// without p_mu. Once it has found the job not abandoned the job runs, come
// what may: only then is it counted as running.
static void
run_job(pool *p, job *j)
{
    tr__mutex_lock(&j->j_lock);
    bool abandoned = j->j_abandoned;
    tr__mutex_unlock(&j->j_lock);
    if (abandoned) {
        atomic_fetch_add_explicit(&p->p_discarded, 1, memory_order_relaxed);
        job_complete(j, false, TR_ECANCELED);
        return;
    }
    atomic_fetch_add_explicit(&p->p_running, 1, memory_order_relaxed);
    job_execute(j);
    atomic_fetch_sub_explicit(&p->p_running, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->p_completed, 1, memory_order_relaxed);
    job_complete(j, true, TR_OK);
}

static void *
pool_main(void *arg)
{
    pool_thread *self = arg;
    pool *p = self->t_pool;
    pthread_setname_np(pthread_self(), "troupe-blocking");
    pthread_mutex_lock(&p->p_mu);
    for (;;) {
        job *j;
        while ((j = queue_pop(p)) != NULL) {
            pthread_mutex_unlock(&p->p_mu);
            run_job(p, j);
            pthread_mutex_lock(&p->p_mu);
        }
        // Queue empty: exit if shutting down or above a lowered cap, else
        // wait (idle) for a notification until the keep-alive runs out.
        if (p->p_shutdown || p->p_threads > p->p_max) {
            break;
        }
        p->p_idle++;
        struct timespec until = deadline_after(p->p_keepalive_ms);
        bool leave = false;
        for (;;) {
            int rc = p->p_keepalive_ms == 0
                         ? ETIMEDOUT
                         : pthread_cond_timedwait(&p->p_work_cv, &p->p_mu, &until);
            if (p->p_notify > 0) {
                // A submitter moved us from idle to notified (p_idle--).
                p->p_notify--;
                break;
            }
            if (p->p_shutdown || rc == ETIMEDOUT) {
                p->p_idle--;
                leave = true;
                break;
            }
            // Spurious: wait on until the same deadline.
        }
        if (leave) {
            break;
        }
    }
    p->p_threads--;
    pool_thread *prev = p->p_zombie;
    p->p_zombie = self;
    pthread_cond_broadcast(&p->p_exit_cv);
    pthread_mutex_unlock(&p->p_mu);
    // Not under p_mu: prev has released it for good, and pool_fini joins
    // us (the newest zombie) only after we have joined prev.
    if (prev != NULL) {
        pthread_join(prev->t_id, NULL);
        tr__free(prev, sizeof *prev);
    }
    return NULL;
}

// spawn_locked starts one pool thread. Called with p_mu held.
static tr_err
spawn_locked(pool *p)
{
    pool_thread *t = tr__zalloc(sizeof *t);
    t->t_pool = p;
    // The new thread inherits this mask: everything blocked except the
    // signals a fault raises synchronously (blocking those kills anyway).
    sigset_t all, old;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGTRAP);
    sigdelset(&all, SIGABRT);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&t->t_id, NULL, pool_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        tr__free(t, sizeof *t);
        return TR_EAGAIN;
    }
    p->p_threads++;
    p->p_started++;
    return TR_OK;
}

// pool_submit queues j, waking or starting a thread for it.
static tr_err
pool_submit(pool *p, job *j)
{
    tr_err err = TR_OK;
    pthread_mutex_lock(&p->p_mu);
    if (p->p_shutdown) {
        err = TR_ESHUTDOWN;
    } else {
        queue_push(p, j);
        if (p->p_idle > 0) {
            p->p_idle--;
            p->p_notify++;
            pthread_cond_signal(&p->p_work_cv);
        } else if (p->p_threads < p->p_max) {
            // Failure with other threads alive is harmless: one will take
            // the job. With none, nobody would: take it back.
            if (spawn_locked(p) != TR_OK && p->p_threads == 0) {
                queue_remove(p, j);
                err = TR_EAGAIN;
            }
        }
    }
    pthread_mutex_unlock(&p->p_mu);
    return err;
}

static void
pool_fini(tr_rt *rt, void *ext)
{
    (void)rt;
    pool *p = ext;
    pthread_mutex_lock(&p->p_mu);
    p->p_shutdown = true;
    job *q = p->p_head;
    p->p_head = p->p_tail = NULL;
    atomic_fetch_add_explicit(&p->p_discarded, p->p_queued, memory_order_relaxed);
    p->p_queued = 0;
    pthread_cond_broadcast(&p->p_work_cv);
    pthread_mutex_unlock(&p->p_mu);
    // Queued jobs never run: their ops (abandoned by the tasks' drops, or
    // held by a plain thread) see TR_ESHUTDOWN and the cleanups run.
    while (q != NULL) {
        job *next = q->j_next;
        job_complete(q, false, TR_ESHUTDOWN);
        q = next;
    }
    // Running jobs cannot be interrupted: wait for their threads.
    pthread_mutex_lock(&p->p_mu);
    while (p->p_threads > 0) {
        pthread_cond_wait(&p->p_exit_cv, &p->p_mu);
    }
    pool_thread *last = p->p_zombie;
    p->p_zombie = NULL;
    pthread_mutex_unlock(&p->p_mu);
    if (last != NULL) {
        pthread_join(last->t_id, NULL);
        tr__free(last, sizeof *last);
    }
    pthread_cond_destroy(&p->p_work_cv);
    pthread_cond_destroy(&p->p_exit_cv);
    pthread_mutex_destroy(&p->p_mu);
    tr__free(p, sizeof *p);
}

// The runtime-local slot of the blocking pool: one key per process.
static tr_rt_key pool_key_v;
static pthread_once_t pool_key_once = PTHREAD_ONCE_INIT;

static void
pool_key_init(void)
{
    if (tr_rt_key_create(&pool_key_v, pool_fini) != TR_OK) {
        tr__panic("no runtime-local key left for the blocking pool");
    }
}

static tr_rt_key
pool_key(void)
{
    pthread_once(&pool_key_once, pool_key_init);
    return pool_key_v;
}

// env_uint reads a decimal environment variable in [lo, hi]; def when it is
// unset or malformed (the pool is made lazily, where no error can be
// returned: a bad value is ignored rather than fatal).
static unsigned long
env_uint(const tr_rt *rt, const char *name, unsigned long lo, unsigned long hi, unsigned long def)
{
    if (tr__rt_config(rt)->ignore_env) {
        return def;
    }
    const char *s = getenv(name);
    if (s == NULL || *s == '\0') {
        return def;
    }
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi || s[0] == '-') {
        return def;
    }
    return v;
}

// pool_get returns rt's pool, creating it on first use.
static pool *
pool_get(tr_rt *rt)
{
    pool *p = tr_rt_local_get(rt, pool_key());
    if (TR__LIKELY(p != NULL)) {
        return p;
    }
    p = tr__zalloc(sizeof *p);
    pthread_mutex_init(&p->p_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->p_work_cv, &ca);
    pthread_cond_init(&p->p_exit_cv, &ca);
    pthread_condattr_destroy(&ca);
    p->p_max = (unsigned)env_uint(rt, "TROUPE_BLOCKING_THREADS", 1, TR_BLOCKING_MAX_THREADS,
                                  DEFAULT_MAX_THREADS);
    p->p_keepalive_ms =
        (uint32_t)env_uint(rt, "TROUPE_BLOCKING_KEEPALIVE_MS", 0, UINT32_MAX, DEFAULT_KEEPALIVE_MS);
    pool *won = tr_rt_local_set(rt, pool_key(), p);
    if (won != p) {
        pool_fini(rt, p); // another thread was first; ours never ran anything
    }
    return won;
}

tr_err
tr_blocking_set_max_threads(tr_rt *rt, unsigned n)
{
    if (rt == NULL || n < 1 || n > TR_BLOCKING_MAX_THREADS) {
        return TR_EINVAL;
    }
    pool *p = pool_get(rt);
    pthread_mutex_lock(&p->p_mu);
    p->p_max = n;
    // Raised: start threads for the jobs that wait (idle threads would
    // have taken them already).
    uint64_t want = p->p_queued;
    while (!p->p_shutdown && want > 0 && p->p_threads < p->p_max && spawn_locked(p) == TR_OK) {
        want--;
    }
    pthread_mutex_unlock(&p->p_mu);
    return TR_OK;
}

tr_err
tr_blocking_set_keepalive(tr_rt *rt, uint32_t ms)
{
    if (rt == NULL) {
        return TR_EINVAL;
    }
    pool *p = pool_get(rt);
    pthread_mutex_lock(&p->p_mu);
    p->p_keepalive_ms = ms;
    pthread_mutex_unlock(&p->p_mu);
    return TR_OK;
}

void
tr_blocking_get_stats(tr_rt *rt, tr_blocking_stats *out)
{
    memset(out, 0, sizeof *out);
    pool *p = tr_rt_local_get(rt, pool_key());
    if (p == NULL) {
        out->max_threads = (unsigned)env_uint(rt, "TROUPE_BLOCKING_THREADS", 1,
                                              TR_BLOCKING_MAX_THREADS, DEFAULT_MAX_THREADS);
        out->keepalive_ms = (uint32_t)env_uint(rt, "TROUPE_BLOCKING_KEEPALIVE_MS", 0, UINT32_MAX,
                                               DEFAULT_KEEPALIVE_MS);
        return;
    }
    pthread_mutex_lock(&p->p_mu);
    out->threads = p->p_threads;
    out->idle = p->p_idle; // notified threads are not counted: they have work
    out->running = atomic_load_explicit(&p->p_running, memory_order_relaxed);
    out->max_threads = p->p_max;
    out->keepalive_ms = p->p_keepalive_ms;
    out->queued = p->p_queued;
    out->completed = atomic_load_explicit(&p->p_completed, memory_order_relaxed);
    out->discarded = atomic_load_explicit(&p->p_discarded, memory_order_relaxed);
    out->threads_started = p->p_started;
    pthread_mutex_unlock(&p->p_mu);
}

// tr__blocking_wait_threads waits (on p_exit_cv, at most timeout_ms) until
// rt's pool has at most n threads; returns whether it got there. For the
// tests of the keep-alive: hidden, declared by the test itself.

bool
tr__blocking_wait_threads(tr_rt *rt, unsigned n, unsigned timeout_ms)
{
    pool *p = tr_rt_local_get(rt, pool_key());
    if (p == NULL) {
        return true;
    }
    struct timespec until = deadline_after(timeout_ms);
    pthread_mutex_lock(&p->p_mu);
    int rc = 0;
    while (p->p_threads > n && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&p->p_exit_cv, &p->p_mu, &until);
    }
    bool ok = p->p_threads <= n;
    pthread_mutex_unlock(&p->p_mu);
    return ok;
}

// ---------------------------------------------------------------------------
// Ops. b_priv[0] is the job (NULL: idle); b_priv[1] is reserved.

static job *
op_job(const tr_blocking_op *op)
{
    return op->b_priv[0];
}

static void
op_clear(tr_blocking_op *op)
{
    op->b_priv[0] = NULL;
    op->b_priv[1] = NULL;
}

// op_start submits j (already holding the caller's waker, if any) and ties
// it to op. On failure the job is freed and the error returned.
static tr_err
op_start(tr_rt *rt, tr_blocking_op *op, job *j)
{
    tr_err err = pool_submit(pool_get(rt), j);
    if (err != TR_OK) {
        // Nobody else ever saw it: free it directly. That closes the
        // descriptor it holds (a duplicate, or the one tr_file_close was
        // given, which is thereby closed as promised) and frees its copies.
        job_free(j);
        return err;
    }
    op->b_priv[0] = j;
    op->b_priv[1] = NULL;
    return TR_OK;
}

// op_ready reports whether op's job is done, storing waker w otherwise.
static bool
op_ready(job *j, tr_waker w)
{
    tr__mutex_lock(&j->j_lock);
    bool done = j->j_done;
    if (!done) {
        j->j_waker = w;
    }
    tr__mutex_unlock(&j->j_lock);
    return done;
}

void
tr__blocking_release(tr_blocking_op *op, job *j)
{
    op_clear(op);
    job_unref(j);
}

void
tr_blocking_abandon(tr_blocking_op *op)
{
    job *j = op != NULL ? op_job(op) : NULL;
    if (j == NULL) {
        return;
    }
    op_clear(op);
    tr__mutex_lock(&j->j_lock);
    j->j_abandoned = true;
    j->j_waker = no_waker;
    bool done = j->j_done;
    tr__mutex_unlock(&j->j_lock);
    // Done before we let go: the completion left the result (or, after
    // TR_ESHUTDOWN, the unrun job) to us. j_ran and j_result are final.
    if (done) {
        job_discard_user(j);
    }
    job_unref(j);
}

bool
tr_blocking_is_done(const tr_blocking_op *op)
{
    job *j = op != NULL ? op_job(op) : NULL;
    if (j == NULL) {
        return false;
    }
    // Pairs with the exchange in job_complete.
    return atomic_load_explicit(&j->j_done_word, memory_order_acquire) == DW_DONE;
}

// ---------------------------------------------------------------------------
// User jobs.

tr_err
tr_spawn_blocking(tr_rt *rt, tr_blocking_op *op, tr_blocking_fn fn, void *arg,
                  tr_blocking_cleanup_fn cleanup)
{
    if (rt == NULL || op == NULL || fn == NULL) {
        return TR_EINVAL;
    }
    if (op_job(op) != NULL) {
        return TR_EBUSY;
    }
    job *j = tr__job_new(TR__JOB_USER, 0, NULL);
    j->j_fn = fn;
    j->j_arg = arg;
    j->j_cleanup = cleanup;
    return op_start(rt, op, j);
}

// user_finish collects a done user job's outcome and makes op idle.
static tr_err
user_finish(tr_blocking_op *op, job *j, tr_value *result)
{
    tr__mutex_lock(&j->j_lock);
    tr_err status = j->j_status;
    tr__mutex_unlock(&j->j_lock);
    if (status == TR_OK) {
        if (result != NULL) {
            *result = j->j_result;
        }
    } else {
        job_discard_user(j); // never ran: the cleanup releases arg
    }
    tr__blocking_release(op, j);
    return status;
}

tr_poll
tr_blocking_join(tr_blocking_op *op, tr_cx *cx, tr_value *result, tr_err *err)
{
    job *j = op_job(op);
    if (j == NULL || j->j_kind != TR__JOB_USER) {
        *err = TR_EINVAL;
        return TR_READY;
    }
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    if (!op_ready(j, tr_cx_waker(cx))) {
        return TR_PENDING;
    }
    *err = user_finish(op, j, result);
    return TR_READY;
}

tr_err
tr_blocking_wait(tr_blocking_op *op, tr_value *result)
{
    job *j = op != NULL ? op_job(op) : NULL;
    if (j == NULL || j->j_kind != TR__JOB_USER) {
        return TR_EINVAL;
    }
    if (tr__cur != NULL) {
        return TR_EDEADLOCK;
    }
    // Mark that we sleep, then sleep until the completion's exchange.
    // Pairs with the exchange in job_complete.
    uint32_t v = atomic_load_explicit(&j->j_done_word, memory_order_acquire);
    while (v != DW_DONE) {
        if (v == DW_RUNNING &&
            !atomic_compare_exchange_weak_explicit(&j->j_done_word, &v, DW_SLEEPING,
                                                   memory_order_acquire, memory_order_acquire)) {
            continue; // v reloaded
        }
        tr__futex_wait(&j->j_done_word, DW_SLEEPING, UINT64_MAX);
        v = atomic_load_explicit(&j->j_done_word, memory_order_acquire);
    }
    return user_finish(op, j, result);
}

tr_err
tr_blocking_run(tr_rt *rt, tr_blocking_fn fn, void *arg, tr_value *result)
{
    if (tr__cur != NULL) {
        return TR_EDEADLOCK;
    }
    tr_blocking_op op = TR_BLOCKING_OP_INIT;
    tr_err err = tr_spawn_blocking(rt, &op, fn, arg, NULL);
    if (err != TR_OK) {
        return err;
    }
    return tr_blocking_wait(&op, result);
}

// ---------------------------------------------------------------------------
// Built-in awaitables. Each poll: an op of another kind is a bug of the
// caller (TR_EINVAL, READY, op untouched); then the budget; then either
// start the job (idle op) or check on it.

enum tr__step
tr__blocking_step(tr_blocking_op *op, tr_cx *cx, int kind, tr__job **jp)
{
    job *j = op_job(op);
    *jp = j;
    if (j != NULL && j->j_kind != kind) {
        return TR__STEP_BAD;
    }
    if (!tr_cx_budget_spend(cx)) {
        return TR__STEP_PENDING;
    }
    if (j == NULL) {
        return TR__STEP_START;
    }
    return op_ready(j, tr_cx_waker(cx)) ? TR__STEP_DONE : TR__STEP_PENDING;
}

tr_poll
tr__blocking_launch(tr_blocking_op *op, tr_cx *cx, job *j, tr_err *err)
{
    j->j_waker = tr_cx_waker(cx); // before it is shared: no lock needed
    tr_err e = op_start(tr_cx_rt(cx), op, j);
    if (e != TR_OK) {
        *err = e;
        return TR_READY;
    }
    return TR_PENDING;
}

tr_err
tr__blocking_status(job *j)
{
    tr__mutex_lock(&j->j_lock);
    tr_err status = j->j_status;
    tr__mutex_unlock(&j->j_lock);
    return status == TR_OK ? j->j_err : status;
}
