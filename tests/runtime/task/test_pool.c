// Tests for the task pool (runtime/task/pool.c): slot reuse with bumped
// generations, stale keys (ids and wakers), generation checks and retirement
// through the internal tr__pool_* API, size classes, the max_tasks limit,
// concurrent allocation with remote frees, and the 64-byte slot header.
//
// The runtime has one worker, so a task spawned by a running task runs only
// once the spawner yields or waits; tests rely on that FIFO order.
//
// The pool is what tr_task_new allocates from, so the cases that look at a
// prepared task's slot, fill the pool to its limit or discard test
// tr_task_new and tr_task_start themselves and spawn in those two steps;
// the roots that only drive a case are made with tr_rt_run.
#include "../test_util.h"

#include "exec/exec.h"
#include "task/task.h"

// ---------------------------------------------------------------------------
// Helpers.

static uint32_t
id_index(tr_task_id id)
{
    return (uint32_t)id.id;
}

static uint32_t
id_gen(tr_task_id id)
{
    return (uint32_t)(id.id >> 32);
}

// A root that spawns `n` value tasks one after the other, joins each, and
// records their ids; so every child reuses the slot its predecessor freed.
typedef struct seq_root {
    int tr_pc;
    unsigned n;
    unsigned i;
    tr_join j;
    tr_outcome out;
    tr_task_id *ids;
} seq_root;

static tr_poll
seq_root_poll(void *arg, tr_cx *cx)
{
    seq_root *st = arg;
    void *p = NULL;
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->n; st->i++) {
        TU_CHECK(tr_task_new(tr_cx_rt(cx), &tu_value_spec, &p) == TR_OK);
        if (p == NULL) {
            TR_RETURN(st);
        }
        ((tu_value_task *)p)->value = st->i;
        tr_task_start(p, &st->j);
        st->ids[st->i] = tr_join_id(&st->j);
        TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
        TU_CHECK(st->out.err == TR_OK && st->out.value.u64 == st->i);
    }
    TR_END(st);
}

static const tr_task_spec seq_root_spec = {
    .name = "seq_root", .poll = seq_root_poll, .size = sizeof(seq_root)};

// ---------------------------------------------------------------------------
// The slot header.

static void
test_pool_slot_header_is_64_bytes(void **state)
{
    (void)state;
    assert_int_equal(sizeof(tr__slot), 64);
    assert_int_equal(TR__SLOT_HDR, 64);
    tr_rt *rt = tu_rt_new();
    void *st = tu_task_new(rt, &tu_value_spec);
    tr__slot *s = tr__state_slot(st);
    // The state follows the one-cache-line header, itself line-aligned.
    assert_ptr_equal((char *)st - 64, (char *)s);
    assert_ptr_equal(tr__slot_state(s), st);
    assert_int_equal((uintptr_t)s % 64, 0);
    assert_int_equal((uintptr_t)st % 16, 0);
    // The one atomic word: live, one reference, not started, and a
    // generation (never 0: keys of generation 0 do not exist).
    uint64_t w = atomic_load(&s->s_word);
    assert_true(w & TR__W_LIVE);
    assert_false(w & TR__W_STARTED);
    assert_int_equal(tr__w_refs(w), 1);
    assert_true(tr__w_gen(w) != 0);
    tr_task_discard(st);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Reuse and generations through the internal API.

static void
test_pool_freed_slot_reused_with_bumped_generation(void **state)
{
    (void)state;
    tr__pool p;
    assert_int_equal(tr__pool_init(&p, 1, 1u << 20), TR_OK);
    tr__slot *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(tr__pool_alloc(&p, 0, 36, &a), TR_OK);
    uint64_t wa = atomic_load(&a->s_word);
    uint64_t ka = tr__slot_key(a, wa);
    // Generations carry on when a chunk is reused from the process cache,
    // so only their steps are known.
    uint32_t g0 = tr__w_gen(wa);
    assert_true(g0 != 0);
    assert_int_equal(tr__key_gen(ka), g0);
    assert_ptr_equal(tr__pool_lookup(tr__key_index(ka)), a);
    assert_int_equal(tr__pool_live(&p), 1);

    tr__pool_free(&p, 0, a);
    assert_int_equal(tr__pool_live(&p), 0);
    // Freeing bumps the generation at once: the old key is stale.
    uint64_t wf = atomic_load(&a->s_word);
    assert_int_equal(tr__w_gen(wf), g0 + 1);
    assert_false(wf & TR__W_LIVE);

    // The same shard and size class get the same slot back, one generation on.
    assert_int_equal(tr__pool_alloc(&p, 0, 40, &b), TR_OK);
    assert_ptr_equal(b, a);
    uint64_t wb = atomic_load(&b->s_word);
    uint64_t kb = tr__slot_key(b, wb);
    assert_int_equal(tr__key_index(kb), tr__key_index(ka));
    assert_int_equal(tr__key_gen(kb), g0 + 1);
    assert_true(kb != ka);
    assert_true(wb & TR__W_LIVE);
    assert_int_equal(tr__w_refs(wb), 1);

    // A different size class never shares the slot.
    assert_int_equal(tr__pool_alloc(&p, 0, 1000, &c), TR_OK);
    assert_ptr_not_equal(c, b);
    tr__pool_free(&p, 0, b);
    tr__pool_free(&p, 0, c);
    assert_int_equal(tr__pool_live(&p), 0);
    tr__pool_fini(&p);
}

static void
test_pool_generation_checks(void **state)
{
    (void)state;
    tr__pool p;
    assert_int_equal(tr__pool_init(&p, 1, 1u << 20), TR_OK);
    tr__slot *a = NULL, *b = NULL;
    assert_int_equal(tr__pool_alloc(&p, 0, 8, &a), TR_OK);
    uint32_t ia = tr__slot_index(a);
    uint32_t g0 = tr__w_gen(atomic_load(&a->s_word));
    assert_ptr_equal(tr__pool_lookup(ia), a);
    // The next slot of the chunk is not carved yet; nor is a chunk beyond.
    assert_null(tr__pool_lookup(ia + 1));
    assert_null(tr__pool_lookup(ia + (1u << TR__SLOT_BITS)));
    assert_null(tr__pool_lookup(UINT32_MAX));

    // Ten reuses: the generation climbs by one per free, the index stays.
    for (uint32_t g = g0; g < g0 + 10; g++) {
        assert_int_equal(tr__w_gen(atomic_load(&a->s_word)), g);
        tr__pool_free(&p, 0, a);
        assert_int_equal(tr__pool_alloc(&p, 0, 8, &b), TR_OK);
        assert_ptr_equal(b, a);
        assert_int_equal(tr__slot_index(b), ia);
    }

    // A slot whose generation would wrap is retired, never handed out again.
    tr__pool_free(&p, 0, a);
    atomic_store(&a->s_word, (uint64_t)UINT32_MAX << TR__W_GEN_SHIFT);
    assert_int_equal(tr__pool_alloc(&p, 0, 8, &b), TR_OK);
    assert_ptr_equal(b, a);
    assert_int_equal(tr__w_gen(atomic_load(&b->s_word)), UINT32_MAX);
    tr__pool_free(&p, 0, b);
    uint64_t wr = atomic_load(&a->s_word);
    assert_false(wr & TR__W_LIVE);
    assert_int_equal(wr & ((1ull << TR__W_GEN_SHIFT) - 1), 0);
    tr__slot *c = NULL;
    assert_int_equal(tr__pool_alloc(&p, 0, 8, &c), TR_OK);
    assert_ptr_not_equal(c, a);
    assert_ptr_equal(tr__pool_lookup(ia), a); // still carved, but retired
    assert_false(atomic_load(&a->s_word) & TR__W_LIVE);
    tr__pool_free(&p, 0, c);
    assert_int_equal(tr__pool_live(&p), 0);
    tr__pool_fini(&p);
}

// ---------------------------------------------------------------------------
// Reuse and stale keys through the public API.

static void
test_pool_task_slot_reused_with_bumped_generation(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_task_id ids[4];
    assert_int_equal(tr_rt_run(rt, &seq_root_spec, NULL, &(seq_root){.n = 4, .ids = ids}, NULL),
                     TR_OK);
    tu_checks_pass();
    for (int i = 1; i < 4; i++) {
        assert_int_equal(id_index(ids[i]), id_index(ids[0]));
        assert_int_equal(id_gen(ids[i]), id_gen(ids[i - 1]) + 1);
    }
    tr_rt_stats st = tu_stats(rt);
    assert_int_equal(st.completed, 5);
    tu_rt_free_clean(rt);
}

// stale_root: run task A to completion (its slot is freed), then start B,
// which reuses A's slot and waits. Cancel by A's id and wake A's old waker:
// both must leave B alone. Then check that B's own waker does reach B.
typedef struct waker_task {
    int tr_pc;
    tr_waker *out_waker; // where to publish the waker
    tr_task_id *out_id;
    atomic_int *polls;
    atomic_int *drops;
    bool finish; // return READY on the next poll
} waker_task;

static tr_poll
waker_task_poll(void *arg, tr_cx *cx)
{
    waker_task *st = arg;
    atomic_fetch_add(st->polls, 1);
    *st->out_waker = tr_cx_waker(cx);
    *st->out_id = tr_cx_task_id(cx);
    if (st->finish) {
        return TR_READY;
    }
    return TR_PENDING;
}

static void
waker_task_drop(void *arg)
{
    waker_task *st = arg;
    atomic_fetch_add(st->drops, 1);
}

static const tr_task_spec waker_task_spec = {.name = "waker_task",
                                             .poll = waker_task_poll,
                                             .drop = waker_task_drop,
                                             .size = sizeof(waker_task)};

typedef struct stale_root {
    int tr_pc;
    unsigned k;
    tr_join ja, jb;
    tr_outcome out;
    waker_task *b;
    tr_waker wa, wb;
    tr_task_id ida, idb;
    atomic_int a_polls, a_drops, b_polls, b_drops;
    tr_err cancel_rv;
    pthread_t thr;
} stale_root;

static void *
wake_from_thread(void *arg)
{
    tr_wake(*(tr_waker *)arg);
    return NULL;
}

static tr_poll
stale_root_poll(void *arg, tr_cx *cx)
{
    stale_root *st = arg;
    void *p = NULL;
    waker_task *t;
    TR_BEGIN(st);
    // A: one poll, READY.
    TU_CHECK(tr_task_new(tr_cx_rt(cx), &waker_task_spec, &p) == TR_OK);
    t = p;
    t->out_waker = &st->wa;
    t->out_id = &st->ida;
    t->polls = &st->a_polls;
    t->drops = &st->a_drops;
    t->finish = true;
    tr_task_start(t, &st->ja);
    TR_AWAIT(st, tr_join_poll(&st->ja, cx, &st->out));
    TU_CHECK(atomic_load(&st->a_drops) == 1);
    // A's slot is free now. B takes it.
    TU_CHECK(tr_task_new(tr_cx_rt(cx), &waker_task_spec, &p) == TR_OK);
    st->b = p;
    st->b->out_waker = &st->wb;
    st->b->out_id = &st->idb;
    st->b->polls = &st->b_polls;
    st->b->drops = &st->b_drops;
    tr_task_start(st->b, &st->jb);
    TR_YIELD(st, cx); // B polls once and waits
    TU_CHECK(atomic_load(&st->b_polls) == 1);
    TU_CHECK(id_index(st->idb) == id_index(st->ida));
    TU_CHECK(id_gen(st->idb) == id_gen(st->ida) + 1);

    // A's id is stale: not found, and B is not cancelled.
    st->cancel_rv = tr_task_cancel(tr_cx_rt(cx), st->ida);
    TU_CHECK(st->cancel_rv == TR_ENOTFOUND);
    // A's waker is stale: B is not woken, from here or from a plain thread.
    tr_wake(st->wa);
    TU_CHECK(pthread_create(&st->thr, NULL, wake_from_thread, &st->wa) == 0);
    TU_CHECK(pthread_join(st->thr, NULL) == 0);
    // A negative check, not a wait: on one worker the turns are
    // deterministic. 64 of them, because a wake from a plain thread goes to
    // the injector, which a worker whose local queue is not empty (the
    // yielding root) looks at only once every 32 polls.
    for (st->k = 0; st->k < 64; st->k++) {
        TR_YIELD(st, cx);
    }
    TU_CHECK(atomic_load(&st->b_polls) == 1);
    TU_CHECK(atomic_load(&st->b_drops) == 0);
    TU_CHECK(!tr_join_is_finished(&st->jb));

    // B's own waker does reach it (the check above can see a wake).
    st->b->finish = true;
    tr_wake(st->wb);
    TR_AWAIT(st, tr_join_poll(&st->jb, cx, &st->out));
    TU_CHECK(st->out.err == TR_OK);
    TU_CHECK(atomic_load(&st->b_polls) == 2);
    TU_CHECK(atomic_load(&st->b_drops) == 1);
    // Both ids are stale now, and so is B's waker.
    TU_CHECK(tr_task_cancel(tr_cx_rt(cx), st->ida) == TR_ENOTFOUND);
    TU_CHECK(tr_task_cancel(tr_cx_rt(cx), st->idb) == TR_ENOTFOUND);
    tr_wake(st->wb);
    TR_END(st);
}

static const tr_task_spec stale_root_spec = {
    .name = "stale_root", .poll = stale_root_poll, .size = sizeof(stale_root)};

static void
test_pool_stale_keys_are_detected(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new_fifo() /* FIFO order */;
    assert_int_equal(tr_rt_run(rt, &stale_root_spec, NULL, NULL, NULL), TR_OK);
    tu_checks_pass();
    // Ids that were never handed out are not found either.
    assert_int_equal(tr_task_cancel(rt, (tr_task_id){0}), TR_ENOTFOUND);
    assert_int_equal(tr_task_cancel(rt, (tr_task_id){UINT64_MAX}), TR_ENOTFOUND);
    assert_int_equal(tr_task_cancel(rt, (tr_task_id){(uint64_t)7 << 32 | 1000000}), TR_ENOTFOUND);
    tu_rt_free_clean(rt);
}

// Keys name a task for good in the whole process: a waker or id kept from a
// runtime that has been freed must stay stale when a later runtime reuses
// the same memory (from the chunk cache, or after tr_trim gave it back and
// the chunk id was handed out again).

typedef struct capture_root {
    int tr_pc;
    tr_waker *waker;
    tr_task_id *id;
} capture_root;

static tr_poll
capture_root_poll(void *arg, tr_cx *cx)
{
    capture_root *st = arg;
    *st->waker = tr_cx_waker(cx);
    *st->id = tr_cx_task_id(cx);
    return TR_READY;
}

static const tr_task_spec capture_root_spec = {
    .name = "capture_root", .poll = capture_root_poll, .size = sizeof(capture_root)};

// U: polled once from a stuck task's poll (via a root that waits for U's
// first poll), then checked against the old runtime's stale key.
typedef struct reuse_root {
    int tr_pc;
    tr_join ju;
    tr_waker old_waker;
    tr_task_id old_id;
    tr_task_id u_id;
    atomic_int u_polls, u_drops;
    tr_err cancel_rv;
    unsigned k;
} reuse_root;

static tr_poll
reuse_root_poll(void *arg, tr_cx *cx)
{
    reuse_root *st = arg;
    void *p = NULL;
    tu_stuck *u = NULL;
    TR_BEGIN(st);
    TU_CHECK(tr_task_new(tr_cx_rt(cx), &tu_stuck_spec, &p) == TR_OK);
    u = p;
    if (u == NULL) {
        TR_RETURN(st);
    }
    u->polls = &st->u_polls;
    u->drops = &st->u_drops;
    tr_task_start(u, &st->ju);
    st->u_id = tr_join_id(&st->ju);
    TR_YIELD(st, cx); // U polls once and waits
    TU_CHECK(atomic_load(&st->u_polls) == 1);
    // The old runtime's key: stale, whatever memory it names now.
    st->cancel_rv = tr_task_cancel(tr_cx_rt(cx), st->old_id);
    tr_wake(st->old_waker);
    // A negative check, not a wait: on one worker a wake from the worker
    // itself would queue U ahead of the yielding root at once.
    for (st->k = 0; st->k < 3; st->k++) {
        TR_YIELD(st, cx);
    }
    TU_CHECK(st->cancel_rv == TR_ENOTFOUND);
    TU_CHECK(atomic_load(&st->u_polls) == 1);
    TU_CHECK(atomic_load(&st->u_drops) == 0);
    TU_CHECK(st->u_id.id != st->old_id.id);
    // Clean up U.
    TU_CHECK(tr_task_abort(&st->ju) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->ju, cx, NULL));
    TU_CHECK(atomic_load(&st->u_drops) == 1);
    TR_END(st);
}

static const tr_task_spec reuse_root_spec = {
    .name = "reuse_root", .poll = reuse_root_poll, .size = sizeof(reuse_root)};

static void
stale_key_across_runtimes(bool trim)
{
    // Start from an empty cache, so that the first runtime's one chunk is
    // the one (or has the id that) the second runtime gets next.
    tr_trim();
    tr_waker old_waker;
    tr_task_id old_id;
    tr_rt *a = tu_rt_new_fifo(); // FIFO order
    assert_int_equal(tr_rt_run(a, &capture_root_spec, NULL,
                               &(capture_root){.waker = &old_waker, .id = &old_id}, NULL),
                     TR_OK);
    tu_rt_free_clean(a);
    if (trim) {
        tr_trim();
    }
    // Waking or cancelling into a runtime that is gone is a no-op.
    tr_wake(old_waker);

    tr_rt *b = tu_rt_new_fifo();
    // Two steps: the root's own slot (from tr_task_new) names its id.
    reuse_root *r = tu_task_new(b, &reuse_root_spec);
    r->old_waker = old_waker;
    r->old_id = old_id;
    tr_task_id root_id = {(uint64_t)tr__slot_index(tr__state_slot(r)) |
                          (uint64_t)tr__w_gen(atomic_load(&tr__state_slot(r)->s_word)) << 32};
    tr_outcome out;
    tr_err rv = tr_rt_block_on(b, r, &out);
    uint64_t live = tu_live(b);
    tr_rt_free(b);
    if (root_id.id == old_id.id) {
        atomic_store(&tu_fail_count, 0);
        fail_msg("the root of a new runtime got the very key of the root of a freed "
                 "runtime (id %016llx)%s; block_on returned %s, root outcome %s",
                 (unsigned long long)old_id.id, trim ? " after tr_trim()" : "", tr_err_name(rv),
                 tr_err_name(out.err));
    }
    assert_int_equal(rv, TR_OK);
    assert_int_equal(live, 0);
    tu_checks_pass();
}

static void
test_pool_stale_key_after_runtime_freed(void **state)
{
    (void)state;
    stale_key_across_runtimes(false);
}

static void
test_pool_stale_key_after_trim(void **state)
{
    (void)state;
    stale_key_across_runtimes(true);
}

// ---------------------------------------------------------------------------
// Size classes.

// A task whose poll checks that every byte of its state still holds the
// pattern the spawner wrote, whatever the size. It finds its size through
// the slot's spec (white-box).
static uint8_t
pattern(size_t size, size_t i)
{
    return (uint8_t)((i * 131 + size) & 0xff);
}

static tr_poll
sized_poll(void *arg, tr_cx *cx)
{
    const tr_task_spec *spec = atomic_load(&tr__state_slot(arg)->s_spec);
    const uint8_t *b = arg;
    uint64_t bad = 0;
    for (size_t i = 0; i < spec->size; i++) {
        bad += b[i] != pattern(spec->size, i);
    }
    tr_cx_set_result_u64(cx, bad);
    return TR_READY;
}

#define SIZED_SPEC(n)                                    \
    {                                                    \
        .name = "sized", .poll = sized_poll, .size = (n) \
    }

static const tr_task_spec sized_specs[] = {
    SIZED_SPEC(1),    SIZED_SPEC(64),    SIZED_SPEC(65),   SIZED_SPEC(1000),
    SIZED_SPEC(4000), SIZED_SPEC(60000), SIZED_SPEC(4033), SIZED_SPEC(TR_TASK_MAX_STATE),
};
#define NSIZED (sizeof(sized_specs) / sizeof(sized_specs[0]))

// A root joins every sized task and sums the bytes that lost their pattern.
typedef struct sized_root {
    int tr_pc;
    size_t k;
    tr_join *joins;
    tr_outcome out;
    uint64_t bad;
} sized_root;

static tr_poll
sized_root_poll(void *arg, tr_cx *cx)
{
    sized_root *st = arg;
    TR_BEGIN(st);
    for (st->k = 0; st->k < NSIZED; st->k++) {
        TR_AWAIT(st, tr_join_poll(&st->joins[st->k], cx, &st->out));
        TU_CHECK(st->out.err == TR_OK);
        st->bad += st->out.value.u64;
    }
    tr_cx_set_result_u64(cx, st->bad);
    TR_END(st);
}

static const tr_task_spec sized_root_spec = {
    .name = "sized_root", .poll = sized_root_poll, .size = sizeof(sized_root)};

static void
test_pool_size_classes(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_join joins[NSIZED];
    for (int round = 0; round < 2; round++) { // the second round reuses slots
        for (size_t k = 0; k < NSIZED; k++) {
            const tr_task_spec *spec = &sized_specs[k];
            uint8_t *st = tu_task_new(rt, spec);
            tr__chunk *c = tr__slot_chunk(tr__state_slot(st));
            assert_true(c->c_slot_size >= TR__SLOT_HDR + spec->size);
            for (size_t i = 0; i < spec->size; i++) {
                assert_int_equal(st[i], 0); // zeroed, even when reused
                st[i] = pattern(spec->size, i);
            }
            tr_task_start(st, &joins[k]);
        }
        tr_outcome out;
        assert_int_equal(tr_rt_run(rt, &sized_root_spec, NULL, &(sized_root){.joins = joins}, &out),
                         TR_OK);
        tu_checks_pass();
        assert_int_equal(out.value.u64, 0);
        assert_int_equal(tu_live(rt), 0);
    }
    // Too big for any slot.
    static const tr_task_spec too_big = SIZED_SPEC(TR_TASK_MAX_STATE + 1);
    void *st = NULL;
    assert_int_equal(tr_task_new(rt, &too_big, &st), TR_EINVAL);
    tr__slot *s = NULL;
    assert_int_equal(tr__pool_alloc(&rt->r_pool, rt->r_nworkers, TR_TASK_MAX_STATE + 1, &s),
                     TR_EINVAL);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// The max_tasks limit.

static tr_rt *
limited_rt(uint64_t max_tasks)
{
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.max_tasks = max_tasks;
    return tu_rt_new_cfg(&cfg);
}

// Prepared tasks from one thread: the 101st live one is refused, and a free
// makes room again.
static void
test_pool_exhaustion_from_one_thread(void **state)
{
    (void)state;
    tr_rt *rt = limited_rt(100);
    void *tasks[100];
    for (int i = 0; i < 100; i++) {
        assert_int_equal(tr_task_new(rt, &tu_value_spec, &tasks[i]), TR_OK);
    }
    void *extra = NULL;
    assert_int_equal(tr_task_new(rt, &tu_value_spec, &extra), TR_EEXHAUSTED);
    assert_int_equal(tu_live(rt), 100);
    tr_task_discard(tasks[42]);
    assert_int_equal(tr_task_new(rt, &tu_value_spec, &tasks[42]), TR_OK);
    assert_int_equal(tr_task_new(rt, &tu_value_spec, &extra), TR_EEXHAUSTED);
    for (int i = 0; i < 100; i++) {
        tr_task_discard(tasks[i]);
    }
    assert_int_equal(tu_live(rt), 0);
    // After freeing, a full set of new tasks succeeds again.
    for (int i = 0; i < 100; i++) {
        assert_int_equal(tr_task_new(rt, &tu_value_spec, &tasks[i]), TR_OK);
    }
    for (int i = 0; i < 100; i++) {
        tr_task_discard(tasks[i]);
    }
    tu_rt_free_clean(rt);
}

// The usual shape: main prepares the root, the root spawns children. With
// max_tasks = 100 the root plus 99 children are 100 live tasks; the next
// spawn is refused; once they are done, 99 new children fit again.
typedef struct limit_result {
    unsigned ok[2];    // children spawned before the refusal, per round
    tr_err refused[2]; // what the refused spawn returned
    uint64_t live_at_refusal[2];
} limit_result;

typedef struct limit_root {
    int tr_pc;
    unsigned round;
    unsigned i;
    limit_result *res;
    tr_join joins[128];
    tr_outcome out;
} limit_root;

static tr_poll
limit_root_poll(void *arg, tr_cx *cx)
{
    limit_root *st = arg;
    void *p = NULL;
    tr_err e;
    TR_BEGIN(st);
    for (st->round = 0; st->round < 2; st->round++) {
        st->res->refused[st->round] = TR_OK;
        for (st->i = 0; st->i < 128; st->i++) {
            e = tr_task_new(tr_cx_rt(cx), &tu_value_spec, &p);
            if (e != TR_OK) {
                st->res->refused[st->round] = e;
                st->res->live_at_refusal[st->round] = tu_live(tr_cx_rt(cx));
                break;
            }
            ((tu_value_task *)p)->value = st->i;
            tr_task_start(p, &st->joins[st->i]);
        }
        st->res->ok[st->round] = st->i;
        for (st->i = 0; st->i < st->res->ok[st->round]; st->i++) {
            TR_AWAIT(st, tr_join_poll(&st->joins[st->i], cx, &st->out));
        }
    }
    TR_END(st);
}

static const tr_task_spec limit_root_spec = {
    .name = "limit_root", .poll = limit_root_poll, .size = sizeof(limit_root)};

static void
test_pool_exhaustion_counts_live_tasks(void **state)
{
    (void)state;
    tr_rt *rt = limited_rt(100);
    limit_result res;
    memset(&res, 0, sizeof res);
    assert_int_equal(tr_rt_run(rt, &limit_root_spec, NULL, &(limit_root){.res = &res}, NULL),
                     TR_OK);
    uint64_t live = tu_live(rt);
    tr_rt_free(rt);
    tu_checks_pass();
    assert_int_equal(live, 0);
    for (int r = 0; r < 2; r++) {
        // 99 children + the root = 100 live tasks; the 101st is refused.
        if (res.refused[r] != TR_EEXHAUSTED || res.live_at_refusal[r] != 100 || res.ok[r] != 99) {
            fail_msg("round %d: max_tasks=100, the root spawned %u children, then got %s "
                     "with %llu live task(s); expected 99 children and TR_EEXHAUSTED at 100",
                     r, res.ok[r], tr_err_name(res.refused[r]),
                     (unsigned long long)res.live_at_refusal[r]);
        }
    }
}

// Slots freed by tasks of one size serve tasks of another size: the limit
// counts live tasks, not slots carved for one size class.
static const tr_task_spec big_spec = {.name = "big", .poll = tu_stuck_poll, .size = 1000};

static void
test_pool_exhaustion_frees_serve_other_sizes(void **state)
{
    (void)state;
    tr_rt *rt = limited_rt(100);
    void *tasks[100];
    for (int i = 0; i < 100; i++) {
        assert_int_equal(tr_task_new(rt, &tu_value_spec, &tasks[i]), TR_OK);
    }
    for (int i = 0; i < 100; i++) {
        tr_task_discard(tasks[i]);
    }
    assert_int_equal(tu_live(rt), 0);
    int ok = 0;
    tr_err e = TR_OK;
    for (int i = 0; i < 100; i++) {
        e = tr_task_new(rt, &big_spec, &tasks[i]);
        if (e != TR_OK) {
            break;
        }
        ok++;
    }
    for (int i = 0; i < ok; i++) {
        tr_task_discard(tasks[i]);
    }
    uint64_t live = tu_live(rt);
    tr_rt_free(rt);
    assert_int_equal(live, 0);
    if (ok != 100) {
        fail_msg("with 0 live tasks and max_tasks=100, only %d tasks of another size "
                 "could be created (%s)",
                 ok, tr_err_name(e));
    }
}

// ---------------------------------------------------------------------------
// Concurrent allocation and remote frees, on a pool with several shards.
//
// Each of NTHR threads owns shard t. Every round it frees the batch its
// neighbour allocated in the previous round (remote frees into the
// neighbour's shard, concurrent with the neighbour allocating from it),
// then allocates a new batch and stamps it. A slot handed out twice, or
// freed into the wrong list, breaks a stamp or the live count.

#define NTHR 4
#define BATCH 32
#define ROUNDS 6000

typedef struct stamp {
    uint64_t owner; // 1 << 63 | thread << 48 | round << 16 | i (never 0)
    uint64_t size;
} stamp;

static uint64_t
stamp_of(unsigned t, unsigned r, unsigned i)
{
    return (uint64_t)1 << 63 | (uint64_t)t << 48 | (uint64_t)r << 16 | i;
}

typedef struct pool_stress {
    tr__pool pool;
    pthread_barrier_t bar;
    // mail[t][parity]: the batch thread t frees in the next round.
    tr__slot *mail[NTHR][2][BATCH];
    atomic_int errors;
} pool_stress;

typedef struct stress_arg {
    pool_stress *ps;
    unsigned t;
} stress_arg;

// At least 24 bytes: the stamp (16) plus a tail byte of its own.
static const size_t stress_sizes[] = {24, 100, 500, 3000, 9000};

static void *
pool_stress_thread(void *arg)
{
    stress_arg *a = arg;
    pool_stress *ps = a->ps;
    unsigned t = a->t, next = (a->t + 1) % NTHR;
    for (unsigned r = 0; r < ROUNDS; r++) {
        if (r > 0) {
            for (unsigned i = 0; i < BATCH; i++) {
                tr__slot *s = ps->mail[t][(r - 1) & 1][i];
                stamp *st = tr__slot_state(s);
                uint64_t want = stamp_of((t + NTHR - 1) % NTHR, r - 1, i);
                uint64_t w = atomic_load(&s->s_word);
                if (st->owner != want || !(w & TR__W_LIVE) || st->size < 24 || st->size > 9000 ||
                    ((uint8_t *)st)[st->size - 1] != (uint8_t)want) {
                    atomic_fetch_add(&ps->errors, 1);
                }
                // Every third batch frees as a thread that owns no shard.
                unsigned shard = (r % 3 == 0) ? ps->pool.p_nshards : t;
                tr__pool_free(&ps->pool, shard, s);
            }
        }
        for (unsigned i = 0; i < BATCH; i++) {
            size_t size = stress_sizes[(r + i) % (sizeof stress_sizes / sizeof stress_sizes[0])];
            tr__slot *s = NULL;
            if (tr__pool_alloc(&ps->pool, t, size, &s) != TR_OK) {
                atomic_fetch_add(&ps->errors, 1);
                return NULL; // the barrier would hang: stop the test hard
            }
            uint64_t w = atomic_load(&s->s_word);
            if (!(w & TR__W_LIVE) || tr__w_refs(w) != 1) {
                atomic_fetch_add(&ps->errors, 1);
            }
            stamp *st = tr__slot_state(s);
            st->owner = stamp_of(t, r, i);
            st->size = size;
            ((uint8_t *)st)[size - 1] = (uint8_t)st->owner;
            ps->mail[next][r & 1][i] = s;
        }
        pthread_barrier_wait(&ps->bar);
    }
    return NULL;
}

static void
test_pool_concurrent_alloc_remote_free(void **state)
{
    (void)state;
    pool_stress *ps = calloc(1, sizeof *ps);
    assert_non_null(ps);
    assert_int_equal(tr__pool_init(&ps->pool, NTHR, 1u << 20), TR_OK);
    pthread_barrier_init(&ps->bar, NULL, NTHR);
    pthread_t thr[NTHR];
    stress_arg args[NTHR];
    for (unsigned t = 0; t < NTHR; t++) {
        args[t] = (stress_arg){ps, t};
        tu_thread_start(&thr[t], pool_stress_thread, &args[t]);
    }
    for (unsigned t = 0; t < NTHR; t++) {
        tu_thread_join(thr[t]);
    }
    assert_int_equal(atomic_load(&ps->errors), 0);
    // The last round's batches are still out.
    assert_int_equal(tr__pool_live(&ps->pool), NTHR * BATCH);
    for (unsigned t = 0; t < NTHR; t++) {
        for (unsigned i = 0; i < BATCH; i++) {
            tr__pool_free(&ps->pool, t, ps->mail[t][(ROUNDS - 1) & 1][i]);
        }
    }
    assert_int_equal(tr__pool_live(&ps->pool), 0);
    // Freed slots were reused: far fewer slots carved than allocations.
    uint64_t slots, bytes;
    tr__pool_usage(&ps->pool, &slots, &bytes);
    assert_true(slots <= (uint64_t)NTHR * 3 * BATCH * 5);
    pthread_barrier_destroy(&ps->bar);
    tr__pool_fini(&ps->pool);
    free(ps);
}

// The runtime flavour: the root (worker 0's shard) spawns tasks and hands
// their join handles to plain threads, which detach them (tr_join_release)
// or join them (tr_join_wait). Slots are then freed by the worker or by the
// plain threads (remote frees into shard 0), while the root keeps
// allocating from that shard.

#define RF_THREADS 2
#define RF_BATCH 64
#define RF_BATCHES 400
#define RF_TOTAL (RF_BATCH * RF_BATCHES)
#define RF_WINDOW 4 // batches handed out but not yet handled

typedef struct remote_free {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t produced; // handles published, under mu
    size_t next;     // next handle to take, under mu
    tr_join *joins;  // RF_TOTAL
    atomic_size_t handled;
    atomic_int bad;
    tu_event all_done;
} remote_free;

static void *
remote_free_thread(void *arg)
{
    remote_free *rf = arg;
    for (;;) {
        pthread_mutex_lock(&rf->mu);
        struct timespec until = tu_abstime(TU_WAIT_MS);
        int rc = 0;
        while (rf->next == rf->produced && rf->next < RF_TOTAL && rc != ETIMEDOUT) {
            rc = pthread_cond_timedwait(&rf->cv, &rf->mu, &until);
        }
        if (rf->next >= RF_TOTAL || rf->next == rf->produced) {
            if (rf->next < RF_TOTAL) {
                atomic_fetch_add(&rf->bad, 1); // timed out
            }
            pthread_mutex_unlock(&rf->mu);
            break;
        }
        size_t i = rf->next++;
        tr_join j = rf->joins[i];
        pthread_mutex_unlock(&rf->mu);
        if (i % 2 == 0) {
            tr_join_release(&j);
        } else {
            tr_outcome out;
            if (tr_join_wait(&j, &out) != TR_OK || out.err != TR_OK || out.value.u64 != i) {
                atomic_fetch_add(&rf->bad, 1);
            }
        }
        if (atomic_fetch_add(&rf->handled, 1) + 1 == RF_TOTAL) {
            tu_event_set(&rf->all_done);
        }
    }
    return NULL;
}

typedef struct rf_root {
    int tr_pc;
    remote_free *rf;
    size_t b;
    size_t i;
    uint64_t tu_deadline;
} rf_root;

static tr_poll
rf_root_poll(void *arg, tr_cx *cx)
{
    rf_root *st = arg;
    remote_free *rf = st->rf;
    void *p = NULL;
    TR_BEGIN(st);
    for (st->b = 0; st->b < RF_BATCHES; st->b++) {
        for (st->i = st->b * RF_BATCH; st->i < (st->b + 1) * RF_BATCH; st->i++) {
            if (tr_task_new(tr_cx_rt(cx), &tu_value_spec, &p) != TR_OK) {
                TU_CHECK(!"tr_task_new failed");
                TR_RETURN(st);
            }
            ((tu_value_task *)p)->value = st->i;
            ((tu_value_task *)p)->yields = (uint32_t)(st->i % 3);
            tr_task_start(p, &rf->joins[st->i]);
        }
        pthread_mutex_lock(&rf->mu);
        rf->produced = (st->b + 1) * RF_BATCH;
        pthread_cond_broadcast(&rf->cv);
        pthread_mutex_unlock(&rf->mu);
        TR_YIELD(st, cx);
        // Keep at most RF_WINDOW batches in the threads' hands, so that the
        // slots they free are what the next batches reuse, however slow the
        // threads are. (Yielding lets the tasks they wait for run.) An
        // expiry records that the threads stopped handling join handles.
        TU_YIELD_UNTIL(st, cx,
                       atomic_load(&rf->handled) + RF_WINDOW * RF_BATCH >= (st->b + 1) * RF_BATCH);
        if (atomic_load(&rf->handled) + RF_WINDOW * RF_BATCH < (st->b + 1) * RF_BATCH) {
            TR_RETURN(st);
        }
    }
    TR_AWAIT(st, tu_event_poll(&rf->all_done, cx));
    TR_END(st);
}

static const tr_task_spec rf_root_spec = {
    .name = "rf_root", .poll = rf_root_poll, .size = sizeof(rf_root)};

static void
test_pool_remote_free_from_threads(void **state)
{
    (void)state;
    remote_free *rf = calloc(1, sizeof *rf);
    assert_non_null(rf);
    rf->joins = calloc(RF_TOTAL, sizeof(tr_join));
    assert_non_null(rf->joins);
    pthread_mutex_init(&rf->mu, NULL);
    tu_cond_init(&rf->cv);
    tu_event_init(&rf->all_done);
    tr_rt *rt = tu_rt_new();
    pthread_t thr[RF_THREADS];
    for (int t = 0; t < RF_THREADS; t++) {
        tu_thread_start(&thr[t], remote_free_thread, rf);
    }
    tu_watchdog wd;
    tu_watchdog_start(&wd, rt, 3 * TU_WAIT_MS);
    tr_err rv = tr_rt_run(rt, &rf_root_spec, NULL, &(rf_root){.rf = rf}, NULL);
    tu_watchdog_stop(&wd);
    assert_int_equal(rv, TR_OK);
    for (int t = 0; t < RF_THREADS; t++) {
        tu_thread_join(thr[t]);
    }
    tu_checks_pass();
    assert_int_equal(atomic_load(&rf->bad), 0);
    assert_int_equal(atomic_load(&rf->handled), RF_TOTAL);
    // The root ends once every handle is handled, but a released handle's
    // task may not have finished yet (the deterministic mode picks the
    // root before it now and then), and a worker counts a task completed
    // only after its join completed: let them all finish, and the workers
    // stop, before reading the counters.
    tu_rt_quiesce(rt, TU_WAIT_MS);
    tr_rt_stats st = tu_stats(rt);
    assert_int_equal(st.spawned, RF_TOTAL + 1); // + the root
    assert_int_equal(st.completed, RF_TOTAL + 1);
    assert_int_equal(st.live_tasks, 0);
    // Remote frees came back to shard 0 and were reused: the pool never
    // needed much more than the window of outstanding tasks.
    assert_true(st.pool_slots <= 2 * (RF_WINDOW + 2) * RF_BATCH);
    tu_rt_free_clean(rt);
    tu_event_destroy(&rf->all_done);
    pthread_cond_destroy(&rf->cv);
    pthread_mutex_destroy(&rf->mu);
    free(rf->joins);
    free(rf);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_slot_header_is_64_bytes),
        cmocka_unit_test(test_pool_freed_slot_reused_with_bumped_generation),
        cmocka_unit_test(test_pool_generation_checks),
        cmocka_unit_test(test_pool_task_slot_reused_with_bumped_generation),
        cmocka_unit_test(test_pool_stale_keys_are_detected),
        cmocka_unit_test(test_pool_stale_key_after_runtime_freed),
        cmocka_unit_test(test_pool_stale_key_after_trim),
        cmocka_unit_test(test_pool_size_classes),
        cmocka_unit_test(test_pool_exhaustion_from_one_thread),
        cmocka_unit_test(test_pool_exhaustion_counts_live_tasks),
        cmocka_unit_test(test_pool_exhaustion_frees_serve_other_sizes),
        cmocka_unit_test(test_pool_concurrent_alloc_remote_free),
        cmocka_unit_test(test_pool_remote_free_from_threads),
    };
    return tu_run(tests);
}
