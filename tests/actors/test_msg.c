// Tests for actor messages (troupe/actor.h, Messages): a body initialised
// in one block, the arena (aligned, zeroed, strings and bytes), bodies of
// every kind of field built in the arena and packed byte for byte as
// protobuf-c packs the same message built on the heap, overflow chains
// (the message's class switches and its free releases every chunk, also
// from another thread and from a mailbox's fini: LeakSanitizer checks),
// and the envelope's fields.
// The socket address of troupe/net.h (which the harness's troupe.h brings)
// and the actor address of troupe/actor.h are both called tr_actor_addr: the
// harness gets the socket one under another name until one is renamed.
#define tr_actor_addr tr_net_addr
#include "runtime/test_util.h"
#undef tr_actor_addr

#include <troupe/actor.h>

#include "test_types.pb-c.h"

// ---------------------------------------------------------------------------
// Helpers.

static bool
aligned16(const void *p)
{
    return ((uintptr_t)p & 15u) == 0;
}

static bool
all_zero(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        if (c[i] != 0) {
            return false;
        }
    }
    return true;
}

static bool
chained(const tr_msg *m)
{
    return m->m_class >= TR_MSG_CLASS_USER &&
           m->m_class < TR_MSG_CLASS_USER + TR_MSG_CLASS_USER_MAX;
}

// pack_equal checks that two messages pack to the same bytes.
static void
pack_equal(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t na = protobuf_c_message_get_packed_size(a);
    size_t nb = protobuf_c_message_get_packed_size(b);
    assert_int_equal(na, nb);
    uint8_t *ba = malloc(na + 1);
    uint8_t *bb = malloc(nb + 1);
    assert_int_equal(protobuf_c_message_pack(a, ba), na);
    assert_int_equal(protobuf_c_message_pack(b, bb), nb);
    assert_memory_equal(ba, bb, na);
    free(ba);
    free(bb);
}

// ---------------------------------------------------------------------------
// The body and the envelope's fields.

static void
test_msg_new_initialises_body(void **state)
{
    (void)state;
    Troupe__V1__Down *down;
    tr_msg *m = tr_msg_new(&troupe__v1__down__descriptor, 0, (void **)&down);
    assert_non_null(m);
    assert_true(tr_msg_is_actor(m));
    assert_true(tr_msg_is(m, &troupe__v1__down__descriptor));
    assert_false(tr_msg_is(m, &troupe__v1__exit__descriptor));
    assert_ptr_equal(tr_msg_descriptor(m), &troupe__v1__down__descriptor);
    assert_ptr_equal(tr_msg_body(m), down);
    assert_true(aligned16(down));
    assert_ptr_equal(down->base.descriptor, &troupe__v1__down__descriptor);
    assert_int_equal(down->ref, 0);
    assert_null(down->actor);
    assert_null(down->reason);
    assert_false(chained(m));
    // The envelope's fields start empty.
    assert_true(tr_actor_addr_is_none(tr_msg_sender(m)));
    assert_true(tr_actor_addr_is_none(tr_msg_reply_to(m)));
    assert_int_equal(tr_msg_correlation(m), 0);
    assert_int_equal(tr_msg_priority(m), 0);
    tr_msg_set_priority(m, 7);
    tr_msg_set_reply_to(m, (tr_actor_addr){3, 9});
    assert_int_equal(tr_msg_priority(m), 7);
    assert_true(tr_actor_addr_eq(tr_msg_reply_to(m), (tr_actor_addr){3, 9}));
    // A body pointer is optional.
    tr_msg *n = tr_msg_new(&troupe__v1__address__descriptor, 0, NULL);
    assert_true(tr_msg_is(n, &troupe__v1__address__descriptor));
    tr_msg_free(n);
    tr_msg_free(m);
}

static void
test_msg_other_messages_are_not_actor(void **state)
{
    (void)state;
    // A zeroed caller-owned message as large as an actor message's header.
    struct {
        tr_msg hdr;
        unsigned char rest[256];
    } plain;
    memset(&plain, 0, sizeof plain);
    assert_false(tr_msg_is_actor(&plain.hdr));
    assert_null(tr_msg_body(&plain.hdr));
}

// ---------------------------------------------------------------------------
// The arena.

static void
test_msg_arena_aligned_zeroed(void **state)
{
    (void)state;
    tr_msg *m = tr_msg_new(&troupe__v1__address__descriptor, 64, NULL);
    // Every size up to 300, and some larger: each piece aligned and zeroed
    // even when the memory was used before (the slabs reuse blocks).
    unsigned char *pieces[400];
    size_t sizes[400];
    size_t n = 0;
    for (size_t sz = 0; sz < 300; sz++) {
        unsigned char *p = tr_msg_arena(m, sz);
        assert_non_null(p);
        assert_true(aligned16(p));
        assert_true(all_zero(p, sz));
        memset(p, (int)(sz & 0xff) | 1, sz);
        pieces[n] = p;
        sizes[n++] = sz;
    }
    for (size_t sz = 1000; sz < 200000; sz *= 3) {
        unsigned char *p = tr_msg_arena(m, sz);
        assert_true(aligned16(p));
        assert_true(all_zero(p, sz));
        memset(p, 0x5a, sz);
        pieces[n] = p;
        sizes[n++] = sz;
    }
    assert_true(chained(m));
    // No piece overlaps another: each still holds its pattern.
    for (size_t i = 0; i < n; i++) {
        int want = sizes[i] >= 1000 ? 0x5a : ((int)(sizes[i] & 0xff) | 1);
        for (size_t j = 0; j < sizes[i]; j++) {
            assert_int_equal(pieces[i][j], want);
        }
    }
    tr_msg_free(m);
    // The same again on a reused block: still zeroed.
    for (int round = 0; round < 3; round++) {
        m = tr_msg_new(&troupe__v1__address__descriptor, 128, NULL);
        unsigned char *p = tr_msg_arena(m, 128);
        assert_true(all_zero(p, 128));
        memset(p, 0xff, 128);
        assert_false(chained(m));
        tr_msg_free(m);
    }
}

static void
test_msg_strdup_memdup(void **state)
{
    (void)state;
    tr_msg *m = tr_msg_new(&troupe__v1__reason__descriptor, 0, NULL);
    assert_null(tr_msg_strdup(m, NULL));
    assert_null(tr_msg_memdup(m, "x", 0));
    char *e = tr_msg_strdup(m, "");
    assert_string_equal(e, "");
    char src[100];
    for (int i = 0; i < 99; i++) {
        src[i] = (char)('a' + i % 26);
    }
    src[99] = '\0';
    char *s = tr_msg_strdup(m, src);
    assert_ptr_not_equal(s, src);
    assert_string_equal(s, src);
    static const uint8_t bytes[5] = {0, 1, 2, 0, 255};
    uint8_t *b = tr_msg_memdup(m, bytes, sizeof bytes);
    assert_memory_equal(b, bytes, sizeof bytes);
    assert_true(aligned16(b));
    tr_msg_free(m);
}

// The extra bytes asked of tr_msg_new are in the block: using them chains
// nothing; a block past TR_MSG_SMALL_MAX is one large block, still one.
static void
test_msg_extra_is_in_block(void **state)
{
    (void)state;
    size_t extras[] = {16, 200, 1000, 3000, 10000, 100000};
    for (size_t i = 0; i < sizeof extras / sizeof extras[0]; i++) {
        tr_msg *m = tr_msg_new(&troupe__v1__reason__descriptor, extras[i], NULL);
        uint32_t cls = m->m_class;
        unsigned char *p = tr_msg_arena(m, extras[i]);
        memset(p, 1, extras[i]);
        assert_false(chained(m));
        assert_int_equal(m->m_class, cls);
        // One more byte than was reserved may chain (or fit the class's slack).
        (void)tr_msg_arena(m, 4096);
        assert_true(chained(m));
        tr_msg_free(m);
    }
}

// ---------------------------------------------------------------------------
// Bodies of every kind of field, built in the arena.

// build_sample fills s (in m's arena when m is not NULL, else on the heap,
// recording heap pointers in heap[] for the caller to free).
typedef struct heap_list {
    void *p[64];
    int n;
} heap_list;

static void *
take(tr_msg *m, heap_list *h, size_t n)
{
    if (m != NULL) {
        return tr_msg_arena(m, n);
    }
    void *p = calloc(1, n == 0 ? 1 : n);
    h->p[h->n++] = p;
    return p;
}

static void
build_sample(Trtest__Sample *s, tr_msg *m, heap_list *h, int variant)
{
    static const char *tag_text[] = {"alpha", "", "gamma", "a somewhat longer tag, past 32 bytes"};
    size_t ntags = 4 + (size_t)variant * 40;
    s->name = m != NULL ? tr_msg_strdup(m, "sample-name") : "sample-name";
    uint8_t *data = take(m, h, 300);
    for (int i = 0; i < 300; i++) {
        data[i] = (uint8_t)(i * 7);
    }
    s->data.data = data;
    s->data.len = 300;
    s->n_tags = ntags;
    s->tags = take(m, h, ntags * sizeof(char *));
    for (size_t i = 0; i < ntags; i++) {
        const char *t = tag_text[i % 4];
        if (m != NULL) {
            s->tags[i] = tr_msg_strdup(m, t);
        } else {
            s->tags[i] = (char *)t;
        }
    }
    s->n_nums = 50;
    s->nums = take(m, h, 50 * sizeof(uint32_t));
    for (uint32_t i = 0; i < 50; i++) {
        s->nums[i] = i * 1000003u;
    }
    s->n_peers = 3;
    s->peers = take(m, h, 3 * sizeof(*s->peers));
    for (size_t i = 0; i < 3; i++) {
        Troupe__V1__Address *a = take(m, h, sizeof *a);
        troupe__v1__address__init(a);
        a->node = i;
        a->actor = 100 + i;
        s->peers[i] = a;
    }
    Troupe__V1__Reason *r = take(m, h, sizeof *r);
    troupe__v1__reason__init(r);
    r->code = -5;
    r->text = "because";
    s->reason = r;
    Trtest__Node *n1 = take(m, h, sizeof *n1);
    Trtest__Node *n2 = take(m, h, sizeof *n2);
    trtest__node__init(n1);
    trtest__node__init(n2);
    n1->child = n2;
    n2->pad.data = data;
    n2->pad.len = 10;
    s->pick_case = TRTEST__SAMPLE__PICK_NODE;
    s->node = n1;
    s->n_attrs = 2;
    s->attrs = take(m, h, 2 * sizeof(*s->attrs));
    for (size_t i = 0; i < 2; i++) {
        Trtest__Sample__AttrsEntry *e = take(m, h, sizeof *e);
        trtest__sample__attrs_entry__init(e);
        e->key = i == 0 ? "k0" : "k1";
        e->value.data = data + i;
        e->value.len = 3;
        s->attrs[i] = e;
    }
    s->delta = -123456789012345;
    s->ratio = 0.125;
    s->flag = true;
    s->f32 = 0xdeadbeef;
    s->color = TRTEST__SAMPLE__COLOR__COLOR_BLUE;
    s->n_blobs = 2;
    s->blobs = take(m, h, 2 * sizeof(ProtobufCBinaryData));
    s->blobs[0].data = data;
    s->blobs[0].len = 0;
    s->blobs[1].data = data + 100;
    s->blobs[1].len = 200;
    s->weight = 1.5f;
    s->sf64 = -1;
}

static void
test_msg_every_field_packs_as_heap_built(void **state)
{
    (void)state;
    for (int variant = 0; variant < 2; variant++) {
        // variant 1 needs several overflow chunks (hundreds of tags).
        Trtest__Sample *s;
        tr_msg *m = tr_msg_new(&trtest__sample__descriptor, 64, (void **)&s);
        build_sample(s, m, NULL, variant);
        assert_true(chained(m) || variant == 0);
        Trtest__Sample ref = TRTEST__SAMPLE__INIT;
        heap_list h = {.n = 0};
        build_sample(&ref, NULL, &h, variant);
        pack_equal(&s->base, &ref.base);
        // And it decodes back to what was built.
        size_t n = protobuf_c_message_get_packed_size(&s->base);
        uint8_t *buf = malloc(n);
        protobuf_c_message_pack(&s->base, buf);
        Trtest__Sample *u = trtest__sample__unpack(NULL, n, buf);
        assert_non_null(u);
        assert_string_equal(u->name, "sample-name");
        assert_int_equal(u->n_tags, s->n_tags);
        assert_string_equal(u->tags[3], "a somewhat longer tag, past 32 bytes");
        assert_int_equal(u->nums[49], 49 * 1000003u);
        assert_int_equal(u->peers[2]->actor, 102);
        assert_int_equal(u->reason->code, -5);
        assert_int_equal(u->pick_case, TRTEST__SAMPLE__PICK_NODE);
        assert_int_equal(u->node->child->pad.len, 10);
        assert_int_equal(u->delta, -123456789012345);
        trtest__sample__free_unpacked(u, NULL);
        free(buf);
        for (int i = 0; i < h.n; i++) {
            free(h.p[i]);
        }
        tr_msg_free(m);
    }
}

static void
test_msg_system_bodies(void **state)
{
    (void)state;
    Troupe__V1__Down *d;
    tr_msg *m =
        tr_msg_new(&troupe__v1__down__descriptor,
                   sizeof(Troupe__V1__Address) + sizeof(Troupe__V1__Reason) + 32, (void **)&d);
    uint32_t cls = m->m_class;
    d->ref = 77;
    d->actor = tr_msg_arena(m, sizeof *d->actor);
    troupe__v1__address__init(d->actor);
    d->actor->node = 1;
    d->actor->actor = 2;
    d->reason = tr_msg_arena(m, sizeof *d->reason);
    troupe__v1__reason__init(d->reason);
    d->reason->code = TR_ETIMEDOUT;
    d->reason->text = tr_msg_strdup(m, "late");
    assert_int_equal(m->m_class, cls); // all of it fits the block
    assert_string_equal(tr_msg_reason_text(d->reason), "late");
    assert_int_equal(tr_msg_reason_err(d->reason), TR_ETIMEDOUT);
    assert_string_equal(tr_msg_reason_text(NULL), "");
    assert_int_equal(tr_msg_reason_err(NULL), TR_OK);
    Troupe__V1__Address ra = TROUPE__V1__ADDRESS__INIT;
    ra.node = 1;
    ra.actor = 2;
    Troupe__V1__Reason rr = TROUPE__V1__REASON__INIT;
    rr.code = TR_ETIMEDOUT;
    rr.text = "late";
    Troupe__V1__Down rd = TROUPE__V1__DOWN__INIT;
    rd.ref = 77;
    rd.actor = &ra;
    rd.reason = &rr;
    pack_equal(&d->base, &rd.base);
    tr_msg_free(m);
}

// ---------------------------------------------------------------------------
// Overflow chains.

static void
fill_chain(tr_msg *m, size_t total)
{
    for (size_t used = 0, sz = 1; used < total; sz = sz * 5 % 4099 + 1) {
        unsigned char *p = tr_msg_arena(m, sz);
        memset(p, 0xab, sz);
        used += sz;
    }
}

static void
test_msg_overflow_chain_frees(void **state)
{
    (void)state;
    // Chains of every length, including a request far past any chunk.
    size_t totals[] = {100, 1000, 10000, 1000000};
    for (size_t i = 0; i < sizeof totals / sizeof totals[0]; i++) {
        tr_msg *m = tr_msg_new(&troupe__v1__exit__descriptor, 0, NULL);
        fill_chain(m, totals[i]);
        if (totals[i] >= 1000) {
            assert_true(chained(m));
        }
        void *big = tr_msg_arena(m, 3u << 20);
        assert_true(all_zero(big, 3u << 20));
        // The current chunk keeps serving small requests after the big one.
        fill_chain(m, 500);
        tr_msg_free(m); // LeakSanitizer: every chunk and the block
    }
}

static void *
free_thread(void *arg)
{
    tr_msg **ms = arg;
    for (int i = 0; ms[i] != NULL; i++) {
        tr_msg_free(ms[i]);
    }
    return NULL;
}

static void
test_msg_chain_freed_elsewhere(void **state)
{
    (void)state;
    // On another thread, and from a mailbox's fini (the default drop).
    tr_msg *ms[65];
    for (int i = 0; i < 64; i++) {
        ms[i] = tr_msg_new(&troupe__v1__reason__descriptor, 0, NULL);
        fill_chain(ms[i], (size_t)i * 300);
    }
    ms[64] = NULL;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, free_thread, ms), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    tr_mailbox *mb = aligned_alloc(64, 128); // a multiple of the alignment
    tr_mailbox_init(mb, 0);
    for (int i = 0; i < 16; i++) {
        tr_msg *m = tr_msg_new(&troupe__v1__reason__descriptor, 0, NULL);
        fill_chain(m, (size_t)i * 1000);
        if (i % 2 == 0) {
            tr_mailbox_push(mb, m);
        } else {
            tr_mailbox_push_system(mb, m);
        }
    }
    tr_mailbox_fini(mb, NULL, NULL);
    free(mb);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_msg_new_initialises_body),
        cmocka_unit_test(test_msg_other_messages_are_not_actor),
        cmocka_unit_test(test_msg_arena_aligned_zeroed),
        cmocka_unit_test(test_msg_strdup_memdup),
        cmocka_unit_test(test_msg_extra_is_in_block),
        cmocka_unit_test(test_msg_every_field_packs_as_heap_built),
        cmocka_unit_test(test_msg_system_bodies),
        cmocka_unit_test(test_msg_overflow_chain_frees),
        cmocka_unit_test(test_msg_chain_freed_elsewhere),
    };
    return tu_run(tests);
}
