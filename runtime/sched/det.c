// Design notes.
//
// Deterministic (det): one worker; runnable tasks sit in an array and each
// pick is drawn from a generator seeded by the caller, so an interleaving
// found by a test can be replayed from its seed.

#include <stdlib.h>
#include <string.h>

#include "exec/exec.h"
#include "sched/sched.h"

typedef struct det_state {
    tr__slot **set; // the runnable tasks, in no order (owner)
    uint32_t len;
    uint32_t cap;
    uint64_t rng;       // seeded with the configuration's seed
    _Atomic uint32_t n; // len, for len() from other threads
} det_state;

static void
det_grow(det_state *st)
{
    uint32_t cap = st->cap ? 2 * st->cap : 2 * TR__RING_CAP;
    tr__slot **set = tr__alloc(sizeof(*set) * cap);
    if (st->len > 0) {
        memcpy(set, st->set, sizeof(*set) * st->len);
    }
    if (st->set != NULL) {
        tr__free(st->set, sizeof(*set) * st->cap);
    }
    st->set = set;
    st->cap = cap;
}

static void
det_init(tr__worker *w)
{
    det_state *st = tr__worker_sched(w);
    st->rng = tr__rt_config(tr__worker_rt(w))->deterministic_seed;
    det_grow(st);
}

static void
det_fini(tr__worker *w)
{
    det_state *st = tr__worker_sched(w);
    if (st->set != NULL) {
        tr__free(st->set, sizeof(*st->set) * st->cap);
        st->set = NULL;
    }
}

static void
det_push(tr__worker *w, tr__slot *s, int how)
{
    (void)how;
    det_state *st = tr__worker_sched(w);
    if (st->len == st->cap) {
        det_grow(st);
    }
    st->set[st->len++] = s;
    atomic_store_explicit(&st->n, st->len, memory_order_relaxed);
}

static tr__slot *
det_pop(tr__worker *w)
{
    det_state *st = tr__worker_sched(w);
    if (st->len == 0) {
        return NULL;
    }
    uint32_t i = (uint32_t)(tr__rng_next(&st->rng) % st->len);
    tr__slot *s = st->set[i];
    st->set[i] = st->set[--st->len];
    atomic_store_explicit(&st->n, st->len, memory_order_relaxed);
    return s;
}

static uint32_t
det_len(tr__worker *w)
{
    return atomic_load_explicit(&((det_state *)tr__worker_sched(w))->n, memory_order_relaxed);
}

const tr__sched_ops tr__sched_det = {
    .name = "det",
    .state_size = sizeof(det_state),
    .init = det_init,
    .fini = det_fini,
    .push = det_push,
    .push_remote = tr__sched_push_inject,
    .pop = det_pop,
    .steal = NULL,
    .stealable = NULL,
    .len = det_len,
    .room = tr__sched_unbounded,
};
