// Design notes.
//
// Every task transition is a compare-and-swap on the slot's one 64-bit word
// (generation | sleep count | refs | flags), so an operation through a stale
// key fails on the generation instead of touching another task.
//
// Scheduling. A wake moves an idle task to SCHED and enqueues it once; a
// wake while it runs sets NOTIFIED and the worker requeues it after the
// poll. SCHED and RUNNING are never both set by a wake, so a task is in at
// most one queue and polled by at most one thread. A slot in a queue is
// never freed: whoever pops it clears SCHED and frees it if it is complete
// and unreferenced, which is what lets shutdown complete queued tasks in
// place.
//
// References. A started task holds one reference for its own life (dropped
// when it completes) and its join handle holds another. The slot is freed
// when both are gone, by whichever side drops the last one.
//
// Join. The joiner's waker lives in the slot. While JOIN_WAKER is clear the
// joiner owns those fields; it sets JOIN_WAKER with a release CAS to hand
// them to the completer, and must clear the bit (a CAS that fails once the
// task is COMPLETE) before it may change them. The completer copies the
// waker in the same CAS loop that sets COMPLETE, so it never reads the slot
// after it may have been freed.
//
// Cancellation. Cancel sets CANCEL and makes sure the task is queued (or
// NOTIFIED if it is running). A worker that pops a task with CANCEL runs its
// drop function instead of its poll function and completes it as
// cancelled. A poll that returns READY completes normally even if CANCEL
// arrived meanwhile: completion wins.
#include <stdlib.h>
#include <string.h>

#include "exec/exec.h"

__thread tr__worker *tr__cur __attribute__((tls_model("initial-exec")));

tr_rt *
tr__slot_rt(tr__slot *s)
{
    tr__pool *p = atomic_load_explicit(&tr__slot_chunk(s)->c_pool, memory_order_relaxed);
    return TR__CONTAINER_OF(p, tr_rt, r_pool);
}

// lookup returns the slot a key names, or NULL if the index is unknown. The
// caller checks the generation.
static inline tr__slot *
lookup(uint64_t key)
{
    return tr__pool_lookup(tr__key_index(key));
}

static void
free_slot(tr_rt *rt, tr__slot *s, uint64_t word)
{
    if (word & TR__W_BOXED) {
        // A boxed result nobody collected.
        if (s->s_result.box.dtor != NULL) {
            s->s_result.box.dtor(s->s_result.box.ptr);
        }
    }
    tr__pool_free(tr__rt_pool(rt), tr__shard_of(rt), s);
}

void
tr__slot_release(tr_rt *rt, tr__slot *s, uint64_t clear)
{
    uint64_t old = atomic_load_explicit(&s->s_word, memory_order_relaxed), nw;
    do {
        TR__ASSERT(tr__w_refs(old) > 0);
        nw = (old - TR__W_REF_ONE) & ~clear;
    } while (!atomic_compare_exchange_weak_explicit(&s->s_word, &old, nw, memory_order_acq_rel,
                                                    memory_order_relaxed));
    if (tr__w_refs(nw) == 0 && !(nw & TR__W_SCHED)) {
        free_slot(rt, s, nw);
    }
}

void
tr__task_schedule(tr_rt *rt, tr__slot *s)
{
    tr__worker *w = tr__worker_of(rt);
    if (w != NULL) {
        tr__rt_sched(rt)->push(w, s, TR__PUSH_WAKE);
    } else {
        tr__rt_sched(rt)->push_remote(rt, s);
    }
}

// ---------------------------------------------------------------------------
// Spawning.

// new_invalid says which argument of tr_task_new is wrong.
static tr_err
new_invalid(tr_rt *rt, const tr_task_spec *spec, void **state)
{
    if (rt == NULL || spec == NULL || state == NULL) {
        return tr__fail(TR_EINVAL, "tr_task_new: %s is NULL",
                        rt == NULL     ? "rt"
                        : spec == NULL ? "spec"
                                       : "state");
    }
    const char *name = spec->name ? spec->name : "?";
    if (spec->poll == NULL) {
        return tr__fail(TR_EINVAL, "task \"%.40s\": tr_task_spec.poll is NULL", name);
    }
    return tr__fail(TR_EINVAL,
                    "task \"%.40s\": tr_task_spec.size=%zu: a state holds at most %zu bytes "
                    "(TR_TASK_MAX_STATE); keep bigger buffers behind a pointer",
                    name, spec->size, (size_t)TR_TASK_MAX_STATE);
}

// task_new and task_start are tr_task_new and tr_task_start, inlined into
// them and into tr_spawn, so that the one-call form costs no more calls
// than the two-step one (callgrind: it cost 39 instructions a spawn as a
// wrapper).
static inline __attribute__((always_inline)) tr_err
task_new(tr_rt *rt, const tr_task_spec *spec, void **state)
{
    if (TR__UNLIKELY(rt == NULL || spec == NULL || spec->poll == NULL || state == NULL ||
                     spec->size > TR_TASK_MAX_STATE)) {
        return new_invalid(rt, spec, state);
    }
    if (tr__rt_shutting_down(rt)) {
        return TR_ESHUTDOWN;
    }
    tr__slot *s;
    tr_err rv;
    tr__worker *w = tr__worker_of(rt);
    if (TR__LIKELY(w != NULL)) {
        rv = tr__pool_alloc(tr__rt_pool(rt), tr__worker_index(w), spec->size, &s);
    } else {
        tr__mutex_lock(&tr__rt_pool(rt)->p_ext_lock);
        rv = tr__pool_alloc(tr__rt_pool(rt), tr__rt_nworkers(rt), spec->size, &s);
        tr__mutex_unlock(&tr__rt_pool(rt)->p_ext_lock);
    }
    if (TR__UNLIKELY(rv != TR_OK)) {
        if (rv == TR_EEXHAUSTED) {
            return tr__fail(
                rv, "task \"%.40s\": %llu tasks are live, the limit (tr_rt_config.max_tasks)",
                spec->name ? spec->name : "?", (unsigned long long)tr__rt_config(rt)->max_tasks);
        }
        return rv;
    }
    atomic_store_explicit(&s->s_spec, spec, memory_order_relaxed);
    *state = tr__slot_state(s);
    return TR_OK;
}

tr_err
tr_task_new(tr_rt *rt, const tr_task_spec *spec, void **state)
{
    return task_new(rt, spec, state);
}

// refuse drops a prepared task whose start came too late: its drop runs
// here (it releases what the caller put in the state) and the slot goes.
static tr_err
refuse(tr_rt *rt, tr__slot *s, tr_join *join)
{
    if (join != NULL) {
        *join = TR_JOIN_NONE;
    }
    const tr_task_spec *spec = atomic_load_explicit(&s->s_spec, memory_order_relaxed);
    if (spec->drop != NULL) {
        spec->drop(tr__slot_state(s));
    }
    tr__pool_free(tr__rt_pool(rt), tr__shard_of(rt), s);
    return TR_ESHUTDOWN;
}

static inline __attribute__((always_inline)) tr_err
task_start(void *state, tr_join *join, int how)
{
    tr__slot *s = tr__state_slot(state);
    tr_rt *rt = tr__slot_rt(s);
    uint64_t word = atomic_load_explicit(&s->s_word, memory_order_relaxed);
    TR__ASSERT((word & (TR__W_LIVE | TR__W_STARTED)) == TR__W_LIVE);
    tr__worker *w = tr__worker_of(rt);
    if (TR__LIKELY(w != NULL)) {
        // On a worker of rt the check needs no handshake: a shutdown's
        // finisher drains this worker's queues only after it has stopped.
        if (TR__UNLIKELY(tr__rt_shutting_down(rt))) {
            return refuse(rt, s, join);
        }
    } else if (!tr__rt_start_enter(rt)) {
        return refuse(rt, s, join);
    }
    word |= TR__W_STARTED | TR__W_SCHED;
    if (join != NULL) {
        word += TR__W_REF_ONE;
        join->j_key = tr__slot_key(s, word);
    }
    // Nothing else can hold this slot's new generation yet: a plain store.
    // Release pairs with the acquire of whoever pops or wakes it.
    atomic_store_explicit(&s->s_word, word, memory_order_release);
    if (TR__LIKELY(w != NULL)) {
        tr__worker_count_spawn(w);
        tr__rt_sched(rt)->push(w, s, how);
        return TR_OK;
    }
    // From outside the runtime: a Spawn message to the executor.
    tr__hook(TR__HOOK_START_ACCEPTED);
    tr__rt_count_ext_spawn(rt);
    tr__cmd *cmd = tr__cmd_new(TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN, 0, TR__CMD_LOCAL);
    cmd->c_body.spawn.task_case = TROUPE__V1__SPAWN__TASK_TASK_KEY;
    cmd->c_body.spawn.task_key = tr__slot_key(s, word);
    tr__rt_send(rt, cmd);
    tr__rt_start_exit(rt);
    return TR_OK;
}

tr_err
tr_task_start(void *state, tr_join *join)
{
    return task_start(state, join, TR__PUSH_NEW);
}

// prepare is tr__task_prepare, inlined into tr_spawn.
static inline __attribute__((always_inline)) tr_err
prepare(tr_rt *rt, const tr_task_spec *spec, void (*init)(void *state, void *arg), void *arg,
        void **state)
{
    tr_err rv = task_new(rt, spec, state);
    if (TR__UNLIKELY(rv != TR_OK)) {
        return rv;
    }
    if (init != NULL) {
        init(*state, arg);
    } else if (arg != NULL) {
        memcpy(*state, arg, spec->size);
    }
    return TR_OK;
}

tr_err
tr__task_prepare(tr_rt *rt, const tr_task_spec *spec, void (*init)(void *state, void *arg),
                 void *arg, void **state)
{
    return prepare(rt, spec, init, arg, state);
}

static inline __attribute__((always_inline)) tr_err
spawn(tr_rt *rt, const tr_task_spec *spec, void (*init)(void *state, void *arg), void *arg,
      tr_join *join, int how)
{
    void *state = NULL;
    tr_err rv = prepare(rt, spec, init, arg, &state);
    if (TR__UNLIKELY(rv != TR_OK)) {
        if (join != NULL) {
            *join = TR_JOIN_NONE;
        }
        return rv;
    }
    // Refused after init ran: say so with its own code, so that the caller
    // knows the drop released what init took over (TR_ESHUTDOWN above:
    // init never ran, the caller still owns arg's resources).
    rv = task_start(state, join, how);
    return TR__UNLIKELY(rv == TR_ESHUTDOWN) ? TR_ECANCELED : rv;
}

tr_err
tr_spawn(tr_rt *rt, const tr_task_spec *spec, void (*init)(void *state, void *arg), void *arg,
         tr_join *join)
{
    return spawn(rt, spec, init, arg, join, TR__PUSH_NEW);
}

tr_err
tr_spawn_local(tr_rt *rt, const tr_task_spec *spec, void (*init)(void *state, void *arg), void *arg,
               tr_join *join)
{
    return spawn(rt, spec, init, arg, join, TR__PUSH_LOCAL);
}

void
tr_task_discard(void *state)
{
    tr__slot *s = tr__state_slot(state);
    tr_rt *rt = tr__slot_rt(s);
    uint64_t word = atomic_load_explicit(&s->s_word, memory_order_relaxed);
    TR__ASSERT((word & (TR__W_LIVE | TR__W_STARTED)) == TR__W_LIVE);
    tr__pool_free(tr__rt_pool(rt), tr__shard_of(rt), s);
}

// ---------------------------------------------------------------------------
// Completion and polling.

static void
complete(tr__worker *w, tr__slot *s, bool cancelled, bool boxed)
{
    tr_rt *rt = tr__worker_rt(w);
    // Counted before the completing CAS, so that whoever sees the task
    // complete (a joiner) sees the count too, and so that the CAS (a full
    // barrier) orders the count before this worker's next look at
    // r_shutdown: a graceful shutdown's finisher reads the counts after it
    // stored r_shutdown (see run_loop), so either it sees this completion or
    // this worker sees the shutdown and wakes it.
    tr__worker_count_done(w, cancelled);
    uint64_t old = atomic_load_explicit(&s->s_word, memory_order_acquire), nw;
    tr_waker jw;
    do {
        jw.ops = NULL;
        jw.data = NULL;
        if (old & TR__W_JOIN_WAKER) {
            jw.ops = atomic_load_explicit(&s->s_join_ops, memory_order_relaxed);
            jw.data = atomic_load_explicit(&s->s_join_data, memory_order_relaxed);
        }
        nw = (old | TR__W_COMPLETE) & ~(TR__W_RUNNING | TR__W_NOTIFIED | TR__W_JOIN_WAKER);
        nw |= cancelled ? TR__W_CANCELLED : (boxed ? TR__W_BOXED : 0);
        nw -= TR__W_REF_ONE;
        // Release publishes the result; acquire pairs with the joiner's
        // release CAS that set JOIN_WAKER; seq_cst for the count (above).
    } while (!atomic_compare_exchange_weak_explicit(&s->s_word, &old, nw, memory_order_seq_cst,
                                                    memory_order_acquire));
    if (tr__w_refs(nw) == 0 && !(nw & TR__W_SCHED)) {
        free_slot(rt, s, nw);
    }
    if (jw.ops != NULL) {
        jw.ops->wake(&jw);
    }
}

void
tr__task_cancel_now(tr__worker *w, tr__slot *s)
{
    const tr_task_spec *spec = atomic_load_explicit(&s->s_spec, memory_order_relaxed);
    if (spec->drop != NULL) {
        spec->drop(tr__slot_state(s));
    }
    complete(w, s, true, false);
}

void
tr__task_run(tr__worker *w, tr__slot *s)
{
    uint64_t old = atomic_load_explicit(&s->s_word, memory_order_acquire), nw;
    for (;;) {
        TR__ASSERT(old & TR__W_SCHED);
        if (old & TR__W_COMPLETE) {
            // Completed while queued (shutdown): just leave the queue.
            nw = old & ~TR__W_SCHED;
        } else {
            nw = (old & ~(TR__W_SCHED | TR__W_NOTIFIED | TR__W_WORKER_MASK)) | TR__W_RUNNING |
                 ((uint64_t)(tr__worker_index(w) + 1) << TR__W_WORKER_SHIFT);
        }
        // Acquire pairs with the release of the waker or spawner. Release:
        // a slot that leaves the queue completed may be freed at once by
        // the thread whose join release sees SCHED gone, and that free
        // rewrites s_next, which the popping thread wrote last (appending
        // behind it): TSan caught the pair in a shutdown race. (x86: the
        // same instruction either way.)
        if (atomic_compare_exchange_weak_explicit(&s->s_word, &old, nw, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            break;
        }
    }
    if (old & TR__W_COMPLETE) {
        if (tr__w_refs(nw) == 0) {
            free_slot(tr__worker_rt(w), s, nw);
        }
        return;
    }
    if (old & TR__W_CANCEL) {
        tr__task_cancel_now(w, s);
        return;
    }
    tr_rt *rt = tr__worker_rt(w);
    tr_cx cx = {
        .cx_rt = rt,
        .cx_w = w,
        .cx_slot = s,
        .cx_key = tr__slot_key(s, nw),
        .cx_budget = tr__rt_config(rt)->budget,
        .cx_yielded = false,
        .cx_boxed = false,
    };
    const tr_task_spec *spec = atomic_load_explicit(&s->s_spec, memory_order_relaxed);
    tr_poll r = spec->poll(tr__slot_state(s), &cx);
    tr__worker_count_poll(w);
    atomic_store_explicit(&s->s_polls, atomic_load_explicit(&s->s_polls, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&s->s_last_poll_ms, tr__worker_now_ms(w), memory_order_relaxed);
    if (r == TR_READY) {
        if (spec->drop != NULL) {
            spec->drop(tr__slot_state(s));
        }
        complete(w, s, false, cx.cx_boxed);
        return;
    }
    old = atomic_load_explicit(&s->s_word, memory_order_relaxed);
    bool requeue;
    do {
        nw = old & ~(TR__W_RUNNING | TR__W_NOTIFIED);
        requeue = cx.cx_yielded || (old & TR__W_NOTIFIED);
        if (requeue) {
            nw |= TR__W_SCHED;
        } else if ((old & TR__W_SLEEP_MASK) != TR__W_SLEEP_MASK) {
            nw += TR__W_SLEEP_ONE; // it really waits: count the sleep
        }
        // Release publishes the state the poll wrote to the next poller.
    } while (!atomic_compare_exchange_weak_explicit(&s->s_word, &old, nw, memory_order_release,
                                                    memory_order_relaxed));
    if (requeue) {
        tr__rt_sched(rt)->push(w, s, TR__PUSH_YIELD);
    }
}

// ---------------------------------------------------------------------------
// Wakers.

static void
task_wake(const tr_waker *wk)
{
    // The key names the task process-wide; the runtime is the slot's.
    uint64_t key = (uint64_t)(uintptr_t)wk->data;
    tr__slot *s = lookup(key);
    if (s == NULL) {
        return;
    }
    tr_rt *rt = tr__slot_rt(s);
    uint64_t old = atomic_load_explicit(&s->s_word, memory_order_acquire), nw;
    do {
        if (tr__w_gen(old) != tr__key_gen(key) || !(old & TR__W_STARTED) ||
            (old & TR__W_COMPLETE)) {
            return; // stale or finished
        }
        if (old & (TR__W_SCHED | TR__W_NOTIFIED)) {
            nw = old; // already going to run: still write, see below
        } else {
            nw = old | ((old & TR__W_RUNNING) ? TR__W_NOTIFIED : TR__W_SCHED);
        }
        // Always an RMW: its release half makes what the waker wrote before
        // waking visible to the next poll (whose CAS in tr__task_run reads
        // this value or a later one), even when the task was already queued;
        // its acquire half hands us the slot's queue link, last written by
        // the worker that queued or ran it.
    } while (!atomic_compare_exchange_weak_explicit(&s->s_word, &old, nw, memory_order_acq_rel,
                                                    memory_order_acquire));
    if (nw == old) {
        return;
    }
    if (!(old & TR__W_RUNNING)) {
        tr__task_schedule(rt, s);
    }
}

const tr_waker_ops tr__task_waker_ops = {task_wake};

void
tr_wake(tr_waker w)
{
    if (w.ops != NULL) {
        w.ops->wake(&w);
    }
}

// ---------------------------------------------------------------------------
// The poll context.

tr_waker
tr_cx_waker(tr_cx *cx)
{
    return (tr_waker){&tr__task_waker_ops, (const void *)(uintptr_t)cx->cx_key};
}

tr_rt *
tr_cx_rt(tr_cx *cx)
{
    return cx->cx_rt;
}

unsigned
tr_cx_worker(tr_cx *cx)
{
    return tr__worker_index(cx->cx_w);
}

tr_task_id
tr_cx_task_id(tr_cx *cx)
{
    return (tr_task_id){cx->cx_key};
}

void
tr_cx_set_result(tr_cx *cx, tr_value v)
{
    cx->cx_slot->s_result.v = v;
    cx->cx_boxed = false;
}

void
tr_cx_set_result_u64(tr_cx *cx, uint64_t v)
{
    memset(&cx->cx_slot->s_result, 0, sizeof(cx->cx_slot->s_result));
    cx->cx_slot->s_result.v.u64 = v;
    cx->cx_boxed = false;
}

void
tr_cx_set_result_ptr(tr_cx *cx, void *ptr, tr_dtor dtor)
{
    cx->cx_slot->s_result.box.ptr = ptr;
    cx->cx_slot->s_result.box.dtor = dtor;
    cx->cx_boxed = true;
}

bool
tr_cx_budget_spend(tr_cx *cx)
{
    if (TR__UNLIKELY(cx->cx_budget == 0)) {
        cx->cx_yielded = true;
        return false;
    }
    cx->cx_budget--;
    return true;
}

uint32_t
tr_cx_budget(const tr_cx *cx)
{
    return cx->cx_budget;
}

void
tr_cx_yield(tr_cx *cx)
{
    cx->cx_yielded = true;
}

// ---------------------------------------------------------------------------
// Join handles.

void
tr__take_outcome(tr__slot *s, uint64_t word, tr_outcome *out)
{
    if (out == NULL) {
        return;
    }
    memset(out, 0, sizeof(*out));
    if (word & TR__W_CANCELLED) {
        out->err = TR_ECANCELED;
    } else if (word & TR__W_BOXED) {
        out->err = TR_OK;
        out->value.ptr = s->s_result.box.ptr;
        out->dtor = s->s_result.box.dtor;
    } else {
        out->err = TR_OK;
        out->value = s->s_result.v;
    }
}

void
tr_outcome_fini(tr_outcome *out)
{
    if (out != NULL && out->dtor != NULL) {
        out->dtor(out->value.ptr);
        out->dtor = NULL;
        out->value.ptr = NULL;
    }
}

// join_good: word w is the task a handle with this key names, and the
// handle has not been consumed through a copy.
static inline bool
join_good(uint64_t w, uint64_t key)
{
    return tr__w_gen(w) == tr__key_gen(key) && (w & TR__W_STARTED) && !(w & TR__W_JOINED);
}

// join_slot finds the task a handle names and checks, on the word loaded
// into *word, that the handle is still good: the generation is the
// handle's and no copy of it has been consumed (JOINED). NULL for a stale
// handle, which no join operation may act on.
static inline tr__slot *
join_slot(const tr_join *j, uint64_t *word)
{
    tr__slot *s = lookup(j->j_key);
    if (s == NULL) {
        return NULL;
    }
    // Acquire pairs with the release in complete(): the result is visible.
    uint64_t w = atomic_load_explicit(&s->s_word, memory_order_acquire);
    if (!join_good(w, j->j_key)) {
        return NULL;
    }
    *word = w;
    return s;
}

static inline void
outcome_set_err(tr_outcome *out, tr_err err)
{
    if (out != NULL) {
        memset(out, 0, sizeof(*out));
        out->err = err;
    }
}

// consume ends a handle's life: in one CAS that checks the generation and
// JOINED again, it sets JOINED, drops the handle's reference and clears
// `clear`. False (and nothing touched) when another copy got there first.
static inline __attribute__((always_inline)) bool
consume(tr__slot *s, uint64_t key, uint64_t old, uint64_t clear)
{
    uint64_t nw;
    do {
        if (!join_good(old, key)) {
            return false;
        }
        TR__ASSERT(tr__w_refs(old) > 0);
        nw = ((old - TR__W_REF_ONE) & ~clear) | TR__W_JOINED;
    } while (!atomic_compare_exchange_weak_explicit(&s->s_word, &old, nw, memory_order_acq_rel,
                                                    memory_order_acquire));
    if (tr__w_refs(nw) == 0 && !(nw & TR__W_SCHED)) {
        free_slot(tr__slot_rt(s), s, nw);
    }
    return true;
}

// take completes a join on a COMPLETE task: the outcome moves to *out (a
// boxed result with it, so the slot must not destroy it), the handle is
// consumed and emptied. TR_ENOTFOUND when a copy of it was consumed first:
// then *out holds just that error (the result it copied is not ours).
static inline tr_err
take(tr_join *j, tr__slot *s, uint64_t word, tr_outcome *out)
{
    // Read before the consuming CAS, which may free the slot.
    tr__take_outcome(s, word, out);
    if (TR__UNLIKELY(!consume(s, j->j_key, word, out != NULL ? TR__W_BOXED : 0))) {
        outcome_set_err(out, TR_ENOTFOUND);
        return TR_ENOTFOUND;
    }
    *j = TR_JOIN_NONE;
    return TR_OK;
}

// register_waker hands wk to the completer. Returns false (and *old holds a
// COMPLETE word) when the task completed first.
static bool
register_waker(tr__slot *s, uint64_t *old, tr_waker wk)
{
    for (;;) {
        uint64_t w = *old;
        if (w & TR__W_COMPLETE) {
            return false;
        }
        if (w & TR__W_JOIN_WAKER) {
            if (atomic_load_explicit(&s->s_join_ops, memory_order_relaxed) == wk.ops &&
                atomic_load_explicit(&s->s_join_data, memory_order_relaxed) == wk.data) {
                return true;
            }
            // Take the fields back before changing them.
            if (!atomic_compare_exchange_weak_explicit(&s->s_word, old, w & ~TR__W_JOIN_WAKER,
                                                       memory_order_acquire,
                                                       memory_order_acquire)) {
                continue;
            }
            w &= ~TR__W_JOIN_WAKER;
            *old = w;
        }
        atomic_store_explicit(&s->s_join_ops, wk.ops, memory_order_relaxed);
        atomic_store_explicit(&s->s_join_data, wk.data, memory_order_relaxed);
        // Release pairs with the acquire in complete().
        if (atomic_compare_exchange_weak_explicit(&s->s_word, old, w | TR__W_JOIN_WAKER,
                                                  memory_order_release, memory_order_acquire)) {
            return true;
        }
    }
}

// unregister_waker takes wk back from a task that has not completed: true
// when it was withdrawn (the completer will not call it), false when the
// task completed or is completing (the completer calls it, or wk was
// replaced by another joiner and nobody will).
static bool
unregister_waker(tr__slot *s, uint64_t key, tr_waker wk, bool *replaced)
{
    uint64_t old = atomic_load_explicit(&s->s_word, memory_order_acquire);
    *replaced = false;
    for (;;) {
        if (tr__w_gen(old) != tr__key_gen(key) || (old & TR__W_COMPLETE)) {
            return false; // completed (the slot may even be gone): it calls wk
        }
        if (!(old & TR__W_JOIN_WAKER) ||
            atomic_load_explicit(&s->s_join_data, memory_order_relaxed) != wk.data ||
            atomic_load_explicit(&s->s_join_ops, memory_order_relaxed) != wk.ops) {
            *replaced = true;
            return false;
        }
        if (atomic_compare_exchange_weak_explicit(&s->s_word, &old, old & ~TR__W_JOIN_WAKER,
                                                  memory_order_acquire, memory_order_acquire)) {
            return true;
        }
    }
}

// tr__join_register lets block_on (and groups) hear of a completion
// wherever it happens. False when it had completed already.
void
tr__task_precancel(void *state)
{
    tr__slot *s = tr__state_slot(state);
    TR__ASSERT((atomic_load_explicit(&s->s_word, memory_order_relaxed) &
                (TR__W_LIVE | TR__W_STARTED)) == TR__W_LIVE);
    // The slot is still only the caller's, and tr_task_start keeps the
    // flag. Relaxed: tr_task_start's release publishes it with the word.
    atomic_fetch_or_explicit(&s->s_word, TR__W_CANCEL, memory_order_relaxed);
}

bool
tr__task_collect(tr_rt *rt, uint64_t key, tr_outcome *out)
{
    tr__slot *s = lookup(key);
    TR__ASSERT(s != NULL);
    // Acquire pairs with the completing CAS (release): the result is ours.
    uint64_t word = atomic_load_explicit(&s->s_word, memory_order_acquire);
    TR__ASSERT((word & TR__W_COMPLETE) && tr__w_gen(word) == tr__key_gen(key));
    tr__take_outcome(s, word, out);
    tr__slot_release(rt, s, TR__W_BOXED);
    return (word & TR__W_BOXED) != 0;
}

bool
tr__join_register(tr__slot *s, tr_waker wk)
{
    uint64_t old = atomic_load_explicit(&s->s_word, memory_order_acquire);
    return register_waker(s, &old, wk);
}

tr_poll
tr_join_poll(tr_join *j, tr_cx *cx, tr_outcome *out)
{
    if (TR__UNLIKELY(j->j_key == 0)) {
        outcome_set_err(out, TR_EINVAL);
        return TR_READY;
    }
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    uint64_t old;
    tr__slot *s = join_slot(j, &old);
    if (TR__LIKELY(s != NULL)) {
        if (!(old & TR__W_COMPLETE) && register_waker(s, &old, tr_cx_waker(cx))) {
            return TR_PENDING;
        }
        if (TR__LIKELY(take(j, s, old, out) == TR_OK)) {
            return TR_READY;
        }
    } else {
        outcome_set_err(out, TR_ENOTFOUND);
    }
    *j = TR_JOIN_NONE;
    return TR_READY;
}

typedef struct thread_parker {
    _Atomic uint32_t tp_flag;
} thread_parker;

static void
thread_wake(const tr_waker *w)
{
    thread_parker *tp = (thread_parker *)w->data;
    // Pairs with the acquire load in join_block. After this store the
    // waiter may return; futex_wake on its (still mapped) stack is harmless.
    atomic_store_explicit(&tp->tp_flag, 1, memory_order_release);
    tr__futex_wake(&tp->tp_flag, 1);
}

static const tr_waker_ops thread_waker_ops = {thread_wake};

// join_block is tr_join_wait with an optional deadline (UINT64_MAX: none).
static tr_err
join_block(tr_join *j, tr_outcome *out, uint64_t deadline_ns)
{
    if (j == NULL || j->j_key == 0) {
        return TR_EINVAL;
    }
    if (tr__cur != NULL) {
        return TR_EDEADLOCK;
    }
    uint64_t old;
    tr__slot *s = join_slot(j, &old);
    if (s == NULL) {
        return TR_ENOTFOUND;
    }
    thread_parker tp;
    atomic_init(&tp.tp_flag, 0);
    tr_waker wk = {&thread_waker_ops, &tp};
    if (!(old & TR__W_COMPLETE) && register_waker(s, &old, wk)) {
        // Registered: the completer will call thread_wake exactly once, and
        // we must not return (freeing tp) before it has, unless we take
        // the waker back first.
        while (atomic_load_explicit(&tp.tp_flag, memory_order_acquire) == 0) {
            uint64_t wait = UINT64_MAX;
            if (deadline_ns != UINT64_MAX) {
                uint64_t now = tr__now_ns();
                if (now >= deadline_ns) {
                    bool replaced;
                    if (unregister_waker(s, j->j_key, wk, &replaced) || replaced) {
                        return TR_ETIMEDOUT; // nobody will touch tp
                    }
                    deadline_ns = UINT64_MAX; // completing: its wake is near
                    continue;
                }
                wait = deadline_ns - now;
            }
            tr__futex_wait(&tp.tp_flag, 0, wait);
        }
        // The completer woke us, so the task completed; but the slot may
        // have been freed and reused meanwhile if a copy of the handle
        // was released (join_slot then fails on the generation).
        s = join_slot(j, &old);
        if (s == NULL) {
            return TR_ENOTFOUND;
        }
        TR__ASSERT(old & TR__W_COMPLETE);
    }
    return take(j, s, old, out);
}

tr_err
tr_join_wait(tr_join *j, tr_outcome *out)
{
    return join_block(j, out, UINT64_MAX);
}

tr_err
tr_join_wait_timeout(tr_join *j, tr_outcome *out, uint64_t timeout_ns)
{
    uint64_t now = tr__now_ns();
    uint64_t dl = timeout_ns >= UINT64_MAX - now ? UINT64_MAX : now + timeout_ns;
    return join_block(j, out, dl);
}

void
tr_join_release(tr_join *j)
{
    if (j == NULL || j->j_key == 0) {
        return;
    }
    uint64_t old;
    tr__slot *s = join_slot(j, &old);
    if (s != NULL) {
        (void)consume(s, j->j_key, old, 0);
    }
    *j = TR_JOIN_NONE;
}

tr_task_id
tr_join_id(const tr_join *j)
{
    return (tr_task_id){j->j_key};
}

bool
tr_join_is_finished(const tr_join *j)
{
    if (j->j_key == 0) {
        return true;
    }
    uint64_t old;
    // A stale handle: its task has finished, or this copy's task was
    // already joined or released through another copy.
    return join_slot(j, &old) == NULL || (old & TR__W_COMPLETE);
}

// ---------------------------------------------------------------------------
// Cancellation.

// request_cancel sets CANCEL on the task key names. *push is set when the
// caller now owes the task a place in a run queue (it set SCHED). Through
// a join handle (handle), a handle consumed through a copy is stale too.
static tr_err
request_cancel(tr_rt *rt, uint64_t key, bool handle, bool may_schedule, tr__slot **sp, bool *push)
{
    *push = false;
    tr__slot *s = lookup(key);
    if (s == NULL || tr__slot_rt(s) != rt) {
        return TR_ENOTFOUND;
    }
    *sp = s;
    uint64_t old = atomic_load_explicit(&s->s_word, memory_order_acquire), nw;
    do {
        if (tr__w_gen(old) != tr__key_gen(key) || !(old & TR__W_STARTED) ||
            (handle && (old & TR__W_JOINED))) {
            return TR_ENOTFOUND;
        }
        if (old & TR__W_COMPLETE) {
            return TR_EFINISHED;
        }
        nw = old | TR__W_CANCEL;
        *push = false;
        if (old & TR__W_RUNNING) {
            nw |= TR__W_NOTIFIED;
        } else if (may_schedule && !(old & TR__W_SCHED)) {
            nw |= TR__W_SCHED;
            *push = true;
        }
        if (nw == old) {
            return TR_OK;
        }
    } while (!atomic_compare_exchange_weak_explicit(&s->s_word, &old, nw, memory_order_acq_rel,
                                                    memory_order_acquire));
    return TR_OK;
}

void
tr__rt_cancel_cmd(tr__worker *w, uint64_t key)
{
    tr__slot *s;
    bool push;
    (void)request_cancel(tr__worker_rt(w), key, false, true, &s, &push);
    if (push) {
        tr__rt_sched(tr__worker_rt(w))->push(w, s, TR__PUSH_WAKE);
    }
}

static tr_err
cancel_key(tr_rt *rt, uint64_t key, bool handle)
{
    tr__slot *s = NULL;
    bool push;
    tr__worker *w = tr__worker_of(rt);
    // On a worker the cancel is carried out here; from any other thread the
    // flag is set here (for the return value) and a Cancel message makes
    // the executor queue the task.
    tr_err rv = request_cancel(rt, key, handle, w != NULL, &s, &push);
    if (rv != TR_OK) {
        return rv;
    }
    if (w != NULL) {
        if (push) {
            tr__rt_sched(rt)->push(w, s, TR__PUSH_WAKE);
        }
        return TR_OK;
    }
    tr__cmd *cmd = tr__cmd_new(TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL, 0, TR__CMD_LOCAL);
    cmd->c_body.cancel.task_id = key;
    tr__rt_send(rt, cmd);
    return TR_OK;
}

tr_err
tr_task_abort(const tr_join *j)
{
    if (j == NULL || j->j_key == 0) {
        return TR_EINVAL;
    }
    tr__slot *s = lookup(j->j_key);
    if (s == NULL) {
        return TR_ENOTFOUND;
    }
    return cancel_key(tr__slot_rt(s), j->j_key, true);
}

tr_err
tr_task_cancel(tr_rt *rt, tr_task_id id)
{
    if (rt == NULL) {
        return TR_EINVAL;
    }
    return cancel_key(rt, id.id, false);
}

void
tr__slot_destroy_result(tr__slot *s)
{
    uint64_t word = atomic_load_explicit(&s->s_word, memory_order_acquire);
    if ((word & (TR__W_LIVE | TR__W_COMPLETE | TR__W_BOXED)) ==
            (TR__W_LIVE | TR__W_COMPLETE | TR__W_BOXED) &&
        s->s_result.box.dtor != NULL) {
        s->s_result.box.dtor(s->s_result.box.ptr);
    }
}

bool
tr__slot_info(tr__slot *s, uint64_t now_ms, tr_task_info *info)
{
    uint64_t word = atomic_load_explicit(&s->s_word, memory_order_acquire);
    if (!(word & TR__W_LIVE)) {
        return false;
    }
    const tr_task_spec *spec = atomic_load_explicit(&s->s_spec, memory_order_relaxed);
    info->id.id = tr__slot_key(s, word);
    info->name = (spec != NULL && spec->name != NULL) ? spec->name : "?";
    if (!(word & TR__W_STARTED)) {
        info->state = TR_TASK_PREPARED;
    } else if (word & TR__W_COMPLETE) {
        info->state = TR_TASK_COMPLETE;
    } else if (word & TR__W_CANCEL) {
        info->state = TR_TASK_CANCELLING;
    } else if (word & TR__W_RUNNING) {
        info->state = TR_TASK_RUNNING;
    } else if (word & TR__W_SCHED) {
        info->state = TR_TASK_SCHEDULED;
    } else {
        info->state = TR_TASK_IDLE;
    }
    info->polls = atomic_load_explicit(&s->s_polls, memory_order_relaxed);
    info->sleeps = (uint32_t)((word & TR__W_SLEEP_MASK) >> TR__W_SLEEP_SHIFT);
    uint32_t last = atomic_load_explicit(&s->s_last_poll_ms, memory_order_relaxed);
    info->idle_ms = (info->polls == 0 || now_ms < last) ? 0 : now_ms - last;
    return true;
}
