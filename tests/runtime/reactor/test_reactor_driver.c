// test_reactor_driver: adversarial tests of the reactor's driver and of the
// parking protocol around it (reactor/reactor.c, exec/park.c), and of the
// timing wheel as the driver sees it (reactor/timer.c): lost wake-ups
// between a waiter and the driver, the driver's hand-over while a worker is
// busy, timers armed on another worker than the driver's, a virtual clock
// advanced from outside, a timer armed while another worker turns the
// wheel, the eventfd written only while the driver is blocked, and IO
// serviced behind long polls.
//
// The hand-over and wheel-race tests each reproduced a defect of the
// runtime before it was fixed.
#define _GNU_SOURCE
#include "reactor_test.h"

// ===========================================================================
// Lost wake-ups: readers of eventfds that a plain thread writes in rounds,
// sometimes while every worker sleeps (the driver must be woken by the
// kernel's edge), sometimes while they are busy (maintenance turns, the
// driver's hand-over). A lost edge stalls a round.

typedef struct edge_ctl {
    tr_rt *rt;
    int *fds;
    unsigned n, rounds;
    atomic_uint_fast64_t got;
    bool timed_out;
} edge_ctl;

typedef struct edge_task {
    int tr_pc;
    tr_io *io;
    edge_ctl *c;
    uint64_t v, total;
    size_t n;
    tr_err ioerr;
} edge_task;

static tr_poll
edge_poll(void *arg, tr_cx *cx)
{
    edge_task *st = arg;
    TR_BEGIN(st);
    while (st->total < st->c->rounds) {
        TR_AWAIT(st,
                 tr_io_poll_op(st->io, cx, TR_IO_READ, efd_read_fn, &st->v, &st->n, &st->ioerr));
        TU_CHECK(st->n == sizeof(uint64_t));
        if (st->n != sizeof(uint64_t)) {
            break;
        }
        st->total += st->v;
        atomic_fetch_add(&st->c->got, st->v);
    }
    TR_END(st);
}

static void
edge_drop(void *arg)
{
    edge_task *st = arg;
    tr_io_close(st->io);
}

static const tr_task_spec edge_spec = {
    .name = "edge", .poll = edge_poll, .drop = edge_drop, .size = sizeof(edge_task)};

static void *
edge_thread(void *arg)
{
    edge_ctl *c = arg;
    for (unsigned r = 1; r <= c->rounds; r++) {
        if (r % 3 == 0) {
            // Everyone asleep: the edge must wake the driver in epoll_wait.
            (void)wait_idle(c->rt, 0, TU_WAIT_MS);
        }
        for (unsigned i = 0; i < c->n; i++) {
            efd_add(c->fds[i], 1);
        }
        if (!wait_u64(&c->got, (uint64_t)c->n * r, TU_WAIT_MS)) {
            c->timed_out = true;
            return NULL;
        }
    }
    return NULL;
}

static void
run_edges(unsigned workers, tr_sched_kind sched)
{
    tr_rt *rt = rt_new(workers, sched, NULL);
    edge_ctl c = {.rt = rt, .n = 8, .rounds = BY_SAN(300, 200)};
    c.fds = calloc(c.n, sizeof(int));
    tr_join *js = calloc(c.n, sizeof(tr_join));
    for (unsigned i = 0; i < c.n; i++) {
        c.fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        assert_true(c.fds[i] >= 0);
        edge_task t = {.c = &c};
        assert_int_equal(tr_io_open(rt, c.fds[i], 0, &t.io), TR_OK);
        tu_start(rt, &edge_spec, &t, &js[i]);
    }
    pthread_t thr;
    tu_thread_start(&thr, edge_thread, &c);
    unsigned bad = run_joinall(rt, js, c.n, 6 * TU_WAIT_MS);
    tu_thread_join(thr);
    tu_checks_pass();
    assert_false(c.timed_out);
    assert_int_equal(bad, 0);
    assert_int_equal(atomic_load(&c.got), (uint64_t)c.n * c.rounds);
    assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
    free(js);
    free(c.fds);
    tu_rt_free_clean(rt);
}

static void
test_rx_external_edges_rounds(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++) {
        run_edges(2, all_scheds[s]);
        run_edges(3, all_scheds[s]);
    }
}

// ===========================================================================
// The driver's hand-over. Two workers: one waits in epoll (the driver), the
// other sleeps on its futex. An edge wakes task X on the driver, and X then
// runs a long poll (as a task doing blocking work or heavy computation
// would). IO and timers of other tasks must still progress meanwhile: the
// futex sleeper has to take the driver over. X blocks (bounded) until task
// Y, waiting for a later edge (or a timer that comes due meanwhile), has
// run.

#define LP_SPIN_NS (3 * TR_NS_PER_SEC)
#define LP_TIMER_NS (250 * TR_NS_PER_MS)

typedef struct lp_ctl {
    tr_rt *rt;
    bool timer_mode;
    int x_wfd, y_wfd;
    atomic_bool x_spinning, y_done, y_done_early, x_saw_y;
    atomic_int x_worker, y_worker;
    bool not_idle, no_spin;
    pthread_t main_thread; // worker 0 (inside block_on)
    tu_event y_ev;         // Y has run
    bool other_ran;        // the other worker's thread got CPU during X's poll
    atomic_uint not_ok;    // joins that did not give TR_OK
} lp_ctl;

// lp_thread_cpu_ns reads a thread's CPU clock.
static uint64_t
lp_thread_cpu_ns(pthread_t t)
{
    clockid_t cid;
    struct timespec ts;
    if (pthread_getcpuclockid(t, &cid) != 0 || clock_gettime(cid, &ts) != 0) {
        return 0;
    }
    return (uint64_t)ts.tv_sec * TR_NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

typedef struct lp_x {
    int tr_pc;
    lp_ctl *c;
    tr_io *io;
    char b;
    size_t n;
    tr_err ioerr;
} lp_x;

static tr_poll
lp_x_poll(void *arg, tr_cx *cx)
{
    lp_x *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_read(st->io, cx, &st->b, 1, &st->n, &st->ioerr));
    TU_CHECK(st->n == 1);
    atomic_store(&st->c->x_worker, (int)tr_cx_worker(cx));
    atomic_store(&st->c->y_done_early, atomic_load(&st->c->y_done));
    atomic_store(&st->c->x_spinning, true);
    {
        // The long poll: blocking work (it waits for Y, at most
        // LP_SPIN_NS), which leaves the CPU to the other worker. On a busy
        // machine the OS may still keep that worker's thread off the CPU
        // the whole time: then the round proves nothing either way.
        lp_ctl *c = st->c;
        pthread_t other = tr_cx_worker(cx) == 0 ? c->rt->r_workers[1].w_thread : c->main_thread;
        uint64_t cpu0 = lp_thread_cpu_ns(other);
        tu_event_wait(&c->y_ev, (unsigned)(LP_SPIN_NS / TR_NS_PER_MS));
        c->other_ran = lp_thread_cpu_ns(other) != cpu0;
    }
    atomic_store(&st->c->x_saw_y, atomic_load(&st->c->y_done));
    TR_END(st);
}

static void
lp_x_drop(void *arg)
{
    lp_x *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec lp_x_spec = {
    .name = "lp_x", .poll = lp_x_poll, .drop = lp_x_drop, .size = sizeof(lp_x)};

typedef struct lp_y {
    int tr_pc;
    lp_ctl *c;
    tr_io *io;
    tr_timer t;
    char b;
    size_t n;
    tr_err ioerr;
} lp_y;

static tr_poll
lp_y_poll(void *arg, tr_cx *cx)
{
    lp_y *st = arg;
    TR_BEGIN(st);
    if (st->c->timer_mode) {
        TR_AWAIT(st, tr_sleep(&st->t, cx, LP_TIMER_NS));
    } else {
        TR_AWAIT(st, tr_read(st->io, cx, &st->b, 1, &st->n, &st->ioerr));
        TU_CHECK(st->n == 1);
    }
    atomic_store(&st->c->y_worker, (int)tr_cx_worker(cx));
    atomic_store(&st->c->y_done, true);
    tu_event_set(&st->c->y_ev);
    TR_END(st);
}

static void
lp_y_drop(void *arg)
{
    lp_y *st = arg;
    tr_timer_abandon(&st->t);
    tr_io_release(st->io);
}

static const tr_task_spec lp_y_spec = {
    .name = "lp_y", .poll = lp_y_poll, .drop = lp_y_drop, .size = sizeof(lp_y)};

static void *
lp_thread(void *arg)
{
    lp_ctl *c = arg;
    // Worker 0 (in block_on, its root joining) and worker 1 both asleep:
    // one in epoll, one on its futex.
    if (!wait_idle(c->rt, 0, TU_WAIT_MS)) {
        c->not_idle = true;
    }
    TU_CHECK(write(c->x_wfd, "x", 1) == 1);
    uint64_t deadline = tu_now_ns() + (uint64_t)TU_WAIT_MS * TR_NS_PER_MS;
    while (!atomic_load(&c->x_spinning)) {
        if (tu_now_ns() > deadline) {
            c->no_spin = true;
            break;
        }
        sched_yield();
    }
    if (!c->timer_mode) {
        TU_CHECK(write(c->y_wfd, "y", 1) == 1);
    }
    return NULL;
}

// The round's root: spawns Y, then X, in its first poll (on this thread,
// which is worker 0 inside block_on), then joins both.
typedef struct lp_root {
    int tr_pc;
    lp_ctl *c;
    tr_io *io[2]; // Y's and X's read ends: a reference each, for the task
    tr_join js[2];
    unsigned i;
    tr_outcome o;
} lp_root;

static tr_poll
lp_root_poll(void *arg, tr_cx *cx)
{
    lp_root *st = arg;
    TR_BEGIN(st);
    st->js[0] = tu_spawn(cx, &lp_y_spec, &(lp_y){.c = st->c, .io = st->io[0]});
    st->js[1] = tu_spawn(cx, &lp_x_spec, &(lp_x){.c = st->c, .io = st->io[1]});
    for (st->i = 0; st->i < 2; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->js[st->i], cx, &st->o));
        if (st->o.err != TR_OK) {
            atomic_fetch_add(&st->c->not_ok, 1);
        }
    }
    TR_END(st);
}

static const tr_task_spec lp_root_spec = {
    .name = "lp_root", .poll = lp_root_poll, .size = sizeof(lp_root)};

// lp_round runs one round; returns 1 when Y ran during X's long poll, 0
// when it did not, -1 when the round was inconclusive (Y done too early, or
// the other worker's thread got no CPU during X's poll).
static int
lp_round(tr_sched_kind sched, bool timer_mode)
{
    tr_rt *rt = rt_new(2, sched, NULL);
    lp_ctl c = {.rt = rt, .timer_mode = timer_mode, .main_thread = pthread_self()};
    tu_event_init(&c.y_ev);
    atomic_init(&c.x_worker, -1);
    atomic_init(&c.y_worker, -1);
    tr_io *xr, *xw, *yr, *yw;
    make_pipe(rt, &xr, &xw);
    make_pipe(rt, &yr, &yw);
    c.x_wfd = tr_io_fd(xw);
    c.y_wfd = tr_io_fd(yw);
    // The root starts Y, then X, in one poll: rr deals them to the two
    // workers in turn. Started from this thread before block_on, the
    // root's own deal could fall between theirs (worker 1 drains the Spawn
    // messages as they come) and put both on one worker, where rr, which
    // never moves a task, leaves Y behind X's long poll by design.
    lp_root init = {.c = &c, .io = {tr_io_ref(yr), tr_io_ref(xr)}};
    pthread_t thr;
    tu_thread_start(&thr, lp_thread, &c);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 6 * TU_WAIT_MS);
    assert_int_equal(tr_rt_run(rt, &lp_root_spec, NULL, &init, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    unsigned bad = atomic_load(&c.not_ok);
    tu_thread_join(thr);
    tu_checks_pass();
    assert_int_equal(bad, 0);
    assert_false(c.not_idle);
    assert_false(c.no_spin);
    if (sched == TR_SCHED_RR) {
        assert_int_not_equal(atomic_load(&c.x_worker), atomic_load(&c.y_worker));
    }
    int rv = atomic_load(&c.y_done_early) ? -1
             : atomic_load(&c.x_saw_y)    ? 1
             : !c.other_ran               ? -1
                                          : 0;
    print_message("  [%s, %s] X on worker %d, Y on worker %d: %s\n", sched_str(sched),
                  timer_mode ? "timer" : "io", atomic_load(&c.x_worker), atomic_load(&c.y_worker),
                  rv > 0                         ? "Y ran during X's long poll"
                  : rv == 0                      ? "Y STALLED"
                  : atomic_load(&c.y_done_early) ? "inconclusive (Y done too early)"
                                                 : "inconclusive (the other worker got no CPU)");
    tu_event_destroy(&c.y_ev);
    tr_io_close(xr);
    tr_io_close(xw);
    tr_io_close(yr);
    tr_io_close(yw);
    tu_rt_free_clean(rt);
    return rv;
}

static void
run_long_poll(bool timer_mode)
{
    int stalled = 0;
    for (int s = 0; s < 3; s++) {
        for (int round = 0; round < 2; round++) {
            int rv;
            int tries = 0;
            while ((rv = lp_round(all_scheds[s], timer_mode)) < 0 && ++tries < 3) {
            }
            if (rv == 0) {
                stalled++;
            }
        }
    }
    if (stalled != 0) {
        fail_msg("%d round(s): %s of another task made no progress while the driver's "
                 "worker ran a long poll and the other worker slept on its futex",
                 stalled, timer_mode ? "the timer" : "the IO");
    }
}

static void
test_rx_long_poll_handoff_io(void **state)
{
    (void)state;
    run_long_poll(false);
}

static void
test_rx_long_poll_handoff_timer(void **state)
{
    (void)state;
    run_long_poll(true);
}

// ===========================================================================
// Timers armed by a task on one worker while the driver sleeps in epoll on
// another, until a later deadline (or none): the driver must recompute its
// timeout. Worker placement varies from round to round; a lost wake leaves
// the short timer waiting for the far one (60 s) or forever.

#define TW_SHORT_NS (3 * TR_NS_PER_MS)

typedef struct tw_ctl {
    tr_rt *rt;
    unsigned rounds;
    tu_event *go;
    sem_t fired;
    atomic_uint_fast64_t done;
    tr_join far;
    atomic_bool far_started;
    bool timed_out;
    int on_driver, off_driver; // where the arming task ran (diagnostic)
} tw_ctl;

typedef struct tw_task {
    int tr_pc;
    tw_ctl *c;
    tr_timer t;
    unsigned r;
} tw_task;

static tr_poll
tw_poll(void *arg, tr_cx *cx)
{
    tw_task *st = arg;
    TR_BEGIN(st);
    for (st->r = 0; st->r < st->c->rounds; st->r++) {
        TR_AWAIT(st, tu_event_poll(&st->c->go[st->r], cx));
        {
            // Was the other worker the driver when we armed?
            tr__reactor *rx = tr_cx_rt(cx)->r_reactor;
            if (atomic_load(&rx->rx_drv_until) != 0) {
                st->c->off_driver++;
            } else {
                st->c->on_driver++;
            }
        }
        TR_AWAIT(st, tr_sleep(&st->t, cx, TW_SHORT_NS));
        atomic_fetch_add(&st->c->done, 1);
        sem_post(&st->c->fired);
    }
    TR_END(st);
}

static void
tw_drop(void *arg)
{
    tw_task *st = arg;
    tr_timer_abandon(&st->t);
}

static const tr_task_spec tw_spec = {
    .name = "tw", .poll = tw_poll, .drop = tw_drop, .size = sizeof(tw_task)};

typedef struct far_sleeper {
    int tr_pc;
    tr_timer t;
} far_sleeper;

static tr_poll
far_poll(void *arg, tr_cx *cx)
{
    far_sleeper *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_sleep(&st->t, cx, 60 * TR_NS_PER_SEC));
    TR_END(st);
}

static void
far_drop(void *arg)
{
    far_sleeper *st = arg;
    tr_timer_abandon(&st->t);
}

static const tr_task_spec far_spec = {
    .name = "far", .poll = far_poll, .drop = far_drop, .size = sizeof(far_sleeper)};

static void *
tw_thread(void *arg)
{
    tw_ctl *c = arg;
    for (unsigned r = 0; r < c->rounds; r++) {
        if (r == c->rounds / 2) {
            // From now on the driver sleeps until the far timer, not forever.
            TU_CHECK(tr_spawn(c->rt, &far_spec, NULL, NULL, &c->far) == TR_OK);
            atomic_store(&c->far_started, true);
            uint64_t deadline = tu_now_ns() + (uint64_t)TU_WAIT_MS * TR_NS_PER_MS;
            while (tr_rt_timers(c->rt) < 1 && tu_now_ns() < deadline) {
                sched_yield();
            }
        }
        (void)wait_idle(c->rt, 0, TU_WAIT_MS);
        tu_event_set(&c->go[r]);
        if (!tu_sem_wait_ms(&c->fired, 5000)) {
            c->timed_out = true;
            // Unblock the rest: let the test fail instead of hanging.
            for (unsigned k = r + 1; k < c->rounds; k++) {
                tu_event_set(&c->go[k]);
            }
            return NULL;
        }
    }
    return NULL;
}

typedef struct tw_root {
    int tr_pc;
    tw_ctl *c;
    tr_join j;
    tr_outcome o;
} tw_root;

static tr_poll
tw_root_poll(void *arg, tr_cx *cx)
{
    tw_root *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->o));
    if (atomic_load(&st->c->far_started)) {
        tr_task_abort(&st->c->far);
        TR_AWAIT(st, tr_join_poll(&st->c->far, cx, &st->o));
    }
    TR_END(st);
}

static const tr_task_spec tw_root_spec = {
    .name = "tw_root", .poll = tw_root_poll, .size = sizeof(tw_root)};

static void
test_rx_timer_armed_off_driver(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++) {
        tr_rt *rt = rt_new(2, all_scheds[s], NULL);
        tw_ctl c = {.rt = rt, .rounds = BY_SAN(24, 16)};
        c.go = calloc(c.rounds, sizeof(tu_event));
        for (unsigned r = 0; r < c.rounds; r++) {
            tu_event_init(&c.go[r]);
        }
        sem_init(&c.fired, 0, 0);
        tw_root root = {.c = &c};
        tu_start(rt, &tw_spec, &(tw_task){.c = &c}, &root.j);
        pthread_t thr;
        tu_thread_start(&thr, tw_thread, &c);
        tu_watchdog wd;
        tu_watchdog_start(&wd, rt, 6 * TU_WAIT_MS);
        assert_int_equal(tr_rt_run(rt, &tw_root_spec, NULL, &root, NULL), TR_OK);
        tu_watchdog_stop(&wd);
        tu_thread_join(thr);
        tu_checks_pass();
        print_message("  [%s] armed while the other worker drove: %d, while none did: %d\n",
                      sched_str(all_scheds[s]), c.off_driver, c.on_driver);
        assert_false(c.timed_out);
        assert_int_equal(atomic_load(&c.done), c.rounds);
        assert_int_equal(tr_rt_timers(rt), 0);
        for (unsigned r = 0; r < c.rounds; r++) {
            tu_event_destroy(&c.go[r]);
        }
        free(c.go);
        sem_destroy(&c.fired);
        tu_rt_free_clean(rt);
    }
}

// ===========================================================================
// A virtual clock advanced by a plain thread, round after round, with the
// workers parked (some rounds) or still busy/parking (others): each 1 ms
// sleep must fire at the advance that makes it due.

typedef struct va_ctl {
    tr_rt *rt;
    tr_clock *clk;
    unsigned rounds;
    atomic_uint_fast64_t done;
    bool timed_out;
    unsigned failed_round;
} va_ctl;

typedef struct va_task {
    int tr_pc;
    va_ctl *c;
    tr_timer t;
    unsigned r;
    uint64_t dl;
} va_task;

static tr_poll
va_poll(void *arg, tr_cx *cx)
{
    va_task *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    for (st->r = 0; st->r < st->c->rounds; st->r++) {
        st->dl = tr_now(rt) + TR_NS_PER_MS;
        TR_AWAIT(st, tr_sleep_until(&st->t, cx, st->dl));
        TU_CHECK(tr_now(rt) >= st->dl);
        atomic_fetch_add(&st->c->done, 1);
    }
    TR_END(st);
}

static void
va_drop(void *arg)
{
    va_task *st = arg;
    tr_timer_abandon(&st->t);
}

static const tr_task_spec va_spec = {
    .name = "va", .poll = va_poll, .drop = va_drop, .size = sizeof(va_task)};

static void *
va_thread(void *arg)
{
    va_ctl *c = arg;
    for (unsigned r = 0; r < c->rounds; r++) {
        uint64_t deadline = tu_now_ns() + (uint64_t)TU_WAIT_MS * TR_NS_PER_MS;
        while (tr_rt_timers(c->rt) < 1) {
            if (tu_now_ns() > deadline) {
                c->timed_out = true;
                c->failed_round = r;
                return NULL;
            }
            sched_yield();
        }
        if (r % 2 == 0) {
            (void)wait_idle(c->rt, 0, TU_WAIT_MS);
        }
        tr_clock_advance(c->clk, TR_NS_PER_MS);
        if (!wait_u64(&c->done, r + 1, TU_WAIT_MS)) {
            c->timed_out = true;
            c->failed_round = r;
            return NULL;
        }
    }
    return NULL;
}

static void
run_vadvance(unsigned workers, tr_sched_kind sched)
{
    tr_clock *clk;
    assert_int_equal(tr_clock_new_virtual(TR_NS_PER_SEC, &clk), TR_OK);
    tr_rt *rt = rt_new(workers, sched, clk);
    va_ctl c = {.rt = rt, .clk = clk, .rounds = BY_SAN(600, 400)};
    tr_join j;
    tu_start(rt, &va_spec, &(va_task){.c = &c}, &j);
    pthread_t thr;
    tu_thread_start(&thr, va_thread, &c);
    unsigned bad = run_joinall(rt, &j, 1, 6 * TU_WAIT_MS);
    tu_thread_join(thr);
    tu_checks_pass();
    if (c.timed_out) {
        fail_msg("[%s, %u workers] round %u: the sleep did not fire after the advance",
                 sched_str(sched), workers, c.failed_round);
    }
    assert_int_equal(bad, 0);
    tu_rt_free_clean(rt);
    tr_clock_free(clk);
}

static void
test_rx_virtual_clock_advance_rounds(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++) {
        run_vadvance(2, all_scheds[s]);
    }
    run_vadvance(3, TR_SCHED_WS);
}

// ===========================================================================
// Arming a timer on one worker while another worker's turn moves the wheel.
// Task A (worker 0) jumps the virtual clock ahead by 5 s (so the wheel's
// time lags the clock), arms a 1 ms sleep, then advances the clock by 1 ms:
// the sleep is due. Task S (worker 1) yields in a loop, so that its worker
// runs a reactor maintenance turn (and its timer pass) every 61 polls,
// concurrently with A's arming. A timer that is due must fire at the next
// turn; S watches for one that stays overdue and armed across thousands
// of turns, reports it, and releases it by jumping the clock 600 s ahead.
// (Regression test: tr__timers_fire's no-timer fast path used to read the
// timer count before taking the wheel's lock and then move the wheel's
// time past a timer armed meanwhile, which then fired a level span late:
// 262 s for this 5 s lag. Reproduced within ~20k rounds before the fix.)

#define MR_JUMP_NS (5 * TR_NS_PER_SEC)
#define MR_STUCK_POLLS 200000u
#define MR_STUCK_NS (500 * TR_NS_PER_MS)

typedef struct mr_ctl {
    tr_clock *clk;
    uint64_t rounds;
    atomic_uint_fast64_t done;
    atomic_uint_fast64_t deadline; // A's armed deadline (virtual ns), 0: none
    atomic_bool stop;
    atomic_int stuck;
    atomic_uint_fast64_t stuck_round;
    atomic_int wa, ws;
    _Atomic(tr_timer *) victim; // A's timer (diagnostics)
    atomic_uint_fast64_t not_armed;
    char diag[256];
} mr_ctl;

typedef struct mr_a {
    int tr_pc;
    mr_ctl *c;
    tr_timer t;
    uint64_t i, dl;
} mr_a;

static tr_poll
mr_a_poll(void *arg, tr_cx *cx)
{
    mr_a *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    atomic_store(&st->c->wa, (int)tr_cx_worker(cx));
    atomic_store(&st->c->victim, &st->t);
    for (st->i = 0; st->i < st->c->rounds && !atomic_load(&st->c->stop); st->i++) {
        tr_clock_advance(st->c->clk, MR_JUMP_NS);
        st->dl = tr_now(rt) + TR_NS_PER_MS;
        atomic_store(&st->c->deadline, st->dl);
        if (tr_sleep_until(&st->t, cx, st->dl) == TR_READY || !tr_timer_armed(&st->t)) {
            atomic_fetch_add(&st->c->not_armed, 1);
        }
        tr_clock_advance(st->c->clk, TR_NS_PER_MS); // due now
        TR_AWAIT(st, tr_sleep_until(&st->t, cx, st->dl));
        atomic_store(&st->c->deadline, 0);
        atomic_fetch_add(&st->c->done, 1);
    }
    atomic_store(&st->c->stop, true);
    TR_END(st);
}

static void
mr_a_drop(void *arg)
{
    mr_a *st = arg;
    tr_timer_abandon(&st->t);
}

static const tr_task_spec mr_a_spec = {
    .name = "mr_a", .poll = mr_a_poll, .drop = mr_a_drop, .size = sizeof(mr_a)};

typedef struct mr_s {
    int tr_pc;
    mr_ctl *c;
    uint64_t last_done, since, t0;
} mr_s;

static tr_poll
mr_s_poll(void *arg, tr_cx *cx)
{
    mr_s *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    atomic_store(&st->c->ws, (int)tr_cx_worker(cx));
    while (!atomic_load(&st->c->stop)) {
        {
            uint64_t d = atomic_load(&st->c->done);
            uint64_t dl = atomic_load(&st->c->deadline);
            if (d != st->last_done || dl == 0 || tr_now(rt) < dl || tr_rt_timers(rt) == 0) {
                st->last_done = d;
                st->since = 0;
            } else if (st->since++ == 0) {
                st->t0 = tu_now_ns();
            } else if (st->since > MR_STUCK_POLLS && tu_now_ns() - st->t0 > MR_STUCK_NS) {
                // Overdue and still armed after thousands of turns: what
                // does the wheel think (under its lock)?
                tr__reactor *rx = rt->r_reactor;
                tr_timer *v = atomic_load(&st->c->victim);
                tr__mutex_lock(&rx->rx_tm_lock);
                uint64_t now_tick = (tr_now(rt) - rx->rx_base_ns) / TR_NS_PER_MS;
                snprintf(st->c->diag, sizeof st->c->diag,
                         "clock tick %llu, wheel time %llu, timer due at tick %llu in level %u, "
                         "next slot starts at tick %llu (%lld ms after the deadline)",
                         (unsigned long long)now_tick, (unsigned long long)rx->rx_elapsed,
                         (unsigned long long)tr__timer_when(v), tr__timer_level(v),
                         (unsigned long long)tr__timers_next(rx),
                         (long long)(tr__timers_next(rx) - tr__timer_when(v)));
                tr__mutex_unlock(&rx->rx_tm_lock);
                atomic_fetch_add(&st->c->stuck, 1);
                atomic_store(&st->c->stuck_round, d);
                atomic_store(&st->c->stop, true);
                tr_clock_advance(st->c->clk, 600 * TR_NS_PER_SEC);
            }
        }
        TR_YIELD(st, cx);
    }
    TR_END(st);
}

static const tr_task_spec mr_s_spec = {.name = "mr_s", .poll = mr_s_poll, .size = sizeof(mr_s)};

typedef struct mr_root {
    int tr_pc;
    mr_ctl *c;
    tr_join ja, js;
    tr_outcome o;
} mr_root;

static tr_poll
mr_root_poll(void *arg, tr_cx *cx)
{
    mr_root *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    {
        // Round robin: S goes to worker 1, A to worker 0.
        TU_CHECK(tr_spawn(rt, &mr_s_spec, NULL, &(mr_s){.c = st->c}, &st->js) == TR_OK);
        TU_CHECK(tr_spawn(rt, &mr_a_spec, NULL, &(mr_a){.c = st->c}, &st->ja) == TR_OK);
    }
    TR_AWAIT(st, tr_join_poll(&st->ja, cx, &st->o));
    TR_AWAIT(st, tr_join_poll(&st->js, cx, &st->o));
    TR_END(st);
}

static const tr_task_spec mr_root_spec = {
    .name = "mr_root", .poll = mr_root_poll, .size = sizeof(mr_root)};

static void
test_rx_timer_arm_races_wheel_turn(void **state)
{
    (void)state;
    tr_clock *clk;
    assert_int_equal(tr_clock_new_virtual(TR_NS_PER_SEC, &clk), TR_OK);
    tr_rt *rt = rt_new(2, TR_SCHED_RR, clk);
    // One registration, so that maintenance turns run the timer pass even
    // while no timer is armed.
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    tr_io *dummy;
    assert_int_equal(tr_io_open(rt, efd, 0, &dummy), TR_OK);
    mr_ctl c = {.clk = clk, .rounds = BY_SAN(200000, 40000)};
    atomic_init(&c.wa, -1);
    atomic_init(&c.ws, -1);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 9 * TU_WAIT_MS);
    assert_int_equal(tr_rt_run(rt, &mr_root_spec, NULL, &(mr_root){.c = &c}, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    tu_checks_pass();
    print_message("  A on worker %d, S on worker %d; %llu round(s) (%llu without arming), %d "
                  "stuck\n",
                  atomic_load(&c.wa), atomic_load(&c.ws), (unsigned long long)atomic_load(&c.done),
                  (unsigned long long)atomic_load(&c.not_armed), atomic_load(&c.stuck));
    assert_int_not_equal(atomic_load(&c.wa), atomic_load(&c.ws));
    if (atomic_load(&c.stuck) != 0) {
        fail_msg("a due timer stayed armed at round %llu: %s",
                 (unsigned long long)atomic_load(&c.stuck_round), c.diag);
    }
    assert_int_equal(atomic_load(&c.done), c.rounds);
    tr_io_close(dummy);
    tu_rt_free_clean(rt);
    tr_clock_free(clk);
}

// ===========================================================================
// The eventfd is written only while the driver is blocked: a storm of
// wakes and spawns from outside while every worker is busy (no driver in
// epoll_wait, and with nothing registered and no timer, no maintenance
// turn reads the eventfd either) leaves its counter untouched.

static uint64_t
evfd_count(tr_rt *rt)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d",
             rt->r_reactor->rx_ops->wake_fd(rt->r_reactor));
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return UINT64_MAX;
    }
    char line[256];
    uint64_t v = UINT64_MAX;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "eventfd-count:", 14) == 0) {
            v = strtoull(line + 14, NULL, 16);
        }
    }
    fclose(f);
    return v;
}

typedef struct ev_ctl {
    tr_rt *rt;
    atomic_int spinning;
    atomic_bool storm_done;
    atomic_bool storm_active;
    atomic_uint seen; // workers that polled a spinner during the storm (bits)
    tr_waker stuck_waker;
    atomic_bool have_waker;
    uint64_t count_after, parks_before, parks_after;
    int wakes;
    bool timed_out;
} ev_ctl;

typedef struct ev_spin {
    int tr_pc;
    ev_ctl *c;
} ev_spin;

static tr_poll
ev_spin_poll(void *arg, tr_cx *cx)
{
    ev_spin *st = arg;
    TR_BEGIN(st);
    atomic_fetch_add(&st->c->spinning, 1);
    while (!atomic_load(&st->c->storm_done)) {
        // Busy, but polled over and over (yields).
        if (atomic_load(&st->c->storm_active)) {
            atomic_fetch_or(&st->c->seen, 1u << tr_cx_worker(cx));
        }
        TR_YIELD(st, cx);
    }
    TR_END(st);
}

static const tr_task_spec ev_spin_spec = {
    .name = "ev_spin", .poll = ev_spin_poll, .size = sizeof(ev_spin)};

typedef struct ev_stuck {
    int tr_pc;
    ev_ctl *c;
} ev_stuck;

static tr_poll
ev_stuck_poll(void *arg, tr_cx *cx)
{
    ev_stuck *st = arg;
    if (!atomic_load(&st->c->have_waker)) {
        st->c->stuck_waker = tr_cx_waker(cx);
        atomic_store(&st->c->have_waker, true);
    }
    return atomic_load(&st->c->storm_done) ? TR_READY : TR_PENDING;
}

static const tr_task_spec ev_stuck_spec = {
    .name = "ev_stuck", .poll = ev_stuck_poll, .size = sizeof(ev_stuck)};

static void *
ev_thread(void *arg)
{
    ev_ctl *c = arg;
    uint64_t deadline = tu_now_ns() + (uint64_t)TU_WAIT_MS * TR_NS_PER_MS;
    while (atomic_load(&c->spinning) < 2 || !atomic_load(&c->have_waker)) {
        if (tu_now_ns() > deadline) {
            c->timed_out = true;
            break;
        }
        sched_yield();
    }
    atomic_store(&c->storm_active, true);
    c->parks_before = tu_stats(c->rt).parks;
    // At least this many, and until both workers have run a spinner
    // during the storm (bounded).
    uint64_t until = tu_now_ns() + TR_NS_PER_SEC;
    for (int i = 0; i < BY_SAN(5000, 2000) || (atomic_load(&c->seen) != 3u && tu_now_ns() < until);
         i++) {
        tr_wake(c->stuck_waker);
        c->wakes++;
        if (i % 10 == 0) {
            (void)tr_spawn(c->rt, &tu_value_spec, NULL, TU_VALUE(1, 0, NULL), NULL);
        }
    }
    atomic_store(&c->storm_active, false);
    c->count_after = evfd_count(c->rt);
    c->parks_after = tu_stats(c->rt).parks;
    atomic_store(&c->storm_done, true);
    tr_wake(c->stuck_waker);
    return NULL;
}

// block_until_ms runs block_on with a root that yields until pred(arg)
// holds or ms pass; fails the test (dumping the runtime) in the latter case.
typedef struct until_ms {
    int tr_pc;
    bool (*pred)(void *arg);
    void *arg;
    uint64_t deadline;
    bool held;
} until_ms;

static tr_poll
until_ms_poll(void *arg, tr_cx *cx)
{
    until_ms *st = arg;
    if (st->pred(st->arg)) {
        st->held = true;
        return TR_READY;
    }
    if (tu_now_ns() > st->deadline) {
        return TR_READY;
    }
    tr_cx_yield(cx);
    return TR_PENDING;
}

static const tr_task_spec until_ms_spec = {
    .name = "until_ms", .poll = until_ms_poll, .size = sizeof(until_ms)};

static void
block_until_ms(tr_rt *rt, bool (*pred)(void *arg), void *arg, unsigned ms)
{
    until_ms init = {
        .pred = pred, .arg = arg, .deadline = tu_now_ns() + (uint64_t)ms * TR_NS_PER_MS};
    assert_int_equal(tr_rt_run(rt, &until_ms_spec, NULL, &init, NULL), TR_OK);
    if (!pred(arg)) {
        tr_rt_dump(rt, stdout);
        fail_msg("block_until_ms: the condition did not hold within %u ms", ms);
    }
}

static bool
only_root_live(void *arg)
{
    return tu_live((tr_rt *)arg) <= 1;
}

typedef struct ev_root {
    int tr_pc;
    ev_ctl *c;
    tr_join js[3];
    unsigned i;
    tr_outcome o;
} ev_root;

static tr_poll
ev_root_poll(void *arg, tr_cx *cx)
{
    ev_root *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    {
        // Spawned back to back: round robin deals the two spinners to the
        // two workers.
        TU_CHECK(tr_spawn(rt, &ev_stuck_spec, NULL, &(ev_stuck){.c = st->c}, &st->js[0]) == TR_OK);
        for (int i = 1; i < 3; i++) {
            TU_CHECK(tr_spawn(rt, &ev_spin_spec, NULL, &(ev_spin){.c = st->c}, &st->js[i]) ==
                     TR_OK);
        }
    }
    for (st->i = 0; st->i < 3; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->js[st->i], cx, &st->o));
        TU_CHECK(st->o.err == TR_OK);
    }
    TR_END(st);
}

static const tr_task_spec ev_root_spec = {
    .name = "ev_root", .poll = ev_root_poll, .size = sizeof(ev_root)};

static void
run_eventfd_busy(tr_sched_kind sched)
{
    tr_rt *rt = rt_new(2, sched, NULL);
    ev_ctl c = {.rt = rt};
    pthread_t thr;
    tu_thread_start(&thr, ev_thread, &c);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    assert_int_equal(tr_rt_run(rt, &ev_root_spec, NULL, &(ev_root){.c = &c}, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    tu_thread_join(thr);
    tu_checks_pass();
    assert_false(c.timed_out);
    bool both_busy = atomic_load(&c.seen) == 3u && c.parks_after == c.parks_before;
    print_message("  [%s] eventfd counter after %d outside wakes and spawns: %llu (%s)\n",
                  sched_str(sched), c.wakes, (unsigned long long)c.count_after,
                  both_busy ? "both workers busy throughout" : "a worker slept for a while");
    assert_true(c.count_after != UINT64_MAX); // fdinfo readable
    if (both_busy) {
        // Both ran spinners during the storm and neither parked: nobody was
        // in epoll_wait, so nothing may have been written (a worker woken
        // by its eventfd read it before polling).
        assert_int_equal(c.count_after, 0);
    } else {
        // A worker asleep in epoll_wait was written to once; it may not
        // have run yet to read it.
        assert_true(c.count_after <= 1);
    }
    // The detached tasks spawned from outside (round robin may have dealt
    // some to worker 0 after block_on returned): run until they are gone.
    block_until_ms(rt, only_root_live, rt, TU_WAIT_MS);
    tu_rt_free_clean(rt);
}

static void
test_rx_eventfd_untouched_while_busy(void **state)
{
    (void)state;
    // Round robin keeps the two spinners on the two workers (the strict
    // case); work stealing often lets one worker sleep in epoll_wait.
    run_eventfd_busy(TR_SCHED_RR);
    run_eventfd_busy(TR_SCHED_WS);
}

// ===========================================================================
// IO behind long polls. One worker: a task's every poll is long (it lasts
// until the real coarse clock ticks, as a computation of 50 ms would), and
// in its first poll it makes a pipe readable that another task waits on.
// The worker must poll the reactor after the poll once the coarse clock has
// moved, so the reader runs within three long polls; with the 64-poll rule
// alone it waited about 64.

typedef struct lpio_shared {
    int wfd;
    atomic_int busy_polls;
    atomic_int polls_at_read;
    atomic_bool done;
    atomic_bool slow;
} lpio_shared;

typedef struct lpio_busy {
    int tr_pc;
    lpio_shared *sh;
} lpio_busy;

static tr_poll
lpio_busy_poll(void *arg, tr_cx *cx)
{
    lpio_busy *st = arg;
    lpio_shared *sh = st->sh;
    if (atomic_load(&sh->done) || atomic_load(&sh->busy_polls) >= 200) {
        return TR_READY;
    }
    if (atomic_load(&sh->busy_polls) == 0) {
        TU_CHECK(write(sh->wfd, "r", 1) == 1);
    }
    if (!tu_long_poll()) {
        atomic_store(&sh->slow, true);
    }
    atomic_fetch_add(&sh->busy_polls, 1);
    tr_cx_yield(cx);
    return TR_PENDING;
}

static const tr_task_spec lpio_busy_spec = {
    .name = "busy", .poll = lpio_busy_poll, .size = sizeof(lpio_busy)};

typedef struct lpio_reader {
    int tr_pc;
    lpio_shared *sh;
    tr_io *io;
    char b;
    size_t n;
    tr_err ioerr;
} lpio_reader;

static tr_poll
lpio_reader_poll(void *arg, tr_cx *cx)
{
    lpio_reader *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_read(st->io, cx, &st->b, 1, &st->n, &st->ioerr));
    TU_CHECK(st->n == 1);
    atomic_store(&st->sh->polls_at_read, atomic_load(&st->sh->busy_polls));
    atomic_store(&st->sh->done, true);
    TR_END(st);
}

static void
lpio_reader_drop(void *arg)
{
    lpio_reader *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec lpio_reader_spec = {.name = "reader",
                                              .poll = lpio_reader_poll,
                                              .drop = lpio_reader_drop,
                                              .size = sizeof(lpio_reader)};

static void
test_rx_io_serviced_after_long_poll(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++) {
        tr_rt *rt = rt_new(1, all_scheds[s], NULL);
        tr_io *rd, *wr;
        make_pipe(rt, &rd, &wr);
        lpio_shared sh = {.wfd = tr_io_fd(wr)};
        tr_join js[2];
        tu_start(rt, &lpio_reader_spec, &(lpio_reader){.sh = &sh, .io = tr_io_ref(rd)}, &js[0]);
        tu_start(rt, &lpio_busy_spec, &(lpio_busy){.sh = &sh}, &js[1]);
        unsigned bad = run_joinall(rt, js, 2, 3 * TU_WAIT_MS);
        tu_checks_pass();
        assert_int_equal(bad, 0);
        assert_false(atomic_load(&sh.slow));
        int n = atomic_load(&sh.polls_at_read);
        print_message("  [%s] the reader ran after %d long polls\n", sched_str(all_scheds[s]), n);
        if (!atomic_load(&sh.done) || n < 1 || n > 3) {
            fail_msg("[%s] the reader ran after %d long polls of its neighbour (want 1-3)",
                     sched_str(all_scheds[s]), n);
        }
        tr_io_close(rd);
        tr_io_close(wr);
        tu_rt_free_clean(rt);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rx_external_edges_rounds),
        cmocka_unit_test(test_rx_long_poll_handoff_io),
        cmocka_unit_test(test_rx_long_poll_handoff_timer),
        cmocka_unit_test(test_rx_timer_armed_off_driver),
        cmocka_unit_test(test_rx_virtual_clock_advance_rounds),
        cmocka_unit_test(test_rx_timer_arm_races_wheel_turn),
        cmocka_unit_test(test_rx_eventfd_untouched_while_busy),
        cmocka_unit_test(test_rx_io_serviced_after_long_poll),
    };
    return tu_run(tests);
}
