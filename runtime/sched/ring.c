// Design notes.
//
// The stealable run queue, following tokio's local queue
// (tokio/src/runtime/scheduler/multi_thread/queue.rs; ideas, not code).
// The owner pushes at rg_tail and pops at the "real" head; both are plain
// monotonically increasing u32 positions, masked into the 256-entry buffer.
// A thief claims a batch by advancing the real head past it with a CAS while
// leaving the "steal" head where it was; it copies the entries into its own
// ring, then moves the steal head up to the real head with a second CAS.
// While steal != real, the owner knows entries between them are still being
// read, so a push never overwrites them (the ring counts as full from the
// steal head) and a second thief backs off. The owner's pop is a CAS on the
// same word, so owner and thieves never hand out one entry twice.
//
// Orders: the owner publishes an entry with a release store of rg_tail; a
// thief reads rg_tail with acquire before copying. Head CASes are acq_rel;
// seq_cst would be stronger than needed and the rule in README's Architecture
// (seq_cst operations rather than fences) is met because no fence is used at all.
// Entries are relaxed atomics so that ThreadSanitizer sees no plain race on
// a position the owner rewrites after a thief has read it.
#include "sched/sched.h"

static inline uint64_t
pack(uint32_t steal, uint32_t real)
{
    return (uint64_t)steal << 32 | real;
}

static inline uint32_t
steal_of(uint64_t h)
{
    return (uint32_t)(h >> 32);
}

static inline uint32_t
real_of(uint64_t h)
{
    return (uint32_t)h;
}

void
tr__ring_init(tr__ring *r)
{
    atomic_init(&r->rg_head, 0);
    atomic_init(&r->rg_tail, 0);
    for (unsigned i = 0; i < TR__RING_CAP; i++) {
        atomic_init(&r->rg_buf[i], NULL);
    }
}

uint32_t
tr__ring_len(tr__ring *r)
{
    uint64_t h = atomic_load_explicit(&r->rg_head, memory_order_acquire);
    uint32_t t = atomic_load_explicit(&r->rg_tail, memory_order_acquire);
    return t - real_of(h);
}

bool
tr__ring_push(tr__ring *r, tr__slot *s, tr__slot **batch, uint32_t *batch_len)
{
    for (;;) {
        // Acquire pairs with the thieves' release CAS: their copies are done
        // before we reuse the positions they read.
        uint64_t h = atomic_load_explicit(&r->rg_head, memory_order_acquire);
        uint32_t steal = steal_of(h), real = real_of(h);
        uint32_t t = atomic_load_explicit(&r->rg_tail, memory_order_relaxed); // ours
        if (t - steal < TR__RING_CAP) {
            atomic_store_explicit(&r->rg_buf[t & TR__RING_MASK], s, memory_order_relaxed);
            // Release pairs with the acquire loads of rg_tail in pop/steal.
            atomic_store_explicit(&r->rg_tail, t + 1, memory_order_release);
            return true;
        }
        if (steal != real) {
            // A thief is copying: it will make room; meanwhile this one task
            // goes to the injector.
            batch[0] = s;
            *batch_len = 1;
            return false;
        }
        // Full: claim the older half and hand it, plus s, to the injector.
        uint32_t half = TR__RING_CAP / 2;
        uint64_t want = pack(real + half, real + half);
        if (!atomic_compare_exchange_strong_explicit(&r->rg_head, &h, want, memory_order_acq_rel,
                                                     memory_order_acquire)) {
            continue; // a thief got in first: there may be room now
        }
        // Pointers only: the tasks themselves are not touched (they were
        // written by other cores; reading them here would miss the cache).
        for (uint32_t i = 0; i < half; i++) {
            batch[i] =
                atomic_load_explicit(&r->rg_buf[(real + i) & TR__RING_MASK], memory_order_relaxed);
        }
        batch[half] = s;
        *batch_len = half + 1;
        return false;
    }
}

tr__slot *
tr__ring_pop(tr__ring *r)
{
    uint64_t h = atomic_load_explicit(&r->rg_head, memory_order_acquire);
    for (;;) {
        uint32_t steal = steal_of(h), real = real_of(h);
        uint32_t t = atomic_load_explicit(&r->rg_tail, memory_order_relaxed); // ours
        if (real == t) {
            return NULL;
        }
        // With no steal in progress both heads move together.
        uint64_t next = steal == real ? pack(real + 1, real + 1) : pack(steal, real + 1);
        if (atomic_compare_exchange_weak_explicit(&r->rg_head, &h, next, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            return atomic_load_explicit(&r->rg_buf[real & TR__RING_MASK], memory_order_relaxed);
        }
    }
}

// steal_batch claims about half of src and copies it into dst's buffer from
// dst_tail on, without publishing it. Returns how many were copied.
static uint32_t
steal_batch(tr__ring *src, tr__ring *dst, uint32_t dst_tail)
{
    uint64_t prev = atomic_load_explicit(&src->rg_head, memory_order_acquire), next;
    uint32_t n, first;
    for (;;) {
        uint32_t steal = steal_of(prev), real = real_of(prev);
        if (steal != real) {
            return 0; // another thief is at work
        }
        // Acquire pairs with the owner's release store: entries up to the
        // tail are written.
        uint32_t t = atomic_load_explicit(&src->rg_tail, memory_order_acquire);
        n = t - real;
        n -= n / 2;
        if (n == 0 || n > TR__RING_CAP / 2) {
            // Empty, or a stale view of a ring that moved on: look again
            // later rather than trust it.
            return 0;
        }
        first = real;
        next = pack(steal, real + n);
        if (atomic_compare_exchange_weak_explicit(&src->rg_head, &prev, next, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            break;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        tr__slot *e =
            atomic_load_explicit(&src->rg_buf[(first + i) & TR__RING_MASK], memory_order_relaxed);
        atomic_store_explicit(&dst->rg_buf[(dst_tail + i) & TR__RING_MASK], e,
                              memory_order_relaxed);
    }
    // Let the owner reuse the positions: steal head catches up with real.
    prev = next;
    for (;;) {
        uint32_t real = real_of(prev);
        TR__ASSERT(steal_of(prev) != real);
        // Release pairs with the owner's acquire load in push.
        if (atomic_compare_exchange_weak_explicit(&src->rg_head, &prev, pack(real, real),
                                                  memory_order_acq_rel, memory_order_acquire)) {
            return n;
        }
    }
}

tr__slot *
tr__ring_steal(tr__ring *src, tr__ring *dst)
{
    uint32_t dst_tail = atomic_load_explicit(&dst->rg_tail, memory_order_relaxed); // ours
    uint64_t dh = atomic_load_explicit(&dst->rg_head, memory_order_acquire);
    if (dst_tail - steal_of(dh) > TR__RING_CAP / 2) {
        return NULL; // no room for a batch: we have work of our own anyway
    }
    uint32_t n = steal_batch(src, dst, dst_tail);
    if (n == 0) {
        return NULL;
    }
    // Run the last stolen entry now; publish the others.
    n--;
    tr__slot *ret =
        atomic_load_explicit(&dst->rg_buf[(dst_tail + n) & TR__RING_MASK], memory_order_relaxed);
    if (n > 0) {
        atomic_store_explicit(&dst->rg_tail, dst_tail + n, memory_order_release);
    }
    return ret;
}
