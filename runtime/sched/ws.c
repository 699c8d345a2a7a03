// Design notes.
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
#include <stdlib.h>
#include <string.h>

#include "exec/exec.h"
#include "sched/sched.h"

#define LIFO_MAX_STREAK 3

typedef struct ws_state {
    tr__steal_q q; // first: thieves reach the ring through it
    // The task the running task just woke. Owner-written; relaxed atomic
    // because other workers peek at it (len) before parking.
    _Atomic(tr__slot *) lifo;
    unsigned lifo_streak; // owner
} ws_state;

static void
ws_init(tr__worker *w)
{
    tr__steal_q_init(w, &((ws_state *)tr__worker_sched(w))->q);
}

static void
ws_push(tr__worker *w, tr__slot *s, int how)
{
    ws_state *st = tr__worker_sched(w);
    if (how == TR__PUSH_LOCAL) {
        // The ring, but no thief is woken for it: this worker runs it
        // after its current task, unless an awake one steals it first.
        tr__steal_q_push_quiet(w, &st->q, s);
        return;
    }
    if (how != TR__PUSH_WAKE) {
        tr__steal_q_push(w, &st->q, s);
        return;
    }
    tr__slot *prev = atomic_load_explicit(&st->lifo, memory_order_relaxed);
    atomic_store_explicit(&st->lifo, s, memory_order_relaxed);
    if (prev != NULL) {
        tr__steal_q_push(w, &st->q, prev);
    }
}

static tr__slot *
ws_pop(tr__worker *w)
{
    ws_state *st = tr__worker_sched(w);
    tr__slot *s = atomic_load_explicit(&st->lifo, memory_order_relaxed);
    if (s != NULL) {
        atomic_store_explicit(&st->lifo, NULL, memory_order_relaxed);
        if (st->lifo_streak < LIFO_MAX_STREAK) {
            st->lifo_streak++;
            tr__worker_count_lifo_hit(w);
            return s;
        }
        // Enough LIFO in a row: let the ring's tasks have a turn. No wake
        // for this push: this worker is busy and runs the ring next; waking
        // a sleeper to steal one task costs more than it saves (ping-pong
        // pairs would bounce between workers through futex wakes).
        tr__steal_q_push_quiet(w, &st->q, s);
    }
    st->lifo_streak = 0;
    return tr__ring_pop(&st->q.sq_ring);
}

static uint32_t
ws_len(tr__worker *w)
{
    ws_state *st = tr__worker_sched(w);
    return tr__ring_len(&st->q.sq_ring) +
           (atomic_load_explicit(&st->lifo, memory_order_relaxed) != NULL);
}

const tr__sched_ops tr__sched_ws = {
    .name = "ws",
    .state_size = sizeof(ws_state),
    .init = ws_init,
    .fini = tr__sched_no_fini,
    .push = ws_push,
    .push_remote = tr__sched_push_inject,
    .pop = ws_pop,
    .steal = tr__steal_q_steal,
    .stealable = tr__steal_q_stealable,
    .len = ws_len,
    .room = tr__steal_q_room,
};
