// Design notes.
//
// The pool hands out task slots: a 64-byte header followed by the task's
// state, in 34 size classes from 80 bytes to 64 KiB (16-byte steps up to
// 192, then 224, so that a small task costs what it uses: an idle task parked on a
// oneshot is an 80-byte slot; headers then share cache lines with their
// neighbours', a price paid only by tasks that small). Slots are carved from
// 256 KiB chunks aligned to their size, so a slot finds its chunk (and the
// chunk its pool, size and id) by masking its own address, and a key's index
// finds its slot through the process-wide chunk directory with two loads and
// a multiply.
//
// Memory is type-stable: a pool's chunks stay mapped while it lives, so a
// stale key can always be checked against the slot's word without touching
// freed memory. Every free bumps the generation in that word, which makes
// every key of the old task fail its compare-and-swap, and generations carry
// on when a chunk is reused by a later pool. A slot whose generation would
// wrap is retired instead of reused.
//
// Each worker owns a shard: per class, a free list only it touches (no
// atomics), the chunk it is carving, and a remote-free stack that other
// threads push onto with a CAS and that the owner takes whole with one
// exchange (so there is no single-node pop and no ABA). Threads that are not
// workers share one more shard under a mutex; that path is not hot. The only
// global lock is taken when a new chunk is created.
#include "task/task.h"

#include <troupe/rt.h>

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static const uint32_t class_size[TR__NCLASSES] = {
    80,   96,   112,  128,  144,   160,   176,   192,   224,   256,   320,  384,
    448,  512,  640,  768,  896,   1024,  1280,  1536,  1792,  2048,  2560, 3072,
    3584, 4096, 6144, 8192, 12288, 16384, 24576, 32768, 49152, 65536,
};

#define MAX_DIR ((uint32_t)1 << (32 - TR__SLOT_BITS))

// A chunk whose floor passed this is retired with its id: its slots could
// not get fresh generations for long.
#define GEN_FLOOR_MAX (UINT32_MAX - ((uint32_t)1 << 20))

static int
class_for(const tr__pool *p, size_t need)
{
    if (need <= 4096) {
        return p->p_class_of[(need + 15) / 16];
    }
    for (int c = 0; c < TR__NCLASSES; c++) {
        if (class_size[c] >= need) {
            return c;
        }
    }
    return -1;
}

// ---------------------------------------------------------------------------
// The process-wide chunk directory and cache.
//
// Chunk ids index one directory for the whole process, so a key {index,
// generation} names one task for good, whatever runtime it belongs to, and
// a join handle needs nothing but the key. Chunks of a freed pool wait in a
// cache for the next pool: reusing them spares a new runtime the page
// faults (and the kernel's page clearing) of fresh memory, which cost half
// the time of a million-task burst. Generations carry on across reuse, so
// keys of the old tasks stay stale. The cache is capped by
// TROUPE_POOL_CACHE_MB (default 512); tr_trim() gives it all back, and a
// chunk given back leaves the directory (its id is reused later).

static struct {
    tr__mutex lock;            // everything below
    _Atomic(tr__chunk *) *dir; // MAX_DIR entries, mapped lazily
    uint32_t *floor;           // per id: c_gen_floor of a chunk given back
    _Atomic uint32_t used;     // directory entries ever used; release-published
    uint32_t *free_ids;        // ids of chunks given back, for reuse
    uint32_t nfree_ids;
    tr__chunk *cache; // chunks of freed pools, linked by c_next
    size_t cache_count;
    size_t cache_cap; // in chunks; SIZE_MAX until read from the env
} g = {TR__MUTEX_INIT, NULL, NULL, 0, NULL, 0, NULL, 0, SIZE_MAX};

static void *
map_aligned_chunk(void)
{
    // Map twice the size and trim, to get a chunk aligned to its size.
    size_t len = 2 * TR__CHUNK_SIZE;
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        return NULL;
    }
    uintptr_t a = ((uintptr_t)m + TR__CHUNK_SIZE - 1) & ~(uintptr_t)(TR__CHUNK_SIZE - 1);
    size_t head = a - (uintptr_t)m;
    if (head > 0) {
        munmap(m, head);
    }
    size_t tail = len - head - TR__CHUNK_SIZE;
    if (tail > 0) {
        munmap((char *)a + TR__CHUNK_SIZE, tail);
    }
    return (void *)a;
}

// chunk_get returns a chunk with a directory id, cached or fresh. Under g.lock.
static tr__chunk *
chunk_get(void)
{
    tr__chunk *c = g.cache;
    if (c != NULL) {
        g.cache = c->c_next;
        g.cache_count--;
        return c;
    }
    if (g.dir == NULL) {
        void *dir = mmap(NULL, (size_t)MAX_DIR * sizeof(tr__chunk *), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        void *floor = mmap(NULL, (size_t)MAX_DIR * sizeof(uint32_t), PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (dir == MAP_FAILED || floor == MAP_FAILED) {
            if (dir != MAP_FAILED) {
                munmap(dir, (size_t)MAX_DIR * sizeof(tr__chunk *));
            }
            if (floor != MAP_FAILED) {
                munmap(floor, (size_t)MAX_DIR * sizeof(uint32_t));
            }
            return NULL;
        }
        g.dir = dir;
        g.floor = floor;
        g.free_ids = NULL;
    }
    uint32_t id;
    uint32_t used = atomic_load_explicit(&g.used, memory_order_relaxed);
    if (g.nfree_ids > 0) {
        id = g.free_ids[--g.nfree_ids];
    } else if (used < MAX_DIR) {
        id = used;
    } else {
        return NULL;
    }
    c = map_aligned_chunk();
    if (c == NULL) {
        if (id != used) {
            g.nfree_ids++;
        }
        return NULL;
    }
    c->c_id = id;
    c->c_gen_floor = g.floor[id]; // 0 for an id never used
    atomic_init(&c->c_carved, 0);
    // Pairs with the acquire load in tr__pool_lookup.
    atomic_store_explicit(&g.dir[id], c, memory_order_release);
    if (id == used) {
        // Pairs with the acquire load in tr__pool_lookup.
        atomic_store_explicit(&g.used, used + 1, memory_order_release);
    }
    return c;
}

// chunk_unmap gives a chunk back to the system. Under g.lock. Its id keeps
// the generation floor, so a later chunk with that id starts above it; an id
// whose generations are used up is never reused.
static void
chunk_unmap(tr__chunk *c)
{
    atomic_store_explicit(&g.dir[c->c_id], NULL, memory_order_release);
    g.floor[c->c_id] = c->c_gen_floor;
    if (g.free_ids == NULL) {
        g.free_ids = tr__alloc(sizeof(uint32_t) * MAX_DIR / 64);
    }
    if (c->c_gen_floor < GEN_FLOOR_MAX && g.nfree_ids < MAX_DIR / 64) {
        g.free_ids[g.nfree_ids++] = c->c_id;
    }
    munmap(c, TR__CHUNK_SIZE);
}

// raise_floor records in c every generation its slots have used.
static void
raise_floor(tr__chunk *c)
{
    uint32_t carved = atomic_load_explicit(&c->c_carved, memory_order_acquire);
    uint32_t floor = c->c_gen_floor;
    for (uint32_t j = 0; j < carved; j++) {
        tr__slot *s = (tr__slot *)((char *)c + TR__CHUNK_HDR + (size_t)j * c->c_slot_size);
        uint32_t gen = tr__w_gen(atomic_load_explicit(&s->s_word, memory_order_relaxed));
        if (gen > floor) {
            floor = gen;
        }
    }
    c->c_gen_floor = floor;
}

static void
chunk_put(tr__chunk *c)
{
    if (g.cache_cap == SIZE_MAX) {
        const char *env = getenv("TROUPE_POOL_CACHE_MB");
        size_t mb = env != NULL ? (size_t)strtoull(env, NULL, 10) : 512;
        g.cache_cap = mb * ((size_t)1 << 20) / TR__CHUNK_SIZE;
    }
    raise_floor(c);
    // Nobody may reach its slots any more: lookups now fail.
    atomic_store_explicit(&c->c_carved, 0, memory_order_release);
    atomic_store_explicit(&c->c_pool, NULL, memory_order_relaxed);
    if (g.cache_count < g.cache_cap && c->c_gen_floor < GEN_FLOOR_MAX) {
        c->c_next = g.cache;
        g.cache = c;
        g.cache_count++;
    } else {
        chunk_unmap(c);
    }
}

void
tr_trim(void)
{
    tr__mutex_lock(&g.lock);
    while (g.cache != NULL) {
        tr__chunk *c = g.cache;
        g.cache = c->c_next;
        chunk_unmap(c);
    }
    g.cache_count = 0;
    tr__mutex_unlock(&g.lock);
    tr__msg_trim();
}

// ---------------------------------------------------------------------------
// Pools.

tr_err
tr__pool_init(tr__pool *p, unsigned nworkers, uint64_t max_tasks)
{
    memset(p, 0, sizeof(*p));
    p->p_nshards = nworkers + 1;
    p->p_shards = aligned_alloc(64, sizeof(tr__shard) * p->p_nshards);
    if (p->p_shards == NULL) {
        return TR_ENOMEM;
    }
    memset(p->p_shards, 0, sizeof(tr__shard) * p->p_nshards);
    int c = 0;
    for (unsigned i = 0; i <= 256; i++) {
        while (class_size[c] < i * 16) {
            c++;
        }
        p->p_class_of[i] = (uint8_t)c;
    }
    p->p_limit = max_tasks;
    // Small limits stay exact (batch 1); large ones batch 64 credits.
    p->p_batch = (int64_t)(max_tasks / 1024);
    p->p_batch = p->p_batch < 1 ? 1 : (p->p_batch > 64 ? 64 : p->p_batch);
    atomic_init(&p->p_avail, (int64_t)max_tasks);
    return TR_OK;
}

void
tr__pool_fini(tr__pool *p)
{
    tr__chunk *c = atomic_load_explicit(&p->p_chunks, memory_order_acquire);
    tr__mutex_lock(&g.lock);
    while (c != NULL) {
        tr__chunk *next = c->c_next;
        chunk_put(c);
        c = next;
    }
    tr__mutex_unlock(&g.lock);
    atomic_store_explicit(&p->p_chunks, NULL, memory_order_relaxed);
    free(p->p_shards);
    p->p_shards = NULL;
}

static tr_err
new_chunk(tr__pool *p, unsigned shard, int cls, tr__chunk **out)
{
    tr_err rv = TR_OK;
    tr__chunk *c = NULL;
    tr__mutex_lock(&p->p_grow_lock);
    // (A pool's chunks are all made under its lock; the global lock below
    // guards the directory and the cache.)
    uint32_t size = class_size[cls];
    uint32_t nslots = (uint32_t)((TR__CHUNK_SIZE - TR__CHUNK_HDR) / size);
    tr__mutex_lock(&g.lock);
    c = chunk_get();
    if (c != NULL) {
        atomic_store_explicit(&c->c_pool, p, memory_order_relaxed);
    }
    tr__mutex_unlock(&g.lock);
    if (c == NULL) {
        rv = TR_ENOMEM;
        goto out;
    }
    c->c_slot_size = size;
    c->c_recip = (uint32_t)((((uint64_t)1 << 32) + size - 1) / size);
    c->c_nslots = nslots;
    c->c_class = (uint16_t)cls;
    c->c_shard = (uint16_t)shard;
    c->c_next = atomic_load_explicit(&p->p_chunks, memory_order_relaxed);
    // Pairs with the acquire loads in tr__pool_foreach and tr__pool_usage.
    atomic_store_explicit(&p->p_chunks, c, memory_order_release);
    *out = c;
out:
    tr__mutex_unlock(&p->p_grow_lock);
    return rv;
}

// Credits. A worker spends its own (no shared write) and refills from
// p_avail a batch at a time; a free adds to the freeing worker's credits
// (they are fungible) and returns a batch when it holds too many. Threads
// that own no shard use p_avail directly. Relaxed: the counts are only
// compared with the limit.
static bool
take_credit(tr__pool *p, unsigned shard)
{
    if (shard + 1 >= p->p_nshards) { // a thread that owns no worker shard
        if (atomic_fetch_sub_explicit(&p->p_avail, 1, memory_order_relaxed) <= 0) {
            atomic_fetch_add_explicit(&p->p_avail, 1, memory_order_relaxed);
            return false;
        }
        return true;
    }
    _Atomic int64_t *mine = &p->p_shards[shard].sh_credit;
    int64_t have = atomic_load_explicit(mine, memory_order_relaxed);
    if (have == 0) {
        int64_t cur = atomic_load_explicit(&p->p_avail, memory_order_relaxed), n;
        do {
            if (cur <= 0) {
                return false;
            }
            n = cur < p->p_batch ? cur : p->p_batch;
        } while (!atomic_compare_exchange_weak_explicit(
            &p->p_avail, &cur, cur - n, memory_order_relaxed, memory_order_relaxed));
        have = n;
    }
    atomic_store_explicit(mine, have - 1, memory_order_relaxed);
    return true;
}

static void
give_credit(tr__pool *p, unsigned shard)
{
    if (shard + 1 >= p->p_nshards) { // a thread that owns no worker shard
        atomic_fetch_add_explicit(&p->p_avail, 1, memory_order_relaxed);
        return;
    }
    _Atomic int64_t *mine = &p->p_shards[shard].sh_credit;
    int64_t have = atomic_load_explicit(mine, memory_order_relaxed) + 1;
    if (have > 2 * p->p_batch) {
        atomic_fetch_add_explicit(&p->p_avail, p->p_batch, memory_order_relaxed);
        have -= p->p_batch;
    }
    atomic_store_explicit(mine, have, memory_order_relaxed);
}

tr_err
tr__pool_alloc(tr__pool *p, unsigned shard, size_t state_size, tr__slot **out)
{
    if (state_size > TR_TASK_MAX_STATE) {
        return TR_EINVAL;
    }
    if (!take_credit(p, shard)) {
        return TR_EEXHAUSTED;
    }
    int cls = class_for(p, TR__SLOT_HDR + state_size);
    tr__shard *sh = &p->p_shards[shard];
    tr__shard_class *sc = &sh->sh_cls[cls];
    tr__slot *s = sc->sc_free;
    uint64_t word;
    if (s == NULL) {
        // Take every remote free at once. Pairs with the release CAS in
        // tr__pool_free.
        s = atomic_exchange_explicit(&sc->sc_remote, NULL, memory_order_acquire);
    }
    if (s != NULL) {
        sc->sc_free = s->s_next;
        word = atomic_load_explicit(&s->s_word, memory_order_relaxed);
    } else {
        tr__chunk *c = sc->sc_chunk;
        uint32_t carved = c ? atomic_load_explicit(&c->c_carved, memory_order_relaxed) : 0;
        if (c == NULL || carved == c->c_nslots) {
            tr_err rv = new_chunk(p, shard, cls, &c);
            if (rv != TR_OK) {
                give_credit(p, shard);
                return rv;
            }
            sc->sc_chunk = c;
            carved = 0;
        }
        s = (tr__slot *)((char *)c + TR__CHUNK_HDR + (size_t)carved * c->c_slot_size);
        // Start above every generation the chunk has used, in any size
        // class, and store it before the slot becomes reachable.
        word = (uint64_t)(c->c_gen_floor + 1) << TR__W_GEN_SHIFT;
        atomic_store_explicit(&s->s_word, word, memory_order_relaxed);
        // Pairs with the acquire loads in tr__pool_lookup and foreach.
        atomic_store_explicit(&c->c_carved, carved + 1, memory_order_release);
    }
    memset(tr__slot_state(s), 0, state_size);
    s->s_next = NULL;
    atomic_store_explicit(&s->s_polls, 0, memory_order_relaxed);
    atomic_store_explicit(&s->s_join_ops, NULL, memory_order_relaxed);
    atomic_store_explicit(&s->s_join_data, NULL, memory_order_relaxed);
    word = (word & ~(((uint64_t)1 << TR__W_GEN_SHIFT) - 1)) | TR__W_LIVE | TR__W_REF_ONE;
    atomic_store_explicit(&s->s_word, word, memory_order_release);
    *out = s;
    return TR_OK;
}

void
tr__pool_free(tr__pool *p, unsigned shard, tr__slot *s)
{
    uint64_t word = atomic_load_explicit(&s->s_word, memory_order_relaxed);
    uint32_t gen = tr__w_gen(word) + 1;
    give_credit(p, shard);
    if (gen == 0) {
        // The generation would wrap: retire the slot for good, so that no
        // old key can ever match it again.
        atomic_store_explicit(&s->s_word, (uint64_t)UINT32_MAX << TR__W_GEN_SHIFT,
                              memory_order_release);
        return;
    }
    // Bumping the generation makes every outstanding key stale at once.
    atomic_store_explicit(&s->s_word, (uint64_t)gen << TR__W_GEN_SHIFT, memory_order_release);
    tr__chunk *c = tr__slot_chunk(s);
    tr__shard_class *sc = &p->p_shards[c->c_shard].sh_cls[c->c_class];
    if (c->c_shard == shard && shard + 1 < p->p_nshards) {
        s->s_next = sc->sc_free;
        sc->sc_free = s;
        return;
    }
    tr__slot *head = atomic_load_explicit(&sc->sc_remote, memory_order_relaxed);
    do {
        s->s_next = head;
        // Pairs with the acquire exchange in tr__pool_alloc.
    } while (!atomic_compare_exchange_weak_explicit(&sc->sc_remote, &head, s, memory_order_release,
                                                    memory_order_relaxed));
}

tr__slot *
tr__pool_lookup(uint32_t index)
{
    uint32_t cid = index >> TR__SLOT_BITS;
    uint32_t n = index & (((uint32_t)1 << TR__SLOT_BITS) - 1);
    // Pairs with the release store in chunk_get.
    if (cid >= atomic_load_explicit(&g.used, memory_order_acquire)) {
        return NULL;
    }
    tr__chunk *c = atomic_load_explicit(&g.dir[cid], memory_order_acquire);
    // Only carved slots of a chunk in use exist. Pairs with the release
    // stores in tr__pool_alloc and chunk_put.
    if (c == NULL || n >= atomic_load_explicit(&c->c_carved, memory_order_acquire)) {
        return NULL;
    }
    return (tr__slot *)((char *)c + TR__CHUNK_HDR + (size_t)n * c->c_slot_size);
}

void
tr__pool_foreach(tr__pool *p, void (*fn)(tr__slot *s, void *arg), void *arg)
{
    // Pairs with the release store in new_chunk.
    for (tr__chunk *c = atomic_load_explicit(&p->p_chunks, memory_order_acquire); c != NULL;
         c = c->c_next) {
        uint32_t carved = atomic_load_explicit(&c->c_carved, memory_order_acquire);
        for (uint32_t j = 0; j < carved; j++) {
            fn((tr__slot *)((char *)c + TR__CHUNK_HDR + (size_t)j * c->c_slot_size), arg);
        }
    }
}

static int
chunk_id_cmp(const void *a, const void *b)
{
    uint32_t x = (*(tr__chunk *const *)a)->c_id, y = (*(tr__chunk *const *)b)->c_id;
    return x < y ? -1 : x > y;
}

uint64_t
tr__pool_scan(tr__pool *p, uint64_t from, bool (*fn)(tr__slot *s, void *arg), void *arg)
{
    // The pool's chunks only come (until tr__pool_fini), so this snapshot
    // of the list stays valid; sorted by id, they are in index order.
    size_t n = 0, cap = 16;
    tr__chunk **cs = tr__alloc(sizeof(*cs) * cap);
    for (tr__chunk *c = atomic_load_explicit(&p->p_chunks, memory_order_acquire); c != NULL;
         c = c->c_next) {
        if (((uint64_t)c->c_id + 1) << TR__SLOT_BITS <= from) {
            continue; // wholly before from
        }
        if (n == cap) {
            tr__chunk **bigger = tr__alloc(sizeof(*cs) * cap * 2);
            memcpy(bigger, cs, sizeof(*cs) * n);
            tr__free(cs, sizeof(*cs) * cap);
            cs = bigger;
            cap *= 2;
        }
        cs[n++] = c;
    }
    qsort(cs, n, sizeof(*cs), chunk_id_cmp);
    uint64_t next = 0;
    for (size_t i = 0; i < n && next == 0; i++) {
        tr__chunk *c = cs[i];
        uint64_t base = (uint64_t)c->c_id << TR__SLOT_BITS;
        uint32_t carved = atomic_load_explicit(&c->c_carved, memory_order_acquire);
        uint32_t j = from > base ? (uint32_t)(from - base) : 0;
        for (; j < carved; j++) {
            tr__slot *s = (tr__slot *)((char *)c + TR__CHUNK_HDR + (size_t)j * c->c_slot_size);
            if (!fn(s, arg)) {
                next = base + j + 1;
                break;
            }
        }
    }
    tr__free(cs, sizeof(*cs) * cap);
    return next;
}

uint64_t
tr__pool_live(tr__pool *p)
{
    int64_t free = atomic_load_explicit(&p->p_avail, memory_order_relaxed);
    for (unsigned i = 0; i + 1 < p->p_nshards; i++) {
        free += atomic_load_explicit(&p->p_shards[i].sh_credit, memory_order_relaxed);
    }
    // Read one by one while others move: clamp.
    return free >= (int64_t)p->p_limit ? 0 : (uint64_t)((int64_t)p->p_limit - free);
}

void
tr__pool_usage(tr__pool *p, uint64_t *slots, uint64_t *bytes)
{
    uint64_t ns = 0, nb = 0;
    for (tr__chunk *c = atomic_load_explicit(&p->p_chunks, memory_order_acquire); c != NULL;
         c = c->c_next) {
        uint32_t carved = atomic_load_explicit(&c->c_carved, memory_order_relaxed);
        ns += carved;
        nb += (uint64_t)carved * c->c_slot_size;
    }
    *slots = ns;
    *bytes = nb;
}
