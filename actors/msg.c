// Design notes.
//
// An actor message is one block from tr_msg_alloc: the tra_msg header, the
// body (the protobuf-c struct) and an inline arena, in that order, each
// part on a 16-byte boundary. The block is rounded up to its slab class
// (the classes are powers of two, troupe/mailbox.h), so the class's slack
// becomes arena for free. Everything a body points to (strings, bytes,
// repeated arrays, sub-messages) is carved from the arena by bumping
// am_next, so a message that fits costs one tr_msg_alloc and one
// tr_msg_free whatever its shape: the actor ping-pong path never calls
// malloc. tr_msg_arena zeroes what it hands out (the inline arena is not
// zeroed up front: most of it is never used).
//
// Past the block, the arena continues in overflow chunks (malloc), listed
// from am_chunks, newest first; am_next and am_end then bump through the
// newest chunk. Chunks grow geometrically (256 B, doubling up to 64 KiB),
// and a request larger than the next chunk gets a chunk of its own, linked
// behind the current one so that the current one's room is not lost. The
// first chunk switches m_class to the actor layer's registered class
// (am_class keeps the block's): tr_msg_free then calls chained_free, which
// frees the chunks, puts the block's class back and frees the block. A
// message without chunks keeps its slab class, so its free is the
// runtime's fast path.
//
// Only the message's owner allocates from its arena (no lock): a message is
// owned by one thread at a time, and a send hands it over with the
// mailbox's release/acquire.
#include "actor_int.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>

#define ALIGN 16u
#define ALIGN_UP(n) (((n) + (ALIGN - 1)) & ~(size_t)(ALIGN - 1))
#define HDR_SIZE ALIGN_UP(sizeof(tra_msg))
#define CHUNK_MIN ((size_t)256)
#define CHUNK_MAX ((size_t)64 * 1024) // geometric growth stops here

_Static_assert(sizeof(tra_msg) % ALIGN == 0, "the body follows the header at 16 bytes");

// An overflow chunk: this header, then arena bytes (16-aligned: malloc's
// alignment and a 16-byte header).
typedef struct chunk {
    struct chunk *c_next; // the next older chunk
    size_t c_size;        // bytes of the chunk, header included
} chunk;

_Static_assert(sizeof(chunk) == ALIGN, "a chunk's arena starts 16-aligned");

void
tra_panic(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("troupe-actors: panic: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

// ---------------------------------------------------------------------------
// The chained class.

static uint32_t g_chained_class; // written once under g_class_once
static pthread_once_t g_class_once = PTHREAD_ONCE_INIT;

static void
chained_free(tr_msg *m)
{
    tra_msg *am = tra_msg_of(m);
    chunk *c = am->am_chunks;
    while (c != NULL) {
        chunk *next = c->c_next;
        free(c);
        c = next;
    }
    am->am_chunks = NULL;
    m->m_class = am->am_class;
    tr_msg_free(m);
}

// The classes the actor layer registered: the chained one, the node's.
#define OUR_CLASSES 4
static _Atomic uint32_t g_ours[OUR_CLASSES];

void
tra_msg_class_add(uint32_t cls)
{
    for (int i = 0; i < OUR_CLASSES; i++) {
        uint32_t none = 0;
        if (atomic_compare_exchange_strong(&g_ours[i], &none, cls)) {
            return;
        }
    }
    tra_panic("more than %d message classes of the actor layer", OUR_CLASSES);
}

bool
tra_msg_class_ours(uint32_t cls)
{
    for (int i = 0; i < OUR_CLASSES; i++) {
        // Relaxed: a class is added before any message of it exists, and
        // whoever holds such a message learnt of it through a release.
        uint32_t c = atomic_load_explicit(&g_ours[i], memory_order_relaxed);
        if (c == cls) {
            return cls != 0;
        }
        if (c == 0) {
            return false;
        }
    }
    return false;
}

static void
class_register(void)
{
    g_chained_class = tr_msg_class_register(chained_free);
    if (g_chained_class == 0) {
        tra_panic("no message class left for the actor layer");
    }
    tra_msg_class_add(g_chained_class);
}

// ---------------------------------------------------------------------------
// The arena.

// arena_grow adds a chunk that holds need bytes (a multiple of ALIGN) and
// returns them.
static __attribute__((noinline)) void *
arena_grow(tra_msg *am, size_t need)
{
    if (need > SIZE_MAX - sizeof(chunk) - CHUNK_MAX) {
        tra_panic("out of memory: an arena request of %zu bytes", need);
    }
    chunk *head = am->am_chunks;
    size_t grow = head == NULL ? CHUNK_MIN : head->c_size * 2;
    grow = grow < CHUNK_MIN ? CHUNK_MIN : grow > CHUNK_MAX ? CHUNK_MAX : grow;
    bool own = sizeof(chunk) + need > grow; // a chunk of its own
    size_t size = own ? sizeof(chunk) + need : grow;
    chunk *c = malloc(size);
    if (c == NULL) {
        tra_panic("out of memory: an arena chunk of %zu bytes", size);
    }
    c->c_size = size;
    char *p = (char *)(c + 1);
    if (head == NULL) {
        pthread_once(&g_class_once, class_register);
        am->am_class = am->am_hdr.m_class;
        am->am_hdr.m_class = g_chained_class;
    }
    if (own && head != NULL) {
        // Behind the current chunk, which keeps bumping.
        c->c_next = head->c_next;
        head->c_next = c;
        return p;
    }
    c->c_next = head;
    am->am_chunks = c;
    if (!own) {
        am->am_next = p + need;
        am->am_end = (char *)c + size;
    }
    // (A first chunk of its own leaves the inline arena current.)
    return p;
}

// arena_take returns size bytes of m's arena, not zeroed.
static inline void *
arena_take(tra_msg *am, size_t size)
{
    if (TRA_UNLIKELY(size > SIZE_MAX - ALIGN)) {
        tra_panic("out of memory: an arena request of %zu bytes", size);
    }
    size_t need = size == 0 ? ALIGN : ALIGN_UP(size);
    if (TRA_LIKELY(need <= (size_t)(am->am_end - am->am_next))) {
        void *p = am->am_next;
        am->am_next += need;
        return p;
    }
    return arena_grow(am, need);
}

// ---------------------------------------------------------------------------
// Public API.

// block_new allocates a message of type d whose block is at least size
// bytes (rounded up to its slab class: the slack is arena too), with the
// arena from offset arena on.
static tra_msg *
block_new(const ProtobufCMessageDescriptor *d, size_t size, size_t arena)
{
    if (size < arena) {
        size = arena;
    }
    if (size <= TR_MSG_SMALL_MAX) {
        size = size <= 32 ? 32 : (size_t)1 << (64 - __builtin_clzll((unsigned long long)size - 1));
    }
    tr_msg *m = tr_msg_alloc(size);
    tra_msg *am = tra_msg_of(m);
    m->m_type = d;
    am->am_from = TR_ACTOR_NONE;
    am->am_reply = TR_ACTOR_NONE;
    am->am_corr = 0;
    am->am_prio = 0;
    am->am_magic = TRA_MSG_MAGIC;
    am->am_body = NULL;
    am->am_next = (char *)m + arena;
    am->am_end = (char *)m + size;
    am->am_chunks = NULL;
    am->am_class = 0;
    am->am_kind = TRA_K_USER;
    return am;
}

tr_msg *
tra_msg_new_sized(const ProtobufCMessageDescriptor *d, size_t size, void **body)
{
    tra_msg *am = block_new(d, size, HDR_SIZE + ALIGN_UP(d->sizeof_message));
    am->am_body = (char *)am + HDR_SIZE;
    protobuf_c_message_init(d, am->am_body);
    if (body != NULL) {
        *body = am->am_body;
    }
    return &am->am_hdr;
}

tr_msg *
tra_msg_new_empty(const ProtobufCMessageDescriptor *d, size_t size)
{
    return &block_new(d, size, HDR_SIZE)->am_hdr;
}

void *
tra_msg_take(tr_msg *m, size_t size)
{
    return arena_take(tra_msg_of(m), size);
}

tr_msg *
tr_msg_new(const ProtobufCMessageDescriptor *d, size_t extra, void **body)
{
    size_t fixed = HDR_SIZE + ALIGN_UP(d->sizeof_message);
    if (extra > SIZE_MAX - fixed - ALIGN) {
        tra_panic("out of memory: a message with %zu bytes of arena", extra);
    }
    return tra_msg_new_sized(d, fixed + ALIGN_UP(extra), body);
}

void *
tr_msg_arena(tr_msg *m, size_t size)
{
    void *p = arena_take(tra_msg_of(m), size);
    memset(p, 0, size);
    return p;
}

char *
tr_msg_strdup(tr_msg *m, const char *s)
{
    if (s == NULL) {
        return NULL;
    }
    size_t n = strlen(s) + 1;
    char *p = arena_take(tra_msg_of(m), n);
    memcpy(p, s, n);
    return p;
}

void *
tr_msg_memdup(tr_msg *m, const void *p, size_t n)
{
    if (n == 0) {
        return NULL;
    }
    void *q = arena_take(tra_msg_of(m), n);
    memcpy(q, p, n);
    return q;
}

void *
tr_msg_body(const tr_msg *m)
{
    return tra_msg_valid(m) ? ((const tra_msg *)(const void *)m)->am_body : NULL;
}

bool
tr_msg_is_actor(const tr_msg *m)
{
    return tra_msg_valid(m);
}

tr_actor_addr
tr_msg_sender(const tr_msg *m)
{
    return ((const tra_msg *)(const void *)m)->am_from;
}

tr_actor_addr
tr_msg_reply_to(const tr_msg *m)
{
    return ((const tra_msg *)(const void *)m)->am_reply;
}

uint64_t
tr_msg_correlation(const tr_msg *m)
{
    return ((const tra_msg *)(const void *)m)->am_corr;
}

uint32_t
tr_msg_priority(const tr_msg *m)
{
    return ((const tra_msg *)(const void *)m)->am_prio;
}

void
tr_msg_set_priority(tr_msg *m, uint32_t prio)
{
    tra_msg_of(m)->am_prio = prio;
}

void
tr_msg_set_reply_to(tr_msg *m, tr_actor_addr to)
{
    tra_msg_of(m)->am_reply = to;
}
