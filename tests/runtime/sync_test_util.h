// sync_test_util.h: the harness test_sync, test_select and test_group
// share: CHECK (record a failure inside a poll and finish the task),
// yield loops bounded by time, a runtime of a given scheduler and size (the
// environment ignored) and run_root (block_on under a watchdog, then check).
#ifndef TR_SYNC_TEST_UTIL_H
#define TR_SYNC_TEST_UTIL_H

#include "test_util.h"

// CHECK records the first failure and finishes the task (see test_util.h:
// a cmocka assert inside a poll function would longjmp out of the runtime).
#define CHECK(st, c)                                \
    do {                                            \
        if (!(c)) {                                 \
            tu_fail_record(__FILE__, __LINE__, #c); \
            TR_RETURN(st);                          \
        }                                           \
    } while (0)

// YIELD_UNTIL(st, cx, cond): yield until cond holds, for at most
// TU_WAIT_MS (TU_YIELD_UNTIL: bounded by time, never by a count of turns,
// and an expiry records what was awaited), then CHECK it. The state needs
// a `uint64_t tu_deadline` field.
#define YIELD_UNTIL(st, cx, cond)     \
    do {                              \
        TU_YIELD_UNTIL(st, cx, cond); \
        CHECK(st, cond);              \
    } while (0)

// YIELD_N(st, cx, n): let the other tasks run n turns. Never a wait for
// something to happen (that is YIELD_UNTIL's job): either a negative check
// on one worker (something must NOT happen in those turns; n turns of the
// FIFO run queue are deterministic there), or pacing where whatever
// happens meanwhile is fine. The state needs `spins`.
#define YIELD_N(st, cx, n)                                        \
    do {                                                          \
        for ((st)->spins = 0; (st)->spins < (n); (st)->spins++) { \
            TR_YIELD(st, cx);                                     \
        }                                                         \
    } while (0)

// run_root runs root to completion under a watchdog and checks it.
static void TU_UNUSED
run_root(tr_rt *rt, void *root)
{
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, TU_WAIT_MS);
    tr_outcome out;
    memset(&out, 0, sizeof out);
    tr_err rv = tr_rt_block_on(rt, root, &out);
    tu_watchdog_stop(&wd);
    tu_checks_pass();
    assert_int_equal(rv, TR_OK);
    assert_int_equal(out.err, TR_OK);
}

static tr_rt *TU_UNUSED
rt_make(tr_sched_kind sched, unsigned workers)
{
    tr_rt_config cfg;
    tr_rt_config_init(&cfg);
    cfg.sched = sched;
    cfg.workers = workers;
    cfg.ignore_env = true;
    return tu_rt_new_cfg(&cfg);
}

#endif
