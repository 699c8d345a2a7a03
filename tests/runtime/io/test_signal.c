// Tests for awaitable signals (troupe/signal.h): a signal delivered to a
// waiting task (from a task and from a plain thread), deliveries before the
// wait are counted and never lost, cancellation, the previous handler is
// chained and restored, two runtimes both see a signal, the signalfd mode,
// bad arguments, and a bounded storm of signals to four waiters on two
// workers.
//
// Every signal a test sends is awaited before its last listener goes:
// otherwise the restored default disposition (terminate) would meet a
// signal still in flight. Nothing sleeps: tasks await the signals, and the
// sending thread waits on semaphores the waiters post.
#include "io/io.h"
#include "../test_util.h"

#include <signal.h>
#include <unistd.h>

#include <troupe/signal.h>

static bool
disposition_is(int signo, void (*h)(int))
{
    struct sigaction sa;
    if (sigaction(signo, NULL, &sa) != 0) {
        return false;
    }
    return !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == h;
}

// ---------------------------------------------------------------------------
// A task waits; a second task sends the signal once the first is parked.

typedef struct kill_task {
    int tr_pc;
    int signo;
} kill_task;

static tr_poll
kill_poll(void *arg, tr_cx *cx)
{
    kill_task *st = arg;
    (void)cx;
    TU_CHECK(kill(getpid(), st->signo) == 0);
    return TR_READY;
}

static const tr_task_spec kill_spec = {
    .name = "kill", .poll = kill_poll, .size = sizeof(kill_task)};

typedef struct waiter_task {
    int tr_pc;
    tr_signal sig;
    uint64_t count;
    tr_join sender;
    tr_outcome out;
} waiter_task;

static tr_poll
waiter_poll(void *arg, tr_cx *cx)
{
    waiter_task *st = arg;
    TR_BEGIN(st);
    TU_CHECK(tr_signal_init(&st->sig, tr_cx_rt(cx), SIGUSR1, 0) == TR_OK);
    TU_CHECK(tr__signal_listeners(SIGUSR1) == 1);
    {
        // One worker: the sender runs only once we are parked below.
        TU_CHECK(tr_spawn(tr_cx_rt(cx), &kill_spec, NULL, &(kill_task){.signo = SIGUSR1},
                          &st->sender) == TR_OK);
    }
    TR_AWAIT(st, tr_signal_wait(&st->sig, cx, &st->count));
    TU_CHECK(st->count == 1);
    TR_AWAIT(st, tr_join_poll(&st->sender, cx, &st->out));
    TR_END(st);
}

static void
waiter_drop(void *arg)
{
    waiter_task *st = arg;
    tr_signal_fini(&st->sig);
    tr_join_release(&st->sender);
}

static const tr_task_spec waiter_spec = {
    .name = "waiter", .poll = waiter_poll, .drop = waiter_drop, .size = sizeof(waiter_task)};

static void
test_signal_delivered_to_waiting_task(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tu_run_root(rt, &waiter_spec, NULL);
    assert_int_equal(tr__signal_listeners(SIGUSR1), 0);
    assert_true(disposition_is(SIGUSR1, SIG_DFL)); // restored
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// A plain thread sends the signal once the task says it is listening.

typedef struct thread_rig {
    tu_event listening;
    pthread_t thr;
} thread_rig;

static void *
thread_sender(void *arg)
{
    thread_rig *r = arg;
    if (tu_event_wait(&r->listening, TU_WAIT_MS)) {
        TU_CHECK(kill(getpid(), SIGUSR1) == 0);
    }
    return NULL;
}

typedef struct thread_task {
    int tr_pc;
    thread_rig *rig; // may be NULL
    tr_signal sig;
    uint64_t count;
} thread_task;

static tr_poll
thread_task_poll(void *arg, tr_cx *cx)
{
    thread_task *st = arg;
    TR_BEGIN(st);
    TU_CHECK(tr_signal_init(&st->sig, tr_cx_rt(cx), SIGUSR1, 0) == TR_OK);
    if (st->rig != NULL) {
        tu_event_set(&st->rig->listening);
    }
    TR_AWAIT(st, tr_signal_wait(&st->sig, cx, &st->count));
    TU_CHECK(st->count == 1);
    TR_END(st);
}

static void
thread_task_drop(void *arg)
{
    thread_task *st = arg;
    tr_signal_fini(&st->sig);
}

static const tr_task_spec thread_task_spec = {.name = "thread_task",
                                              .poll = thread_task_poll,
                                              .drop = thread_task_drop,
                                              .size = sizeof(thread_task)};

static void
test_signal_from_plain_thread(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    thread_rig rig;
    tu_event_init(&rig.listening);
    tu_thread_start(&rig.thr, thread_sender, &rig);
    tu_run_root(rt, &thread_task_spec, &(thread_task){.rig = &rig});
    tu_thread_join(rig.thr);
    tu_event_destroy(&rig.listening);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Two signals before the wait: the wait completes at once and counts them
// (raise delivers synchronously; a sanitizer may merge the two: 1 or 2).
// Then no signal: the next wait is pending; one more: exactly 1.

typedef struct before_task {
    int tr_pc;
    tr_signal *sig; // initialised outside the runtime
    uint64_t count;
    tr_poll first;
    tr_join sender;
    tr_outcome out;
} before_task;

static tr_poll
before_poll(void *arg, tr_cx *cx)
{
    before_task *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_signal_wait(st->sig, cx, &st->count));
    TU_CHECK(st->count >= 1 && st->count <= 2);
    st->count = 0;
    // Nothing new: pending (the registration it leaves is harmless).
    TU_CHECK(tr_signal_wait(st->sig, cx, &st->count) == TR_PENDING);
    TU_CHECK(tr_spawn(tr_cx_rt(cx), &kill_spec, NULL, &(kill_task){.signo = SIGUSR1},
                      &st->sender) == TR_OK);
    TR_AWAIT(st, tr_signal_wait(st->sig, cx, &st->count));
    TU_CHECK(st->count == 1);
    TR_AWAIT(st, tr_join_poll(&st->sender, cx, &st->out));
    TR_END(st);
}

static void
before_drop(void *arg)
{
    before_task *st = arg;
    tr_join_release(&st->sender);
}

static const tr_task_spec before_spec = {
    .name = "before", .poll = before_poll, .drop = before_drop, .size = sizeof(before_task)};

static void
test_signal_two_before_wait(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_signal sig;
    assert_int_equal(tr_signal_init(&sig, rt, SIGUSR1, 0), TR_OK);
    assert_int_equal(raise(SIGUSR1), 0);
    assert_int_equal(raise(SIGUSR1), 0);
    tu_run_root(rt, &before_spec, &(before_task){.sig = &sig});
    tr_signal_fini(&sig);
    tr_signal_fini(&sig); // idempotent
    assert_int_equal(tr__signal_listeners(SIGUSR1), 0);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Cancelling a waiting task: its drop stops listening and the default
// disposition comes back.

typedef struct cancel_root {
    int tr_pc;
    thread_rig *rig; // only its event: the listener says it listens
    tr_join j;
    tr_outcome out;
} cancel_root;

static tr_poll
cancel_root_poll(void *arg, tr_cx *cx)
{
    cancel_root *st = arg;
    TR_BEGIN(st);
    {
        // A listener that nobody signals.
        TU_CHECK(tr_spawn(tr_cx_rt(cx), &thread_task_spec, NULL, &(thread_task){.rig = st->rig},
                          &st->j) == TR_OK);
    }
    TR_AWAIT(st, tu_event_poll(&st->rig->listening, cx));
    TU_CHECK(tr__signal_listeners(SIGUSR1) == 1);
    TU_CHECK(!disposition_is(SIGUSR1, SIG_DFL));
    TR_YIELD(st, cx); // a negative check, not a wait: nothing may end it
    TU_CHECK(!tr_join_is_finished(&st->j));
    TU_CHECK(tr_task_abort(&st->j) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_ECANCELED);
    TU_CHECK(tr__signal_listeners(SIGUSR1) == 0);
    TU_CHECK(disposition_is(SIGUSR1, SIG_DFL));
    TR_END(st);
}

static void
cancel_root_drop(void *arg)
{
    cancel_root *st = arg;
    tr_join_release(&st->j);
}

static const tr_task_spec cancel_root_spec = {.name = "cancel_root",
                                              .poll = cancel_root_poll,
                                              .drop = cancel_root_drop,
                                              .size = sizeof(cancel_root)};

static void
test_signal_wait_cancelled(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    thread_rig rig;
    tu_event_init(&rig.listening);
    tu_run_root(rt, &cancel_root_spec, &(cancel_root){.rig = &rig});
    tu_rt_free_clean(rt);
    tu_event_destroy(&rig.listening);
}

// ---------------------------------------------------------------------------
// A handler the program had installed is still called (after ours), and
// is back in place once the last listener goes.

static atomic_int user_hits;

static void
user_handler(int signo)
{
    (void)signo;
    atomic_fetch_add(&user_hits, 1);
}

typedef struct once_task {
    int tr_pc;
    tr_signal *sig;
    uint64_t count;
    uint64_t want;
} once_task;

static tr_poll
once_poll(void *arg, tr_cx *cx)
{
    once_task *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_signal_wait(st->sig, cx, &st->count));
    TU_CHECK(st->count == st->want);
    TR_END(st);
}

static const tr_task_spec once_spec = {
    .name = "once", .poll = once_poll, .size = sizeof(once_task)};

static void
await_once(tr_rt *rt, tr_signal *sig, uint64_t want)
{
    tu_run_root(rt, &once_spec, &(once_task){.sig = sig, .want = want});
}

static void
test_signal_chains_and_restores(void **state)
{
    (void)state;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = user_handler;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR2, &sa, &old), 0);
    atomic_store(&user_hits, 0);

    tr_rt *rt = tu_rt_new();
    tr_signal sig;
    assert_int_equal(tr_signal_init(&sig, rt, SIGUSR2, 0), TR_OK);
    assert_false(disposition_is(SIGUSR2, user_handler));
    assert_int_equal(raise(SIGUSR2), 0);
    assert_int_equal(atomic_load(&user_hits), 1);
    await_once(rt, &sig, 1);
    tr_signal_fini(&sig);
    assert_true(disposition_is(SIGUSR2, user_handler));
    assert_int_equal(raise(SIGUSR2), 0);
    assert_int_equal(atomic_load(&user_hits), 2);
    tu_rt_free_clean(rt);
    sigaction(SIGUSR2, &old, NULL);
}

// ---------------------------------------------------------------------------
// Two runtimes (and two listeners in one of them) all see one signal.

static void
test_signal_two_runtimes(void **state)
{
    (void)state;
    tr_rt *a = tu_rt_new();
    tr_rt *b = tu_rt_new();
    tr_signal sa1, sa2, sb;
    assert_int_equal(tr_signal_init(&sa1, a, SIGUSR1, 0), TR_OK);
    assert_int_equal(tr_signal_init(&sa2, a, SIGUSR1, 0), TR_OK);
    assert_int_equal(tr_signal_init(&sb, b, SIGUSR1, 0), TR_OK);
    assert_int_equal(tr__signal_listeners(SIGUSR1), 3);
    assert_int_equal(raise(SIGUSR1), 0);
    await_once(a, &sa1, 1);
    await_once(b, &sb, 1);
    await_once(a, &sa2, 1);
    tr_signal_fini(&sa1);
    tr_signal_fini(&sa2);
    assert_false(disposition_is(SIGUSR1, SIG_DFL)); // b still listens
    tr_signal_fini(&sb);
    assert_true(disposition_is(SIGUSR1, SIG_DFL));
    tu_rt_free_clean(a);
    tu_rt_free_clean(b);
}

// A listener left behind when its runtime is freed does not keep the
// handler installed.
static void
test_signal_listener_outlived_by_runtime(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_signal sig;
    assert_int_equal(tr_signal_init(&sig, rt, SIGUSR1, 0), TR_OK);
    assert_int_equal(tr__signal_listeners(SIGUSR1), 1);
    tu_rt_free_clean(rt);
    assert_int_equal(tr__signal_listeners(SIGUSR1), 0);
    assert_true(disposition_is(SIGUSR1, SIG_DFL));
}

// ---------------------------------------------------------------------------
// Bad arguments.

static void
test_signal_invalid(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_signal sig;
    int bad[] = {0, -1, NSIG, NSIG + 5, SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(tr_signal_init(&sig, rt, bad[i], 0), TR_EINVAL);
        assert_memory_equal(&sig, &(tr_signal){0}, sizeof sig);
        tr_signal_fini(&sig); // inactive: a no-op
    }
    assert_int_equal(tr_signal_init(&sig, rt, SIGUSR1, 1u << 7), TR_EINVAL);
    assert_int_equal(tr_signal_init(&sig, NULL, SIGUSR1, 0), TR_EINVAL);
    assert_int_equal(tr_signal_init(NULL, rt, SIGUSR1, 0), TR_EINVAL);
    // signalfd mode needs the signal blocked.
    assert_int_equal(tr_signal_init(&sig, rt, SIGUSR2, TR_SIGNAL_SIGNALFD), TR_EINVAL);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// signalfd mode: SIGUSR2 blocked in every thread (the main thread blocks it
// before the runtime's workers and the watchdog start, and they inherit
// the mask); a process-directed kill is read from the signalfd.

typedef struct sfd_root {
    int tr_pc;
    tr_signal sig;
    uint64_t count;
    unsigned round;
    tr_join sender;
    tr_outcome out;
} sfd_root;

static tr_poll
sfd_root_poll(void *arg, tr_cx *cx)
{
    sfd_root *st = arg;
    TR_BEGIN(st);
    TU_CHECK(tr_signal_init(&st->sig, tr_cx_rt(cx), SIGUSR2, TR_SIGNAL_SIGNALFD) == TR_OK);
    {
        tr_signal other;
        TU_CHECK(tr_signal_init(&other, tr_cx_rt(cx), SIGUSR2, 0) == TR_EBUSY);
    }
    for (st->round = 0; st->round < 3; st->round++) {
        TU_CHECK(tr_spawn(tr_cx_rt(cx), &kill_spec, NULL, &(kill_task){.signo = SIGUSR2},
                          &st->sender) == TR_OK);
        TR_AWAIT(st, tr_signal_wait(&st->sig, cx, &st->count));
        TU_CHECK(st->count == 1);
        TR_AWAIT(st, tr_join_poll(&st->sender, cx, &st->out));
    }
    TR_END(st);
}

static void
sfd_root_drop(void *arg)
{
    sfd_root *st = arg;
    tr_signal_fini(&st->sig);
    tr_join_release(&st->sender);
}

static const tr_task_spec sfd_root_spec = {
    .name = "sfd_root", .poll = sfd_root_poll, .drop = sfd_root_drop, .size = sizeof(sfd_root)};

static void
test_signal_signalfd_mode(void **state)
{
    (void)state;
    sigset_t usr2, old;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    assert_int_equal(pthread_sigmask(SIG_BLOCK, &usr2, &old), 0);
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.workers = 2;
    tr_rt *rt = tu_rt_new_cfg(&cfg);
    tu_run_root(rt, &sfd_root_spec, NULL);
    assert_int_equal(tr__signal_listeners(SIGUSR2), 0);
    assert_true(disposition_is(SIGUSR2, SIG_DFL)); // no handler was installed
    // Two workers: a joined sender's slot may still be on its way back
    // (see tu_rt_quiesce) when block_on returns.
    tu_rt_quiesce(rt, TU_WAIT_MS);
    tu_rt_free_clean(rt);
    sigset_t pend;
    sigpending(&pend);
    assert_false(sigismember(&pend, SIGUSR2)); // every one was read
    assert_int_equal(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
}

// ---------------------------------------------------------------------------
// A storm, bounded: four waiters on two workers, a plain thread sends
// ROUNDS signals one at a time, each once every waiter has counted the one
// before (so that the kernel cannot merge two): each waiter counts exactly
// ROUNDS.
//
// The runtime's threads block SIGUSR1 (the main thread blocks it before the
// workers start, and they inherit the mask), so the handler always runs on
// the sending thread, outside the runtime. That is a case worth covering,
// and it keeps the test meaningful under ThreadSanitizer: TSan holds back an
// asynchronous signal that interrupts a thread outside its intercepted
// calls until that thread next enters one, and a worker parked on its futex
// (a raw system call) may not enter one for the rest of the test. The
// kernel gives a process-directed signal to the main thread first, which
// with two workers is often the one parked on its futex.

#define WAITERS 4
#define ROUNDS 50

typedef struct storm {
    sem_t ready; // a waiter is listening
    sem_t acks;  // a waiter counted a delivery (posted once per delivery)
    pthread_t thr;
    atomic_int sent;
} storm;

static void *
storm_sender(void *arg)
{
    storm *s = arg;
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL); // the only thread that takes it
    for (int i = 0; i < WAITERS; i++) {
        if (!tu_sem_wait_ms(&s->ready, TU_WAIT_MS)) {
            TU_CHECK(!"waiters never listened");
            return NULL;
        }
    }
    for (int r = 0; r < ROUNDS; r++) {
        TU_CHECK(kill(getpid(), SIGUSR1) == 0);
        atomic_fetch_add(&s->sent, 1);
        for (int i = 0; i < WAITERS; i++) {
            if (!tu_sem_wait_ms(&s->acks, TU_WAIT_MS)) {
                TU_CHECK(!"a waiter missed a signal");
                return NULL;
            }
        }
    }
    return NULL;
}

typedef struct storm_waiter {
    int tr_pc;
    storm *s;
    tr_signal sig;
    uint64_t count;
    uint64_t total;
} storm_waiter;

static tr_poll
storm_waiter_poll(void *arg, tr_cx *cx)
{
    storm_waiter *st = arg;
    TR_BEGIN(st);
    TU_CHECK(tr_signal_init(&st->sig, tr_cx_rt(cx), SIGUSR1, 0) == TR_OK);
    sem_post(&st->s->ready);
    while (st->total < ROUNDS) {
        TR_AWAIT(st, tr_signal_wait(&st->sig, cx, &st->count));
        TU_CHECK(st->count == 1);
        st->total += st->count;
        for (uint64_t i = 0; i < st->count; i++) {
            sem_post(&st->s->acks);
        }
    }
    TU_CHECK(st->total == ROUNDS);
    TR_END(st);
}

static void
storm_waiter_drop(void *arg)
{
    storm_waiter *st = arg;
    tr_signal_fini(&st->sig);
}

static const tr_task_spec storm_waiter_spec = {.name = "storm_waiter",
                                               .poll = storm_waiter_poll,
                                               .drop = storm_waiter_drop,
                                               .size = sizeof(storm_waiter)};

typedef struct storm_root {
    int tr_pc;
    storm *s;
    tr_join j[WAITERS];
    unsigned k;
    tr_outcome out;
} storm_root;

static tr_poll
storm_root_poll(void *arg, tr_cx *cx)
{
    storm_root *st = arg;
    TR_BEGIN(st);
    for (unsigned i = 0; i < WAITERS; i++) {
        TU_CHECK(tr_spawn(tr_cx_rt(cx), &storm_waiter_spec, NULL, &(storm_waiter){.s = st->s},
                          &st->j[i]) == TR_OK);
    }
    for (st->k = 0; st->k < WAITERS; st->k++) {
        TR_AWAIT(st, tr_join_poll(&st->j[st->k], cx, &st->out));
        TU_CHECK(st->out.err == TR_OK);
    }
    TR_END(st);
}

static void
storm_root_drop(void *arg)
{
    storm_root *st = arg;
    for (unsigned i = 0; i < WAITERS; i++) {
        tr_join_release(&st->j[i]);
    }
}

static const tr_task_spec storm_root_spec = {.name = "storm_root",
                                             .poll = storm_root_poll,
                                             .drop = storm_root_drop,
                                             .size = sizeof(storm_root)};

static void
test_signal_storm_two_workers(void **state)
{
    (void)state;
    storm s;
    sem_init(&s.ready, 0, 0);
    sem_init(&s.acks, 0, 0);
    atomic_init(&s.sent, 0);
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    assert_int_equal(pthread_sigmask(SIG_BLOCK, &usr1, &old), 0);
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.workers = 2;
    cfg.sched = TR_SCHED_WS;
    tr_rt *rt = tu_rt_new_cfg(&cfg);
    tu_thread_start(&s.thr, storm_sender, &s);
    tu_run_root(rt, &storm_root_spec, &(storm_root){.s = &s});
    tu_thread_join(s.thr);
    tu_checks_pass();
    assert_int_equal(atomic_load(&s.sent), ROUNDS);
    assert_int_equal(tr__signal_listeners(SIGUSR1), 0);
    tu_rt_quiesce(rt, TU_WAIT_MS); // two workers: as in the signalfd test
    tu_rt_free_clean(rt);
    sigset_t pend;
    sigpending(&pend);
    assert_false(sigismember(&pend, SIGUSR1));
    assert_int_equal(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
    sem_destroy(&s.ready);
    sem_destroy(&s.acks);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signal_delivered_to_waiting_task),
        cmocka_unit_test(test_signal_from_plain_thread),
        cmocka_unit_test(test_signal_two_before_wait),
        cmocka_unit_test(test_signal_wait_cancelled),
        cmocka_unit_test(test_signal_chains_and_restores),
        cmocka_unit_test(test_signal_two_runtimes),
        cmocka_unit_test(test_signal_listener_outlived_by_runtime),
        cmocka_unit_test(test_signal_invalid),
        cmocka_unit_test(test_signal_signalfd_mode),
        cmocka_unit_test(test_signal_storm_two_workers),
    };
    return tu_run(tests);
}
