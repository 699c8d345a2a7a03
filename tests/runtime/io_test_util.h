// io_test_util.h: the harness test_net and test_bufread share. A test runs
// a main task on a fresh runtime (run_main) under a watchdog and checks
// afterwards that every check passed, no task is left and no descriptor
// leaked; CHECK* record a failure inside a poll and finish the task.
#ifndef TR_IO_TEST_UTIL_H
#define TR_IO_TEST_UTIL_H

#include "test_util.h"

#include <dirent.h>

// CHECK records the first failure and finishes the task (a cmocka assert
// would longjmp out of the runtime); run_main fails the test afterwards.
#define CHECK(st, c)                                \
    do {                                            \
        if (!(c)) {                                 \
            tu_fail_record(__FILE__, __LINE__, #c); \
            TR_RETURN(st);                          \
        }                                           \
    } while (0)

#define CHECK_ERR(st, got, want)                                                      \
    do {                                                                              \
        tr_err got_ = (got), want_ = (want);                                          \
        if (got_ != want_) {                                                          \
            char msg_[200];                                                           \
            snprintf(msg_, sizeof msg_, "%s is %s, want %s", #got, tr_err_name(got_), \
                     tr_err_name(want_));                                             \
            tu_fail_record(__FILE__, __LINE__, msg_);                                 \
            TR_RETURN(st);                                                            \
        }                                                                             \
    } while (0)

static int
count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    while (readdir(d) != NULL) {
        n++;
    }
    closedir(d);
    return n;
}

// run_main runs a task of kind spec, its state a copy of *init, as the root
// of a fresh runtime with `workers` workers; then checks that every TU_CHECK
// and CHECK passed, that no task outlived it and that no descriptor leaked.
static void
run_main(unsigned workers, const tr_task_spec *spec, const void *init)
{
    tr_rt_config cfg;
    tu_config_init(&cfg);
    // The worker count is the test's: several tests rely on one worker
    // (no other thread drives the reactor in the middle of a poll), so
    // TROUPE_WORKERS and the deterministic mode must not change it.
    cfg.ignore_env = true;
    if (workers > 1) {
        cfg.workers = workers;
        cfg.sched = TR_SCHED_WS;
    }
    tr_rt *rt = tu_rt_new_cfg(&cfg);
    int fds = count_fds();
    void *m = tu_task_new(rt, spec);
    memcpy(m, init, spec->size);
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    tr_outcome out;
    memset(&out, 0, sizeof out);
    tr_err rv = tr_rt_block_on(rt, m, &out);
    tu_watchdog_stop(&wd);
    tu_checks_pass();
    assert_int_equal(rv, TR_OK);
    assert_int_equal(out.err, TR_OK);
    // On several workers a task the main task joined is freed (and the
    // live count lowered) by its worker after the join completed: stop the
    // runtime, so that every task has finished and every worker stopped,
    // before counting what is left.
    tu_rt_quiesce(rt, TU_WAIT_MS);
    assert_int_equal(tu_live(rt), 0);
    assert_int_equal(count_fds(), fds);
    tu_rt_free_clean(rt);
}

// spawn starts a task of kind spec whose state is a copy of *init.
static tr_join
spawn(tr_cx *cx, const tr_task_spec *spec, const void *init)
{
    void *st = NULL;
    tr_join j = TR_JOIN_NONE;
    tr_err rv = tr_task_new(tr_cx_rt(cx), spec, &st);
    TU_CHECK(rv == TR_OK);
    if (rv == TR_OK) {
        memcpy(st, init, spec->size);
        tr_task_start(st, &j);
    }
    return j;
}

// CHECK_MEM: the n bytes at p are the C string s (n == strlen(s)).
#define CHECK_MEM(st, p, n, s) CHECK(st, (n) == strlen(s) && memcmp((p), (s), (n)) == 0)

#endif
