// reactor_test.h: what the reactor suites (test_reactor_driver,
// test_reactor_io, test_reactor_shutdown) share on top of the harness
// (../test_util.h): runtimes of a given size, scheduler and clock, the
// worker park states (white box), pipes, a root that joins n tasks, and
// eventfd helpers. Not a harness of its own: only helpers of these suites.
#ifndef TR_REACTOR_TEST_H
#define TR_REACTOR_TEST_H

#include "../test_util.h"

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

static const tr_sched_kind all_scheds[3] TU_UNUSED = {TR_SCHED_WS, TR_SCHED_RR, TR_SCHED_HYBRID};

static inline tr_rt *
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
static inline bool
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
static inline bool
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
static inline bool
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

static inline void
make_pipe(tr_rt *rt, tr_io **rd, tr_io **wr)
{
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    assert_int_equal(tr_io_open(rt, p[0], 0, rd), TR_OK);
    assert_int_equal(tr_io_open(rt, p[1], 0, wr), TR_OK);
}

static inline const char *
sched_str(tr_sched_kind k)
{
    return tr_sched_name(k);
}

// ---------------------------------------------------------------------------
// A root that joins n tasks; its result is how many outcomes were not
// TR_OK.

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
    tr_cx_set_result_u64(cx, st->not_ok);
    TR_END(st);
}

static const tr_task_spec joinall_spec = {
    .name = "joinall", .poll = joinall_poll, .size = sizeof(joinall)};

// run_joinall runs a joinall root over js under a watchdog and returns how
// many outcomes were not TR_OK.
static inline unsigned
run_joinall(tr_rt *rt, tr_join *js, unsigned n, unsigned wd_ms)
{
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, wd_ms);
    tr_outcome out = {0};
    tr_err e = tr_rt_run(rt, &joinall_spec, NULL, &(joinall){.js = js, .n = n}, &out);
    tu_watchdog_stop(&wd);
    assert_int_equal(e, TR_OK);
    return (unsigned)out.value.u64;
}

static inline ssize_t
efd_read_fn(int fd, void *arg)
{
    return read(fd, arg, sizeof(uint64_t));
}

static inline void
efd_add(int fd, uint64_t v)
{
    ssize_t r;
    do {
        r = write(fd, &v, sizeof v);
    } while (r < 0 && errno == EINTR);
    TU_CHECK(r == (ssize_t)sizeof v);
}

#endif
