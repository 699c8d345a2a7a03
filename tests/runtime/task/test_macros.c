// Tests for the await macros of troupe/task.h (TR_BEGIN, TR_AWAIT,
// TR_YIELD, TR_RETURN, TR_END): resumption at the right point in nested
// loops, several awaits on one source line (__COUNTER__, not __LINE__),
// TR_RETURN inside a loop, the resume point after the end, awaits inside a
// switch of the user's own (they resume correctly with the labels-as-values
// form; the switch form, built when TR_AWAIT_SWITCH is defined, panics),
// and the panic when a finished task is polled again (in a forked child,
// which must die of SIGABRT).
#include "../test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

// ---------------------------------------------------------------------------
// Helpers.

// pend_n: an awaitable that returns PENDING n times (waking its task each
// time, so the task is polled again at once) and then READY.
typedef struct pend_n {
    unsigned left;
    bool armed;
} pend_n;

static tr_poll
pend_n_poll(pend_n *p, unsigned n, tr_cx *cx)
{
    if (!p->armed) {
        p->armed = true;
        p->left = n;
    }
    if (p->left > 0) {
        p->left--;
        tr_wake(tr_cx_waker(cx));
        return TR_PENDING;
    }
    p->armed = false;
    return TR_READY;
}

typedef struct trace {
    char log[128];
    size_t n;
    int drops;
    int pc_at_drop;
} trace;

static void
note(trace *t, char c)
{
    if (t->n + 1 < sizeof t->log) {
        t->log[t->n++] = c;
        t->log[t->n] = '\0';
    }
}

// ---------------------------------------------------------------------------
// Nested loops.

typedef struct loops {
    int tr_pc;
    trace *t;
    unsigned i, j;
    pend_n p;
} loops;

static tr_poll
loops_poll(void *arg, tr_cx *cx)
{
    loops *st = arg;
    TR_BEGIN(st);
    note(st->t, '<');
    for (st->i = 0; st->i < 3; st->i++) {
        note(st->t, (char)('a' + st->i));
        TR_AWAIT(st, pend_n_poll(&st->p, 2, cx));
        note(st->t, (char)('0' + st->i));
        for (st->j = 0; st->j < 2; st->j++) {
            TR_AWAIT(st, pend_n_poll(&st->p, 1, cx));
            note(st->t, 'x');
            TR_YIELD(st, cx);
            note(st->t, 'y');
        }
    }
    note(st->t, '>');
    tr_cx_set_result_u64(cx, st->i * 10 + st->j);
    TR_END(st);
}

static void
loops_drop(void *arg)
{
    loops *st = arg;
    st->t->drops++;
    st->t->pc_at_drop = st->tr_pc;
}

static const tr_task_spec loops_spec = {
    .name = "loops", .poll = loops_poll, .drop = loops_drop, .size = sizeof(loops)};

static void
test_macros_awaits_in_loops_resume_in_order(void **state)
{
    (void)state;
    trace t;
    memset(&t, 0, sizeof t);
    tr_rt *rt = tu_rt_new();
    tr_outcome out;
    assert_int_equal(tr_rt_run(rt, &loops_spec, NULL, &(loops){.t = &t}, &out), TR_OK);
    // Code between awaits runs exactly once per pass, in order.
    assert_string_equal(t.log, "<a0xyxyb1xyxyc2xyxy>");
    assert_int_equal(out.value.u64, 32);
    // One first poll, then per outer pass: 2 (pend 2) + 2 x (1 pend + 1 yield).
    assert_int_equal(tu_stats(rt).polls, 1 + 3 * (2 + 2 * 2));
    // Finished through TR_END: the resume point says done; drop ran once.
    assert_int_equal(t.drops, 1);
    assert_int_equal(t.pc_at_drop, TR__DONE);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Several awaits on one line: each gets its own resume point.

typedef struct oneline {
    int tr_pc;
    trace *t;
    pend_n p, q;
} oneline;

#define TWO_AWAITS(st, cx)                      \
    TR_AWAIT(st, pend_n_poll(&(st)->p, 1, cx)); \
    note((st)->t, 'p');                         \
    TR_AWAIT(st, pend_n_poll(&(st)->q, 2, cx)); \
    note((st)->t, 'q')

static tr_poll
oneline_poll(void *arg, tr_cx *cx)
{
    oneline *st = arg;
    TR_BEGIN(st);
    TWO_AWAITS(st, cx);
    TWO_AWAITS(st, cx);
    TR_END(st);
}

static const tr_task_spec oneline_spec = {
    .name = "oneline", .poll = oneline_poll, .size = sizeof(oneline)};

static void
test_macros_awaits_on_one_line(void **state)
{
    (void)state;
    trace t;
    memset(&t, 0, sizeof t);
    tr_rt *rt = tu_rt_new();
    assert_int_equal(tr_rt_run(rt, &oneline_spec, NULL, &(oneline){.t = &t}, NULL), TR_OK);
    assert_string_equal(t.log, "pqpq");
    assert_int_equal(tu_stats(rt).polls, 1 + 2 * (1 + 2));
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// TR_RETURN inside a loop.

typedef struct early {
    int tr_pc;
    trace *t;
    unsigned i;
    pend_n p;
} early;

static tr_poll
early_poll(void *arg, tr_cx *cx)
{
    early *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < 10; st->i++) {
        TR_AWAIT(st, pend_n_poll(&st->p, 1, cx));
        note(st->t, (char)('0' + st->i));
        if (st->i == 3) {
            tr_cx_set_result_u64(cx, 30);
            TR_RETURN(st);
        }
        TR_YIELD(st, cx);
    }
    note(st->t, 'E'); // never reached
    tr_cx_set_result_u64(cx, 99);
    TR_END(st);
}

static void
early_drop(void *arg)
{
    early *st = arg;
    st->t->drops++;
    st->t->pc_at_drop = st->tr_pc;
}

static const tr_task_spec early_spec = {
    .name = "early", .poll = early_poll, .drop = early_drop, .size = sizeof(early)};

static void
test_macros_return_inside_loop(void **state)
{
    (void)state;
    trace t;
    memset(&t, 0, sizeof t);
    tr_rt *rt = tu_rt_new();
    tr_outcome out;
    assert_int_equal(tr_rt_run(rt, &early_spec, NULL, &(early){.t = &t}, &out), TR_OK);
    assert_string_equal(t.log, "0123");
    assert_int_equal(out.value.u64, 30);
    assert_int_equal(t.drops, 1);
    assert_int_equal(t.pc_at_drop, TR__DONE);
    // 1 first poll; i = 0..2: pend + yield; i = 3: pend.
    assert_int_equal(tu_stats(rt).polls, 1 + 3 * 2 + 1);
    tu_rt_free_clean(rt);
}

// An await whose expression is ready at once does not return PENDING.
typedef struct ready_now {
    int tr_pc;
    trace *t;
    pend_n p;
} ready_now;

static tr_poll
ready_now_poll(void *arg, tr_cx *cx)
{
    ready_now *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, pend_n_poll(&st->p, 0, cx));
    note(st->t, 'r');
    TR_AWAIT(st, pend_n_poll(&st->p, 0, cx));
    note(st->t, 's');
    TR_END(st);
}

static const tr_task_spec ready_now_spec = {
    .name = "ready_now", .poll = ready_now_poll, .size = sizeof(ready_now)};

static void
test_macros_ready_await_does_not_suspend(void **state)
{
    (void)state;
    trace t;
    memset(&t, 0, sizeof t);
    tr_rt *rt = tu_rt_new();
    assert_int_equal(tr_rt_run(rt, &ready_now_spec, NULL, &(ready_now){.t = &t}, NULL), TR_OK);
    assert_string_equal(t.log, "rs");
    assert_int_equal(tu_stats(rt).polls, 1);
    tu_rt_free_clean(rt);
}

// A task cancelled while suspended at an await is dropped with its resume
// point still there (neither 0 nor TR__DONE).
typedef struct parked {
    int tr_pc;
    trace *t;
} parked;

static tr_poll
never_ready(void)
{
    return TR_PENDING; // and arranges no wake
}

static tr_poll
parked_poll(void *arg, tr_cx *cx)
{
    parked *st = arg;
    (void)cx;
    TR_BEGIN(st);
    note(st->t, 'w');
    TR_AWAIT(st, never_ready());
    note(st->t, '!');
    TR_END(st);
}

static void
parked_drop(void *arg)
{
    parked *st = arg;
    st->t->drops++;
    st->t->pc_at_drop = st->tr_pc;
}

static const tr_task_spec parked_spec = {
    .name = "parked", .poll = parked_poll, .drop = parked_drop, .size = sizeof(parked)};

static bool
traced(void *arg)
{
    return ((trace *)arg)->n > 0;
}

static void
test_macros_cancel_at_await_keeps_resume_point(void **state)
{
    (void)state;
    trace t;
    memset(&t, 0, sizeof t);
    tr_rt *rt = tu_rt_new();
    tr_join j;
    tu_start(rt, &parked_spec, &(parked){.t = &t}, &j);
    tu_block_until(rt, traced, &t);
    assert_int_equal(tr_task_abort(&j), TR_OK);
    tu_block_until(rt, tu_pred_finished, &j);
    tr_outcome out;
    assert_int_equal(tr_join_wait(&j, &out), TR_OK);
    assert_int_equal(out.err, TR_ECANCELED);
    assert_string_equal(t.log, "w");
    assert_int_equal(t.drops, 1);
    assert_true(t.pc_at_drop != 0 && t.pc_at_drop != TR__DONE);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Awaits inside a switch of the user's own. With labels as values (GCC and
// clang, the default) each resumes where it was; with the switch form its
// case label belongs to the inner switch, the resume finds no case in
// TR_BEGIN's switch and lands in TR_END's default, which panics.

#if defined(__GNUC__) && !defined(TR_AWAIT_SWITCH)
#define AWAIT_IN_SWITCH_WORKS 1
#else
#define AWAIT_IN_SWITCH_WORKS 0
#endif

typedef struct in_switch {
    int tr_pc;
    int mode;
    int round;
    pend_n p;
    char log[16];
    int nlog;
} in_switch;

static tr_poll
in_switch_poll(void *arg, tr_cx *cx)
{
    in_switch *st = arg;
    TR_BEGIN(st);
    for (st->round = 0; st->round < 3; st->round++) {
        switch (st->mode == 0 ? 0 : st->round) {
        case 0:
            st->log[st->nlog++] = 'a';
            break;
        case 1:
            TR_AWAIT(st, pend_n_poll(&st->p, 2, cx));
            st->log[st->nlog++] = 'b';
            TR_YIELD(st, cx);
            st->log[st->nlog++] = 'c';
            break;
        default:
            switch (st->round) { // nested deeper
            case 2:
                TR_AWAIT(st, pend_n_poll(&st->p, 1, cx));
                st->log[st->nlog++] = 'd';
                break;
            }
            break;
        }
    }
    st->log[st->nlog] = '\0';
    tr_cx_set_result_u64(cx, strcmp(st->log, st->mode == 0 ? "aaa" : "abcd") == 0);
    TR_END(st);
}

static const tr_task_spec in_switch_spec = {
    .name = "in_switch", .poll = in_switch_poll, .size = sizeof(in_switch)};

// A task that finished, polled again by hand: the resume point says so.
typedef struct once {
    int tr_pc;
} once;

static tr_poll
once_poll(void *arg, tr_cx *cx)
{
    once *st = arg;
    TR_BEGIN(st);
    TR_YIELD(st, cx);
    TR_END(st);
}

static const tr_task_spec once_spec = {.name = "once", .poll = once_poll, .size = sizeof(once)};

// run_in_child runs a task (in_switch with mode 0 or 1; 2: once, then its
// poll function again with the finished state) in a forked child and
// returns its wait status. The child exits 0 if block_on returns with the
// task's result 1, 6 if the result was wrong.
static int
run_in_child(int mode)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGABRT, SIG_DFL);
        // Keep the panic message out of the test output.
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, STDERR_FILENO);
        }
        tr_rt *rt = NULL;
        tr_rt_config cfg;
        tu_config_init(&cfg); // no worker threads in a forked child
        if (tr_rt_new(&cfg, &rt) != TR_OK) {
            _exit(3);
        }
        if (mode == 2) {
            once done = {.tr_pc = 0};
            tr_outcome out;
            if (tr_rt_run(rt, &once_spec, NULL, NULL, &out) != TR_OK) {
                _exit(5);
            }
            // What the finished task's state held: its resume point.
            done.tr_pc = TR__DONE;
            once_poll(&done, NULL); // panics
            _exit(7);
        }
        tr_outcome out;
        tr_err rv = tr_rt_run(rt, &in_switch_spec, NULL, &(in_switch){.mode = mode}, &out);
        tr_rt_free(rt);
        _exit(rv != TR_OK ? 5 : out.value.u64 == 1 ? 0 : 6);
    }
    int status = 0;
    pid_t w;
    do {
        w = waitpid(pid, &status, 0);
    } while (w < 0 && errno == EINTR);
    assert_int_equal(w, pid);
    return status;
}

static void
expect_abort(int status)
{
    if (!WIFSIGNALED(status)) {
        fail_msg("the child was not killed by a signal (exit status %d)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

static void
test_macros_await_in_user_switch(void **state)
{
    (void)state;
    // The same task, not taking the awaits: it completes.
    int status = run_in_child(0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    // Taking them: each resumes where it was (or, switch form, the resume
    // panics).
    status = run_in_child(1);
    if (AWAIT_IN_SWITCH_WORKS) {
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    } else {
        expect_abort(status);
    }
}

static void
test_macros_poll_after_finish_panics(void **state)
{
    (void)state;
    expect_abort(run_in_child(2));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_macros_awaits_in_loops_resume_in_order),
        cmocka_unit_test(test_macros_awaits_on_one_line),
        cmocka_unit_test(test_macros_return_inside_loop),
        cmocka_unit_test(test_macros_ready_await_does_not_suspend),
        cmocka_unit_test(test_macros_cancel_at_await_keeps_resume_point),
        cmocka_unit_test(test_macros_await_in_user_switch),
        cmocka_unit_test(test_macros_poll_after_finish_panics),
    };
    return tu_run(tests);
}
