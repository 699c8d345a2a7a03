// test_reactor_shutdown: the reactor when the runtime stops with IO and
// timers pending (reactor/reactor.c, exec/): block_on returning while tasks
// it started wait for IO, and shutdown (immediate, graceful with and
// without a deadline, tr_rt_free alone) with tasks waiting on IO and
// timers on every worker.
#define _GNU_SOURCE
#include "reactor_test.h"

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
    size_t n;
    tr_err ioerr;
} bo_reader;

static tr_poll
bo_reader_poll(void *arg, tr_cx *cx)
{
    bo_reader *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_read(st->io, cx, &st->b, 1, &st->n, &st->ioerr));
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
            TU_CHECK(tr_spawn(rt, &bo_reader_spec, NULL,
                              &(bo_reader){.io = tr_io_ref(st->c->rds[i]), .c = st->c},
                              NULL) == TR_OK);
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
        pthread_t thr;
        tu_thread_start(&thr, bo_thread, &c);
        tu_watchdog wd;
        tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
        assert_int_equal(
            tr_rt_run(rt, &bo_root_spec, NULL, &(bo_root){.c = &c, .ev = &c.root_go}, NULL), TR_OK);
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
            tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
            assert_int_equal(
                tr_rt_run(rt, &bo_root_spec, NULL, &(bo_root){.c = &c, .ev = &c.all_done}, NULL),
                TR_OK);
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
    size_t n;
    tr_err ioerr;
} sd_io_task;

static tr_poll
sd_io_poll(void *arg, tr_cx *cx)
{
    sd_io_task *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_read(st->io, cx, &st->b, 1, &st->n, &st->ioerr));
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
    tr_timer_abandon(&st->t);
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
        TU_CHECK(tr_spawn(rt, &sd_io_spec, NULL, &(sd_io_task){.c = st->c, .io = st->c->rds[i]},
                          NULL) == TR_OK);
        TU_CHECK(tr_spawn(rt, &sd_sleep_spec, NULL, &(sd_sleep_task){.c = st->c}, NULL) == TR_OK);
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
    sd_root root = {.c = &c, .wait = mode != SD_FREE_ONLY};
    if (mode == SD_FREE_ONLY) {
        assert_int_equal(tr_rt_run(rt, &sd_root_spec, NULL, &root, NULL), TR_OK);
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
        tr_err e = tr_rt_run(rt, &sd_root_spec, NULL, &root, &o);
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

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rx_block_on_returns_with_io_pending),
        cmocka_unit_test(test_rx_shutdown_with_io_and_timers),
    };
    return tu_run(tests);
}
