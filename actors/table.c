// Design notes.
//
// The table maps the actor part of an address to what it names. It is a
// directory of chunks of 4096 entries (64 KiB each), allocated as they are
// first needed and never freed, so an entry is type-stable: a stale id can
// always be checked against the entry's word without touching freed memory
// (the same argument as the task pool's slots). Index 0 is never used, so
// no id is 0.
//
// Entries are handed out from a per-thread cache of free indices (no lock
// on the hot path: a million spawns touch the global list once per batch),
// refilled from and spilled to one global stack of indices under a mutex.
// A thread's cache goes back to the global stack when the thread exits.
#include <pthread.h>
#include <string.h>

#include "actor_int.h"

#define CHUNK_SHIFT 12
#define CHUNK_LEN ((uint32_t)1 << CHUNK_SHIFT)
#define DIR_LEN ((uint32_t)1 << 18) // 2^30 entries in all
#define BATCH 64
#define CACHE_MAX (2 * BATCH)

static _Atomic(tra_entry *) g_dir[DIR_LEN];

static struct {
    pthread_mutex_t lock;
    uint32_t *free; // free indices (a stack)
    size_t nfree, cap;
    uint32_t next; // the first index never handed out
} g = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, 1};

typedef struct cache {
    uint32_t n;
    uint32_t idx[CACHE_MAX];
} cache;

static __thread cache *t_cache;
static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static inline tra_entry *
entry_at(uint32_t idx)
{
    tra_entry *c = atomic_load_explicit(&g_dir[idx >> CHUNK_SHIFT], memory_order_acquire);
    return c == NULL ? NULL : &c[idx & (CHUNK_LEN - 1)];
}

// spill_locked moves n indices of c onto the global stack.
static void
spill_locked(cache *c, uint32_t n)
{
    if (g.nfree + n > g.cap) {
        size_t cap = g.cap == 0 ? 1024 : g.cap * 2;
        while (cap < g.nfree + n) {
            cap *= 2;
        }
        uint32_t *f = realloc(g.free, cap * sizeof *f);
        if (f == NULL) {
            tra_panic("out of memory (address table)");
        }
        g.free = f;
        g.cap = cap;
    }
    if (n > 0) {
        memcpy(g.free + g.nfree, c->idx + c->n - n, n * sizeof(uint32_t));
    }
    g.nfree += n;
    c->n -= n;
}

static void
cache_exit(void *arg)
{
    cache *c = arg;
    pthread_mutex_lock(&g.lock);
    spill_locked(c, c->n);
    pthread_mutex_unlock(&g.lock);
    free(c);
}

static void
key_create(void)
{
    if (pthread_key_create(&g_key, cache_exit) != 0) {
        tra_panic("pthread_key_create failed");
    }
}

static cache *
my_cache(void)
{
    cache *c = t_cache;
    if (TRA_UNLIKELY(c == NULL)) {
        pthread_once(&g_once, key_create);
        c = calloc(1, sizeof *c);
        if (c == NULL) {
            tra_panic("out of memory (address table)");
        }
        pthread_setspecific(g_key, c);
        t_cache = c;
    }
    return c;
}

// refill takes a batch of free indices, or carves new ones (making their
// chunk when it is new).
static void
refill(cache *c)
{
    pthread_mutex_lock(&g.lock);
    uint32_t n = g.nfree < BATCH ? (uint32_t)g.nfree : BATCH;
    if (n > 0) {
        memcpy(c->idx + c->n, g.free + g.nfree - n, n * sizeof(uint32_t));
    }
    g.nfree -= n;
    c->n += n;
    while (c->n < BATCH) {
        uint32_t idx = g.next;
        if ((idx >> CHUNK_SHIFT) >= DIR_LEN) {
            if (c->n > 0) {
                break;
            }
            tra_panic("address table full (%u entries)", idx);
        }
        if ((idx & (CHUNK_LEN - 1)) == 0 || idx == 1) {
            uint32_t ci = idx >> CHUNK_SHIFT;
            if (atomic_load_explicit(&g_dir[ci], memory_order_relaxed) == NULL) {
                tra_entry *chunk = calloc(CHUNK_LEN, sizeof *chunk);
                if (chunk == NULL) {
                    tra_panic("out of memory (address table)");
                }
                for (uint32_t i = 0; i < CHUNK_LEN; i++) {
                    // Generation 1, closed: an id of a never-used entry is stale.
                    atomic_init(&chunk[i].e_word, ((uint64_t)1 << 32) | TRA_E_CLOSED);
                }
                // Release: pairs with entry_at's acquire.
                atomic_store_explicit(&g_dir[ci], chunk, memory_order_release);
            }
        }
        g.next++;
        c->idx[c->n++] = idx;
    }
    pthread_mutex_unlock(&g.lock);
}

uint64_t
tra_table_alloc(void *ptr)
{
    cache *c = my_cache();
    if (c->n == 0) {
        refill(c);
    }
    uint32_t idx = c->idx[--c->n];
    tra_entry *e = entry_at(idx);
    uint64_t w = atomic_load_explicit(&e->e_word, memory_order_relaxed);
    atomic_store_explicit(&e->e_ptr, ptr, memory_order_relaxed);
    uint64_t gen = w >> 32;
    // Release: an acquirer that sees the entry open sees ptr.
    atomic_store_explicit(&e->e_word, gen << 32, memory_order_release);
    return gen << 32 | idx;
}

tra_entry *
tra_table_acquire(uint64_t id, void **ptr)
{
    uint32_t idx = (uint32_t)id;
    if (TRA_UNLIKELY(idx == 0 || idx >= (DIR_LEN << CHUNK_SHIFT))) {
        return NULL;
    }
    tra_entry *e = entry_at(idx);
    if (TRA_UNLIKELY(e == NULL)) {
        return NULL;
    }
    uint64_t gen = id >> 32;
    uint64_t w = atomic_load_explicit(&e->e_word, memory_order_acquire);
    do {
        if ((w >> 32) != gen || (w & TRA_E_CLOSED) != 0) {
            return NULL;
        }
        if (TRA_UNLIKELY((w & TRA_E_COUNT) == TRA_E_COUNT)) {
            tra_panic("address table: 2^31 holders of one entry");
        }
        // Acquire: pairs with the release of tra_table_alloc (ptr and what
        // it points at are set up); the hold keeps it alive.
    } while (!atomic_compare_exchange_weak_explicit(&e->e_word, &w, w + 1, memory_order_acquire,
                                                    memory_order_acquire));
    *ptr = atomic_load_explicit(&e->e_ptr, memory_order_relaxed);
    return e;
}

bool
tra_table_release(tra_entry *e)
{
    // acq_rel: what the holder did is visible to whoever finalises.
    uint64_t old = atomic_fetch_sub_explicit(&e->e_word, 1, memory_order_acq_rel);
    return (old & TRA_E_COUNT) == 1 && (old & TRA_E_CLOSED) != 0;
}

bool
tra_table_close(uint64_t id)
{
    tra_entry *e = entry_at((uint32_t)id);
    uint64_t old = atomic_fetch_or_explicit(&e->e_word, TRA_E_CLOSED, memory_order_acq_rel);
    if ((old >> 32) != (id >> 32) || (old & TRA_E_CLOSED) != 0) {
        tra_panic("tra_table_close(%#llx): not open", (unsigned long long)id);
    }
    return (old & TRA_E_COUNT) == 0;
}

uint32_t
tra_table_holders(uint64_t id)
{
    tra_entry *e = entry_at((uint32_t)id);
    return (uint32_t)(atomic_load_explicit(&e->e_word, memory_order_acquire) & TRA_E_COUNT);
}

void
tra_table_free(uint64_t id)
{
    uint32_t idx = (uint32_t)id;
    tra_entry *e = entry_at(idx);
    uint64_t w = atomic_load_explicit(&e->e_word, memory_order_acquire);
    if ((w >> 32) != (id >> 32) || (w & TRA_E_COUNT) != 0 || (w & TRA_E_CLOSED) == 0) {
        tra_panic("tra_table_free(%#llx): word %#llx", (unsigned long long)id,
                  (unsigned long long)w);
    }
    uint64_t gen = (w >> 32) + 1;
    atomic_store_explicit(&e->e_ptr, NULL, memory_order_relaxed);
    // Closed under the next generation: ids of the old one are stale, and
    // nothing can acquire the entry until it is handed out again.
    atomic_store_explicit(&e->e_word, (gen << 32) | TRA_E_CLOSED, memory_order_release);
    if (gen == UINT32_MAX) {
        return; // retired: its generation would wrap
    }
    cache *c = my_cache();
    if (c->n == CACHE_MAX) {
        pthread_mutex_lock(&g.lock);
        spill_locked(c, BATCH);
        pthread_mutex_unlock(&g.lock);
    }
    c->idx[c->n++] = idx;
}
