// Tests for the blocking pool (troupe/blocking.h): user jobs joined from
// tasks and waited for from plain threads, the thread cap and FIFO order,
// raising the cap, idle threads exiting, cancellation of a task whose job is
// running or still queued (the job never touches the freed op, the cleanup
// runs once, nothing leaks), freeing a runtime with jobs running and queued,
// getaddrinfo on loopback names only, and regular-file IO (write and read
// back, pread/pwrite, whole-file helpers, ENOENT, ENOSPC on /dev/full, a
// cancelled open whose descriptor must not leak).
//
// Task-based tests run on one worker and on two. Nothing sleeps: jobs block
// on semaphores or gates that the test opens, tasks await events that jobs
// set, plain threads use bounded waits, and a watchdog turns a lost wake-up
// into a failure.
#include "io/io.h"
#include "../test_util.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <troupe/blocking.h>
#include <troupe/fs.h>

// From blocking.c (hidden): wait until the pool has at most n threads.

static unsigned one_worker = 1;
static unsigned two_workers = 2;

static unsigned
workers_of(void **state)
{
    return *(unsigned *)*state;
}

// rt_of makes the runtime of the test's worker count (tu_rt_make).
static tr_rt *
rt_of(void **state)
{
    unsigned workers = workers_of(state);
    return tu_rt_make(workers > 1 ? TR_SCHED_WS : TR_SCHED_RR, workers);
}

static tr_value
val_u64(uint64_t v)
{
    tr_value x;
    memset(&x, 0, sizeof x);
    x.u64 = v;
    return x;
}

// ---------------------------------------------------------------------------
// Simple jobs.

static tr_value
job_double(void *arg)
{
    return val_u64((uint64_t)(uintptr_t)arg * 2);
}

// ---------------------------------------------------------------------------
// Spawn and join from a task; misuse errors.

#define BASIC_JOBS 3

typedef struct basic_task {
    int tr_pc;
    tr_blocking_op ops[BASIC_JOBS];
    tr_blocking_op idle;
    unsigned i;
    tr_value res;
    tr_err err;
} basic_task;

static tr_poll
basic_poll(void *arg, tr_cx *cx)
{
    basic_task *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < BASIC_JOBS; st->i++) {
        TU_CHECK(tr_spawn_blocking(tr_cx_rt(cx), &st->ops[st->i], job_double,
                                   (void *)(uintptr_t)(st->i + 10), NULL) == TR_OK);
    }
    // An op in flight cannot be reused; a worker cannot block on a job.
    TU_CHECK(tr_spawn_blocking(tr_cx_rt(cx), &st->ops[0], job_double, NULL, NULL) == TR_EBUSY);
    TU_CHECK(tr_blocking_wait(&st->ops[0], NULL) == TR_EDEADLOCK);
    TU_CHECK(tr_blocking_run(tr_cx_rt(cx), job_double, NULL, NULL) == TR_EDEADLOCK);
    TU_CHECK(tr_spawn_blocking(tr_cx_rt(cx), &st->idle, NULL, NULL, NULL) == TR_EINVAL);
    // Joining an idle op is an error, at once.
    TR_AWAIT(st, tr_blocking_join(&st->idle, cx, &st->res, &st->err));
    TU_CHECK(st->err == TR_EINVAL);
    for (st->i = 0; st->i < BASIC_JOBS; st->i++) {
        TR_AWAIT(st, tr_blocking_join(&st->ops[st->i], cx, &st->res, &st->err));
        TU_CHECK(st->err == TR_OK);
        TU_CHECK(st->res.u64 == (st->i + 10) * 2);
        TU_CHECK(memcmp(&st->ops[st->i], &(tr_blocking_op){0}, sizeof st->ops[0]) == 0); // idle
        TU_CHECK(!tr_blocking_is_done(&st->ops[st->i]));
    }
    // Op reuse: back to its zeroed state after TR_READY, the op takes the
    // next job at once, which runs and is joined in full.
    TU_CHECK(tr_spawn_blocking(tr_cx_rt(cx), &st->ops[0], job_double, (void *)(uintptr_t)21,
                               NULL) == TR_OK);
    TR_AWAIT(st, tr_blocking_join(&st->ops[0], cx, &st->res, &st->err));
    TU_CHECK(st->err == TR_OK && st->res.u64 == 42);
    TR_END(st);
}

static const tr_task_spec basic_spec = {
    .name = "basic", .poll = basic_poll, .size = sizeof(basic_task)};

static void
test_blocking_spawn_join(void **state)
{
    tr_rt *rt = rt_of(state);
    tu_run_root(rt, &basic_spec, NULL);
    tr_blocking_stats bs;
    tr_blocking_get_stats(rt, &bs);
    assert_int_equal(bs.completed, BASIC_JOBS + 1); // and the op reused once
    assert_true(bs.threads_started >= 1 && bs.threads <= bs.max_threads);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Many jobs over the cap: the first CAP jobs wait at a gate until CAP of
// them run at once (so the pool must grow to the cap), no more than CAP
// ever run at once, and every job completes.

#define CAP 4
#define MANY 64

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running; // under mu
    int peak;    // under mu
    int arrived; // under mu
    int need;    // arrivals that open the gate
} gate;

static gate the_gate;

static void
gate_init(gate *g, int need)
{
    pthread_mutex_init(&g->mu, NULL);
    tu_cond_init(&g->cv);
    g->running = g->peak = g->arrived = 0;
    g->need = need;
}

static void
gate_destroy(gate *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

// gate_pass: count this job as running, wait (bounded) for the gate to open.
static void
gate_pass(gate *g)
{
    struct timespec until = tu_abstime(TU_WAIT_MS);
    pthread_mutex_lock(&g->mu);
    g->running++;
    if (g->running > g->peak) {
        g->peak = g->running;
    }
    g->arrived++;
    if (g->arrived >= g->need) {
        pthread_cond_broadcast(&g->cv);
    }
    int rc = 0;
    while (g->arrived < g->need && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&g->cv, &g->mu, &until);
    }
    TU_CHECK(g->arrived >= g->need);
    g->running--;
    pthread_mutex_unlock(&g->mu);
}

static tr_value
job_gate(void *arg)
{
    gate_pass(&the_gate);
    return val_u64((uint64_t)(uintptr_t)arg * 3);
}

typedef struct many_task {
    int tr_pc;
    tr_blocking_op ops[MANY];
    unsigned i;
    tr_value res;
    tr_err err;
} many_task;

static tr_poll
many_poll(void *arg, tr_cx *cx)
{
    many_task *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < MANY; st->i++) {
        TU_CHECK(tr_spawn_blocking(tr_cx_rt(cx), &st->ops[st->i], job_gate,
                                   (void *)(uintptr_t)st->i, NULL) == TR_OK);
    }
    for (st->i = 0; st->i < MANY; st->i++) {
        TR_AWAIT(st, tr_blocking_join(&st->ops[st->i], cx, &st->res, &st->err));
        TU_CHECK(st->err == TR_OK);
        TU_CHECK(st->res.u64 == st->i * 3);
    }
    TR_END(st);
}

static const tr_task_spec many_spec = {
    .name = "many", .poll = many_poll, .size = sizeof(many_task)};

static void
test_blocking_many_jobs_over_cap(void **state)
{
    tr_rt *rt = rt_of(state);
    assert_int_equal(tr_blocking_set_max_threads(rt, CAP), TR_OK);
    assert_int_equal(tr_blocking_set_keepalive(rt, 60000), TR_OK);
    assert_int_equal(tr_blocking_set_max_threads(rt, 0), TR_EINVAL);
    assert_int_equal(tr_blocking_set_max_threads(rt, TR_BLOCKING_MAX_THREADS + 1), TR_EINVAL);
    gate_init(&the_gate, CAP);
    tu_run_root(rt, &many_spec, NULL);
    assert_int_equal(the_gate.peak, CAP);
    gate_destroy(&the_gate);
    tr_blocking_stats bs;
    tr_blocking_get_stats(rt, &bs);
    assert_int_equal(bs.completed, MANY);
    assert_int_equal(bs.max_threads, CAP);
    assert_int_equal(bs.threads_started, CAP);
    assert_int_equal(bs.queued, 0);
    assert_int_equal(bs.running, 0);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// FIFO with one thread, from a plain thread (no block_on at all), and
// tr_blocking_run.

#define FIFO_JOBS 50

static int fifo_order[FIFO_JOBS];
static int fifo_pos; // written by the single pool thread, one job at a time

static tr_value
job_record(void *arg)
{
    fifo_order[fifo_pos++] = (int)(uintptr_t)arg;
    return val_u64((uint64_t)(uintptr_t)arg);
}

static void
test_blocking_fifo_plain_thread(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    assert_int_equal(tr_blocking_set_max_threads(rt, 1), TR_OK);
    tr_blocking_op ops[FIFO_JOBS];
    memset(ops, 0, sizeof ops);
    fifo_pos = 0;
    for (int i = 0; i < FIFO_JOBS; i++) {
        assert_int_equal(tr_spawn_blocking(rt, &ops[i], job_record, (void *)(uintptr_t)i, NULL),
                         TR_OK);
    }
    for (int i = 0; i < FIFO_JOBS; i++) {
        tr_value v;
        assert_int_equal(tr_blocking_wait(&ops[i], &v), TR_OK);
        assert_int_equal(v.u64, i);
        assert_memory_equal(&ops[i], &(tr_blocking_op){0}, sizeof ops[i]);
    }
    assert_int_equal(fifo_pos, FIFO_JOBS);
    for (int i = 0; i < FIFO_JOBS; i++) {
        assert_int_equal(fifo_order[i], i);
    }
    tr_value v;
    assert_int_equal(tr_blocking_run(rt, job_double, (void *)(uintptr_t)21, &v), TR_OK);
    assert_int_equal(v.u64, 42);
    assert_int_equal(tr_blocking_wait(&ops[0], NULL), TR_EINVAL); // idle
    assert_int_equal(tr_blocking_run(NULL, job_double, NULL, NULL), TR_EINVAL);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// A plain thread uses the pool while the runtime runs tasks; the root task
// waits for it with an event.

typedef struct plain_ctx {
    tr_rt *rt;
    tu_event done;
    uint64_t got;
    tr_err err;
} plain_ctx;

static void *
plain_main(void *arg)
{
    plain_ctx *c = arg;
    tr_value v = val_u64(0);
    c->err = tr_blocking_run(c->rt, job_double, (void *)(uintptr_t)50, &v);
    c->got = v.u64;
    tu_event_set(&c->done);
    return NULL;
}

typedef struct plain_root {
    int tr_pc;
    plain_ctx *c;
} plain_root;

static tr_poll
plain_root_poll(void *arg, tr_cx *cx)
{
    plain_root *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tu_event_poll(&st->c->done, cx));
    TR_END(st);
}

static const tr_task_spec plain_root_spec = {
    .name = "plain_root", .poll = plain_root_poll, .size = sizeof(plain_root)};

static void
test_blocking_plain_thread_with_runtime(void **state)
{
    tr_rt *rt = rt_of(state);
    plain_ctx c = {.rt = rt};
    tu_event_init(&c.done);
    pthread_t t;
    tu_thread_start(&t, plain_main, &c);
    tu_run_root(rt, &plain_root_spec, &(plain_root){.c = &c});
    tu_thread_join(t);
    assert_int_equal(c.err, TR_OK);
    assert_int_equal(c.got, 100);
    tu_event_destroy(&c.done);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Cancellation while the job runs. The child's op lives in its own heap
// block, freed by the child's drop right after tr_blocking_abandon: if the
// job touched it later, ASan would report a use after free. The job's arg
// and result are heap memory that only the cleanup frees (LSan checks).

typedef struct cancel_ctx {
    tu_event started; // the job is running
    sem_t release;    // lets the job finish
    tu_event cleaned; // the cleanup ran
    atomic_int cleanups;
    atomic_int cleanup_ran; // cleanups that said ran == true
    atomic_int fn_runs;
} cancel_ctx;

static cancel_ctx cctx;

static void
cancel_ctx_init(void)
{
    tu_event_init(&cctx.started);
    tu_event_init(&cctx.cleaned);
    sem_init(&cctx.release, 0, 0);
    atomic_store(&cctx.cleanups, 0);
    atomic_store(&cctx.cleanup_ran, 0);
    atomic_store(&cctx.fn_runs, 0);
}

static void
cancel_ctx_destroy(void)
{
    tu_event_destroy(&cctx.started);
    tu_event_destroy(&cctx.cleaned);
    sem_destroy(&cctx.release);
}

// job_hold: signals that it runs, waits for release, returns heap memory.
static tr_value
job_hold(void *arg)
{
    TU_CHECK(*(int *)arg == 1234);
    atomic_fetch_add(&cctx.fn_runs, 1);
    tu_event_set(&cctx.started);
    TU_CHECK(tu_sem_wait_ms(&cctx.release, TU_WAIT_MS));
    tr_value v = val_u64(0);
    v.ptr = malloc(64);
    memset(v.ptr, 0x5a, 64);
    return v;
}

static void
cleanup_free(void *arg, tr_value result, bool ran)
{
    atomic_fetch_add(&cctx.cleanups, 1);
    if (ran) {
        atomic_fetch_add(&cctx.cleanup_ran, 1);
        free(result.ptr);
    }
    free(arg);
    tu_event_set(&cctx.cleaned);
}

static tr_value
job_flag(void *arg)
{
    (void)arg;
    atomic_fetch_add(&cctx.fn_runs, 1);
    return val_u64(0);
}

typedef struct holder_task {
    int tr_pc;
    tr_blocking_op *op; // heap: freed by drop
    tr_blocking_fn fn;
    tu_event *spawned; // may be NULL
    tr_value res;
    tr_err err;
} holder_task;

static tr_poll
holder_poll(void *arg, tr_cx *cx)
{
    holder_task *st = arg;
    TR_BEGIN(st);
    {
        int *token = malloc(sizeof *token);
        *token = 1234;
        st->op = calloc(1, sizeof *st->op);
        TU_CHECK(tr_spawn_blocking(tr_cx_rt(cx), st->op, st->fn, token, cleanup_free) == TR_OK);
    }
    if (st->spawned != NULL) {
        tu_event_set(st->spawned);
    }
    TR_AWAIT(st, tr_blocking_join(st->op, cx, &st->res, &st->err));
    TU_CHECK(!"the holder's join should never complete");
    TR_END(st);
}

static void
holder_drop(void *arg)
{
    holder_task *st = arg;
    if (st->op != NULL) {
        tr_blocking_abandon(st->op);
        TU_CHECK(memcmp(st->op, &(tr_blocking_op){0}, sizeof *st->op) == 0);
        // Poison, then free: the job must never come back to it.
        memset(st->op, 0xa5, sizeof *st->op);
        free(st->op);
        st->op = NULL;
    }
}

static const tr_task_spec holder_spec = {
    .name = "holder", .poll = holder_poll, .drop = holder_drop, .size = sizeof(holder_task)};

typedef struct cancel_root {
    int tr_pc;
    tr_join child;
    tr_outcome out;
} cancel_root;

static tr_poll
cancel_running_poll(void *arg, tr_cx *cx)
{
    cancel_root *st = arg;
    TR_BEGIN(st);
    st->child = tu_spawn(cx, &holder_spec, &(holder_task){.fn = job_hold});
    TR_AWAIT(st, tu_event_poll(&cctx.started, cx));
    TU_CHECK(tr_task_abort(&st->child) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->child, cx, &st->out));
    TU_CHECK(st->out.err == TR_ECANCELED);
    // The child and its op are gone; the job is still running.
    TU_CHECK(atomic_load(&cctx.cleanups) == 0);
    sem_post(&cctx.release);
    TR_AWAIT(st, tu_event_poll(&cctx.cleaned, cx));
    TU_CHECK(atomic_load(&cctx.cleanups) == 1);
    TU_CHECK(atomic_load(&cctx.cleanup_ran) == 1);
    TR_END(st);
}

static const tr_task_spec cancel_running_spec = {
    .name = "cancel_running", .poll = cancel_running_poll, .size = sizeof(cancel_root)};

static void
test_blocking_cancel_while_running(void **state)
{
    cancel_ctx_init();
    tr_rt *rt = rt_of(state);
    tu_run_root(rt, &cancel_running_spec, NULL);
    tu_rt_free_clean(rt);
    assert_int_equal(atomic_load(&cctx.fn_runs), 1);
    assert_int_equal(atomic_load(&cctx.cleanups), 1);
    cancel_ctx_destroy();
}

// Cancellation while the job is still queued (one thread, held by a blocker
// job): the job is skipped, its cleanup says it never ran.

typedef struct queued_root {
    int tr_pc;
    tr_blocking_op blocker;
    tu_event spawned;
    tr_join child;
    tr_outcome out;
    tr_value res;
    tr_err err;
} queued_root;

static tr_value
job_blocker(void *arg)
{
    (void)arg;
    tu_event_set(&cctx.started);
    TU_CHECK(tu_sem_wait_ms(&cctx.release, TU_WAIT_MS));
    return val_u64(77);
}

static tr_poll
cancel_queued_poll(void *arg, tr_cx *cx)
{
    queued_root *st = arg;
    TR_BEGIN(st);
    TU_CHECK(tr_spawn_blocking(tr_cx_rt(cx), &st->blocker, job_blocker, NULL, NULL) == TR_OK);
    TR_AWAIT(st, tu_event_poll(&cctx.started, cx));
    tu_event_init(&st->spawned);
    st->child = tu_spawn(cx, &holder_spec, &(holder_task){.fn = job_flag, .spawned = &st->spawned});
    TR_AWAIT(st, tu_event_poll(&st->spawned, cx));
    TU_CHECK(tr_task_abort(&st->child) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->child, cx, &st->out));
    TU_CHECK(st->out.err == TR_ECANCELED);
    sem_post(&cctx.release);
    TR_AWAIT(st, tr_blocking_join(&st->blocker, cx, &st->res, &st->err));
    TU_CHECK(st->err == TR_OK && st->res.u64 == 77);
    TR_AWAIT(st, tu_event_poll(&cctx.cleaned, cx));
    tu_event_destroy(&st->spawned);
    TR_END(st);
}

static const tr_task_spec cancel_queued_spec = {
    .name = "cancel_queued", .poll = cancel_queued_poll, .size = sizeof(queued_root)};

static void
test_blocking_cancel_while_queued(void **state)
{
    cancel_ctx_init();
    tr_rt *rt = rt_of(state);
    assert_int_equal(tr_blocking_set_max_threads(rt, 1), TR_OK);
    tu_run_root(rt, &cancel_queued_spec, NULL);
    assert_int_equal(atomic_load(&cctx.fn_runs), 0); // job_flag never ran
    assert_int_equal(atomic_load(&cctx.cleanups), 1);
    assert_int_equal(atomic_load(&cctx.cleanup_ran), 0);
    tr_blocking_stats bs;
    tr_blocking_get_stats(rt, &bs);
    assert_int_equal(bs.completed, 1);
    assert_int_equal(bs.discarded, 1);
    tu_rt_free_clean(rt);
    cancel_ctx_destroy();
}

// Abandon after the job finished: the cleanup runs in the abandoning thread.
// With one pool thread, a job run after A proves that A has completed.

static tr_value
job_alloc(void *arg)
{
    (void)arg;
    tr_value v = val_u64(0);
    v.ptr = malloc(16);
    return v;
}

static void
test_blocking_abandon_after_done(void **state)
{
    (void)state;
    cancel_ctx_init();
    tr_rt *rt = tu_rt_new();
    assert_int_equal(tr_blocking_set_max_threads(rt, 1), TR_OK);
    tr_blocking_op op = TR_BLOCKING_OP_INIT;
    int *token = malloc(sizeof *token);
    *token = 1;
    assert_int_equal(tr_spawn_blocking(rt, &op, job_alloc, token, cleanup_free), TR_OK);
    assert_int_equal(tr_blocking_run(rt, job_double, NULL, NULL), TR_OK);
    assert_true(tr_blocking_is_done(&op));
    assert_int_equal(atomic_load(&cctx.cleanups), 0);
    tr_blocking_abandon(&op);
    assert_int_equal(atomic_load(&cctx.cleanups), 1); // here, at once
    assert_int_equal(atomic_load(&cctx.cleanup_ran), 1);
    assert_memory_equal(&op, &(tr_blocking_op){0}, sizeof op);
    tr_blocking_abandon(&op); // idle: a no-op
    tr_blocking_abandon(NULL);
    assert_int_equal(atomic_load(&cctx.cleanups), 1);
    tu_rt_free_clean(rt);
    cancel_ctx_destroy();
}

// ---------------------------------------------------------------------------
// Freeing the runtime with a job running and jobs queued. One pool thread
// runs P, which waits for `release`; K tasks each wait for a job queued
// behind it, and the main thread queued Q too. tr_rt_free cancels the
// tasks (their drops abandon their jobs) and then the pool's fini discards
// the queue: the first discarded job's cleanup posts `release`, so P is
// certainly still running when the fini starts. After tr_rt_free, the main
// thread's ops still work: P delivers its result, Q reports TR_ESHUTDOWN.

#define FREE_TASKS 5

static atomic_int free_spawned;

typedef struct waiter_task {
    int tr_pc;
    tr_blocking_op op;
    tr_value res;
    tr_err err;
} waiter_task;

static void
cleanup_release(void *arg, tr_value result, bool ran)
{
    (void)result;
    atomic_fetch_add(&cctx.cleanups, 1);
    if (ran) {
        atomic_fetch_add(&cctx.cleanup_ran, 1);
    }
    free(arg);
    sem_post(&cctx.release);
}

static tr_poll
waiter_poll(void *arg, tr_cx *cx)
{
    waiter_task *st = arg;
    TR_BEGIN(st);
    TU_CHECK(tr_spawn_blocking(tr_cx_rt(cx), &st->op, job_flag, malloc(8), cleanup_release) ==
             TR_OK);
    atomic_fetch_add(&free_spawned, 1);
    TR_AWAIT(st, tr_blocking_join(&st->op, cx, &st->res, &st->err));
    TU_CHECK(!"the waiter's join should never complete");
    TR_END(st);
}

static void
waiter_drop(void *arg)
{
    waiter_task *st = arg;
    tr_blocking_abandon(&st->op);
}

static const tr_task_spec waiter_spec = {
    .name = "waiter", .poll = waiter_poll, .drop = waiter_drop, .size = sizeof(waiter_task)};

static void
test_blocking_rt_free_with_jobs(void **state)
{
    cancel_ctx_init();
    atomic_store(&free_spawned, 0);
    tr_rt *rt = rt_of(state);
    assert_int_equal(tr_blocking_set_max_threads(rt, 1), TR_OK);
    tr_blocking_op p = TR_BLOCKING_OP_INIT, q = TR_BLOCKING_OP_INIT;
    assert_int_equal(tr_spawn_blocking(rt, &p, job_blocker, NULL, NULL), TR_OK);
    assert_true(tu_event_wait(&cctx.started, TU_WAIT_MS));
    assert_int_equal(tr_spawn_blocking(rt, &q, job_flag, malloc(8), cleanup_release), TR_OK);
    for (int i = 0; i < FREE_TASKS; i++) {
        tu_start(rt, &waiter_spec, NULL, NULL);
    }
    tu_atleast want = {&free_spawned, FREE_TASKS};
    tu_block_until(rt, tu_pred_atleast, &want);
    tr_blocking_stats bs;
    tr_blocking_get_stats(rt, &bs);
    assert_int_equal(bs.queued, FREE_TASKS + 1);
    assert_int_equal(bs.running, 1);

    tr_rt_free(rt);
    tu_checks_pass();

    // Every queued job was discarded unrun; the abandoned ones' cleanups
    // ran then, q's runs when its owner collects it.
    assert_int_equal(atomic_load(&cctx.fn_runs), 0);
    assert_int_equal(atomic_load(&cctx.cleanups), FREE_TASKS);
    assert_int_equal(atomic_load(&cctx.cleanup_ran), 0);
    // The main thread's ops outlive the runtime.
    assert_true(tr_blocking_is_done(&p));
    tr_value v = val_u64(0);
    assert_int_equal(tr_blocking_wait(&p, &v), TR_OK);
    assert_int_equal(v.u64, 77);
    assert_int_equal(tr_blocking_wait(&q, &v), TR_ESHUTDOWN);
    assert_int_equal(atomic_load(&cctx.cleanups), FREE_TASKS + 1);
    assert_int_equal(atomic_load(&cctx.cleanup_ran), 0);
    cancel_ctx_destroy();
}

// ---------------------------------------------------------------------------
// Idle threads exit after the keep-alive; a later job starts a new one.

static void
test_blocking_idle_threads_exit(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    assert_int_equal(tr_blocking_set_keepalive(rt, 10), TR_OK);
    tr_value v;
    assert_int_equal(tr_blocking_run(rt, job_double, (void *)(uintptr_t)1, &v), TR_OK);
    assert_true(tr__blocking_wait_threads(rt, 0, TU_WAIT_MS));
    tr_blocking_stats bs;
    tr_blocking_get_stats(rt, &bs);
    assert_int_equal(bs.threads, 0);
    assert_int_equal(bs.threads_started, 1);
    assert_int_equal(tr_blocking_run(rt, job_double, (void *)(uintptr_t)2, &v), TR_OK);
    assert_int_equal(v.u64, 4);
    tr_blocking_get_stats(rt, &bs);
    assert_int_equal(bs.threads_started, 2);
    // A keep-alive of 0: the thread leaves as soon as the queue is empty.
    assert_int_equal(tr_blocking_set_keepalive(rt, 0), TR_OK);
    assert_true(tr__blocking_wait_threads(rt, 0, TU_WAIT_MS));
    tu_rt_free_clean(rt);
}

// Raising the cap starts threads for the jobs that wait: with one thread
// held by a blocker, three queued gate jobs can only meet once the cap is
// raised to four.

static void
test_blocking_raise_cap(void **state)
{
    (void)state;
    cancel_ctx_init();
    tr_rt *rt = tu_rt_new();
    assert_int_equal(tr_blocking_set_max_threads(rt, 1), TR_OK);
    tr_blocking_op blocker = TR_BLOCKING_OP_INIT;
    tr_blocking_op ops[3];
    memset(ops, 0, sizeof ops);
    assert_int_equal(tr_spawn_blocking(rt, &blocker, job_blocker, NULL, NULL), TR_OK);
    assert_true(tu_event_wait(&cctx.started, TU_WAIT_MS));
    gate_init(&the_gate, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tr_spawn_blocking(rt, &ops[i], job_gate, (void *)(uintptr_t)i, NULL),
                         TR_OK);
    }
    assert_int_equal(tr_blocking_set_max_threads(rt, 4), TR_OK);
    for (int i = 0; i < 3; i++) {
        tr_value v;
        assert_int_equal(tr_blocking_wait(&ops[i], &v), TR_OK);
        assert_int_equal(v.u64, (uint64_t)i * 3);
    }
    sem_post(&cctx.release);
    assert_int_equal(tr_blocking_wait(&blocker, NULL), TR_OK);
    tu_checks_pass();
    assert_int_equal(the_gate.peak, 3);
    gate_destroy(&the_gate);
    // Lowered again: the extra threads exit once idle.
    assert_int_equal(tr_blocking_set_max_threads(rt, 1), TR_OK);
    assert_int_equal(tr_blocking_run(rt, job_double, NULL, NULL), TR_OK);
    tu_rt_free_clean(rt);
    cancel_ctx_destroy();
}

// ---------------------------------------------------------------------------
// Name resolution (loopback only: nothing here may reach a name server).

typedef struct resolve_task {
    int tr_pc;
    tr_blocking_op op;
    struct addrinfo hints;
    struct addrinfo *res;
    tr_err err;
} resolve_task;

// has_v4 reports whether list holds 127.0.0.1:port.
static bool
has_v4(const struct addrinfo *list, uint16_t port)
{
    for (const struct addrinfo *a = list; a != NULL; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)a->ai_addr;
            if (sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK) && ntohs(sin->sin_port) == port) {
                return true;
            }
        }
    }
    return false;
}

static tr_poll
resolve_poll(void *arg, tr_cx *cx)
{
    resolve_task *st = arg;
    TR_BEGIN(st);
    // Every lookup below reuses the one op (op reuse).
    // "localhost" comes from /etc/hosts.
    memset(&st->hints, 0, sizeof st->hints);
    st->hints.ai_family = AF_INET;
    st->hints.ai_socktype = SOCK_STREAM;
    TR_AWAIT(st, tr_resolve(&st->op, cx, "localhost", "80", &st->hints, &st->res, &st->err));
    TU_CHECK(st->err == TR_OK);
    TU_CHECK(has_v4(st->res, 80));
    tr_resolve_free(st->res);
    // A numeric address, numerically.
    st->hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    TR_AWAIT(st, tr_resolve(&st->op, cx, "127.0.0.1", "8080", &st->hints, &st->res, &st->err));
    TU_CHECK(st->err == TR_OK);
    TU_CHECK(has_v4(st->res, 8080));
    TU_CHECK(st->res != NULL && st->res->ai_socktype == SOCK_STREAM);
    tr_resolve_free(st->res);
    // Bad names, found out locally: not an address under AI_NUMERICHOST,
    // an unknown service name, neither host nor service.
    TR_AWAIT(st, tr_resolve(&st->op, cx, "not an address", "80", &st->hints, &st->res, &st->err));
    TU_CHECK(st->err == TR_ENAME);
    TU_CHECK(st->res == NULL);
    st->hints.ai_flags = AI_NUMERICHOST;
    TR_AWAIT(st, tr_resolve(&st->op, cx, "127.0.0.1", "no-such-service-troupe", &st->hints,
                            &st->res, &st->err));
    TU_CHECK(st->err == TR_ENAME);
    TR_AWAIT(st, tr_resolve(&st->op, cx, NULL, NULL, NULL, &st->res, &st->err));
    TU_CHECK(st->err == TR_ENAME);
    // Bad hints.
    st->hints.ai_family = 12345;
    TR_AWAIT(st, tr_resolve(&st->op, cx, "127.0.0.1", "80", &st->hints, &st->res, &st->err));
    TU_CHECK(st->err == TR_EINVAL);
    tr_resolve_free(NULL);
    TR_END(st);
}

static void
resolve_drop(void *arg)
{
    resolve_task *st = arg;
    tr_blocking_abandon(&st->op);
}

static const tr_task_spec resolve_spec = {
    .name = "resolve", .poll = resolve_poll, .drop = resolve_drop, .size = sizeof(resolve_task)};

static void
test_blocking_resolve_loopback(void **state)
{
    tr_rt *rt = rt_of(state);
    tu_run_root(rt, &resolve_spec, NULL);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Files.

static char tmp_dir[64];

static void
tmp_path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmp_dir, name);
}

#define BIG_LEN ((size_t)3 << 20) // more than TR_FILE_MAX_CHUNK

typedef struct file_task {
    int tr_pc;
    tr_blocking_op op;
    char path[128];
    char path2[128];
    int fd;
    size_t n;
    tr_err err;
    char buf[64];
    void *data;
    size_t len;
    unsigned char *big; // BIG_LEN bytes, a pattern
    unsigned char *big_in;
} file_task;

static tr_poll
file_poll(void *arg, tr_cx *cx)
{
    file_task *st = arg;
    TR_BEGIN(st);
    tmp_path(st->path, sizeof st->path, "a.txt");
    tmp_path(st->path2, sizeof st->path2, "big.bin");

    // Every call below reuses the one op (op reuse: each is back to its
    // zeroed state at TR_READY) and is checked for its whole work.
    // Write, overwrite in place, sync, read back.
    TR_AWAIT(st, tr_file_open(&st->op, cx, st->path, O_RDWR | O_CREAT | O_TRUNC, 0600, &st->fd,
                              &st->err));
    TU_CHECK(st->err == TR_OK && st->fd >= 0);
    TU_CHECK((fcntl(st->fd, F_GETFD) & FD_CLOEXEC) != 0);
    TR_AWAIT(st, tr_file_write(&st->op, cx, st->fd, "hello world", 11, &st->n, &st->err));
    TU_CHECK(st->err == TR_OK && st->n == 11);
    TR_AWAIT(st, tr_file_pwrite(&st->op, cx, st->fd, "WORLD", 5, 6, &st->n, &st->err));
    TU_CHECK(st->err == TR_OK && st->n == 5);
    TR_AWAIT(st, tr_file_fsync(&st->op, cx, st->fd, &st->err));
    TU_CHECK(st->err == TR_OK);
    TR_AWAIT(st, tr_file_fdatasync(&st->op, cx, st->fd, &st->err));
    TU_CHECK(st->err == TR_OK);
    memset(st->buf, 0, sizeof st->buf);
    TR_AWAIT(st, tr_file_pread(&st->op, cx, st->fd, st->buf, sizeof st->buf, 0, &st->n, &st->err));
    TU_CHECK(st->err == TR_OK && st->n == 11);
    TU_CHECK(memcmp(st->buf, "hello WORLD", 11) == 0);
    // The file position is at the end (the pwrite and pread left it).
    TR_AWAIT(st, tr_file_read(&st->op, cx, st->fd, st->buf, sizeof st->buf, &st->n, &st->err));
    TU_CHECK(st->err == TR_OK && st->n == 0);
    TU_CHECK(lseek(st->fd, 0, SEEK_SET) == 0);
    TR_AWAIT(st, tr_file_read(&st->op, cx, st->fd, st->buf, 5, &st->n, &st->err));
    TU_CHECK(st->err == TR_OK && st->n == 5 && memcmp(st->buf, "hello", 5) == 0);
    TR_AWAIT(st, tr_file_read(&st->op, cx, st->fd, st->buf, 0, &st->n, &st->err));
    TU_CHECK(st->err == TR_OK && st->n == 0);
    TR_AWAIT(st, tr_file_close(&st->op, cx, st->fd, &st->err));
    TU_CHECK(st->err == TR_OK);
    TU_CHECK(fcntl(st->fd, F_GETFD) < 0); // closed

    // Whole files.
    TR_AWAIT(st, tr_file_read_all(&st->op, cx, st->path, 0, &st->data, &st->len, &st->err));
    TU_CHECK(st->err == TR_OK && st->len == 11);
    TU_CHECK(st->data != NULL && strcmp(st->data, "hello WORLD") == 0);
    free(st->data);
    TR_AWAIT(st, tr_file_read_all(&st->op, cx, st->path, 5, &st->data, &st->len, &st->err));
    TU_CHECK(st->err == TR_ETOOBIG && st->data == NULL && st->len == 0);
    TR_AWAIT(st, tr_file_write_all(&st->op, cx, st->path, "!!", 2, 0600, TR_FILE_APPEND, &st->err));
    TU_CHECK(st->err == TR_OK);
    TR_AWAIT(st, tr_file_write_all(&st->op, cx, st->path, "x", 1, 0600, TR_FILE_EXCL, &st->err));
    TU_CHECK(st->err == TR_EEXIST);
    TR_AWAIT(st, tr_file_read_all(&st->op, cx, st->path, 0, &st->data, &st->len, &st->err));
    TU_CHECK(st->err == TR_OK && st->len == 13 && strcmp(st->data, "hello WORLD!!") == 0);
    free(st->data);
    TR_AWAIT(st,
             tr_file_read_all(&st->op, cx, "/proc/self/status", 0, &st->data, &st->len, &st->err));
    TU_CHECK(st->err == TR_OK && st->len > 0 && strstr(st->data, "Name:") != NULL);
    free(st->data);

    // A big file: written whole, read back in chunks of at most the cap.
    TR_AWAIT(st, tr_file_write_all(&st->op, cx, st->path2, st->big, BIG_LEN, 0600, TR_FILE_SYNC,
                                   &st->err));
    TU_CHECK(st->err == TR_OK);
    TR_AWAIT(st, tr_file_open(&st->op, cx, st->path2, O_RDONLY, 0, &st->fd, &st->err));
    TU_CHECK(st->err == TR_OK);
    for (st->len = 0;;) {
        TR_AWAIT(st, tr_file_read(&st->op, cx, st->fd, st->big_in + st->len, BIG_LEN - st->len,
                                  &st->n, &st->err));
        TU_CHECK(st->err == TR_OK && st->n <= TR_FILE_MAX_CHUNK);
        if (st->err != TR_OK || st->n == 0) {
            break;
        }
        st->len += st->n;
    }
    TU_CHECK(st->len == BIG_LEN && memcmp(st->big, st->big_in, BIG_LEN) == 0);
    TR_AWAIT(st, tr_file_close(&st->op, cx, st->fd, &st->err));
    TU_CHECK(st->err == TR_OK);
    TR_AWAIT(st, tr_file_read_all(&st->op, cx, st->path2, 0, &st->data, &st->len, &st->err));
    TU_CHECK(st->err == TR_OK && st->len == BIG_LEN);
    TU_CHECK(st->data != NULL && memcmp(st->data, st->big, BIG_LEN) == 0);
    free(st->data);

    // Errors: no such file, a bad descriptor, a full disk.
    tmp_path(st->path, sizeof st->path, "missing/nope");
    TR_AWAIT(st, tr_file_open(&st->op, cx, st->path, O_RDONLY, 0, &st->fd, &st->err));
    TU_CHECK(st->err == TR_ENOENT && st->fd == -1);
    TR_AWAIT(st, tr_file_read_all(&st->op, cx, st->path, 0, &st->data, &st->len, &st->err));
    TU_CHECK(st->err == TR_ENOENT && st->data == NULL);
    TR_AWAIT(st, tr_file_write_all(&st->op, cx, st->path, "x", 1, 0600, 0, &st->err));
    TU_CHECK(st->err == TR_ENOENT);
    TR_AWAIT(st, tr_file_read(&st->op, cx, -1, st->buf, 4, &st->n, &st->err));
    TU_CHECK(st->err == TR_EBADF && st->n == 0);
    TR_AWAIT(st, tr_file_fsync(&st->op, cx, -1, &st->err));
    TU_CHECK(st->err == TR_EBADF);
    TR_AWAIT(st, tr_file_close(&st->op, cx, -1, &st->err));
    TU_CHECK(st->err == TR_EBADF);
    TR_AWAIT(st, tr_file_pread(&st->op, cx, 0, st->buf, 4, -1, &st->n, &st->err));
    TU_CHECK(st->err == TR_EINVAL);
    if (access("/dev/full", W_OK) == 0) {
        TR_AWAIT(st, tr_file_open(&st->op, cx, "/dev/full", O_WRONLY, 0, &st->fd, &st->err));
        TU_CHECK(st->err == TR_OK);
        TR_AWAIT(st, tr_file_write(&st->op, cx, st->fd, "data", 4, &st->n, &st->err));
        TU_CHECK(st->err == TR_ENOSPC && st->n == 0);
        TR_AWAIT(st, tr_file_close(&st->op, cx, st->fd, &st->err));
        TU_CHECK(st->err == TR_OK);
        TR_AWAIT(st, tr_file_write_all(&st->op, cx, "/dev/full", "data", 4, 0600, 0, &st->err));
        TU_CHECK(st->err == TR_ENOSPC);
    }
    TR_END(st);
}

static void
file_drop(void *arg)
{
    file_task *st = arg;
    tr_blocking_abandon(&st->op);
}

static const tr_task_spec file_spec = {
    .name = "file", .poll = file_poll, .drop = file_drop, .size = sizeof(file_task)};

static void
tmp_dir_make(void)
{
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/troupe-blk-XXXXXX");
    assert_non_null(mkdtemp(tmp_dir));
}

static void
tmp_dir_remove(const char **names)
{
    char p[128];
    for (; *names != NULL; names++) {
        tmp_path(p, sizeof p, *names);
        (void)unlink(p);
    }
    assert_int_equal(rmdir(tmp_dir), 0);
}

static void
test_blocking_file_io(void **state)
{
    tmp_dir_make();
    int fds = tu_count_fds();
    tr_rt *rt = rt_of(state);
    file_task init = {.big = malloc(BIG_LEN), .big_in = malloc(BIG_LEN)};
    for (size_t i = 0; i < BIG_LEN; i++) {
        init.big[i] = (unsigned char)(i * 31 + (i >> 12));
    }
    unsigned char *big = init.big, *big_in = init.big_in;
    tu_run_root(rt, &file_spec, &init);
    free(big);
    free(big_in);
    tu_rt_free_clean(rt);
    assert_int_equal(tu_count_fds(), fds);
    const char *names[] = {"a.txt", "big.bin", NULL};
    tmp_dir_remove(names);
}

// A task cancelled while its open runs: a FIFO's read end blocks in open(2)
// until a writer comes, so the job is certainly running when the task is
// cancelled. A helper thread then opens the write end, the open completes,
// and the descriptor (delivered to nobody) must be closed by the pool.

typedef struct fifo_ctx {
    char path[128];
    sem_t go;
    tu_event done;
    bool ok;
} fifo_ctx;

static fifo_ctx fctx;

static void *
fifo_writer(void *arg)
{
    (void)arg;
    if (!tu_sem_wait_ms(&fctx.go, TU_WAIT_MS)) {
        tu_event_set(&fctx.done);
        return NULL;
    }
    int fd = open(fctx.path, O_WRONLY | O_CLOEXEC); // meets the pool's open
    fctx.ok = fd >= 0;
    if (fd >= 0) {
        close(fd);
    }
    tu_event_set(&fctx.done);
    return NULL;
}

typedef struct opener_task {
    int tr_pc;
    tr_blocking_op op;
    int fd;
    tr_err err;
} opener_task;

static tr_poll
opener_poll(void *arg, tr_cx *cx)
{
    opener_task *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_file_open(&st->op, cx, fctx.path, O_RDONLY, 0, &st->fd, &st->err));
    TU_CHECK(!"the opener should have been cancelled");
    TR_END(st);
}

static void
opener_drop(void *arg)
{
    opener_task *st = arg;
    tr_blocking_abandon(&st->op);
}

static const tr_task_spec opener_spec = {
    .name = "opener", .poll = opener_poll, .drop = opener_drop, .size = sizeof(opener_task)};

typedef struct fifo_root {
    int tr_pc;
    tr_join child;
    tr_outcome out;
    uint64_t until_ns;
    int rfd;
} fifo_root;

static bool
pool_running(tr_rt *rt)
{
    tr_blocking_stats bs;
    tr_blocking_get_stats(rt, &bs);
    return bs.running == 1;
}

static tr_poll
fifo_root_poll(void *arg, tr_cx *cx)
{
    fifo_root *st = arg;
    TR_BEGIN(st);
    st->rfd = -1;
    st->child = tu_spawn(cx, &opener_spec, NULL);
    // Yield until the pool has committed to the open: "running" counts a
    // job only once it can no longer be skipped. Bounded by time, not by
    // turns: a new pool thread may take a while to be scheduled on a
    // loaded machine.
    for (st->until_ns = tu_now_ns() + (uint64_t)TU_WAIT_MS * 1000000u;
         !pool_running(tr_cx_rt(cx)) && tu_now_ns() < st->until_ns;) {
        TR_YIELD(st, cx);
    }
    TU_CHECK(pool_running(tr_cx_rt(cx)));
    TU_CHECK(tr_task_abort(&st->child) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->child, cx, &st->out));
    TU_CHECK(st->out.err == TR_ECANCELED);
    if (!pool_running(tr_cx_rt(cx))) {
        // Failed above (the open may have been skipped): give the writer a
        // reader so that it cannot hang.
        st->rfd = open(fctx.path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    }
    sem_post(&fctx.go);
    TR_AWAIT(st, tu_event_poll(&fctx.done, cx));
    TU_CHECK(fctx.ok);
    if (st->rfd >= 0) {
        close(st->rfd);
    }
    TR_END(st);
}

static const tr_task_spec fifo_root_spec = {
    .name = "fifo_root", .poll = fifo_root_poll, .size = sizeof(fifo_root)};

static void
test_blocking_file_cancel_open(void **state)
{
    tmp_dir_make();
    tmp_path(fctx.path, sizeof fctx.path, "fifo");
    assert_int_equal(mkfifo(fctx.path, 0600), 0);
    sem_init(&fctx.go, 0, 0);
    tu_event_init(&fctx.done);
    fctx.ok = false;
    int fds = tu_count_fds();
    tr_rt *rt = rt_of(state);
    pthread_t t;
    tu_thread_start(&t, fifo_writer, NULL);
    tu_run_root(rt, &fifo_root_spec, NULL);
    tu_thread_join(t);
    // tr_rt_free waits for the open job; the descriptor it got is closed.
    tu_rt_free_clean(rt);
    assert_int_equal(tu_count_fds(), fds);
    sem_destroy(&fctx.go);
    tu_event_destroy(&fctx.done);
    const char *names[] = {"fifo", NULL};
    tmp_dir_remove(names);
}

// ---------------------------------------------------------------------------

#define BOTH(f) \
    cmocka_unit_test_prestate(f, &one_worker), cmocka_unit_test_prestate(f, &two_workers)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_blocking_spawn_join),
        BOTH(test_blocking_many_jobs_over_cap),
        cmocka_unit_test(test_blocking_fifo_plain_thread),
        BOTH(test_blocking_plain_thread_with_runtime),
        BOTH(test_blocking_cancel_while_running),
        BOTH(test_blocking_cancel_while_queued),
        cmocka_unit_test(test_blocking_abandon_after_done),
        BOTH(test_blocking_rt_free_with_jobs),
        cmocka_unit_test(test_blocking_idle_threads_exit),
        cmocka_unit_test(test_blocking_raise_cap),
        BOTH(test_blocking_resolve_loopback),
        BOTH(test_blocking_file_io),
        BOTH(test_blocking_file_cancel_open),
    };
    return tu_run(tests);
}
