// sched/sched.h: the scheduler layer (README, Architecture: layer 3). A
// scheduler is a run-queue policy behind an ops table: where a runnable task
// goes and which one a worker runs next. It owns a per-worker state of the
// size its table states (the worker holds it as w_sched and never looks
// inside); the generic worker loop (exec/) owns fairness, searching,
// parking and shutdown. Here: the ops table, the {kind, name, ops} table
// that names every scheduler, the stealable ring (ring.c) and the helpers
// the two stealing schedulers share (common.c). One file per scheduler:
// ws.c, rr.c, hybrid.c, det.c.
//
// Layers, bottom up: base -> task -> sched -> exec -> reactor -> io, fs,
// sync. A layer includes its own header and those below it, plus these
// named back-edges (checked by tests/integration/layers.sh):
//   sched -> exec: a scheduler hands overflow to the injector
//     (tr__inject_push), wakes idle workers (tr__notify_parked,
//     tr__unpark_worker), and finds its workers and their w_sched through
//     the runtime's worker array.
// This header may include: base/base.h, task/task.h.
#ifndef TR_SCHED_SCHED_H
#define TR_SCHED_SCHED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <troupe/rt.h>

#include "base/base.h"
#include "task/task.h"

typedef struct tr__worker tr__worker;

// ---------------------------------------------------------------------------
// The stealable ring: a worker's bounded run queue that other workers steal
// from, as tokio's local queue: the owner pushes and pops at its own ends
// without locks, thieves take half of it in one batch. Entries are task
// slots.

#define TR__RING_CAP 256u
#define TR__RING_MASK (TR__RING_CAP - 1)

typedef struct tr__ring {
    // {steal, real} heads packed in one word: real is where the owner pops;
    // steal trails it while a thief is copying entries out, so that the
    // owner does not overwrite them. Every change is a CAS.
    _Alignas(64) _Atomic uint64_t rg_head;
    // Where the owner pushes. Written only by the owner (release); read by
    // thieves (acquire).
    _Alignas(64) _Atomic uint32_t rg_tail;
    // Entries, read by thieves racing the owner's later writes to other
    // positions: relaxed atomics, ordered by rg_head and rg_tail.
    _Atomic(tr__slot *) rg_buf[TR__RING_CAP];
} tr__ring;

void tr__ring_init(tr__ring *r) TR__HIDDEN;

// tr__ring_push appends s (owner only). When the ring is full it returns
// false and hands back in batch[] (room for TR__RING_CAP / 2 + 1) the
// tasks the caller must move to the global injector: the older half of the
// ring plus s when that half could be claimed, otherwise (a thief is
// mid-steal) just s. *batch_len says how many.
bool tr__ring_push(tr__ring *r, tr__slot *s, tr__slot **batch, uint32_t *batch_len) TR__HIDDEN;

// tr__ring_pop takes the oldest entry (owner only), or NULL.
tr__slot *tr__ring_pop(tr__ring *r) TR__HIDDEN;

// tr__ring_steal moves about half of src into dst (dst's owner calls it)
// and returns one of the stolen entries to run now, or NULL.
tr__slot *tr__ring_steal(tr__ring *src, tr__ring *dst) TR__HIDDEN;

// tr__ring_len is a snapshot of how many entries r holds (any thread).
uint32_t tr__ring_len(tr__ring *r) TR__HIDDEN;

// tr__ring_is_empty: owner's or a thief's snapshot.
static inline bool
tr__ring_is_empty(tr__ring *r)
{
    return tr__ring_len(r) == 0;
}

// ---------------------------------------------------------------------------
// The ops table.

// How a task became runnable, for the scheduler's placement.
enum {
    TR__PUSH_NEW = 0,   // just spawned
    TR__PUSH_WAKE = 1,  // woken (or its cancel requested)
    TR__PUSH_YIELD = 2, // it yielded, spent its budget, or was woken mid-poll
    TR__PUSH_LOCAL = 3, // just spawned by tr_spawn_local: this worker's, wakes no one
};

typedef struct tr__sched_ops {
    const char *name;
    // Bytes of per-worker state (w_sched): allocated zeroed, 64-byte
    // aligned, by tr_rt_new before init and freed after fini.
    size_t state_size;
    // Set up w's queues in its scheduler state (tr__worker_sched, at tr_rt_new).
    void (*init)(tr__worker *w);
    // Release what init allocated (at tr_rt_free, all queues empty).
    void (*fini)(tr__worker *w);
    // A task polled on w made s runnable. w's thread only.
    void (*push)(tr__worker *w, tr__slot *s, int how);
    // s became runnable outside every worker of its runtime (any thread).
    void (*push_remote)(tr_rt *rt, tr__slot *s);
    // The next task from w's own queues, or NULL. w's thread only (or the
    // thread cancelling everything once every worker has stopped).
    tr__slot *(*pop)(tr__worker *w);
    // Take work from other workers into w and return a task to run, or
    // NULL. NULL op: this scheduler does not steal.
    tr__slot *(*steal)(tr__worker *w);
    // How many of victim's tasks a thief could take now, a snapshot (any
    // thread; the parking worker's last look). NULL with steal NULL.
    uint32_t (*stealable)(tr__worker *victim);
    // Tasks waiting in w's queues, a snapshot (any thread).
    uint32_t (*len)(tr__worker *w);
    // How many more tasks w's bounded queue takes without overflowing
    // (UINT32_MAX when unbounded). w's thread only.
    uint32_t (*room)(tr__worker *w);
} tr__sched_ops;

extern const tr__sched_ops tr__sched_ws TR__HIDDEN;
extern const tr__sched_ops tr__sched_rr TR__HIDDEN;
extern const tr__sched_ops tr__sched_hybrid TR__HIDDEN;
extern const tr__sched_ops tr__sched_det TR__HIDDEN;

// Every scheduler a configuration can name: tr_sched_name, tr_sched_parse
// and TROUPE_SCHED read this one table (common.c). Adding a scheduler is a
// file and a row (and its tr_sched_kind in rt.h).
typedef struct tr__sched_entry {
    tr_sched_kind kind;
    const char *name;
    const tr__sched_ops *ops;
} tr__sched_entry;

extern const tr__sched_entry tr__sched_table[] TR__HIDDEN;
extern const size_t tr__sched_count TR__HIDDEN;

// tr__sched_find returns the table's row for kind, or NULL.
const tr__sched_entry *tr__sched_find(tr_sched_kind kind) TR__HIDDEN;

// tr__sched_names writes the table's names as "ws, rr or hybrid" (for
// error messages).
void tr__sched_names(char *buf, size_t len) TR__HIDDEN;

// ---------------------------------------------------------------------------
// Shared by the schedulers (common.c).

uint64_t tr__rng_next(uint64_t *state) TR__HIDDEN;

// The part of a stealing scheduler's per-worker state that thieves use:
// the first member of ws's and hybrid's states, so that a thief reaches a
// victim's ring without knowing which of the two it is.
typedef struct tr__steal_q {
    tr__ring sq_ring;
    uint64_t sq_rng; // victim choice (owner)
} tr__steal_q;

static inline tr__steal_q *
tr__steal_q_of(void *sched_state)
{
    return (tr__steal_q *)sched_state;
}

void tr__steal_q_init(tr__worker *w, tr__steal_q *q) TR__HIDDEN;
// tr__steal_q_push puts s on w's ring, overflowing to the injector, and
// tells the idle workers there is something to steal.
void tr__steal_q_push(tr__worker *w, tr__steal_q *q, tr__slot *s) TR__HIDDEN;
// tr__steal_q_push_quiet is the same push that wakes no one for the ring:
// true when s went on it, false when the ring overflowed to the injector
// (whose push notified, as any injection does).
bool tr__steal_q_push_quiet(tr__worker *w, tr__steal_q *q, tr__slot *s) TR__HIDDEN;
// The ops every stealing scheduler shares: steal (every other worker's
// ring, from a random start), stealable, room.
tr__slot *tr__steal_q_steal(tr__worker *w) TR__HIDDEN;
uint32_t tr__steal_q_stealable(tr__worker *victim) TR__HIDDEN;
uint32_t tr__steal_q_room(tr__worker *w) TR__HIDDEN;
// Ops shared by several schedulers.
void tr__sched_push_inject(tr_rt *rt, tr__slot *s) TR__HIDDEN;
void tr__sched_no_fini(tr__worker *w) TR__HIDDEN;
uint32_t tr__sched_unbounded(tr__worker *w) TR__HIDDEN;

#endif
