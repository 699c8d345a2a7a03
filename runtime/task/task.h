// task/task.h: the task layer (README, Architecture: layer 1): task slots,
// the pool they come from, the state word, wakers, join handles and cancel
// (pool.c, task.c); messages and mailboxes (msg.c, mailbox.c: their slabs
// are the pool's kin, and a mailbox wakes its consumer task through its
// waker).
//
// Layers, bottom up: base -> task -> sched -> exec -> reactor -> io, fs,
// sync (tests/integration/layers.sh checks every #include "..."). This
// header may include: base/base.h. Named back-edges, in task.c only:
//   task -> sched: a wake, a start or a yield pushes the task to its
//     runtime's scheduler (the ops table);
//   task -> exec: a task runs in a worker (its counters, the poll
//     context), and a start or cancel from outside the runtime is a
//     command message on the executor's inbox (tr__rt_send).
//
// The task slab. Task slots (a 64-byte header followed by the task's
// state) come from per-shard free lists of fixed-size chunks, named by keys
// {index, generation}; the header's one atomic word holds the generation, the
// task state flags and the reference count.
#ifndef TR_TASK_TASK_H
#define TR_TASK_TASK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <troupe/mailbox.h>
#include <troupe/rt.h>
#include <troupe/task.h>

#include "base/base.h"

typedef struct tr__worker tr__worker;

// Chunks are 256 KiB, aligned to their size, so a slot finds its chunk by
// masking its address. Slot index = chunk id << 11 | slot number, where the
// chunk id indexes one process-wide directory.
#define TR__CHUNK_SHIFT 18
#define TR__CHUNK_SIZE ((size_t)1 << TR__CHUNK_SHIFT)
#define TR__CHUNK_HDR 128
#define TR__SLOT_BITS 12 // 256 KiB / 80-byte slots < 4096
#define TR__SLOT_HDR 64
#define TR__NCLASSES 34

// ---------------------------------------------------------------------------
// The state word: generation (32) | last worker (8) | sleep count (8) |
// refs (4) | flags (12).
#define TR__W_LIVE ((uint64_t)1 << 0)       // allocated (prepared or started)
#define TR__W_STARTED ((uint64_t)1 << 1)    // tr_task_start has run
#define TR__W_SCHED ((uint64_t)1 << 2)      // in a run queue (or on its way)
#define TR__W_RUNNING ((uint64_t)1 << 3)    // being polled
#define TR__W_NOTIFIED ((uint64_t)1 << 4)   // woken while running: requeue
#define TR__W_COMPLETE ((uint64_t)1 << 5)   // finished; outcome stored
#define TR__W_CANCEL ((uint64_t)1 << 6)     // cancel requested
#define TR__W_JOIN_WAKER ((uint64_t)1 << 7) // joiner waker set (owned by completer)
#define TR__W_BOXED ((uint64_t)1 << 8)      // result is {ptr, dtor}, not taken
#define TR__W_CANCELLED ((uint64_t)1 << 9)  // outcome is TR_ECANCELED
// The join handle was consumed (a wait, a poll that returned READY, or a
// release), in the same CAS that checked its generation: every copy of
// the handle is stale from then on, even while the task lives.
#define TR__W_JOINED ((uint64_t)1 << 10)
#define TR__W_REF_SHIFT 12
#define TR__W_REF_ONE ((uint64_t)1 << TR__W_REF_SHIFT)
#define TR__W_REF_MASK ((uint64_t)0xf << TR__W_REF_SHIFT)
#define TR__W_SLEEP_SHIFT 16
#define TR__W_SLEEP_ONE ((uint64_t)1 << TR__W_SLEEP_SHIFT)
#define TR__W_SLEEP_MASK ((uint64_t)0xff << TR__W_SLEEP_SHIFT) // saturates
#define TR__W_WORKER_SHIFT 24 // the worker that last polled it, + 1 (0: none)
#define TR__W_WORKER_MASK ((uint64_t)0xff << TR__W_WORKER_SHIFT)
#define TR__W_GEN_SHIFT 32

static inline uint32_t
tr__w_gen(uint64_t w)
{
    return (uint32_t)(w >> TR__W_GEN_SHIFT);
}

static inline unsigned
tr__w_refs(uint64_t w)
{
    return (unsigned)((w & TR__W_REF_MASK) >> TR__W_REF_SHIFT);
}

static inline unsigned
tr__w_sleeps(uint64_t w)
{
    return (unsigned)((w & TR__W_SLEEP_MASK) >> TR__W_SLEEP_SHIFT);
}

// tr__w_worker returns the worker that last polled the task, or -1.
static inline int
tr__w_worker(uint64_t w)
{
    return (int)((w & TR__W_WORKER_MASK) >> TR__W_WORKER_SHIFT) - 1;
}

static inline uint32_t
tr__key_index(uint64_t key)
{
    return (uint32_t)key;
}

static inline uint32_t
tr__key_gen(uint64_t key)
{
    return (uint32_t)(key >> 32);
}

// The slot header: exactly one cache line. The state follows it.
typedef struct tr__slot {
    // Generation, flags, refs. Every transition is one CAS or RMW.
    _Atomic uint64_t s_word;
    // Kind of task. Written while the slot is prepared (one thread), read by
    // the worker that polls it and, racily but atomically, by the dump.
    _Atomic(const tr_task_spec *) s_spec;
    // Link in exactly one list at a time: a run queue, the injector or a
    // free list. Owned by whoever holds the slot in that list.
    struct tr__slot *s_next;
    // The result. Written by the polling worker before the completing CAS
    // (release); read by the joiner after it sees COMPLETE (acquire).
    union {
        tr_value v;
        struct {
            void *ptr;
            tr_dtor dtor;
        } box;
    } s_result;
    // The joiner's waker. Owned by the joiner while JOIN_WAKER is clear and
    // by the completer while it is set; atomics because the completer may
    // read a value that a failed CAS then discards.
    _Atomic(const tr_waker_ops *) s_join_ops;
    _Atomic(const void *) s_join_data;
    // Diagnostics for the dump: polls, and the coarse time of the last one.
    _Atomic uint32_t s_polls;
    _Atomic uint32_t s_last_poll_ms;
} tr__slot;

_Static_assert(sizeof(tr__slot) == TR__SLOT_HDR, "slot header must be one cache line");

typedef struct tr__pool tr__pool;

typedef struct tr__chunk {
    // The pool using this chunk, NULL while it waits in the process cache.
    // Set under the global chunk lock; read (relaxed) through any slot.
    _Atomic(tr__pool *) c_pool;
    struct tr__chunk *c_next; // the pool's chunk list, or the cache list
    uint32_t c_id;            // index in the process-wide chunk directory
    uint32_t c_slot_size;
    uint32_t c_nslots;
    uint32_t c_recip; // ceil(2^32 / c_slot_size): index without a division
    uint16_t c_class;
    uint16_t c_shard;
    // Every generation ever used in this chunk (at any slot, in any size
    // class) is at most this; carving starts above it, so keys of earlier
    // tasks never match a later one. Updated when the chunk leaves a pool.
    uint32_t c_gen_floor;
    // Slots carved so far. Written by the owning shard only.
    _Atomic uint32_t c_carved;
} tr__chunk;

typedef struct tr__shard_class {
    tr__slot *sc_free;             // owner only
    tr__chunk *sc_chunk;           // owner only: chunk being carved
    _Atomic(tr__slot *) sc_remote; // frees from other threads: CAS push,
                                   // taken whole by the owner (exchange)
} tr__shard_class;

typedef struct tr__shard {
    _Alignas(64) tr__shard_class sh_cls[TR__NCLASSES];
    // Spawn credits this worker holds, taken from p_avail in batches so
    // that spawns and frees do not all hit one shared counter. Written by
    // the owner (relaxed); read by stats.
    _Atomic int64_t sh_credit;
} tr__shard;

struct tr__pool {
    _Atomic(tr__chunk *) p_chunks; // this pool's chunks; release-published
    tr__mutex p_grow_lock;         // serialises this pool's chunk creation
    tr__mutex p_ext_lock;          // the external shard's owner lock
    uint64_t p_limit;              // most live tasks (max_tasks)
    unsigned p_nshards;            // workers + 1 (the last is external)
    tr__shard *p_shards;
    uint8_t p_class_of[257]; // slot size / 16 -> class, up to 4096
    int64_t p_batch;         // credits a worker takes or returns at once
    // Spawn credits not held by any worker: p_limit minus live slots minus
    // credits in workers' hands. Threads that own no shard use it directly.
    _Alignas(64) _Atomic int64_t p_avail;
};

tr_err tr__pool_init(tr__pool *p, unsigned nworkers, uint64_t max_tasks) TR__HIDDEN;
void tr__pool_fini(tr__pool *p) TR__HIDDEN;

// tr__pool_alloc returns a slot whose word is LIVE with one ref, its
// generation bumped, and state zeroed, from shard `shard`; the caller owns
// that shard (a worker its own; the external shard under p_ext_lock).
// TR_EEXHAUSTED when p_limit slots are live (with several workers, up to
// 2 * p_batch per worker sooner: credits another worker holds are not
// taken back).
tr_err tr__pool_alloc(tr__pool *p, unsigned shard, size_t state_size, tr__slot **out) TR__HIDDEN;

// tr__pool_free returns a slot whose refs reached zero. `shard` is the
// caller's own shard, or p_nshards for a thread that owns none.
void tr__pool_free(tr__pool *p, unsigned shard, tr__slot *s) TR__HIDDEN;

// tr__pool_lookup returns the slot a key's index names, in any pool of the
// process (indexes and generations are process-wide, so a key names one
// task for good), or NULL when no such slot is carved. The caller checks the
// generation in the word.
tr__slot *tr__pool_lookup(uint32_t index) TR__HIDDEN;

// tr__pool_foreach calls fn for every carved slot (racy snapshot).
void tr__pool_foreach(tr__pool *p, void (*fn)(tr__slot *s, void *arg), void *arg) TR__HIDDEN;

// tr__pool_scan calls fn for the carved slots of p whose index is at least
// from, in index order, until fn returns false (racy snapshot, as foreach).
// Returns the index after the slot fn stopped at, or 0 when it saw the last.
// Indexes stay put while the pool lives, so a listing can go on from there.
uint64_t tr__pool_scan(tr__pool *p, uint64_t from, bool (*fn)(tr__slot *s, void *arg),
                       void *arg) TR__HIDDEN;

uint64_t tr__pool_live(tr__pool *p) TR__HIDDEN;
void tr__pool_usage(tr__pool *p, uint64_t *slots, uint64_t *bytes) TR__HIDDEN;

static inline tr__chunk *
tr__slot_chunk(const tr__slot *s)
{
    return (tr__chunk *)((uintptr_t)s & ~(uintptr_t)(TR__CHUNK_SIZE - 1));
}

static inline uint32_t
tr__slot_index(const tr__slot *s)
{
    const tr__chunk *c = tr__slot_chunk(s);
    // Offsets are exact multiples of the slot size, so the reciprocal
    // multiply gives the exact quotient.
    uint64_t off = (uintptr_t)s - (uintptr_t)c - TR__CHUNK_HDR;
    uint32_t n = (uint32_t)((off * c->c_recip) >> 32);
    return c->c_id << TR__SLOT_BITS | n;
}

static inline uint64_t
tr__slot_key(const tr__slot *s, uint64_t word)
{
    return (uint64_t)tr__w_gen(word) << 32 | tr__slot_index(s);
}

static inline void *
tr__slot_state(tr__slot *s)
{
    return (char *)s + TR__SLOT_HDR;
}

static inline tr__slot *
tr__state_slot(void *state)
{
    return (tr__slot *)((char *)state - TR__SLOT_HDR);
}

// task.c: polling, completion, wakers and join, for the worker loop.
void tr__task_run(tr__worker *w, tr__slot *s) TR__HIDDEN;
void tr__task_cancel_now(tr__worker *w, tr__slot *s) TR__HIDDEN;
void tr__task_schedule(tr_rt *rt, tr__slot *s) TR__HIDDEN;
void tr__slot_release(tr_rt *rt, tr__slot *s, uint64_t clear) TR__HIDDEN;
tr_rt *tr__slot_rt(tr__slot *s) TR__HIDDEN;
// Task wakers are {&tr__task_waker_ops, key}: the key names the task
// process-wide, and the wake finds the runtime through the slot.
extern const tr_waker_ops tr__task_waker_ops TR__HIDDEN;
void tr__take_outcome(tr__slot *s, uint64_t word, tr_outcome *out) TR__HIDDEN;
// tr__join_register sets wk as s's joiner waker unless s completed first:
// true when registered (wk runs once at completion), false when complete.
bool tr__join_register(tr__slot *s, tr_waker wk) TR__HIDDEN;
// tr__task_precancel marks a prepared task (tr_task_new, not yet started)
// cancelled: once started it is never polled, its drop runs and its join
// says TR_ECANCELED. The caller owns the prepared task.
void tr__task_precancel(void *state) TR__HIDDEN;
// tr__task_collect takes the outcome of the completed task key names, as
// a join would, and drops the handle's reference: for a joiner that was
// woken by its registered waker (tr__join_register). Returns whether the
// result was boxed ({ptr, dtor}).
bool tr__task_collect(tr_rt *rt, uint64_t key, tr_outcome *out) TR__HIDDEN;
// tr__rt_cancel_cmd carries out a Cancel message on the executor (w).
void tr__rt_cancel_cmd(tr__worker *w, uint64_t key) TR__HIDDEN;

// ---------------------------------------------------------------------------
// The context of one poll, on the worker's stack (task.c's tr__task_run).
struct tr_cx {
    tr_rt *cx_rt;
    tr__worker *cx_w;
    tr__slot *cx_slot;
    uint64_t cx_key;
    uint32_t cx_budget;
    bool cx_yielded; // the task asked to be polled again (yield, budget)
    bool cx_boxed;   // the result is {ptr, dtor}
};

// tr__task_prepare is the first half of tr_spawn: tr_task_new, then
// init(state, arg), or spec->size bytes copied from arg when init is NULL
// (zeroed when both are). On an error init has not run. tr_rt_run and
// tr_group_spawn start what it made in their own ways.
tr_err tr__task_prepare(tr_rt *rt, const tr_task_spec *spec, void (*init)(void *state, void *arg),
                        void *arg, void **state) TR__HIDDEN;

// Slot accessors for the layers above (exec/, sched/): only task/ names a
// slot's fields, but for s_next, which belongs to the queue holding the
// slot (see tr__slot).

// tr__slot_word reads the state word (acquire).
static inline uint64_t
tr__slot_word(tr__slot *s)
{
    return atomic_load_explicit(&s->s_word, memory_order_acquire);
}

static inline bool
tr__slot_is_complete(tr__slot *s)
{
    return (tr__slot_word(s) & TR__W_COMPLETE) != 0;
}

// tr__slot_sleeps returns how often the task has had to sleep (saturating).
static inline unsigned
tr__slot_sleeps(tr__slot *s)
{
    return tr__w_sleeps(atomic_load_explicit(&s->s_word, memory_order_relaxed));
}

// tr__slot_last_worker returns the worker that last polled the task, or -1.
static inline int
tr__slot_last_worker(tr__slot *s)
{
    return tr__w_worker(atomic_load_explicit(&s->s_word, memory_order_relaxed));
}

// tr__slot_flag_cancel sets the cancel flag of a slot that is queued (so
// never free): the next run carries the cancel out instead of polling.
static inline void
tr__slot_flag_cancel(tr__slot *s)
{
    atomic_fetch_or_explicit(&s->s_word, TR__W_CANCEL, memory_order_relaxed);
}

// tr__slot_claim_cancel claims a started task that is neither complete nor
// being polled, as a poll would (RUNNING; SCHED stays, so that a queued slot
// is freed only by whoever pops it), for the shutdown's sweep to cancel it
// (tr__task_cancel_now): false when there is nothing to claim.
static inline bool
tr__slot_claim_cancel(tr__slot *s)
{
    uint64_t old = atomic_load_explicit(&s->s_word, memory_order_acquire);
    for (;;) {
        if ((old & (TR__W_LIVE | TR__W_STARTED)) != (TR__W_LIVE | TR__W_STARTED) ||
            (old & (TR__W_COMPLETE | TR__W_RUNNING))) {
            return false;
        }
        if (atomic_compare_exchange_weak_explicit(&s->s_word, &old, old | TR__W_RUNNING,
                                                  memory_order_acquire, memory_order_acquire)) {
            return true;
        }
    }
}

// tr__slot_destroy_result destroys the boxed result of a completed task that
// nobody will join (tr_rt_free).
void tr__slot_destroy_result(tr__slot *s) TR__HIDDEN;

// tr__slot_info describes the task in s as of now_ms (the runtime's coarse
// ms): false when s holds no live task.
bool tr__slot_info(tr__slot *s, uint64_t now_ms, tr_task_info *info) TR__HIDDEN;

// tr__cx_worker returns the worker polling the task of cx.
static inline tr__worker *
tr__cx_worker(const tr_cx *cx)
{
    return cx->cx_w;
}

// msg.c: the message slabs behind tr_msg_alloc (troupe/mailbox.h): size
// classes, and the counters white-box tests and tr_trim use.

// Slab classes are 1 .. TR__MSG_NCLASSES, of 32 << (class - 1) bytes (32 to
// TR_MSG_SMALL_MAX); 0 is TR_MSG_CLASS_NONE; a larger message is LARGE.
#define TR__MSG_NCLASSES 8
_Static_assert(TR__MSG_NCLASSES == TR_MSG_NSLAB, "mailbox.h says how many slab classes");
#define TR__MSG_CLASS_LARGE (TR__MSG_NCLASSES + 1)

_Static_assert((32u << (TR__MSG_NCLASSES - 1)) == TR_MSG_SMALL_MAX, "classes end at SMALL_MAX");

// tr__msg_zalloc is tr_msg_alloc with the bytes after the header zeroed and
// m_type set: the runtime's own messages (executor commands, replies).
tr_msg *tr__msg_zalloc(size_t size, const void *type) TR__HIDDEN;

// tr__msg_class_of returns the class a message of size bytes gets.
unsigned tr__msg_class_of(size_t size) TR__HIDDEN;

// tr__msg_class_size returns the bytes of an object of a slab class.
size_t tr__msg_class_size(unsigned cls) TR__HIDDEN;

// tr__msg_batch returns how many objects of a class move between a thread's
// cache and the depot at once (a thread caches at most two batches).
unsigned tr__msg_batch(unsigned cls) TR__HIDDEN;

// Counters of one slab class. Objects are carved from slabs; a free object
// is in the depot or in some thread's cache; the rest are live messages.
typedef struct tr__msg_stats {
    uint64_t ms_slabs;  // slabs of this class
    uint64_t ms_carved; // objects in them
    uint64_t ms_depot;  // free objects in the depot
    uint64_t ms_cached; // free objects in the calling thread's cache
} tr__msg_stats;

// tr__msg_stats_get reads the counters of class cls (1 .. TR__MSG_NCLASSES).
void tr__msg_stats_get(unsigned cls, tr__msg_stats *out) TR__HIDDEN;

// tr__msg_large_live returns the number of LARGE messages not yet freed.
uint64_t tr__msg_large_live(void) TR__HIDDEN;

// tr__msg_flush moves the calling thread's cache to the depot (what a
// thread's exit does).
void tr__msg_flush(void) TR__HIDDEN;

// tr__msg_trim flushes the calling thread's cache, then returns to the
// system the slabs of every class whose objects are all in the depot (no
// live message, none cached by a thread). tr_trim calls it.
void tr__msg_trim(void) TR__HIDDEN;

#endif
