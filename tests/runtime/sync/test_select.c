// Tests for troupe/select.h: select over awaitables and races of tasks.
//
// - the branch logic, with fake branches that count polls and cancels (no
//   runtime: tr_select only hands the context to the branches): the first
//   ready branch wins, every other branch is cancelled exactly once
//   (polled or not, disabled or not), turns rotate, abandon cancels once;
// - real awaitables on one worker: a semaphore acquire, a notify wait and a
//   channel receive; a loser that had already been granted a permit or a
//   notification passes it on;
// - a task cancelled in the middle of a select (its drop abandons it);
// - tr_race_join: the first task to finish wins, the others are cancelled
//   and released; abandon;
// - stress on several workers: consumers selecting between two semaphores
//   that producers on other workers release, and rounds of races. Counts
//   are conserved and nothing leaks.
#define TU_IGNORE_ENV 1
#include "../test_util.h"

#include <troupe/chan.h>
#include <troupe/select.h>
#include <troupe/sync.h>

// ---------------------------------------------------------------------------
// Fake branches.

typedef struct fake {
    bool ready;
    int polls;
    int cancels;
} fake;

static tr_poll
fake_poll(void *arg, tr_cx *cx)
{
    fake *f = arg;
    (void)cx;
    f->polls++;
    return f->ready ? TR_READY : TR_PENDING;
}

static void
fake_cancel(void *arg)
{
    fake *f = arg;
    f->cancels++;
}

#define NFAKE 4

static void
fakes_init(fake *f, tr_select_branch *br)
{
    memset(f, 0, sizeof(fake) * NFAKE);
    for (int i = 0; i < NFAKE; i++) {
        br[i] = (tr_select_branch){fake_poll, fake_cancel, &f[i]};
    }
}

static void
test_select_first_ready_wins_losers_cancelled_once(void **state)
{
    (void)state;
    fake f[NFAKE];
    tr_select_branch br[NFAKE];
    tr_select_op op;
    size_t winner = 99;

    // Ready on the first poll: branch 2 wins; branches 0 and 1 were polled,
    // 3 was not, and all three are cancelled once.
    fakes_init(f, br);
    memset(&op, 0, sizeof op);
    f[2].ready = true;
    assert_int_equal(tr_select(&op, NULL, br, NFAKE, &winner), TR_READY);
    assert_int_equal(winner, 2);
    int polls[NFAKE] = {1, 1, 1, 0};
    for (int i = 0; i < NFAKE; i++) {
        assert_int_equal(f[i].polls, polls[i]);
        assert_int_equal(f[i].cancels, i == 2 ? 0 : 1);
    }
    tr_select_abandon(&op, br, NFAKE); // finished: a no-op
    assert_int_equal(f[0].cancels, 1);

    // Pending for a while (nothing cancelled meanwhile), then branch 3.
    fakes_init(f, br);
    memset(&op, 0, sizeof op);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(tr_select(&op, NULL, br, NFAKE, &winner), TR_PENDING);
    }
    for (int i = 0; i < NFAKE; i++) {
        assert_int_equal(f[i].polls, 3);
        assert_int_equal(f[i].cancels, 0);
    }
    f[3].ready = true;
    assert_int_equal(tr_select(&op, NULL, br, NFAKE, &winner), TR_READY);
    assert_int_equal(winner, 3);
    for (int i = 0; i < NFAKE; i++) {
        assert_int_equal(f[i].cancels, i == 3 ? 0 : 1);
    }

    // A disabled branch is never polled, but still cancelled; a NULL cancel
    // is skipped.
    fakes_init(f, br);
    memset(&op, 0, sizeof op);
    br[0].poll = NULL;
    br[3].cancel = NULL;
    f[1].ready = true;
    assert_int_equal(tr_select(&op, NULL, br, NFAKE, &winner), TR_READY);
    assert_int_equal(winner, 1);
    assert_int_equal(f[0].polls, 0);
    assert_int_equal(f[0].cancels, 1);
    assert_int_equal(f[2].cancels, 1);
    assert_int_equal(f[3].cancels, 0);

    // Every branch disabled, or none at all: ready at once, no winner.
    fakes_init(f, br);
    memset(&op, 0, sizeof op);
    for (int i = 0; i < NFAKE; i++) {
        br[i].poll = NULL;
    }
    assert_int_equal(tr_select(&op, NULL, br, NFAKE, &winner), TR_READY);
    assert_int_equal(winner, TR_SELECT_NONE);
    for (int i = 0; i < NFAKE; i++) {
        assert_int_equal(f[i].cancels, 1);
    }
    winner = 0;
    assert_int_equal(tr_select(&op, NULL, NULL, 0, &winner), TR_READY);
    assert_int_equal(winner, TR_SELECT_NONE);
}

static void
test_select_turns_rotate(void **state)
{
    (void)state;
    fake f[NFAKE];
    tr_select_branch br[NFAKE];
    tr_select_op op;
    size_t winner;
    fakes_init(f, br);
    memset(&op, 0, sizeof op);
    for (int i = 0; i < NFAKE; i++) {
        f[i].ready = true;
    }
    int wins[NFAKE] = {0};
    for (int k = 0; k < 8 * NFAKE; k++) {
        assert_int_equal(tr_select(&op, NULL, br, NFAKE, &winner), TR_READY);
        assert_int_equal(winner, (size_t)(k % NFAKE));
        wins[winner]++;
    }
    for (int i = 0; i < NFAKE; i++) {
        assert_int_equal(wins[i], 8);
        assert_int_equal(f[i].cancels, 8 * (NFAKE - 1));
    }
}

static void
test_select_abandon_cancels_once(void **state)
{
    (void)state;
    fake f[NFAKE];
    tr_select_branch br[NFAKE];
    tr_select_op op;
    size_t winner;
    fakes_init(f, br);
    memset(&op, 0, sizeof op);
    tr_select_abandon(&op, br, NFAKE); // never polled: nothing to withdraw
    assert_int_equal(f[0].cancels, 0);
    assert_int_equal(tr_select(&op, NULL, br, NFAKE, &winner), TR_PENDING);
    tr_select_abandon(&op, br, NFAKE);
    tr_select_abandon(&op, br, NFAKE);
    tr_select_abandon(NULL, br, NFAKE);
    for (int i = 0; i < NFAKE; i++) {
        assert_int_equal(f[i].cancels, 1);
    }
    // The op can be used again.
    f[1].ready = true;
    assert_int_equal(tr_select(&op, NULL, br, NFAKE, &winner), TR_READY);
    assert_int_equal(winner, 1);
}

// ---------------------------------------------------------------------------
// Real awaitables. The selecting task's state holds one op per branch.

typedef struct sel3 {
    tr_sem *sem;
    tr_sem_acquire_op sop;
    tr_err serr;
    tr_notify *n;
    tr_notify_wait_op nop;
    tr_chan *ch;
    uint32_t item;
    tr_err cerr;
    int sem_cancels;
    int notify_cancels;
} sel3;

static tr_poll
br_sem(void *arg, tr_cx *cx)
{
    sel3 *s = arg;
    return tr_sem_acquire(s->sem, cx, &s->sop, 1, &s->serr);
}

static void
br_sem_cancel(void *arg)
{
    sel3 *s = arg;
    s->sem_cancels++;
    tr_sem_acquire_abandon(s->sem, &s->sop);
}

static tr_poll
br_notify(void *arg, tr_cx *cx)
{
    sel3 *s = arg;
    return tr_notify_wait(s->n, cx, &s->nop);
}

static void
br_notify_cancel(void *arg)
{
    sel3 *s = arg;
    s->notify_cancels++;
    tr_notify_wait_abandon(s->n, &s->nop);
}

static tr_poll
br_chan(void *arg, tr_cx *cx)
{
    sel3 *s = arg;
    return tr_chan_recv(s->ch, cx, &s->item, &s->cerr);
}

// A helper task: after `delay` yields, releases sem permits and/or
// notifies once.
typedef struct kicker {
    int tr_pc;
    uint32_t delay;
    tr_sem *sem;
    size_t permits;
    tr_notify *n;
} kicker;

static tr_poll
kicker_poll(void *arg, tr_cx *cx)
{
    kicker *st = arg;
    TR_BEGIN(st);
    while (st->delay > 0) {
        st->delay--;
        TR_YIELD(st, cx);
    }
    if (st->permits > 0) {
        tr_sem_release(st->sem, st->permits);
    }
    if (st->n != NULL) {
        tr_notify_one(st->n);
    }
    TR_END(st);
}

static const tr_task_spec kicker_spec = {
    .name = "kicker", .poll = kicker_poll, .size = sizeof(kicker)};

static void
spawn_kicker(tr_cx *cx, uint32_t delay, tr_sem *sem, size_t permits, tr_notify *n)
{
    kicker init = {.delay = delay, .sem = sem, .permits = permits, .n = n};
    if (tr_spawn(tr_cx_rt(cx), &kicker_spec, NULL, &init, NULL) != TR_OK) {
        tu_fail_record(__FILE__, __LINE__, "tr_spawn");
    }
}

// A task that waits for one permit (the one a losing branch passes on).
typedef struct sem_taker {
    int tr_pc;
    tr_sem *sem;
    tr_sem_acquire_op op;
    tr_err err;
    unsigned polls;
} sem_taker;

static tr_poll
sem_taker_poll(void *arg, tr_cx *cx)
{
    sem_taker *st = arg;
    st->polls++;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_sem_acquire(st->sem, cx, &st->op, 1, &st->err));
    TR_END(st);
}

static void
sem_taker_drop(void *arg)
{
    sem_taker *st = arg;
    tr_sem_acquire_abandon(st->sem, &st->op);
}

static const tr_task_spec sem_taker_spec = {
    .name = "sem-taker", .poll = sem_taker_poll, .drop = sem_taker_drop, .size = sizeof(sem_taker)};

typedef struct real_root {
    int tr_pc;
    sel3 s;
    tr_select_op sel;
    tr_select_branch br[3];
    size_t winner;
    tr_join taker;
    sem_taker *tk;
    tr_outcome out;
    uint64_t tu_deadline;
} real_root;

static void
real_branches(real_root *st, bool sem_first)
{
    tr_select_branch bs = {br_sem, br_sem_cancel, &st->s};
    tr_select_branch bn = {br_notify, br_notify_cancel, &st->s};
    st->br[0] = sem_first ? bs : bn;
    st->br[1] = sem_first ? bn : bs;
    st->br[2] = (tr_select_branch){br_chan, NULL, &st->s};
}

static tr_poll
real_root_poll(void *arg, tr_cx *cx)
{
    real_root *st = arg;
    TR_BEGIN(st);
    // 1. Nothing ready; another task releases a permit: the semaphore wins
    //    and the notify wait is withdrawn (a later notify_one is stored).
    real_branches(st, true);
    spawn_kicker(cx, 3, st->s.sem, 1, NULL);
    TR_AWAIT(st, tr_select(&st->sel, cx, st->br, 3, &st->winner));
    CHECK(st, st->winner == 0 && st->s.serr == TR_OK);
    CHECK(st, st->s.sem_cancels == 0 && st->s.notify_cancels == 1);
    tr_notify_one(st->s.n);
    CHECK(st, tr_notify_wait(st->s.n, cx, &st->s.nop) == TR_READY); // the stored permit

    // 2. An item already waits in the channel: it wins at once.
    st->s.item = 5;
    CHECK(st, tr_chan_try_send(st->s.ch, &st->s.item) == TR_OK);
    st->s.item = 0;
    TR_AWAIT(st, tr_select(&st->sel, cx, st->br, 3, &st->winner));
    CHECK(st, st->winner == 2 && st->s.cerr == TR_OK && st->s.item == 5);
    CHECK(st, st->s.sem_cancels == 1 && st->s.notify_cancels == 2);

    // 3. Both the semaphore and the notify deliver between two polls; the
    //    turn decides the winner, and the loser passes its grant on. Round
    //    A: the sem branch loses, its permit goes to the taker task waiting
    //    behind it. Round B: the notify branch loses, the notification is
    //    stored as the permit.
    memset(&st->sel, 0, sizeof st->sel);
    real_branches(st, true); // sem at 0, notify at 1: the second poll starts at 1
    st->s.sem_cancels = st->s.notify_cancels = 0;
    CHECK(st, tr_select(&st->sel, cx, st->br, 3, &st->winner) == TR_PENDING);
    st->taker = tu_spawn_at(cx, &sem_taker_spec, &(sem_taker){.sem = st->s.sem}, &st->tk);
    CHECK(st, st->tk != NULL);
    YIELD_UNTIL(st, cx, st->tk->polls >= 1); // in line behind our sem op
    tr_sem_release(st->s.sem, 1);            // granted to our op
    tr_notify_one(st->s.n);                  // delivered to our op
    TR_AWAIT(st, tr_select(&st->sel, cx, st->br, 3, &st->winner));
    CHECK(st, st->winner == 1); // the notify
    CHECK(st, st->s.sem_cancels == 1 && st->s.notify_cancels == 0);
    TR_AWAIT(st, tr_join_poll(&st->taker, cx, &st->out));
    CHECK(st, st->out.err == TR_OK);
    CHECK(st, tr_sem_available(st->s.sem) == 0);

    memset(&st->sel, 0, sizeof st->sel);
    real_branches(st, false); // notify at 0, sem at 1
    st->s.sem_cancels = st->s.notify_cancels = 0;
    CHECK(st, tr_select(&st->sel, cx, st->br, 3, &st->winner) == TR_PENDING);
    tr_sem_release(st->s.sem, 1);
    tr_notify_one(st->s.n);
    TR_AWAIT(st, tr_select(&st->sel, cx, st->br, 3, &st->winner));
    CHECK(st, st->winner == 1 && st->s.serr == TR_OK); // the semaphore
    CHECK(st, st->s.sem_cancels == 0 && st->s.notify_cancels == 1);
    CHECK(st, tr_notify_wait(st->s.n, cx, &st->s.nop) == TR_READY);
    CHECK(st, tr_sem_available(st->s.sem) == 0);
    TR_END(st);
}

static void
real_root_drop(void *arg)
{
    real_root *st = arg;
    tr_select_abandon(&st->sel, st->br, 3);
    tr_join_release(&st->taker);
}

static const tr_task_spec real_root_spec = {.name = "select-real",
                                            .poll = real_root_poll,
                                            .drop = real_root_drop,
                                            .size = sizeof(real_root)};

static void
test_select_real_awaitables_pass_grants_on(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new_fifo();
    real_root init = {0};
    assert_int_equal(tr_sem_new(0, &init.s.sem), TR_OK);
    assert_int_equal(tr_notify_new(&init.s.n), TR_OK);
    assert_int_equal(tr_chan_new(sizeof(uint32_t), 4, &init.s.ch), TR_OK);
    tr_sem *sem = init.s.sem;
    tr_notify *n = init.s.n;
    tr_chan *ch = init.s.ch;
    tu_run_root(rt, &real_root_spec, &init);
    tu_rt_free_clean(rt);
    // Freeing panics if an op were still in line.
    tr_sem_free(sem);
    tr_notify_free(n);
    tr_chan_sender_release(ch);
    tr_chan_receiver_release(ch);
}

// ---------------------------------------------------------------------------
// A task cancelled in the middle of a select: its drop abandons the select,
// which cancels each branch exactly once and takes its ops out of line.

typedef struct sel_task {
    int tr_pc;
    sel3 s;
    tr_select_op sel;
    size_t winner;
    unsigned *polls;
} sel_task;

static void
sel_task_branches(sel_task *st, tr_select_branch *br)
{
    br[0] = (tr_select_branch){br_sem, br_sem_cancel, &st->s};
    br[1] = (tr_select_branch){br_notify, br_notify_cancel, &st->s};
}

static tr_poll
sel_task_poll(void *arg, tr_cx *cx)
{
    sel_task *st = arg;
    tr_select_branch br[2]; // rebuilt on every poll: fine
    sel_task_branches(st, br);
    (*st->polls)++;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_select(&st->sel, cx, br, 2, &st->winner));
    TR_END(st);
}

static atomic_int sel_task_cancels;

static void
sel_task_drop(void *arg)
{
    sel_task *st = arg;
    tr_select_branch br[2];
    sel_task_branches(st, br);
    tr_select_abandon(&st->sel, br, 2);
    atomic_fetch_add(&sel_task_cancels, st->s.sem_cancels + st->s.notify_cancels);
}

static const tr_task_spec sel_task_spec = {
    .name = "sel-task", .poll = sel_task_poll, .drop = sel_task_drop, .size = sizeof(sel_task)};

typedef struct abort_root {
    int tr_pc;
    tr_sem *sem;
    tr_notify *n;
    tr_join j;
    unsigned polls;
    tr_outcome out;
    uint64_t tu_deadline;
} abort_root;

static tr_poll
abort_root_poll(void *arg, tr_cx *cx)
{
    abort_root *st = arg;
    TR_BEGIN(st);
    {
        CHECK(st, tr_spawn(tr_cx_rt(cx), &sel_task_spec, NULL,
                           &(sel_task){.s.sem = st->sem, .s.n = st->n, .polls = &st->polls},
                           &st->j) == TR_OK);
    }
    YIELD_UNTIL(st, cx, st->polls >= 1);
    CHECK(st, tr_task_abort(&st->j) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    CHECK(st, st->out.err == TR_ECANCELED);
    CHECK(st, atomic_load(&sel_task_cancels) == 2);
    // Nobody is in line any more: a notify is stored, a release is kept.
    tr_notify_one(st->n);
    tr_sem_release(st->sem, 1);
    CHECK(st, tr_sem_available(st->sem) == 1);
    TR_END(st);
}

static const tr_task_spec abort_root_spec = {
    .name = "select-abort", .poll = abort_root_poll, .size = sizeof(abort_root)};

static void
test_select_cancelled_task_abandons(void **state)
{
    (void)state;
    atomic_store(&sel_task_cancels, 0);
    tr_rt *rt = tu_rt_new_fifo();
    tr_sem *sem = NULL;
    tr_notify *n = NULL;
    assert_int_equal(tr_sem_new(0, &sem), TR_OK);
    assert_int_equal(tr_notify_new(&n), TR_OK);
    tu_run_root(rt, &abort_root_spec, &(abort_root){.sem = sem, .n = n});
    tu_rt_free_clean(rt);
    tr_sem_free(sem);
    tr_notify_free(n);
}

// ---------------------------------------------------------------------------
// tr_race_join. Contestants yield a number of times then return a value, or
// stay stuck until cancelled; each drop releases one permit of a counting
// semaphore that the root awaits, so it knows when every loser is gone
// without polling for it.

typedef struct contestant {
    int tr_pc;
    uint32_t yields;
    uint64_t value;
    bool stuck;
    tr_sem *dropped;
} contestant;

static tr_poll
contestant_poll(void *arg, tr_cx *cx)
{
    contestant *st = arg;
    if (st->stuck) {
        return TR_PENDING;
    }
    if (st->yields > 0) {
        st->yields--;
        tr_cx_yield(cx);
        return TR_PENDING;
    }
    tr_cx_set_result_u64(cx, st->value);
    return TR_READY;
}

static void
contestant_drop(void *arg)
{
    contestant *st = arg;
    tr_sem_release(st->dropped, 1);
}

static const tr_task_spec contestant_spec = {.name = "contestant",
                                             .poll = contestant_poll,
                                             .drop = contestant_drop,
                                             .size = sizeof(contestant)};

static tr_join
spawn_contestant(tr_cx *cx, uint32_t yields, uint64_t value, bool stuck, tr_sem *dropped)
{
    contestant init = {.yields = yields, .value = value, .stuck = stuck, .dropped = dropped};
    return tu_spawn(cx, &contestant_spec, &init);
}

#define RACE_N 4

typedef struct race_root {
    int tr_pc;
    tr_sem *dropped;
    uint32_t rounds;
    uint32_t round;
    tr_join j[RACE_N];
    tr_select_op sel;
    tr_sem_acquire_op sop;
    size_t winner;
    tr_outcome out;
    tr_err err;
    unsigned i;
} race_root;

static tr_poll
race_root_poll(void *arg, tr_cx *cx)
{
    static const uint32_t yields[RACE_N] = {9, 2, 5, 0};
    race_root *st = arg;
    TR_BEGIN(st);
    for (st->round = 0; st->round < st->rounds; st->round++) {
        // Contestant 3 is stuck; the others finish after their yields (in
        // later rounds, shuffled by the round number).
        for (st->i = 0; st->i < RACE_N; st->i++) {
            st->j[st->i] = spawn_contestant(cx, yields[(st->i + st->round) % RACE_N], 100 + st->i,
                                            st->i == RACE_N - 1, st->dropped);
        }
        TR_AWAIT(st, tr_race_join(&st->sel, cx, st->j, RACE_N, &st->winner, &st->out));
        CHECK(st, st->winner < RACE_N - 1);
        CHECK(st, st->out.err == TR_OK && st->out.value.u64 == 100 + st->winner);
        for (st->i = 0; st->i < RACE_N; st->i++) {
            CHECK(st, tr_join_id(&st->j[st->i]).id == 0);
        }
        // Every contestant's drop runs: the winner's, and the losers' as
        // they are cancelled.
        TR_AWAIT(st, tr_sem_acquire(st->dropped, cx, &st->sop, RACE_N, &st->err));
        CHECK(st, st->err == TR_OK);
    }
    // Every handle empty: ready at once, no winner.
    TR_AWAIT(st, tr_race_join(&st->sel, cx, st->j, RACE_N, &st->winner, &st->out));
    CHECK(st, st->winner == TR_SELECT_NONE);
    TR_END(st);
}

static void
race_root_drop(void *arg)
{
    race_root *st = arg;
    tr_race_join_abandon(st->j, RACE_N);
    tr_sem_acquire_abandon(st->dropped, &st->sop);
}

static const tr_task_spec race_root_spec = {
    .name = "race-root", .poll = race_root_poll, .drop = race_root_drop, .size = sizeof(race_root)};

static void
test_race_join_first_wins_losers_cancelled(void **state)
{
    (void)state;
    static const struct {
        tr_sched_kind sched;
        unsigned workers;
        uint32_t rounds;
    } cfgs[] = {{TR_SCHED_RR, 1, 8},
                {TR_SCHED_WS, 2, 200},
                {TR_SCHED_WS, 4, 200},
                {TR_SCHED_RR, 3, 200},
                {TR_SCHED_HYBRID, 2, 200}};
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        tr_rt *rt = tu_rt_make(cfgs[c].sched, cfgs[c].workers);
        tr_sem *dropped = NULL;
        assert_int_equal(tr_sem_new(0, &dropped), TR_OK);
        tu_run_root(rt, &race_root_spec,
                    &(race_root){.dropped = dropped, .rounds = cfgs[c].rounds});
        // A loser's drop runs just before its slot is freed, on its
        // worker, which may be descheduled in between: stop the runtime
        // (every task finished, every worker stopped) before checking for
        // leftovers.
        tu_rt_free_clean(rt);
        assert_int_equal(tr_sem_available(dropped), 0);
        tr_sem_free(dropped);
    }
}

// One worker, exact: the contestant with the fewest yields wins.
typedef struct race1_root {
    int tr_pc;
    tr_sem *dropped;
    tr_join j[3];
    tr_select_op sel;
    tr_sem_acquire_op sop;
    size_t winner;
    tr_outcome out;
    tr_err err;
} race1_root;

static tr_poll
race1_root_poll(void *arg, tr_cx *cx)
{
    race1_root *st = arg;
    TR_BEGIN(st);
    st->j[0] = spawn_contestant(cx, 6, 10, false, st->dropped);
    st->j[1] = spawn_contestant(cx, 0, 0, true, st->dropped);
    st->j[2] = spawn_contestant(cx, 2, 12, false, st->dropped);
    TR_AWAIT(st, tr_race_join(&st->sel, cx, st->j, 3, &st->winner, &st->out));
    CHECK(st, st->winner == 2 && st->out.err == TR_OK && st->out.value.u64 == 12);
    TR_AWAIT(st, tr_sem_acquire(st->dropped, cx, &st->sop, 3, &st->err));
    CHECK(st, st->err == TR_OK);
    TR_END(st);
}

static const tr_task_spec race1_root_spec = {
    .name = "race1-root", .poll = race1_root_poll, .size = sizeof(race1_root)};

static void
test_race_join_fewest_yields_wins(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new_fifo();
    tr_sem *dropped = NULL;
    assert_int_equal(tr_sem_new(0, &dropped), TR_OK);
    tu_run_root(rt, &race1_root_spec, &(race1_root){.dropped = dropped});
    tu_rt_free_clean(rt);
    tr_sem_free(dropped);
}

// A racing task is cancelled: its drop abandons the race, which cancels
// and releases every contestant.

typedef struct racer {
    int tr_pc;
    tr_join j[RACE_N];
    tr_select_op sel;
    size_t winner;
    tr_outcome out;
    unsigned *polls;
} racer;

static tr_poll
racer_poll(void *arg, tr_cx *cx)
{
    racer *st = arg;
    (*st->polls)++;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_race_join(&st->sel, cx, st->j, RACE_N, &st->winner, &st->out));
    TR_END(st);
}

static void
racer_drop(void *arg)
{
    racer *st = arg;
    tr_race_join_abandon(st->j, RACE_N);
}

static const tr_task_spec racer_spec = {
    .name = "racer", .poll = racer_poll, .drop = racer_drop, .size = sizeof(racer)};

typedef struct rabort_root {
    int tr_pc;
    tr_sem *dropped;
    tr_join j;
    unsigned polls;
    tr_sem_acquire_op sop;
    tr_outcome out;
    tr_err err;
    uint64_t tu_deadline;
} rabort_root;

static tr_poll
rabort_root_poll(void *arg, tr_cx *cx)
{
    rabort_root *st = arg;
    TR_BEGIN(st);
    {
        racer r = {.polls = &st->polls};
        for (unsigned i = 0; i < RACE_N; i++) {
            r.j[i] = spawn_contestant(cx, 0, 0, true, st->dropped);
        }
        CHECK(st, tr_spawn(tr_cx_rt(cx), &racer_spec, NULL, &r, &st->j) == TR_OK);
    }
    YIELD_UNTIL(st, cx, st->polls >= 1);
    CHECK(st, tr_task_abort(&st->j) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    CHECK(st, st->out.err == TR_ECANCELED);
    TR_AWAIT(st, tr_sem_acquire(st->dropped, cx, &st->sop, RACE_N, &st->err));
    CHECK(st, st->err == TR_OK);
    TR_END(st);
}

static const tr_task_spec rabort_root_spec = {
    .name = "race-abort", .poll = rabort_root_poll, .size = sizeof(rabort_root)};

static void
test_race_join_abandon_cancels_all(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new_fifo();
    tr_sem *dropped = NULL;
    assert_int_equal(tr_sem_new(0, &dropped), TR_OK);
    tu_run_root(rt, &rabort_root_spec, &(rabort_root){.dropped = dropped});
    tu_rt_free_clean(rt);
    tr_sem_free(dropped);
    // Empty handles: a no-op.
    tr_join none[2] = {TR_JOIN_NONE, TR_JOIN_NONE};
    tr_race_join_abandon(none, 2);
}

// ---------------------------------------------------------------------------
// Stress: consumers on several workers select between two semaphores that
// producers release one permit at a time. Every permit is consumed exactly
// once (a losing branch that was granted one passes it on), and every
// consumer gets its quota.

#define SS_PRODUCERS 3
#define SS_CONSUMERS 3
#define SS_PER_PRODUCER 600
#define SS_TOTAL (SS_PRODUCERS * SS_PER_PRODUCER)

typedef struct ss_shared {
    tr_sem *sem[2];
    atomic_int taken[2];
} ss_shared;

typedef struct ss_producer {
    int tr_pc;
    ss_shared *sh;
    uint32_t i;
    uint32_t seed;
} ss_producer;

static tr_poll
ss_producer_poll(void *arg, tr_cx *cx)
{
    ss_producer *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < SS_PER_PRODUCER; st->i++) {
        st->seed = st->seed * 1103515245u + 12345u;
        tr_sem_release(st->sh->sem[(st->seed >> 16) & 1], 1);
        if (st->i % 8 == 0) {
            TR_YIELD(st, cx);
        }
    }
    TR_END(st);
}

static const tr_task_spec ss_producer_spec = {
    .name = "ss-producer", .poll = ss_producer_poll, .size = sizeof(ss_producer)};

typedef struct ss_consumer {
    int tr_pc;
    ss_shared *sh;
    uint32_t quota;
    tr_sem_acquire_op op[2];
    tr_err err[2];
    tr_select_op sel;
    size_t winner;
} ss_consumer;

typedef struct ss_arg {
    ss_consumer *c;
    int k;
} ss_arg;

static tr_poll
ss_branch(void *arg, tr_cx *cx)
{
    ss_consumer *c = ((ss_arg *)arg)->c;
    int k = ((ss_arg *)arg)->k;
    return tr_sem_acquire(c->sh->sem[k], cx, &c->op[k], 1, &c->err[k]);
}

static void
ss_cancel(void *arg)
{
    ss_consumer *c = ((ss_arg *)arg)->c;
    int k = ((ss_arg *)arg)->k;
    tr_sem_acquire_abandon(c->sh->sem[k], &c->op[k]);
}

static tr_poll
ss_consumer_poll(void *arg, tr_cx *cx)
{
    ss_consumer *st = arg;
    ss_arg a[2] = {{st, 0}, {st, 1}};
    tr_select_branch br[2] = {{ss_branch, ss_cancel, &a[0]}, {ss_branch, ss_cancel, &a[1]}};
    TR_BEGIN(st);
    while (st->quota > 0) {
        TR_AWAIT(st, tr_select(&st->sel, cx, br, 2, &st->winner));
        if (st->winner > 1 || st->err[st->winner] != TR_OK) {
            tu_fail_record(__FILE__, __LINE__, "select winner");
            break;
        }
        atomic_fetch_add(&st->sh->taken[st->winner], 1);
        st->quota--;
    }
    TR_END(st);
}

static void
ss_consumer_drop(void *arg)
{
    ss_consumer *st = arg;
    ss_arg a[2] = {{st, 0}, {st, 1}};
    tr_select_branch br[2] = {{ss_branch, ss_cancel, &a[0]}, {ss_branch, ss_cancel, &a[1]}};
    tr_select_abandon(&st->sel, br, 2);
}

static const tr_task_spec ss_consumer_spec = {.name = "ss-consumer",
                                              .poll = ss_consumer_poll,
                                              .drop = ss_consumer_drop,
                                              .size = sizeof(ss_consumer)};

typedef struct ss_root {
    int tr_pc;
    ss_shared *sh;
    tr_join j[SS_PRODUCERS + SS_CONSUMERS];
    tr_outcome out;
    unsigned i;
} ss_root;

static tr_poll
ss_root_poll(void *arg, tr_cx *cx)
{
    ss_root *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < SS_CONSUMERS; st->i++) {
        CHECK(st, tr_spawn(tr_cx_rt(cx), &ss_consumer_spec, NULL,
                           &(ss_consumer){.sh = st->sh, .quota = SS_TOTAL / SS_CONSUMERS},
                           &st->j[st->i]) == TR_OK);
    }
    for (st->i = 0; st->i < SS_PRODUCERS; st->i++) {
        CHECK(st, tr_spawn(tr_cx_rt(cx), &ss_producer_spec, NULL,
                           &(ss_producer){.sh = st->sh, .seed = st->i + 1},
                           &st->j[SS_CONSUMERS + st->i]) == TR_OK);
    }
    for (st->i = 0; st->i < SS_PRODUCERS + SS_CONSUMERS; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->j[st->i], cx, &st->out));
        CHECK(st, st->out.err == TR_OK);
    }
    TR_END(st);
}

static const tr_task_spec ss_root_spec = {
    .name = "ss-root", .poll = ss_root_poll, .size = sizeof(ss_root)};

static void
test_select_stress_two_semaphores(void **state)
{
    (void)state;
    static const struct {
        tr_sched_kind sched;
        unsigned workers;
    } cfgs[] = {{TR_SCHED_WS, 1},
                {TR_SCHED_WS, 2},
                {TR_SCHED_WS, 4},
                {TR_SCHED_RR, 3},
                {TR_SCHED_HYBRID, 2}};
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        ss_shared sh;
        memset(&sh, 0, sizeof sh);
        assert_int_equal(tr_sem_new(0, &sh.sem[0]), TR_OK);
        assert_int_equal(tr_sem_new(0, &sh.sem[1]), TR_OK);
        tr_rt *rt = tu_rt_make(cfgs[c].sched, cfgs[c].workers);
        tu_run_root(rt, &ss_root_spec, &(ss_root){.sh = &sh});
        tu_rt_free_clean(rt); // quiesces first
        assert_int_equal(atomic_load(&sh.taken[0]) + atomic_load(&sh.taken[1]), SS_TOTAL);
        assert_int_equal(tr_sem_available(sh.sem[0]), 0);
        assert_int_equal(tr_sem_available(sh.sem[1]), 0);
        tr_sem_free(sh.sem[0]);
        tr_sem_free(sh.sem[1]);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select_first_ready_wins_losers_cancelled_once),
        cmocka_unit_test(test_select_turns_rotate),
        cmocka_unit_test(test_select_abandon_cancels_once),
        cmocka_unit_test(test_select_real_awaitables_pass_grants_on),
        cmocka_unit_test(test_select_cancelled_task_abandons),
        cmocka_unit_test(test_race_join_fewest_yields_wins),
        cmocka_unit_test(test_race_join_first_wins_losers_cancelled),
        cmocka_unit_test(test_race_join_abandon_cancels_all),
        cmocka_unit_test(test_select_stress_two_semaphores),
    };
    return tu_run(tests);
}
