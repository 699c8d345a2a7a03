// Tests for the executor (runtime/exec/): block_on and its misuse,
// spawns from plain threads (Spawn messages), graceful and immediate
// shutdown from a task or another thread, freeing a runtime with live
// tasks, a million spawns, the dump, and parking when idle.
//
// One worker, FIFO run queue: tasks started from outside the runtime reach
// the queue when the worker drains its inbox (queue empty, or every 32
// polls). Nothing sleeps to wait: threads wait on events with timeouts.
#include "../test_util.h"

#include <sched.h>

#include "exec/exec.h"

// ---------------------------------------------------------------------------
// Helpers.

// A root whose poll is the test body; it counts its drops.
typedef struct root {
    int tr_pc;
    void *arg;
    atomic_int *drops;
    unsigned k;
    size_t i;
    tr_join j;
    tr_outcome out;
    tr_err rv;
    pthread_t thr;
    uint64_t mark;
} root;

static void
root_drop(void *arg)
{
    root *st = arg;
    if (st->drops != NULL) {
        atomic_fetch_add(st->drops, 1);
    }
}

#define ROOT_SPEC(fn)                                                    \
    {                                                                    \
        .name = #fn, .poll = fn, .drop = root_drop, .size = sizeof(root) \
    }

// ROOT(arg, drops) is a root's state, for tr_rt_run to copy.
#define ROOT(a, d) (&(root){.arg = (a), .drops = (d)})

// spawn starts a task inside a poll, its state a copy of *init (NULL:
// zeroed); a failure is recorded and gives false.
static bool
spawn(tr_cx *cx, const tr_task_spec *spec, const void *init, tr_join *j)
{
    tr_err e = tr_spawn(tr_cx_rt(cx), spec, NULL, (void *)init, j);
    TU_CHECK(e == TR_OK);
    return e == TR_OK;
}

// spawn_new prepares a task inside a poll (tr_task_new), for the cases
// that test tr_task_start or a prepared task themselves.
static void *
spawn_new(tr_cx *cx, const tr_task_spec *spec)
{
    void *p = NULL;
    tr_err e = tr_task_new(tr_cx_rt(cx), spec, &p);
    TU_CHECK(e == TR_OK);
    return e == TR_OK ? p : NULL;
}

// A never-set event: awaiting it keeps a task pending until it is cancelled.
static tu_event never;

static int
group_setup(void **state)
{
    (void)state;
    tu_event_init(&never);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    tu_event_destroy(&never);
    return 0;
}

// ---------------------------------------------------------------------------
// Creating runtimes.

static void
test_exec_new_validates_config(void **state)
{
    (void)state;
    tr_rt_config cfg;
    tr_rt *rt = NULL;
    tr_rt_config_init(&cfg);
    assert_int_equal(cfg.workers, 0); // one per core
    assert_int_equal(cfg.sched, TR_SCHED_WS);
    assert_int_equal(cfg.budget, 128);
    assert_int_equal(cfg.max_tasks, (uint64_t)1 << 24);
    assert_int_equal(tr_rt_new(&cfg, NULL), TR_EINVAL);
    cfg.ignore_env = true;
    cfg.workers = 256; // the task word records workers in 8 bits
    assert_int_equal(tr_rt_new(&cfg, &rt), TR_EINVAL);
    // Each error names the field, its value and what is allowed.
    assert_non_null(strstr(tr_error_detail(), "tr_rt_config.workers=256: at most 255"));
    tr_rt_config_init(&cfg);
    cfg.sched = (tr_sched_kind)7;
    assert_int_equal(tr_rt_new(&cfg, &rt), TR_EINVAL);
    assert_non_null(strstr(tr_error_detail(), "tr_rt_config.sched=7: not a scheduler"));
    tr_rt_config_init(&cfg);
    cfg.budget = 0;
    assert_int_equal(tr_rt_new(&cfg, &rt), TR_EINVAL);
    assert_non_null(strstr(tr_error_detail(), "tr_rt_config.budget=0"));
    tr_rt_config_init(&cfg);
    cfg.max_tasks = 0;
    assert_int_equal(tr_rt_new(&cfg, &rt), TR_EINVAL);
    assert_non_null(strstr(tr_error_detail(), "tr_rt_config.max_tasks=0"));
    assert_null(rt);
    rt = tu_rt_new();
    // A task state that is too large, or a spec without a poll function
    // (tests tr_task_new itself).
    static const tr_task_spec big = {
        .name = "big", .poll = tu_value_poll, .size = TR_TASK_MAX_STATE + 1};
    static const tr_task_spec nopoll = {.name = "nopoll", .size = 8};
    void *p = NULL;
    assert_int_equal(tr_task_new(rt, &big, &p), TR_EINVAL);
    assert_non_null(strstr(tr_error_detail(), "task \"big\": tr_task_spec.size=65473: a state "
                                              "holds at most 65472 bytes"));
    assert_int_equal(tr_task_new(rt, &nopoll, &p), TR_EINVAL);
    assert_non_null(strstr(tr_error_detail(), "task \"nopoll\": tr_task_spec.poll is NULL"));
    assert_null(p);
    tr_rt_stats st = tu_stats(rt);
    assert_int_equal(st.workers, 1);
    assert_int_equal(st.live_tasks, 0);
    assert_int_equal(st.spawned, 0);
    assert_false(tr_rt_is_shutdown(rt));
    tu_rt_free_clean(rt);
    tr_rt_free(NULL);
}

// ---------------------------------------------------------------------------
// block_on.

static void
test_exec_block_on_returns_root_result(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    atomic_int drops = 0;
    tr_outcome out;
    assert_int_equal(tr_rt_run(rt, &tu_value_spec, NULL, TU_VALUE(1234, 2, &drops), &out), TR_OK);
    assert_int_equal(out.err, TR_OK);
    assert_int_equal(out.value.u64, 1234);
    assert_null(out.dtor);
    assert_int_equal(atomic_load(&drops), 1);
    tr_rt_stats st = tu_stats(rt);
    assert_int_equal(st.spawned, 1);
    assert_int_equal(st.completed, 1);
    assert_int_equal(st.cancelled, 0);
    assert_int_equal(st.polls, 3);
    assert_int_equal(st.live_tasks, 0);
    // Again, on the same runtime, without an outcome.
    assert_int_equal(tr_rt_run(rt, &tu_value_spec, NULL, TU_VALUE(1, 0, &drops), NULL), TR_OK);
    assert_int_equal(atomic_load(&drops), 2);
    // Misuse.
    assert_int_equal(tr_rt_block_on(NULL, NULL, NULL), TR_EINVAL);
    tr_rt *other = tu_rt_new();
    // A task prepared on another runtime (two steps: it tests that
    // tr_rt_block_on refuses what tr_task_new made elsewhere).
    void *foreign = tu_task_new(other, &tu_value_spec);
    assert_int_equal(tr_rt_block_on(rt, foreign, NULL), TR_EINVAL);
    tr_task_discard(foreign);
    tu_rt_free_clean(other);
    tu_rt_free_clean(rt);
}

static tr_poll
nested_block_on_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    tr_rt *other = st->arg;
    TU_CHECK(tr_rt_block_on(tr_cx_rt(cx), NULL, NULL) == TR_EDEADLOCK);
    // A worker of any runtime must not block on another one either.
    TU_CHECK(tr_rt_block_on(other, NULL, NULL) == TR_EDEADLOCK);
    tr_cx_set_result_u64(cx, 9);
    return TR_READY;
}

static const tr_task_spec nested_block_on_root_spec = ROOT_SPEC(nested_block_on_root);

static void
test_exec_block_on_from_task_deadlocks(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new(), *other = tu_rt_new();
    tr_outcome out;
    assert_int_equal(tr_rt_run(rt, &nested_block_on_root_spec, NULL, ROOT(other, NULL), &out),
                     TR_OK);
    tu_checks_pass();
    assert_int_equal(out.value.u64, 9);
    tu_rt_free_clean(other);
    tu_rt_free_clean(rt);
}

// A second thread calling block_on while the first is inside: TR_EBUSY.
typedef struct busy_ctx {
    tr_rt *rt;
    tr_err rv;
    tu_event done;
} busy_ctx;

static void *
busy_thread(void *arg)
{
    busy_ctx *bc = arg;
    bc->rv = tr_rt_block_on(bc->rt, NULL, NULL);
    tu_event_set(&bc->done);
    return NULL;
}

static tr_poll
busy_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    busy_ctx *bc = st->arg;
    TR_BEGIN(st);
    TU_CHECK(pthread_create(&st->thr, NULL, busy_thread, bc) == 0);
    TR_AWAIT(st, tu_event_poll(&bc->done, cx));
    TU_CHECK(pthread_join(st->thr, NULL) == 0);
    TR_END(st);
}

static const tr_task_spec busy_root_spec = ROOT_SPEC(busy_root);

static void
test_exec_block_on_busy_from_other_thread(void **state)
{
    (void)state;
    busy_ctx bc;
    memset(&bc, 0, sizeof bc);
    tu_event_init(&bc.done);
    tr_rt *rt = tu_rt_new();
    bc.rt = rt;
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    tr_err rv = tr_rt_run(rt, &busy_root_spec, NULL, ROOT(&bc, NULL), NULL);
    tu_watchdog_stop(&wd);
    assert_int_equal(rv, TR_OK);
    tu_checks_pass();
    assert_int_equal(bc.rv, TR_EBUSY);
    tu_event_destroy(&bc.done);
    tu_rt_free_clean(rt);
}

// Tasks left pending by one block_on carry on in the next.
static tr_poll
second_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    tr_join *j = st->arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_join_poll(j, cx, &st->out));
    TU_CHECK(st->out.err == TR_OK && st->out.value.u64 == 3);
    TR_END(st);
}

static const tr_task_spec second_root_spec = ROOT_SPEC(second_root);

typedef struct ev_wait {
    int tr_pc;
    tu_event *ev;
    atomic_int *polls;
} ev_wait;

static tr_poll
ev_wait_poll(void *arg, tr_cx *cx)
{
    ev_wait *st = arg;
    atomic_fetch_add(st->polls, 1);
    TR_BEGIN(st);
    TR_AWAIT(st, tu_event_poll(st->ev, cx));
    tr_cx_set_result_u64(cx, 3);
    TR_END(st);
}

static const tr_task_spec ev_wait_spec = {
    .name = "ev_wait", .poll = ev_wait_poll, .size = sizeof(ev_wait)};

static void
test_exec_block_on_twice_keeps_pending_tasks(void **state)
{
    (void)state;
    tu_event ev;
    tu_event_init(&ev);
    atomic_int polls = 0;
    tr_rt *rt = tu_rt_new();
    tr_join j;
    tu_start(rt, &ev_wait_spec, &(ev_wait){.ev = &ev, .polls = &polls}, &j);
    tu_atleast al = {&polls, 1};
    tu_block_until(rt, tu_pred_atleast, &al);
    assert_false(tr_join_is_finished(&j));
    assert_int_equal(tu_live(rt), 1);
    // Set the event while no block_on runs: the wake waits in the injector.
    tu_event_set(&ev);
    assert_int_equal(tr_rt_run(rt, &second_root_spec, NULL, ROOT(&j, NULL), NULL), TR_OK);
    tu_checks_pass();
    assert_int_equal(atomic_load(&polls), 2);
    tu_rt_free_clean(rt);
    tu_event_destroy(&ev);
}

// ---------------------------------------------------------------------------
// Spawning from plain threads.

#define EXT_N 10

static bool
all_finished(void *arg)
{
    tr_join *j = arg;
    for (int i = 0; i < EXT_N; i++) {
        if (!tr_join_is_finished(&j[i])) {
            return false;
        }
    }
    return true;
}

static bool
all_finished_n3(void *arg)
{
    tr_join *j = arg;
    return tr_join_is_finished(&j[0]) && tr_join_is_finished(&j[1]) && tr_join_is_finished(&j[2]);
}

static void
test_exec_spawn_from_thread_before_block_on(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_join j[EXT_N];
    for (int i = 0; i < EXT_N; i++) {
        tu_start(rt, &tu_value_spec, TU_VALUE(100 + (uint64_t)i, (uint32_t)i % 3, NULL), &j[i]);
    }
    tr_rt_stats st = tu_stats(rt);
    assert_int_equal(st.spawned, EXT_N);
    assert_int_equal(st.commands, 0); // messages wait in the inbox
    assert_int_equal(st.live_tasks, EXT_N);
    tu_block_until(rt, all_finished, j);
    st = tu_stats(rt);
    assert_true(st.commands >= EXT_N);
    for (int i = 0; i < EXT_N; i++) {
        tr_outcome out;
        assert_int_equal(tr_join_wait(&j[i], &out), TR_OK);
        assert_int_equal(out.err, TR_OK);
        assert_int_equal(out.value.u64, 100 + (uint64_t)i);
    }
    tu_rt_free_clean(rt);
}

// During block_on: plain threads spawn tasks (they travel as Spawn
// messages, allocating from the shared external shard under its lock while
// the worker frees those slots) and join them with tr_join_wait; the root
// waits for them.
#define DURING_THREADS 3
#define DURING_N 300

typedef struct during {
    tr_rt *rt;
    atomic_ullong sum;
    atomic_int errors;
    atomic_int finished;
    tu_event done;
    pthread_t thr[DURING_THREADS];
} during;

static void *
during_thread(void *arg)
{
    during *d = arg;
    tr_join *j = calloc(DURING_N, sizeof *j);
    int n = 0;
    for (int i = 0; i < DURING_N; i++) {
        if (tr_spawn(d->rt, &tu_value_spec, NULL, TU_VALUE((uint64_t)i, (uint32_t)i % 2, NULL),
                     &j[n]) != TR_OK) {
            atomic_fetch_add(&d->errors, 1);
            continue;
        }
        n++;
        if (i % 10 == 9) {
            // Join some while spawning goes on.
            for (int k = n - 10; k < n - 5; k++) {
                tr_outcome out;
                if (tr_join_wait(&j[k], &out) != TR_OK || out.err != TR_OK) {
                    atomic_fetch_add(&d->errors, 1);
                }
                atomic_fetch_add(&d->sum, out.value.u64);
            }
        }
    }
    for (int k = 0; k < n; k++) {
        if (tr_join_id(&j[k]).id == 0) {
            continue; // joined above
        }
        tr_outcome out;
        if (tr_join_wait(&j[k], &out) != TR_OK || out.err != TR_OK) {
            atomic_fetch_add(&d->errors, 1);
        }
        atomic_fetch_add(&d->sum, out.value.u64);
    }
    free(j);
    if (atomic_fetch_add(&d->finished, 1) + 1 == DURING_THREADS) {
        tu_event_set(&d->done);
    }
    return NULL;
}

static tr_poll
during_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    during *d = st->arg;
    TR_BEGIN(st);
    st->mark = tu_stats(tr_cx_rt(cx)).commands;
    for (st->k = 0; st->k < DURING_THREADS; st->k++) {
        TU_CHECK(pthread_create(&d->thr[st->k], NULL, during_thread, d) == 0);
    }
    TR_AWAIT(st, tu_event_poll(&d->done, cx));
    for (st->k = 0; st->k < DURING_THREADS; st->k++) {
        TU_CHECK(pthread_join(d->thr[st->k], NULL) == 0);
    }
    TU_CHECK(tu_stats(tr_cx_rt(cx)).commands >= st->mark + DURING_THREADS * DURING_N);
    TR_END(st);
}

static const tr_task_spec during_root_spec = ROOT_SPEC(during_root);

static void
test_exec_spawn_from_thread_during_block_on(void **state)
{
    (void)state;
    during d;
    memset(&d, 0, sizeof d);
    tu_event_init(&d.done);
    tr_rt *rt = tu_rt_new();
    d.rt = rt;
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    tr_err rv = tr_rt_run(rt, &during_root_spec, NULL, ROOT(&d, NULL), NULL);
    tu_watchdog_stop(&wd);
    assert_int_equal(rv, TR_OK);
    tu_checks_pass();
    assert_int_equal(atomic_load(&d.errors), 0);
    assert_int_equal(atomic_load(&d.sum), (uint64_t)DURING_THREADS * DURING_N * (DURING_N - 1) / 2);
    tr_rt_stats st = tu_stats(rt);
    assert_int_equal(st.spawned, DURING_THREADS * DURING_N + 1);
    assert_int_equal(st.completed, DURING_THREADS * DURING_N + 1);
    tu_event_destroy(&d.done);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Shutdown.

// Graceful with a deadline: the root asks for it and then waits forever.
// Tasks that finish before the deadline complete normally; the rest (the
// root included) are cancelled at the deadline.
typedef struct graceful {
    tr_join fast[3];
    tr_join stuck[2];
    tr_join spin;
    atomic_int fast_drops, stuck_polls, stuck_drops, root_drops;
    uint32_t deadline_ms;
} graceful;

static tr_poll
graceful_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    graceful *g = st->arg;
    void *p = NULL;
    TR_BEGIN(st);
    TU_CHECK(tr_rt_shutdown(tr_cx_rt(cx), TR_SHUTDOWN_GRACEFUL, g->deadline_ms) == TR_OK);
    TU_CHECK(tr_rt_is_shutdown(tr_cx_rt(cx)));
    // No new spawns once shutdown has begun, not even from a task (tests
    // tr_task_new itself).
    TU_CHECK(tr_task_new(tr_cx_rt(cx), &tu_value_spec, &p) == TR_ESHUTDOWN);
    TU_CHECK(tr_rt_shutdown(tr_cx_rt(cx), TR_SHUTDOWN_IMMEDIATE, 0) == TR_ESHUTDOWN);
    TR_AWAIT(st, tu_event_poll(&never, cx));
    TU_CHECK(!"the root should have been cancelled");
    TR_END(st);
}

static const tr_task_spec graceful_root_spec = ROOT_SPEC(graceful_root);

// A task that is always runnable: it yields forever.
static tr_poll
spinner_poll(void *arg, tr_cx *cx)
{
    (void)arg;
    tr_cx_yield(cx);
    return TR_PENDING;
}

static const tr_task_spec spinner_spec = {.name = "spinner", .poll = spinner_poll, .size = 8};

static void
test_exec_graceful_shutdown_deadline(void **state)
{
    (void)state;
    graceful g;
    memset(&g, 0, sizeof g);
    g.deadline_ms = 100;
    tr_rt *rt = tu_rt_new();
    for (int i = 0; i < 3; i++) {
        tu_start(rt, &tu_value_spec, TU_VALUE(10 + (uint64_t)i, (uint32_t)i * 5, &g.fast_drops),
                 &g.fast[i]);
    }
    for (int i = 0; i < 2; i++) {
        tu_start(rt, &tu_stuck_spec, TU_STUCK(&g.stuck_polls, &g.stuck_drops), &g.stuck[i]);
    }
    // Always runnable, never done: cancelled at the deadline as well.
    tu_start(rt, &spinner_spec, NULL, &g.spin);
    uint64_t t0 = tu_now_ns();
    tr_outcome out;
    assert_int_equal(tr_rt_run(rt, &graceful_root_spec, NULL, ROOT(&g, &g.root_drops), &out),
                     TR_ESHUTDOWN);
    uint64_t elapsed_ms = (tu_now_ns() - t0) / 1000000;
    tu_checks_pass();
    assert_int_equal(out.err, TR_ECANCELED);
    // Not cancelled before the deadline (a lower bound holds under any load).
    assert_true(elapsed_ms >= g.deadline_ms - 5);
    assert_int_equal(atomic_load(&g.root_drops), 1);
    assert_int_equal(atomic_load(&g.fast_drops), 3);
    assert_int_equal(atomic_load(&g.stuck_polls), 2);
    assert_int_equal(atomic_load(&g.stuck_drops), 2);
    for (int i = 0; i < 3; i++) {
        tr_outcome o;
        assert_int_equal(tr_join_wait(&g.fast[i], &o), TR_OK);
        assert_int_equal(o.err, TR_OK);
        assert_int_equal(o.value.u64, 10 + (uint64_t)i);
    }
    for (int i = 0; i < 2; i++) {
        tr_outcome o;
        assert_int_equal(tr_join_wait(&g.stuck[i], &o), TR_OK);
        assert_int_equal(o.err, TR_ECANCELED);
    }
    tr_outcome so;
    assert_int_equal(tr_join_wait(&g.spin, &so), TR_OK);
    assert_int_equal(so.err, TR_ECANCELED);
    tr_rt_stats st = tu_stats(rt);
    assert_int_equal(st.completed, 3);
    assert_int_equal(st.cancelled, 4);
    // Shut down for good (tests tr_task_new itself).
    void *p = NULL;
    assert_int_equal(tr_task_new(rt, &tu_value_spec, &p), TR_ESHUTDOWN);
    assert_int_equal(tr_rt_shutdown(rt, TR_SHUTDOWN_GRACEFUL, 0), TR_ESHUTDOWN);
    tu_rt_free_clean(rt);
    assert_int_equal(atomic_load(&g.stuck_drops), 2);
    assert_int_equal(atomic_load(&g.root_drops), 1);
}

// Graceful, and everything finishes: block_on returns as soon as the last
// task is done (not at the deadline), with the root's result.
static tr_poll
graceful_finish_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    graceful *g = st->arg;
    TR_BEGIN(st);
    // Spawn first, then shut down: the children are already in.
    for (st->k = 0; st->k < 3; st->k++) {
        if (!spawn(cx, &tu_value_spec, TU_VALUE(st->k, 3 * st->k, &g->fast_drops),
                   st->k == 0 ? &g->fast[0] : NULL)) {
            TR_RETURN(st);
        }
    }
    TU_CHECK(tr_rt_shutdown(tr_cx_rt(cx), TR_SHUTDOWN_GRACEFUL, g->deadline_ms) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&g->fast[0], cx, &st->out));
    TU_CHECK(st->out.err == TR_OK);
    tr_cx_set_result_u64(cx, 21);
    TR_END(st);
}

static const tr_task_spec graceful_finish_root_spec = ROOT_SPEC(graceful_finish_root);

static void
test_exec_graceful_shutdown_all_finish(void **state)
{
    (void)state;
    uint32_t deadlines[] = {0, 20000};
    for (int d = 0; d < 2; d++) {
        graceful g;
        memset(&g, 0, sizeof g);
        g.deadline_ms = deadlines[d];
        tr_rt *rt = tu_rt_new();
        uint64_t t0 = tu_now_ns();
        tr_outcome out;
        assert_int_equal(
            tr_rt_run(rt, &graceful_finish_root_spec, NULL, ROOT(&g, &g.root_drops), &out), TR_OK);
        uint64_t elapsed_ms = (tu_now_ns() - t0) / 1000000;
        tu_checks_pass();
        assert_int_equal(out.err, TR_OK);
        assert_int_equal(out.value.u64, 21);
        assert_true(elapsed_ms < 10000); // far below the 20 s deadline
        assert_int_equal(atomic_load(&g.fast_drops), 3);
        tr_rt_stats st = tu_stats(rt);
        assert_int_equal(st.completed, 4);
        assert_int_equal(st.cancelled, 0);
        assert_true(tr_rt_is_shutdown(rt));
        tu_rt_free_clean(rt);
    }
}

// Immediate: everything is cancelled at once, the root included.
typedef struct immediate {
    tr_join stuck[3];
    atomic_int polls, drops, root_drops;
    // A plain thread blocked in tr_join_wait on stuck[2] when the shutdown
    // comes: it wakes with TR_ECANCELED.
    pthread_t waiter;
    tr_outcome waiter_out;
    tr_err waiter_rv;
} immediate;

static void *
immediate_waiter(void *arg)
{
    immediate *im = arg;
    im->waiter_rv = tr_join_wait(&im->stuck[2], &im->waiter_out);
    return NULL;
}

static tr_poll
immediate_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    immediate *im = st->arg;
    TR_BEGIN(st);
    for (st->k = 0; st->k < 3; st->k++) {
        if (!spawn(cx, &tu_stuck_spec, TU_STUCK(&im->polls, &im->drops), &im->stuck[st->k])) {
            TR_RETURN(st);
        }
    }
    TR_YIELD(st, cx); // the children poll once and wait
    TU_CHECK(pthread_create(&im->waiter, NULL, immediate_waiter, im) == 0);
    TU_CHECK(tr_rt_shutdown(tr_cx_rt(cx), TR_SHUTDOWN_IMMEDIATE, 0) == TR_OK);
    TR_AWAIT(st, tu_event_poll(&never, cx));
    TU_CHECK(!"the root should have been cancelled");
    TR_END(st);
}

static const tr_task_spec immediate_root_spec = ROOT_SPEC(immediate_root);

static void
test_exec_immediate_shutdown_cancels_at_once(void **state)
{
    (void)state;
    immediate im;
    memset(&im, 0, sizeof im);
    tr_rt *rt = tu_rt_new();
    tr_outcome out;
    assert_int_equal(tr_rt_run(rt, &immediate_root_spec, NULL, ROOT(&im, &im.root_drops), &out),
                     TR_ESHUTDOWN);
    tu_checks_pass();
    assert_int_equal(out.err, TR_ECANCELED);
    assert_int_equal(atomic_load(&im.root_drops), 1);
    assert_int_equal(atomic_load(&im.polls), 3);
    assert_int_equal(atomic_load(&im.drops), 3);
    tu_thread_join(im.waiter);
    assert_int_equal(im.waiter_rv, TR_OK);
    assert_int_equal(im.waiter_out.err, TR_ECANCELED);
    for (int i = 0; i < 2; i++) {
        tr_outcome o;
        assert_int_equal(tr_join_wait(&im.stuck[i], &o), TR_OK);
        assert_int_equal(o.err, TR_ECANCELED);
    }
    tr_rt_stats st = tu_stats(rt);
    assert_int_equal(st.cancelled, 4);
    assert_int_equal(st.completed, 0);
    tu_rt_free_clean(rt);
    assert_int_equal(atomic_load(&im.drops), 3);
}

// Shutdown requested from another thread while the root waits.
typedef struct from_thread {
    tr_rt *rt;
    tr_shutdown_mode mode;
    uint32_t deadline_ms;
    tu_event started;
    tr_err rv, rv2;
    bool timed_out;
} from_thread;

static void *
shutdown_thread(void *arg)
{
    from_thread *ft = arg;
    if (!tu_event_wait(&ft->started, TU_WAIT_MS)) {
        ft->timed_out = true;
        // Unblock the root anyway, so that the test fails instead of hanging.
    }
    ft->rv = tr_rt_shutdown(ft->rt, ft->mode, ft->deadline_ms);
    ft->rv2 = tr_rt_shutdown(ft->rt, ft->mode, ft->deadline_ms);
    return NULL;
}

static tr_poll
started_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    from_thread *ft = st->arg;
    TR_BEGIN(st);
    tu_event_set(&ft->started);
    TR_AWAIT(st, tu_event_poll(&never, cx));
    TR_END(st);
}

static const tr_task_spec started_root_spec = ROOT_SPEC(started_root);

static void
test_exec_shutdown_from_thread(void **state)
{
    (void)state;
    for (int m = 0; m < 2; m++) {
        from_thread ft;
        memset(&ft, 0, sizeof ft);
        tu_event_init(&ft.started);
        ft.mode = m == 0 ? TR_SHUTDOWN_IMMEDIATE : TR_SHUTDOWN_GRACEFUL;
        ft.deadline_ms = m == 0 ? 0 : 20;
        atomic_int drops = 0, sdrops = 0;
        tr_rt *rt = tu_rt_new();
        ft.rt = rt;
        tu_start(rt, &tu_stuck_spec, TU_STUCK(NULL, &sdrops), NULL);
        pthread_t t;
        tu_thread_start(&t, shutdown_thread, &ft);
        tr_outcome out;
        assert_int_equal(tr_rt_run(rt, &started_root_spec, NULL, ROOT(&ft, &drops), &out),
                         TR_ESHUTDOWN);
        tu_thread_join(t);
        tu_checks_pass();
        assert_false(ft.timed_out);
        assert_int_equal(ft.rv, TR_OK);
        assert_int_equal(ft.rv2, TR_ESHUTDOWN);
        assert_int_equal(out.err, TR_ECANCELED);
        assert_int_equal(atomic_load(&drops), 1);
        assert_int_equal(atomic_load(&sdrops), 1);
        tu_rt_free_clean(rt);
        tu_event_destroy(&ft.started);
    }
}

// Tests tr_task_new itself (tr_spawn's own refusal: test_exec_spawn_one_call).
static void
test_exec_spawn_after_shutdown_fails(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    assert_false(tr_rt_is_shutdown(rt));
    assert_int_equal(tr_rt_shutdown(rt, TR_SHUTDOWN_GRACEFUL, 0), TR_OK);
    assert_true(tr_rt_is_shutdown(rt));
    void *p = NULL;
    assert_int_equal(tr_task_new(rt, &tu_value_spec, &p), TR_ESHUTDOWN);
    assert_null(p);
    // Nothing was running: block_on without a root finishes the shutdown.
    assert_int_equal(tr_rt_block_on(rt, NULL, NULL), TR_ESHUTDOWN);
    assert_int_equal(tr_task_new(rt, &tu_value_spec, &p), TR_ESHUTDOWN);
    assert_true(tu_stats(rt).commands >= 1);
    tu_rt_free_clean(rt);
}

static void
test_exec_shutdown_twice(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    assert_int_equal(tr_rt_shutdown(NULL, TR_SHUTDOWN_GRACEFUL, 0), TR_EINVAL);
    assert_int_equal(tr_rt_shutdown(rt, (tr_shutdown_mode)7, 0), TR_EINVAL);
    assert_false(tr_rt_is_shutdown(rt));
    assert_int_equal(tr_rt_shutdown(rt, TR_SHUTDOWN_IMMEDIATE, 0), TR_OK);
    assert_int_equal(tr_rt_shutdown(rt, TR_SHUTDOWN_IMMEDIATE, 0), TR_ESHUTDOWN);
    assert_int_equal(tr_rt_shutdown(rt, TR_SHUTDOWN_GRACEFUL, 10), TR_ESHUTDOWN);
    tu_rt_free_clean(rt);
}

// A root prepared before a shutdown: block_on cancels it without polling it
// (immediate), and a later block_on of a root prepared earlier does too.
// Two steps on purpose: it tests what tr_rt_block_on does with a root that
// tr_task_new made before the shutdown.
static void
test_exec_block_on_after_shutdown_cancels_root(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    atomic_int drops = 0, polls1 = 0, polls2 = 0;
    tu_stuck *r1 = tu_stuck_new(rt, &polls1, &drops);
    tu_stuck *r2 = tu_stuck_new(rt, &polls2, &drops);
    assert_int_equal(tr_rt_shutdown(rt, TR_SHUTDOWN_IMMEDIATE, 0), TR_OK);
    tr_outcome out;
    assert_int_equal(tr_rt_block_on(rt, r1, &out), TR_ESHUTDOWN);
    assert_int_equal(out.err, TR_ECANCELED);
    assert_int_equal(atomic_load(&drops), 1);
    assert_int_equal(tr_rt_block_on(rt, r2, &out), TR_ESHUTDOWN);
    assert_int_equal(out.err, TR_ECANCELED);
    assert_int_equal(atomic_load(&drops), 2);
    assert_int_equal(atomic_load(&polls2), 0);
    tu_rt_free_clean(rt);
    // An immediate shutdown means "cancel every live task now": a root
    // handed to block_on after it must be cancelled without being polled.
    if (atomic_load(&polls1) != 0) {
        fail_msg("block_on polled its root %d time(s) after an immediate shutdown had "
                 "been requested",
                 atomic_load(&polls1));
    }
}

// ---------------------------------------------------------------------------
// Freeing a runtime with live tasks.

// Each task owns heap memory its drop function frees: if a drop did not
// run, LeakSanitizer reports it; if one ran twice, ASan reports a double
// free.
typedef struct owner {
    int tr_pc;
    char *buf;
    tr_join child; // a handle the drop must release
    atomic_int *drops;
    atomic_int *polls;
} owner;

static tr_poll
owner_poll(void *arg, tr_cx *cx)
{
    owner *st = arg;
    (void)cx;
    st->buf[0] = 'x';
    atomic_fetch_add(st->polls, 1);
    return TR_PENDING; // waits for nothing: only a cancel ends it
}

static void
owner_drop(void *arg)
{
    owner *st = arg;
    free(st->buf);
    st->buf = NULL;
    tr_join_release(&st->child);
    atomic_fetch_add(st->drops, 1);
}

static const tr_task_spec owner_spec = {
    .name = "owner", .poll = owner_poll, .drop = owner_drop, .size = sizeof(owner)};

// owner_start starts an owner (holding child, may be TR_JOIN_NONE) from
// outside; j may be NULL.
static void
owner_start(tr_rt *rt, atomic_int *drops, atomic_int *polls, tr_join child, tr_join *j)
{
    owner o = {.buf = malloc(4096), .drops = drops, .polls = polls, .child = child};
    tu_start(rt, &owner_spec, &o, j);
}

static void
test_exec_free_with_pending_tasks(void **state)
{
    (void)state;
    atomic_int drops = 0, polls = 0;
    tr_rt *rt = tu_rt_new();
    // Polled and pending, each holding a handle to another pending task.
    tr_join handles[4];
    for (int i = 0; i < 4; i++) {
        tr_join lj;
        owner_start(rt, &drops, &polls, TR_JOIN_NONE, &lj);
        owner_start(rt, &drops, &polls, lj, i % 2 ? &handles[i] : NULL);
    }
    tu_atleast al = {&polls, 8};
    tu_block_until(rt, tu_pred_atleast, &al);
    assert_int_equal(atomic_load(&drops), 0);
    // Started from outside and never polled (Spawn messages still queued).
    for (int i = 0; i < 3; i++) {
        owner_start(rt, &drops, &polls, TR_JOIN_NONE, NULL);
    }
    // Prepared, never started (tr_task_new itself): no drop (the state
    // owns no memory here).
    void *prepared = tu_task_new(rt, &tu_value_spec);
    (void)prepared;
    assert_int_equal(tu_live(rt), 4 * 2 + 3 + 1);
    tr_rt_free(rt);
    assert_int_equal(atomic_load(&polls), 8);
    assert_int_equal(atomic_load(&drops), 11);
}

// ---------------------------------------------------------------------------
// A million spawns.

#define MILLION 1000000
#define SPAWN_BATCH 1000

typedef struct noop {
    int tr_pc;
    uint64_t *sum;
} noop;

static tr_poll
noop_poll(void *arg, tr_cx *cx)
{
    noop *st = arg;
    (void)cx;
    (*st->sum)++;
    return TR_READY;
}

static const tr_task_spec noop_spec = {.name = "noop", .poll = noop_poll, .size = sizeof(noop)};

typedef struct million {
    uint64_t ran;
    uint64_t failed;
    uint64_t max_live;
} million;

static tr_poll
million_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    million *m = st->arg;
    uint64_t live;
    TR_BEGIN(st);
    for (st->i = 0; st->i < MILLION / SPAWN_BATCH; st->i++) {
        for (st->k = 0; st->k < SPAWN_BATCH; st->k++) {
            if (tr_spawn(tr_cx_rt(cx), &noop_spec, NULL, &(noop){.sum = &m->ran}, NULL) != TR_OK) {
                m->failed++;
            }
        }
        live = tu_live(tr_cx_rt(cx));
        if (live > m->max_live) {
            m->max_live = live;
        }
        TR_YIELD(st, cx); // the batch runs and frees its slots
    }
    TR_END(st);
}

static const tr_task_spec million_root_spec = ROOT_SPEC(million_root);

static void
test_exec_million_spawns(void **state)
{
    (void)state;
    million m;
    memset(&m, 0, sizeof m);
    tr_rt *rt = tu_rt_new_fifo() /* FIFO order */;
    assert_int_equal(tr_rt_run(rt, &million_root_spec, NULL, ROOT(&m, NULL), NULL), TR_OK);
    tu_checks_pass();
    assert_int_equal(m.failed, 0);
    assert_int_equal(m.ran, MILLION);
    assert_true(m.max_live <= SPAWN_BATCH + 1);
    tr_rt_stats st = tu_stats(rt);
    assert_int_equal(st.spawned, MILLION + 1);
    assert_int_equal(st.completed, MILLION + 1);
    assert_int_equal(st.live_tasks, 0);
    // Slots were reused, batch after batch.
    assert_true(st.pool_slots <= 4 * SPAWN_BATCH);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// The dump.

typedef struct seen {
    int n;
    char names[16][32];
    tr_task_state states[16];
    uint32_t polls[16], sleeps[16];
    tr_task_id ids[16];
} seen;

static void
collect(const tr_task_info *info, void *arg)
{
    seen *s = arg;
    if (s->n < 16) {
        snprintf(s->names[s->n], sizeof s->names[0], "%s", info->name);
        s->states[s->n] = info->state;
        s->polls[s->n] = info->polls;
        s->sleeps[s->n] = info->sleeps;
        s->ids[s->n] = info->id;
        s->n++;
    }
}

static int
find(const seen *s, const char *name)
{
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->names[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

static const tr_task_spec dump_idle_spec = {
    .name = "dump_idle", .poll = tu_stuck_poll, .drop = tu_stuck_drop, .size = sizeof(tu_stuck)};
static const tr_task_spec dump_sched_spec = {
    .name = "dump_sched", .poll = tu_stuck_poll, .drop = tu_stuck_drop, .size = sizeof(tu_stuck)};
static const tr_task_spec dump_cancel_spec = {
    .name = "dump_cancel", .poll = tu_stuck_poll, .drop = tu_stuck_drop, .size = sizeof(tu_stuck)};
static const tr_task_spec dump_prep_spec = {
    .name = "dump_prepared", .poll = tu_stuck_poll, .size = sizeof(tu_stuck)};
static const tr_task_spec dump_done_spec = {
    .name = "dump_done", .poll = tu_value_poll, .size = sizeof(tu_value_task)};
static const tr_task_spec dump_anon_spec = {.poll = tu_stuck_poll, .size = sizeof(tu_stuck)};

typedef struct dump_ctx {
    seen s;
    char *text;
    size_t len;
    tr_join idle, sched, cancel, done, anon;
} dump_ctx;

static tr_poll
dump_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    dump_ctx *dc = st->arg;
    FILE *f;
    TR_BEGIN(st);
    (void)spawn(cx, &dump_idle_spec, NULL, &dc->idle);
    (void)spawn(cx, &dump_cancel_spec, NULL, &dc->cancel);
    (void)spawn(cx, &dump_done_spec, NULL, &dc->done);
    (void)spawn(cx, &dump_anon_spec, NULL, &dc->anon);
    TR_YIELD(st, cx);                                    // they all poll once
    TU_CHECK(tr_task_abort(&dc->cancel) == TR_OK);       // queued for its cancel
    (void)spawn(cx, &dump_sched_spec, NULL, &dc->sched); // queued, never polled
    // Prepared, not started: tr_task_new itself (the dump lists it too).
    st->arg = spawn_new(cx, &dump_prep_spec);
    tr_rt_foreach_task(tr_cx_rt(cx), collect, &dc->s);
    f = open_memstream(&dc->text, &dc->len);
    TU_CHECK(f != NULL);
    if (f != NULL) {
        tr_rt_dump(tr_cx_rt(cx), f);
        fclose(f);
    }
    // Clean up.
    tr_task_discard(st->arg);
    st->arg = dc;
    TU_CHECK(tr_task_abort(&dc->idle) == TR_OK);
    TU_CHECK(tr_task_abort(&dc->sched) == TR_OK);
    TU_CHECK(tr_task_abort(&dc->anon) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&dc->idle, cx, NULL));
    TR_AWAIT(st, tr_join_poll(&dc->sched, cx, NULL));
    TR_AWAIT(st, tr_join_poll(&dc->cancel, cx, NULL));
    TR_AWAIT(st, tr_join_poll(&dc->done, cx, NULL));
    TR_AWAIT(st, tr_join_poll(&dc->anon, cx, NULL));
    TR_END(st);
}

static const tr_task_spec dump_root_spec = {
    .name = "dump_root", .poll = dump_root, .drop = root_drop, .size = sizeof(root)};

static void
test_exec_dump_lists_live_tasks(void **state)
{
    (void)state;
    dump_ctx *dc = calloc(1, sizeof *dc);
    assert_non_null(dc);
    tr_rt *rt = tu_rt_new_fifo() /* FIFO order */;
    assert_int_equal(tr_rt_run(rt, &dump_root_spec, NULL, ROOT(dc, NULL), NULL), TR_OK);
    tu_checks_pass();
    seen *s = &dc->s;
    assert_int_equal(s->n, 7);
    int i;
    assert_true((i = find(s, "dump_root")) >= 0);
    assert_int_equal(s->states[i], TR_TASK_RUNNING);
    assert_true((i = find(s, "dump_idle")) >= 0);
    assert_int_equal(s->states[i], TR_TASK_IDLE);
    assert_int_equal(s->polls[i], 1);
    assert_int_equal(s->sleeps[i], 1);
    assert_true((i = find(s, "dump_cancel")) >= 0);
    assert_int_equal(s->states[i], TR_TASK_CANCELLING);
    assert_true((i = find(s, "dump_sched")) >= 0);
    assert_int_equal(s->states[i], TR_TASK_SCHEDULED);
    assert_int_equal(s->polls[i], 0);
    assert_true((i = find(s, "dump_prepared")) >= 0);
    assert_int_equal(s->states[i], TR_TASK_PREPARED);
    assert_true((i = find(s, "dump_done")) >= 0);
    assert_int_equal(s->states[i], TR_TASK_COMPLETE);
    assert_true((i = find(s, "?")) >= 0); // a spec without a name
    assert_int_equal(s->states[i], TR_TASK_IDLE);
    // The dump names them too, with their states.
    assert_non_null(dc->text);
    const char *want[] = {"dump_root", "dump_idle", "dump_cancel",   "dump_sched", "dump_prepared",
                          "dump_done", "idle",      "prepared",      "scheduled",  "cancelling",
                          "complete",  "running",   "7 live task(s)"};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        if (strstr(dc->text, want[k]) == NULL) {
            fail_msg("dump lacks \"%s\":\n%s", want[k], dc->text);
        }
    }
    free(dc->text);
    free(dc);
    tu_rt_free_clean(rt);
}

// tr_rt_foreach_task, tr_rt_dump and tr_rt_get_stats from another thread
// while the runtime spawns and completes tasks: racy snapshots, but no data
// race and nothing that is not a live task of this runtime.
typedef struct watcher {
    tr_rt *rt;
    atomic_bool stop;
    tu_event started; // after the watcher's first round
    unsigned long seen;
    unsigned long rounds;
    uint64_t seen_live; // the most live_tasks said
    int bad;
} watcher;

static void
watch_one(const tr_task_info *info, void *arg)
{
    watcher *w = arg;
    w->seen++;
    if (info->name == NULL || info->id.id == 0 ||
        (strcmp(info->name, "noop") != 0 && strcmp(info->name, "watch_root") != 0)) {
        w->bad++;
    }
}

static void *
watch_thread(void *arg)
{
    watcher *w = arg;
    FILE *f = fopen("/dev/null", "w");
    while (!atomic_load(&w->stop) && w->rounds < 1000000) {
        tr_rt_foreach_task(w->rt, watch_one, w);
        // Read while tasks come and go (for TSan). Its live_tasks is a sum
        // of counters read one by one while workers move credit between
        // them: a watcher preempted between two reads can see hundreds too
        // many on a loaded machine, so it bounds nothing here.
        tr_rt_stats st;
        tr_rt_get_stats(w->rt, &st);
        w->seen_live = st.live_tasks > w->seen_live ? st.live_tasks : w->seen_live;
        if (f != NULL && w->rounds % 16 == 0) {
            tr_rt_dump(w->rt, f);
        }
        if (w->rounds++ == 0) {
            tu_event_set(&w->started);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return NULL;
}

static tr_poll
watch_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    watcher *w = st->arg;
    TR_BEGIN(st);
    TU_CHECK(pthread_create(&st->thr, NULL, watch_thread, w) == 0);
    // Start spawning once the watcher is watching.
    TR_AWAIT(st, tu_event_poll(&w->started, cx));
    for (st->i = 0; st->i < 40; st->i++) {
        for (st->k = 0; st->k < SPAWN_BATCH; st->k++) {
            if (tr_spawn(tr_cx_rt(cx), &noop_spec, NULL, &(noop){.sum = &st->mark}, NULL) !=
                TR_OK) {
                TU_CHECK(!"tr_spawn failed");
            }
        }
        TR_YIELD(st, cx);
    }
    atomic_store(&w->stop, true);
    TU_CHECK(pthread_join(st->thr, NULL) == 0);
    TU_CHECK(st->mark == 40 * SPAWN_BATCH);
    TR_END(st);
}

static const tr_task_spec watch_root_spec = {
    .name = "watch_root", .poll = watch_root, .drop = root_drop, .size = sizeof(root)};

static void
test_exec_dump_from_other_thread(void **state)
{
    (void)state;
    watcher w;
    memset(&w, 0, sizeof w);
    tu_event_init(&w.started);
    tr_rt *rt = tu_rt_new_fifo() /* FIFO order */;
    w.rt = rt;
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    tr_err rv = tr_rt_run(rt, &watch_root_spec, NULL, ROOT(&w, NULL), NULL);
    tu_watchdog_stop(&wd);
    assert_int_equal(rv, TR_OK);
    tu_checks_pass();
    assert_int_equal(w.bad, 0);
    assert_true(w.rounds > 0);
    assert_true(w.seen_live >= 1); // the root, at least
    tu_event_destroy(&w.started);
    tu_rt_free_clean(rt);
}

static void
test_exec_state_names(void **state)
{
    (void)state;
    assert_string_equal(tr_task_state_name(TR_TASK_PREPARED), "prepared");
    assert_string_equal(tr_task_state_name(TR_TASK_IDLE), "idle");
    assert_string_equal(tr_task_state_name(TR_TASK_SCHEDULED), "scheduled");
    assert_string_equal(tr_task_state_name(TR_TASK_RUNNING), "running");
    assert_string_equal(tr_task_state_name(TR_TASK_CANCELLING), "cancelling");
    assert_string_equal(tr_task_state_name(TR_TASK_COMPLETE), "complete");
    assert_string_equal(tr_task_state_name((tr_task_state)99), "?");
    // And a dump of an empty runtime is just the header and the summary.
    tr_rt *rt = tu_rt_new();
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    tr_rt_dump(rt, f);
    fclose(f);
    assert_non_null(strstr(text, "0 live task(s)"));
    free(text);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Idle: the worker parks, and a wake from another thread unparks it.

typedef struct idle {
    tr_rt *rt;
    tu_event ev;
    uint64_t parks_seen;
    bool timed_out;
} idle;

static void *
idle_thread(void *arg)
{
    idle *id = arg;
    // Wait (bounded) until the worker has parked: it has nothing to do but
    // wait for this thread. Spinning with sched_yield, not sleeping.
    uint64_t deadline = tu_now_ns() + (uint64_t)TU_WAIT_MS * 1000000u;
    uint64_t parks;
    while ((parks = atomic_load(&id->rt->r_workers[0].w_parks)) == 0 ||
           (atomic_load(&id->rt->r_workers[0].w_park) != TR__PARK_PARKED &&
            atomic_load(&id->rt->r_workers[0].w_park) != TR__PARK_DRIVER)) {
        if (tu_now_ns() > deadline) {
            id->timed_out = true;
            break;
        }
        sched_yield();
    }
    id->parks_seen = parks;
    tu_event_set(&id->ev);
    return NULL;
}

static tr_poll
idle_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    idle *id = st->arg;
    TR_BEGIN(st);
    TU_CHECK(pthread_create(&st->thr, NULL, idle_thread, id) == 0);
    TR_AWAIT(st, tu_event_poll(&id->ev, cx));
    TU_CHECK(pthread_join(st->thr, NULL) == 0);
    tr_cx_set_result_u64(cx, 5);
    TR_END(st);
}

static const tr_task_spec idle_root_spec = ROOT_SPEC(idle_root);

static void
test_exec_idle_runtime_parks(void **state)
{
    (void)state;
    idle id;
    memset(&id, 0, sizeof id);
    tu_event_init(&id.ev);
    tr_rt *rt = tu_rt_new();
    id.rt = rt;
    tr_outcome out;
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    tr_err rv = tr_rt_run(rt, &idle_root_spec, NULL, ROOT(&id, NULL), &out);
    tu_watchdog_stop(&wd);
    assert_int_equal(rv, TR_OK);
    tu_checks_pass();
    assert_false(id.timed_out);
    assert_int_equal(out.value.u64, 5);
    assert_true(id.parks_seen >= 1);
    assert_true(atomic_load(&rt->r_workers[0].w_parks) >= 1);
    tu_event_destroy(&id.ev);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Starts that come too late, and starts racing a shutdown: every start is
// either refused (TR_ESHUTDOWN, its drop run by the caller) or carried out
// (run, or cancelled) before block_on returns from the shutdown.

// A task prepared before a shutdown and started after it is refused, from
// outside the runtime and from a task: its drop runs at once, on the
// caller's thread, the handle is empty and nothing is left in limbo.
typedef struct late_child {
    int tr_pc;
    atomic_int *drops;
    pthread_t dropped_on;
} late_child;

static tr_poll
late_child_poll(void *arg, tr_cx *cx)
{
    (void)arg;
    (void)cx;
    return TR_READY;
}

static void
late_child_drop(void *arg)
{
    late_child *st = arg;
    st->dropped_on = pthread_self();
    atomic_fetch_add(st->drops, 1);
}

static const tr_task_spec late_child_spec = {
    .name = "late", .poll = late_child_poll, .drop = late_child_drop, .size = sizeof(late_child)};

// late_root prepares a child, shuts down, then starts it: tests that
// tr_task_start itself refuses it from inside a task.
static tr_poll
late_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    atomic_int *drops = st->arg;
    late_child *c = spawn_new(cx, &late_child_spec);
    if (c == NULL) {
        return TR_READY;
    }
    c->drops = drops;
    TU_CHECK(tr_rt_shutdown(tr_cx_rt(cx), TR_SHUTDOWN_GRACEFUL, 0) == TR_OK);
    st->j = (tr_join){12345}; // start empties it even when refusing
    TU_CHECK(tr_task_start(c, &st->j) == TR_ESHUTDOWN);
    TU_CHECK(tr_join_id(&st->j).id == 0);
    TU_CHECK(atomic_load(drops) == 1);
    return TR_READY;
}

static const tr_task_spec late_root_spec = ROOT_SPEC(late_root);

// Tests tr_task_start itself: a task prepared before the shutdown is
// refused when started after it.
static void
test_exec_start_after_shutdown_refused(void **state)
{
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        // From outside, with and without a handle, before and after the
        // shutdown was carried out.
        tr_rt *rt = tu_rt_new();
        atomic_int drops = 0;
        late_child *a = tu_task_new(rt, &late_child_spec);
        late_child *b = tu_task_new(rt, &late_child_spec);
        late_child *c = tu_task_new(rt, &late_child_spec);
        a->drops = b->drops = c->drops = &drops;
        assert_int_equal(tr_rt_shutdown(rt, (tr_shutdown_mode)mode, 0), TR_OK);
        tr_join j = {777};
        assert_int_equal(tr_task_start(a, &j), TR_ESHUTDOWN);
        assert_int_equal(tr_join_id(&j).id, 0);
        assert_int_equal(atomic_load(&drops), 1);
        assert_int_equal(tr_task_start(b, NULL), TR_ESHUTDOWN);
        assert_int_equal(atomic_load(&drops), 2);
        assert_int_equal(tr_rt_block_on(rt, NULL, NULL), TR_ESHUTDOWN);
        assert_int_equal(tr_task_start(c, &j), TR_ESHUTDOWN);
        assert_int_equal(atomic_load(&drops), 3);
        assert_int_equal(tu_live(rt), 0);
        tr_rt_stats st = tu_stats(rt);
        assert_int_equal(st.spawned, 0);
        tu_rt_free_clean(rt);
    }
    // From a task: prepared before its own tr_rt_shutdown, started after.
    tr_rt *rt = tu_rt_new();
    atomic_int drops = 0;
    tr_outcome out;
    assert_int_equal(tr_rt_run(rt, &late_root_spec, NULL, ROOT(&drops, NULL), &out), TR_OK);
    tu_checks_pass();
    assert_int_equal(atomic_load(&drops), 1);
    tu_rt_free_clean(rt);
}

// tr_spawn: init fills the state in (or arg is copied, or it stays
// zeroed); failures start nothing and leave the handle empty; a refused
// start after init runs the drop, so init and drop pair.
typedef struct sp_task {
    int tr_pc;
    uint64_t value;
    atomic_int *inits;
    atomic_int *drops;
} sp_task;

static tr_poll
sp_task_poll(void *arg, tr_cx *cx)
{
    sp_task *st = arg;
    tr_cx_set_result_u64(cx, st->value);
    return TR_READY;
}

static void
sp_task_drop(void *arg)
{
    sp_task *st = arg;
    if (st->drops != NULL) {
        atomic_fetch_add(st->drops, 1);
    }
}

static const tr_task_spec sp_spec = {
    .name = "sp", .poll = sp_task_poll, .drop = sp_task_drop, .size = sizeof(sp_task)};

static void
sp_init(void *state, void *arg)
{
    sp_task *st = state;
    const sp_task *from = arg;
    TU_CHECK(st->value == 0 && st->drops == NULL); // zeroed first
    *st = *from;
    atomic_fetch_add(st->inits, 1);
}

static void
sp_shutdown_init(void *state, void *arg)
{
    // A shutdown begins between the allocation and the start.
    sp_init(state, arg);
    tr_rt *rt = tr__slot_rt(tr__state_slot(state));
    TU_CHECK(tr_rt_shutdown(rt, TR_SHUTDOWN_IMMEDIATE, 0) == TR_OK);
}

static void
test_exec_spawn_one_call(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    atomic_int inits = 0, drops = 0;
    sp_task proto = {.value = 41, .inits = &inits, .drops = &drops};
    tr_join j[3];
    assert_int_equal(tr_spawn(rt, &sp_spec, sp_init, &proto, &j[0]), TR_OK);
    assert_int_equal(atomic_load(&inits), 1);
    proto.value = 42;
    assert_int_equal(tr_spawn(rt, &sp_spec, NULL, &proto, &j[1]), TR_OK);   // copied
    assert_int_equal(tr_spawn(rt, &sp_spec, NULL, NULL, &j[2]), TR_OK);     // zeroed
    assert_int_equal(tr_spawn(rt, &sp_spec, sp_init, &proto, NULL), TR_OK); // detached
    tu_block_until(rt, all_finished_n3, j);
    tr_outcome out;
    uint64_t want[3] = {41, 42, 0};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tr_join_wait(&j[i], &out), TR_OK);
        assert_int_equal(out.err, TR_OK);
        assert_int_equal(out.value.u64, want[i]);
    }
    tu_rt_quiesce(rt, TU_WAIT_MS);
    assert_int_equal(atomic_load(&drops), 3); // the zeroed one counts none
    assert_int_equal(atomic_load(&inits), 2);
    tu_rt_free_clean(rt);

    // Errors: nothing started, the handle empty.
    rt = tu_rt_new();
    tr_join e = {99};
    tr_task_spec bad = sp_spec;
    bad.size = TR_TASK_MAX_STATE + 1;
    assert_int_equal(tr_spawn(rt, &bad, sp_init, &proto, &e), TR_EINVAL);
    assert_int_equal(tr_join_id(&e).id, 0);
    assert_int_equal(tr_spawn(NULL, &sp_spec, NULL, NULL, &e), TR_EINVAL);
    atomic_store(&inits, 0);
    atomic_store(&drops, 0);
    e = (tr_join){99};
    // Refused after init ran: TR_ECANCELED (the drop released what init took).
    assert_int_equal(tr_spawn(rt, &sp_spec, sp_shutdown_init, &proto, &e), TR_ECANCELED);
    tu_checks_pass();
    assert_int_equal(tr_join_id(&e).id, 0);
    assert_int_equal(atomic_load(&inits), 1);
    assert_int_equal(atomic_load(&drops), 1);
    assert_int_equal(tr_spawn(rt, &sp_spec, sp_init, &proto, &e), TR_ESHUTDOWN);
    assert_int_equal(atomic_load(&inits), 1); // refused before init
    assert_int_equal(tu_live(rt), 0);
    tu_rt_free_clean(rt);
}

// The race itself, replayed in its worst order with the test hooks: a
// start from outside passes its shutdown check, then waits (hook) until the
// shutdown's finisher is about to give up on it; only then does it send its
// Spawn message. The finisher must wait for it and carry it out, so that
// when block_on returns the task has been cancelled and its join is done.
// Tests tr_task_start itself (the task is prepared before the race).
static tu_event race_at_start, race_at_wait;

static void
race_hook(int point)
{
    if (point == TR__HOOK_START_ACCEPTED) {
        tu_event_set(&race_at_start);
        TU_CHECK(tu_event_wait(&race_at_wait, TU_WAIT_MS));
    } else if (point == TR__HOOK_WAIT_STARTS) {
        tu_event_set(&race_at_wait);
    }
}

typedef struct race_starter {
    tr_rt *rt;
    late_child *task;
    tr_join j;
    tr_err rv;
} race_starter;

static void *
race_starter_main(void *arg)
{
    race_starter *rs = arg;
    rs->rv = tr_task_start(rs->task, &rs->j);
    return NULL;
}

static void
test_exec_start_racing_shutdown_is_carried_out(void **state)
{
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        tu_event_init(&race_at_start);
        tu_event_init(&race_at_wait);
        tr_rt *rt = tu_rt_new();
        atomic_int drops = 0;
        race_starter rs = {.rt = rt};
        rs.task = tu_task_new(rt, &late_child_spec);
        rs.task->drops = &drops;
        atomic_store(&tr__test_hook, race_hook);
        pthread_t thr;
        tu_thread_start(&thr, race_starter_main, &rs);
        assert_true(tu_event_wait(&race_at_start, TU_WAIT_MS));
        // The starter is past its check: the shutdown cannot refuse it.
        assert_int_equal(tr_rt_shutdown(rt, (tr_shutdown_mode)mode, 0), TR_OK);
        assert_int_equal(tr_rt_block_on(rt, NULL, NULL), TR_ESHUTDOWN);
        atomic_store(&tr__test_hook, NULL);
        // block_on has returned: the accepted task was carried out.
        assert_true(tu_event_is_set(&race_at_wait)); // the finisher waited
        assert_int_equal(atomic_load(&drops), 1);
        tu_thread_join(thr);
        tu_checks_pass();
        assert_int_equal(rs.rv, TR_OK);
        assert_true(tr_join_is_finished(&rs.j));
        tr_outcome out;
        assert_int_equal(tr_join_wait(&rs.j, &out), TR_OK);
        // Immediate: cancelled unpolled. Graceful: the finisher ran after
        // the graceful check saw no start in flight, so it may have run.
        assert_true(out.err == TR_ECANCELED || (mode == 0 && out.err == TR_OK));
        tu_rt_free_clean(rt);
        tu_event_destroy(&race_at_start);
        tu_event_destroy(&race_at_wait);
    }
}

// A storm: 64 threads spawn from outside while the main thread shuts the
// runtime down. Each spawn is refused or accepted; every accepted task has
// run or been cancelled by the time block_on returns (its join finished, its
// drop run once), and nothing is live afterwards.
#define STORM_THREADS 64
#define STORM_SPAWNS 40

typedef struct storm {
    tr_rt *rt;
    tu_event go;
    tu_event quarter; // a quarter of the spawns accepted
    atomic_int drops[STORM_THREADS * STORM_SPAWNS];
    bool ok[STORM_THREADS * STORM_SPAWNS];   // accepted
    bool late[STORM_THREADS * STORM_SPAWNS]; // refused after init ran (TR_ECANCELED)
    atomic_int accepted;
    atomic_int refused;
    atomic_int bad;
    tr_join j[STORM_THREADS][STORM_SPAWNS];
    unsigned n[STORM_THREADS];
    struct storm_arg {
        struct storm *s;
        unsigned t;
    } args[STORM_THREADS];
} storm;

static void *
storm_thread(void *arg)
{
    struct storm_arg *a = arg;
    storm *s = a->s;
    if (!tu_event_wait(&s->go, TU_WAIT_MS)) {
        atomic_fetch_add(&s->bad, 1);
        return NULL;
    }
    for (unsigned i = 0; i < STORM_SPAWNS; i++) {
        unsigned idx = a->t * STORM_SPAWNS + i;
        sp_task proto = {.value = i, .drops = &s->drops[idx]};
        tr_join j;
        tr_err rv = tr_spawn(s->rt, &sp_spec, NULL, &proto, (i & 1) ? &j : NULL);
        if (rv == TR_OK) {
            s->ok[idx] = true;
            if (atomic_fetch_add(&s->accepted, 1) + 1 == STORM_THREADS * STORM_SPAWNS / 4) {
                tu_event_set(&s->quarter);
            }
            if (i & 1) {
                s->j[a->t][s->n[a->t]++] = j;
            }
        } else if (rv == TR_ESHUTDOWN || rv == TR_ECANCELED) {
            s->late[idx] = rv == TR_ECANCELED;
            atomic_fetch_add(&s->refused, 1);
        } else {
            atomic_fetch_add(&s->bad, 1);
        }
    }
    return NULL;
}

static void
test_exec_spawn_storm_during_shutdown(void **state)
{
    (void)state;
    static const tr_sched_kind scheds[3] = {TR_SCHED_WS, TR_SCHED_RR, TR_SCHED_HYBRID};
    for (int c = 0; c < 6; c++) {
        storm *s = calloc(1, sizeof *s);
        assert_non_null(s);
        tr_rt_config cfg;
        tu_config_init(&cfg);
        cfg.workers = 2;
        cfg.sched = scheds[c % 3];
        cfg.ignore_env = true;
        s->rt = tu_rt_new_cfg(&cfg);
        tu_event_init(&s->go);
        pthread_t thr[STORM_THREADS];
        for (unsigned t = 0; t < STORM_THREADS; t++) {
            s->args[t] = (struct storm_arg){s, t};
            tu_thread_start(&thr[t], storm_thread, &s->args[t]);
        }
        tu_event_init(&s->quarter);
        tu_event_set(&s->go);
        // Shut down in the thick of it.
        assert_true(tu_event_wait(&s->quarter, TU_WAIT_MS));
        tr_shutdown_mode mode = c < 3 ? TR_SHUTDOWN_GRACEFUL : TR_SHUTDOWN_IMMEDIATE;
        assert_int_equal(tr_rt_shutdown(s->rt, mode, 0), TR_OK);
        assert_int_equal(tr_rt_block_on(s->rt, NULL, NULL), TR_ESHUTDOWN);
        // Every task accepted so far is done. Spawns still going on are
        // refused; wait for the threads, then check.
        for (unsigned t = 0; t < STORM_THREADS; t++) {
            tu_thread_join(thr[t]);
        }
        assert_int_equal(atomic_load(&s->bad), 0);
        assert_int_equal(atomic_load(&s->accepted) + atomic_load(&s->refused),
                         STORM_THREADS * STORM_SPAWNS);
        // An accepted task dropped once; a refused one once when tr_spawn
        // said TR_ECANCELED (init had run), never when TR_ESHUTDOWN.
        for (unsigned k = 0; k < STORM_THREADS * STORM_SPAWNS; k++) {
            int d = atomic_load(&s->drops[k]);
            if (d != ((s->ok[k] || s->late[k]) ? 1 : 0)) {
                fail_msg("task %u (%s): dropped %d times", k, s->ok[k] ? "accepted" : "refused", d);
            }
        }
        for (unsigned t = 0; t < STORM_THREADS; t++) {
            for (unsigned i = 0; i < s->n[t]; i++) {
                assert_true(tr_join_is_finished(&s->j[t][i]));
                tr_outcome out;
                assert_int_equal(tr_join_wait(&s->j[t][i], &out), TR_OK);
                assert_true(out.err == TR_OK || out.err == TR_ECANCELED);
            }
        }
        tr_rt_stats st = tu_stats(s->rt);
        assert_int_equal(st.spawned, (uint64_t)atomic_load(&s->accepted));
        assert_int_equal(st.completed + st.cancelled, st.spawned);
        print_message("[%s, %s] accepted %d, refused %d, cancelled %llu\n",
                      tr_sched_name(cfg.sched), mode ? "immediate" : "graceful",
                      atomic_load(&s->accepted), atomic_load(&s->refused),
                      (unsigned long long)st.cancelled);
        tu_rt_free_clean(s->rt);
        tu_event_destroy(&s->go);
        tu_event_destroy(&s->quarter);
        free(s);
    }
}

// Runtime-local slots: the first value set wins, a key that was never
// created reads NULL, and tr_rt_free releases the values last set first.
static int local_order[4];
static int local_n;

static void
local_fini(tr_rt *rt, void *value)
{
    (void)rt;
    local_order[local_n++] = *(int *)value;
}

static void
test_exec_local_slots(void **state)
{
    (void)state;
    static tr_rt_key a, b;
    assert_int_equal(tr_rt_key_create(&a, local_fini), TR_OK);
    assert_int_equal(tr_rt_key_create(&b, local_fini), TR_OK);
    assert_int_not_equal(a.id, b.id);
    assert_int_equal(tr_rt_key_create(NULL, local_fini), TR_EINVAL);
    tr_rt *rt = tu_rt_new();
    static int one = 1, two = 2, three = 3;
    assert_null(tr_rt_local_get(rt, a));
    assert_null(tr_rt_local_get(rt, (tr_rt_key){0}));
    assert_null(tr_rt_local_get(rt, (tr_rt_key){TR_RT_LOCAL_MAX + 1}));
    assert_null(tr_rt_local_set(rt, (tr_rt_key){TR_RT_LOCAL_MAX + 1}, &one));
    assert_ptr_equal(tr_rt_local_set(rt, b, &two), &two);
    assert_ptr_equal(tr_rt_local_set(rt, a, &one), &one);
    assert_ptr_equal(tr_rt_local_set(rt, a, &three), &one); // the first stays
    assert_ptr_equal(tr_rt_local_get(rt, a), &one);
    assert_ptr_equal(tr_rt_local_get(rt, b), &two);
    local_n = 0;
    tr_rt_free(rt);
    assert_int_equal(local_n, 2);
    assert_int_equal(local_order[0], 1); // a was set last: released first
    assert_int_equal(local_order[1], 2);
}

// tr_rt_run: a root made and run in one call.
typedef struct run_root {
    uint64_t a, b;
} run_root;

static tr_poll
run_root_poll(void *arg, tr_cx *cx)
{
    run_root *st = arg;
    tr_cx_set_result_u64(cx, st->a * 100 + st->b);
    return TR_READY;
}

static const tr_task_spec run_root_spec = {
    .name = "run.root", .poll = run_root_poll, .size = sizeof(run_root)};

static void
run_root_init(void *state, void *arg)
{
    run_root *st = state;
    st->a = *(uint64_t *)arg;
    st->b = 7;
}

static void
test_exec_run_makes_and_runs_the_root(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_outcome out;
    uint64_t a = 4;
    assert_int_equal(tr_rt_run(rt, &run_root_spec, run_root_init, &a, &out), TR_OK);
    assert_int_equal(out.err, TR_OK);
    assert_int_equal(out.value.u64, 407);
    run_root copy = {.a = 1, .b = 2}; // init NULL: the state is copied
    assert_int_equal(tr_rt_run(rt, &run_root_spec, NULL, &copy, &out), TR_OK);
    assert_int_equal(out.value.u64, 102);
    assert_int_equal(tr_rt_run(rt, &run_root_spec, NULL, NULL, &out), TR_OK); // zeroed
    assert_int_equal(out.value.u64, 0);
    static const tr_task_spec nopoll = {.name = "nopoll", .size = 8};
    assert_int_equal(tr_rt_run(rt, &nopoll, NULL, NULL, &out), TR_EINVAL);
    assert_int_equal(out.err, TR_EINVAL);
    assert_int_equal(tr_rt_shutdown(rt, TR_SHUTDOWN_GRACEFUL, 0), TR_OK);
    a = 9;
    assert_int_equal(tr_rt_run(rt, &run_root_spec, run_root_init, &a, &out), TR_ESHUTDOWN);
    assert_int_equal(out.err, TR_ESHUTDOWN);
    assert_int_equal(a, 9);
    tu_rt_free_clean(rt);
}

// tr_worker_defer: a deferral runs once on the worker, after the run of
// ready tasks that asked for it (so much fewer times than they asked),
// before the runtime returns; off a worker, or while another deferral
// waits, the caller is told to do the work itself.
typedef struct defer_rec {
    unsigned runs;       // the deferred function ran
    unsigned runs_tasks; // of them, while the tasks ran
    unsigned asked;      // polls that asked for it and were told yes
    unsigned refused;    // another function, asked while one waited: no
    unsigned wrong;      // runs off the tasks' worker thread
    pthread_t worker;    // where the tasks ran
    bool last_deferred;  // the root's last poll deferred it
} defer_rec;

static void
defer_fn(void *arg)
{
    defer_rec *d = arg;
    d->runs++;
    if (!pthread_equal(pthread_self(), d->worker)) {
        d->wrong++;
    }
}

static void
defer_other(void *arg)
{
    (void)arg;
}

enum { DEFER_TASKS = 200 };

static tr_poll
defer_task_poll(void *arg, tr_cx *cx)
{
    (void)cx;
    defer_rec *d = *(defer_rec **)arg;
    if (tr_worker_defer(defer_fn, d)) {
        d->asked++;
    }
    if (!tr_worker_defer(defer_other, NULL)) {
        d->refused++;
    }
    return TR_READY;
}

static const tr_task_spec defer_task_spec = {
    .name = "defer.task", .poll = defer_task_poll, .size = sizeof(defer_rec *)};

typedef struct defer_root {
    int tr_pc;
    defer_rec *d;
    tr_join j[DEFER_TASKS];
    unsigned i;
    tr_outcome out;
} defer_root;

static tr_poll
defer_root_poll(void *arg, tr_cx *cx)
{
    defer_root *st = arg;
    TR_BEGIN(st);
    st->d->worker = pthread_self();
    for (st->i = 0; st->i < DEFER_TASKS; st->i++) {
        if (tr_spawn(tr_cx_rt(cx), &defer_task_spec, NULL, &st->d, &st->j[st->i]) != TR_OK) {
            TU_CHECK(false);
        }
    }
    for (st->i = 0; st->i < DEFER_TASKS; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->j[st->i], cx, &st->out));
    }
    // Deferred in the last poll: it runs before tr_rt_run returns.
    st->d->runs_tasks = st->d->runs;
    st->d->runs = 0;
    st->d->last_deferred = tr_worker_defer(defer_fn, st->d);
    TR_END(st);
}

static const tr_task_spec defer_root_spec = {
    .name = "defer.root", .poll = defer_root_poll, .size = sizeof(defer_root)};

static void
test_exec_worker_defer(void **state)
{
    (void)state;
    defer_rec d = {0};
    assert_false(tr_worker_defer(defer_fn, &d)); // a plain thread
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.workers = 1;
    cfg.ignore_env = true;
    tr_rt *rt = tu_rt_new_cfg(&cfg);
    defer_root *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->d = &d;
    assert_int_equal(tr_rt_run(rt, &defer_root_spec, NULL, r, NULL), TR_OK);
    assert_true(d.last_deferred);
    assert_int_equal(d.runs, 1); // the root's, before tr_rt_run returned
    assert_int_equal(d.wrong, 0);
    assert_int_equal(d.asked, DEFER_TASKS);   // yes, or yes already
    assert_int_equal(d.refused, DEFER_TASKS); // another function while it waited
    // Once per run of ready tasks (at most 32 polls), not once per task.
    assert_true(d.runs_tasks >= 1);
    assert_true(d.runs_tasks <= DEFER_TASKS / 32 + 2);
    assert_false(tr_worker_defer(defer_fn, &d)); // not on a worker any more
    free(r);
    tu_rt_free_clean(rt);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exec_new_validates_config),
        cmocka_unit_test(test_exec_worker_defer),
        cmocka_unit_test(test_exec_block_on_returns_root_result),
        cmocka_unit_test(test_exec_block_on_from_task_deadlocks),
        cmocka_unit_test(test_exec_block_on_busy_from_other_thread),
        cmocka_unit_test(test_exec_block_on_twice_keeps_pending_tasks),
        cmocka_unit_test(test_exec_spawn_from_thread_before_block_on),
        cmocka_unit_test(test_exec_spawn_from_thread_during_block_on),
        cmocka_unit_test(test_exec_graceful_shutdown_deadline),
        cmocka_unit_test(test_exec_graceful_shutdown_all_finish),
        cmocka_unit_test(test_exec_immediate_shutdown_cancels_at_once),
        cmocka_unit_test(test_exec_shutdown_from_thread),
        cmocka_unit_test(test_exec_spawn_after_shutdown_fails),
        cmocka_unit_test(test_exec_shutdown_twice),
        cmocka_unit_test(test_exec_block_on_after_shutdown_cancels_root),
        cmocka_unit_test(test_exec_free_with_pending_tasks),
        cmocka_unit_test(test_exec_million_spawns),
        cmocka_unit_test(test_exec_dump_lists_live_tasks),
        cmocka_unit_test(test_exec_dump_from_other_thread),
        cmocka_unit_test(test_exec_state_names),
        cmocka_unit_test(test_exec_idle_runtime_parks),
        cmocka_unit_test(test_exec_start_after_shutdown_refused),
        cmocka_unit_test(test_exec_spawn_one_call),
        cmocka_unit_test(test_exec_start_racing_shutdown_is_carried_out),
        cmocka_unit_test(test_exec_spawn_storm_during_shutdown),
        cmocka_unit_test(test_exec_local_slots),
        cmocka_unit_test(test_exec_run_makes_and_runs_the_root),
    };
    return tu_run_group(tests, group_setup, group_teardown);
}
