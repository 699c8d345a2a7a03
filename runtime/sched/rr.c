// Design notes.
//
// Round robin (rr): new tasks are dealt to workers in turn; a woken task
// returns to the worker that last polled it (kept in the task's word). Each
// worker has a private FIFO and a locked inbound FIFO for tasks other
// threads give it. No stealing: placement is the policy.
#include <stdlib.h>
#include <string.h>

#include "exec/exec.h"
#include "sched/sched.h"

typedef struct rr_state {
    tr__slot *head; // the local FIFO (owner)
    tr__slot *tail;
    _Atomic uint32_t local_len; // the local FIFO's length, for len()
    // What other threads give this worker: a locked FIFO.
    _Alignas(64) tr__mutex rq_lock;
    tr__slot *rq_head; // under rq_lock
    tr__slot *rq_tail; // under rq_lock
    _Atomic uint32_t rq_len;
    // Worker 0's alone: the next worker to deal a new task to (any thread).
    _Alignas(64) _Atomic uint32_t deal;
} rr_state;

static void
rr_init(tr__worker *w)
{
    rr_state *st = tr__worker_sched(w);
    st->rq_lock = (tr__mutex)TR__MUTEX_INIT;
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
    rr_state *st = tr__worker_sched(t);
    tr__mutex_lock(&st->rq_lock);
    fifo_append(&st->rq_head, &st->rq_tail, s);
    // seq_cst pairs with the park protocol: t re-checks its length after
    // announcing it sleeps.
    atomic_fetch_add_explicit(&st->rq_len, 1, memory_order_seq_cst);
    tr__mutex_unlock(&st->rq_lock);
    tr__unpark_worker(t);
}

static tr__worker *
rr_target(tr_rt *rt, tr__slot *s, int how)
{
    int last = tr__slot_last_worker(s);
    if (how == TR__PUSH_NEW || last < 0 || (unsigned)last >= tr__rt_nworkers(rt)) {
        rr_state *w0 = tr__worker_sched(tr__rt_worker(rt, 0));
        uint32_t i = atomic_fetch_add_explicit(&w0->deal, 1, memory_order_relaxed);
        return tr__rt_worker(rt, i % tr__rt_nworkers(rt));
    }
    return tr__rt_worker(rt, last);
}

static void
rr_push(tr__worker *w, tr__slot *s, int how)
{
    // A local spawn stays here: no deal to another worker.
    tr__worker *t = how == TR__PUSH_LOCAL ? w : rr_target(tr__worker_rt(w), s, how);
    if (t == w) {
        rr_state *st = tr__worker_sched(w);
        fifo_append(&st->head, &st->tail, s);
        atomic_store_explicit(&st->local_len,
                              atomic_load_explicit(&st->local_len, memory_order_relaxed) + 1,
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
    rr_state *st = tr__worker_sched(w);
    if (atomic_load_explicit(&st->rq_len, memory_order_acquire) > 0) {
        // Append what others gave us behind the local FIFO, whole: checked
        // at every pop, so a task that keeps yielding here cannot starve
        // the ones woken from elsewhere.
        tr__mutex_lock(&st->rq_lock);
        tr__slot *head = st->rq_head, *tail = st->rq_tail;
        uint32_t n = atomic_exchange_explicit(&st->rq_len, 0, memory_order_relaxed);
        st->rq_head = st->rq_tail = NULL;
        tr__mutex_unlock(&st->rq_lock);
        if (head != NULL) {
            if (st->tail != NULL) {
                st->tail->s_next = head;
            } else {
                st->head = head;
            }
            st->tail = tail;
            atomic_store_explicit(&st->local_len,
                                  atomic_load_explicit(&st->local_len, memory_order_relaxed) + n,
                                  memory_order_relaxed);
        }
    }
    tr__slot *s = st->head;
    if (s != NULL) {
        st->head = s->s_next;
        if (st->head == NULL) {
            st->tail = NULL;
        }
        atomic_store_explicit(&st->local_len,
                              atomic_load_explicit(&st->local_len, memory_order_relaxed) - 1,
                              memory_order_relaxed);
    }
    return s;
}

static uint32_t
rr_len(tr__worker *w)
{
    rr_state *st = tr__worker_sched(w);
    return atomic_load_explicit(&st->local_len, memory_order_relaxed) +
           atomic_load_explicit(&st->rq_len, memory_order_seq_cst);
}

const tr__sched_ops tr__sched_rr = {
    .name = "rr",
    .state_size = sizeof(rr_state),
    .init = rr_init,
    .fini = tr__sched_no_fini,
    .push = rr_push,
    .push_remote = rr_push_remote,
    .pop = rr_pop,
    .steal = NULL,
    .stealable = NULL,
    .len = rr_len,
    .room = tr__sched_unbounded,
};
