// Design notes.
//
// Four run-queue policies behind one ops table (exec.h). The worker loop in
// exec.c calls them; they never park, count or look at shutdown.
//
// Work stealing (ws), as tokio: each worker owns a 256-entry ring that
// thieves steal half of in one batch (ring.c), and a one-task LIFO slot for
// the task the running task just woke, so a producer and its consumer run
// back to back while the data is in cache. New tasks go to the ring (tokio
// puts them in the LIFO slot too; here that made a spawning worker's fresh
// tasks displace each other into the ring one by one, and spawn_join on
// two workers ran at 7.3 M tasks/s against 8.6 M, back to back). The LIFO slot is not
// stealable, so filling it wakes nobody; the task it displaces goes to the
// ring, which may wake a thief. It runs at most three times in a row, then
// its task goes to the ring so the queue behind it is not starved. A full
// ring moves half of itself to the global injector.
//
// Round robin (rr): new tasks are dealt to workers in turn; a woken task
// returns to the worker that last polled it (kept in the task's word). Each
// worker has a private FIFO and a locked inbound FIFO for tasks other
// threads give it. No stealing: placement is the policy.
//
// Hybrid (prioritized stealing): the stealable ring is the cold queue; a
// private binary heap ordered by sleep count (how many times the task had
// to wait for something) is the hot queue. When the hot queue is empty the
// whole cold ring moves into it, so tasks that lost the race for a resource
// many times are served first among what is runnable.
//
// Deterministic (det): one worker; runnable tasks sit in an array and each
// pick is drawn from a generator seeded by the caller, so an interleaving
// found by a test can be replayed from its seed.
#include <stdlib.h>
#include <string.h>

#include "exec.h"

uint64_t
tr__rng_next(uint64_t *state)
{
    // xorshift64*: small, fast, and good enough to pick victims and orders.
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

// ring_push puts s on w's ring, overflowing to the injector, and tells the
// idle workers there is something to steal.
static void
ring_push(tr__worker *w, tr__slot *s)
{
    tr__slot *batch[TR__RING_CAP / 2 + 1];
    uint32_t n;
    if (!tr__ring_push(&w->w_ring, s, batch, &n)) {
        tr__inject_push(w->w_rt, batch, n);
        return; // tr__inject_push notified
    }
    tr__notify_parked(w->w_rt);
}

static void
inject_remote(tr_rt *rt, tr__slot *s)
{
    tr__inject_push(rt, &s, 1);
}

// steal_from_others tries every other worker's ring, from a random start.
static tr__slot *
steal_from_others(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    unsigned n = rt->r_nworkers;
    if (n < 2) {
        return NULL;
    }
    unsigned start = (unsigned)(tr__rng_next(&w->w_rng) % n);
    for (unsigned i = 0; i < n; i++) {
        tr__worker *v = &rt->r_workers[(start + i) % n];
        if (v == w) {
            continue;
        }
        uint32_t before = tr__ring_len(&w->w_ring);
        tr__slot *s = tr__ring_steal(&v->w_ring, &w->w_ring);
        if (s != NULL) {
            tr__counter_add(&w->w_steals, 1);
            tr__counter_add(&w->w_stolen, 1 + tr__ring_len(&w->w_ring) - before);
            return s;
        }
    }
    return NULL;
}

static void
no_fini(tr__worker *w)
{
    (void)w;
}

static uint32_t
ring_room(tr__worker *w)
{
    return TR__RING_CAP - tr__ring_len(&w->w_ring);
}

static uint32_t
unbounded(tr__worker *w)
{
    (void)w;
    return UINT32_MAX;
}

static void
ring_init(tr__worker *w)
{
    tr__ring_init(&w->w_ring);
    w->w_rng = 0x9E3779B97F4A7C15ull * (w->w_index + 1);
}

// ---------------------------------------------------------------------------
// Work stealing.

#define LIFO_MAX_STREAK 3

static void
ws_push(tr__worker *w, tr__slot *s, int how)
{
    if (how != TR__PUSH_WAKE) {
        ring_push(w, s);
        return;
    }
    tr__slot *prev = atomic_load_explicit(&w->w_lifo, memory_order_relaxed);
    atomic_store_explicit(&w->w_lifo, s, memory_order_relaxed);
    if (prev != NULL) {
        ring_push(w, prev);
    }
}

static tr__slot *
ws_pop(tr__worker *w)
{
    tr__slot *s = atomic_load_explicit(&w->w_lifo, memory_order_relaxed);
    if (s != NULL) {
        atomic_store_explicit(&w->w_lifo, NULL, memory_order_relaxed);
        if (w->w_lifo_streak < LIFO_MAX_STREAK) {
            w->w_lifo_streak++;
            tr__counter_add(&w->w_lifo_hits, 1);
            return s;
        }
        // Enough LIFO in a row: let the ring's tasks have a turn. No wake
        // for this push: this worker is busy and runs the ring next; waking
        // a sleeper to steal one task costs more than it saves (ping-pong
        // pairs would bounce between workers through futex wakes).
        tr__slot *batch[TR__RING_CAP / 2 + 1];
        uint32_t n;
        if (!tr__ring_push(&w->w_ring, s, batch, &n)) {
            tr__inject_push(w->w_rt, batch, n);
        }
    }
    w->w_lifo_streak = 0;
    return tr__ring_pop(&w->w_ring);
}

static uint32_t
ws_len(tr__worker *w)
{
    return tr__ring_len(&w->w_ring) +
           (atomic_load_explicit(&w->w_lifo, memory_order_relaxed) != NULL);
}

const tr__sched_ops tr__sched_ws = {
    .name = "ws",
    .init = ring_init,
    .fini = no_fini,
    .push = ws_push,
    .push_remote = inject_remote,
    .pop = ws_pop,
    .steal = steal_from_others,
    .len = ws_len,
    .room = ring_room,
};

// ---------------------------------------------------------------------------
// Round robin.

static void
rr_init(tr__worker *w)
{
    w->w_rq_lock = (tr__mutex)TR__MUTEX_INIT;
}

static void
fifo_append(tr__slot **head, tr__slot **tail, tr__slot *s)
{
    s->s_next = NULL;
    if (*tail != NULL) {
        (*tail)->s_next = s;
    } else {
        *head = s;
    }
    *tail = s;
}

// rr_give hands s to worker t from any thread.
static void
rr_give(tr__worker *t, tr__slot *s)
{
    tr__mutex_lock(&t->w_rq_lock);
    fifo_append(&t->w_rq_head, &t->w_rq_tail, s);
    // seq_cst pairs with the park protocol: t re-checks its length after
    // announcing it sleeps.
    atomic_fetch_add_explicit(&t->w_rq_len, 1, memory_order_seq_cst);
    tr__mutex_unlock(&t->w_rq_lock);
    tr__unpark_worker(t);
}

static tr__worker *
rr_target(tr_rt *rt, tr__slot *s, int how)
{
    int last = tr__w_worker(atomic_load_explicit(&s->s_word, memory_order_relaxed));
    if (how == TR__PUSH_NEW || last < 0 || (unsigned)last >= rt->r_nworkers) {
        uint32_t i = atomic_fetch_add_explicit(&rt->r_rr_next, 1, memory_order_relaxed);
        return &rt->r_workers[i % rt->r_nworkers];
    }
    return &rt->r_workers[last];
}

static void
rr_push(tr__worker *w, tr__slot *s, int how)
{
    tr__worker *t = rr_target(w->w_rt, s, how);
    if (t == w) {
        fifo_append(&w->w_head, &w->w_tail, s);
        atomic_store_explicit(&w->w_local_len,
                              atomic_load_explicit(&w->w_local_len, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        return;
    }
    rr_give(t, s);
}

static void
rr_push_remote(tr_rt *rt, tr__slot *s)
{
    rr_give(rr_target(rt, s, TR__PUSH_WAKE), s);
}

static tr__slot *
rr_pop(tr__worker *w)
{
    if (atomic_load_explicit(&w->w_rq_len, memory_order_acquire) > 0) {
        // Append what others gave us behind the local FIFO, whole: checked
        // at every pop, so a task that keeps yielding here cannot starve
        // the ones woken from elsewhere.
        tr__mutex_lock(&w->w_rq_lock);
        tr__slot *head = w->w_rq_head, *tail = w->w_rq_tail;
        uint32_t n = atomic_exchange_explicit(&w->w_rq_len, 0, memory_order_relaxed);
        w->w_rq_head = w->w_rq_tail = NULL;
        tr__mutex_unlock(&w->w_rq_lock);
        if (head != NULL) {
            if (w->w_tail != NULL) {
                w->w_tail->s_next = head;
            } else {
                w->w_head = head;
            }
            w->w_tail = tail;
            atomic_store_explicit(&w->w_local_len,
                                  atomic_load_explicit(&w->w_local_len, memory_order_relaxed) + n,
                                  memory_order_relaxed);
        }
    }
    tr__slot *s = w->w_head;
    if (s != NULL) {
        w->w_head = s->s_next;
        if (w->w_head == NULL) {
            w->w_tail = NULL;
        }
        atomic_store_explicit(&w->w_local_len,
                              atomic_load_explicit(&w->w_local_len, memory_order_relaxed) - 1,
                              memory_order_relaxed);
    }
    return s;
}

static uint32_t
rr_len(tr__worker *w)
{
    return atomic_load_explicit(&w->w_local_len, memory_order_relaxed) +
           atomic_load_explicit(&w->w_rq_len, memory_order_seq_cst);
}

const tr__sched_ops tr__sched_rr = {
    .name = "rr",
    .init = rr_init,
    .fini = no_fini,
    .push = rr_push,
    .push_remote = rr_push_remote,
    .pop = rr_pop,
    .steal = NULL,
    .len = rr_len,
    .room = unbounded,
};

// ---------------------------------------------------------------------------
// Hybrid: cold ring + hot heap.

static bool
heap_before(const tr__heap_ent *a, const tr__heap_ent *b)
{
    // Higher sleep count first; among equals, older first.
    if (a->h_prio != b->h_prio) {
        return a->h_prio > b->h_prio;
    }
    return (int32_t)(a->h_seq - b->h_seq) < 0;
}

static void
heap_grow(tr__worker *w)
{
    uint32_t cap = w->w_heap_cap ? 2 * w->w_heap_cap : TR__HEAP_CAP;
    tr__heap_ent *h = tr__alloc(sizeof(*h) * cap);
    if (w->w_heap_len > 0) {
        memcpy(h, w->w_heap, sizeof(*h) * w->w_heap_len);
    }
    if (w->w_heap != NULL) {
        tr__free(w->w_heap, sizeof(*h) * w->w_heap_cap);
    }
    w->w_heap = h;
    w->w_heap_cap = cap;
}

static void
heap_insert(tr__worker *w, tr__slot *s)
{
    if (w->w_heap_len == w->w_heap_cap) {
        heap_grow(w);
    }
    tr__heap_ent e = {
        .h_prio = tr__w_sleeps(atomic_load_explicit(&s->s_word, memory_order_relaxed)),
        .h_seq = w->w_heap_seq++,
        .h_slot = s,
    };
    uint32_t i = w->w_heap_len++;
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!heap_before(&e, &w->w_heap[parent])) {
            break;
        }
        w->w_heap[i] = w->w_heap[parent];
        i = parent;
    }
    w->w_heap[i] = e;
}

static tr__slot *
heap_pop(tr__worker *w)
{
    if (w->w_heap_len == 0) {
        return NULL;
    }
    tr__slot *top = w->w_heap[0].h_slot;
    tr__heap_ent last = w->w_heap[--w->w_heap_len];
    uint32_t i = 0, n = w->w_heap_len;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n) {
            break;
        }
        if (c + 1 < n && heap_before(&w->w_heap[c + 1], &w->w_heap[c])) {
            c++;
        }
        if (!heap_before(&w->w_heap[c], &last)) {
            break;
        }
        w->w_heap[i] = w->w_heap[c];
        i = c;
    }
    if (n > 0) {
        w->w_heap[i] = last;
    }
    return top;
}

static void
hy_init(tr__worker *w)
{
    ring_init(w);
    heap_grow(w);
}

static void
heap_fini(tr__worker *w)
{
    if (w->w_heap != NULL) {
        tr__free(w->w_heap, sizeof(*w->w_heap) * w->w_heap_cap);
        w->w_heap = NULL;
    }
}

static void
hy_push(tr__worker *w, tr__slot *s, int how)
{
    (void)how;
    ring_push(w, s);
}

static tr__slot *
hy_pop(tr__worker *w)
{
    if (w->w_heap_len == 0) {
        // Refill the hot queue with everything cold, ordered by sleeps.
        tr__slot *s;
        while ((s = tr__ring_pop(&w->w_ring)) != NULL) {
            heap_insert(w, s);
        }
    }
    tr__slot *s = heap_pop(w);
    atomic_store_explicit(&w->w_local_len, w->w_heap_len, memory_order_relaxed);
    return s;
}

static uint32_t
hy_len(tr__worker *w)
{
    return tr__ring_len(&w->w_ring) + atomic_load_explicit(&w->w_local_len, memory_order_relaxed);
}

const tr__sched_ops tr__sched_hybrid = {
    .name = "hybrid",
    .init = hy_init,
    .fini = heap_fini,
    .push = hy_push,
    .push_remote = inject_remote,
    .pop = hy_pop,
    .steal = steal_from_others,
    .len = hy_len,
    .room = ring_room,
};

// ---------------------------------------------------------------------------
// Deterministic: one worker, seeded choice among the runnable tasks.

static void
det_init(tr__worker *w)
{
    w->w_rng = w->w_rt->r_cfg.deterministic_seed;
    heap_grow(w);
}

static void
det_push(tr__worker *w, tr__slot *s, int how)
{
    (void)how;
    if (w->w_heap_len == w->w_heap_cap) {
        heap_grow(w);
    }
    w->w_heap[w->w_heap_len++].h_slot = s;
    atomic_store_explicit(&w->w_local_len, w->w_heap_len, memory_order_relaxed);
}

static tr__slot *
det_pop(tr__worker *w)
{
    if (w->w_heap_len == 0) {
        return NULL;
    }
    uint32_t i = (uint32_t)(tr__rng_next(&w->w_rng) % w->w_heap_len);
    tr__slot *s = w->w_heap[i].h_slot;
    w->w_heap[i] = w->w_heap[--w->w_heap_len];
    atomic_store_explicit(&w->w_local_len, w->w_heap_len, memory_order_relaxed);
    return s;
}

static uint32_t
det_len(tr__worker *w)
{
    return atomic_load_explicit(&w->w_local_len, memory_order_relaxed);
}

const tr__sched_ops tr__sched_det = {
    .name = "det",
    .init = det_init,
    .fini = heap_fini,
    .push = det_push,
    .push_remote = inject_remote,
    .pop = det_pop,
    .steal = NULL,
    .len = det_len,
    .room = unbounded,
};
