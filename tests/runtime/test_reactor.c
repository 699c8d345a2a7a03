// test_reactor: adversarial tests of the reactor (reactor/reactor.c), of the
// timing wheel as the driver sees it (reactor/timer.c), of tr_io's lifecycle
// across workers (io/io.c) and of the parking protocol around the driver
// (exec/park.c): lost wake-ups between a waiter and the driver, several
// waiters on one direction, the driver's hand-over while a worker is busy,
// block_on returning with IO pending, timers armed on another worker than
// the driver's, a virtual clock advanced from outside, slot reuse and close
// with events and system calls in flight, end of file and hang-up, slab
// growth, and shutdown with IO and timers pending.
//
// The hand-over, stale-event, shared blocking descriptor and wheel-race
// tests each reproduced a defect of the runtime before it was fixed.
#define _GNU_SOURCE
#include "test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "exec/exec.h"
#include "reactor/reactor.h"

#if defined(TR_SANITIZER)
#define BY_SAN(plain, san) (san)
#else
#define BY_SAN(plain, san) (plain)
#endif

static const tr_sched_kind all_scheds[3] = {TR_SCHED_WS, TR_SCHED_RR, TR_SCHED_HYBRID};

static tr_rt *
rt_new(unsigned workers, tr_sched_kind sched, tr_clock *clk)
{
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.workers = workers;
    cfg.sched = sched;
    cfg.clock = clk;
    cfg.ignore_env = true; // these tests reason about worker counts
    return tu_rt_new_cfg(&cfg);
}

// all_idle: every worker from `first` on sleeps, one of them in the
// reactor's backend (the driver) and the others on their futexes.
static bool
all_idle(tr_rt *rt, unsigned first)
{
    unsigned drivers = 0;
    for (unsigned i = first; i < rt->r_nworkers; i++) {
        uint32_t p = atomic_load(&rt->r_workers[i].w_park);
        if (p == TR__PARK_DRIVER) {
            drivers++;
        } else if (p != TR__PARK_PARKED) {
            return false;
        }
    }
    return drivers == 1;
}

// wait_idle waits (bounded, yielding) until all_idle holds.
static bool
wait_idle(tr_rt *rt, unsigned first, unsigned ms)
{
    uint64_t deadline = tu_now_ns() + (uint64_t)ms * TR_NS_PER_MS;
    while (!all_idle(rt, first)) {
        if (tu_now_ns() > deadline) {
            return false;
        }
        sched_yield();
    }
    return true;
}

// wait_u64 waits (bounded, yielding) until *v >= want.
static bool
wait_u64(atomic_uint_fast64_t *v, uint64_t want, unsigned ms)
{
    uint64_t deadline = tu_now_ns() + (uint64_t)ms * TR_NS_PER_MS;
    while (atomic_load(v) < want) {
        if (tu_now_ns() > deadline) {
            return false;
        }
        sched_yield();
    }
    return true;
}

static void
make_pipe(tr_rt *rt, tr_io **rd, tr_io **wr)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    assert_int_equal(tr_io_open(rt, p[0], 0, rd), TR_OK);
    assert_int_equal(tr_io_open(rt, p[1], 0, wr), TR_OK);
}

static int
count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1; // the directory's own descriptor
}

static const char *
sched_str(tr_sched_kind k)
{
    return tr_sched_name(k);
}

// ---------------------------------------------------------------------------
// A root that joins n tasks and counts outcomes that are not TR_OK.

typedef struct joinall {
    int tr_pc;
    tr_join *js;
    unsigned n, i;
    tr_outcome o;
    unsigned not_ok;
} joinall;

static tr_poll
joinall_poll(void *arg, tr_cx *cx)
{
    joinall *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->n; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->js[st->i], cx, &st->o));
        if (st->o.err != TR_OK) {
            st->not_ok++;
        }
        tr_outcome_fini(&st->o);
    }
    TR_END(st);
}

static const tr_task_spec joinall_spec = {
    .name = "joinall", .poll = joinall_poll, .size = sizeof(joinall)};

// run_joinall runs a joinall root over js under a watchdog and returns how
// many outcomes were not TR_OK.
static unsigned
run_joinall(tr_rt *rt, tr_join *js, unsigned n, unsigned wd_ms)
{
    joinall *r = tu_task_new(rt, &joinall_spec);
    r->js = js;
    r->n = n;
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, wd_ms);
    tr_err e = tr_rt_block_on(rt, r, NULL);
    tu_watchdog_stop(&wd);
    assert_int_equal(e, TR_OK);
    return r->not_ok;
}

static ssize_t
efd_read_fn(int fd, void *arg)
{
    return read(fd, arg, sizeof(uint64_t));
}

static void
efd_add(int fd, uint64_t v)
{
    ssize_t r;
    do {
        r = write(fd, &v, sizeof v);
    } while (r < 0 && errno == EINTR);
    TU_CHECK(r == (ssize_t)sizeof v);
}

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
    ssize_t n;
} edge_task;

static tr_poll
edge_poll(void *arg, tr_cx *cx)
{
    edge_task *st = arg;
    TR_BEGIN(st);
    while (st->total < st->c->rounds) {
        TR_AWAIT(st, tr_io_poll_op(st->io, cx, TR_IO_READ, efd_read_fn, &st->v, &st->n));
        TU_CHECK(st->n == (ssize_t)sizeof(uint64_t));
        if (st->n != (ssize_t)sizeof(uint64_t)) {
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
        edge_task *t = tu_task_new(rt, &edge_spec);
        assert_int_equal(tr_io_open(rt, c.fds[i], 0, &t->io), TR_OK);
        t->c = &c;
        tr_task_start(t, &js[i]);
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
    ssize_t n;
} lp_x;

static tr_poll
lp_x_poll(void *arg, tr_cx *cx)
{
    lp_x *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_read(st->io, cx, &st->b, 1, &st->n));
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
    ssize_t n;
} lp_y;

static tr_poll
lp_y_poll(void *arg, tr_cx *cx)
{
    lp_y *st = arg;
    TR_BEGIN(st);
    if (st->c->timer_mode) {
        TR_AWAIT(st, tr_sleep(&st->t, cx, LP_TIMER_NS));
    } else {
        TR_AWAIT(st, tr_read(st->io, cx, &st->b, 1, &st->n));
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
    tr_timer_drop(&st->t);
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

// The round's root: starts the prepared Y and X (prepared on this thread,
// which is worker 0 inside block_on), then joins both.
typedef struct lp_root {
    int tr_pc;
    void *prepared[2];
    tr_join js[2];
    unsigned i;
    tr_outcome o;
    lp_ctl *c;
} lp_root;

static tr_poll
lp_root_poll(void *arg, tr_cx *cx)
{
    lp_root *st = arg;
    TR_BEGIN(st);
    st->c = ((lp_y *)st->prepared[0])->c;
    for (st->i = 0; st->i < 2; st->i++) {
        TU_CHECK(tr_task_start(st->prepared[st->i], &st->js[st->i]) == TR_OK);
    }
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
    lp_y *y = tu_task_new(rt, &lp_y_spec);
    y->c = &c;
    y->io = tr_io_ref(yr);
    lp_x *x = tu_task_new(rt, &lp_x_spec);
    x->c = &c;
    x->io = tr_io_ref(xr);
    // The root starts Y, then X, in one poll: rr deals them to the two
    // workers in turn. Started from this thread before block_on, the
    // root's own deal could fall between theirs (worker 1 drains the Spawn
    // messages as they come) and put both on one worker, where rr, which
    // never moves a task, leaves Y behind X's long poll by design.
    lp_root *r = tu_task_new(rt, &lp_root_spec);
    r->prepared[0] = y;
    r->prepared[1] = x;
    pthread_t thr;
    tu_thread_start(&thr, lp_thread, &c);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 6 * TU_WAIT_MS);
    assert_int_equal(tr_rt_block_on(rt, r, NULL), TR_OK);
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
    tr_timer_drop(&st->t);
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
    tr_timer_drop(&st->t);
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
            far_sleeper *f = NULL;
            TU_CHECK(tr_task_new(c->rt, &far_spec, (void **)&f) == TR_OK);
            tr_task_start(f, &c->far);
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
        tw_task *t = tu_task_new(rt, &tw_spec);
        t->c = &c;
        tw_root *root = tu_task_new(rt, &tw_root_spec);
        root->c = &c;
        tr_task_start(t, &root->j);
        pthread_t thr;
        tu_thread_start(&thr, tw_thread, &c);
        tu_watchdog wd;
        tu_watchdog_start(&wd, rt, 6 * TU_WAIT_MS);
        assert_int_equal(tr_rt_block_on(rt, root, NULL), TR_OK);
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
    tr_timer_drop(&st->t);
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
    va_task *t = tu_task_new(rt, &va_spec);
    t->c = &c;
    tr_join j;
    tr_task_start(t, &j);
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
    tr_timer_drop(&st->t);
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
                         (unsigned long long)v->t_when, (unsigned)(v->t_slot / TR__WHEEL_SLOTS),
                         (unsigned long long)tr__timers_next(rx),
                         (long long)(tr__timers_next(rx) - v->t_when));
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
        mr_s *s = NULL;
        TU_CHECK(tr_task_new(rt, &mr_s_spec, (void **)&s) == TR_OK);
        s->c = st->c;
        tr_task_start(s, &st->js);
        mr_a *a = NULL;
        TU_CHECK(tr_task_new(rt, &mr_a_spec, (void **)&a) == TR_OK);
        a->c = st->c;
        tr_task_start(a, &st->ja);
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
    mr_root *root = tu_task_new(rt, &mr_root_spec);
    root->c = &c;
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 9 * TU_WAIT_MS);
    assert_int_equal(tr_rt_block_on(rt, root, NULL), TR_OK);
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
// Several tasks waiting on the same direction of one tr_io: one edge must
// wake them all. READ: K tasks each read one byte per round from one pipe;
// the thread writes the round's K bytes in one write (one edge), in odd
// rounds only once all K wait; a per-round barrier keeps a fast reader
// from taking a second byte. A reader left unwoken stalls the round.
// WRITE: K writers queued behind a full socket buffer, then a drain.

typedef struct rd_ctl {
    tr_rt *rt;
    int wfd;
    unsigned k;
    uint64_t rounds;
    tu_event *next; // next[r * k + i]: round r is over, for reader i (one waker each)
    atomic_uint_fast64_t arrived;
    bool timed_out;
    uint64_t failed_round, arrived_at_fail;
} rd_ctl;

typedef struct rd_task {
    int tr_pc;
    tr_io *io;
    rd_ctl *c;
    unsigned i;
    uint64_t r;
    char b;
    ssize_t n;
} rd_task;

static tr_poll
rd_poll(void *arg, tr_cx *cx)
{
    rd_task *st = arg;
    TR_BEGIN(st);
    for (st->r = 0; st->r < st->c->rounds; st->r++) {
        TR_AWAIT(st, tr_read(st->io, cx, &st->b, 1, &st->n));
        TU_CHECK(st->n == 1);
        atomic_fetch_add(&st->c->arrived, 1);
        TR_AWAIT(st, tu_event_poll(&st->c->next[st->r * st->c->k + st->i], cx));
    }
    TR_END(st);
}

static void
rd_drop(void *arg)
{
    rd_task *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec rd_spec = {
    .name = "rd", .poll = rd_poll, .drop = rd_drop, .size = sizeof(rd_task)};

static void *
rd_thread(void *arg)
{
    rd_ctl *c = arg;
    char bytes[16];
    memset(bytes, 'r', sizeof bytes);
    for (uint64_t r = 0; r < c->rounds; r++) {
        if (r % 2 == 1) {
            // All K registered as waiters, every worker asleep.
            (void)wait_idle(c->rt, 0, TU_WAIT_MS);
        }
        TU_CHECK(write(c->wfd, bytes, c->k) == (ssize_t)c->k);
        if (!wait_u64(&c->arrived, c->k * (r + 1), TU_WAIT_MS)) {
            c->timed_out = true;
            c->failed_round = r;
            c->arrived_at_fail = atomic_load(&c->arrived) - c->k * r;
            tr_rt_dump(c->rt, stdout);
            for (uint64_t q = r * c->k; q < c->rounds * c->k; q++) {
                tu_event_set(&c->next[q]); // let the test end
            }
            return NULL;
        }
        for (unsigned i = 0; i < c->k; i++) {
            tu_event_set(&c->next[r * c->k + i]);
        }
    }
    return NULL;
}

static void
run_same_readers(unsigned workers, tr_sched_kind sched)
{
    tr_rt *rt = rt_new(workers, sched, NULL);
    rd_ctl c = {.rt = rt, .k = 6, .rounds = BY_SAN(300, 200)};
    c.next = calloc(c.rounds * c.k, sizeof(tu_event));
    for (uint64_t r = 0; r < c.rounds * c.k; r++) {
        tu_event_init(&c.next[r]);
    }
    tr_io *rd, *wr;
    make_pipe(rt, &rd, &wr);
    c.wfd = tr_io_fd(wr);
    tr_join js[6];
    for (unsigned i = 0; i < c.k; i++) {
        rd_task *t = tu_task_new(rt, &rd_spec);
        t->io = tr_io_ref(rd);
        t->c = &c;
        t->i = i;
        tr_task_start(t, &js[i]);
    }
    pthread_t thr;
    tu_thread_start(&thr, rd_thread, &c);
    unsigned bad = run_joinall(rt, js, c.k, 6 * TU_WAIT_MS);
    tu_thread_join(thr);
    tu_checks_pass();
    if (c.timed_out) {
        fail_msg("[%s, %u workers] round %llu: only %llu of %u readers woke", sched_str(sched),
                 workers, (unsigned long long)c.failed_round, (unsigned long long)c.arrived_at_fail,
                 c.k);
    }
    assert_int_equal(bad, 0);
    tr_io_close(rd);
    tr_io_close(wr);
    assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
    for (uint64_t r = 0; r < c.rounds * c.k; r++) {
        tu_event_destroy(&c.next[r]);
    }
    free(c.next);
    tu_rt_free_clean(rt);
}

static void
test_rx_same_direction_readers(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++) {
        run_same_readers(3, all_scheds[s]);
    }
    run_same_readers(1, TR_SCHED_RR);
}

typedef struct wq_writer {
    int tr_pc;
    tr_io *io;
    tr_io_op op;
    char msg[64];
    tr_err err;
} wq_writer;

static tr_poll
wq_writer_poll(void *arg, tr_cx *cx)
{
    wq_writer *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_write_all(&st->op, st->io, cx, st->msg, sizeof st->msg, &st->err));
    TU_CHECK(st->err == TR_OK);
    TR_END(st);
}

static void
wq_writer_drop(void *arg)
{
    wq_writer *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec wq_writer_spec = {
    .name = "wq_writer", .poll = wq_writer_poll, .drop = wq_writer_drop, .size = sizeof(wq_writer)};

typedef struct wq_drain {
    int tr_pc;
    tr_io *io;
    tu_event *go;
    size_t want, got;
    char buf[4096];
    ssize_t n;
} wq_drain;

static tr_poll
wq_drain_poll(void *arg, tr_cx *cx)
{
    wq_drain *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tu_event_poll(st->go, cx));
    while (st->got < st->want) {
        TR_AWAIT(st, tr_read(st->io, cx, st->buf, sizeof st->buf, &st->n));
        TU_CHECK(st->n > 0);
        if (st->n <= 0) {
            break;
        }
        st->got += (size_t)st->n;
    }
    TU_CHECK(st->got == st->want);
    TR_END(st);
}

static const tr_task_spec wq_drain_spec = {
    .name = "wq_drain", .poll = wq_drain_poll, .size = sizeof(wq_drain)};

typedef struct wq_ctl {
    tr_rt *rt;
    tu_event go;
    bool not_idle;
} wq_ctl;

static void *
wq_thread(void *arg)
{
    wq_ctl *c = arg;
    if (!wait_idle(c->rt, 0, TU_WAIT_MS)) {
        c->not_idle = true;
    }
    tu_event_set(&c->go);
    return NULL;
}

// fill_socket writes to fd until the kernel says EAGAIN; returns the bytes.
static size_t
fill_socket(int fd)
{
    static char chunk[4096];
    size_t total = 0;
    for (size_t sz = sizeof chunk; sz > 0; sz /= 2) {
        for (;;) {
            ssize_t n = send(fd, chunk, sz, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n <= 0) {
                break;
            }
            total += (size_t)n;
        }
    }
    return total;
}

static void
test_rx_same_direction_writers(void **state)
{
    (void)state;
    enum { K = 5 };
    for (int s = 0; s < 3; s++) {
        tr_rt *rt = rt_new(3, all_scheds[s], NULL);
        for (int round = 0; round < BY_SAN(20, 12); round++) {
            int sv[2];
            assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv),
                             0);
            tr_io *a, *b;
            assert_int_equal(tr_io_open(rt, sv[0], 0, &a), TR_OK);
            assert_int_equal(tr_io_open(rt, sv[1], 0, &b), TR_OK);
            size_t filled = fill_socket(sv[0]);
            wq_ctl c = {.rt = rt};
            tu_event_init(&c.go);
            tr_join js[K + 1];
            for (int i = 0; i < K; i++) {
                wq_writer *w = tu_task_new(rt, &wq_writer_spec);
                w->io = tr_io_ref(a);
                memset(w->msg, 'a' + i, sizeof w->msg);
                tr_task_start(w, &js[i]);
            }
            wq_drain *d = tu_task_new(rt, &wq_drain_spec);
            d->io = b;
            d->go = &c.go;
            d->want = filled + K * 64;
            tr_task_start(d, &js[K]);
            pthread_t thr;
            tu_thread_start(&thr, wq_thread, &c);
            unsigned bad = run_joinall(rt, js, K + 1, 6 * TU_WAIT_MS);
            tu_thread_join(thr);
            tu_checks_pass();
            assert_false(c.not_idle);
            assert_int_equal(bad, 0);
            tu_event_destroy(&c.go);
            tr_io_close(a);
            tr_io_close(b);
        }
        assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
        tu_rt_free_clean(rt);
    }
}

// ===========================================================================
// block_on returns while tasks it started wait for IO. Those tasks must
// still complete: through the other workers at once (work stealing and
// hybrid: a task woken by the driver runs on the driver's worker), or at
// the next block_on (round robin keeps a task on the worker that last ran
// it, worker 0 included; and a one-worker runtime has no other thread).

typedef struct bo_ctl {
    tr_rt *rt;
    unsigned k;
    tr_io **rds;
    tu_event root_go;
    tu_event all_done;
    atomic_uint_fast64_t done;
    uint64_t target;
    bool not_idle;
} bo_ctl;

typedef struct bo_reader {
    int tr_pc;
    tr_io *io;
    bo_ctl *c;
    char b;
    ssize_t n;
} bo_reader;

static tr_poll
bo_reader_poll(void *arg, tr_cx *cx)
{
    bo_reader *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_read(st->io, cx, &st->b, 1, &st->n));
    TU_CHECK(st->n == 1);
    if (atomic_fetch_add(&st->c->done, 1) + 1 == st->c->target) {
        tu_event_set(&st->c->all_done);
    }
    TR_END(st);
}

static void
bo_reader_drop(void *arg)
{
    bo_reader *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec bo_reader_spec = {
    .name = "bo_reader", .poll = bo_reader_poll, .drop = bo_reader_drop, .size = sizeof(bo_reader)};

typedef struct bo_root {
    int tr_pc;
    bo_ctl *c;
    tu_event *ev;
} bo_root;

static tr_poll
bo_root_poll(void *arg, tr_cx *cx)
{
    bo_root *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    if (st->ev == &st->c->root_go) {
        for (unsigned i = 0; i < st->c->k; i++) {
            bo_reader *r = NULL;
            TU_CHECK(tr_task_new(rt, &bo_reader_spec, (void **)&r) == TR_OK);
            r->io = tr_io_ref(st->c->rds[i]);
            r->c = st->c;
            tr_task_start(r, NULL);
        }
    }
    TR_AWAIT(st, tu_event_poll(st->ev, cx));
    TR_END(st);
}

static const tr_task_spec bo_root_spec = {
    .name = "bo_root", .poll = bo_root_poll, .size = sizeof(bo_root)};

static void *
bo_thread(void *arg)
{
    bo_ctl *c = arg;
    // The readers wait, the root waits: every worker asleep.
    if (!wait_idle(c->rt, 0, TU_WAIT_MS)) {
        c->not_idle = true;
    }
    tu_event_set(&c->root_go);
    return NULL;
}

static void
run_block_on_returns(unsigned workers, tr_sched_kind sched, bool strict)
{
    tr_rt *rt = rt_new(workers, sched, NULL);
    enum { K = 4 };
    for (int round = 0; round < BY_SAN(8, 6); round++) {
        bo_ctl c = {.rt = rt, .k = K, .target = K};
        tr_io *rds[K], *wrs[K];
        c.rds = rds;
        for (int i = 0; i < K; i++) {
            make_pipe(rt, &rds[i], &wrs[i]);
        }
        tu_event_init(&c.root_go);
        tu_event_init(&c.all_done);
        bo_root *root = tu_task_new(rt, &bo_root_spec);
        root->c = &c;
        root->ev = &c.root_go;
        pthread_t thr;
        tu_thread_start(&thr, bo_thread, &c);
        tu_watchdog wd;
        tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
        assert_int_equal(tr_rt_block_on(rt, root, NULL), TR_OK);
        tu_watchdog_stop(&wd);
        tu_thread_join(thr);
        assert_false(c.not_idle);
        // Nobody is inside block_on now. The IO comes.
        for (int i = 0; i < K; i++) {
            assert_int_equal(write(tr_io_fd(wrs[i]), "z", 1), 1);
        }
        if (strict) {
            if (!tu_event_wait(&c.all_done, 5000)) {
                fail_msg("[%s, %u workers] round %d: %llu of %d readers completed with no "
                         "thread in block_on",
                         sched_str(sched), workers, round, (unsigned long long)atomic_load(&c.done),
                         K);
            }
        } else {
            bo_root *r2 = tu_task_new(rt, &bo_root_spec);
            r2->c = &c;
            r2->ev = &c.all_done;
            tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
            assert_int_equal(tr_rt_block_on(rt, r2, NULL), TR_OK);
            tu_watchdog_stop(&wd);
        }
        tu_checks_pass();
        assert_int_equal(atomic_load(&c.done), K);
        // The readers are detached: wait until they are freed.
        uint64_t deadline = tu_now_ns() + (uint64_t)TU_WAIT_MS * TR_NS_PER_MS;
        while (tu_live(rt) != 0 && tu_now_ns() < deadline) {
            sched_yield();
        }
        for (int i = 0; i < K; i++) {
            tr_io_close(rds[i]);
            tr_io_close(wrs[i]);
        }
        tu_event_destroy(&c.root_go);
        tu_event_destroy(&c.all_done);
    }
    assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
    tu_rt_free_clean(rt);
}

static void
test_rx_block_on_returns_with_io_pending(void **state)
{
    (void)state;
    run_block_on_returns(2, TR_SCHED_WS, true);
    run_block_on_returns(3, TR_SCHED_WS, true);
    run_block_on_returns(2, TR_SCHED_HYBRID, true);
    run_block_on_returns(2, TR_SCHED_RR, false);
    run_block_on_returns(1, TR_SCHED_RR, false);
}

// ===========================================================================
// Churn across workers: parents open a pipe, hand a reference to a child
// task (wherever the scheduler puts it), write one byte, and close the read
// end while the child may be waiting, in the middle of its read, or done;
// slots are reused all along while events for closed registrations may
// still be queued. A child reads its own parent's byte or TR_ECLOSED,
// nothing else; no descriptor leaks.

typedef struct ch_stats {
    atomic_int data, closed;
} ch_stats;

typedef struct ch_child {
    int tr_pc;
    tr_io *io;
    ch_stats *s;
    unsigned char want;
    unsigned char buf[16];
    ssize_t n;
} ch_child;

static tr_poll
ch_child_poll(void *arg, tr_cx *cx)
{
    ch_child *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_read(st->io, cx, st->buf, sizeof st->buf, &st->n));
    if (st->n > 0) {
        TU_CHECK(st->n == 1);
        TU_CHECK(st->buf[0] == st->want);
        atomic_fetch_add(&st->s->data, 1);
    } else {
        TU_CHECK(tr_io_err(st->n) == TR_ECLOSED);
        atomic_fetch_add(&st->s->closed, 1);
    }
    TR_END(st);
}

static void
ch_child_drop(void *arg)
{
    ch_child *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec ch_child_spec = {
    .name = "ch_child", .poll = ch_child_poll, .drop = ch_child_drop, .size = sizeof(ch_child)};

typedef struct ch_parent {
    int tr_pc;
    ch_stats *s;
    unsigned id, i, iters;
    tr_io *rd, *wr;
    tr_join child;
    tr_outcome o;
    unsigned char b;
    ssize_t n;
} ch_parent;

static tr_poll
ch_parent_poll(void *arg, tr_cx *cx)
{
    ch_parent *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->iters; st->i++) {
        {
            int p[2];
            TU_CHECK(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
            TU_CHECK(tr_io_open(rt, p[0], 0, &st->rd) == TR_OK);
            TU_CHECK(tr_io_open(rt, p[1], 0, &st->wr) == TR_OK);
            ch_child *c = NULL;
            TU_CHECK(tr_task_new(rt, &ch_child_spec, (void **)&c) == TR_OK);
            c->io = tr_io_ref(st->rd);
            c->s = st->s;
            c->want = (unsigned char)(st->id * 37 + st->i);
            tr_task_start(c, &st->child);
        }
        if (st->i % 3 == 0) {
            TR_YIELD(st, cx);
        }
        st->b = (unsigned char)(st->id * 37 + st->i);
        TR_AWAIT(st, tr_write(st->wr, cx, &st->b, 1, &st->n));
        TU_CHECK(st->n == 1);
        if (st->i % 2 == 0) {
            tr_io_close(st->rd);
            st->rd = NULL;
        }
        TR_AWAIT(st, tr_join_poll(&st->child, cx, &st->o));
        TU_CHECK(st->o.err == TR_OK);
        if (st->rd != NULL) {
            tr_io_close(st->rd);
            st->rd = NULL;
        }
        tr_io_close(st->wr);
        st->wr = NULL;
    }
    TR_END(st);
}

static const tr_task_spec ch_parent_spec = {
    .name = "ch_parent", .poll = ch_parent_poll, .size = sizeof(ch_parent)};

static void
test_rx_churn_across_workers(void **state)
{
    (void)state;
    enum { P = 6 };
    for (int s = 0; s < 3; s++) {
        int fds0 = count_open_fds();
        tr_rt *rt = rt_new(3, all_scheds[s], NULL);
        ch_stats st;
        atomic_init(&st.data, 0);
        atomic_init(&st.closed, 0);
        tr_join js[P];
        unsigned iters = BY_SAN(400, 250);
        for (unsigned i = 0; i < P; i++) {
            ch_parent *p = tu_task_new(rt, &ch_parent_spec);
            p->s = &st;
            p->id = i;
            p->iters = iters;
            tr_task_start(p, &js[i]);
        }
        unsigned bad = run_joinall(rt, js, P, 6 * TU_WAIT_MS);
        tu_checks_pass();
        assert_int_equal(bad, 0);
        print_message("  [%s] children: %d read their byte, %d saw the close\n",
                      sched_str(all_scheds[s]), atomic_load(&st.data), atomic_load(&st.closed));
        assert_int_equal(atomic_load(&st.data) + atomic_load(&st.closed), P * iters);
        assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
        assert_int_equal(rt->r_reactor->rx_nchunks, 1);
        tu_rt_free_clean(rt);
        assert_int_equal(count_open_fds(), fds0);
    }
}

// The driver looks a registration up by {index, generation} and only then
// takes its lock: a close and a reopen on another worker in between (the
// churn above does this all the time) hand the old event to the new
// registration (spurious readiness and wakes; a blocking borrowed
// descriptor would then be read without an event and block its worker).
// ThreadSanitizer sees it as a race between tr__io_event and io_open; a
// plain build cannot observe it reliably (the window is a few
// instructions wide).
static void
test_rx_stale_event_on_reused_slot(void **state)
{
    (void)state;
    tr_rt *rt = rt_new(2, TR_SCHED_WS, NULL);
    ch_stats st;
    atomic_init(&st.data, 0);
    atomic_init(&st.closed, 0);
    enum { P = 4 };
    tr_join js[P];
    for (unsigned i = 0; i < P; i++) {
        ch_parent *p = tu_task_new(rt, &ch_parent_spec);
        p->s = &st;
        p->id = i;
        p->iters = BY_SAN(1000, 300);
        tr_task_start(p, &js[i]);
    }
    unsigned bad = run_joinall(rt, js, P, 6 * TU_WAIT_MS);
    tu_checks_pass();
    assert_int_equal(bad, 0);
#if !defined(__SANITIZE_THREAD__)
    print_message("  (only ThreadSanitizer observes this defect)\n");
#endif
    tu_rt_free_clean(rt);
}

// ===========================================================================
// tr_io_close from a plain thread while a task on a worker waits on the
// descriptor or is in the middle of a read of it, then a new pipe at once
// (which takes the freed descriptor number, if it was freed): the task ends
// with TR_ECLOSED, never reads a byte of the new pipe, never sees EBADF.

typedef struct cr_result {
    uint64_t got;
    int foreign;
    tr_err end;
    sem_t fin;
} cr_result;

typedef struct cr_task {
    int tr_pc;
    tr_io *io;
    cr_result *res;
    unsigned char buf[512];
    ssize_t n;
} cr_task;

static tr_poll
cr_poll(void *arg, tr_cx *cx)
{
    cr_task *st = arg;
    TR_BEGIN(st);
    for (;;) {
        TR_AWAIT(st, tr_read(st->io, cx, st->buf, sizeof st->buf, &st->n));
        if (st->n <= 0) {
            break;
        }
        for (ssize_t i = 0; i < st->n; i++) {
            if (st->buf[i] != 'A') {
                st->res->foreign++;
            }
        }
        st->res->got += (uint64_t)st->n;
    }
    st->res->end = st->n == 0 ? TR_EEOF : tr_io_err(st->n);
    TR_END(st);
}

static void
cr_drop(void *arg)
{
    cr_task *st = arg;
    tr_io_release(st->io);
    sem_post(&st->res->fin);
}

static const tr_task_spec cr_spec = {
    .name = "cr", .poll = cr_poll, .drop = cr_drop, .size = sizeof(cr_task)};

typedef struct cft_ctl {
    tr_rt *rt;
    tr_sched_kind sched;
    tu_event finished;
    char msg[256];
} cft_ctl;

static void *
cft_thread(void *arg)
{
    cft_ctl *c = arg;
    tr_rt *rt = c->rt;
    static char as[256];
    memset(as, 'A', sizeof as);
    int rounds = BY_SAN(150, 100);
    for (int round = 0; round < rounds && c->msg[0] == '\0'; round++) {
        int sv[2];
        TU_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0);
        tr_io *io;
        TU_CHECK(tr_io_open(rt, sv[0], 0, &io) == TR_OK);
        cr_result res = {.end = TR_OK};
        sem_init(&res.fin, 0, 0);
        cr_task *t = NULL;
        TU_CHECK(tr_task_new(rt, &cr_spec, (void **)&t) == TR_OK);
        t->io = tr_io_ref(io);
        t->res = &res;
        tr_join j;
        tr_task_start(t, &j); // a Spawn message: any worker, worker 0 included
        if (round % 2 == 0) {
            // A burst: the close lands while reads are running.
            for (int k = 0; k < 200; k++) {
                (void)send(sv[1], as, sizeof as, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k % 16 == 0) {
                    sched_yield();
                }
            }
        } else {
            // The task waits for data: the close wakes it.
            (void)wait_idle(rt, 0, TU_WAIT_MS);
        }
        tr_io_close(io);
        // The descriptor number, if already free, goes to this pipe.
        int p[2];
        TU_CHECK(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
        char zs[64];
        memset(zs, 'Z', sizeof zs);
        TU_CHECK(write(p[1], zs, sizeof zs) == (ssize_t)sizeof zs);
        if (!tu_sem_wait_ms(&res.fin, TU_WAIT_MS)) {
            snprintf(c->msg, sizeof c->msg,
                     "[%s] round %d: the reader did not end after tr_io_close", sched_str(c->sched),
                     round);
            break; // (leaks the round's descriptors: the test fails anyway)
        }
        tr_outcome o;
        TU_CHECK(tr_join_wait(&j, &o) == TR_OK);
        if (res.foreign != 0 || res.end != TR_ECLOSED) {
            snprintf(c->msg, sizeof c->msg,
                     "[%s] round %d: the reader ended with %s after %llu bytes, %d of them "
                     "not its own",
                     sched_str(c->sched), round, tr_strerror(res.end), (unsigned long long)res.got,
                     res.foreign);
        }
        close(sv[1]);
        close(p[0]);
        close(p[1]);
        sem_destroy(&res.fin);
    }
    tu_event_set(&c->finished);
    return NULL;
}

typedef struct cft_root {
    int tr_pc;
    cft_ctl *c;
} cft_root;

static tr_poll
cft_root_poll(void *arg, tr_cx *cx)
{
    cft_root *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tu_event_poll(&st->c->finished, cx));
    TR_END(st);
}

static const tr_task_spec cft_root_spec = {
    .name = "cft_root", .poll = cft_root_poll, .size = sizeof(cft_root)};

static void
run_close_from_thread(unsigned workers, tr_sched_kind sched)
{
    tr_rt *rt = rt_new(workers, sched, NULL);
    cft_ctl c = {.rt = rt, .sched = sched};
    tu_event_init(&c.finished);
    cft_root *root = tu_task_new(rt, &cft_root_spec);
    root->c = &c;
    pthread_t thr;
    tu_thread_start(&thr, cft_thread, &c);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 9 * TU_WAIT_MS);
    assert_int_equal(tr_rt_block_on(rt, root, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    tu_thread_join(thr);
    tu_checks_pass();
    if (c.msg[0] != '\0') {
        fail_msg("%s", c.msg);
    }
    assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
    tu_event_destroy(&c.finished);
    tu_rt_free_clean(rt);
}

static void
test_rx_close_from_thread_during_reads(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++) {
        run_close_from_thread(3, all_scheds[s]);
    }
}

// ===========================================================================
// End of file and hang-up. A reader with a large buffer (every read short,
// so each one clears the cached readiness) must see all the data and then
// end of file, whether the hang-up arrives with the data before it waits,
// while it waits, or while it reads; over a socket (EPOLLRDHUP) and a pipe
// (EPOLLHUP).

typedef struct eof_task {
    int tr_pc;
    tr_io *io;
    char buf[4096];
    ssize_t n;
    size_t total;
    tr_err end;
} eof_task;

static tr_poll
eof_poll(void *arg, tr_cx *cx)
{
    eof_task *st = arg;
    TR_BEGIN(st);
    for (;;) {
        TR_AWAIT(st, tr_read(st->io, cx, st->buf, sizeof st->buf, &st->n));
        if (st->n <= 0) {
            break;
        }
        st->total += (size_t)st->n;
    }
    st->end = st->n == 0 ? TR_EEOF : tr_io_err(st->n);
    TR_END(st);
}

static const tr_task_spec eof_spec = {.name = "eof", .poll = eof_poll, .size = sizeof(eof_task)};

typedef struct eof_ctl {
    tr_rt *rt;
    int fd; // the peer's end (blocking)
    bool socket;
    int mode; // 0: while waiting, 1: concurrently
    size_t len;
    uint64_t seed;
} eof_ctl;

static uint64_t
xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void
eof_send(eof_ctl *c)
{
    static char data[20000];
    size_t off = 0;
    while (off < c->len) {
        size_t n = 1 + xorshift(&c->seed) % 3000;
        if (n > c->len - off) {
            n = c->len - off;
        }
        ssize_t w = write(c->fd, data + off, n);
        TU_CHECK(w > 0);
        if (w <= 0) {
            break;
        }
        off += (size_t)w;
    }
    if (c->socket) {
        TU_CHECK(shutdown(c->fd, SHUT_WR) == 0);
    } else {
        close(c->fd);
        c->fd = -1;
    }
}

static void *
eof_thread(void *arg)
{
    eof_ctl *c = arg;
    if (c->mode == 0) {
        (void)wait_idle(c->rt, 0, TU_WAIT_MS);
    }
    eof_send(c);
    return NULL;
}

static void
test_rx_eof_and_rdhup(void **state)
{
    (void)state;
    tr_rt *rt = rt_new(2, TR_SCHED_WS, NULL);
    uint64_t seed = 0x12345678abcdefull;
    for (int round = 0; round < BY_SAN(240, 150); round++) {
        eof_ctl c = {.rt = rt, .socket = round % 2 == 0, .mode = (round / 2) % 3, .seed = seed};
        c.len = 1 + xorshift(&seed) % 20000;
        int fds[2];
        if (c.socket) {
            assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        } else {
            assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
        }
        eof_task *t = tu_task_new(rt, &eof_spec);
        assert_int_equal(tr_io_open(rt, fds[0], 0, &t->io), TR_OK);
        c.fd = fds[1];
        pthread_t thr;
        bool threaded = c.mode != 2;
        if (threaded) {
            tu_thread_start(&thr, eof_thread, &c);
        } else {
            eof_send(&c); // all of it, and the hang-up, before the first read
        }
        tu_watchdog wd;
        tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
        assert_int_equal(tr_rt_block_on(rt, t, NULL), TR_OK);
        tu_watchdog_stop(&wd);
        if (threaded) {
            tu_thread_join(thr);
        }
        tu_checks_pass();
        if (t->total != c.len || t->end != TR_EEOF) {
            fail_msg("round %d (%s, mode %d): read %zu of %zu bytes, ended with %s", round,
                     c.socket ? "socket" : "pipe", c.mode, t->total, c.len, tr_strerror(t->end));
        }
        tr_io_close(t->io);
        if (c.fd >= 0) {
            close(c.fd);
        }
    }
    tu_rt_free_clean(rt);
}

// A writer blocked on a full socket buffer wakes when the peer closes (a
// hang-up wakes both directions) and gets TR_EPIPE or TR_ECONNRESET. And a
// half-close by the peer (EPOLLRDHUP) ends the reader of the same tr_io
// with end of file but leaves its writer working.

typedef struct hup_writer {
    int tr_pc;
    tr_io *io;
    tr_io_op op;
    char *buf;
    size_t len;
    tr_err err;
} hup_writer;

static tr_poll
hup_writer_poll(void *arg, tr_cx *cx)
{
    hup_writer *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_write_all(&st->op, st->io, cx, st->buf, st->len, &st->err));
    TR_END(st);
}

static void
hup_writer_drop(void *arg)
{
    hup_writer *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec hup_writer_spec = {.name = "hup_writer",
                                             .poll = hup_writer_poll,
                                             .drop = hup_writer_drop,
                                             .size = sizeof(hup_writer)};

typedef struct hup_ctl {
    tr_rt *rt;
    int peer;
    bool half;
    size_t drain;
    bool not_idle;
} hup_ctl;

static void *
hup_thread(void *arg)
{
    hup_ctl *c = arg;
    if (!wait_idle(c->rt, 0, TU_WAIT_MS)) {
        c->not_idle = true;
    }
    if (!c->half) {
        close(c->peer);
        return NULL;
    }
    // Half-close (the reader of our tr_io sees EOF), then drain what the
    // writer sends, blocking.
    TU_CHECK(shutdown(c->peer, SHUT_WR) == 0);
    static char buf[65536];
    size_t got = 0;
    while (got < c->drain) {
        ssize_t n = read(c->peer, buf, sizeof buf);
        TU_CHECK(n > 0);
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    return NULL;
}

static void
test_rx_hangup_wakes_writer(void **state)
{
    (void)state;
    tr_rt *rt = rt_new(2, TR_SCHED_WS, NULL);
    size_t len = 1 << 20;
    char *big = calloc(1, len);
    for (int round = 0; round < BY_SAN(40, 24); round++) {
        bool half = round % 2 == 1;
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        tr_io *io;
        assert_int_equal(tr_io_open(rt, sv[0], 0, &io), TR_OK);
        size_t filled = fill_socket(sv[0]);
        tr_join js[2];
        hup_writer *w = tu_task_new(rt, &hup_writer_spec);
        w->io = tr_io_ref(io);
        w->buf = big;
        w->len = len;
        tr_task_start(w, &js[0]);
        unsigned n = 1;
        eof_task *r = NULL;
        if (half) {
            r = tu_task_new(rt, &eof_spec);
            r->io = io;
            tr_task_start(r, &js[1]);
            n = 2;
        }
        hup_ctl c = {.rt = rt, .peer = sv[1], .half = half, .drain = filled + len};
        pthread_t thr;
        tu_thread_start(&thr, hup_thread, &c);
        unsigned bad = run_joinall(rt, js, n, 3 * TU_WAIT_MS);
        tu_thread_join(thr);
        tu_checks_pass();
        assert_false(c.not_idle);
        assert_int_equal(bad, 0);
        if (half) {
            assert_int_equal(w->err, TR_OK);
            assert_int_equal(w->op.done, len);
            assert_int_equal(r->end, TR_EEOF);
            assert_int_equal(r->total, 0);
            close(sv[1]);
        } else if (w->err != TR_EPIPE && w->err != TR_ECONNRESET) {
            fail_msg("round %d: the writer ended with %s after the peer closed", round,
                     tr_strerror(w->err));
        }
        tr_io_close(io);
    }
    free(big);
    assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
    tu_rt_free_clean(rt);
}

// ===========================================================================
// Thousands of registrations: the slab grows chunk by chunk (256 entries)
// while the driver, on other workers, already looks up events for the
// first ones; every event reaches its registration; freed slots are
// reused afterwards.

typedef struct mg_ctl {
    int *fds;
    tr_io **ios; // all open until the end: the slab holds n at once
    unsigned n;
    atomic_uint_fast64_t published, done;
    bool timed_out;
} mg_ctl;

typedef struct mg_task {
    int tr_pc;
    tr_io *io;
    mg_ctl *c;
    uint64_t v;
    ssize_t n;
} mg_task;

static tr_poll
mg_poll(void *arg, tr_cx *cx)
{
    mg_task *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_io_poll_op(st->io, cx, TR_IO_READ, efd_read_fn, &st->v, &st->n));
    TU_CHECK(st->n == (ssize_t)sizeof(uint64_t));
    TU_CHECK(st->v == 1);
    atomic_fetch_add(&st->c->done, 1);
    TR_END(st);
}

static const tr_task_spec mg_spec = {.name = "mg", .poll = mg_poll, .size = sizeof(mg_task)};

typedef struct mg_root {
    int tr_pc;
    mg_ctl *c;
    tr_join *js;
    unsigned i;
    tr_outcome o;
} mg_root;

static tr_poll
mg_root_poll(void *arg, tr_cx *cx)
{
    mg_root *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->c->n; st->i++) {
        {
            int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            TU_CHECK(fd >= 0);
            mg_task *t = NULL;
            TU_CHECK(tr_task_new(rt, &mg_spec, (void **)&t) == TR_OK);
            TU_CHECK(tr_io_open(rt, fd, 0, &t->io) == TR_OK);
            st->c->ios[st->i] = t->io;
            t->c = st->c;
            st->c->fds[st->i] = fd;
            tr_task_start(t, &st->js[st->i]);
            atomic_store(&st->c->published, st->i + 1);
        }
        if (st->i % 64 == 63) {
            TR_YIELD(st, cx);
        }
    }
    for (st->i = 0; st->i < st->c->n; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->js[st->i], cx, &st->o));
        TU_CHECK(st->o.err == TR_OK);
    }
    TR_END(st);
}

static const tr_task_spec mg_root_spec = {
    .name = "mg_root", .poll = mg_root_poll, .size = sizeof(mg_root)};

static void *
mg_thread(void *arg)
{
    mg_ctl *c = arg;
    uint64_t j = 0;
    uint64_t deadline = tu_now_ns() + 3ull * TU_WAIT_MS * TR_NS_PER_MS;
    while (j < c->n) {
        uint64_t p = atomic_load(&c->published);
        if (j == p) {
            if (tu_now_ns() > deadline) {
                c->timed_out = true;
                return NULL;
            }
            sched_yield();
            continue;
        }
        while (j < p) {
            efd_add(c->fds[j++], 1);
        }
    }
    return NULL;
}

static void
run_many_regs(tr_sched_kind sched)
{
    tr_rt *rt = rt_new(3, sched, NULL);
    mg_ctl c = {.n = BY_SAN(3000, 2000)};
    c.fds = calloc(c.n, sizeof(int));
    c.ios = calloc(c.n, sizeof(tr_io *));
    mg_root *root = tu_task_new(rt, &mg_root_spec);
    root->c = &c;
    root->js = calloc(c.n, sizeof(tr_join));
    tr_join *js = root->js;
    pthread_t thr;
    tu_thread_start(&thr, mg_thread, &c);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 6 * TU_WAIT_MS);
    assert_int_equal(tr_rt_block_on(rt, root, NULL), TR_OK);
    tu_watchdog_stop(&wd);
    tu_thread_join(thr);
    tu_checks_pass();
    assert_false(c.timed_out);
    assert_int_equal(atomic_load(&c.done), c.n);
    tr__reactor *rx = rt->r_reactor;
    assert_int_equal(atomic_load(&rx->rx_nregs), c.n);
    uint32_t chunks = rx->rx_nchunks;
    print_message("  [%s] %u registrations, %u chunk(s)\n", sched_str(sched), c.n, chunks);
    assert_true(chunks >= (c.n + TR__REG_CHUNK - 1) / TR__REG_CHUNK);
    for (unsigned i = 0; i < c.n; i++) {
        tr_io_close(c.ios[i]);
    }
    assert_int_equal(atomic_load(&rx->rx_nregs), 0);
    // The freed slots are reused: as many again fit in the same chunks.
    tr_io **ios = calloc(c.n, sizeof(tr_io *));
    for (unsigned i = 0; i < c.n; i++) {
        int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        assert_true(fd >= 0);
        assert_int_equal(tr_io_open(rt, fd, 0, &ios[i]), TR_OK);
    }
    assert_int_equal(rx->rx_nchunks, chunks);
    for (unsigned i = 0; i < c.n; i++) {
        tr_io_close(ios[i]);
    }
    assert_int_equal(atomic_load(&rx->rx_nregs), 0);
    free(ios);
    free(js);
    free(c.fds);
    free(c.ios);
    tu_rt_free_clean(rt);
}

static void
test_rx_many_registrations(void **state)
{
    (void)state;
    run_many_regs(TR_SCHED_WS);
    run_many_regs(TR_SCHED_RR);
}

// ===========================================================================
// Shutdown with tasks waiting on IO and timers on every worker: immediate,
// graceful with a deadline (both cancel them: every drop runs, every
// registration and timer is released, nothing hangs), graceful without a
// deadline (they finish normally when their IO and timers come), and
// tr_rt_free with no shutdown at all.

typedef struct sd_ctl {
    tr_rt *rt;
    unsigned k;
    tr_io **rds;
    uint64_t sleep_ns;
    tu_event never;
    atomic_int drops, completed;
    int mode;
    int *wfds;
    bool not_idle;
} sd_ctl;

typedef struct sd_io_task {
    int tr_pc;
    sd_ctl *c;
    tr_io *io;
    char b;
    ssize_t n;
} sd_io_task;

static tr_poll
sd_io_poll(void *arg, tr_cx *cx)
{
    sd_io_task *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_read(st->io, cx, &st->b, 1, &st->n));
    TU_CHECK(st->n == 1);
    atomic_fetch_add(&st->c->completed, 1);
    TR_END(st);
}

static void
sd_io_drop(void *arg)
{
    sd_io_task *st = arg;
    tr_io_release(st->io);
    atomic_fetch_add(&st->c->drops, 1);
}

static const tr_task_spec sd_io_spec = {
    .name = "sd_io", .poll = sd_io_poll, .drop = sd_io_drop, .size = sizeof(sd_io_task)};

typedef struct sd_sleep_task {
    int tr_pc;
    sd_ctl *c;
    tr_timer t;
} sd_sleep_task;

static tr_poll
sd_sleep_poll(void *arg, tr_cx *cx)
{
    sd_sleep_task *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_sleep(&st->t, cx, st->c->sleep_ns));
    atomic_fetch_add(&st->c->completed, 1);
    TR_END(st);
}

static void
sd_sleep_drop(void *arg)
{
    sd_sleep_task *st = arg;
    tr_timer_drop(&st->t);
    atomic_fetch_add(&st->c->drops, 1);
}

static const tr_task_spec sd_sleep_spec = {.name = "sd_sleep",
                                           .poll = sd_sleep_poll,
                                           .drop = sd_sleep_drop,
                                           .size = sizeof(sd_sleep_task)};

typedef struct sd_root {
    int tr_pc;
    sd_ctl *c;
    bool wait;
} sd_root;

static tr_poll
sd_root_poll(void *arg, tr_cx *cx)
{
    sd_root *st = arg;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    for (unsigned i = 0; i < st->c->k; i++) {
        sd_io_task *t = NULL;
        TU_CHECK(tr_task_new(rt, &sd_io_spec, (void **)&t) == TR_OK);
        t->c = st->c;
        t->io = st->c->rds[i]; // the task owns the read end
        tr_task_start(t, NULL);
        sd_sleep_task *s = NULL;
        TU_CHECK(tr_task_new(rt, &sd_sleep_spec, (void **)&s) == TR_OK);
        s->c = st->c;
        tr_task_start(s, NULL);
    }
    if (st->wait) {
        TR_AWAIT(st, tu_event_poll(&st->c->never, cx));
    }
    TR_END(st);
}

static const tr_task_spec sd_root_spec = {
    .name = "sd_root", .poll = sd_root_poll, .size = sizeof(sd_root)};

enum { SD_IMMEDIATE, SD_GRACEFUL_DEADLINE, SD_GRACEFUL_FINISH, SD_FREE_ONLY };

static void *
sd_thread(void *arg)
{
    sd_ctl *c = arg;
    uint64_t deadline = tu_now_ns() + (uint64_t)TU_WAIT_MS * TR_NS_PER_MS;
    while (tr_rt_timers(c->rt) < c->k && tu_now_ns() < deadline) {
        sched_yield();
    }
    if (!wait_idle(c->rt, 0, TU_WAIT_MS)) {
        c->not_idle = true;
    }
    switch (c->mode) {
    case SD_IMMEDIATE:
        TU_CHECK(tr_rt_shutdown(c->rt, TR_SHUTDOWN_IMMEDIATE, 0) == TR_OK);
        break;
    case SD_GRACEFUL_DEADLINE:
        TU_CHECK(tr_rt_shutdown(c->rt, TR_SHUTDOWN_GRACEFUL, 40) == TR_OK);
        break;
    default:
        TU_CHECK(tr_rt_shutdown(c->rt, TR_SHUTDOWN_GRACEFUL, 0) == TR_OK);
        for (unsigned i = 0; i < c->k; i++) {
            TU_CHECK(write(c->wfds[i], "q", 1) == 1);
        }
        // The root last: the shutdown waits for the others anyway.
        tu_event_set(&c->never);
        break;
    }
    return NULL;
}

static void
run_shutdown(tr_sched_kind sched, int mode)
{
    enum { K = 6 };
    tr_rt *rt = rt_new(3, sched, NULL);
    sd_ctl c = {.rt = rt, .k = K, .mode = mode};
    c.sleep_ns = mode == SD_GRACEFUL_FINISH ? 20 * TR_NS_PER_MS : 3600 * TR_NS_PER_SEC;
    tu_event_init(&c.never);
    tr_io *rds[K], *wrs[K];
    int rfds[K], wfds[K];
    for (int i = 0; i < K; i++) {
        make_pipe(rt, &rds[i], &wrs[i]);
        rfds[i] = tr_io_fd(rds[i]);
        wfds[i] = tr_io_fd(wrs[i]);
    }
    c.rds = rds;
    c.wfds = wfds;
    sd_root *root = tu_task_new(rt, &sd_root_spec);
    root->c = &c;
    root->wait = mode != SD_FREE_ONLY;
    if (mode == SD_FREE_ONLY) {
        assert_int_equal(tr_rt_block_on(rt, root, NULL), TR_OK);
        // The root returned at once; the others wait on workers 1 and 2.
        uint64_t deadline = tu_now_ns() + (uint64_t)TU_WAIT_MS * TR_NS_PER_MS;
        while ((tr_rt_timers(rt) < K || !all_idle(rt, 1)) && tu_now_ns() < deadline) {
            sched_yield();
        }
        assert_int_equal(tr_rt_timers(rt), K);
        tr_rt_free(rt);
    } else {
        pthread_t thr;
        tu_thread_start(&thr, sd_thread, &c);
        tr_outcome o;
        tr_err e = tr_rt_block_on(rt, root, &o);
        tu_thread_join(thr);
        tu_checks_pass();
        assert_false(c.not_idle);
        if (mode == SD_GRACEFUL_FINISH) {
            assert_int_equal(e, TR_OK);
            assert_int_equal(atomic_load(&c.completed), 2 * K);
        } else {
            assert_int_equal(e, TR_ESHUTDOWN);
            assert_int_equal(o.err, TR_ECANCELED);
            assert_int_equal(atomic_load(&c.completed), 0);
        }
        assert_int_equal(atomic_load(&c.drops), 2 * K);
        assert_int_equal(tr_rt_timers(rt), 0);
        assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), K); // our write ends
        for (int i = 0; i < K; i++) {
            tr_io_close(wrs[i]);
        }
        assert_int_equal(atomic_load(&rt->r_reactor->rx_nregs), 0);
        tu_rt_free_clean(rt);
    }
    assert_int_equal(atomic_load(&c.drops), 2 * K);
    for (int i = 0; i < K; i++) {
        // Closed with the tasks' last references (or by tr_rt_free).
        assert_int_equal(fcntl(rfds[i], F_GETFD), -1);
        if (mode == SD_FREE_ONLY) {
            assert_int_equal(fcntl(wfds[i], F_GETFD), -1);
        }
    }
    tu_event_destroy(&c.never);
}

static void
test_rx_shutdown_with_io_and_timers(void **state)
{
    (void)state;
    for (int s = 0; s < 3; s++) {
        run_shutdown(all_scheds[s], SD_IMMEDIATE);
        run_shutdown(all_scheds[s], SD_GRACEFUL_DEADLINE);
        run_shutdown(all_scheds[s], SD_GRACEFUL_FINISH);
        run_shutdown(all_scheds[s], SD_FREE_ONLY);
    }
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
            tu_value_task *v = NULL;
            if (tr_task_new(c->rt, &tu_value_spec, (void **)&v) == TR_OK) {
                v->value = 1;
                tr_task_start(v, NULL);
            }
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
    until_ms *u = tu_task_new(rt, &until_ms_spec);
    u->pred = pred;
    u->arg = arg;
    u->deadline = tu_now_ns() + (uint64_t)ms * TR_NS_PER_MS;
    assert_int_equal(tr_rt_block_on(rt, u, NULL), TR_OK);
    // (u is freed: block_on took its result.)
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
        ev_stuck *sk = NULL;
        TU_CHECK(tr_task_new(rt, &ev_stuck_spec, (void **)&sk) == TR_OK);
        sk->c = st->c;
        tr_task_start(sk, &st->js[0]);
        for (int i = 1; i < 3; i++) {
            ev_spin *sp = NULL;
            TU_CHECK(tr_task_new(rt, &ev_spin_spec, (void **)&sp) == TR_OK);
            sp->c = st->c;
            tr_task_start(sp, &st->js[i]);
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
    ev_root *root = tu_task_new(rt, &ev_root_spec);
    root->c = &c;
    pthread_t thr;
    tu_thread_start(&thr, ev_thread, &c);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    assert_int_equal(tr_rt_block_on(rt, root, NULL), TR_OK);
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
// Borrowed blocking descriptors are watched one-shot and level-triggered:
// each readiness event allows one system call ("an operation runs only
// after an event said the direction is ready, does one system call, and
// forgets the readiness"), because a second call would block the worker
// thread. K tasks wait to read one byte each from one borrowed blocking
// pipe; one byte arrives per round, so exactly one call per round may run.
// The operation probes with poll() before reading and counts the calls
// that would have blocked (and returns EAGAIN instead of blocking); it
// starts 0.2 ms after the readiness was claimed (as after a preemption).

typedef struct os_ctl {
    tr_rt *rt;
    int wfd;
    unsigned rounds;
    atomic_uint_fast64_t got;
    atomic_int would_block;
    bool timed_out;
    pthread_mutex_t mu;
} os_ctl;

static ssize_t
os_fn(int fd, void *arg)
{
    os_ctl *c = arg;
    // The call starts a moment after the readiness was claimed (as after a
    // preemption): other waiters woken by the same event run meanwhile.
    uint64_t t0 = tu_now_ns();
    while (tu_now_ns() - t0 < 200 * 1000) {
    }
    // Probe and read under a lock, so that the probe itself is not racy
    // (two probes seeing the one byte, then one read blocking).
    pthread_mutex_lock(&c->mu);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 0) == 0) {
        pthread_mutex_unlock(&c->mu);
        atomic_fetch_add(&c->would_block, 1); // read(2) would block here
        errno = EAGAIN;
        return -1;
    }
    char b;
    ssize_t n = read(fd, &b, 1);
    pthread_mutex_unlock(&c->mu);
    return n;
}

typedef struct os_task {
    int tr_pc;
    tr_io *io;
    os_ctl *c;
    ssize_t n;
} os_task;

static tr_poll
os_poll(void *arg, tr_cx *cx)
{
    os_task *st = arg;
    TR_BEGIN(st);
    for (;;) {
        TR_AWAIT(st, tr_io_poll_op(st->io, cx, TR_IO_READ, os_fn, st->c, &st->n));
        if (st->n <= 0) {
            TU_CHECK(st->n == 0); // end of file
            break;
        }
        atomic_fetch_add(&st->c->got, 1);
    }
    TR_END(st);
}

static void
os_drop(void *arg)
{
    os_task *st = arg;
    tr_io_release(st->io);
}

static const tr_task_spec os_spec = {
    .name = "os", .poll = os_poll, .drop = os_drop, .size = sizeof(os_task)};

static void *
os_thread(void *arg)
{
    os_ctl *c = arg;
    for (unsigned r = 0; r < c->rounds; r++) {
        (void)wait_idle(c->rt, 0, TU_WAIT_MS); // every reader waits
        TU_CHECK(write(c->wfd, "b", 1) == 1);
        if (!wait_u64(&c->got, r + 1, TU_WAIT_MS)) {
            c->timed_out = true;
            break;
        }
    }
    close(c->wfd); // end of file for everyone
    return NULL;
}

static void
run_oneshot_shared(unsigned workers, tr_sched_kind sched, os_ctl *c)
{
    enum { K = 3 };
    tr_rt *rt = rt_new(workers, sched, NULL);
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0); // blocking
    tr_io *rd;
    assert_int_equal(tr_io_open(rt, p[0], TR_IO_BORROW, &rd), TR_OK);
    c->rt = rt;
    c->wfd = p[1];
    tr_join js[K];
    for (int i = 0; i < K; i++) {
        os_task *t = tu_task_new(rt, &os_spec);
        t->io = tr_io_ref(rd);
        t->c = c;
        tr_task_start(t, &js[i]);
    }
    pthread_t thr;
    tu_thread_start(&thr, os_thread, c);
    unsigned bad = run_joinall(rt, js, K, 6 * TU_WAIT_MS);
    tu_thread_join(thr);
    tu_checks_pass();
    assert_int_equal(bad, 0);
    assert_false(c->timed_out);
    assert_int_equal(atomic_load(&c->got), c->rounds);
    tr_io_close(rd);
    assert_int_equal(fcntl(p[0], F_GETFL) & O_NONBLOCK, 0); // still blocking
    close(p[0]);
    tu_rt_free_clean(rt);
}

static void
test_rx_oneshot_shared_blocking_fd(void **state)
{
    (void)state;
    int total = 0;
    for (int s = 0; s < 3; s++) {
        os_ctl c = {.rounds = BY_SAN(200, 60)};
        pthread_mutex_init(&c.mu, NULL);
        run_oneshot_shared(3, all_scheds[s], &c);
        pthread_mutex_destroy(&c.mu);
        print_message("  [%s] %u bytes, %d call(s) that would have blocked a worker\n",
                      sched_str(all_scheds[s]), c.rounds, atomic_load(&c.would_block));
        total += atomic_load(&c.would_block);
    }
    assert_int_equal(total, 0);
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
    ssize_t n;
} lpio_reader;

static tr_poll
lpio_reader_poll(void *arg, tr_cx *cx)
{
    lpio_reader *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_read(st->io, cx, &st->b, 1, &st->n));
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
        lpio_reader *r = tu_task_new(rt, &lpio_reader_spec);
        r->sh = &sh;
        r->io = tr_io_ref(rd);
        tr_task_start(r, &js[0]);
        lpio_busy *b = tu_task_new(rt, &lpio_busy_spec);
        b->sh = &sh;
        tr_task_start(b, &js[1]);
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
        cmocka_unit_test(test_rx_same_direction_readers),
        cmocka_unit_test(test_rx_same_direction_writers),
        cmocka_unit_test(test_rx_block_on_returns_with_io_pending),
        cmocka_unit_test(test_rx_churn_across_workers),
        cmocka_unit_test(test_rx_stale_event_on_reused_slot),
        cmocka_unit_test(test_rx_close_from_thread_during_reads),
        cmocka_unit_test(test_rx_eof_and_rdhup),
        cmocka_unit_test(test_rx_hangup_wakes_writer),
        cmocka_unit_test(test_rx_many_registrations),
        cmocka_unit_test(test_rx_shutdown_with_io_and_timers),
        cmocka_unit_test(test_rx_eventfd_untouched_while_busy),
        cmocka_unit_test(test_rx_oneshot_shared_blocking_fd),
        cmocka_unit_test(test_rx_io_serviced_after_long_poll),
    };
    return tu_run(tests);
}
