// test_sup.c: supervisors (troupe/actor.h): the three strategies, restart
// kinds, restart intensity, names that follow the current incarnation, and
// a supervisor's own stop.
#include "actors/actor_util.h"

// Starts of each child, counted in its init, and a condition to wait on.
#define NKIDS 4

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond;
static unsigned g_starts[NKIDS];
static unsigned g_stops[NKIDS];

static void
counts_reset(void)
{
    pthread_mutex_lock(&g_lock);
    memset(g_starts, 0, sizeof g_starts);
    memset(g_stops, 0, sizeof g_stops);
    pthread_mutex_unlock(&g_lock);
}

// wait_count waits until counts[i] >= n (at most TU_WAIT_MS).
static bool
wait_count(unsigned *counts, int i, unsigned n)
{
    struct timespec dl = tu_abstime(TU_WAIT_MS);
    pthread_mutex_lock(&g_lock);
    while (counts[i] < n) {
        if (pthread_cond_timedwait(&g_cond, &g_lock, &dl) != 0) {
            break;
        }
    }
    bool ok = counts[i] >= n;
    pthread_mutex_unlock(&g_lock);
    return ok;
}

static unsigned
count_of(unsigned *counts, int i)
{
    pthread_mutex_lock(&g_lock);
    unsigned n = counts[i];
    pthread_mutex_unlock(&g_lock);
    return n;
}

typedef struct kid {
    int idx;
} kid;

static tr_err
kid_init(tr_actor *self, void *state, void *arg)
{
    (void)self;
    kid *k = state;
    k->idx = (int)(intptr_t)arg;
    pthread_mutex_lock(&g_lock);
    g_starts[k->idx]++;
    pthread_cond_broadcast(&g_cond);
    pthread_mutex_unlock(&g_lock);
    return TR_OK;
}

static void
kid_receive(tr_actor *self, void *state, tr_msg *m)
{
    (void)state;
    const Troupe__V1__Address *n = num_of(m);
    if (n != NULL && n->node == 99) {
        tr_actor_stop(self, (tr_err)n->actor, "told to");
    }
}

static void
kid_stopped(tr_actor *self, void *state, tr_err reason)
{
    (void)self;
    (void)reason;
    pthread_mutex_lock(&g_lock);
    g_stops[((kid *)state)->idx]++;
    pthread_cond_broadcast(&g_cond);
    pthread_mutex_unlock(&g_lock);
}

static const tr_actor_spec kid_spec = {.name = "kid",
                                       .size = sizeof(kid),
                                       .init = kid_init,
                                       .receive = kid_receive,
                                       .stopped = kid_stopped};

static const char *const ids[NKIDS] = {"a", "b", "c", "d"};

static tr_actor_addr
start_sup(tr_rt *rt, tr_sup_strategy strat, uint32_t intensity, const tr_sup_restart *kinds,
          size_t n)
{
    tr_sup_child kids[NKIDS];
    for (size_t i = 0; i < n; i++) {
        kids[i] = (tr_sup_child){ids[i], &kid_spec, (void *)(intptr_t)i, kinds[i], NULL};
    }
    tr_sup_spec spec = {strat, intensity, 10000, kids, n};
    tr_actor_addr sup;
    assert_int_equal(tr_sup_start(rt, &spec, NULL, &sup), TR_OK);
    return sup;
}

static tr_actor_addr
which(tr_actor_addr sup, int i)
{
    tr_actor_addr a = TR_ACTOR_NONE;
    assert_int_equal(tr_sup_which(sup, ids[i], &a), TR_OK);
    return a;
}

// which_new waits (a child's init runs before its supervisor records the
// new address) until child i has an address other than prev, and returns it.
static tr_actor_addr
which_new(tr_actor_addr sup, int i, tr_actor_addr prev)
{
    tr_actor_addr a = TR_ACTOR_NONE;
    assert_true(TU_SPIN_UNTIL(tr_sup_which(sup, ids[i], &a) == TR_OK && !tr_actor_addr_eq(a, prev),
                              TU_WAIT_MS));
    return a;
}

static void
kill_kid(tr_actor_addr a, tr_err why)
{
    tr_msg *m = num_msg(99, (uint64_t)why);
    assert_int_equal(tr_actor_send(NULL, a, m), TR_OK);
}

static const tr_sup_restart permanent[NKIDS] = {TR_RESTART_PERMANENT, TR_RESTART_PERMANENT,
                                                TR_RESTART_PERMANENT, TR_RESTART_PERMANENT};

static void
test_sup_one_for_one(void **state)
{
    (void)state;
    counts_reset();
    bg b;
    bg_start(&b, 2);
    tr_actor_addr sup = start_sup(b.rt, TR_SUP_ONE_FOR_ONE, 5, permanent, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(count_of(g_starts, i), 1); // started in order, in tr_sup_start
    }
    tr_actor_addr a0 = which(sup, 0), b0 = which(sup, 1), c0 = which(sup, 2);
    kill_kid(b0, TR_EIO);
    assert_true(wait_count(g_starts, 1, 2));
    assert_true(TU_SPIN_UNTIL(tr_sup_restarts(sup) == 1, TU_WAIT_MS));
    tr_actor_addr b1 = which_new(sup, 1, b0);
    assert_false(tr_actor_addr_eq(b0, b1));
    assert_true(tr_actor_alive(b1));
    assert_true(tr_actor_addr_eq(which(sup, 0), a0));
    assert_true(tr_actor_addr_eq(which(sup, 2), c0));
    assert_int_equal(count_of(g_starts, 0), 1);
    assert_int_equal(count_of(g_starts, 2), 1);
    assert_int_equal(tr_sup_which(sup, "nope", NULL), TR_ENOTFOUND);
    // Stopping the supervisor stops its children.
    assert_int_equal(tr_actor_stop_other(sup, TR_OK, NULL), TR_OK);
    for (int i = 0; i < 3; i++) {
        assert_true(wait_count(g_stops, i, i == 1 ? 2 : 1));
    }
    bg_stop(&b);
}

static void
test_sup_one_for_all(void **state)
{
    (void)state;
    counts_reset();
    bg b;
    bg_start(&b, 2);
    tr_actor_addr sup = start_sup(b.rt, TR_SUP_ONE_FOR_ALL, 5, permanent, 3);
    tr_actor_addr a0 = which(sup, 0), c0 = which(sup, 2);
    kill_kid(which(sup, 1), TR_EIO);
    for (int i = 0; i < 3; i++) {
        assert_true(wait_count(g_starts, i, 2));
        assert_true(wait_count(g_stops, i, 1));
    }
    which_new(sup, 0, a0);
    which_new(sup, 2, c0);
    assert_true(TU_SPIN_UNTIL(!tr_actor_alive(a0) && !tr_actor_alive(c0), TU_WAIT_MS));
    bg_stop(&b);
}

static void
test_sup_rest_for_one(void **state)
{
    (void)state;
    counts_reset();
    bg b;
    bg_start(&b, 2);
    tr_actor_addr sup = start_sup(b.rt, TR_SUP_REST_FOR_ONE, 5, permanent, 4);
    tr_actor_addr a0 = which(sup, 0);
    kill_kid(which(sup, 1), TR_EIO);
    for (int i = 1; i < 4; i++) {
        assert_true(wait_count(g_starts, i, 2));
    }
    assert_int_equal(count_of(g_starts, 0), 1);
    assert_true(tr_actor_addr_eq(which(sup, 0), a0));
    assert_true(tr_actor_alive(a0));
    bg_stop(&b);
}

static void
test_sup_restart_kinds(void **state)
{
    (void)state;
    counts_reset();
    bg b;
    bg_start(&b, 2);
    static const tr_sup_restart kinds[3] = {TR_RESTART_TRANSIENT, TR_RESTART_TRANSIENT,
                                            TR_RESTART_TEMPORARY};
    tr_actor_addr sup = start_sup(b.rt, TR_SUP_ONE_FOR_ONE, 5, kinds, 3);
    // A transient child that stops normally stays stopped.
    kill_kid(which(sup, 0), TR_OK);
    assert_true(wait_count(g_stops, 0, 1));
    assert_true(TU_SPIN_UNTIL(tr_sup_which(sup, "a", NULL) == TR_ENOTFOUND, TU_WAIT_MS));
    // One that stops with an error is restarted.
    tr_actor_addr b0 = which(sup, 1);
    kill_kid(b0, TR_EPIPE);
    assert_true(wait_count(g_starts, 1, 2));
    which_new(sup, 1, b0);
    // A temporary one never is.
    kill_kid(which(sup, 2), TR_EIO);
    assert_true(wait_count(g_stops, 2, 1));
    assert_true(TU_SPIN_UNTIL(tr_sup_which(sup, "c", NULL) == TR_ENOTFOUND, TU_WAIT_MS));
    assert_int_equal(count_of(g_starts, 2), 1);
    assert_true(TU_SPIN_UNTIL(tr_sup_restarts(sup) == 1, TU_WAIT_MS));
    bg_stop(&b);
}

// A watcher: records the reason of one Down.
typedef struct watch {
    tu_event ev;
    tr_err reason;
} watch;

static tr_err
watch_init(tr_actor *self, void *state, void *arg)
{
    (void)self;
    *(watch **)state = arg;
    return TR_OK;
}

static void
watch_receive(tr_actor *self, void *state, tr_msg *m)
{
    (void)self;
    watch *w = *(watch **)state;
    if (tr_msg_is(m, &troupe__v1__down__descriptor)) {
        w->reason = tr_msg_reason_err(((Troupe__V1__Down *)tr_msg_body(m))->reason);
        tu_event_set(&w->ev);
    }
}

static const tr_actor_spec watch_spec = {
    .name = "watch", .size = sizeof(watch *), .init = watch_init, .receive = watch_receive};

static void
test_sup_intensity(void **state)
{
    (void)state;
    counts_reset();
    bg b;
    bg_start(&b, 2);
    // Two restarts allowed within 10 s: the third stop ends the supervisor.
    tr_actor_addr sup = start_sup(b.rt, TR_SUP_ONE_FOR_ONE, 2, permanent, 2);
    watch w;
    tu_event_init(&w.ev);
    tr_actor_addr wa;
    assert_int_equal(tr_actor_spawn(b.rt, &watch_spec, &w, NULL, &wa), TR_OK);
    assert_int_equal(tr_actor_monitor(wa, sup, NULL), TR_OK);
    tr_actor_addr cur = which(sup, 0);
    for (unsigned k = 1; k <= 2; k++) {
        kill_kid(cur, TR_EIO);
        assert_true(wait_count(g_starts, 0, k + 1));
        cur = which_new(sup, 0, cur);
    }
    kill_kid(cur, TR_EIO);
    assert_true(tu_event_wait(&w.ev, TU_WAIT_MS));
    assert_int_equal(w.reason, TR_EEXHAUSTED);
    // Every child is stopped with it.
    assert_true(wait_count(g_stops, 0, 3));
    assert_true(wait_count(g_stops, 1, 1));
    assert_int_equal(count_of(g_starts, 0), 3);
    bg_stop(&b);
    tu_event_destroy(&w.ev);
}

static void
test_sup_names_follow_restarts(void **state)
{
    (void)state;
    counts_reset();
    bg b;
    bg_start(&b, 2);
    tr_sup_child kids[1] = {{"svc", &kid_spec, (void *)(intptr_t)0, TR_RESTART_PERMANENT, "svc"}};
    tr_sup_spec spec = {TR_SUP_ONE_FOR_ONE, 3, 10000, kids, 1};
    tr_actor_addr sup;
    assert_int_equal(tr_sup_start(b.rt, &spec, NULL, &sup), TR_OK);
    tr_actor_addr named;
    assert_int_equal(tr_actor_whereis(b.rt, "svc", &named), TR_OK);
    tr_actor_addr cur;
    assert_int_equal(tr_sup_which(sup, "svc", &cur), TR_OK);
    assert_true(tr_actor_addr_eq(named, cur));
    kill_kid(named, TR_EIO);
    assert_true(wait_count(g_starts, 0, 2));
    assert_true(TU_SPIN_UNTIL(tr_sup_restarts(sup) == 1, TU_WAIT_MS));
    tr_actor_addr now;
    assert_int_equal(tr_sup_which(sup, "svc", &now), TR_OK);
    assert_false(tr_actor_addr_eq(now, cur));
    assert_int_equal(tr_actor_whereis(b.rt, "svc", &named), TR_OK);
    assert_true(tr_actor_addr_eq(named, now));
    // Bad specs.
    tr_sup_spec bad = {TR_SUP_ONE_FOR_ONE, 1, 0, kids, 1};
    assert_int_equal(tr_sup_start(b.rt, &bad, NULL, NULL), TR_EINVAL);
    tr_sup_child dup[2] = {kids[0], kids[0]};
    tr_sup_spec bad2 = {TR_SUP_ONE_FOR_ONE, 1, 100, dup, 2};
    assert_int_equal(tr_sup_start(b.rt, &bad2, NULL, NULL), TR_EINVAL);
    bg_stop(&b);
}

int
main(void)
{
    tu_cond_init(&g_cond);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sup_one_for_one),  cmocka_unit_test(test_sup_one_for_all),
        cmocka_unit_test(test_sup_rest_for_one), cmocka_unit_test(test_sup_restart_kinds),
        cmocka_unit_test(test_sup_intensity),    cmocka_unit_test(test_sup_names_follow_restarts),
    };
    return tu_run(tests);
}
