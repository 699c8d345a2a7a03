// test_util.h: the one harness of the runtime tests: creating and freeing
// runtimes with leak checks, an event that plain threads and tasks can both
// wait on (with bounded timeouts, never sleeps), thread helpers, checks
// inside poll functions (CHECK*: record the first failure and finish the
// task), yields bounded by time (YIELD_UNTIL), and running a root task
// under a watchdog (tu_run_root, tu_run_main).
//
// Everything here is static inline (or marked unused) so that each test
// executable compiles cleanly under -Wall -Wextra -Werror whatever it uses.
#ifndef TR_TEST_UTIL_H
#define TR_TEST_UTIL_H

// cmocka 1.1.5 needs these four first, in this order.
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <semaphore.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <troupe/troupe.h>

#define TU_UNUSED __attribute__((unused))

// tu_run runs a test table. TU_FILTER=patterns runs only the matching
// tests; TU_SKIP=patterns leaves the matching ones out. Each holds a
// comma-separated list of cmocka-style patterns (`*` any run of
// characters, `?` any one). ctest uses both to give a test that may skip
// itself (tu_skip) an entry of its own (tr_test's ALONE), because a skip is
// reported per executable (exit 77). A TU_FILTER that matches no test fails
// the run: a misspelt name must not pass as zero tests.
#define tu_run(tests) tu_run_group(tests, NULL, NULL)
#define tu_run_group(tests, setup, teardown)                                                    \
    ({                                                                                          \
        tu_prefault_stack();                                                                    \
        struct CMUnitTest tu_kept_[sizeof(tests) / sizeof((tests)[0])];                         \
        size_t tu_n_ = tu_filters_apply((tests), sizeof(tests) / sizeof((tests)[0]), tu_kept_); \
        tu_n_ == 0 && getenv("TU_FILTER") != NULL                                               \
            ? (print_error("TU_FILTER=%s matches no test\n", getenv("TU_FILTER")), 1)           \
            : _cmocka_run_group_tests(#tests, tu_kept_, tu_n_, (setup), (teardown));            \
    })

// tu_pattern_hit reports whether name matches one of the comma-separated
// patterns of list (fnmatch: `*`, `?`).
static inline bool
tu_pattern_hit(const char *list, const char *name)
{
    char pat[256];
    while (list != NULL && *list != '\0') {
        const char *end = strchr(list, ',');
        size_t len = end != NULL ? (size_t)(end - list) : strlen(list);
        if (len < sizeof pat) {
            memcpy(pat, list, len);
            pat[len] = '\0';
            if (fnmatch(pat, name, 0) == 0) {
                return true;
            }
        }
        list = end != NULL ? end + 1 : NULL;
    }
    return false;
}

// tu_filters_apply copies to out the tests of in[0..n) that TU_FILTER and
// TU_SKIP (see tu_run) let run, in order, and returns how many. (cmocka
// 1.1.5's own filters take one pattern each.)
static inline size_t
tu_filters_apply(const struct CMUnitTest *in, size_t n, struct CMUnitTest *out)
{
    const char *only = getenv("TU_FILTER"), *skip = getenv("TU_SKIP");
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if ((only == NULL || tu_pattern_hit(only, in[i].name)) &&
            !tu_pattern_hit(skip, in[i].name)) {
            out[kept++] = in[i];
        }
    }
    return kept;
}

// tu_prefault_stack touches 256 KiB of the main thread's stack once, for
// valgrind 3.19's sake: it maps the main thread's stack only as deep as the
// thread has touched it, and does not grow it for a signal frame when the
// handler has SA_ONSTACK (troupe's has, for programs that run handlers on an
// alternate stack, as Go requires) though no alternate stack is set. A
// signal (SIGCHLD from an earlier child, delivered as posix_spawn restores
// the mask) arriving deeper than the thread had been killed the run with
// "Can't extend stack ... during signal delivery for thread 1". Natively
// this costs one touch of an 8 MiB stack.
__attribute__((noinline, unused)) static void
tu_prefault_stack(void)
{
    volatile char pad[256 * 1024];
    for (size_t i = sizeof pad; i > 0; i -= 4096) {
        pad[i - 1] = 0;
    }
}

// tu_skip(why) skips the current test. Run alone (TU_FILTER set: its own
// ctest entry), the executable exits 77, which ctest reports as skipped;
// inside a whole suite it is cmocka's skip().
#define tu_skip(why)                                             \
    do {                                                         \
        print_message("[ SKIPPED  ] %s: %s\n", __func__, (why)); \
        if (getenv("TU_FILTER") != NULL) {                       \
            exit(77);                                            \
        }                                                        \
        skip();                                                  \
    } while (0)

// Bounded waits: long enough for a loaded TSan build on 2 cores, short
// enough that a lost wakeup fails the test instead of hanging ctest.
#define TU_WAIT_MS 10000

// ---------------------------------------------------------------------------
// Checks inside poll functions and helper threads. A cmocka assert there
// would longjmp out of the runtime (leaving block_on half done and breaking
// the tests that follow), so they record the first failure instead, and the
// test calls tu_checks_pass() once the runtime has returned.

static atomic_int tu_fail_count TU_UNUSED;
static char tu_fail_msg[512] TU_UNUSED;

static inline void
tu_fail_record(const char *file, int line, const char *what)
{
    if (atomic_fetch_add(&tu_fail_count, 1) == 0) {
        snprintf(tu_fail_msg, sizeof tu_fail_msg, "%s:%d: check failed: %s", file, line, what);
    }
}

#define TU_CHECK(c)                                 \
    do {                                            \
        if (!(c)) {                                 \
            tu_fail_record(__FILE__, __LINE__, #c); \
        }                                           \
    } while (0)

// tu_checks_pass fails the test if a TU_CHECK failed, and resets.
#define tu_checks_pass()                                                \
    do {                                                                \
        int n_ = atomic_exchange(&tu_fail_count, 0);                    \
        if (n_ != 0) {                                                  \
            fail_msg("%d check(s) failed; first: %s", n_, tu_fail_msg); \
        }                                                               \
    } while (0)

// tu_sem_wait_ms waits at most ms for a semaphore (retrying on EINTR);
// returns whether it got it.
static inline bool
tu_sem_wait_ms(sem_t *s, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    int rc;
    do {
        rc = sem_timedwait(s, &ts);
    } while (rc != 0 && errno == EINTR);
    return rc == 0;
}

// ---------------------------------------------------------------------------
// Runtimes and tasks.

// tu_config_init: the configuration the single-worker suites reason about:
// one worker, round robin (on one worker a plain FIFO). TROUPE_* variables
// still apply (CI runs the suites again under TROUPE_DETERMINISTIC=seed).
//
// A suite whose assertions are about FIFO interleavings defines
// TU_IGNORE_ENV to 1 before including this file, so that the environment
// (the deterministic mode above all) cannot reorder its tasks.
#ifndef TU_IGNORE_ENV
#define TU_IGNORE_ENV 0
#endif

static inline void
tu_config_init(tr_rt_config *cfg)
{
    tr_rt_config_init(cfg);
    cfg->workers = 1;
    cfg->sched = TR_SCHED_RR;
    cfg->ignore_env = TU_IGNORE_ENV;
}

// tu_rt_new_cfg makes a runtime from cfg, or from tu_config_init's when
// cfg is NULL.
static inline tr_rt *
tu_rt_new_cfg(const tr_rt_config *cfg)
{
    tr_rt_config def;
    if (cfg == NULL) {
        tu_config_init(&def);
        cfg = &def;
    }
    tr_rt *rt = NULL;
    assert_int_equal(tr_rt_new(cfg, &rt), TR_OK);
    assert_non_null(rt);
    return rt;
}

static inline tr_rt *
tu_rt_new(void)
{
    return tu_rt_new_cfg(NULL);
}

// tu_rt_new_fifo: tu_config_init's runtime with the environment ignored,
// for tests whose assertions depend on FIFO order (the deterministic mode
// would reorder them on purpose).
static inline tr_rt *
tu_rt_new_fifo(void)
{
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.ignore_env = true;
    return tu_rt_new_cfg(&cfg);
}

static inline tr_rt_stats
tu_stats(tr_rt *rt)
{
    tr_rt_stats st;
    tr_rt_get_stats(rt, &st);
    return st;
}

static inline uint64_t
tu_live(tr_rt *rt)
{
    return tu_stats(rt).live_tasks;
}

static inline void tu_rt_quiesce(tr_rt *rt, unsigned ms);

// tu_rt_free_clean lets every worker go quiet (tu_rt_quiesce: a worker
// frees a detached task's slot just after its drop ran, so a test that saw
// the drop may look before the free), asserts that no task is live any
// more, then frees rt.
static inline void
tu_rt_free_clean(tr_rt *rt)
{
    tu_rt_quiesce(rt, TU_WAIT_MS);
    assert_int_equal(tu_live(rt), 0);
    tr_rt_free(rt);
}

// tu_task_new prepares a task with tr_task_new (the two-step form), for the
// tests of tr_task_new and tr_task_start themselves; every other test
// spawns in one call (tu_start, tu_spawn, tu_run_root).
static inline void *
tu_task_new(tr_rt *rt, const tr_task_spec *spec)
{
    void *st = NULL;
    assert_int_equal(tr_task_new(rt, spec, &st), TR_OK);
    assert_non_null(st);
    return st;
}

// tu_start starts, from outside a poll (the test's thread, a helper
// thread), a task of kind spec whose state is a copy of *init (spec->size
// bytes; NULL: zeroed), with tr_spawn, and asserts that it started. j may
// be NULL: the task is detached. Inside a poll use tu_spawn (it records a
// failure instead of asserting).
static inline void
tu_start(tr_rt *rt, const tr_task_spec *spec, const void *init, tr_join *j)
{
    assert_int_equal(tr_spawn(rt, spec, NULL, (void *)init, j), TR_OK);
}

// ---------------------------------------------------------------------------
// Time.

static inline uint64_t
tu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// tu_abstime returns CLOCK_MONOTONIC now + ms, for condition variables made
// with tu_cond_init.
static inline struct timespec
tu_abstime(unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static inline void
tu_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

// ---------------------------------------------------------------------------
// Events: a flag set once by anyone; plain threads wait with a timeout, a
// task awaits it with tu_event_poll (the setter wakes the registered task).

typedef struct tu_event {
    pthread_mutex_t e_mu;
    pthread_cond_t e_cv;
    bool e_set;       // under e_mu
    tr_waker e_waker; // the task waiting, under e_mu
} tu_event;

static inline void
tu_event_init(tu_event *ev)
{
    pthread_mutex_init(&ev->e_mu, NULL);
    tu_cond_init(&ev->e_cv);
    ev->e_set = false;
    ev->e_waker = (tr_waker){NULL, NULL};
}

static inline void
tu_event_destroy(tu_event *ev)
{
    pthread_cond_destroy(&ev->e_cv);
    pthread_mutex_destroy(&ev->e_mu);
}

static inline void
tu_event_set(tu_event *ev)
{
    pthread_mutex_lock(&ev->e_mu);
    ev->e_set = true;
    tr_waker w = ev->e_waker;
    ev->e_waker = (tr_waker){NULL, NULL};
    pthread_cond_broadcast(&ev->e_cv);
    pthread_mutex_unlock(&ev->e_mu);
    // Outside the lock: waking may run runtime code. A stale waker is a
    // no-op, so a task that is gone by now is fine.
    tr_wake(w);
}

static inline bool
tu_event_is_set(tu_event *ev)
{
    pthread_mutex_lock(&ev->e_mu);
    bool set = ev->e_set;
    pthread_mutex_unlock(&ev->e_mu);
    return set;
}

// tu_event_wait waits at most ms for the event; returns whether it is set.
static inline bool
tu_event_wait(tu_event *ev, unsigned ms)
{
    struct timespec until = tu_abstime(ms);
    pthread_mutex_lock(&ev->e_mu);
    int rc = 0;
    while (!ev->e_set && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&ev->e_cv, &ev->e_mu, &until);
    }
    bool set = ev->e_set;
    pthread_mutex_unlock(&ev->e_mu);
    return set;
}

// tu_event_poll is an awaitable: TR_READY once the event is set.
static inline tr_poll
tu_event_poll(tu_event *ev, tr_cx *cx)
{
    pthread_mutex_lock(&ev->e_mu);
    bool set = ev->e_set;
    if (!set) {
        ev->e_waker = tr_cx_waker(cx);
    }
    pthread_mutex_unlock(&ev->e_mu);
    return set ? TR_READY : TR_PENDING;
}

// ---------------------------------------------------------------------------
// Threads.

static inline void
tu_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    assert_int_equal(pthread_create(t, NULL, fn, arg), 0);
}

static inline void *
tu_thread_join(pthread_t t)
{
    void *rv = NULL;
    assert_int_equal(pthread_join(t, &rv), 0);
    return rv;
}

// ---------------------------------------------------------------------------
// A watchdog for tests whose progress depends on wakes from other threads:
// if the test has not stopped it within ms, it shuts the runtime down at
// once, so that a lost wakeup makes block_on return (and the test fail)
// instead of hanging until ctest's timeout.

typedef struct tu_watchdog {
    tr_rt *rt;
    unsigned ms;
    tu_event done;
    pthread_t thr;
    atomic_bool fired;
} tu_watchdog;

static inline void *
tu_watchdog_main(void *arg)
{
    tu_watchdog *wd = arg;
    if (!tu_event_wait(&wd->done, wd->ms)) {
        atomic_store(&wd->fired, true);
        tr_rt_shutdown(wd->rt, TR_SHUTDOWN_IMMEDIATE, 0);
    }
    return NULL;
}

static inline void
tu_watchdog_start(tu_watchdog *wd, tr_rt *rt, unsigned ms)
{
    wd->rt = rt;
    wd->ms = ms;
    atomic_init(&wd->fired, false);
    tu_event_init(&wd->done);
    tu_thread_start(&wd->thr, tu_watchdog_main, wd);
}

// tu_watchdog_stop stops it and fails the test if it fired.
static inline void
tu_watchdog_stop(tu_watchdog *wd)
{
    tu_event_set(&wd->done);
    tu_thread_join(wd->thr);
    tu_event_destroy(&wd->done);
    if (atomic_load(&wd->fired)) {
        fail_msg("watchdog: the runtime made no progress for %u ms (lost wakeup?)", wd->ms);
    }
}

// ---------------------------------------------------------------------------
// A task that never finishes on its own: it counts its polls and drops and
// returns TR_PENDING without arranging any wake. Only a cancel, a shutdown or
// an explicit wake moves it.

typedef struct tu_stuck {
    int tr_pc;
    atomic_int *polls; // may be NULL
    atomic_int *drops; // may be NULL
} tu_stuck;

static inline tr_poll
tu_stuck_poll(void *arg, tr_cx *cx)
{
    tu_stuck *st = arg;
    (void)cx;
    if (st->polls != NULL) {
        atomic_fetch_add(st->polls, 1);
    }
    return TR_PENDING;
}

static inline void
tu_stuck_drop(void *arg)
{
    tu_stuck *st = arg;
    if (st->drops != NULL) {
        atomic_fetch_add(st->drops, 1);
    }
}

static const tr_task_spec tu_stuck_spec TU_UNUSED = {
    .name = "stuck", .poll = tu_stuck_poll, .drop = tu_stuck_drop, .size = sizeof(tu_stuck)};

// TU_STUCK(polls, drops) is the state of a stuck task, to pass as the
// arg of tr_spawn, tr_rt_run or tu_start with tu_stuck_spec.
#define TU_STUCK(p, d) (&(tu_stuck){.polls = (p), .drops = (d)})

// tu_stuck_new prepares a stuck task (not started: tr_task_new), for the
// tests of tr_task_new and tr_task_start themselves.
static inline tu_stuck *
tu_stuck_new(tr_rt *rt, atomic_int *polls, atomic_int *drops)
{
    tu_stuck *st = tu_task_new(rt, &tu_stuck_spec);
    st->polls = polls;
    st->drops = drops;
    return st;
}

// ---------------------------------------------------------------------------
// A task that returns a u64 result after yielding `yields` times; counts
// its drops.

typedef struct tu_value_task {
    int tr_pc;
    uint32_t yields;
    uint64_t value;
    atomic_int *drops; // may be NULL
} tu_value_task;

static inline tr_poll
tu_value_poll(void *arg, tr_cx *cx)
{
    tu_value_task *st = arg;
    if (st->yields > 0) {
        st->yields--;
        tr_cx_yield(cx);
        return TR_PENDING;
    }
    tr_cx_set_result_u64(cx, st->value);
    return TR_READY;
}

static inline void
tu_value_drop(void *arg)
{
    tu_value_task *st = arg;
    if (st->drops != NULL) {
        atomic_fetch_add(st->drops, 1);
    }
}

static const tr_task_spec tu_value_spec TU_UNUSED = {
    .name = "value", .poll = tu_value_poll, .drop = tu_value_drop, .size = sizeof(tu_value_task)};

// TU_VALUE(value, yields, drops) is the state of a value task, to pass as
// the arg of tr_spawn, tr_rt_run or tu_start with tu_value_spec.
#define TU_VALUE(v, y, d) (&(tu_value_task){.value = (v), .yields = (y), .drops = (d)})

// tu_value_new prepares a value task (not started: tr_task_new), for the
// tests of tr_task_new and tr_task_start themselves.
static inline tu_value_task *
tu_value_new(tr_rt *rt, uint64_t value, uint32_t yields, atomic_int *drops)
{
    tu_value_task *st = tu_task_new(rt, &tu_value_spec);
    st->value = value;
    st->yields = yields;
    st->drops = drops;
    return st;
}

// ---------------------------------------------------------------------------
// Bounded waits. Every wait in these suites is for an event (a condition
// that some other task or thread makes true) and ends at a deadline, never
// after a count of yields or polls: on a busy machine the OS may keep the
// thread that makes the condition true off the CPU for a long time, and a
// count of turns measures nothing. An expiry records what was awaited.

// tu_deadline returns CLOCK_MONOTONIC now + ms, in ns.
static inline uint64_t
tu_deadline(unsigned ms)
{
    return tu_now_ns() + (uint64_t)ms * 1000000u;
}

// tu_wait_expired records that a wait for `what` ran out of time.
static inline void
tu_wait_expired(const char *file, int line, const char *what, unsigned ms)
{
    char msg[400];
    snprintf(msg, sizeof msg, "waited %u ms for: %s", ms, what);
    tu_fail_record(file, line, msg);
}

// TU_YIELD_UNTIL(st, cx, cond): inside a poll function, yield (letting the
// other tasks of the worker run) until cond holds, for at most TU_WAIT_MS.
// The state needs a `uint64_t tu_deadline` field. On expiry it records the
// failure (naming cond) and goes on; callers that need cond afterwards
// check it again.
#define TU_YIELD_UNTIL(st, cx, cond)                                    \
    do {                                                                \
        (st)->tu_deadline = tu_deadline(TU_WAIT_MS);                    \
        while (!(cond)) {                                               \
            if (tu_now_ns() > (st)->tu_deadline) {                      \
                tu_wait_expired(__FILE__, __LINE__, #cond, TU_WAIT_MS); \
                break;                                                  \
            }                                                           \
            TR_YIELD(st, cx);                                           \
        }                                                               \
    } while (0)

// TU_SPIN_UNTIL(cond, ms): on a plain thread, wait until cond holds, for at
// most ms; true when it held. For conditions no event announces (a
// worker's park state); it lets the CPU go between looks.
#define TU_SPIN_UNTIL(cond, ms)                              \
    ({                                                       \
        uint64_t tu_d_ = tu_deadline(ms);                    \
        bool tu_ok_;                                         \
        while (!(tu_ok_ = (cond)) && tu_now_ns() <= tu_d_) { \
            sched_yield();                                   \
        }                                                    \
        tu_ok_;                                              \
    })

// tu_coarse_ns reads CLOCK_MONOTONIC_COARSE (ns).
static inline uint64_t
tu_coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// tu_long_poll is the body of a long poll for tests of what a worker does
// behind one: it lasts until the coarse clock has ticked (its resolution,
// 4 ms at HZ=250), as a long computation would. False if no tick came
// within TU_WAIT_MS.
static inline bool
tu_long_poll(void)
{
    uint64_t c0 = tu_coarse_ns();
    return TU_SPIN_UNTIL(tu_coarse_ns() != c0, TU_WAIT_MS);
}

// A root that yields until pred(arg) holds, for at most TU_WAIT_MS, so that
// tasks started from outside the runtime (Spawn messages, which the worker
// drains when its queue is empty or every 32 polls) get to run. Its result
// is 1 when pred held, 0 when time ran out.

typedef struct tu_until {
    int tr_pc;
    bool (*pred)(void *arg);
    void *arg;
    uint64_t deadline;
} tu_until;

static inline tr_poll
tu_until_poll(void *arg, tr_cx *cx)
{
    tu_until *st = arg;
    if (st->deadline == 0) {
        st->deadline = tu_deadline(TU_WAIT_MS);
    }
    bool held = st->pred(st->arg);
    if (held || tu_now_ns() > st->deadline) {
        tr_cx_set_result_u64(cx, held);
        return TR_READY;
    }
    tr_cx_yield(cx);
    return TR_PENDING;
}

static const tr_task_spec tu_until_spec TU_UNUSED = {
    .name = "until", .poll = tu_until_poll, .size = sizeof(tu_until)};

// tu_block_until_ runs block_on with a tu_until root and fails the test,
// naming what it waited for, unless pred held within TU_WAIT_MS.
static inline void
tu_block_until_(tr_rt *rt, bool (*pred)(void *arg), void *arg, const char *what)
{
    tr_outcome out;
    assert_int_equal(
        tr_rt_run(rt, &tu_until_spec, NULL, &(tu_until){.pred = pred, .arg = arg}, &out), TR_OK);
    if (out.value.u64 != 1) {
        fail_msg("waited %u ms for: %s", TU_WAIT_MS, what);
    }
}

#define tu_block_until(rt, pred, arg) tu_block_until_((rt), (pred), (arg), #pred "(" #arg ")")

// tu_rt_quiesce waits until every task of rt has finished and every worker
// has stopped: a graceful shutdown carried out by block_on. Afterwards the
// runtime's counters and live count are exact (a worker bumps its
// completion counter after the task's drop ran and its join completed, so
// they lag what a test observes through drops and joins), and rt accepts
// no more tasks. Fails the test if tasks were still running after ms (they
// are cancelled then).
static inline void
tu_rt_quiesce(tr_rt *rt, unsigned ms)
{
    uint64_t t0 = tu_now_ns();
    tr_err rv = tr_rt_shutdown(rt, TR_SHUTDOWN_GRACEFUL, ms);
    if (rv != TR_OK && rv != TR_ESHUTDOWN) {
        fail_msg("tr_rt_shutdown: %s", tr_strerror(rv));
    }
    assert_int_equal(tr_rt_block_on(rt, NULL, NULL), TR_ESHUTDOWN);
    if (tu_now_ns() - t0 >= (uint64_t)ms * 1000000u) {
        fail_msg("quiesce: tasks were still running after %u ms (then cancelled)", ms);
    }
}

// tu_proc_stat_field reads field n (from 1) of /proc/pid/stat as a number,
// or -1 (no such process). Fields are counted from the last ')', the end
// of comm, which may hold spaces and parentheses itself.
static inline long long
tu_proc_stat_field(int pid, int n)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL) {
        return -1;
    }
    p++; // the space before field 3
    for (int i = 3; i < n; i++) {
        p = strchr(p + 1, ' ');
        if (p == NULL) {
            return -1;
        }
    }
    return strtoll(p + 1, NULL, 10);
}

static inline bool
tu_pred_finished(void *arg)
{
    return tr_join_is_finished((const tr_join *)arg);
}

// tu_pred_atleast: arg points at {atomic_int *counter; int n}.
typedef struct tu_atleast {
    atomic_int *counter;
    int n;
} tu_atleast;

static inline bool
tu_pred_atleast(void *arg)
{
    tu_atleast *a = arg;
    return atomic_load(a->counter) >= a->n;
}

// ---------------------------------------------------------------------------
// Checks that finish the task. CHECK* are TU_CHECK for a poll function
// written with the await macros: they record the first failure
// (tu_fail_record) and finish the task (TR_RETURN), and the test fails
// once the runtime has returned (tu_checks_pass, done by tu_run_root and
// tu_run_main). TU_CHECK, which goes on, is for helper threads and for
// polls that must carry on.

#define CHECK(st, c)                                \
    do {                                            \
        if (!(c)) {                                 \
            tu_fail_record(__FILE__, __LINE__, #c); \
            TR_RETURN(st);                          \
        }                                           \
    } while (0)

// CHECK_EQ(st, x, y): x == y as u64; a failure shows both values.
#define CHECK_EQ(st, x, y)                                                        \
    do {                                                                          \
        uint64_t check_x_ = (uint64_t)(x), check_y_ = (uint64_t)(y);              \
        if (check_x_ != check_y_) {                                               \
            char msg_[300];                                                       \
            snprintf(msg_, sizeof msg_, "%s == %s (%llu != %llu)", #x, #y,        \
                     (unsigned long long)check_x_, (unsigned long long)check_y_); \
            tu_fail_record(__FILE__, __LINE__, msg_);                             \
            TR_RETURN(st);                                                        \
        }                                                                         \
    } while (0)

// CHECK_ERR(st, got, want): the tr_err got is want; a failure names both.
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

// CHECK_MEM: the n bytes at p are the C string s (n == strlen(s)).
#define CHECK_MEM(st, p, n, s) CHECK(st, (n) == strlen(s) && memcmp((p), (s), (n)) == 0)

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

// ---------------------------------------------------------------------------
// Running a root task.

// tu_rt_make makes a runtime of scheduler sched with `workers` workers, the
// environment ignored (TROUPE_WORKERS and the deterministic mode must not
// change what the test relies on).
static inline tr_rt *
tu_rt_make(tr_sched_kind sched, unsigned workers)
{
    tr_rt_config cfg;
    tr_rt_config_init(&cfg);
    cfg.sched = sched;
    cfg.workers = workers;
    cfg.ignore_env = true;
    return tu_rt_new_cfg(&cfg);
}

// tu_count_fds returns the number of open descriptors of the process (plus
// a constant: compare two counts).
static inline int
tu_count_fds(void)
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

// tu_run_root runs a root of kind spec, its state a copy of *init
// (spec->size bytes; NULL: zeroed), to completion on rt (tr_rt_run) under a
// watchdog (TU_WAIT_MS), and checks that every check passed and that the
// root completed with TR_OK. rt stays the test's.
static inline void
tu_run_root(tr_rt *rt, const tr_task_spec *spec, const void *init)
{
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, TU_WAIT_MS);
    tr_outcome out;
    memset(&out, 0, sizeof out);
    tr_err rv = tr_rt_run(rt, spec, NULL, (void *)init, &out);
    tu_watchdog_stop(&wd);
    tu_checks_pass();
    assert_int_equal(rv, TR_OK);
    assert_int_equal(out.err, TR_OK);
}

// tu_run_main_on runs a task of kind spec, its state a copy of *init
// (spec->size bytes, tr_pc zero), as the root of rt (fresh) under a
// watchdog (3 * TU_WAIT_MS, longer than a YIELD_UNTIL, so that a wait that
// runs out of time is reported as such); then checks that every check
// passed, that the root completed with TR_OK, that no task outlived it and
// that no descriptor leaked; and frees rt.
static inline void
tu_run_main_on(tr_rt *rt, const tr_task_spec *spec, const void *init)
{
    int fds = tu_count_fds();
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    tr_outcome out;
    memset(&out, 0, sizeof out);
    tr_err rv = tr_rt_run(rt, spec, NULL, (void *)init, &out);
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
    assert_int_equal(tu_count_fds(), fds);
    tu_rt_free_clean(rt);
}

// tu_run_main: tu_run_main_on a fresh runtime with `workers` workers (one:
// round robin, a plain FIFO; more: work stealing), the environment
// ignored: several tests rely on one worker (no other thread drives the
// reactor in the middle of a poll).
static inline void
tu_run_main(unsigned workers, const tr_task_spec *spec, const void *init)
{
    tu_run_main_on(tu_rt_make(workers > 1 ? TR_SCHED_WS : TR_SCHED_RR, workers), spec, init);
}

// tu_spawn starts, from inside a poll, a task of kind spec whose state is
// a copy of *init (tr_spawn); a failure is recorded (TU_CHECK) and gives
// TR_JOIN_NONE.
static inline tr_join
tu_spawn(tr_cx *cx, const tr_task_spec *spec, const void *init)
{
    tr_join j = TR_JOIN_NONE;
    tr_err rv = tr_spawn(tr_cx_rt(cx), spec, NULL, (void *)init, &j);
    TU_CHECK(rv == TR_OK);
    return j;
}

// tu_spawn_at is tu_spawn that also stores the address of the new task's
// state in *at (a `T *` for a state of type T), for one-worker tests that
// read the state of a task while it is alive. *at is left alone when the
// spawn fails.
typedef struct tu_copy_at {
    const void *init;
    size_t size;
    void *at;
} tu_copy_at;

static inline void
tu_copy_at_init(void *state, void *arg)
{
    tu_copy_at *c = arg;
    memcpy(state, c->init, c->size);
    memcpy(c->at, &state, sizeof state);
}

static inline tr_join
tu_spawn_at(tr_cx *cx, const tr_task_spec *spec, const void *init, void *at)
{
    tr_join j = TR_JOIN_NONE;
    tu_copy_at c = {.init = init, .size = spec->size, .at = at};
    tr_err rv = tr_spawn(tr_cx_rt(cx), spec, tu_copy_at_init, &c, &j);
    TU_CHECK(rv == TR_OK);
    return j;
}

#endif
