// Design notes.
//
// Hybrid (prioritized stealing): the stealable ring is the cold queue; a
// private binary heap ordered by sleep count (how many times the task had
// to wait for something) is the hot queue. When the hot queue is empty the
// whole cold ring moves into it, so tasks that lost the race for a resource
// many times are served first among what is runnable.
#include <stdlib.h>
#include <string.h>

#include "exec/exec.h"
#include "sched/sched.h"

// A hot-queue entry: a binary max-heap on sleep count.
#define HEAP_CAP (2 * TR__RING_CAP)
typedef struct heap_ent {
    uint32_t h_prio; // sleep count when inserted
    uint32_t h_seq;  // insertion order: FIFO among equals
    tr__slot *h_slot;
} heap_ent;

typedef struct hy_state {
    tr__steal_q q;  // first: the cold ring, stealable
    heap_ent *heap; // the hot queue (owner)
    uint32_t heap_len;
    uint32_t heap_cap;
    uint32_t heap_seq;
    _Atomic uint32_t hot_len; // heap_len, for len() from other threads
} hy_state;

static bool
heap_before(const heap_ent *a, const heap_ent *b)
{
    // Higher sleep count first; among equals, older first.
    if (a->h_prio != b->h_prio) {
        return a->h_prio > b->h_prio;
    }
    return (int32_t)(a->h_seq - b->h_seq) < 0;
}

static void
heap_grow(hy_state *st)
{
    uint32_t cap = st->heap_cap ? 2 * st->heap_cap : HEAP_CAP;
    heap_ent *h = tr__alloc(sizeof(*h) * cap);
    if (st->heap_len > 0) {
        memcpy(h, st->heap, sizeof(*h) * st->heap_len);
    }
    if (st->heap != NULL) {
        tr__free(st->heap, sizeof(*h) * st->heap_cap);
    }
    st->heap = h;
    st->heap_cap = cap;
}

static void
heap_insert(hy_state *st, tr__slot *s)
{
    if (st->heap_len == st->heap_cap) {
        heap_grow(st);
    }
    heap_ent e = {
        .h_prio = tr__slot_sleeps(s),
        .h_seq = st->heap_seq++,
        .h_slot = s,
    };
    uint32_t i = st->heap_len++;
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!heap_before(&e, &st->heap[parent])) {
            break;
        }
        st->heap[i] = st->heap[parent];
        i = parent;
    }
    st->heap[i] = e;
}

static tr__slot *
heap_pop(hy_state *st)
{
    if (st->heap_len == 0) {
        return NULL;
    }
    tr__slot *top = st->heap[0].h_slot;
    heap_ent last = st->heap[--st->heap_len];
    uint32_t i = 0, n = st->heap_len;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n) {
            break;
        }
        if (c + 1 < n && heap_before(&st->heap[c + 1], &st->heap[c])) {
            c++;
        }
        if (!heap_before(&st->heap[c], &last)) {
            break;
        }
        st->heap[i] = st->heap[c];
        i = c;
    }
    if (n > 0) {
        st->heap[i] = last;
    }
    return top;
}

static void
hy_init(tr__worker *w)
{
    hy_state *st = tr__worker_sched(w);
    tr__steal_q_init(w, &st->q);
    heap_grow(st);
}

static void
hy_fini(tr__worker *w)
{
    hy_state *st = tr__worker_sched(w);
    if (st->heap != NULL) {
        tr__free(st->heap, sizeof(*st->heap) * st->heap_cap);
        st->heap = NULL;
    }
}

static void
hy_push(tr__worker *w, tr__slot *s, int how)
{
    (void)how;
    tr__steal_q_push(w, &((hy_state *)tr__worker_sched(w))->q, s);
}

static tr__slot *
hy_pop(tr__worker *w)
{
    hy_state *st = tr__worker_sched(w);
    if (st->heap_len == 0) {
        // Refill the hot queue with everything cold, ordered by sleeps.
        tr__slot *s;
        while ((s = tr__ring_pop(&st->q.sq_ring)) != NULL) {
            heap_insert(st, s);
        }
    }
    tr__slot *s = heap_pop(st);
    atomic_store_explicit(&st->hot_len, st->heap_len, memory_order_relaxed);
    return s;
}

static uint32_t
hy_len(tr__worker *w)
{
    hy_state *st = tr__worker_sched(w);
    return tr__ring_len(&st->q.sq_ring) + atomic_load_explicit(&st->hot_len, memory_order_relaxed);
}

const tr__sched_ops tr__sched_hybrid = {
    .name = "hybrid",
    .state_size = sizeof(hy_state),
    .init = hy_init,
    .fini = hy_fini,
    .push = hy_push,
    .push_remote = tr__sched_push_inject,
    .pop = hy_pop,
    .steal = tr__steal_q_steal,
    .stealable = tr__steal_q_stealable,
    .len = hy_len,
    .room = tr__steal_q_room,
};
