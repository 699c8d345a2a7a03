// Tests for troupe/group.h: task groups.
//
// - join_all waits for every member and reports the first failure (by the
//   group.h convention: cancelled, or a nonzero u64 result), and the group
//   is reusable after it;
// - join_next hands out outcomes in completion order, then TR_EEMPTY;
// - TR_GROUP_CANCEL_ON_ERROR: the first failure cancels the rest, and
//   members started afterwards are cancelled as they start;
// - tr_group_cancel, from a task and from a plain thread; tr_group_wait
//   from a plain thread (and TR_EDEADLOCK from a worker);
// - freeing a group with running members, or after tr_rt_free: nothing
//   leaks (ASan), uncollected boxed results are destroyed;
// - stress on 1 to 4 workers under every scheduler, bounded by rounds:
//   members that start more members while others complete and fail.
// One-worker tests rely on FIFO order (a task runs only when the root
// yields or waits); every wait is on a join or bounded by time
// (YIELD_UNTIL), never by a count of yields, and runtimes of several
// workers are quiesced before their live count is checked.
#define TU_IGNORE_ENV 1
#include "../test_util.h"

#include <troupe/group.h>

// ---------------------------------------------------------------------------
// Members.

static atomic_int boxes_freed;

static void
box_free(void *p)
{
    free(p);
    atomic_fetch_add(&boxes_freed, 1);
}

typedef struct member_task {
    int tr_pc;
    uint32_t yields; // yields before finishing
    uint64_t result; // the u64 result
    bool stuck;      // never finishes unless cancelled
    bool boxed;      // a boxed result (malloc'd, freed by box_free)
    atomic_int *drops;
    // Stress: children to start into the same group before finishing.
    tr_group *g;
    uint32_t children;
    atomic_int *started;
    uint32_t seed;
} member_task;

static void start_member(tr_rt *rt, tr_group *g, const member_task *tmpl, tr_task_id *id);

static tr_poll
member_poll(void *arg, tr_cx *cx)
{
    member_task *st = arg;
    if (st->stuck) {
        return TR_PENDING; // nothing will wake it: only a cancel ends it
    }
    if (st->yields > 0) {
        st->yields--;
        tr_cx_yield(cx);
        return TR_PENDING;
    }
    for (uint32_t i = 0; i < st->children; i++) {
        member_task child;
        memset(&child, 0, sizeof child);
        child.drops = st->drops;
        child.started = st->started;
        child.yields = (st->seed + i) % 4;
        start_member(tr_cx_rt(cx), st->g, &child, NULL);
    }
    if (st->boxed) {
        int *p = malloc(sizeof *p);
        *p = 42;
        tr_cx_set_result_ptr(cx, p, box_free);
    } else {
        tr_cx_set_result_u64(cx, st->result);
    }
    return TR_READY;
}

static void
member_drop(void *arg)
{
    member_task *st = arg;
    if (st->drops != NULL) {
        atomic_fetch_add(st->drops, 1);
    }
}

static const tr_task_spec member_spec = {
    .name = "group-member", .poll = member_poll, .drop = member_drop, .size = sizeof(member_task)};

// member_init copies the template and counts the start.
static void
member_init(void *state, void *arg)
{
    member_task *st = state;
    memcpy(st, arg, sizeof *st);
    st->tr_pc = 0;
    if (st->started != NULL) {
        atomic_fetch_add(st->started, 1);
    }
}

// start_member starts a member made from tmpl (tr_group_spawn).
static void
start_member(tr_rt *rt, tr_group *g, const member_task *tmpl, tr_task_id *id)
{
    (void)rt;
    if (tr_group_spawn(g, &member_spec, member_init, (void *)tmpl, id) != TR_OK) {
        tu_fail_record(__FILE__, __LINE__, "tr_group_spawn");
    }
}

static member_task
tmpl_make(uint32_t yields, uint64_t result, bool stuck, atomic_int *drops)
{
    member_task t;
    memset(&t, 0, sizeof t);
    t.yields = yields;
    t.result = result;
    t.stuck = stuck;
    t.drops = drops;
    return t;
}

// ---------------------------------------------------------------------------
// Construction.

static void
test_group_new_rejects_bad_args(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new_fifo();
    tr_group *g = (tr_group *)&g;
    assert_int_equal(tr_group_new(NULL, 0, &g), TR_EINVAL);
    assert_null(g);
    assert_int_equal(tr_group_new(rt, 1u << 7, &g), TR_EINVAL);
    assert_int_equal(tr_group_new(rt, 0, NULL), TR_EINVAL);
    assert_int_equal(tr_group_new(rt, TR_GROUP_CANCEL_ON_ERROR | TR_GROUP_VALUES, &g), TR_OK);
    assert_int_equal(tr_group_len(g), 0);
    assert_int_equal(tr_group_running(g), 0);
    // An empty group: waiting returns at once.
    tr_err err = TR_EIO;
    assert_int_equal(tr_group_wait(g, &err), TR_OK);
    assert_int_equal(err, TR_OK);
    tr_group_cancel(g);
    tr_group_free(g);
    tr_group_free(NULL);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// join_all: every member, the first failure, reuse.

typedef struct all_root {
    int tr_pc;
    tr_group *g;
    atomic_int drops;
    tr_err err;
    unsigned i;
} all_root;

static tr_poll
all_root_poll(void *arg, tr_cx *cx)
{
    all_root *st = arg;
    member_task t;
    TR_BEGIN(st);
    // Ten members that succeed.
    for (st->i = 0; st->i < 10; st->i++) {
        t = tmpl_make(st->i % 3, 0, false, &st->drops);
        start_member(tr_cx_rt(cx), st->g, &t, NULL);
    }
    CHECK(st, tr_group_running(st->g) == 10);
    TR_AWAIT(st, tr_group_join_all(st->g, cx, &st->err));
    CHECK(st, st->err == TR_OK);
    CHECK(st, atomic_load(&st->drops) == 10);
    CHECK(st, tr_group_len(st->g) == 0 && tr_group_running(st->g) == 0);

    // Without TR_GROUP_CANCEL_ON_ERROR a failure cancels nothing: every
    // member finishes, and join_all reports the first failure to complete.
    for (st->i = 0; st->i < 5; st->i++) {
        uint64_t res = st->i == 1 ? TR_EIO : st->i == 3 ? TR_EPIPE : TR_OK;
        t = tmpl_make(st->i == 1 ? 2 : 4, res, false, &st->drops);
        start_member(tr_cx_rt(cx), st->g, &t, NULL);
    }
    TR_AWAIT(st, tr_group_join_all(st->g, cx, &st->err));
    CHECK(st, st->err == TR_EIO);
    CHECK(st, atomic_load(&st->drops) == 15);

    // The failure is forgotten once the group has been emptied.
    t = tmpl_make(0, 0, false, &st->drops);
    start_member(tr_cx_rt(cx), st->g, &t, NULL);
    TR_AWAIT(st, tr_group_join_all(st->g, cx, &st->err));
    CHECK(st, st->err == TR_OK);

    // A boxed result is a success and is destroyed by join_all.
    atomic_store(&boxes_freed, 0);
    t = tmpl_make(1, 0, false, &st->drops);
    t.boxed = true;
    start_member(tr_cx_rt(cx), st->g, &t, NULL);
    TR_AWAIT(st, tr_group_join_all(st->g, cx, &st->err));
    CHECK(st, st->err == TR_OK);
    CHECK(st, atomic_load(&boxes_freed) == 1);

    // An empty group is ready at once.
    CHECK(st, tr_group_join_all(st->g, cx, &st->err) == TR_READY && st->err == TR_OK);
    TR_END(st);
}

static const tr_task_spec all_root_spec = {
    .name = "group-all", .poll = all_root_poll, .size = sizeof(all_root)};

static void
test_group_join_all_first_error_and_reuse(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new_fifo();
    tr_group *g = NULL;
    assert_int_equal(tr_group_new(rt, 0, &g), TR_OK);
    tu_run_root(rt, &all_root_spec, &(all_root){.g = g});
    tr_group_free(g);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// join_next: completion order, ids, values, TR_EEMPTY.

typedef struct next_root {
    int tr_pc;
    tr_group *g;
    tr_task_id ids[4];
    tr_task_id id;
    tr_outcome out;
    tr_err err;
    unsigned i;
} next_root;

static tr_poll
next_root_poll(void *arg, tr_cx *cx)
{
    static const uint32_t yields[4] = {5, 1, 3, 0};
    static const unsigned order[4] = {3, 1, 2, 0};
    next_root *st = arg;
    member_task t;
    TR_BEGIN(st);
    for (st->i = 0; st->i < 4; st->i++) {
        t = tmpl_make(yields[st->i], 100 + st->i, false, NULL);
        start_member(tr_cx_rt(cx), st->g, &t, &st->ids[st->i]);
    }
    for (st->i = 0; st->i < 4; st->i++) {
        TR_AWAIT(st, tr_group_join_next(st->g, cx, &st->out, &st->id, &st->err));
        CHECK(st, st->err == TR_OK && st->out.err == TR_OK);
        CHECK(st, st->id.id == st->ids[order[st->i]].id);
        CHECK(st, st->out.value.u64 == 100 + order[st->i]);
        CHECK(st, tr_group_len(st->g) == 3 - st->i);
    }
    TR_AWAIT(st, tr_group_join_next(st->g, cx, &st->out, &st->id, &st->err));
    CHECK(st, st->err == TR_EEMPTY);
    // Values are not errors in a TR_GROUP_VALUES group.
    TR_AWAIT(st, tr_group_join_all(st->g, cx, &st->err));
    CHECK(st, st->err == TR_OK);

    // A boxed result moves to the caller.
    atomic_store(&boxes_freed, 0);
    t = tmpl_make(0, 0, false, NULL);
    t.boxed = true;
    start_member(tr_cx_rt(cx), st->g, &t, NULL);
    TR_AWAIT(st, tr_group_join_next(st->g, cx, &st->out, NULL, &st->err));
    CHECK(st, st->err == TR_OK && st->out.dtor == box_free);
    CHECK(st, *(int *)st->out.value.ptr == 42);
    tr_outcome_fini(&st->out);
    CHECK(st, atomic_load(&boxes_freed) == 1);
    TR_END(st);
}

static const tr_task_spec next_root_spec = {
    .name = "group-next", .poll = next_root_poll, .size = sizeof(next_root)};

static void
test_group_join_next_completion_order(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new_fifo();
    tr_group *g = NULL;
    assert_int_equal(tr_group_new(rt, TR_GROUP_VALUES, &g), TR_OK);
    tu_run_root(rt, &next_root_spec, &(next_root){.g = g});
    tr_group_free(g);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// TR_GROUP_CANCEL_ON_ERROR: the first failure cancels the rest.

#define COE_STUCK 6

typedef struct coe_root {
    int tr_pc;
    tr_group *g;
    atomic_int drops;
    tr_outcome out;
    tr_err err;
    unsigned cancelled;
    unsigned ok;
    unsigned failed;
    unsigned i;
} coe_root;

static tr_poll
coe_root_poll(void *arg, tr_cx *cx)
{
    coe_root *st = arg;
    member_task t;
    TR_BEGIN(st);
    // Round 1, with join_all: stuck members, one that succeeds, one that
    // fails after a few yields.
    for (st->i = 0; st->i < COE_STUCK; st->i++) {
        t = tmpl_make(0, 0, true, &st->drops);
        start_member(tr_cx_rt(cx), st->g, &t, NULL);
    }
    t = tmpl_make(0, TR_OK, false, &st->drops);
    start_member(tr_cx_rt(cx), st->g, &t, NULL);
    t = tmpl_make(3, TR_EIO, false, &st->drops);
    start_member(tr_cx_rt(cx), st->g, &t, NULL);
    TR_AWAIT(st, tr_group_join_all(st->g, cx, &st->err));
    CHECK(st, st->err == TR_EIO);
    CHECK(st, atomic_load(&st->drops) == COE_STUCK + 2);

    // Round 2, with join_next: the outcomes one by one. A member started
    // after the failure, before the group is empty, is cancelled at once.
    for (st->i = 0; st->i < COE_STUCK; st->i++) {
        t = tmpl_make(0, 0, true, &st->drops);
        start_member(tr_cx_rt(cx), st->g, &t, NULL);
    }
    t = tmpl_make(1, TR_EPIPE, false, &st->drops);
    start_member(tr_cx_rt(cx), st->g, &t, NULL);
    TR_AWAIT(st, tr_group_join_next(st->g, cx, &st->out, NULL, &st->err));
    CHECK(st, st->err == TR_OK && st->out.err == TR_OK && st->out.value.u64 == TR_EPIPE);
    t = tmpl_make(0, 0, false, &st->drops); // would succeed, but is too late
    start_member(tr_cx_rt(cx), st->g, &t, NULL);
    for (;;) {
        TR_AWAIT(st, tr_group_join_next(st->g, cx, &st->out, NULL, &st->err));
        if (st->err == TR_EEMPTY) {
            break;
        }
        CHECK(st, st->err == TR_OK);
        if (st->out.err == TR_ECANCELED) {
            st->cancelled++;
        } else {
            st->ok++;
        }
    }
    CHECK(st, st->cancelled == COE_STUCK + 1 && st->ok == 0);
    CHECK(st, atomic_load(&st->drops) == 2 * COE_STUCK + 4);

    // Emptied: the group runs members normally again.
    t = tmpl_make(2, TR_OK, false, &st->drops);
    start_member(tr_cx_rt(cx), st->g, &t, NULL);
    TR_AWAIT(st, tr_group_join_all(st->g, cx, &st->err));
    CHECK(st, st->err == TR_OK);
    TR_END(st);
}

static const tr_task_spec coe_root_spec = {
    .name = "group-coe", .poll = coe_root_poll, .size = sizeof(coe_root)};

static void
test_group_first_error_cancels_rest(void **state)
{
    (void)state;
    static const struct {
        tr_sched_kind sched;
        unsigned workers;
    } cfgs[] = {{TR_SCHED_RR, 1}, {TR_SCHED_WS, 2}, {TR_SCHED_WS, 4}, {TR_SCHED_HYBRID, 3}};
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        tr_rt *rt = tu_rt_make(cfgs[c].sched, cfgs[c].workers);
        tr_group *g = NULL;
        assert_int_equal(tr_group_new(rt, TR_GROUP_CANCEL_ON_ERROR, &g), TR_OK);
        tu_run_root(rt, &coe_root_spec, &(coe_root){.g = g});
        tr_group_free(g);
        tu_rt_free_clean(rt); // quiesces first
    }
}

// ---------------------------------------------------------------------------
// tr_group_cancel from a task: running members are cancelled; one that
// finished first keeps its result.

#define CANCEL_N 8

typedef struct cancel_root {
    int tr_pc;
    tr_group *g;
    atomic_int drops;
    tr_outcome out;
    tr_err err;
    uint64_t tu_deadline;
    unsigned i;
} cancel_root;

static tr_poll
cancel_root_poll(void *arg, tr_cx *cx)
{
    cancel_root *st = arg;
    member_task t;
    TR_BEGIN(st);
    t = tmpl_make(0, 7, false, &st->drops);
    start_member(tr_cx_rt(cx), st->g, &t, NULL);
    for (st->i = 0; st->i < CANCEL_N; st->i++) {
        t = tmpl_make(0, 0, true, &st->drops);
        start_member(tr_cx_rt(cx), st->g, &t, NULL);
    }
    YIELD_UNTIL(st, cx, tr_group_running(st->g) == CANCEL_N);
    tr_group_cancel(st->g);
    TR_AWAIT(st, tr_group_join_next(st->g, cx, &st->out, NULL, &st->err));
    CHECK(st, st->err == TR_OK && st->out.err == TR_OK && st->out.value.u64 == 7);
    TR_AWAIT(st, tr_group_join_all(st->g, cx, &st->err));
    CHECK(st, st->err == TR_ECANCELED);
    CHECK(st, atomic_load(&st->drops) == CANCEL_N + 1);
    TR_END(st);
}

static const tr_task_spec cancel_root_spec = {
    .name = "group-cancel", .poll = cancel_root_poll, .size = sizeof(cancel_root)};

static void
test_group_cancel(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new_fifo();
    tr_group *g = NULL;
    assert_int_equal(tr_group_new(rt, TR_GROUP_VALUES, &g), TR_OK);
    tu_run_root(rt, &cancel_root_spec, &(cancel_root){.g = g});
    tr_group_free(g);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// A plain thread starts members, waits for them, cancels them. With two
// workers and no block_on, worker 1 runs them all.

typedef struct deadlock_root {
    int tr_pc;
    tr_group *g;
} deadlock_root;

static tr_poll
deadlock_root_poll(void *arg, tr_cx *cx)
{
    deadlock_root *st = arg;
    (void)cx;
    TR_BEGIN(st);
    {
        tr_err err = TR_OK;
        CHECK(st, tr_group_wait(st->g, &err) == TR_EDEADLOCK);
    }
    TR_END(st);
}

static const tr_task_spec deadlock_root_spec = {
    .name = "group-deadlock", .poll = deadlock_root_poll, .size = sizeof(deadlock_root)};

static void
test_group_wait_and_cancel_from_plain_thread(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_make(TR_SCHED_WS, 2);
    tr_group *g = NULL;
    atomic_int drops = 0;
    assert_int_equal(tr_group_new(rt, 0, &g), TR_OK);
    for (int round = 0; round < 20; round++) {
        for (uint32_t i = 0; i < 16; i++) {
            member_task t =
                tmpl_make(i % 4, (round % 2 == 1 && i == 5) ? TR_EIO : TR_OK, false, &drops);
            start_member(rt, g, &t, NULL);
        }
        tr_err err = TR_EINVAL;
        assert_int_equal(tr_group_wait(g, &err), TR_OK);
        assert_int_equal(err, round % 2 == 1 ? TR_EIO : TR_OK);
        assert_int_equal(tr_group_len(g), 0);
    }
    assert_int_equal(atomic_load(&drops), 20 * 16);

    // Cancel from this thread: stuck members finish as cancelled.
    atomic_store(&drops, 0);
    for (uint32_t i = 0; i < 10; i++) {
        member_task t = tmpl_make(0, 0, true, &drops);
        start_member(rt, g, &t, NULL);
    }
    tr_group_cancel(g);
    tr_err err = TR_OK;
    assert_int_equal(tr_group_wait(g, &err), TR_OK);
    assert_int_equal(err, TR_ECANCELED);
    assert_int_equal(atomic_load(&drops), 10);

    // From a worker thread the blocking wait refuses.
    tu_run_root(rt, &deadlock_root_spec, &(deadlock_root){.g = g});
    tr_group_free(g);
    tu_checks_pass();
    tu_rt_free_clean(rt); // quiesces first
}

// ---------------------------------------------------------------------------
// Freeing a group: from a task while members run (they are cancelled; a
// task that was awaiting the group and got cancelled is no obstacle), and
// after tr_rt_free (which has cancelled the members). Uncollected boxed
// results are destroyed. ASan checks that nothing leaks.

typedef struct awaiter_task {
    int tr_pc;
    tr_group *g;
    tr_err err;
    unsigned *polls;
} awaiter_task;

static tr_poll
awaiter_poll(void *arg, tr_cx *cx)
{
    awaiter_task *st = arg;
    (*st->polls)++;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_group_join_all(st->g, cx, &st->err));
    TR_END(st);
}

static const tr_task_spec awaiter_spec = {
    .name = "group-awaiter", .poll = awaiter_poll, .size = sizeof(awaiter_task)};

typedef struct free_root {
    int tr_pc;
    tr_group *g;
    atomic_int drops;
    tr_join aw;
    unsigned aw_polls;
    tr_outcome out;
    uint64_t tu_deadline;
    unsigned i;
} free_root;

static tr_poll
free_root_poll(void *arg, tr_cx *cx)
{
    free_root *st = arg;
    member_task t;
    TR_BEGIN(st);
    CHECK(st, tr_group_new(tr_cx_rt(cx), TR_GROUP_CANCEL_ON_ERROR, &st->g) == TR_OK);
    for (st->i = 0; st->i < 3; st->i++) {
        t = tmpl_make(0, 0, false, &st->drops);
        t.boxed = true;
        start_member(tr_cx_rt(cx), st->g, &t, NULL);
    }
    for (st->i = 0; st->i < 5; st->i++) {
        t = tmpl_make(0, 0, true, &st->drops);
        start_member(tr_cx_rt(cx), st->g, &t, NULL);
    }
    {
        CHECK(st, tr_spawn(tr_cx_rt(cx), &awaiter_spec, NULL,
                           &(awaiter_task){.g = st->g, .polls = &st->aw_polls}, &st->aw) == TR_OK);
    }
    YIELD_UNTIL(st, cx, st->aw_polls >= 1 && tr_group_running(st->g) == 5);
    CHECK(st, tr_task_abort(&st->aw) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->aw, cx, &st->out));
    CHECK(st, st->out.err == TR_ECANCELED);
    tr_group_free(st->g); // three boxed results destroyed, five members cancelled
    st->g = NULL;
    CHECK(st, atomic_load(&boxes_freed) == 3);
    YIELD_UNTIL(st, cx, atomic_load(&st->drops) == 8);
    TR_END(st);
}

static const tr_task_spec free_root_spec = {
    .name = "group-free", .poll = free_root_poll, .size = sizeof(free_root)};

static void
test_group_free_with_running_members(void **state)
{
    (void)state;
    atomic_store(&boxes_freed, 0);
    tr_rt *rt = tu_rt_new_fifo();
    tu_run_root(rt, &free_root_spec, NULL);
    tu_rt_free_clean(rt);
}

static void
test_group_outlives_runtime(void **state)
{
    (void)state;
    for (unsigned flags = 0; flags <= TR_GROUP_CANCEL_ON_ERROR; flags++) {
        for (unsigned workers = 1; workers <= 2; workers++) {
            atomic_int drops = 0;
            tr_rt *rt = tu_rt_make(TR_SCHED_WS, workers);
            tr_group *g = NULL;
            assert_int_equal(tr_group_new(rt, flags, &g), TR_OK);
            for (uint32_t i = 0; i < 12; i++) {
                member_task t = tmpl_make(0, 0, true, &drops);
                start_member(rt, g, &t, NULL);
            }
            tr_rt_free(rt); // cancels every member
            assert_int_equal(atomic_load(&drops), 12);
            assert_int_equal(tr_group_running(g), 0);
            assert_int_equal(tr_group_len(g), 12);
            tr_group_free(g);
        }
    }
}

// ---------------------------------------------------------------------------
// Stress: rounds of members that start children into the same group while
// others complete, fail (half the rounds) and are cancelled, on several
// workers. Checks the reported error and that every started member's drop
// ran exactly once.

#define STRESS_ROUNDS 25
#define STRESS_MEMBERS 24

typedef struct stress_root {
    int tr_pc;
    tr_group *g;
    atomic_int drops;
    atomic_int started;
    uint32_t round;
    uint32_t i;
    tr_err err;
} stress_root;

static tr_poll
stress_root_poll(void *arg, tr_cx *cx)
{
    stress_root *st = arg;
    member_task t;
    TR_BEGIN(st);
    for (st->round = 0; st->round < STRESS_ROUNDS; st->round++) {
        atomic_store(&st->drops, 0);
        atomic_store(&st->started, 0);
        for (st->i = 0; st->i < STRESS_MEMBERS; st->i++) {
            bool fails = st->round % 2 == 1 && st->i == st->round % STRESS_MEMBERS;
            bool stuck = st->round % 2 == 1 && st->i % 5 == 4 && !fails;
            t = tmpl_make((st->i * 7 + st->round) % 6, fails ? TR_EIO : TR_OK, stuck, &st->drops);
            t.g = st->g;
            t.started = &st->started;
            t.children = fails || stuck ? 0 : 2;
            t.seed = st->i + st->round;
            start_member(tr_cx_rt(cx), st->g, &t, NULL);
        }
        TR_AWAIT(st, tr_group_join_all(st->g, cx, &st->err));
        if (st->round % 2 == 1) {
            // Stuck members only finish by the cancel the failure causes.
            CHECK(st, st->err == TR_EIO);
        } else {
            CHECK(st, st->err == TR_OK);
        }
        CHECK(st, atomic_load(&st->drops) == atomic_load(&st->started));
        CHECK(st, tr_group_len(st->g) == 0);
    }
    TR_END(st);
}

static const tr_task_spec stress_root_spec = {
    .name = "group-stress", .poll = stress_root_poll, .size = sizeof(stress_root)};

static void
test_group_stress_workers(void **state)
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
        tr_rt *rt = tu_rt_make(cfgs[c].sched, cfgs[c].workers);
        tr_group *g = NULL;
        assert_int_equal(tr_group_new(rt, TR_GROUP_CANCEL_ON_ERROR, &g), TR_OK);
        tu_run_root(rt, &stress_root_spec, &(stress_root){.g = g});
        tr_group_free(g);
        tu_rt_free_clean(rt); // quiesces first
    }
}

// A member started after a shutdown was requested is refused as
// tr_task_start refuses: TR_ESHUTDOWN, its drop run once, no member added,
// the id zero.
static void
test_group_start_after_shutdown_refused(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_group *g = NULL;
    assert_int_equal(tr_group_new(rt, 0, &g), TR_OK);
    atomic_int drops = 0;
    tu_value_task *t = tu_value_new(rt, 5, 0, &drops); // two steps: tr_group_start takes it
    assert_int_equal(tr_rt_shutdown(rt, TR_SHUTDOWN_GRACEFUL, 0), TR_OK);
    tr_task_id id = {77};
    assert_int_equal(tr_group_start(g, t, &id), TR_ESHUTDOWN);
    assert_int_equal(id.id, 0);
    assert_int_equal(atomic_load(&drops), 1);
    assert_int_equal(tr_group_len(g), 0);
    assert_int_equal(tr_group_running(g), 0);
    // The one-call form: refused before init (TR_ESHUTDOWN) on a runtime
    // that shut down; and bad input.
    assert_int_equal(tr_group_spawn(g, &member_spec, NULL, NULL, &id), TR_ESHUTDOWN);
    assert_int_equal(id.id, 0);
    assert_int_equal(tr_group_spawn(NULL, &member_spec, NULL, NULL, &id), TR_EINVAL);
    tr_group_free(g);
    tu_rt_free_clean(rt);
    assert_int_equal(atomic_load(&drops), 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_new_rejects_bad_args),
        cmocka_unit_test(test_group_join_all_first_error_and_reuse),
        cmocka_unit_test(test_group_join_next_completion_order),
        cmocka_unit_test(test_group_first_error_cancels_rest),
        cmocka_unit_test(test_group_cancel),
        cmocka_unit_test(test_group_wait_and_cancel_from_plain_thread),
        cmocka_unit_test(test_group_free_with_running_members),
        cmocka_unit_test(test_group_outlives_runtime),
        cmocka_unit_test(test_group_stress_workers),
        cmocka_unit_test(test_group_start_after_shutdown_refused),
    };
    return tu_run(tests);
}
