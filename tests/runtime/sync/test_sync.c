// Tests for troupe/sync.h: the semaphore, the mutex and notify.
//
// - the non-waiting calls (no runtime): codes, counts, closing;
// - FIFO service without barging, on one worker (a task spawned by the root
//   runs only when the root yields or waits, so "polled once, parked" is
//   deterministic);
// - cancellation while waiting, and after a grant (the permit, the lock or
//   the notification passes on to the next waiter);
// - the poll budget; wakes from plain threads;
// - stress on 1 to 4 workers under every scheduler, bounded by iteration
//   counts: mutual exclusion held across awaits, permits never exceeded,
//   and tasks cancelled at random points (waiting, granted or holding)
//   never lose a permit or deadlock the others. The watchdog turns a lost
//   wake-up into a failure.
//
// Waits for something to happen are bounded by time (YIELD_UNTIL), never
// by a count of turns; YIELD_N makes negative checks on one worker, or
// paces the stress's aborts.
#define TU_IGNORE_ENV 1
#include "../test_util.h"

#include <troupe/sync.h>

// The order in which waiters got what they waited for (one worker).
typedef struct order_log {
    int ids[64];
    int n;
} order_log;

static void
log_add(order_log *log, int id)
{
    if (log != NULL && log->n < 64) {
        log->ids[log->n++] = id;
    }
}

// ---------------------------------------------------------------------------
// Waiter tasks. Each records its polls; its drop abandons its op, as every
// task that may be cancelled mid-wait must.

typedef struct sem_waiter {
    int tr_pc;
    tr_sem *sem;
    tr_sem_acquire_op op;
    size_t n;
    int id;
    bool give_back; // release the permits when done
    tr_err err;
    order_log *log;
    unsigned polls;
} sem_waiter;

static tr_poll
sem_waiter_poll(void *arg, tr_cx *cx)
{
    sem_waiter *st = arg;
    st->polls++;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_sem_acquire(st->sem, cx, &st->op, st->n, &st->err));
    if (st->err == TR_OK) {
        log_add(st->log, st->id);
        if (st->give_back) {
            tr_sem_release(st->sem, st->n);
        }
    }
    tr_cx_set_result_u64(cx, st->err);
    TR_END(st);
}

static void
sem_waiter_drop(void *arg)
{
    sem_waiter *st = arg;
    tr_sem_acquire_abandon(st->sem, &st->op);
}

static const tr_task_spec sem_waiter_spec = {.name = "sem-waiter",
                                             .poll = sem_waiter_poll,
                                             .drop = sem_waiter_drop,
                                             .size = sizeof(sem_waiter)};

// spawn_sem_waiter starts a waiter; *out points at its state, which the
// (one-worker) root may read while the task is alive.
static tr_join
spawn_sem_waiter(tr_cx *cx, tr_sem *sem, size_t n, int id, bool give_back, order_log *log,
                 sem_waiter **out)
{
    sem_waiter init = {.sem = sem, .n = n, .id = id, .give_back = give_back, .log = log};
    return tu_spawn_at(cx, &sem_waiter_spec, &init, out);
}

typedef struct mutex_waiter {
    int tr_pc;
    tr_mutex *m;
    tr_mutex_lock_op op;
    int id;
    bool holding;
    order_log *log;
    unsigned polls;
} mutex_waiter;

static tr_poll
mutex_waiter_poll(void *arg, tr_cx *cx)
{
    mutex_waiter *st = arg;
    st->polls++;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_mutex_lock(st->m, cx, &st->op));
    st->holding = true;
    log_add(st->log, st->id);
    // Hold it across an await.
    TR_YIELD(st, cx);
    st->holding = false;
    tr_mutex_unlock(st->m);
    TR_END(st);
}

static void
mutex_waiter_drop(void *arg)
{
    mutex_waiter *st = arg;
    tr_mutex_lock_abandon(st->m, &st->op);
    if (st->holding) {
        st->holding = false;
        tr_mutex_unlock(st->m);
    }
}

static const tr_task_spec mutex_waiter_spec = {.name = "mutex-waiter",
                                               .poll = mutex_waiter_poll,
                                               .drop = mutex_waiter_drop,
                                               .size = sizeof(mutex_waiter)};

static tr_join
spawn_mutex_waiter(tr_cx *cx, tr_mutex *m, int id, order_log *log, mutex_waiter **out)
{
    return tu_spawn_at(cx, &mutex_waiter_spec, &(mutex_waiter){.m = m, .id = id, .log = log}, out);
}

typedef struct notify_waiter {
    int tr_pc;
    tr_notify *n;
    tr_notify_wait_op op;
    int id;
    order_log *log;
    unsigned polls;
} notify_waiter;

static tr_poll
notify_waiter_poll(void *arg, tr_cx *cx)
{
    notify_waiter *st = arg;
    st->polls++;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_notify_wait(st->n, cx, &st->op));
    log_add(st->log, st->id);
    TR_END(st);
}

static void
notify_waiter_drop(void *arg)
{
    notify_waiter *st = arg;
    tr_notify_wait_abandon(st->n, &st->op);
}

static const tr_task_spec notify_waiter_spec = {.name = "notify-waiter",
                                                .poll = notify_waiter_poll,
                                                .drop = notify_waiter_drop,
                                                .size = sizeof(notify_waiter)};

static tr_join
spawn_notify_waiter(tr_cx *cx, tr_notify *n, int id, order_log *log, notify_waiter **out)
{
    return tu_spawn_at(cx, &notify_waiter_spec, &(notify_waiter){.n = n, .id = id, .log = log},
                       out);
}

// ---------------------------------------------------------------------------
// The non-waiting calls.

static void
test_sync_try_calls_and_counts(void **state)
{
    (void)state;
    tr_sem *s = (tr_sem *)&s;
    assert_int_equal(tr_sem_new(TR_SEM_MAX_PERMITS + 1, &s), TR_EINVAL);
    assert_null(s);
    assert_int_equal(tr_sem_new(1, NULL), TR_EINVAL);
    assert_int_equal(tr_sem_new(3, &s), TR_OK);
    assert_int_equal(tr_sem_available(s), 3);
    assert_int_equal(tr_sem_try_acquire(s, 2), TR_OK);
    assert_int_equal(tr_sem_available(s), 1);
    assert_int_equal(tr_sem_try_acquire(s, 2), TR_EAGAIN);
    assert_int_equal(tr_sem_try_acquire(s, 0), TR_OK);
    tr_sem_release(s, 2);
    tr_sem_release(s, 0);
    assert_int_equal(tr_sem_available(s), 3);
    tr_sem_release(s, 5); // more than it started with: fine
    assert_int_equal(tr_sem_try_acquire(s, 8), TR_OK);
    assert_int_equal(tr_sem_available(s), 0);
    tr_sem_close(s);
    tr_sem_close(s); // idempotent
    assert_int_equal(tr_sem_try_acquire(s, 0), TR_ECLOSED);
    tr_sem_release(s, 1);
    assert_int_equal(tr_sem_available(s), 1);
    assert_int_equal(tr_sem_try_acquire(s, 1), TR_ECLOSED);
    tr_sem_free(s);
    tr_sem_free(NULL);

    tr_mutex *m = NULL;
    assert_int_equal(tr_mutex_new(NULL), TR_EINVAL);
    assert_int_equal(tr_mutex_new(&m), TR_OK);
    assert_false(tr_mutex_is_locked(m));
    assert_int_equal(tr_mutex_try_lock(m), TR_OK);
    assert_true(tr_mutex_is_locked(m));
    assert_int_equal(tr_mutex_try_lock(m), TR_EAGAIN);
    tr_mutex_unlock(m);
    assert_false(tr_mutex_is_locked(m));
    assert_int_equal(tr_mutex_try_lock(m), TR_OK);
    tr_mutex_unlock(m);
    tr_mutex_free(m);

    tr_notify *n = NULL;
    assert_int_equal(tr_notify_new(NULL), TR_EINVAL);
    assert_int_equal(tr_notify_new(&n), TR_OK);
    tr_notify_one(n);
    tr_notify_all(n);
    tr_notify_free(n);

    // Abandon functions accept NULL and idle ops.
    tr_sem_acquire_op sop;
    memset(&sop, 0, sizeof sop);
    tr_sem_acquire_abandon(NULL, &sop);
    tr_mutex_lock_abandon(NULL, NULL);
    tr_notify_wait_abandon(NULL, NULL);
}

// ---------------------------------------------------------------------------
// Semaphore: FIFO without barging.

typedef struct sem_fifo_root {
    int tr_pc;
    tr_sem *sem;
    order_log log;
    tr_join j[3];
    sem_waiter *w[3];
    tr_outcome out;
    unsigned spins;       // YIELD_N
    uint64_t tu_deadline; // YIELD_UNTIL
    unsigned i;
} sem_fifo_root;

static tr_poll
sem_fifo_poll(void *arg, tr_cx *cx)
{
    sem_fifo_root *st = arg;
    TR_BEGIN(st);
    // A wants 2, then B and C want 1 each; all park in that order.
    st->j[0] = spawn_sem_waiter(cx, st->sem, 2, 0, false, &st->log, &st->w[0]);
    YIELD_UNTIL(st, cx, st->w[0]->polls >= 1);
    st->j[1] = spawn_sem_waiter(cx, st->sem, 1, 1, false, &st->log, &st->w[1]);
    YIELD_UNTIL(st, cx, st->w[1]->polls >= 1);
    st->j[2] = spawn_sem_waiter(cx, st->sem, 1, 2, false, &st->log, &st->w[2]);
    YIELD_UNTIL(st, cx, st->w[2]->polls >= 1);

    // One permit: not enough for A, and B may not overtake A. (A negative
    // check: on one worker, five turns in which nothing may be served.)
    tr_sem_release(st->sem, 1);
    YIELD_N(st, cx, 5);
    CHECK(st, st->log.n == 0);
    CHECK(st, st->w[1]->polls == 1);
    CHECK(st, tr_sem_try_acquire(st->sem, 1) == TR_EAGAIN); // no barging
    CHECK(st, tr_sem_available(st->sem) == 1);

    // Two: A is served.
    tr_sem_release(st->sem, 1);
    CHECK(st, tr_sem_available(st->sem) == 0); // granted on the spot
    YIELD_UNTIL(st, cx, st->log.n == 1);
    CHECK(st, st->log.ids[0] == 0);

    // Two more: B and C, in that order.
    tr_sem_release(st->sem, 2);
    YIELD_UNTIL(st, cx, st->log.n == 3);
    CHECK(st, st->log.ids[1] == 1 && st->log.ids[2] == 2);
    for (st->i = 0; st->i < 3; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->j[st->i], cx, &st->out));
        CHECK(st, st->out.err == TR_OK && st->out.value.u64 == TR_OK);
    }
    CHECK(st, tr_sem_available(st->sem) == 0);
    TR_END(st);
}

static const tr_task_spec sem_fifo_spec = {
    .name = "sem-fifo", .poll = sem_fifo_poll, .size = sizeof(sem_fifo_root)};

static void
test_sem_fifo_no_barging(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new_fifo();
    tr_sem *sem = NULL;
    assert_int_equal(tr_sem_new(0, &sem), TR_OK);
    tu_run_root(rt, &sem_fifo_spec, &(sem_fifo_root){.sem = sem});
    tu_rt_free_clean(rt);
    tr_sem_free(sem);
}

// ---------------------------------------------------------------------------
// Semaphore: cancelling the head of the line lets the rest through; a
// cancelled waiter that had been granted its permits passes them on.

typedef struct sem_cancel_root {
    int tr_pc;
    tr_sem *sem;
    bool granted; // cancel A after it was granted (else while it waits)
    order_log log;
    tr_join j[2];
    sem_waiter *w[2];
    tr_outcome out;
    uint64_t tu_deadline;
} sem_cancel_root;

static tr_poll
sem_cancel_poll(void *arg, tr_cx *cx)
{
    sem_cancel_root *st = arg;
    TR_BEGIN(st);
    // Waiting: A wants 3 with 1 available; B (1) waits behind it.
    // Granted: nothing available; A and B want 1 each.
    st->j[0] = spawn_sem_waiter(cx, st->sem, st->granted ? 1 : 3, 0, false, &st->log, &st->w[0]);
    YIELD_UNTIL(st, cx, st->w[0]->polls >= 1);
    st->j[1] = spawn_sem_waiter(cx, st->sem, 1, 1, false, &st->log, &st->w[1]);
    YIELD_UNTIL(st, cx, st->w[1]->polls >= 1);
    CHECK(st, st->log.n == 0);
    if (st->granted) {
        // A is granted and woken, but on one worker it does not run before
        // the abort: its drop must hand the permit to B.
        tr_sem_release(st->sem, 1);
        CHECK(st, tr_sem_available(st->sem) == 0);
    }
    CHECK(st, tr_task_abort(&st->j[0]) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->j[0], cx, &st->out));
    CHECK(st, st->out.err == TR_ECANCELED);
    TR_AWAIT(st, tr_join_poll(&st->j[1], cx, &st->out));
    CHECK(st, st->out.err == TR_OK && st->out.value.u64 == TR_OK);
    CHECK(st, st->log.n == 1 && st->log.ids[0] == 1);
    CHECK(st, tr_sem_available(st->sem) == 0);
    TR_END(st);
}

static const tr_task_spec sem_cancel_spec = {
    .name = "sem-cancel", .poll = sem_cancel_poll, .size = sizeof(sem_cancel_root)};

static void
run_sem_cancel(bool granted)
{
    tr_rt *rt = tu_rt_new_fifo();
    tr_sem *sem = NULL;
    assert_int_equal(tr_sem_new(granted ? 0 : 1, &sem), TR_OK);
    tu_run_root(rt, &sem_cancel_spec, &(sem_cancel_root){.sem = sem, .granted = granted});
    tu_rt_free_clean(rt);
    tr_sem_free(sem);
}

static void
test_sem_cancel_waiting_head_unblocks_line(void **state)
{
    (void)state;
    run_sem_cancel(false);
}

static void
test_sem_cancel_granted_passes_permit_on(void **state)
{
    (void)state;
    run_sem_cancel(true);
}

// ---------------------------------------------------------------------------
// Semaphore: closing fails the waiters; a grant made before the close holds.

typedef struct sem_close_root {
    int tr_pc;
    tr_sem *sem;
    tr_sem_acquire_op op;
    order_log log;
    tr_join j[3];
    sem_waiter *w[3];
    tr_outcome out;
    tr_err err;
    uint64_t tu_deadline;
    unsigned i;
} sem_close_root;

static tr_poll
sem_close_poll(void *arg, tr_cx *cx)
{
    sem_close_root *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < 3; st->i++) {
        st->j[st->i] = spawn_sem_waiter(cx, st->sem, st->i == 2 ? 5 : 1, (int)st->i, false,
                                        &st->log, &st->w[st->i]);
        YIELD_UNTIL(st, cx, st->w[st->i]->polls >= 1);
    }
    tr_sem_release(st->sem, 1); // granted to waiter 0
    tr_sem_close(st->sem);
    TR_AWAIT(st, tr_join_poll(&st->j[0], cx, &st->out));
    CHECK(st, st->out.err == TR_OK && st->out.value.u64 == TR_OK);
    for (st->i = 1; st->i < 3; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->j[st->i], cx, &st->out));
        CHECK(st, st->out.err == TR_OK && st->out.value.u64 == TR_ECLOSED);
    }
    TR_AWAIT(st, tr_sem_acquire(st->sem, cx, &st->op, 1, &st->err));
    CHECK(st, st->err == TR_ECLOSED);
    CHECK(st, st->log.n == 1 && st->log.ids[0] == 0);
    TR_END(st);
}

static const tr_task_spec sem_close_spec = {
    .name = "sem-close", .poll = sem_close_poll, .size = sizeof(sem_close_root)};

static void
test_sem_close_fails_waiters(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new_fifo();
    tr_sem *sem = NULL;
    assert_int_equal(tr_sem_new(0, &sem), TR_OK);
    tu_run_root(rt, &sem_close_spec, &(sem_close_root){.sem = sem});
    tu_rt_free_clean(rt);
    tr_sem_free(sem);
}

// ---------------------------------------------------------------------------
// The budget: 1000 acquires that never wait are still preempted.

#define BUDGET_N 1000

typedef struct sem_budget_root {
    int tr_pc;
    tr_sem *sem;
    tr_sem_acquire_op op;
    tr_mutex *m;
    tr_mutex_lock_op mop;
    uint32_t limit;
    uint32_t polls;
    uint32_t this_poll;
    uint32_t max_per_poll;
    uint32_t i;
    tr_err err;
} sem_budget_root;

static tr_poll
sem_budget_poll(void *arg, tr_cx *cx)
{
    sem_budget_root *st = arg;
    st->polls++;
    st->this_poll = 0;
    TR_BEGIN(st);
    for (st->i = 0; st->i < BUDGET_N; st->i++) {
        TR_AWAIT(st, tr_sem_acquire(st->sem, cx, &st->op, 1, &st->err));
        CHECK(st, st->err == TR_OK);
        st->this_poll++;
        if (st->this_poll > st->max_per_poll) {
            st->max_per_poll = st->this_poll;
        }
    }
    for (st->i = 0; st->i < BUDGET_N; st->i++) {
        TR_AWAIT(st, tr_mutex_lock(st->m, cx, &st->mop));
        tr_mutex_unlock(st->m);
        st->this_poll++;
        if (st->this_poll > st->max_per_poll) {
            st->max_per_poll = st->this_poll;
        }
    }
    CHECK(st, st->max_per_poll <= st->limit);
    CHECK(st, st->polls >= 2 * BUDGET_N / st->limit);
    CHECK(st, tr_sem_available(st->sem) == 0);
    TR_END(st);
}

static const tr_task_spec sem_budget_spec = {
    .name = "sem-budget", .poll = sem_budget_poll, .size = sizeof(sem_budget_root)};

static void
test_sem_mutex_charge_budget(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new_fifo();
    tr_sem *sem = NULL;
    tr_mutex *m = NULL;
    assert_int_equal(tr_sem_new(BUDGET_N, &sem), TR_OK);
    assert_int_equal(tr_mutex_new(&m), TR_OK);
    tr_rt_config cfg;
    tr_rt_config_init(&cfg);
    tu_run_root(rt, &sem_budget_spec, &(sem_budget_root){.sem = sem, .m = m, .limit = cfg.budget});
    tu_rt_free_clean(rt);
    tr_sem_free(sem);
    tr_mutex_free(m);
}

// ---------------------------------------------------------------------------
// Mutex: FIFO hand-off; cancellation while waiting and after the hand-off.

typedef struct mutex_root {
    int tr_pc;
    tr_mutex *m;
    int mode; // 0: FIFO, 1: cancel a waiter, 2: cancel the one handed the lock
    order_log log;
    tr_join j[3];
    mutex_waiter *w[3];
    tr_outcome out;
    uint64_t tu_deadline;
    unsigned i;
} mutex_root;

static tr_poll
mutex_root_poll(void *arg, tr_cx *cx)
{
    mutex_root *st = arg;
    TR_BEGIN(st);
    CHECK(st, tr_mutex_try_lock(st->m) == TR_OK);
    for (st->i = 0; st->i < 3; st->i++) {
        st->j[st->i] = spawn_mutex_waiter(cx, st->m, (int)st->i, &st->log, &st->w[st->i]);
        YIELD_UNTIL(st, cx, st->w[st->i]->polls >= 1);
    }
    if (st->mode == 1) {
        // Waiter 1 leaves the line while it waits.
        CHECK(st, tr_task_abort(&st->j[1]) == TR_OK);
        TR_AWAIT(st, tr_join_poll(&st->j[1], cx, &st->out));
        CHECK(st, st->out.err == TR_ECANCELED);
    }
    tr_mutex_unlock(st->m); // handed to waiter 0
    CHECK(st, tr_mutex_is_locked(st->m));
    CHECK(st, tr_mutex_try_lock(st->m) == TR_EAGAIN); // no barging
    if (st->mode == 2) {
        // Waiter 0 was handed the lock but has not run: its drop passes
        // the lock to waiter 1.
        CHECK(st, tr_task_abort(&st->j[0]) == TR_OK);
        TR_AWAIT(st, tr_join_poll(&st->j[0], cx, &st->out));
        CHECK(st, st->out.err == TR_ECANCELED);
    }
    for (st->i = 0; st->i < 3; st->i++) {
        if ((st->mode == 1 && st->i == 1) || (st->mode == 2 && st->i == 0)) {
            continue;
        }
        TR_AWAIT(st, tr_join_poll(&st->j[st->i], cx, &st->out));
        CHECK(st, st->out.err == TR_OK);
    }
    CHECK(st, st->log.n == 2 + (st->mode == 0));
    if (st->mode == 0) {
        CHECK(st, st->log.ids[0] == 0 && st->log.ids[1] == 1 && st->log.ids[2] == 2);
    } else if (st->mode == 1) {
        CHECK(st, st->log.ids[0] == 0 && st->log.ids[1] == 2);
    } else {
        CHECK(st, st->log.ids[0] == 1 && st->log.ids[1] == 2);
    }
    CHECK(st, !tr_mutex_is_locked(st->m));
    TR_END(st);
}

static const tr_task_spec mutex_root_spec = {
    .name = "mutex-root", .poll = mutex_root_poll, .size = sizeof(mutex_root)};

static void
run_mutex_root(int mode)
{
    tr_rt *rt = tu_rt_new_fifo();
    tr_mutex *m = NULL;
    assert_int_equal(tr_mutex_new(&m), TR_OK);
    tu_run_root(rt, &mutex_root_spec, &(mutex_root){.m = m, .mode = mode});
    tu_rt_free_clean(rt);
    tr_mutex_free(m);
}

static void
test_mutex_fifo_handoff(void **state)
{
    (void)state;
    run_mutex_root(0);
}

static void
test_mutex_cancel_waiting(void **state)
{
    (void)state;
    run_mutex_root(1);
}

static void
test_mutex_cancel_handed_lock_passes_on(void **state)
{
    (void)state;
    run_mutex_root(2);
}

// ---------------------------------------------------------------------------
// Mutex: a plain thread unlocks; the waiting task is woken from there.

typedef struct xunlock {
    tr_mutex *m;
    sem_t go;
} xunlock;

static void *
xunlock_thread(void *arg)
{
    xunlock *x = arg;
    if (tu_sem_wait_ms(&x->go, TU_WAIT_MS)) {
        tr_mutex_unlock(x->m);
    }
    return NULL;
}

typedef struct xunlock_root {
    int tr_pc;
    xunlock *x;
    order_log log;
    tr_join j;
    mutex_waiter *w;
    tr_outcome out;
    uint64_t tu_deadline;
} xunlock_root;

static tr_poll
xunlock_root_poll(void *arg, tr_cx *cx)
{
    xunlock_root *st = arg;
    TR_BEGIN(st);
    CHECK(st, tr_mutex_try_lock(st->x->m) == TR_OK);
    st->j = spawn_mutex_waiter(cx, st->x->m, 7, &st->log, &st->w);
    YIELD_UNTIL(st, cx, st->w->polls >= 1);
    sem_post(&st->x->go); // the thread unlocks: the lock goes to the waiter
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    CHECK(st, st->out.err == TR_OK);
    CHECK(st, st->log.n == 1 && st->log.ids[0] == 7);
    CHECK(st, !tr_mutex_is_locked(st->x->m));
    TR_END(st);
}

static const tr_task_spec xunlock_root_spec = {
    .name = "xunlock-root", .poll = xunlock_root_poll, .size = sizeof(xunlock_root)};

static void
test_mutex_unlock_from_plain_thread(void **state)
{
    (void)state;
    xunlock x;
    assert_int_equal(tr_mutex_new(&x.m), TR_OK);
    sem_init(&x.go, 0, 0);
    pthread_t t;
    tu_thread_start(&t, xunlock_thread, &x);
    tr_rt *rt = tu_rt_new_fifo();
    tu_run_root(rt, &xunlock_root_spec, &(xunlock_root){.x = &x});
    tu_thread_join(t);
    tu_rt_free_clean(rt);
    tr_mutex_free(x.m);
    sem_destroy(&x.go);
}

// ---------------------------------------------------------------------------
// Notify.

typedef struct notify_root {
    int tr_pc;
    tr_notify *n;
    int mode;
    tr_notify_wait_op op;
    order_log log;
    tr_join j[3];
    notify_waiter *w[3];
    tr_outcome out;
    unsigned spins;       // YIELD_N
    uint64_t tu_deadline; // YIELD_UNTIL
    unsigned i;
} notify_root;

// Mode 0: a permit is stored when nobody waits, one only.
static tr_poll
notify_permit_poll(void *arg, tr_cx *cx)
{
    notify_root *st = arg;
    TR_BEGIN(st);
    tr_notify_one(st->n);
    tr_notify_one(st->n); // still one permit
    CHECK(st, tr_notify_wait(st->n, cx, &st->op) == TR_READY);
    st->j[0] = spawn_notify_waiter(cx, st->n, 0, &st->log, &st->w[0]);
    YIELD_UNTIL(st, cx, st->w[0]->polls >= 1);
    YIELD_N(st, cx, 3); // one worker: a negative check, not a wait
    CHECK(st, st->w[0]->polls == 1 && st->log.n == 0);
    tr_notify_one(st->n);
    TR_AWAIT(st, tr_join_poll(&st->j[0], cx, &st->out));
    CHECK(st, st->out.err == TR_OK && st->log.n == 1);
    // notify_all stores nothing.
    tr_notify_all(st->n);
    st->j[1] = spawn_notify_waiter(cx, st->n, 1, &st->log, &st->w[1]);
    YIELD_UNTIL(st, cx, st->w[1]->polls >= 1);
    YIELD_N(st, cx, 3); // one worker: a negative check, not a wait
    CHECK(st, st->log.n == 1);
    tr_notify_one(st->n);
    TR_AWAIT(st, tr_join_poll(&st->j[1], cx, &st->out));
    CHECK(st, st->out.err == TR_OK && st->log.n == 2);
    // A prepared op sees a notify_all that comes before its first poll.
    tr_notify_wait_prepare(st->n, &st->op);
    tr_notify_all(st->n);
    CHECK(st, tr_notify_wait(st->n, cx, &st->op) == TR_READY);
    // ... and a prepared op that is abandoned leaves nothing behind.
    tr_notify_wait_prepare(st->n, &st->op);
    tr_notify_wait_abandon(st->n, &st->op);
    TR_END(st);
}

// Mode 1: notify_one serves the waiters in order; notify_all wakes all.
static tr_poll
notify_order_poll(void *arg, tr_cx *cx)
{
    notify_root *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < 3; st->i++) {
        st->j[st->i] = spawn_notify_waiter(cx, st->n, (int)st->i, &st->log, &st->w[st->i]);
        YIELD_UNTIL(st, cx, st->w[st->i]->polls >= 1);
    }
    tr_notify_one(st->n);
    YIELD_UNTIL(st, cx, st->log.n == 1);
    YIELD_N(st, cx, 3); // one worker: nobody else is served meanwhile
    CHECK(st, st->log.n == 1 && st->log.ids[0] == 0);
    tr_notify_all(st->n);
    for (st->i = 0; st->i < 3; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->j[st->i], cx, &st->out));
        CHECK(st, st->out.err == TR_OK);
    }
    CHECK(st, st->log.n == 3 && st->log.ids[1] == 1 && st->log.ids[2] == 2);
    // Nothing stored: a wait now parks.
    st->j[0] = spawn_notify_waiter(cx, st->n, 9, &st->log, &st->w[0]);
    YIELD_UNTIL(st, cx, st->w[0]->polls >= 1);
    YIELD_N(st, cx, 3); // one worker: a negative check, not a wait
    CHECK(st, st->log.n == 3);
    CHECK(st, tr_task_abort(&st->j[0]) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->j[0], cx, &st->out));
    CHECK(st, st->out.err == TR_ECANCELED);
    TR_END(st);
}

// Mode 2: a waiter chosen by notify_one and cancelled before it ran passes
// the notification on; one woken by notify_all does not.
static tr_poll
notify_cancel_poll(void *arg, tr_cx *cx)
{
    notify_root *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < 2; st->i++) {
        st->j[st->i] = spawn_notify_waiter(cx, st->n, (int)st->i, &st->log, &st->w[st->i]);
        YIELD_UNTIL(st, cx, st->w[st->i]->polls >= 1);
    }
    tr_notify_one(st->n); // to waiter 0, which has not run yet
    CHECK(st, tr_task_abort(&st->j[0]) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->j[0], cx, &st->out));
    CHECK(st, st->out.err == TR_ECANCELED);
    TR_AWAIT(st, tr_join_poll(&st->j[1], cx, &st->out));
    CHECK(st, st->out.err == TR_OK);
    CHECK(st, st->log.n == 1 && st->log.ids[0] == 1);

    // The same with nobody behind: the notification becomes the permit.
    st->j[0] = spawn_notify_waiter(cx, st->n, 2, &st->log, &st->w[0]);
    YIELD_UNTIL(st, cx, st->w[0]->polls >= 1);
    tr_notify_one(st->n);
    CHECK(st, tr_task_abort(&st->j[0]) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->j[0], cx, &st->out));
    CHECK(st, st->out.err == TR_ECANCELED);
    CHECK(st, tr_notify_wait(st->n, cx, &st->op) == TR_READY);

    // notify_all: waiter 0 is cancelled after it, waiter 1 still wakes, and
    // nothing is passed on to a later waiter.
    for (st->i = 0; st->i < 2; st->i++) {
        st->j[st->i] = spawn_notify_waiter(cx, st->n, 10 + (int)st->i, &st->log, &st->w[st->i]);
        YIELD_UNTIL(st, cx, st->w[st->i]->polls >= 1);
    }
    tr_notify_all(st->n);
    CHECK(st, tr_task_abort(&st->j[0]) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->j[0], cx, &st->out));
    CHECK(st, st->out.err == TR_ECANCELED);
    TR_AWAIT(st, tr_join_poll(&st->j[1], cx, &st->out));
    CHECK(st, st->out.err == TR_OK);
    st->j[2] = spawn_notify_waiter(cx, st->n, 20, &st->log, &st->w[2]);
    YIELD_UNTIL(st, cx, st->w[2]->polls >= 1);
    YIELD_N(st, cx, 3); // one worker: a negative check, not a wait
    CHECK(st, st->log.n == 2 && st->log.ids[1] == 11);
    tr_notify_one(st->n);
    TR_AWAIT(st, tr_join_poll(&st->j[2], cx, &st->out));
    CHECK(st, st->out.err == TR_OK && st->log.n == 3);
    TR_END(st);
}

// The root's own op is idle whenever it finishes normally; a failed CHECK
// may leave it waiting.
static void
notify_root_drop(void *arg)
{
    notify_root *st = arg;
    tr_notify_wait_abandon(st->n, &st->op);
}

static const tr_task_spec notify_specs[3] = {
    {.name = "notify-permit",
     .poll = notify_permit_poll,
     .drop = notify_root_drop,
     .size = sizeof(notify_root)},
    {.name = "notify-order",
     .poll = notify_order_poll,
     .drop = notify_root_drop,
     .size = sizeof(notify_root)},
    {.name = "notify-cancel",
     .poll = notify_cancel_poll,
     .drop = notify_root_drop,
     .size = sizeof(notify_root)},
};

static void
run_notify(int mode)
{
    tr_rt *rt = tu_rt_new_fifo();
    tr_notify *n = NULL;
    assert_int_equal(tr_notify_new(&n), TR_OK);
    tu_run_root(rt, &notify_specs[mode], &(notify_root){.n = n, .mode = mode});
    tu_rt_free_clean(rt);
    tr_notify_free(n);
}

static void
test_notify_one_stores_one_permit(void **state)
{
    (void)state;
    run_notify(0);
}

static void
test_notify_one_fifo_and_all(void **state)
{
    (void)state;
    run_notify(1);
}

static void
test_notify_cancelled_waiter_passes_on(void **state)
{
    (void)state;
    run_notify(2);
}

// ---------------------------------------------------------------------------
// Stress on several workers. Every configuration below runs each test.

typedef struct stress_cfg {
    tr_sched_kind sched;
    unsigned workers;
} stress_cfg;

static const stress_cfg stress_cfgs[] = {
    {TR_SCHED_WS, 1}, {TR_SCHED_WS, 2}, {TR_SCHED_WS, 4}, {TR_SCHED_RR, 3}, {TR_SCHED_HYBRID, 2},
};

#define NSTRESS (sizeof stress_cfgs / sizeof stress_cfgs[0])

#define STRESS_TASKS 8
#define STRESS_VICTIMS 6
#define STRESS_ITERS 1000

// Shared by the tasks of one run.
typedef struct stress_shared {
    tr_mutex *m;
    tr_sem *sem;
    size_t permits;
    atomic_int inside;     // tasks inside the critical section / permits held
    atomic_int violations; // times mutual exclusion or the count broke
    atomic_int victim_drops;
    uint64_t counter; // protected by m (TSan sees a race if it is not)
} stress_shared;

typedef struct stress_task {
    int tr_pc;
    stress_shared *sh;
    bool victim; // loops until cancelled
    bool use_sem;
    bool holding;
    size_t n; // permits held
    uint32_t i;
    tr_err err;
    tr_mutex_lock_op mop;
    tr_sem_acquire_op sop;
} stress_task;

static tr_poll
stress_poll(void *arg, tr_cx *cx)
{
    stress_task *st = arg;
    stress_shared *sh = st->sh;
    TR_BEGIN(st);
    for (st->i = 0; st->victim || st->i < STRESS_ITERS; st->i++) {
        if (st->use_sem) {
            st->n = 1 + (st->i + (uintptr_t)st) % sh->permits;
            TR_AWAIT(st, tr_sem_acquire(sh->sem, cx, &st->sop, st->n, &st->err));
            if (st->err != TR_OK) {
                atomic_fetch_add(&sh->violations, 1);
                break;
            }
            st->holding = true;
            if ((size_t)atomic_fetch_add(&sh->inside, (int)st->n) + st->n > sh->permits) {
                atomic_fetch_add(&sh->violations, 1);
            }
        } else {
            TR_AWAIT(st, tr_mutex_lock(sh->m, cx, &st->mop));
            st->holding = true;
            if (atomic_fetch_add(&sh->inside, 1) != 0) {
                atomic_fetch_add(&sh->violations, 1);
            }
            if (!st->victim) {
                sh->counter++;
            }
        }
        if (st->i % 4 == 0) {
            TR_YIELD(st, cx); // hold across an await
        }
        st->holding = false;
        if (st->use_sem) {
            atomic_fetch_sub(&sh->inside, (int)st->n);
            tr_sem_release(sh->sem, st->n);
        } else {
            atomic_fetch_sub(&sh->inside, 1);
            tr_mutex_unlock(sh->m);
        }
        if (st->i % 3 == 0) {
            TR_YIELD(st, cx);
        }
    }
    TR_END(st);
}

static void
stress_drop(void *arg)
{
    stress_task *st = arg;
    stress_shared *sh = st->sh;
    if (st->use_sem) {
        tr_sem_acquire_abandon(sh->sem, &st->sop);
    } else {
        tr_mutex_lock_abandon(sh->m, &st->mop);
    }
    if (st->holding) {
        st->holding = false;
        if (st->use_sem) {
            atomic_fetch_sub(&sh->inside, (int)st->n);
            tr_sem_release(sh->sem, st->n);
        } else {
            atomic_fetch_sub(&sh->inside, 1);
            tr_mutex_unlock(sh->m);
        }
    }
    if (st->victim) {
        atomic_fetch_add(&sh->victim_drops, 1);
    }
}

static const tr_task_spec stress_spec = {
    .name = "sync-stress", .poll = stress_poll, .drop = stress_drop, .size = sizeof(stress_task)};

typedef struct stress_root {
    int tr_pc;
    stress_shared *sh;
    bool use_sem;
    tr_join j[STRESS_TASKS + STRESS_VICTIMS];
    tr_outcome out;
    unsigned spins;
    unsigned i;
} stress_root;

static tr_poll
stress_root_poll(void *arg, tr_cx *cx)
{
    stress_root *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < STRESS_TASKS + STRESS_VICTIMS; st->i++) {
        stress_task t = {.sh = st->sh, .use_sem = st->use_sem, .victim = st->i >= STRESS_TASKS};
        CHECK(st, tr_spawn(tr_cx_rt(cx), &stress_spec, NULL, &t, &st->j[st->i]) == TR_OK);
    }
    // Cancel the victims one by one while everybody runs: each may be
    // waiting, granted but not yet run, or holding. YIELD_N only paces the
    // aborts (not a wait: every state a victim may be in is fine).
    for (st->i = STRESS_TASKS; st->i < STRESS_TASKS + STRESS_VICTIMS; st->i++) {
        YIELD_N(st, cx, 7);
        CHECK(st, tr_task_abort(&st->j[st->i]) == TR_OK);
    }
    for (st->i = 0; st->i < STRESS_TASKS + STRESS_VICTIMS; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->j[st->i], cx, &st->out));
        CHECK(st, st->out.err == (st->i < STRESS_TASKS ? TR_OK : TR_ECANCELED));
    }
    TR_END(st);
}

static const tr_task_spec stress_root_spec = {
    .name = "sync-stress-root", .poll = stress_root_poll, .size = sizeof(stress_root)};

static void
run_stress(bool use_sem)
{
    for (size_t c = 0; c < NSTRESS; c++) {
        stress_shared sh;
        memset(&sh, 0, sizeof sh);
        sh.permits = 3;
        assert_int_equal(tr_mutex_new(&sh.m), TR_OK);
        assert_int_equal(tr_sem_new(sh.permits, &sh.sem), TR_OK);
        tr_rt *rt = tu_rt_make(stress_cfgs[c].sched, stress_cfgs[c].workers);
        tu_run_root(rt, &stress_root_spec, &(stress_root){.sh = &sh, .use_sem = use_sem});
        tu_rt_free_clean(rt); // quiesces first
        assert_int_equal(atomic_load(&sh.violations), 0);
        assert_int_equal(atomic_load(&sh.inside), 0);
        assert_int_equal(atomic_load(&sh.victim_drops), STRESS_VICTIMS);
        if (use_sem) {
            assert_int_equal(tr_sem_available(sh.sem), sh.permits);
        } else {
            assert_int_equal(sh.counter, (uint64_t)STRESS_TASKS * STRESS_ITERS);
            assert_false(tr_mutex_is_locked(sh.m));
        }
        tr_mutex_free(sh.m);
        tr_sem_free(sh.sem);
    }
}

static void
test_mutex_stress_with_cancels(void **state)
{
    (void)state;
    run_stress(false);
}

static void
test_sem_stress_with_cancels(void **state)
{
    (void)state;
    run_stress(true);
}

// ---------------------------------------------------------------------------
// Notify from a plain thread to tasks on several workers: each consumer
// waits until the producer's count reaches the total, using the prepare /
// check / wait loop; the producer notifies after every increment (notify_one
// or notify_all) and calls tr_notify_all once at the end, which the prepare
// makes impossible to miss.

#define XN_TOTAL 3000
#define XN_CONSUMERS 3

typedef struct xn_shared {
    tr_notify *n;
    atomic_int produced;
    bool use_all;
} xn_shared;

static void *
xn_producer(void *arg)
{
    xn_shared *sh = arg;
    for (int i = 0; i < XN_TOTAL; i++) {
        atomic_fetch_add(&sh->produced, 1);
        if (sh->use_all) {
            tr_notify_all(sh->n);
        } else {
            tr_notify_one(sh->n);
        }
    }
    tr_notify_all(sh->n);
    return NULL;
}

typedef struct xn_consumer {
    int tr_pc;
    xn_shared *sh;
    tr_notify_wait_op op;
} xn_consumer;

static tr_poll
xn_consumer_poll(void *arg, tr_cx *cx)
{
    xn_consumer *st = arg;
    TR_BEGIN(st);
    for (;;) {
        tr_notify_wait_prepare(st->sh->n, &st->op);
        if (atomic_load(&st->sh->produced) >= XN_TOTAL) {
            tr_notify_wait_abandon(st->sh->n, &st->op);
            break;
        }
        TR_AWAIT(st, tr_notify_wait(st->sh->n, cx, &st->op));
    }
    TR_END(st);
}

static void
xn_consumer_drop(void *arg)
{
    xn_consumer *st = arg;
    tr_notify_wait_abandon(st->sh->n, &st->op);
}

static const tr_task_spec xn_consumer_spec = {.name = "xn-consumer",
                                              .poll = xn_consumer_poll,
                                              .drop = xn_consumer_drop,
                                              .size = sizeof(xn_consumer)};

typedef struct xn_root {
    int tr_pc;
    xn_shared *sh;
    tr_join j[XN_CONSUMERS];
    tr_outcome out;
    unsigned i;
} xn_root;

static tr_poll
xn_root_poll(void *arg, tr_cx *cx)
{
    xn_root *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < XN_CONSUMERS; st->i++) {
        CHECK(st, tr_spawn(tr_cx_rt(cx), &xn_consumer_spec, NULL, &(xn_consumer){.sh = st->sh},
                           &st->j[st->i]) == TR_OK);
    }
    for (st->i = 0; st->i < XN_CONSUMERS; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->j[st->i], cx, &st->out));
        CHECK(st, st->out.err == TR_OK);
    }
    TR_END(st);
}

static const tr_task_spec xn_root_spec = {
    .name = "xn-root", .poll = xn_root_poll, .size = sizeof(xn_root)};

static void
test_notify_from_plain_thread(void **state)
{
    (void)state;
    for (int use_all = 0; use_all <= 1; use_all++) {
        for (unsigned workers = 1; workers <= 3; workers += 2) {
            xn_shared sh;
            memset(&sh, 0, sizeof sh);
            sh.use_all = use_all;
            assert_int_equal(tr_notify_new(&sh.n), TR_OK);
            tr_rt *rt = tu_rt_make(TR_SCHED_WS, workers);
            pthread_t t;
            tu_thread_start(&t, xn_producer, &sh);
            tu_run_root(rt, &xn_root_spec, &(xn_root){.sh = &sh});
            tu_thread_join(t);
            tu_rt_free_clean(rt); // quiesces first
            tr_notify_free(sh.n);
        }
    }
}

// The one would-block code: tr_sem_try_acquire and tr_mutex_try_lock say
// TR_EAGAIN when they would have had to wait; a closed semaphore still says
// TR_ECLOSED.
static void
test_sync_try_would_block_is_eagain(void **state)
{
    (void)state;
    tr_sem *s = NULL;
    assert_int_equal(tr_sem_new(1, &s), TR_OK);
    assert_int_equal(tr_sem_try_acquire(s, 2), TR_EAGAIN); // too few permits
    assert_int_equal(tr_sem_try_acquire(s, 1), TR_OK);
    assert_int_equal(tr_sem_try_acquire(s, 1), TR_EAGAIN); // none left
    tr_sem_close(s);
    assert_int_equal(tr_sem_try_acquire(s, 1), TR_ECLOSED);
    tr_sem_free(s);

    tr_mutex *m = NULL;
    assert_int_equal(tr_mutex_new(&m), TR_OK);
    assert_int_equal(tr_mutex_try_lock(m), TR_OK);
    assert_int_equal(tr_mutex_try_lock(m), TR_EAGAIN); // held
    tr_mutex_unlock(m);
    assert_int_equal(tr_mutex_try_lock(m), TR_OK);
    tr_mutex_unlock(m);
    tr_mutex_free(m);
}

// Op reuse: a tr_sem_acquire_op, tr_mutex_lock_op and tr_notify_wait_op is
// back to its zeroed state when its awaitable returns TR_READY, so the main
// task waits twice on each with one op, and each wait does its whole work
// (takes a permit, holds the lock, consumes a notification). A helper task
// gives each round only after the main task asked (a ping on a channel),
// so on one worker every wait goes through the line.

typedef struct reuse_sync {
    tr_sem *sem;
    tr_mutex *m;
    tr_notify *n;
    tr_chan *ping; // main -> helper: "give me the next one"
} reuse_sync;

typedef struct reuse_helper {
    int tr_pc;
    reuse_sync *r;
    int i;
    uint8_t what;
    tr_mutex_lock_op lk;
    tr_err err;
} reuse_helper;

static tr_poll
reuse_helper_poll(void *arg, tr_cx *cx)
{
    reuse_helper *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < 6; st->i++) {
        TR_AWAIT(st, tr_chan_recv(st->r->ping, cx, &st->what, &st->err));
        CHECK_ERR(st, st->err, TR_OK);
        if (st->what == 's') {
            tr_sem_release(st->r->sem, 1);
        } else if (st->what == 'n') {
            tr_notify_one(st->r->n);
        } else {
            // The helper holds the lock (the test took it for the first
            // round): hand it over, then queue for it again for the next
            // round, except after the last.
            tr_mutex_unlock(st->r->m);
            if (st->what == 'm') {
                TR_AWAIT(st, tr_mutex_lock(st->r->m, cx, &st->lk));
            }
        }
    }
    TR_END(st);
}

static const tr_task_spec reuse_helper_spec = {
    .name = "reuse_helper", .poll = reuse_helper_poll, .size = sizeof(reuse_helper)};

typedef struct reuse_sync_main {
    int tr_pc;
    reuse_sync *r;
    tr_join hj;
    tr_outcome ho;
    int i;
    uint8_t what;
    tr_sem_acquire_op acq;
    tr_mutex_lock_op lk;
    tr_notify_wait_op nw;
    tr_err err;
} reuse_sync_main;

static tr_poll
reuse_sync_main_poll(void *arg, tr_cx *cx)
{
    reuse_sync_main *st = arg;
    TR_BEGIN(st);
    st->hj = tu_spawn(cx, &reuse_helper_spec, &(reuse_helper){.r = st->r});
    for (st->i = 0; st->i < 2; st->i++) {
        st->what = 's';
        CHECK_ERR(st, tr_chan_try_send(st->r->ping, &st->what), TR_OK);
        TR_AWAIT(st, tr_sem_acquire(st->r->sem, cx, &st->acq, 1, &st->err));
        CHECK_ERR(st, st->err, TR_OK);
        CHECK_EQ(st, tr_sem_available(st->r->sem), 0); // the permit is ours

        st->what = 'n';
        CHECK_ERR(st, tr_chan_try_send(st->r->ping, &st->what), TR_OK);
        TR_AWAIT(st, tr_notify_wait(st->r->n, cx, &st->nw));

        st->what = st->i == 0 ? 'm' : 'M';
        CHECK_ERR(st, tr_chan_try_send(st->r->ping, &st->what), TR_OK);
        TR_AWAIT(st, tr_mutex_lock(st->r->m, cx, &st->lk));
        CHECK_ERR(st, tr_mutex_try_lock(st->r->m), TR_EAGAIN); // we hold it
        tr_mutex_unlock(st->r->m);
    }
    TR_AWAIT(st, tr_join_poll(&st->hj, cx, &st->ho));
    CHECK_ERR(st, st->ho.err, TR_OK);
    CHECK(st, !tr_mutex_is_locked(st->r->m));
    TR_END(st);
}

static void
reuse_sync_main_drop(void *arg)
{
    reuse_sync_main *st = arg;
    tr_join_release(&st->hj);
}

static const tr_task_spec reuse_sync_main_spec = {.name = "reuse_sync_main",
                                                  .poll = reuse_sync_main_poll,
                                                  .drop = reuse_sync_main_drop,
                                                  .size = sizeof(reuse_sync_main)};

static void
test_sync_op_reuse(void **state)
{
    (void)state;
    reuse_sync r;
    assert_int_equal(tr_sem_new(0, &r.sem), TR_OK);
    assert_int_equal(tr_mutex_new(&r.m), TR_OK);
    assert_int_equal(tr_notify_new(&r.n), TR_OK);
    assert_int_equal(tr_chan_new(1, 8, &r.ping), TR_OK);
    assert_int_equal(tr_mutex_try_lock(r.m), TR_OK); // the helper's, for round one
    tu_run_main(1, &reuse_sync_main_spec, &(reuse_sync_main){.r = &r});
    tr_chan_sender_release(r.ping);
    tr_chan_receiver_release(r.ping);
    tr_notify_free(r.n);
    tr_mutex_free(r.m);
    tr_sem_free(r.sem);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync_try_calls_and_counts),
        cmocka_unit_test(test_sync_try_would_block_is_eagain),
        cmocka_unit_test(test_sync_op_reuse),
        cmocka_unit_test(test_sem_fifo_no_barging),
        cmocka_unit_test(test_sem_cancel_waiting_head_unblocks_line),
        cmocka_unit_test(test_sem_cancel_granted_passes_permit_on),
        cmocka_unit_test(test_sem_close_fails_waiters),
        cmocka_unit_test(test_sem_mutex_charge_budget),
        cmocka_unit_test(test_mutex_fifo_handoff),
        cmocka_unit_test(test_mutex_cancel_waiting),
        cmocka_unit_test(test_mutex_cancel_handed_lock_passes_on),
        cmocka_unit_test(test_mutex_unlock_from_plain_thread),
        cmocka_unit_test(test_notify_one_stores_one_permit),
        cmocka_unit_test(test_notify_one_fifo_and_all),
        cmocka_unit_test(test_notify_cancelled_waiter_passes_on),
        cmocka_unit_test(test_mutex_stress_with_cancels),
        cmocka_unit_test(test_sem_stress_with_cancels),
        cmocka_unit_test(test_notify_from_plain_thread),
    };
    return tu_run(tests);
}
