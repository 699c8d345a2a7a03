// Tests for tasks (runtime/task/task.c): wakers from the same task, another
// task and plain threads; racing wakes; join handles (await, blocking wait
// from a thread, deadlock detection); inline and boxed results; detaching;
// cancellation by handle and by id and its race with completion; the drop
// function running exactly once on every path; yields; the poll budget.
//
// The runtime has one worker and a FIFO run queue, so a task spawned or
// woken by a running task runs after the ones already queued; the expected
// orders below rely on that. Nothing sleeps: threads wait on semaphores or
// events with bounded timeouts.
//
// Tasks start in one call (tr_spawn, tu_start, tr_rt_run). The two cases
// about a task prepared with tr_task_new and never started (discarded, or
// freed with the runtime) test tr_task_new itself and keep the two steps.
// These tests assert exact FIFO interleavings (spawn, yield once, expect
// the child to have run): the deterministic mode would reorder them.
#define TU_IGNORE_ENV 1
#include "../test_util.h"

#include <sched.h>
#include <semaphore.h>

#include "task/task.h"

// ---------------------------------------------------------------------------
// Helpers.

// A boxed result: heap memory that the joiner owns, or that the runtime
// destroys when nobody collects it.
static atomic_int box_dtor_runs;

typedef struct box {
    uint64_t magic;
} box;

static void
box_dtor(void *p)
{
    box *b = p;
    TU_CHECK(b->magic == 0xb0c5);
    free(b);
    atomic_fetch_add(&box_dtor_runs, 1);
}

typedef struct boxed_task {
    int tr_pc;
    uint32_t yields;
    atomic_int *drops;
} boxed_task;

static tr_poll
boxed_task_poll(void *arg, tr_cx *cx)
{
    boxed_task *st = arg;
    if (st->yields > 0) {
        st->yields--;
        tr_cx_yield(cx);
        return TR_PENDING;
    }
    box *b = malloc(sizeof *b);
    b->magic = 0xb0c5;
    tr_cx_set_result_ptr(cx, b, box_dtor);
    return TR_READY;
}

static void
boxed_task_drop(void *arg)
{
    boxed_task *st = arg;
    if (st->drops != NULL) {
        atomic_fetch_add(st->drops, 1);
    }
}

static const tr_task_spec boxed_spec = {
    .name = "boxed", .poll = boxed_task_poll, .drop = boxed_task_drop, .size = sizeof(boxed_task)};

// spawn starts a task inside a poll, its state a copy of *init (NULL:
// zeroed), with tr_spawn; a failure is recorded (no cmocka asserts there)
// and gives false.
static bool
spawn(tr_cx *cx, const tr_task_spec *spec, const void *init, tr_join *j)
{
    tr_err e = tr_spawn(tr_cx_rt(cx), spec, NULL, (void *)init, j);
    TU_CHECK(e == TR_OK);
    return e == TR_OK;
}

// A generic root that runs a test body as its poll function: tests give it
// their own poll. `arg` points at the test's shared data.
typedef struct root {
    int tr_pc;
    void *arg;
    unsigned k;
    tr_join j, j2, j3;
    tr_outcome out;
    atomic_int polls, drops, polls2, drops2;
    tr_waker w;
    tr_task_id id;
    tr_err rv;
    pthread_t thr, thr2;
    uint64_t tu_deadline;
} root;

// run_root runs poll as the root of a fresh runtime (config cfg, may be
// NULL), checks the root completed, and returns the runtime for the test
// to inspect and free.
static tr_rt *
run_root_cfg(const tr_rt_config *cfg, const tr_task_spec *spec, void *arg, tr_outcome *out)
{
    tr_rt *rt = tu_rt_new_cfg(cfg);
    tr_outcome o;
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    tr_err rv = tr_rt_run(rt, spec, NULL, &(root){.arg = arg}, &o);
    tu_watchdog_stop(&wd);
    assert_int_equal(rv, TR_OK);
    assert_int_equal(o.err, TR_OK);
    if (out != NULL) {
        *out = o;
    } else {
        tr_outcome_fini(&o);
    }
    tu_checks_pass();
    return rt;
}

static tr_rt *
run_root(const tr_task_spec *spec, void *arg)
{
    return run_root_cfg(NULL, spec, arg, NULL);
}

// run_root_fifo: run_root for tests whose assertions depend on FIFO order.
static tr_rt *
run_root_fifo(const tr_task_spec *spec, void *arg)
{
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.ignore_env = true;
    return run_root_cfg(&cfg, spec, arg, NULL);
}

#define ROOT_SPEC(fn)                                 \
    {                                                 \
        .name = #fn, .poll = fn, .size = sizeof(root) \
    }

// ---------------------------------------------------------------------------
// Wakers.

// A task that wakes itself during its poll and returns PENDING five times:
// each of those wakes must lead to another poll.
typedef struct selfwake {
    int tr_pc;
    unsigned n;
} selfwake;

static tr_poll
selfwake_poll(void *arg, tr_cx *cx)
{
    selfwake *st = arg;
    if (st->n == 5) {
        tr_cx_set_result_u64(cx, st->n);
        return TR_READY;
    }
    st->n++;
    tr_wake(tr_cx_waker(cx));
    return TR_PENDING;
}

static const tr_task_spec selfwake_spec = {
    .name = "selfwake", .poll = selfwake_poll, .size = sizeof(selfwake)};

static void
test_task_wake_self_during_poll_not_lost(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_outcome out;
    assert_int_equal(tr_rt_run(rt, &selfwake_spec, NULL, NULL, &out), TR_OK);
    assert_int_equal(out.value.u64, 5);
    tr_rt_stats s = tu_stats(rt);
    assert_int_equal(s.polls, 6);
    tu_rt_free_clean(rt);
}

// wake_other: A waits, B wakes A through the waker A published.
typedef struct waiter {
    int tr_pc;
    tr_waker *publish;
    atomic_int *polls;
} waiter;

static tr_poll
waiter_poll(void *arg, tr_cx *cx)
{
    waiter *st = arg;
    if (atomic_fetch_add(st->polls, 1) == 0) {
        *st->publish = tr_cx_waker(cx);
        return TR_PENDING;
    }
    tr_cx_set_result_u64(cx, 1);
    return TR_READY;
}

static const tr_task_spec waiter_spec = {
    .name = "waiter", .poll = waiter_poll, .size = sizeof(waiter)};

typedef struct waker_of {
    int tr_pc;
    tr_waker *target;
} waker_of;

static tr_poll
waker_of_poll(void *arg, tr_cx *cx)
{
    waker_of *st = arg;
    (void)cx;
    TU_CHECK(st->target->ops != NULL);
    tr_wake(*st->target);
    return TR_READY;
}

static const tr_task_spec waker_of_spec = {
    .name = "waker_of", .poll = waker_of_poll, .size = sizeof(waker_of)};

static tr_poll
wake_other_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    if (!spawn(cx, &waiter_spec, &(waiter){.publish = &st->w, .polls = &st->polls}, &st->j)) {
        TR_RETURN(st);
    }
    if (!spawn(cx, &waker_of_spec, &(waker_of){.target = &st->w}, &st->j2)) {
        TR_RETURN(st);
    }
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_OK && st->out.value.u64 == 1);
    TR_AWAIT(st, tr_join_poll(&st->j2, cx, &st->out));
    TU_CHECK(atomic_load(&st->polls) == 2);
    TR_END(st);
}

static const tr_task_spec wake_other_root_spec = ROOT_SPEC(wake_other_root);

static void
test_task_wake_from_other_task(void **state)
{
    (void)state;
    tu_rt_free_clean(run_root(&wake_other_root_spec, NULL));
}

// wake_thread: the root publishes its waker to a plain thread and waits; the
// thread wakes it (the injector path, unparking the worker).
typedef struct thread_wake {
    sem_t ready;
    tr_waker w;
    atomic_int polls;
    bool timed_out;
} thread_wake;

static void *
thread_wake_main(void *arg)
{
    thread_wake *tw = arg;
    if (!tu_sem_wait_ms(&tw->ready, TU_WAIT_MS)) {
        tw->timed_out = true;
        return NULL;
    }
    tr_wake(tw->w);
    return NULL;
}

static tr_poll
thread_wake_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    thread_wake *tw = st->arg;
    if (atomic_fetch_add(&tw->polls, 1) == 0) {
        tw->w = tr_cx_waker(cx);
        sem_post(&tw->ready);
        return TR_PENDING;
    }
    return TR_READY;
}

static const tr_task_spec thread_wake_root_spec = ROOT_SPEC(thread_wake_root);

static void
test_task_wake_from_thread(void **state)
{
    (void)state;
    thread_wake tw;
    memset(&tw, 0, sizeof tw);
    sem_init(&tw.ready, 0, 0);
    pthread_t t;
    tu_thread_start(&t, thread_wake_main, &tw);
    tr_rt *rt = run_root(&thread_wake_root_spec, &tw);
    tu_thread_join(t);
    assert_false(tw.timed_out);
    assert_int_equal(atomic_load(&tw.polls), 2);
    sem_destroy(&tw.ready);
    tu_rt_free_clean(rt);
}

// wake_finished: waking a task that has completed (its result not yet
// collected), and then one whose slot is freed, does nothing.
typedef struct once {
    int tr_pc;
    tr_waker *publish;
    atomic_int *polls;
    atomic_int *drops;
} once;

static tr_poll
once_poll(void *arg, tr_cx *cx)
{
    once *st = arg;
    atomic_fetch_add(st->polls, 1);
    *st->publish = tr_cx_waker(cx);
    tr_cx_set_result_u64(cx, 11);
    return TR_READY;
}

static void
once_drop(void *arg)
{
    once *st = arg;
    atomic_fetch_add(st->drops, 1);
}

static const tr_task_spec once_spec = {
    .name = "once", .poll = once_poll, .drop = once_drop, .size = sizeof(once)};

static void *
wake_in_thread(void *arg)
{
    tr_wake(*(tr_waker *)arg);
    return NULL;
}

static tr_poll
wake_finished_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    if (!spawn(cx, &once_spec, &(once){.publish = &st->w, .polls = &st->polls, .drops = &st->drops},
               &st->j)) {
        TR_RETURN(st);
    }
    TR_YIELD(st, cx);
    TU_CHECK(tr_join_is_finished(&st->j));
    // Complete, result uncollected: wakes (here and from a thread) do nothing.
    tr_wake(st->w);
    TU_CHECK(pthread_create(&st->thr, NULL, wake_in_thread, &st->w) == 0);
    TU_CHECK(pthread_join(st->thr, NULL) == 0);
    for (st->k = 0; st->k < 3; st->k++) {
        TR_YIELD(st, cx);
    }
    TU_CHECK(atomic_load(&st->polls) == 1);
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_OK && st->out.value.u64 == 11);
    // Freed: stale.
    tr_wake(st->w);
    TU_CHECK(pthread_create(&st->thr, NULL, wake_in_thread, &st->w) == 0);
    TU_CHECK(pthread_join(st->thr, NULL) == 0);
    for (st->k = 0; st->k < 3; st->k++) {
        TR_YIELD(st, cx);
    }
    TU_CHECK(atomic_load(&st->polls) == 1);
    TU_CHECK(atomic_load(&st->drops) == 1);
    TR_END(st);
}

static const tr_task_spec wake_finished_root_spec = ROOT_SPEC(wake_finished_root);

static void
test_task_wake_finished_task_is_noop(void **state)
{
    (void)state;
    tr_rt *rt = run_root(&wake_finished_root_spec, NULL);
    tr_rt_stats s = tu_stats(rt);
    assert_int_equal(s.completed, 2);
    tu_rt_free_clean(rt);
}

// Racing wakes: RW_THREADS threads wake the root RW_WAKES times each while
// it is idle, queued or being polled. Every wake sets at most one flag, so
// the root is never queued twice (a double push would corrupt the FIFO and
// trip the SCHED assertion), never polled concurrently, and polled at most
// once per wake plus its first poll. After the last thread is done it wakes
// once more, so the root sees them all done.

#define RW_THREADS 4
#define RW_WAKES 50000

typedef struct racing {
    tr_waker w;
    pthread_barrier_t start;
    atomic_int in_poll;
    atomic_int overlaps;
    atomic_long polls;
    atomic_long wakes;
    atomic_int done;
    pthread_t thr[RW_THREADS];
    bool started;
} racing;

static void *
racing_thread(void *arg)
{
    racing *rc = arg;
    pthread_barrier_wait(&rc->start);
    for (int i = 0; i < RW_WAKES; i++) {
        atomic_fetch_add(&rc->wakes, 1);
        tr_wake(rc->w);
    }
    atomic_fetch_add(&rc->wakes, 1);
    atomic_fetch_add(&rc->done, 1);
    tr_wake(rc->w);
    return NULL;
}

static tr_poll
racing_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    racing *rc = st->arg;
    if (atomic_exchange(&rc->in_poll, 1) != 0) {
        atomic_fetch_add(&rc->overlaps, 1);
    }
    atomic_fetch_add(&rc->polls, 1);
    tr_poll r = TR_PENDING;
    if (!rc->started) {
        rc->started = true;
        rc->w = tr_cx_waker(cx);
        for (int t = 0; t < RW_THREADS; t++) {
            TU_CHECK(pthread_create(&rc->thr[t], NULL, racing_thread, rc) == 0);
        }
        pthread_barrier_wait(&rc->start);
    } else if (atomic_load(&rc->done) == RW_THREADS) {
        r = TR_READY;
    }
    atomic_store(&rc->in_poll, 0);
    return r;
}

static const tr_task_spec racing_root_spec = ROOT_SPEC(racing_root);

static void
test_task_racing_wakes_single_enqueue(void **state)
{
    (void)state;
    racing *rc = calloc(1, sizeof *rc);
    assert_non_null(rc);
    pthread_barrier_init(&rc->start, NULL, RW_THREADS + 1);
    tr_rt *rt = run_root(&racing_root_spec, rc);
    for (int t = 0; t < RW_THREADS; t++) {
        tu_thread_join(rc->thr[t]);
    }
    long polls = atomic_load(&rc->polls), wakes = atomic_load(&rc->wakes);
    assert_int_equal(atomic_load(&rc->overlaps), 0);
    assert_true(polls >= 2);
    assert_true(polls <= wakes + 1);
    // Wakes coalesce: far fewer polls than wakes is the normal outcome,
    // but nothing here depends on timing.
    tr_rt_stats s = tu_stats(rt);
    assert_int_equal(s.polls, (uint64_t)polls);
    print_message("racing wakes: %ld wakes, %ld polls\n", wakes, polls);
    pthread_barrier_destroy(&rc->start);
    free(rc);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Join handles.

static tr_poll
join_await_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    if (!spawn(cx, &tu_value_spec, TU_VALUE(42, 3, &st->drops), &st->j)) {
        TR_RETURN(st);
    }
    TU_CHECK(!tr_join_is_finished(&st->j));
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_OK);
    TU_CHECK(st->out.value.u64 == 42);
    TU_CHECK(st->out.dtor == NULL);
    // The handle is released and emptied.
    TU_CHECK(tr_join_id(&st->j).id == 0);
    TU_CHECK(tr_join_is_finished(&st->j));
    TU_CHECK(atomic_load(&st->drops) == 1);
    tr_cx_set_result_u64(cx, st->out.value.u64 + 1);
    TR_END(st);
}

static const tr_task_spec join_await_root_spec = ROOT_SPEC(join_await_root);

static void
test_task_join_await(void **state)
{
    (void)state;
    tr_outcome out;
    tr_rt *rt = run_root_cfg(NULL, &join_await_root_spec, NULL, &out);
    assert_int_equal(out.value.u64, 43);
    tu_rt_free_clean(rt);
}

// join_wait from a plain thread while block_on runs on this thread. The
// child completes only once the thread is registered as its joiner (it
// checks the JOIN_WAKER bit of its own slot, white-box), so the blocking
// path of tr_join_wait is the one exercised.
typedef struct jw {
    tr_join j;
    tr_outcome out;
    tr_err rv;
    tu_event joined;
    atomic_bool registered;
} jw;

typedef struct jw_child {
    int tr_pc;
    jw *shared;
    uint64_t deadline;
} jw_child;

static tr_poll
jw_child_poll(void *arg, tr_cx *cx)
{
    jw_child *st = arg;
    uint64_t w = atomic_load(&tr__state_slot(st)->s_word);
    if (st->deadline == 0) {
        st->deadline = tu_deadline(TU_WAIT_MS);
    }
    // Wait (bounded by time) for the plain thread to register as joiner.
    if (!(w & TR__W_JOIN_WAKER) && tu_now_ns() < st->deadline) {
        tr_cx_yield(cx);
        return TR_PENDING;
    }
    atomic_store(&st->shared->registered, (w & TR__W_JOIN_WAKER) != 0);
    tr_cx_set_result_u64(cx, 42);
    return TR_READY;
}

static const tr_task_spec jw_child_spec = {
    .name = "jw_child", .poll = jw_child_poll, .size = sizeof(jw_child)};

static void *
jw_thread(void *arg)
{
    jw *s = arg;
    s->rv = tr_join_wait(&s->j, &s->out);
    tu_event_set(&s->joined);
    return NULL;
}

static tr_poll
jw_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    jw *s = st->arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tu_event_poll(&s->joined, cx));
    TR_END(st);
}

static const tr_task_spec jw_root_spec = ROOT_SPEC(jw_root);

static void
test_task_join_wait_from_thread(void **state)
{
    (void)state;
    jw s;
    memset(&s, 0, sizeof s);
    tu_event_init(&s.joined);
    tr_rt *rt = tu_rt_new();
    // From outside the runtime: a Spawn message.
    tu_start(rt, &jw_child_spec, &(jw_child){.shared = &s}, &s.j);
    pthread_t t;
    tu_thread_start(&t, jw_thread, &s);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    tr_err rv = tr_rt_run(rt, &jw_root_spec, NULL, &(root){.arg = &s}, NULL);
    tu_watchdog_stop(&wd);
    assert_int_equal(rv, TR_OK);
    tu_thread_join(t);
    tu_checks_pass();
    assert_int_equal(s.rv, TR_OK);
    assert_int_equal(s.out.err, TR_OK);
    assert_int_equal(s.out.value.u64, 42);
    assert_int_equal(tr_join_id(&s.j).id, 0);
    assert_true(atomic_load(&s.registered));
    tu_event_destroy(&s.joined);
    tu_rt_free_clean(rt);
}

// tr_join_wait on a worker would block the thread the task needs.
static tr_poll
join_wait_deadlock_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    tr_join before;
    TR_BEGIN(st);
    if (!spawn(cx, &tu_value_spec, &(tu_value_task){.value = 5}, &st->j)) {
        TR_RETURN(st);
    }
    before = st->j;
    st->rv = tr_join_wait(&st->j, &st->out);
    TU_CHECK(st->rv == TR_EDEADLOCK);
    TU_CHECK(tr_join_id(&st->j).id == tr_join_id(&before).id); // left as it was
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_OK && st->out.value.u64 == 5);
    TR_END(st);
}

static const tr_task_spec join_wait_deadlock_root_spec = ROOT_SPEC(join_wait_deadlock_root);

static void
test_task_join_wait_in_task_deadlocks(void **state)
{
    (void)state;
    tu_rt_free_clean(run_root(&join_wait_deadlock_root_spec, NULL));
    // Bad handles.
    tr_join none = TR_JOIN_NONE;
    tr_outcome out;
    assert_int_equal(tr_join_wait(&none, &out), TR_EINVAL);
    assert_int_equal(tr_join_wait(NULL, &out), TR_EINVAL);
    tr_join_release(&none); // no-op
    tr_join_release(NULL);
}

static tr_poll
task_id_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    if (!spawn(cx, &waiter_spec, &(waiter){.publish = &st->w, .polls = &st->polls}, &st->j)) {
        TR_RETURN(st);
    }
    TR_YIELD(st, cx);
    // The child's waker names the task its handle names.
    TU_CHECK((uint64_t)(uintptr_t)st->w.data == tr_join_id(&st->j).id);
    st->id = tr_join_id(&st->j);
    TU_CHECK(st->id.id != 0);
    TU_CHECK(st->id.id != tr_cx_task_id(cx).id);
    tr_wake(st->w);
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TR_END(st);
}

static const tr_task_spec task_id_root_spec = ROOT_SPEC(task_id_root);

// The id a task sees from inside is the one its handle gives.
typedef struct id_child {
    int tr_pc;
    tr_task_id *out;
} id_child;

static tr_poll
id_child_poll(void *arg, tr_cx *cx)
{
    id_child *st = arg;
    *st->out = tr_cx_task_id(cx);
    return TR_READY;
}

static const tr_task_spec id_child_spec = {
    .name = "id_child", .poll = id_child_poll, .size = sizeof(id_child)};

static tr_poll
id_match_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    for (st->k = 0; st->k < 3; st->k++) {
        if (!spawn(cx, &id_child_spec, &(id_child){.out = &st->id}, &st->j)) {
            TR_RETURN(st);
        }
        st->out.value.u64 = tr_join_id(&st->j).id;
        TR_AWAIT(st, tr_join_poll(&st->j, cx, NULL));
        TU_CHECK(st->id.id == st->out.value.u64);
    }
    TR_END(st);
}

static const tr_task_spec id_match_root_spec = ROOT_SPEC(id_match_root);

static void
test_task_id_matches_join_id(void **state)
{
    (void)state;
    tu_rt_free_clean(run_root(&id_match_root_spec, NULL));
    tu_rt_free_clean(run_root_fifo(&task_id_root_spec, NULL));
}

typedef struct ev_task {
    int tr_pc;
    tu_event *ev;
    atomic_int *drops;
} ev_task;

static tr_poll
ev_task_poll(void *arg, tr_cx *cx)
{
    ev_task *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tu_event_poll(st->ev, cx));
    tr_cx_set_result_u64(cx, 3);
    TR_END(st);
}

static void
ev_task_drop(void *arg)
{
    ev_task *st = arg;
    atomic_fetch_add(st->drops, 1);
}

static const tr_task_spec ev_task_spec = {
    .name = "ev_task", .poll = ev_task_poll, .drop = ev_task_drop, .size = sizeof(ev_task)};

// A joiner that is cancelled while it waits: its drop releases the handle
// it holds (as task.h asks). When the joined task completes later, it wakes
// the cancelled joiner's waker, which is stale by then: the task that took
// over the joiner's slot must not be polled by it.
typedef struct joiner {
    int tr_pc;
    tu_event *ev;
    atomic_int *child_drops;
    tr_join child;
} joiner;

static tr_poll
joiner_poll(void *arg, tr_cx *cx)
{
    joiner *st = arg;
    TR_BEGIN(st);
    if (!spawn(cx, &ev_task_spec, &(ev_task){.ev = st->ev, .drops = st->child_drops}, &st->child)) {
        TR_RETURN(st);
    }
    TR_AWAIT(st, tr_join_poll(&st->child, cx, NULL));
    TU_CHECK(!"the joiner should have been cancelled");
    TR_END(st);
}

static void
joiner_drop(void *arg)
{
    joiner *st = arg;
    tr_join_release(&st->child);
}

static const tr_task_spec joiner_spec = {
    .name = "joiner", .poll = joiner_poll, .drop = joiner_drop, .size = sizeof(joiner)};

typedef struct cj_ctx {
    tu_event ev;
    atomic_int child_drops;
    uint64_t joiner_index, next_index;
} cj_ctx;

static tr_poll
cancel_joiner_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    cj_ctx *cj = st->arg;
    TR_BEGIN(st);
    if (!spawn(cx, &joiner_spec, &(joiner){.ev = &cj->ev, .child_drops = &cj->child_drops},
               &st->j)) {
        TR_RETURN(st);
    }
    cj->joiner_index = (uint32_t)tr_join_id(&st->j).id;
    TR_YIELD(st, cx); // the joiner spawns the child and waits for it
    TR_YIELD(st, cx); // the child waits for the event
    TU_CHECK(tr_task_abort(&st->j) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_ECANCELED);
    // A new task, most likely in the joiner's old slot.
    if (!spawn(cx, &tu_stuck_spec, TU_STUCK(&st->polls, &st->drops), &st->j2)) {
        TR_RETURN(st);
    }
    cj->next_index = (uint32_t)tr_join_id(&st->j2).id;
    TR_YIELD(st, cx);
    TU_CHECK(atomic_load(&st->polls) == 1);
    // The child completes and wakes the joiner it had: stale.
    tu_event_set(&cj->ev);
    for (st->k = 0; st->k < 4; st->k++) {
        TR_YIELD(st, cx);
    }
    TU_CHECK(atomic_load(&cj->child_drops) == 1);
    TU_CHECK(atomic_load(&st->polls) == 1);
    TU_CHECK(tu_live(tr_cx_rt(cx)) == 2); // the root and the new task
    TU_CHECK(tr_task_abort(&st->j2) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->j2, cx, NULL));
    TR_END(st);
}

static const tr_task_spec cancel_joiner_root_spec = ROOT_SPEC(cancel_joiner_root);

static void
test_task_cancelled_joiner_releases_handle(void **state)
{
    (void)state;
    cj_ctx cj;
    memset(&cj, 0, sizeof cj);
    tu_event_init(&cj.ev);
    tr_rt *rt = run_root(&cancel_joiner_root_spec, &cj);
    if (cj.joiner_index != cj.next_index) {
        print_message("note: the new task did not reuse the joiner's slot\n");
    }
    tu_rt_free_clean(rt);
    tu_event_destroy(&cj.ev);
}

// A join handle moved from one task to another after the first one awaited
// it: the second registers its own waker in place of the first's, and it
// is the one woken when the task completes.
typedef struct hand_off {
    tr_join j;   // moved from first to second
    tu_event ev; // completes the joined task
    atomic_int first_polls, second_polls;
    atomic_int second_done;
} hand_off;

typedef struct first_joiner {
    int tr_pc;
    hand_off *h;
    tr_outcome out;
} first_joiner;

static tr_poll
first_joiner_poll(void *arg, tr_cx *cx)
{
    first_joiner *st = arg;
    atomic_fetch_add(&st->h->first_polls, 1);
    // Register as the joiner once, then give the handle away and finish.
    TU_CHECK(tr_join_poll(&st->h->j, cx, &st->out) == TR_PENDING);
    return TR_READY;
}

static const tr_task_spec first_joiner_spec = {
    .name = "first_joiner", .poll = first_joiner_poll, .size = sizeof(first_joiner)};

typedef struct second_joiner {
    int tr_pc;
    hand_off *h;
    tr_outcome out;
} second_joiner;

static tr_poll
second_joiner_poll(void *arg, tr_cx *cx)
{
    second_joiner *st = arg;
    atomic_fetch_add(&st->h->second_polls, 1);
    TR_BEGIN(st);
    TR_AWAIT(st, tr_join_poll(&st->h->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_OK && st->out.value.u64 == 3);
    atomic_store(&st->h->second_done, 1);
    TR_END(st);
}

static const tr_task_spec second_joiner_spec = {
    .name = "second_joiner", .poll = second_joiner_poll, .size = sizeof(second_joiner)};

static tr_poll
hand_off_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    hand_off *h = st->arg;
    TR_BEGIN(st);
    if (!spawn(cx, &ev_task_spec, &(ev_task){.ev = &h->ev, .drops = &st->drops}, &h->j)) {
        TR_RETURN(st);
    }
    if (!spawn(cx, &first_joiner_spec, &(first_joiner){.h = h}, &st->j)) {
        TR_RETURN(st);
    }
    TR_AWAIT(st, tr_join_poll(&st->j, cx, NULL)); // first registered, done
    if (!spawn(cx, &second_joiner_spec, &(second_joiner){.h = h}, &st->j2)) {
        TR_RETURN(st);
    }
    TR_YIELD(st, cx); // second registers
    TU_CHECK(atomic_load(&h->second_polls) == 1);
    tu_event_set(&h->ev);
    // Bounded by time: if the second joiner is never woken, report it.
    TU_YIELD_UNTIL(st, cx, atomic_load(&h->second_done));
    TU_CHECK(atomic_load(&h->second_done) == 1);
    TU_CHECK(atomic_load(&h->first_polls) == 1);
    if (!atomic_load(&h->second_done)) {
        tr_task_abort(&st->j2);
    }
    TR_AWAIT(st, tr_join_poll(&st->j2, cx, NULL));
    TR_END(st);
}

static const tr_task_spec hand_off_root_spec = ROOT_SPEC(hand_off_root);

static void
test_task_join_handle_moved_between_tasks(void **state)
{
    (void)state;
    hand_off *h = calloc(1, sizeof *h);
    assert_non_null(h);
    tu_event_init(&h->ev);
    tr_rt *rt = run_root_fifo(&hand_off_root_spec, h);
    assert_int_equal(atomic_load(&h->second_polls), 2);
    tu_rt_free_clean(rt);
    tu_event_destroy(&h->ev);
    free(h);
}

// ---------------------------------------------------------------------------
// Results.

typedef struct inline_task {
    int tr_pc;
} inline_task;

static tr_value
sixteen(unsigned char base)
{
    tr_value v;
    for (int i = 0; i < 16; i++) {
        v.bytes[i] = (unsigned char)(base + i);
    }
    return v;
}

static tr_poll
inline_task_poll(void *arg, tr_cx *cx)
{
    (void)arg;
    tr_cx_set_result(cx, sixteen(0xa0));
    return TR_READY;
}

static const tr_task_spec inline_spec = {
    .name = "inline", .poll = inline_task_poll, .size = sizeof(inline_task)};

static tr_poll
inline_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    tr_value want;
    TR_BEGIN(st);
    if (!spawn(cx, &inline_spec, NULL, &st->j)) {
        TR_RETURN(st);
    }
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    want = sixteen(0xa0);
    TU_CHECK(st->out.err == TR_OK);
    TU_CHECK(st->out.dtor == NULL);
    TU_CHECK(memcmp(st->out.value.bytes, want.bytes, 16) == 0);
    tr_cx_set_result(cx, sixteen(0x10));
    TR_END(st);
}

static const tr_task_spec inline_root_spec = ROOT_SPEC(inline_root);

static void
test_task_result_inline_16_bytes(void **state)
{
    (void)state;
    assert_int_equal(sizeof(tr_value), 16);
    tr_outcome out;
    tr_rt *rt = run_root_cfg(NULL, &inline_root_spec, NULL, &out);
    tr_value want = sixteen(0x10);
    assert_null(out.dtor);
    assert_memory_equal(out.value.bytes, want.bytes, 16);
    tu_rt_free_clean(rt);
}

// The joiner takes a boxed result: pointer and destructor.
static tr_poll
boxed_join_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    if (!spawn(cx, &boxed_spec, &(boxed_task){.yields = 1, .drops = &st->drops}, &st->j)) {
        TR_RETURN(st);
    }
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_OK);
    TU_CHECK(st->out.dtor == box_dtor);
    TU_CHECK(st->out.value.ptr != NULL && ((box *)st->out.value.ptr)->magic == 0xb0c5);
    TU_CHECK(atomic_load(&st->drops) == 1);
    TU_CHECK(atomic_load(&box_dtor_runs) == 0); // the joiner owns it now
    tr_outcome_fini(&st->out);
    TU_CHECK(atomic_load(&box_dtor_runs) == 1);
    TU_CHECK(st->out.dtor == NULL);
    tr_outcome_fini(&st->out); // twice: no double free
    TU_CHECK(atomic_load(&box_dtor_runs) == 1);
    TR_END(st);
}

static const tr_task_spec boxed_join_root_spec = ROOT_SPEC(boxed_join_root);

static void
test_task_result_boxed_joined(void **state)
{
    (void)state;
    atomic_store(&box_dtor_runs, 0);
    tr_rt *rt = run_root(&boxed_join_root_spec, NULL);
    tu_rt_free_clean(rt);
    assert_int_equal(atomic_load(&box_dtor_runs), 1);
}

// Releasing the handle of a completed task destroys its result, once.
static tr_poll
boxed_release_after_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    if (!spawn(cx, &boxed_spec, NULL, &st->j)) {
        TR_RETURN(st);
    }
    TR_YIELD(st, cx);
    TU_CHECK(tr_join_is_finished(&st->j));
    TU_CHECK(atomic_load(&box_dtor_runs) == 0);
    tr_join_release(&st->j);
    TU_CHECK(tr_join_id(&st->j).id == 0);
    TU_CHECK(atomic_load(&box_dtor_runs) == 1);
    TR_END(st);
}

static const tr_task_spec boxed_release_after_root_spec = ROOT_SPEC(boxed_release_after_root);

// Releasing it before completion: the result is destroyed when it comes.
static tr_poll
boxed_release_before_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    if (!spawn(cx, &boxed_spec, &(boxed_task){.yields = 2, .drops = &st->drops}, &st->j)) {
        TR_RETURN(st);
    }
    tr_join_release(&st->j);
    for (st->k = 0; st->k < 5; st->k++) {
        TR_YIELD(st, cx);
    }
    TU_CHECK(atomic_load(&st->drops) == 1);
    TU_CHECK(atomic_load(&box_dtor_runs) == 1);
    TR_END(st);
}

static const tr_task_spec boxed_release_before_root_spec = ROOT_SPEC(boxed_release_before_root);

static void
test_task_result_boxed_released_unjoined(void **state)
{
    (void)state;
    atomic_store(&box_dtor_runs, 0);
    tu_rt_free_clean(run_root(&boxed_release_after_root_spec, NULL));
    assert_int_equal(atomic_load(&box_dtor_runs), 1);
    atomic_store(&box_dtor_runs, 0);
    tu_rt_free_clean(run_root(&boxed_release_before_root_spec, NULL));
    assert_int_equal(atomic_load(&box_dtor_runs), 1);
    // Released from a plain thread (here, main) after completion.
    atomic_store(&box_dtor_runs, 0);
    tr_rt *rt = tu_rt_new();
    tr_join j;
    tu_start(rt, &boxed_spec, NULL, &j);
    tu_block_until(rt, tu_pred_finished, &j);
    assert_int_equal(atomic_load(&box_dtor_runs), 0);
    tr_join_release(&j);
    assert_int_equal(atomic_load(&box_dtor_runs), 1);
    tu_rt_free_clean(rt);
    assert_int_equal(atomic_load(&box_dtor_runs), 1);
}

// A result nobody collected is destroyed by tr_rt_free, once.
static void
test_task_result_boxed_destroyed_by_rt_free(void **state)
{
    (void)state;
    atomic_store(&box_dtor_runs, 0);
    tr_rt *rt = tu_rt_new();
    tr_join j;
    tu_start(rt, &boxed_spec, NULL, &j);
    tu_block_until(rt, tu_pred_finished, &j);
    assert_int_equal(tu_live(rt), 1);
    assert_int_equal(atomic_load(&box_dtor_runs), 0);
    tr_rt_free(rt); // j becomes invalid
    assert_int_equal(atomic_load(&box_dtor_runs), 1);
}

// The root's boxed result goes to block_on's caller, or is destroyed when
// the caller passes no outcome.
static void
test_task_result_boxed_root(void **state)
{
    (void)state;
    atomic_store(&box_dtor_runs, 0);
    tr_rt *rt = tu_rt_new();
    tr_outcome out;
    assert_int_equal(tr_rt_run(rt, &boxed_spec, NULL, NULL, &out), TR_OK);
    assert_int_equal(out.err, TR_OK);
    assert_ptr_equal(out.dtor, box_dtor);
    assert_int_equal(((box *)out.value.ptr)->magic, 0xb0c5);
    assert_int_equal(atomic_load(&box_dtor_runs), 0);
    tr_outcome_fini(&out);
    assert_int_equal(atomic_load(&box_dtor_runs), 1);
    assert_int_equal(tr_rt_run(rt, &boxed_spec, NULL, NULL, NULL), TR_OK);
    assert_int_equal(atomic_load(&box_dtor_runs), 2);
    tu_rt_free_clean(rt);
    assert_int_equal(atomic_load(&box_dtor_runs), 2);
    tu_checks_pass();
}

// ---------------------------------------------------------------------------
// Detaching.

static tr_poll
release_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    tu_event *ev = st->arg;
    TR_BEGIN(st);
    if (!spawn(cx, &ev_task_spec, &(ev_task){.ev = ev, .drops = &st->drops}, &st->j)) {
        TR_RETURN(st);
    }
    TR_YIELD(st, cx); // the child waits on the event
    tr_join_release(&st->j);
    TU_CHECK(tr_join_id(&st->j).id == 0);
    TU_CHECK(tu_live(tr_cx_rt(cx)) == 2); // still running on its own
    TU_CHECK(atomic_load(&st->drops) == 0);
    tu_event_set(ev);
    TR_YIELD(st, cx);
    TU_CHECK(atomic_load(&st->drops) == 1);
    TU_CHECK(tu_live(tr_cx_rt(cx)) == 1); // its slot is freed
    TR_END(st);
}

static const tr_task_spec release_root_spec = ROOT_SPEC(release_root);

static void
test_task_release_detaches(void **state)
{
    (void)state;
    tu_event ev;
    tu_event_init(&ev);
    tr_rt *rt = run_root_fifo(&release_root_spec, &ev);
    tr_rt_stats s = tu_stats(rt);
    assert_int_equal(s.completed, 2);
    assert_int_equal(s.cancelled, 0);
    tu_rt_free_clean(rt);
    tu_event_destroy(&ev);
}

// ---------------------------------------------------------------------------
// Cancellation.

enum cancel_how { BY_HANDLE, BY_ID };

static tr_poll
cancel_pending_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    enum cancel_how how = *(enum cancel_how *)st->arg;
    TR_BEGIN(st);
    if (!spawn(cx, &tu_stuck_spec, TU_STUCK(&st->polls, &st->drops), &st->j)) {
        TR_RETURN(st);
    }
    st->id = tr_join_id(&st->j);
    TR_YIELD(st, cx);
    TU_CHECK(atomic_load(&st->polls) == 1); // pending, idle
    st->rv = how == BY_HANDLE ? tr_task_abort(&st->j) : tr_task_cancel(tr_cx_rt(cx), st->id);
    TU_CHECK(st->rv == TR_OK);
    // Asking again is fine: the cancel is already requested.
    st->rv = how == BY_HANDLE ? tr_task_abort(&st->j) : tr_task_cancel(tr_cx_rt(cx), st->id);
    TU_CHECK(st->rv == TR_OK);
    TU_CHECK(atomic_load(&st->drops) == 0); // carried out by the worker later
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_ECANCELED);
    TU_CHECK(atomic_load(&st->drops) == 1);
    TU_CHECK(atomic_load(&st->polls) == 1); // drop ran instead of poll
    // Gone now.
    TU_CHECK(tr_task_cancel(tr_cx_rt(cx), st->id) == TR_ENOTFOUND);
    TU_CHECK(tr_task_abort(&st->j) == TR_EINVAL); // emptied handle
    TR_END(st);
}

static const tr_task_spec cancel_pending_root_spec = ROOT_SPEC(cancel_pending_root);

static void
test_task_cancel_pending(void **state)
{
    (void)state;
    enum cancel_how how[] = {BY_HANDLE, BY_ID};
    for (int i = 0; i < 2; i++) {
        tr_rt *rt = run_root(&cancel_pending_root_spec, &how[i]);
        tr_rt_stats s = tu_stats(rt);
        assert_int_equal(s.cancelled, 1);
        assert_int_equal(s.completed, 1);
        tu_rt_free_clean(rt);
    }
}

// Cancelled before it was ever polled: the drop runs, the poll never does.
static tr_poll
cancel_unpolled_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    if (!spawn(cx, &tu_stuck_spec, TU_STUCK(&st->polls, &st->drops), &st->j)) {
        TR_RETURN(st);
    }
    TU_CHECK(tr_task_abort(&st->j) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_ECANCELED);
    TU_CHECK(atomic_load(&st->polls) == 0);
    TU_CHECK(atomic_load(&st->drops) == 1);
    TR_END(st);
}

static const tr_task_spec cancel_unpolled_root_spec = ROOT_SPEC(cancel_unpolled_root);

static void
test_task_cancel_before_first_poll(void **state)
{
    (void)state;
    tu_rt_free_clean(run_root(&cancel_unpolled_root_spec, NULL));
}

// Cancel from a plain thread (a Cancel message to the executor).
typedef struct thread_cancel {
    tr_rt *rt;
    tr_task_id id;
    sem_t go;
    tr_err rv;
    bool timed_out;
} thread_cancel;

static void *
thread_cancel_main(void *arg)
{
    thread_cancel *tc = arg;
    if (!tu_sem_wait_ms(&tc->go, TU_WAIT_MS)) {
        tc->timed_out = true;
        return NULL;
    }
    tc->rv = tr_task_cancel(tc->rt, tc->id);
    return NULL;
}

static tr_poll
cancel_thread_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    thread_cancel *tc = st->arg;
    TR_BEGIN(st);
    if (!spawn(cx, &tu_stuck_spec, TU_STUCK(&st->polls, &st->drops), &st->j)) {
        TR_RETURN(st);
    }
    TR_YIELD(st, cx);
    tc->id = tr_join_id(&st->j);
    sem_post(&tc->go);
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_ECANCELED);
    TU_CHECK(atomic_load(&st->polls) == 1);
    TU_CHECK(atomic_load(&st->drops) == 1);
    TR_END(st);
}

static const tr_task_spec cancel_thread_root_spec = ROOT_SPEC(cancel_thread_root);

static void
test_task_cancel_from_thread(void **state)
{
    (void)state;
    thread_cancel tc;
    memset(&tc, 0, sizeof tc);
    sem_init(&tc.go, 0, 0);
    tr_rt *rt = tu_rt_new();
    tc.rt = rt;
    pthread_t t;
    tu_thread_start(&t, thread_cancel_main, &tc);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    tr_err rv = tr_rt_run(rt, &cancel_thread_root_spec, NULL, &(root){.arg = &tc}, NULL);
    tu_watchdog_stop(&wd);
    assert_int_equal(rv, TR_OK);
    tu_thread_join(t);
    tu_checks_pass();
    assert_false(tc.timed_out);
    assert_int_equal(tc.rv, TR_OK);
    assert_true(tu_stats(rt).commands >= 1);
    sem_destroy(&tc.go);
    tu_rt_free_clean(rt);
}

// Completion wins: a task cancelled during its final poll keeps its result.
// First the task cancels itself; then a plain thread cancels it while the
// worker is inside the poll.
typedef struct final_poll {
    int tr_pc;
    bool self;
    thread_cancel *tc; // for !self
    sem_t *in_poll, *cancelled;
    tr_err *rv;
    atomic_int *drops;
} final_poll;

static tr_poll
final_poll_poll(void *arg, tr_cx *cx)
{
    final_poll *st = arg;
    if (st->self) {
        *st->rv = tr_task_cancel(tr_cx_rt(cx), tr_cx_task_id(cx));
    } else {
        st->tc->id = tr_cx_task_id(cx);
        sem_post(st->in_poll);
        TU_CHECK(tu_sem_wait_ms(st->cancelled, TU_WAIT_MS));
    }
    tr_cx_set_result_u64(cx, 77);
    return TR_READY;
}

static void
final_poll_drop(void *arg)
{
    final_poll *st = arg;
    atomic_fetch_add(st->drops, 1);
}

static const tr_task_spec final_poll_spec = {.name = "final_poll",
                                             .poll = final_poll_poll,
                                             .drop = final_poll_drop,
                                             .size = sizeof(final_poll)};

typedef struct race_ctx {
    thread_cancel tc;
    sem_t in_poll, cancelled;
    bool self;
} race_ctx;

static void *
race_cancel_thread(void *arg)
{
    race_ctx *rc = arg;
    if (!tu_sem_wait_ms(&rc->in_poll, TU_WAIT_MS)) {
        rc->tc.timed_out = true;
    } else {
        rc->tc.rv = tr_task_cancel(rc->tc.rt, rc->tc.id);
    }
    sem_post(&rc->cancelled);
    return NULL;
}

static tr_poll
race_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    race_ctx *rc = st->arg;
    TR_BEGIN(st);
    if (!spawn(cx, &final_poll_spec,
               &(final_poll){.self = rc->self,
                             .tc = &rc->tc,
                             .in_poll = &rc->in_poll,
                             .cancelled = &rc->cancelled,
                             .rv = &st->rv,
                             .drops = &st->drops},
               &st->j)) {
        TR_RETURN(st);
    }
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_OK);
    TU_CHECK(st->out.value.u64 == 77);
    TU_CHECK(atomic_load(&st->drops) == 1);
    if (rc->self) {
        TU_CHECK(st->rv == TR_OK);
    }
    TR_END(st);
}

static const tr_task_spec race_root_spec = ROOT_SPEC(race_root);

static void
test_task_cancel_racing_completion(void **state)
{
    (void)state;
    for (int self = 1; self >= 0; self--) {
        race_ctx rc;
        memset(&rc, 0, sizeof rc);
        rc.self = self;
        sem_init(&rc.in_poll, 0, 0);
        sem_init(&rc.cancelled, 0, 0);
        tr_rt *rt = tu_rt_new();
        rc.tc.rt = rt;
        pthread_t t;
        if (!self) {
            tu_thread_start(&t, race_cancel_thread, &rc);
        }
        tu_watchdog wd;
        tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
        tr_err rv = tr_rt_run(rt, &race_root_spec, NULL, &(root){.arg = &rc}, NULL);
        tu_watchdog_stop(&wd);
        assert_int_equal(rv, TR_OK);
        if (!self) {
            tu_thread_join(t);
            assert_false(rc.tc.timed_out);
            // The thread asked while the task was running: accepted.
            assert_int_equal(rc.tc.rv, TR_OK);
        }
        tu_checks_pass();
        tr_rt_stats s = tu_stats(rt);
        assert_int_equal(s.cancelled, 0);
        assert_int_equal(s.completed, 2);
        sem_destroy(&rc.in_poll);
        sem_destroy(&rc.cancelled);
        tu_rt_free_clean(rt);
    }
}

// Cancelled while it sits in the injector (woken by a plain thread, not yet
// taken by the worker): the cancel finds it queued, and the worker carries
// it out when it takes the task; the poll function does not run again.
typedef struct pub_stuck {
    int tr_pc;
    tr_waker *publish;
    atomic_int *polls;
    atomic_int *drops;
} pub_stuck;

static tr_poll
pub_stuck_poll(void *arg, tr_cx *cx)
{
    pub_stuck *st = arg;
    atomic_fetch_add(st->polls, 1);
    *st->publish = tr_cx_waker(cx);
    return TR_PENDING;
}

static void
pub_stuck_drop(void *arg)
{
    pub_stuck *st = arg;
    atomic_fetch_add(st->drops, 1);
}

static const tr_task_spec pub_stuck_spec = {
    .name = "pub_stuck", .poll = pub_stuck_poll, .drop = pub_stuck_drop, .size = sizeof(pub_stuck)};

static tr_poll
cancel_injected_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    if (!spawn(cx, &pub_stuck_spec,
               &(pub_stuck){.publish = &st->w, .polls = &st->polls, .drops = &st->drops}, &st->j)) {
        TR_RETURN(st);
    }
    TR_YIELD(st, cx); // the child polls once and waits
    TU_CHECK(atomic_load(&st->polls) == 1);
    // Wake it from a plain thread and wait for that thread: the wake has
    // gone into the injector, which the worker has not drained yet.
    TU_CHECK(pthread_create(&st->thr, NULL, wake_in_thread, &st->w) == 0);
    TU_CHECK(pthread_join(st->thr, NULL) == 0);
    TU_CHECK(tr_task_abort(&st->j) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_ECANCELED);
    TU_CHECK(atomic_load(&st->polls) == 1);
    TU_CHECK(atomic_load(&st->drops) == 1);
    TR_END(st);
}

static const tr_task_spec cancel_injected_root_spec = ROOT_SPEC(cancel_injected_root);

static void
test_task_cancel_while_injected(void **state)
{
    (void)state;
    tu_rt_free_clean(run_root(&cancel_injected_root_spec, NULL));
}

// Stress: plain threads cancel tasks by id while the tasks run to their
// end. Each task ends exactly once, either completed (with its own result)
// or cancelled, and its drop runs exactly once either way.
#define CS_TASKS 3000
#define CS_THREADS 2 // st->thr and st->thr2

typedef struct cancel_stress {
    tr_rt *rt;
    tr_task_id ids[CS_TASKS];
    atomic_int published; // ids[0 .. published) are valid (release/acquire)
    atomic_int drops;
    atomic_int cancel_ok;
    atomic_int bad_rv;
    tr_join joins[CS_TASKS];
    unsigned ok, cancelled, wrong;
} cancel_stress;

static void *
cancel_stress_thread(void *arg)
{
    cancel_stress *cs = arg;
    int next = 0;
    uint64_t deadline = tu_now_ns() + (uint64_t)TU_WAIT_MS * 1000000u;
    while (next < CS_TASKS && tu_now_ns() < deadline) {
        int n = atomic_load_explicit(&cs->published, memory_order_acquire);
        for (; next < n; next++) {
            tr_err rv = tr_task_cancel(cs->rt, cs->ids[next]);
            if (rv == TR_OK) {
                atomic_fetch_add(&cs->cancel_ok, 1);
            } else if (rv != TR_EFINISHED && rv != TR_ENOTFOUND) {
                atomic_fetch_add(&cs->bad_rv, 1);
            }
        }
        sched_yield();
    }
    return NULL;
}

static tr_poll
cancel_stress_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    cancel_stress *cs = st->arg;
    TR_BEGIN(st);
    for (st->k = 0; st->k < CS_THREADS; st->k++) {
        TU_CHECK(
            pthread_create(st->k == 0 ? &st->thr : &st->thr2, NULL, cancel_stress_thread, cs) == 0);
    }
    for (st->k = 0; st->k < CS_TASKS; st->k++) {
        if (!spawn(cx, &tu_value_spec, TU_VALUE(st->k, st->k % 5, &cs->drops), &cs->joins[st->k])) {
            TR_RETURN(st);
        }
        cs->ids[st->k] = tr_join_id(&cs->joins[st->k]);
        atomic_store_explicit(&cs->published, (int)st->k + 1, memory_order_release);
        if (st->k % 16 == 15) {
            TR_YIELD(st, cx);
        }
    }
    for (st->k = 0; st->k < CS_TASKS; st->k++) {
        TR_AWAIT(st, tr_join_poll(&cs->joins[st->k], cx, &st->out));
        if (st->out.err == TR_OK) {
            cs->ok++;
            if (st->out.value.u64 != st->k) {
                cs->wrong++;
            }
        } else if (st->out.err == TR_ECANCELED) {
            cs->cancelled++;
        } else {
            cs->wrong++;
        }
    }
    TU_CHECK(pthread_join(st->thr, NULL) == 0);
    TU_CHECK(pthread_join(st->thr2, NULL) == 0);
    TR_END(st);
}

static const tr_task_spec cancel_stress_root_spec = ROOT_SPEC(cancel_stress_root);

static void
test_task_cancel_stress_drop_once(void **state)
{
    (void)state;
    cancel_stress *cs = calloc(1, sizeof *cs);
    assert_non_null(cs);
    tr_rt *rt = tu_rt_new();
    cs->rt = rt;
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    tr_err rv = tr_rt_run(rt, &cancel_stress_root_spec, NULL, &(root){.arg = cs}, NULL);
    tu_watchdog_stop(&wd);
    assert_int_equal(rv, TR_OK);
    tu_checks_pass();
    assert_int_equal(atomic_load(&cs->bad_rv), 0);
    assert_int_equal(cs->wrong, 0);
    assert_int_equal(cs->ok + cs->cancelled, CS_TASKS);
    assert_int_equal(atomic_load(&cs->drops), CS_TASKS);
    // Every cancelled task had a cancel accepted (TR_OK) for it.
    assert_true((unsigned)atomic_load(&cs->cancel_ok) >= cs->cancelled);
    tr_rt_stats st = tu_stats(rt);
    assert_int_equal(st.cancelled, cs->cancelled);
    assert_int_equal(st.completed, cs->ok + 1);
    print_message("cancel stress: %u completed, %u cancelled, %d cancels accepted\n", cs->ok,
                  cs->cancelled, atomic_load(&cs->cancel_ok));
    tu_rt_free_clean(rt);
    free(cs);
}

// Cancelling a task that has completed: TR_EFINISHED while its handle
// holds it, TR_ENOTFOUND once it is gone.
static tr_poll
cancel_after_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    if (!spawn(cx, &tu_value_spec, &(tu_value_task){.value = 8, .drops = &st->drops}, &st->j)) {
        TR_RETURN(st);
    }
    st->id = tr_join_id(&st->j);
    TR_YIELD(st, cx);
    TU_CHECK(tr_join_is_finished(&st->j));
    TU_CHECK(tr_task_abort(&st->j) == TR_EFINISHED);
    TU_CHECK(tr_task_cancel(tr_cx_rt(cx), st->id) == TR_EFINISHED);
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_OK && st->out.value.u64 == 8);
    TU_CHECK(tr_task_cancel(tr_cx_rt(cx), st->id) == TR_ENOTFOUND);
    TU_CHECK(atomic_load(&st->drops) == 1);
    TR_END(st);
}

static const tr_task_spec cancel_after_root_spec = ROOT_SPEC(cancel_after_root);

static void
test_task_cancel_after_complete(void **state)
{
    (void)state;
    tr_rt *rt = run_root(&cancel_after_root_spec, NULL);
    // From a plain thread too (main, outside block_on): gone.
    assert_int_equal(tr_task_cancel(rt, (tr_task_id){1}), TR_ENOTFOUND);
    assert_int_equal(tr_task_cancel(NULL, (tr_task_id){1}), TR_EINVAL);
    tr_join none = TR_JOIN_NONE;
    assert_int_equal(tr_task_abort(&none), TR_EINVAL);
    assert_int_equal(tr_task_abort(NULL), TR_EINVAL);
    tu_rt_free_clean(rt);
}

// Completed but held by a handle, cancelled from a plain thread: finished.
static void
test_task_cancel_after_complete_from_thread(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    atomic_int drops = 0;
    tr_join j;
    tu_start(rt, &tu_value_spec, TU_VALUE(6, 0, &drops), &j);
    tu_block_until(rt, tu_pred_finished, &j);
    assert_int_equal(tr_task_abort(&j), TR_EFINISHED);
    assert_int_equal(tr_task_cancel(rt, tr_join_id(&j)), TR_EFINISHED);
    tr_outcome out;
    assert_int_equal(tr_join_wait(&j, &out), TR_OK);
    assert_int_equal(out.err, TR_OK);
    assert_int_equal(out.value.u64, 6);
    assert_int_equal(atomic_load(&drops), 1);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// The drop function runs exactly once on every path.

static void
test_task_drop_once_after_ready(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    atomic_int drops_joined = 0, drops_detached = 0;
    tr_join ja;
    tu_start(rt, &tu_value_spec, TU_VALUE(1, 2, &drops_joined), &ja);
    tu_start(rt, &tu_value_spec, TU_VALUE(2, 2, &drops_detached), NULL);
    tu_atleast al = {&drops_detached, 1};
    tu_block_until(rt, tu_pred_atleast, &al);
    assert_true(tr_join_is_finished(&ja));
    assert_int_equal(atomic_load(&drops_joined), 1);
    assert_int_equal(atomic_load(&drops_detached), 1);
    tr_outcome out;
    assert_int_equal(tr_join_wait(&ja, &out), TR_OK);
    assert_int_equal(out.value.u64, 1);
    tu_rt_free_clean(rt);
    assert_int_equal(atomic_load(&drops_joined), 1);
    assert_int_equal(atomic_load(&drops_detached), 1);
}

static void
test_task_drop_once_on_cancel(void **state)
{
    (void)state;
    // cancel_pending_root checks drops == 1 after a double cancel; here the
    // runtime is freed afterwards too, which must not drop again.
    enum cancel_how how = BY_HANDLE;
    tr_rt *rt = tu_rt_new();
    assert_int_equal(tr_rt_run(rt, &cancel_pending_root_spec, NULL, &(root){.arg = &how}, NULL),
                     TR_OK);
    tu_checks_pass();
    tu_rt_free_clean(rt);
}

// Shutdown of tasks that never ran: freed without block_on, or cancelled by
// an immediate shutdown before block_on.
static void
test_task_drop_once_shutdown_never_run(void **state)
{
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        atomic_int polls = 0, drops = 0;
        tr_rt *rt = tu_rt_new();
        tu_start(rt, &tu_stuck_spec, TU_STUCK(&polls, &drops), NULL);
        tr_join jb;
        tu_start(rt, &tu_stuck_spec, TU_STUCK(&polls, &drops), &jb);
        if (mode == 1) {
            assert_int_equal(tr_rt_shutdown(rt, TR_SHUTDOWN_IMMEDIATE, 0), TR_OK);
            assert_int_equal(tr_rt_block_on(rt, NULL, NULL), TR_ESHUTDOWN);
            assert_int_equal(atomic_load(&drops), 2);
            tr_outcome out;
            assert_int_equal(tr_join_wait(&jb, &out), TR_OK);
            assert_int_equal(out.err, TR_ECANCELED);
        }
        tr_rt_free(rt);
        assert_int_equal(atomic_load(&polls), 0);
        assert_int_equal(atomic_load(&drops), 2);
    }
}

// Shutdown of a task that is pending (polled, waiting): tr_rt_free cancels
// it; a prepared task that was never started is not dropped.
static void
test_task_drop_once_shutdown_pending(void **state)
{
    (void)state;
    atomic_int polls = 0, drops = 0, prep_drops = 0;
    tr_rt *rt = tu_rt_new();
    tr_join ja;
    tu_start(rt, &tu_stuck_spec, TU_STUCK(&polls, &drops), &ja);
    tu_start(rt, &tu_stuck_spec, TU_STUCK(&polls, &drops), NULL);
    tu_stuck *prepared = tu_stuck_new(rt, NULL, &prep_drops); // tests tr_task_new itself
    (void)prepared;
    tu_atleast al = {&polls, 2};
    tu_block_until(rt, tu_pred_atleast, &al);
    assert_int_equal(atomic_load(&polls), 2);
    assert_int_equal(atomic_load(&drops), 0);
    assert_int_equal(tu_live(rt), 3);
    tr_rt_free(rt);
    assert_int_equal(atomic_load(&polls), 2);
    assert_int_equal(atomic_load(&drops), 2);
    assert_int_equal(atomic_load(&prep_drops), 0);
}

static void
test_task_discard_skips_drop(void **state)
{
    (void)state;
    atomic_int drops = 0;
    tr_rt *rt = tu_rt_new();
    tu_stuck *a = tu_stuck_new(rt, NULL, &drops); // tests tr_task_new/discard itself
    assert_int_equal(tu_live(rt), 1);
    tr_task_discard(a);
    assert_int_equal(tu_live(rt), 0);
    tu_rt_free_clean(rt);
    assert_int_equal(atomic_load(&drops), 0);
}

// ---------------------------------------------------------------------------
// Yield and the budget.

typedef struct yielder {
    int tr_pc;
    char name;
    unsigned i;
    char *log;
    size_t *len;
} yielder;

static tr_poll
yielder_poll(void *arg, tr_cx *cx)
{
    yielder *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < 3; st->i++) {
        st->log[(*st->len)++] = st->name;
        TR_YIELD(st, cx);
    }
    TR_END(st);
}

static const tr_task_spec yielder_spec = {
    .name = "yielder", .poll = yielder_poll, .size = sizeof(yielder)};

typedef struct interleave {
    char log[32];
    size_t len;
} interleave;

static tr_poll
yield_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    interleave *il = st->arg;
    TR_BEGIN(st);
    for (st->k = 0; st->k < 3; st->k++) {
        if (!spawn(cx, &yielder_spec,
                   &(yielder){.name = (char)('A' + st->k), .log = il->log, .len = &il->len},
                   st->k == 0   ? &st->j
                   : st->k == 1 ? &st->j2
                                : &st->j3)) {
            TR_RETURN(st);
        }
    }
    TR_AWAIT(st, tr_join_poll(&st->j, cx, NULL));
    TR_AWAIT(st, tr_join_poll(&st->j2, cx, NULL));
    TR_AWAIT(st, tr_join_poll(&st->j3, cx, NULL));
    TR_END(st);
}

static const tr_task_spec yield_root_spec = ROOT_SPEC(yield_root);

static void
test_task_yield_interleaves(void **state)
{
    (void)state;
    interleave il;
    memset(&il, 0, sizeof il);
    tu_rt_free_clean(run_root_fifo(&yield_root_spec, &il));
    assert_string_equal(il.log, "ABCABCABC");
}

// Spend the budget until it runs out, twice (a new poll, a new budget).
typedef struct spender {
    unsigned counts[2];
    uint32_t initial[2];
    uint32_t left_after;
    bool spent_again; // spending after false stays false
} spender;

static tr_poll
spend_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    spender *sp = st->arg;
    unsigned n = 0;
    if (st->k < 2) {
        sp->initial[st->k] = tr_cx_budget(cx);
        while (tr_cx_budget_spend(cx)) {
            n++;
        }
        sp->counts[st->k] = n;
        sp->left_after = tr_cx_budget(cx);
        sp->spent_again = tr_cx_budget_spend(cx);
        st->k++;
        return TR_PENDING; // required after false: the task was re-woken
    }
    return TR_READY;
}

static const tr_task_spec spend_root_spec = ROOT_SPEC(spend_root);

static void
test_task_budget_default_128(void **state)
{
    (void)state;
    spender sp;
    memset(&sp, 0, sizeof sp);
    tr_rt *rt = run_root(&spend_root_spec, &sp);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sp.initial[i], 128);
        assert_int_equal(sp.counts[i], 128);
    }
    assert_int_equal(sp.left_after, 0);
    assert_false(sp.spent_again);
    // Returning PENDING after a false spend is enough to be polled again.
    assert_int_equal(tu_stats(rt).polls, 3);
    tu_rt_free_clean(rt);
}

static void
test_task_budget_custom(void **state)
{
    (void)state;
    tr_rt_config cfg;
    tu_config_init(&cfg);
    assert_int_equal(cfg.budget, 128);
    cfg.budget = 5;
    spender sp;
    memset(&sp, 0, sizeof sp);
    tr_rt *rt = run_root_cfg(&cfg, &spend_root_spec, &sp, NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sp.initial[i], 5);
        assert_int_equal(sp.counts[i], 5);
    }
    tu_rt_free_clean(rt);
    cfg.budget = 0;
    tr_rt *bad = NULL;
    assert_int_equal(tr_rt_new(&cfg, &bad), TR_EINVAL);
}

// A busy task that never awaits anything external, only spends budget,
// lets another task run: the other task sets the flag the busy one waits
// for, which it could never see without the forced yield.
typedef struct busy {
    int tr_pc;
    bool *flag;
    atomic_int *polls;
    uint64_t spins;
} busy;

static tr_poll
busy_poll(void *arg, tr_cx *cx)
{
    busy *st = arg;
    atomic_fetch_add(st->polls, 1);
    while (tr_cx_budget_spend(cx)) {
        st->spins++;
        if (*st->flag) {
            tr_cx_set_result_u64(cx, st->spins);
            return TR_READY;
        }
    }
    return TR_PENDING;
}

static const tr_task_spec busy_spec = {.name = "busy", .poll = busy_poll, .size = sizeof(busy)};

typedef struct flagger {
    int tr_pc;
    bool *flag;
} flagger;

static tr_poll
flagger_poll(void *arg, tr_cx *cx)
{
    flagger *st = arg;
    (void)cx;
    *st->flag = true;
    return TR_READY;
}

static const tr_task_spec flagger_spec = {
    .name = "flagger", .poll = flagger_poll, .size = sizeof(flagger)};

typedef struct busy_ctx {
    bool flag;
} busy_ctx;

static tr_poll
busy_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    busy_ctx *bc = st->arg;
    TR_BEGIN(st);
    if (!spawn(cx, &busy_spec, &(busy){.flag = &bc->flag, .polls = &st->polls}, &st->j)) {
        TR_RETURN(st);
    }
    if (!spawn(cx, &flagger_spec, &(flagger){.flag = &bc->flag}, &st->j2)) {
        TR_RETURN(st);
    }
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.value.u64 == 129); // 128 spins, then one in the next poll
    TU_CHECK(atomic_load(&st->polls) == 2);
    TR_AWAIT(st, tr_join_poll(&st->j2, cx, NULL));
    TR_END(st);
}

static const tr_task_spec busy_root_spec = ROOT_SPEC(busy_root);

static void
test_task_budget_lets_other_task_run(void **state)
{
    (void)state;
    busy_ctx bc = {false};
    tu_rt_free_clean(run_root(&busy_root_spec, &bc));
    assert_true(bc.flag);
}

// tr_join_poll is a leaf operation: with the budget spent it returns
// PENDING even for a finished task, and the task runs again.
static tr_poll
join_budget_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    if (!spawn(cx, &tu_value_spec, &(tu_value_task){.value = 4}, &st->j)) {
        TR_RETURN(st);
    }
    TR_YIELD(st, cx);
    TU_CHECK(tr_join_is_finished(&st->j));
    while (tr_cx_budget_spend(cx)) {
    }
    st->rv = (tr_err)tr_join_poll(&st->j, cx, &st->out);
    TU_CHECK(st->rv == (tr_err)TR_PENDING);
    TU_CHECK(tr_join_id(&st->j).id != 0); // not taken
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_OK && st->out.value.u64 == 4);
    TR_END(st);
}

static const tr_task_spec join_budget_root_spec = ROOT_SPEC(join_budget_root);

static void
test_task_join_poll_charges_budget(void **state)
{
    (void)state;
    tr_rt *rt = run_root(&join_budget_root_spec, NULL);
    // root: spawn+yield, spent+pending, join; child: one poll.
    assert_int_equal(tu_stats(rt).polls, 4);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Copied join handles. C programmers copy structs: a copy kept after the
// handle was consumed must never reach the task that reuses the slot, nor
// drop a reference it never owned while the slot is still alive.

// key_index is the slot index a handle names (its low 32 bits).
static uint32_t
key_index(const tr_join *j)
{
    return (uint32_t)tr_join_id(j).id;
}

// A root that polls a stale copy: READY at once with TR_ENOTFOUND, no
// waker registered, the copy emptied.
static tr_poll
poll_stale_root(void *arg, tr_cx *cx)
{
    root *st = arg;
    tr_join *copy = st->arg;
    tr_outcome out;
    memset(&out, 0x5a, sizeof out);
    TU_CHECK(tr_join_poll(copy, cx, &out) == TR_READY);
    TU_CHECK(out.err == TR_ENOTFOUND);
    TU_CHECK(tr_join_id(copy).id == 0);
    tr_join empty = TR_JOIN_NONE;
    TU_CHECK(tr_join_poll(&empty, cx, &out) == TR_READY && out.err == TR_EINVAL);
    return TR_READY;
}

static const tr_task_spec poll_stale_root_spec = {
    .name = "poll-stale", .poll = poll_stale_root, .size = sizeof(root)};

static void
test_task_join_copy_after_slot_reuse(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    atomic_int drops1 = 0, drops2 = 0;
    tr_join j1;
    tu_start(rt, &tu_value_spec, TU_VALUE(1, 0, &drops1), &j1);
    tr_join copy = j1, copy2 = j1, copy3 = j1;
    tu_block_until(rt, tu_pred_finished, &j1);
    tr_outcome out;
    assert_int_equal(tr_join_wait(&j1, &out), TR_OK);
    assert_int_equal(out.value.u64, 1);
    // The freed slot is the next one handed out (same shard, same class).
    tr_join j2;
    tu_start(rt, &tu_value_spec, TU_VALUE(2, 0, &drops2), &j2);
    assert_int_equal(key_index(&j2), key_index(&copy));
    assert_true(tr_join_id(&j2).id != tr_join_id(&copy).id);
    // Every operation through the stale copy refuses, touching nothing.
    assert_true(tr_join_is_finished(&copy)); // nothing to wait for
    assert_false(tr_join_is_finished(&j2));  // not run yet
    assert_int_equal(tr_join_wait(&copy, &out), TR_ENOTFOUND);
    assert_int_equal(tr_join_wait_timeout(&copy, &out, TR_NS_PER_SEC), TR_ENOTFOUND);
    assert_int_equal(tr_task_abort(&copy), TR_ENOTFOUND);
    tr_join_release(&copy);
    assert_int_equal(tr_join_id(&copy).id, 0);
    tr_join_release(&copy2);
    // The new task is intact: not cancelled, its own handle joins it.
    tu_block_until(rt, tu_pred_finished, &j2);
    assert_int_equal(tr_join_wait(&j2, &out), TR_OK);
    assert_int_equal(out.err, TR_OK);
    assert_int_equal(out.value.u64, 2);
    assert_int_equal(atomic_load(&drops2), 1);
    // And the awaitable form, from a task.
    assert_int_equal(tr_rt_run(rt, &poll_stale_root_spec, NULL, &(root){.arg = &copy3}, NULL),
                     TR_OK);
    tu_checks_pass();
    tu_rt_free_clean(rt);
    assert_int_equal(atomic_load(&drops1), 1);
}

// A copy of a live handle, used after the original was consumed while the
// task still runs (released: detached), must not release the reference the
// task holds for itself: before JOINED it did, and the task's own
// completion then panicked on a zero count or freed a live slot.
static void
test_task_join_copy_of_consumed_live_handle(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    atomic_int polls = 0, drops = 0;
    tr_join j;
    tu_start(rt, &tu_stuck_spec, TU_STUCK(&polls, &drops), &j);
    tr_join copy = j;
    tr_task_id id = tr_join_id(&j);
    tr_join_release(&j); // detached; the task lives on
    assert_int_equal(tu_live(rt), 1);
    tr_join_release(&copy); // stale: a no-op
    assert_int_equal(tr_join_id(&copy).id, 0);
    copy = (tr_join){id.id};
    assert_int_equal(tr_join_wait(&copy, NULL), TR_ENOTFOUND);
    assert_int_equal(tr_join_wait_timeout(&copy, NULL, 0), TR_ENOTFOUND);
    assert_int_equal(tr_task_abort(&copy), TR_ENOTFOUND);
    assert_true(tr_join_is_finished(&copy));
    assert_int_equal(tu_live(rt), 1);
    // By id it can still be cancelled; it is freed exactly once.
    assert_int_equal(tr_task_cancel(rt, id), TR_OK);
    tu_rt_quiesce(rt, TU_WAIT_MS);
    assert_int_equal(atomic_load(&drops), 1);
    assert_int_equal(tu_live(rt), 0);
    tu_rt_free_clean(rt);
}

// After a wait, a poll that returned READY, or a release, every copy is
// stale (JOINED is set in the consuming CAS), whichever copy consumed.
static void
test_task_join_first_consumer_wins(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_join j;
    tu_start(rt, &tu_value_spec, TU_VALUE(9, 0, NULL), &j);
    tr_join a = j, b = j;
    tu_block_until(rt, tu_pred_finished, &j);
    tr_outcome out;
    assert_int_equal(tr_join_wait(&b, &out), TR_OK); // a copy consumes
    assert_int_equal(out.value.u64, 9);
    assert_int_equal(tr_join_wait(&j, &out), TR_ENOTFOUND);
    assert_int_equal(tr_join_wait(&a, &out), TR_ENOTFOUND);
    assert_int_equal(tu_live(rt), 0);
    tu_rt_free_clean(rt);
}

// tr_join_wait_timeout: TR_ETIMEDOUT with the handle still good while the
// task runs; the outcome once it completes.
static void
test_task_join_wait_timeout(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    atomic_int drops = 0;
    tr_join j;
    tu_start(rt, &tu_stuck_spec, TU_STUCK(NULL, &drops), &j);
    tr_outcome out = {.err = TR_EIO};
    uint64_t t0 = tu_now_ns();
    assert_int_equal(tr_join_wait_timeout(&j, &out, 20 * TR_NS_PER_MS), TR_ETIMEDOUT);
    assert_true(tu_now_ns() - t0 >= 20 * TR_NS_PER_MS);
    assert_int_equal(out.err, TR_EIO); // untouched
    assert_int_equal(tr_join_wait_timeout(&j, &out, 0), TR_ETIMEDOUT);
    assert_false(tr_join_is_finished(&j));
    assert_int_equal(tr_task_abort(&j), TR_OK);
    tu_block_until(rt, tu_pred_finished, &j);
    assert_int_equal(tr_join_wait_timeout(&j, &out, 0), TR_OK);
    assert_int_equal(out.err, TR_ECANCELED);
    assert_int_equal(tr_join_id(&j).id, 0);
    assert_int_equal(tr_join_wait_timeout(&j, &out, 0), TR_EINVAL);
    assert_int_equal(atomic_load(&drops), 1);
    tu_rt_free_clean(rt);
}

// A timeout racing the completion on another worker: the waker is either
// taken back (TR_ETIMEDOUT, and the completer never touches the waiter's
// stack) or called (the wait goes on to the outcome). Repeated with short
// timeouts around each task's completion; ASan/TSan see any stray write.
#define WTR_TASKS 400

static void
test_task_join_wait_timeout_races_completion(void **state)
{
    (void)state;
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.workers = 2;
    cfg.sched = TR_SCHED_WS;
    tr_rt *rt = tu_rt_new_cfg(&cfg);
    unsigned timeouts = 0;
    for (unsigned i = 0; i < WTR_TASKS; i++) {
        tr_join j;
        tu_start(rt, &tu_value_spec, TU_VALUE(i, i % 7, NULL), &j);
        tr_outcome out;
        tr_err rv;
        uint64_t tmo = (i % 5) * 2000; // 0-8 us
        uint64_t deadline = tu_deadline(TU_WAIT_MS);
        while ((rv = tr_join_wait_timeout(&j, &out, tmo)) == TR_ETIMEDOUT) {
            timeouts++;
            assert_true(tu_now_ns() < deadline);
            tmo += 1000;
        }
        assert_int_equal(rv, TR_OK);
        assert_int_equal(out.err, TR_OK);
        assert_int_equal(out.value.u64, i);
    }
    print_message("%u timeouts over %u waits\n", timeouts, WTR_TASKS);
    tu_rt_quiesce(rt, TU_WAIT_MS);
    tu_rt_free_clean(rt);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task_wake_self_during_poll_not_lost),
        cmocka_unit_test(test_task_wake_from_other_task),
        cmocka_unit_test(test_task_wake_from_thread),
        cmocka_unit_test(test_task_wake_finished_task_is_noop),
        cmocka_unit_test(test_task_racing_wakes_single_enqueue),
        cmocka_unit_test(test_task_join_await),
        cmocka_unit_test(test_task_join_wait_from_thread),
        cmocka_unit_test(test_task_join_wait_in_task_deadlocks),
        cmocka_unit_test(test_task_cancelled_joiner_releases_handle),
        cmocka_unit_test(test_task_join_handle_moved_between_tasks),
        cmocka_unit_test(test_task_id_matches_join_id),
        cmocka_unit_test(test_task_result_inline_16_bytes),
        cmocka_unit_test(test_task_result_boxed_joined),
        cmocka_unit_test(test_task_result_boxed_released_unjoined),
        cmocka_unit_test(test_task_result_boxed_destroyed_by_rt_free),
        cmocka_unit_test(test_task_result_boxed_root),
        cmocka_unit_test(test_task_release_detaches),
        cmocka_unit_test(test_task_cancel_pending),
        cmocka_unit_test(test_task_cancel_before_first_poll),
        cmocka_unit_test(test_task_cancel_from_thread),
        cmocka_unit_test(test_task_cancel_racing_completion),
        cmocka_unit_test(test_task_cancel_while_injected),
        cmocka_unit_test(test_task_cancel_stress_drop_once),
        cmocka_unit_test(test_task_cancel_after_complete),
        cmocka_unit_test(test_task_cancel_after_complete_from_thread),
        cmocka_unit_test(test_task_drop_once_after_ready),
        cmocka_unit_test(test_task_drop_once_on_cancel),
        cmocka_unit_test(test_task_drop_once_shutdown_never_run),
        cmocka_unit_test(test_task_drop_once_shutdown_pending),
        cmocka_unit_test(test_task_discard_skips_drop),
        cmocka_unit_test(test_task_yield_interleaves),
        cmocka_unit_test(test_task_budget_default_128),
        cmocka_unit_test(test_task_budget_custom),
        cmocka_unit_test(test_task_budget_lets_other_task_run),
        cmocka_unit_test(test_task_join_poll_charges_budget),
        cmocka_unit_test(test_task_join_copy_after_slot_reuse),
        cmocka_unit_test(test_task_join_copy_of_consumed_live_handle),
        cmocka_unit_test(test_task_join_first_consumer_wins),
        cmocka_unit_test(test_task_join_wait_timeout),
        cmocka_unit_test(test_task_join_wait_timeout_races_completion),
    };
    return tu_run(tests);
}
