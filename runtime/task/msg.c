// Design notes.
//
// Messages up to TR_MSG_SMALL_MAX bytes come from slabs in eight size
// classes (32, 64, ..., 4096 bytes: powers of two, so that a class is one
// count of leading zeros away and a message wastes less than half of its
// object). Each class has one process-wide depot and, in every thread that
// uses it, a cache; the hot path touches only the cache (thread-local: no
// atomics, no lock), as the Pony runtime's pool does.
//
// A thread's cache of a class is two lists: `cur`, which allocations pop
// and frees push, and `full`, one complete batch (tr__msg_batch objects,
// 4 to 64 depending on the size: about 8 KiB, at least 4). Objects move
// between a cache and the depot only a whole batch at a time: when `cur` is
// full a free moves `full` to the depot and makes `cur` the new `full`; when
// `cur` is empty an allocation takes `full`, else a batch from the depot, else
// carves a new slab. So a thread caches at most two batches per class, and a
// thread that alternates between allocating and freeing around a boundary
// never bounces the same batch back and forth. Exchanging whole batches, and
// never popping single objects off a shared stack, keeps the depot free of
// the ABA problem and of per-message contention: a producer that allocates
// and a consumer that frees (the mailbox pattern) meet in the depot once per
// batch. The depot is a stack of batches under a short futex mutex per class
// (a batch's first object records the batch's length and the next batch);
// a lock-free stack of batches would need a generation counter against ABA,
// for a lock taken once per 8 KiB of messages.
//
// A thread registers its cache with a pthread key the first time it
// allocates or frees (each class's spill limit starts at zero, so the first
// free takes the slow path, which registers: the fast path pays nothing for
// it); the key's destructor returns the whole cache to the depot when the
// thread exits, so an exiting worker or producer strands nothing. The main
// thread's cache is not returned at exit(), but it stays reachable, as do the
// slabs (each class lists its slabs), so neither valgrind nor LeakSanitizer
// sees a leak. tr__msg_trim (tr_trim) gives a class's slabs back to the
// system when every one of its objects is back in the depot.
//
// Slab memory is type-stable while a class has slabs: a freed message may be
// handed out again at once, to any thread, but never unmapped under a live
// pointer. Under AddressSanitizer a free object's bytes past its free-list
// words are poisoned, and so are the bytes of a live one past its requested
// size, so use-after-free and overflows into the class's slack are caught as
// they would be with malloc. A freed object's class word holds FREED, so
// freeing it again panics (unless it was handed out meanwhile).
//
// Larger messages are one tr__alloc each, with the size in a 16-byte word in
// front of the header (16: malloc's alignment is kept).
//
// Registered classes (tr_msg_class_register) are a fixed table of free
// functions, filled once each and never emptied, so tr_msg_free reads an
// entry with no lock. tr_msg_free tests them after the slab classes, NONE
// and LARGE: the fast path is unchanged.
#include "task/task.h"

#include <pthread.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define TR__MSG_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TR__MSG_ASAN 1
#endif
#endif

#ifdef TR__MSG_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)0)
#define UNPOISON(p, n) ((void)0)
#endif

// A free object. Its words overlay the message header: f_mark is where
// m_class was, and holds FREED.
typedef struct free_obj {
    struct free_obj *f_next;  // the next free object of the same list
    struct free_obj *f_batch; // in the depot, in a batch's first object: the next batch
    uint32_t f_mark;          // FREED
    uint32_t f_count;         // in the depot, in a batch's first object: its length
} free_obj;

_Static_assert(sizeof(free_obj) == sizeof(tr_msg), "a free object overlays a header");
_Static_assert(offsetof(free_obj, f_mark) == offsetof(tr_msg, m_class), "f_mark is m_class");

#define FREED 0xf4eeu

// A slab: this header, then the objects (SLAB_HDR keeps them 64-aligned
// relative to the slab, and the slab is malloc-aligned).
typedef struct slab {
    struct slab *s_next; // the class's slabs, under the depot lock
    size_t s_bytes;      // what was allocated
} slab;

#define SLAB_HDR 64
#define SLAB_TARGET ((size_t)64 * 1024) // bytes of objects per slab (at least 16 objects)
#define BATCH_TARGET 8192               // bytes per batch (4 to 64 objects)
#define LARGE_PREFIX 16

typedef struct depot {
    _Alignas(64) tr__mutex d_lock; // everything below
    free_obj *d_batches;           // stack of batches
    uint64_t d_free;               // objects in d_batches
    uint64_t d_carved;             // objects in d_slabs
    uint64_t d_nslabs;
    slab *d_slabs;
} depot;

// Indexed by class (1 .. TR__MSG_NCLASSES); [0] is unused.
static depot g_depot[TR__MSG_NCLASSES + 1];

// Messages of the LARGE class not yet freed (statistics; relaxed).
static _Atomic uint64_t g_large_live;

// The free functions of the registered classes. A slot is reserved by the
// CAS on g_class_next, then written once (release; tr_msg_free's acquire
// load pairs with it). A message of a class can exist only after its
// registration returned, so a free never finds its slot empty.
typedef void (*class_free_fn)(tr_msg *m);
static _Atomic(class_free_fn) g_class_free[TR_MSG_CLASS_USER_MAX];
static _Atomic uint32_t g_class_next; // slots reserved

typedef struct tcache_class {
    free_obj *tc_cur;  // allocations pop, frees push
    free_obj *tc_full; // one complete batch, or NULL
    uint32_t tc_ncur;  // objects in tc_cur
    uint32_t tc_limit; // tc_ncur at which a free spills; 0 until registered
} tcache_class;

typedef struct tcache {
    tcache_class t_cls[TR__MSG_NCLASSES + 1];
    bool t_registered; // the key's destructor will flush this cache
} tcache;

// The calling thread's cache. Owned by its thread; the key destructor runs
// on that thread too.
static __thread tcache t_cache;

static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_key;

// ---------------------------------------------------------------------------
// Classes.

unsigned
tr__msg_class_of(size_t size)
{
    if (size <= 32) {
        return 1;
    }
    if (size > TR_MSG_SMALL_MAX) {
        return TR__MSG_CLASS_LARGE;
    }
    // ceil(log2(size)) - 4: 33..64 -> 2, ..., 2049..4096 -> 8.
    return (unsigned)(64 - __builtin_clzll((unsigned long long)size - 1)) - 4;
}

size_t
tr__msg_class_size(unsigned cls)
{
    TR__ASSERT(cls >= 1 && cls <= TR__MSG_NCLASSES);
    return (size_t)16 << cls;
}

unsigned
tr__msg_batch(unsigned cls)
{
    size_t n = BATCH_TARGET / tr__msg_class_size(cls);
    return n < 4 ? 4 : n > 64 ? 64 : (unsigned)n;
}

static size_t
slab_objects(unsigned cls)
{
    size_t n = SLAB_TARGET / tr__msg_class_size(cls);
    return n < 16 ? 16 : n;
}

// ---------------------------------------------------------------------------
// The depot.

// depot_put adds a list of count objects (head first) as one batch.
static void
depot_put(unsigned cls, free_obj *head, uint32_t count)
{
    depot *d = &g_depot[cls];
    head->f_count = count;
    tr__mutex_lock(&d->d_lock);
    head->f_batch = d->d_batches;
    d->d_batches = head;
    d->d_free += count;
    tr__mutex_unlock(&d->d_lock);
}

// depot_get takes one batch, or returns NULL; *count gets its length.
static free_obj *
depot_get(unsigned cls, uint32_t *count)
{
    depot *d = &g_depot[cls];
    tr__mutex_lock(&d->d_lock);
    free_obj *b = d->d_batches;
    if (b != NULL) {
        d->d_batches = b->f_batch;
        d->d_free -= b->f_count;
    }
    tr__mutex_unlock(&d->d_lock);
    if (b != NULL) {
        *count = b->f_count;
    }
    return b;
}

// carve makes a new slab, keeps its first batch for the caller (returned,
// length in *count) and puts the others in the depot. The slab is built
// outside the lock: nobody else can see it until it is linked.
static free_obj *
carve(unsigned cls, uint32_t *count)
{
    size_t osz = tr__msg_class_size(cls);
    size_t n = slab_objects(cls);
    uint32_t b = tr__msg_batch(cls);
    size_t bytes = SLAB_HDR + n * osz;
    slab *s = tr__alloc(bytes);
    s->s_bytes = bytes;
    char *base = (char *)s + SLAB_HDR;
    // The batches, in address order, chained through their first objects.
    free_obj *first = NULL, *last = NULL;
    for (size_t i = 0; i < n; i += b) {
        size_t len = n - i < b ? n - i : b;
        free_obj *head = (free_obj *)(void *)(base + i * osz);
        for (size_t j = 0; j < len; j++) {
            free_obj *o = (free_obj *)(void *)(base + (i + j) * osz);
            o->f_next = j + 1 < len ? (free_obj *)(void *)(base + (i + j + 1) * osz) : NULL;
            o->f_mark = FREED;
            POISON((char *)o + sizeof(free_obj), osz - sizeof(free_obj));
        }
        head->f_count = (uint32_t)len;
        head->f_batch = NULL;
        if (last == NULL) {
            first = head;
        } else {
            last->f_batch = head;
        }
        last = head;
    }
    uint32_t first_count = first->f_count;
    free_obj *rest = first->f_batch;
    depot *d = &g_depot[cls];
    tr__mutex_lock(&d->d_lock);
    s->s_next = d->d_slabs;
    d->d_slabs = s;
    d->d_nslabs++;
    d->d_carved += n;
    if (rest != NULL) {
        last->f_batch = d->d_batches;
        d->d_batches = rest;
        d->d_free += n - first_count;
    }
    tr__mutex_unlock(&d->d_lock);
    *count = first_count;
    return first;
}

// ---------------------------------------------------------------------------
// Thread caches.

static void cache_exit(void *arg);

static void
key_create(void)
{
    if (pthread_key_create(&g_key, cache_exit) != 0) {
        tr__panic("pthread_key_create failed: the message caches cannot be returned");
    }
}

// cache_register arranges for this thread's cache to be flushed when it
// exits, and sets the spill limit of class cls.
static void
cache_register(unsigned cls)
{
    tcache *t = &t_cache;
    if (!t->t_registered) {
        pthread_once(&g_key_once, key_create);
        if (pthread_setspecific(g_key, t) != 0) {
            tr__panic("pthread_setspecific failed: the message cache cannot be returned");
        }
        t->t_registered = true;
    }
    t->t_cls[cls].tc_limit = tr__msg_batch(cls);
}

void
tr__msg_flush(void)
{
    tcache *t = &t_cache;
    for (unsigned cls = 1; cls <= TR__MSG_NCLASSES; cls++) {
        tcache_class *tc = &t->t_cls[cls];
        if (tc->tc_cur != NULL) {
            depot_put(cls, tc->tc_cur, tc->tc_ncur);
        }
        if (tc->tc_full != NULL) {
            depot_put(cls, tc->tc_full, tr__msg_batch(cls));
        }
        tc->tc_cur = NULL;
        tc->tc_full = NULL;
        tc->tc_ncur = 0;
    }
}

// cache_exit is the key's destructor: the thread is exiting. A later use of
// the cache on this thread (another destructor freeing a message) registers
// again, and the destructor runs again.
static void
cache_exit(void *arg)
{
    tcache *t = arg;
    tr__msg_flush();
    for (unsigned cls = 1; cls <= TR__MSG_NCLASSES; cls++) {
        t->t_cls[cls].tc_limit = 0;
    }
    t->t_registered = false;
}

// refill gives an empty cur a list again and returns it.
static __attribute__((noinline)) free_obj *
refill(unsigned cls, tcache_class *tc)
{
    if (tc->tc_limit == 0) {
        cache_register(cls);
    }
    uint32_t count;
    free_obj *o = tc->tc_full;
    if (o != NULL) {
        tc->tc_full = NULL;
        count = tr__msg_batch(cls);
    } else {
        o = depot_get(cls, &count);
        if (o == NULL) {
            o = carve(cls, &count);
        }
    }
    tc->tc_cur = o;
    tc->tc_ncur = count;
    return o;
}

// spill makes room in a full cur (or registers a cache on its first free).
static __attribute__((noinline)) void
spill(unsigned cls, tcache_class *tc)
{
    if (tc->tc_limit == 0) {
        cache_register(cls);
        if (tc->tc_ncur < tc->tc_limit) {
            return;
        }
    }
    if (tc->tc_full != NULL) {
        depot_put(cls, tc->tc_full, tc->tc_limit);
    }
    tc->tc_full = tc->tc_cur;
    tc->tc_cur = NULL;
    tc->tc_ncur = 0;
}

// ---------------------------------------------------------------------------
// Large messages.

static tr_msg *
large_alloc(size_t size)
{
    if (size > SIZE_MAX - LARGE_PREFIX) {
        tr__panic("out of memory allocating a message of %zu bytes", size);
    }
    char *p = tr__alloc(LARGE_PREFIX + size);
    memcpy(p, &size, sizeof size);
    atomic_fetch_add_explicit(&g_large_live, 1, memory_order_relaxed);
    tr_msg *m = (tr_msg *)(void *)(p + LARGE_PREFIX);
    atomic_init(&m->m_link.l_next, NULL);
    m->m_type = NULL;
    m->m_class = TR__MSG_CLASS_LARGE;
    m->m_flags = 0;
    return m;
}

static void
large_free(tr_msg *m)
{
    char *p = (char *)m - LARGE_PREFIX;
    size_t size;
    memcpy(&size, p, sizeof size);
    atomic_fetch_sub_explicit(&g_large_live, 1, memory_order_relaxed);
    tr__free(p, LARGE_PREFIX + size);
}

uint64_t
tr__msg_large_live(void)
{
    return atomic_load_explicit(&g_large_live, memory_order_relaxed);
}

// ---------------------------------------------------------------------------
// Public API.

tr_msg *
tr_msg_alloc(size_t size)
{
    if (size < sizeof(tr_msg)) {
        size = sizeof(tr_msg);
    }
    if (TR__UNLIKELY(size > TR_MSG_SMALL_MAX)) {
        return large_alloc(size);
    }
    unsigned cls = tr__msg_class_of(size);
    tcache_class *tc = &t_cache.t_cls[cls];
    free_obj *o = tc->tc_cur;
    if (TR__UNLIKELY(o == NULL)) {
        o = refill(cls, tc);
    }
    tc->tc_cur = o->f_next;
    tc->tc_ncur--;
    UNPOISON(o, size);
    // (The slack past size stays poisoned: it was poisoned when freed.)
    tr_msg *m = (tr_msg *)(void *)o;
    atomic_init(&m->m_link.l_next, NULL);
    m->m_type = NULL;
    m->m_class = cls;
    m->m_flags = 0;
    return m;
}

size_t
tr_msg_capacity(const tr_msg *m)
{
    uint32_t cls = m->m_class;
    if (cls - 1 < TR__MSG_NCLASSES) {
        return tr__msg_class_size(cls);
    }
    if (cls == TR__MSG_CLASS_LARGE) {
        size_t size;
        memcpy(&size, (const char *)m - LARGE_PREFIX, sizeof size);
        return size;
    }
    return 0; // caller-owned, or a class of a layer above: its own business
}

tr_msg *
tr__msg_zalloc(size_t size, const void *type)
{
    tr_msg *m = tr_msg_alloc(size);
    // The header is set up already; zero what follows it.
    if (size > sizeof(*m)) {
        memset(m + 1, 0, size - sizeof(*m));
    }
    m->m_type = type;
    return m;
}

void
tr_msg_free(tr_msg *m)
{
    if (TR__UNLIKELY(m == NULL)) {
        return;
    }
    uint32_t cls = m->m_class;
    if (TR__LIKELY(cls - 1 < TR__MSG_NCLASSES)) {
        tcache_class *tc = &t_cache.t_cls[cls];
        if (TR__UNLIKELY(tc->tc_ncur >= tc->tc_limit)) {
            spill(cls, tc);
        }
        free_obj *o = (free_obj *)(void *)m;
        o->f_next = tc->tc_cur;
        o->f_mark = FREED;
        POISON((char *)o + sizeof(free_obj), tr__msg_class_size(cls) - sizeof(free_obj));
        tc->tc_cur = o;
        tc->tc_ncur++;
        return;
    }
    if (cls == TR_MSG_CLASS_NONE) {
        return;
    }
    if (cls == TR__MSG_CLASS_LARGE) {
        large_free(m);
        return;
    }
    if (cls - TR_MSG_CLASS_USER < TR_MSG_CLASS_USER_MAX) {
        class_free_fn fn =
            atomic_load_explicit(&g_class_free[cls - TR_MSG_CLASS_USER], memory_order_acquire);
        if (fn != NULL) {
            fn(m);
            return;
        }
    }
    if (cls == FREED) {
        tr__panic("tr_msg_free(%p): message freed twice", (void *)m);
    }
    tr__panic("tr_msg_free(%p): class %u: not a message from tr_msg_alloc", (void *)m, cls);
}

uint32_t
tr_msg_class_register(void (*free_fn)(tr_msg *m))
{
    _Static_assert(TR_MSG_CLASS_USER > TR__MSG_CLASS_LARGE, "user classes follow the slabs'");
    _Static_assert(FREED - TR_MSG_CLASS_USER >= TR_MSG_CLASS_USER_MAX, "FREED is no user class");
    if (free_fn == NULL) {
        return 0;
    }
    uint32_t k = atomic_load_explicit(&g_class_next, memory_order_relaxed);
    do {
        if (k >= TR_MSG_CLASS_USER_MAX) {
            return 0;
        }
    } while (!atomic_compare_exchange_weak_explicit(&g_class_next, &k, k + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    atomic_store_explicit(&g_class_free[k], free_fn, memory_order_release);
    return TR_MSG_CLASS_USER + k;
}

// ---------------------------------------------------------------------------
// Statistics and trimming.

void
tr__msg_stats_get(unsigned cls, tr__msg_stats *out)
{
    TR__ASSERT(cls >= 1 && cls <= TR__MSG_NCLASSES);
    depot *d = &g_depot[cls];
    tr__mutex_lock(&d->d_lock);
    out->ms_slabs = d->d_nslabs;
    out->ms_carved = d->d_carved;
    out->ms_depot = d->d_free;
    tr__mutex_unlock(&d->d_lock);
    const tcache_class *tc = &t_cache.t_cls[cls];
    out->ms_cached = tc->tc_ncur + (tc->tc_full != NULL ? tr__msg_batch(cls) : 0);
}

void
tr__msg_trim(void)
{
    tr__msg_flush();
    for (unsigned cls = 1; cls <= TR__MSG_NCLASSES; cls++) {
        depot *d = &g_depot[cls];
        slab *s = NULL;
        tr__mutex_lock(&d->d_lock);
        if (d->d_free == d->d_carved) {
            s = d->d_slabs;
            d->d_slabs = NULL;
            d->d_batches = NULL;
            d->d_free = 0;
            d->d_carved = 0;
            d->d_nslabs = 0;
        }
        tr__mutex_unlock(&d->d_lock);
        while (s != NULL) {
            slab *next = s->s_next;
            UNPOISON(s, s->s_bytes);
            tr__free(s, s->s_bytes);
            s = next;
        }
    }
}
