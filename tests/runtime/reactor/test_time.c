// test_time: timers, sleeps, timeouts, intervals and the virtual clock
// (troupe/time.h). Ordering tests run on a virtual clock, so nothing here
// sleeps to wait for a timer; the few real-clock tests assert lower bounds
// only (a timer never fires early).
#include "../test_util.h"

#include "exec/exec.h"

static tr_rt *
vclock_rt(tr_clock **clk, unsigned workers)
{
    assert_int_equal(tr_clock_new_virtual(TR_NS_PER_SEC, clk), TR_OK);
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.workers = workers;
    cfg.clock = *clk;
    return tu_rt_new_cfg(&cfg);
}

// ---------------------------------------------------------------------------
// A sleeper: sleeps until its deadline, records the order it woke in.

typedef struct order_log {
    uint64_t *deadlines; // in wake order
    atomic_uint_fast64_t n;
    uint64_t want;
    tu_event all_done;
} order_log;

typedef struct sleeper {
    int tr_pc;
    tr_timer t;
    uint64_t deadline;
    order_log *log;
    atomic_int *drops;
} sleeper;

static tr_poll
sleeper_poll(void *arg, tr_cx *cx)
{
    sleeper *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_sleep_until(&st->t, cx, st->deadline));
    TU_CHECK(tr_now(tr_cx_rt(cx)) >= st->deadline); // never early
    TU_CHECK(!tr_timer_armed(&st->t));
    if (st->log != NULL) {
        uint64_t i = atomic_fetch_add(&st->log->n, 1);
        st->log->deadlines[i] = st->deadline;
        if (i + 1 == st->log->want) {
            tu_event_set(&st->log->all_done);
        }
    }
    TR_END(st);
}

static void
sleeper_drop(void *arg)
{
    sleeper *st = arg;
    tr_timer_abandon(&st->t);
    if (st->drops != NULL) {
        atomic_fetch_add(st->drops, 1);
    }
}

static const tr_task_spec sleeper_spec = {
    .name = "sleeper", .poll = sleeper_poll, .drop = sleeper_drop, .size = sizeof(sleeper)};

static tr_join
spawn_sleeper(tr_rt *rt, uint64_t deadline, order_log *log, atomic_int *drops)
{
    tr_join j = TR_JOIN_NONE;
    sleeper init = {.deadline = deadline, .log = log, .drops = drops};
    TU_CHECK(tr_spawn(rt, &sleeper_spec, NULL, &init, &j) == TR_OK);
    return j;
}

// ---------------------------------------------------------------------------
// 100,000 timers on the virtual clock fire in deadline order.

typedef struct many_root {
    int tr_pc;
    tr_clock *clk;
    order_log *log;
    uint64_t n;
    uint64_t i;
    uint64_t rng;
    uint64_t span_ns;
} many_root;

static uint64_t
xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static tr_poll
many_root_poll(void *arg, tr_cx *cx)
{
    many_root *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->n; st->i++) {
        uint64_t dl = tr_now(rt) + 1 + xorshift(&st->rng) % st->span_ns;
        tr_join j = spawn_sleeper(rt, dl, st->log, NULL);
        tr_join_release(&j);
    }
    // One yield: on one FIFO worker, every sleeper runs (and arms) first.
    TR_YIELD(st, cx);
    TU_CHECK(tr_rt_timers(rt) == st->n);
    tr_clock_advance(st->clk, st->span_ns + TR_NS_PER_MS);
    TR_AWAIT(st, tu_event_poll(&st->log->all_done, cx));
    TR_END(st);
}

static const tr_task_spec many_root_spec = {
    .name = "many_root", .poll = many_root_poll, .size = sizeof(many_root)};

static void
run_many(uint64_t n, uint64_t span_ns)
{
    tr_clock *clk;
    tr_rt *rt = vclock_rt(&clk, 1);
    order_log log = {.want = n};
    log.deadlines = calloc(n, sizeof(uint64_t));
    tu_event_init(&log.all_done);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 6 * TU_WAIT_MS);
    many_root init = {
        .clk = clk, .log = &log, .n = n, .rng = 0x9e3779b97f4a7c15ull, .span_ns = span_ns};
    assert_int_equal(tr_rt_run(rt, &many_root_spec, NULL, &init, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    tu_checks_pass();
    assert_int_equal(atomic_load(&log.n), n);
    // Deadline order at the wheel's resolution (1 ms; a deadline counts
    // from the millisecond it rounds up to).
    for (uint64_t i = 1; i < n; i++) {
        uint64_t a = (log.deadlines[i - 1] + TR_NS_PER_MS - 1) / TR_NS_PER_MS;
        uint64_t b = (log.deadlines[i] + TR_NS_PER_MS - 1) / TR_NS_PER_MS;
        if (a > b) {
            fail_msg("timer %llu (deadline %llu ms) woke before timer %llu (%llu ms)",
                     (unsigned long long)i, (unsigned long long)b, (unsigned long long)(i - 1),
                     (unsigned long long)a);
        }
    }
    assert_int_equal(tr_rt_timers(rt), 0);
    tu_event_destroy(&log.all_done);
    free(log.deadlines);
    tu_rt_free_clean(rt);
    tr_clock_free(clk);
}

static void
test_time_100k_timers_in_deadline_order(void **state)
{
    (void)state;
    run_many(100000, TR_NS_PER_SEC); // the case: [0, 1 s)
}

static void
test_time_timers_across_wheel_levels(void **state)
{
    (void)state;
    // Spread over ~3 days, so every level but the last is used and
    // timers cascade down through several levels before firing.
    run_many(20000, 3ull * 24 * 3600 * TR_NS_PER_SEC);
}

// ---------------------------------------------------------------------------
// Deadlines past the wheel's span (2^36 ms) are re-filed and still fire.

typedef struct far_root {
    int tr_pc;
    tr_clock *clk;
    order_log *log;
} far_root;

static tr_poll
far_root_poll(void *arg, tr_cx *cx)
{
    far_root *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    {
        uint64_t now = tr_now(rt);
        uint64_t year = 365ull * 24 * 3600 * TR_NS_PER_SEC;
        uint64_t dls[4] = {now + 5 * year, now + 3 * year, now + 10 * TR_NS_PER_MS, now + year};
        for (int i = 0; i < 4; i++) {
            tr_join j = spawn_sleeper(rt, dls[i], st->log, NULL);
            tr_join_release(&j);
        }
    }
    TR_YIELD(st, cx);
    TU_CHECK(tr_rt_timers(rt) == 4);
    // Advance a month at a time: each step fires what is due.
    while (atomic_load(&st->log->n) < 4) {
        tr_clock_advance(st->clk, 30ull * 24 * 3600 * TR_NS_PER_SEC);
        TR_YIELD(st, cx);
    }
    TR_END(st);
}

static const tr_task_spec far_root_spec = {
    .name = "far_root", .poll = far_root_poll, .size = sizeof(far_root)};

static void
test_time_far_future_deadlines(void **state)
{
    (void)state;
    tr_clock *clk;
    tr_rt *rt = vclock_rt(&clk, 1);
    order_log log = {.want = 4};
    log.deadlines = calloc(4, sizeof(uint64_t));
    tu_event_init(&log.all_done);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    assert_int_equal(
        tr_rt_run(rt, &far_root_spec, NULL, &(far_root){.clk = clk, .log = &log}, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    tu_checks_pass();
    for (int i = 1; i < 4; i++) {
        assert_true(log.deadlines[i - 1] < log.deadlines[i]);
    }
    tu_event_destroy(&log.all_done);
    free(log.deadlines);
    tu_rt_free_clean(rt);
    tr_clock_free(clk);
}

// ---------------------------------------------------------------------------
// A virtual clock advanced from another thread wakes a parked runtime, in
// steps: a timer fires at the step that reaches its deadline, not before.

typedef struct step_ctl {
    tr_rt *rt;
    tr_clock *clk;
    order_log *log;
    int steps;
    bool timed_out;
    uint64_t fired_at_step[8];
} step_ctl;

static bool
wait_until(atomic_uint_fast64_t *v, uint64_t want)
{
    uint64_t deadline = tu_now_ns() + (uint64_t)TU_WAIT_MS * 1000000u;
    while (atomic_load(v) < want) {
        if (tu_now_ns() > deadline) {
            return false;
        }
        sched_yield();
    }
    return true;
}

static void *
step_thread(void *arg)
{
    step_ctl *c = arg;
    // The sleepers (deadlines base + 10, 20, ..., 80 ms) arm first.
    uint64_t deadline = tu_now_ns() + (uint64_t)TU_WAIT_MS * 1000000u;
    while (tr_rt_timers(c->rt) < 8) {
        if (tu_now_ns() > deadline) {
            c->timed_out = true;
            return NULL;
        }
        sched_yield();
    }
    for (int k = 1; k <= 8; k++) {
        tr_clock_advance(c->clk, 10 * TR_NS_PER_MS);
        if (!wait_until(&c->log->n, (uint64_t)k)) {
            c->timed_out = true;
            return NULL;
        }
        c->fired_at_step[k - 1] = atomic_load(&c->log->n);
    }
    return NULL;
}

typedef struct step_root {
    int tr_pc;
    order_log *log;
} step_root;

static tr_poll
step_root_poll(void *arg, tr_cx *cx)
{
    step_root *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tu_event_poll(&st->log->all_done, cx));
    TR_END(st);
}

static const tr_task_spec step_root_spec = {
    .name = "step_root", .poll = step_root_poll, .size = sizeof(step_root)};

static void
run_steps(unsigned workers)
{
    tr_clock *clk;
    tr_rt *rt = vclock_rt(&clk, workers);
    order_log log = {.want = 8};
    log.deadlines = calloc(8, sizeof(uint64_t));
    tu_event_init(&log.all_done);
    uint64_t base = tr_now(rt);
    for (int i = 8; i >= 1; i--) {
        tr_join j = spawn_sleeper(rt, base + (uint64_t)i * 10 * TR_NS_PER_MS, &log, NULL);
        tr_join_release(&j);
    }
    step_ctl c = {.rt = rt, .clk = clk, .log = &log};
    pthread_t thr;
    tu_thread_start(&thr, step_thread, &c);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    assert_int_equal(tr_rt_run(rt, &step_root_spec, NULL, &(step_root){.log = &log}, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    tu_thread_join(thr);
    tu_checks_pass();
    assert_false(c.timed_out);
    for (int k = 0; k < 8; k++) {
        assert_int_equal(c.fired_at_step[k], k + 1); // one per step, none early
        assert_int_equal(log.deadlines[k], base + (uint64_t)(k + 1) * 10 * TR_NS_PER_MS);
    }
    tu_event_destroy(&log.all_done);
    free(log.deadlines);
    tu_rt_free_clean(rt);
    tr_clock_free(clk);
}

static void
test_time_virtual_steps_one_worker(void **state)
{
    (void)state;
    run_steps(1);
}

static void
test_time_virtual_steps_three_workers(void **state)
{
    (void)state;
    run_steps(3);
}

// ---------------------------------------------------------------------------
// Real clock: a sleep lasts at least its duration.

typedef struct real_sleep {
    int tr_pc;
    tr_timer t;
    uint64_t start, end;
} real_sleep;

static tr_poll
real_sleep_poll(void *arg, tr_cx *cx)
{
    real_sleep *st = arg;
    TR_BEGIN(st);
    st->start = tr_now(tr_cx_rt(cx));
    TR_AWAIT(st, tr_sleep(&st->t, cx, 30 * TR_NS_PER_MS));
    st->end = tr_now(tr_cx_rt(cx));
    // The same timer sleeps again.
    TR_AWAIT(st, tr_sleep(&st->t, cx, 5 * TR_NS_PER_MS));
    TR_END(st);
}

static const tr_task_spec real_sleep_spec = {
    .name = "real_sleep", .poll = real_sleep_poll, .size = sizeof(real_sleep)};

static void
test_time_real_sleep_not_early(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    uint64_t t0 = tu_now_ns();
    assert_int_equal(tr_rt_run(rt, &real_sleep_spec, NULL, NULL, NULL), TR_OK);
    uint64_t t1 = tu_now_ns();
    assert_true(t1 - t0 >= 35 * TR_NS_PER_MS);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Timeout: expiry gives the inner operation up (here: aborts a join);
// an inner that completes first disarms the deadline.

typedef struct to_root {
    int tr_pc;
    tr_timeout to;
    tr_join j;
    tr_outcome out;
    atomic_int *polls, *drops;
    bool expired1, expired2;
    uint64_t t0, t1;
    struct to_root *snap; // the test's copy of the state at the end
} to_root;

static tr_poll
to_root_poll(void *arg, tr_cx *cx)
{
    to_root *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    TU_CHECK(tr_spawn(rt, &tu_stuck_spec, NULL, TU_STUCK(st->polls, st->drops), &st->j) == TR_OK);
    st->t0 = tr_now(rt);
    TR_AWAIT(st, tr_timeout_poll(&st->to, cx, 20 * TR_NS_PER_MS, tr_join_poll(&st->j, cx, &st->out),
                                 &st->expired1));
    st->t1 = tr_now(rt);
    if (st->expired1) {
        tr_task_abort(&st->j); // give the inner operation up
    }
    // The join now completes (cancelled) well before a 10 s deadline, on
    // the same op (back to its zeroed state after the expiry).
    TR_AWAIT(st, tr_timeout_poll(&st->to, cx, 10 * TR_NS_PER_SEC,
                                 tr_join_poll(&st->j, cx, &st->out), &st->expired2));
    TU_CHECK(st->out.err == TR_ECANCELED);
    TU_CHECK(tr_rt_timers(rt) == 0); // no timer armed, so st->to's is not
    *st->snap = *st;
    TR_END(st);
}

static void
to_root_drop(void *arg)
{
    to_root *st = arg;
    tr_timeout_abandon(&st->to);
}

static const tr_task_spec to_root_spec = {
    .name = "to_root", .poll = to_root_poll, .drop = to_root_drop, .size = sizeof(to_root)};

static void
test_time_timeout_cancels_inner(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    atomic_int polls = 0, drops = 0;
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    to_root end = {0}, *r = &end;
    to_root init = {.polls = &polls, .drops = &drops, .snap = &end};
    assert_int_equal(tr_rt_run(rt, &to_root_spec, NULL, &init, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    tu_checks_pass();
    assert_true(r->expired1);
    assert_false(r->expired2);
    assert_true(r->t1 - r->t0 >= 20 * TR_NS_PER_MS);
    assert_int_equal(atomic_load(&drops), 1); // the inner task was cancelled
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Interval: the first tick is immediate; a late task skips missed ticks.

typedef struct iv_root {
    int tr_pc;
    tr_interval iv;
    tr_clock *clk;
    int ticks;
    uint64_t t_first, t_last;
    struct iv_root *snap; // the test's copy of the state at the end
} iv_root;

static tr_poll
iv_root_poll(void *arg, tr_cx *cx)
{
    iv_root *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    tr_interval_init(&st->iv, 10 * TR_NS_PER_MS);
    TR_AWAIT(st, tr_interval_tick(&st->iv, cx));
    st->t_first = tr_now(rt);
    st->ticks = 1;
    // Late by 35 ms: the next tick is due (at +10), the ones at +20 and +30
    // are skipped, and the one after comes at +40.
    tr_clock_advance(st->clk, 35 * TR_NS_PER_MS);
    TR_AWAIT(st, tr_interval_tick(&st->iv, cx));
    st->ticks++;
    TU_CHECK(tr_interval_missed(&st->iv) == 2);
    TU_CHECK(tr_interval_next(&st->iv) == st->t_first + 40 * TR_NS_PER_MS);
    tr_clock_advance(st->clk, 5 * TR_NS_PER_MS);
    TR_AWAIT(st, tr_interval_tick(&st->iv, cx));
    st->ticks++;
    st->t_last = tr_now(rt);
    *st->snap = *st;
    TR_END(st);
}

static void
iv_root_drop(void *arg)
{
    iv_root *st = arg;
    tr_interval_abandon(&st->iv);
}

static const tr_task_spec iv_root_spec = {
    .name = "iv_root", .poll = iv_root_poll, .drop = iv_root_drop, .size = sizeof(iv_root)};

static void
test_time_interval_skips_missed_ticks(void **state)
{
    (void)state;
    tr_clock *clk;
    tr_rt *rt = vclock_rt(&clk, 1);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    iv_root end = {0}, *r = &end;
    assert_int_equal(tr_rt_run(rt, &iv_root_spec, NULL, &(iv_root){.clk = clk, .snap = &end}, NULL),
                     TR_OK);
    tu_watchdog_stop(&wd);
    tu_checks_pass();
    assert_int_equal(r->ticks, 3);
    assert_int_equal(r->t_last - r->t_first, 40 * TR_NS_PER_MS);
    tu_rt_free_clean(rt);
    tr_clock_free(clk);
}

// ---------------------------------------------------------------------------
// Cancelling a sleeping task disarms its timer (its drop does); freeing a
// runtime with sleepers does too.

static void
test_time_cancel_disarms(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    atomic_int drops = 0;
    tr_join js[50];
    for (int i = 0; i < 50; i++) {
        js[i] = spawn_sleeper(rt, tr_now(rt) + 3600 * TR_NS_PER_SEC, NULL, &drops);
    }
    // Let them arm: run the runtime until it parks, via a root that yields.
    assert_int_equal(tr_rt_run(rt, &tu_value_spec, NULL, TU_VALUE(3, 7, NULL), NULL), TR_OK);
    assert_int_equal(tr_rt_timers(rt), 50);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(tr_task_abort(&js[i]), TR_OK);
        tr_outcome o;
        // Cancels are carried out by a worker: run until each join is done.
        while (!tr_join_is_finished(&js[i])) {
            assert_int_equal(tr_rt_run(rt, &tu_value_spec, NULL, TU_VALUE(1, 0, NULL), NULL),
                             TR_OK);
        }
        assert_int_equal(tr_join_wait(&js[i], &o), TR_OK);
        assert_int_equal(o.err, TR_ECANCELED);
    }
    assert_int_equal(atomic_load(&drops), 50);
    assert_int_equal(tr_rt_timers(rt), 0);
    tu_rt_free_clean(rt);
}

static void
test_time_free_with_armed_timers(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    atomic_int drops = 0;
    for (int i = 0; i < 100; i++) {
        tr_join j = spawn_sleeper(rt, tr_now(rt) + 3600 * TR_NS_PER_SEC, NULL, &drops);
        tr_join_release(&j);
    }
    assert_int_equal(tr_rt_run(rt, &tu_value_spec, NULL, TU_VALUE(2, 1, NULL), NULL), TR_OK);
    assert_int_equal(tr_rt_timers(rt), 100);
    tr_rt_free(rt); // cancels them: each drop disarms its timer
    assert_int_equal(atomic_load(&drops), 100);
}

// ---------------------------------------------------------------------------
// Many short real-clock sleeps on several workers (the wheel's lock, the
// driver hand-over, cross-worker wakes: TSan's case).

typedef struct multi_root {
    int tr_pc;
    order_log *log;
    uint64_t n;
} multi_root;

static tr_poll
multi_root_poll(void *arg, tr_cx *cx)
{
    multi_root *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    for (uint64_t i = 0; i < st->n; i++) {
        tr_join j = spawn_sleeper(rt, tr_now(rt) + (i % 23) * TR_NS_PER_MS, st->log, NULL);
        tr_join_release(&j);
    }
    TR_AWAIT(st, tu_event_poll(&st->log->all_done, cx));
    TR_END(st);
}

static const tr_task_spec multi_root_spec = {
    .name = "multi_root", .poll = multi_root_poll, .size = sizeof(multi_root)};

static void
test_time_real_sleeps_many_workers(void **state)
{
    (void)state;
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.workers = 4;
    cfg.sched = TR_SCHED_WS;
    tr_rt *rt = tu_rt_new_cfg(&cfg);
    uint64_t n = 3000;
    order_log log = {.want = n};
    log.deadlines = calloc(n, sizeof(uint64_t));
    tu_event_init(&log.all_done);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    assert_int_equal(
        tr_rt_run(rt, &multi_root_spec, NULL, &(multi_root){.log = &log, .n = n}, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    tu_checks_pass();
    assert_int_equal(atomic_load(&log.n), n);
    tu_event_destroy(&log.all_done);
    free(log.deadlines);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Misuse and edges.

static void
test_time_clock_one_runtime(void **state)
{
    (void)state;
    tr_clock *clk;
    tr_rt *rt = vclock_rt(&clk, 1);
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.clock = clk;
    tr_rt *rt2 = NULL;
    assert_int_equal(tr_rt_new(&cfg, &rt2), TR_EBUSY);
    assert_int_equal(tr_now(rt), TR_NS_PER_SEC);
    tr_clock_advance(clk, 5);
    assert_int_equal(tr_now(rt), TR_NS_PER_SEC + 5);
    assert_int_equal(tr_clock_now(clk), TR_NS_PER_SEC + 5);
    tu_rt_free_clean(rt);
    // Free again: another runtime may use it now.
    assert_int_equal(tr_rt_new(&cfg, &rt2), TR_OK);
    tr_rt_free(rt2);
    tr_clock_free(clk);
}

typedef struct past_root {
    int tr_pc;
    tr_timer t;
    int polls;
} past_root;

static tr_poll
past_root_poll(void *arg, tr_cx *cx)
{
    past_root *st = arg;
    st->polls++;
    TR_BEGIN(st);
    // A deadline in the past, and a zero sleep: ready at the first poll.
    TR_AWAIT(st, tr_sleep_until(&st->t, cx, 0));
    TR_AWAIT(st, tr_sleep(&st->t, cx, 0));
    TU_CHECK(st->polls == 1);
    TR_END(st);
}

static const tr_task_spec past_root_spec = {
    .name = "past_root", .poll = past_root_poll, .size = sizeof(past_root)};

static void
test_time_past_deadline_ready_at_once(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    assert_int_equal(tr_rt_run(rt, &past_root_spec, NULL, NULL, NULL), TR_OK);
    tu_checks_pass();
    assert_int_equal(tr_rt_timers(rt), 0);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Long polls. A worker services its timers after any poll once the coarse
// clock has moved, not only every 64 polls: beside a task whose every poll
// is long, a due timer fires after the poll it fell due in. Replayed on the
// virtual clock: each poll of the busy task moves virtual time 2 ms and
// lasts until the real coarse clock has ticked (its resolution, 4 ms here),
// as a 50 ms computation would; the sleeper (1 ms) must run within three of
// its polls. With the 64-poll rule alone it waited about 64.

typedef struct lp_shared {
    tr_clock *clk;
    atomic_int busy_polls;
    atomic_int polls_at_wake;
    atomic_bool done;
    atomic_bool slow; // a coarse tick did not come in time
} lp_shared;

typedef struct lp_busy {
    int tr_pc;
    lp_shared *sh;
} lp_busy;

static tr_poll
lp_busy_poll(void *arg, tr_cx *cx)
{
    lp_busy *st = arg;
    lp_shared *sh = st->sh;
    if (atomic_load(&sh->done) || atomic_load(&sh->busy_polls) >= 200) {
        return TR_READY;
    }
    tr_clock_advance(sh->clk, 2 * TR_NS_PER_MS);
    if (!tu_long_poll()) {
        atomic_store(&sh->slow, true);
    }
    atomic_fetch_add(&sh->busy_polls, 1);
    tr_cx_yield(cx);
    return TR_PENDING;
}

static const tr_task_spec lp_busy_spec = {
    .name = "busy", .poll = lp_busy_poll, .size = sizeof(lp_busy)};

typedef struct lp_sleeper {
    int tr_pc;
    lp_shared *sh;
    tr_timer t;
} lp_sleeper;

static tr_poll
lp_sleeper_poll(void *arg, tr_cx *cx)
{
    lp_sleeper *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_sleep(&st->t, cx, TR_NS_PER_MS));
    atomic_store(&st->sh->polls_at_wake, atomic_load(&st->sh->busy_polls));
    atomic_store(&st->sh->done, true);
    TR_END(st);
}

static void
lp_sleeper_drop(void *arg)
{
    lp_sleeper *st = arg;
    tr_timer_abandon(&st->t);
}

static const tr_task_spec lp_sleeper_spec = {.name = "sleeper",
                                             .poll = lp_sleeper_poll,
                                             .drop = lp_sleeper_drop,
                                             .size = sizeof(lp_sleeper)};

typedef struct lp_root {
    int tr_pc;
    lp_shared *sh;
    tr_join j[2];
    tr_outcome out;
    int i;
} lp_root;

static tr_poll
lp_root_poll(void *arg, tr_cx *cx)
{
    lp_root *st = arg;
    TR_BEGIN(st);
    st->j[0] = tu_spawn(cx, &lp_sleeper_spec, &(lp_sleeper){.sh = st->sh});
    st->j[1] = tu_spawn(cx, &lp_busy_spec, &(lp_busy){.sh = st->sh});
    for (st->i = 0; st->i < 2; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->j[st->i], cx, &st->out));
    }
    TR_END(st);
}

static const tr_task_spec lp_root_spec = {
    .name = "root", .poll = lp_root_poll, .size = sizeof(lp_root)};

static void
test_time_timer_fires_after_long_poll(void **state)
{
    (void)state;
    lp_shared sh = {0};
    assert_int_equal(tr_clock_new_virtual(TR_NS_PER_SEC, &sh.clk), TR_OK);
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.workers = 1;
    cfg.clock = sh.clk;
    cfg.ignore_env = true; // deterministic mode keeps to the poll count
    tr_rt *rt = tu_rt_new_cfg(&cfg);
    assert_int_equal(tr_rt_run(rt, &lp_root_spec, NULL, &(lp_root){.sh = &sh}, NULL), TR_OK);
    tu_checks_pass();
    assert_false(atomic_load(&sh.slow));
    assert_true(atomic_load(&sh.done));
    int n = atomic_load(&sh.polls_at_wake);
    print_message("the 1 ms sleeper ran after %d long polls\n", n);
    if (n < 1 || n > 3) {
        fail_msg("the sleeper woke after %d long polls of its neighbour (want 1-3)", n);
    }
    tu_rt_free_clean(rt);
    tr_clock_free(sh.clk);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_100k_timers_in_deadline_order),
        cmocka_unit_test(test_time_timers_across_wheel_levels),
        cmocka_unit_test(test_time_far_future_deadlines),
        cmocka_unit_test(test_time_virtual_steps_one_worker),
        cmocka_unit_test(test_time_virtual_steps_three_workers),
        cmocka_unit_test(test_time_real_sleep_not_early),
        cmocka_unit_test(test_time_timeout_cancels_inner),
        cmocka_unit_test(test_time_interval_skips_missed_ticks),
        cmocka_unit_test(test_time_cancel_disarms),
        cmocka_unit_test(test_time_free_with_armed_timers),
        cmocka_unit_test(test_time_real_sleeps_many_workers),
        cmocka_unit_test(test_time_clock_one_runtime),
        cmocka_unit_test(test_time_past_deadline_ready_at_once),
        cmocka_unit_test(test_time_timer_fires_after_long_poll),
    };
    return tu_run(tests);
}
