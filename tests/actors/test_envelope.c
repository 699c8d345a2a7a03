// Tests for the envelope (troupe/envelope.h): round trips of bodies with
// every kind of field and of every envelope field, byte for byte against
// protobuf-c's own packing of troupe.v1.Envelope; the type registry
// (built-ins, errors, growth, lookups racing a registration); the depth
// limit (10,000 levels refused without recursion, 64 accepted and 65
// refused, levels through oneofs, bytes and unknown fields not counted);
// truncation, garbage, bad kinds; the per-message budget; the global cap,
// alone and under concurrent unpacks. Every failure must leave no leak
// (LeakSanitizer in the ASan build) and the in-flight count at zero.
// troupe/net.h's tr_actor_addr (the harness's troupe.h brings it) and
// troupe/actor.h's clash: the harness gets the socket one renamed.
#define tr_actor_addr tr_net_addr
#include "runtime/test_util.h"
#undef tr_actor_addr

#include <troupe/envelope.h>

#include "proto_types.h"
#include "test_types.pb-c.h"

// ---------------------------------------------------------------------------
// Helpers.

static void
register_test_types(void)
{
    assert_int_equal(tr_type_register(&trtest__node__descriptor), TR_OK);
    assert_int_equal(tr_type_register(&trtest__sample__descriptor), TR_OK);
}

// wrap packs an Envelope with protobuf-c's generated code: the body's
// packed bytes under type, with the given header fields.
typedef struct hdr {
    const char *type;
    uint64_t corr;
    tr_actor_addr from, reply;
    uint32_t prio, kind;
} hdr;

static uint8_t *
wrap(const hdr *h, const uint8_t *body, size_t blen, size_t *len)
{
    Troupe__V1__Envelope e = TROUPE__V1__ENVELOPE__INIT;
    Troupe__V1__Address from = TROUPE__V1__ADDRESS__INIT;
    Troupe__V1__Address reply = TROUPE__V1__ADDRESS__INIT;
    e.type = (char *)h->type;
    e.correlation = h->corr;
    if (h->from.node != 0 || h->from.actor != 0) {
        from.node = h->from.node;
        from.actor = h->from.actor;
        e.from = &from;
    }
    if (h->reply.node != 0 || h->reply.actor != 0) {
        reply.node = h->reply.node;
        reply.actor = h->reply.actor;
        e.reply_to = &reply;
    }
    e.priority = h->prio;
    e.kind = h->kind;
    e.body.data = (uint8_t *)body;
    e.body.len = blen;
    *len = troupe__v1__envelope__get_packed_size(&e);
    uint8_t *buf = malloc(*len + 1);
    assert_int_equal(troupe__v1__envelope__pack(&e, buf), *len);
    return buf;
}

// wrap_msg packs body (a ProtobufCMessage) with wrap.
static uint8_t *
wrap_msg(const hdr *h, const ProtobufCMessage *body, size_t *len)
{
    size_t blen = protobuf_c_message_get_packed_size(body);
    uint8_t *b = malloc(blen + 1);
    protobuf_c_message_pack(body, b);
    uint8_t *out = wrap(h, b, blen, len);
    free(b);
    return out;
}

// pack_msg packs m with tr_msg_pack_to, checking the size it announced.
static uint8_t *
pack_msg(const tr_msg *m, size_t *len)
{
    *len = tr_msg_packed_size(m);
    assert_true(*len > 0);
    uint8_t *buf = malloc(*len + 16);
    memset(buf, 0xee, *len + 16);
    assert_int_equal(tr_msg_pack_to(m, buf), *len);
    for (size_t i = 0; i < 16; i++) {
        assert_int_equal(buf[*len + i], 0xee); // not a byte more
    }
    return buf;
}

// put_varint writes v as a varint at p and returns the bytes written.
static size_t
put_varint(uint8_t *p, size_t v)
{
    size_t n = 0;
    for (;; v >>= 7) {
        p[n++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80) {
            return n;
        }
    }
}

// run_threads runs fn(arg) on n threads (at most 8) and joins them.
static void
run_threads(void *(*fn)(void *), void *arg, int n)
{
    pthread_t t[8];
    assert_true(n <= 8);
    for (int i = 0; i < n; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, fn, arg), 0);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
    }
}

// node_chain returns a Node body nested levels deep (the body is level 1;
// the innermost Node is empty), built from the inside out with no
// recursion.
static uint8_t *
node_chain(size_t levels, size_t *len)
{
    size_t cap = levels * 12 + 16;
    uint8_t *buf = malloc(cap);
    size_t start = cap; // the chain is buf[start..cap)
    for (size_t l = 1; l < levels; l++) {
        uint8_t v[10];
        size_t n = put_varint(v, cap - start);
        start -= n;
        memcpy(buf + start, v, n);
        buf[--start] = 0x0a; // field 1 (child), length-delimited
    }
    *len = cap - start;
    memmove(buf, buf + start, *len);
    return buf;
}

static size_t
chain_levels(const Trtest__Node *n)
{
    size_t levels = 0;
    for (; n != NULL; n = n->child) {
        levels++;
    }
    return levels;
}

static void
assert_no_flight(void)
{
    tr_unpack_stats s;
    tr_unpack_stats_get(&s);
    assert_int_equal(s.in_flight, 0);
}

// unpack_node wraps a Node body and unpacks it with lim.
static tr_err
unpack_node(const uint8_t *body, size_t blen, const tr_unpack_limits *lim, tr_msg **out,
            tr_unpack_info *info)
{
    hdr h = {.type = "trtest.Node", .corr = 5};
    size_t len;
    uint8_t *env = wrap(&h, body, blen, &len);
    tr_err rv = tr_msg_unpack(env, len, lim, out, info);
    free(env);
    return rv;
}

// ---------------------------------------------------------------------------
// Round trips.

// build_sample fills a Sample in m's arena with a value of every kind.
static Trtest__Sample *
build_sample(tr_msg **mp)
{
    Trtest__Sample *s;
    tr_msg *m = tr_msg_new(&trtest__sample__descriptor, 256, (void **)&s);
    s->name = tr_msg_strdup(m, "name \xc3\xa9");
    static const uint8_t data[] = {0, 1, 2, 3, 0xff};
    s->data.data = tr_msg_memdup(m, data, sizeof data);
    s->data.len = sizeof data;
    s->n_tags = 3;
    s->tags = tr_msg_arena(m, 3 * sizeof(char *));
    s->tags[0] = tr_msg_strdup(m, "a");
    s->tags[1] = tr_msg_strdup(m, "");
    s->tags[2] = tr_msg_strdup(m, "ccc");
    s->n_nums = 4;
    s->nums = tr_msg_arena(m, 4 * sizeof(uint32_t));
    s->nums[0] = 0;
    s->nums[1] = 1;
    s->nums[2] = 300;
    s->nums[3] = UINT32_MAX;
    s->n_peers = 2;
    s->peers = tr_msg_arena(m, 2 * sizeof(*s->peers));
    for (size_t i = 0; i < 2; i++) {
        s->peers[i] = tr_msg_arena(m, sizeof(Troupe__V1__Address));
        troupe__v1__address__init(s->peers[i]);
        s->peers[i]->node = i;
        s->peers[i]->actor = UINT64_MAX - i;
    }
    s->reason = tr_msg_arena(m, sizeof(Troupe__V1__Reason));
    troupe__v1__reason__init(s->reason);
    s->reason->code = -1;
    s->reason->text = tr_msg_strdup(m, "why");
    s->pick_case = TRTEST__SAMPLE__PICK_LABEL;
    s->label = tr_msg_strdup(m, "picked");
    s->n_attrs = 1;
    s->attrs = tr_msg_arena(m, sizeof(*s->attrs));
    s->attrs[0] = tr_msg_arena(m, sizeof(Trtest__Sample__AttrsEntry));
    trtest__sample__attrs_entry__init(s->attrs[0]);
    s->attrs[0]->key = tr_msg_strdup(m, "k");
    s->attrs[0]->value.data = tr_msg_memdup(m, "vv", 2);
    s->attrs[0]->value.len = 2;
    s->delta = INT64_MIN;
    s->ratio = -2.5;
    s->flag = true;
    s->f32 = 0x01020304;
    s->color = TRTEST__SAMPLE__COLOR__COLOR_RED;
    s->n_blobs = 2;
    s->blobs = tr_msg_arena(m, 2 * sizeof(ProtobufCBinaryData));
    s->blobs[1].data = tr_msg_memdup(m, "blob", 4);
    s->blobs[1].len = 4;
    s->weight = 0.5f;
    s->sf64 = INT64_MIN + 1;
    *mp = m;
    return s;
}

static void
check_sample(const Trtest__Sample *u)
{
    assert_string_equal(u->name, "name \xc3\xa9");
    assert_int_equal(u->data.len, 5);
    assert_int_equal(u->data.data[4], 0xff);
    assert_int_equal(u->n_tags, 3);
    assert_string_equal(u->tags[1], "");
    assert_string_equal(u->tags[2], "ccc");
    assert_int_equal(u->n_nums, 4);
    assert_int_equal(u->nums[3], UINT32_MAX);
    assert_int_equal(u->n_peers, 2);
    assert_int_equal(u->peers[1]->actor, UINT64_MAX - 1);
    assert_int_equal(u->reason->code, -1);
    assert_string_equal(u->reason->text, "why");
    assert_int_equal(u->pick_case, TRTEST__SAMPLE__PICK_LABEL);
    assert_string_equal(u->label, "picked");
    assert_int_equal(u->n_attrs, 1);
    assert_string_equal(u->attrs[0]->key, "k");
    assert_memory_equal(u->attrs[0]->value.data, "vv", 2);
    assert_true(u->delta == INT64_MIN);
    assert_true(u->ratio == -2.5);
    assert_true(u->flag);
    assert_int_equal(u->f32, 0x01020304);
    assert_int_equal(u->color, TRTEST__SAMPLE__COLOR__COLOR_RED);
    assert_int_equal(u->n_blobs, 2);
    assert_int_equal(u->blobs[0].len, 0);
    assert_memory_equal(u->blobs[1].data, "blob", 4);
    assert_true(u->weight == 0.5f);
    assert_true(u->sf64 == INT64_MIN + 1);
}

static void
test_envelope_round_trip_every_field(void **state)
{
    (void)state;
    register_test_types();
    tr_msg *m;
    Trtest__Sample *s = build_sample(&m);
    tr_msg_set_priority(m, 3);
    tr_msg_set_reply_to(m, (tr_actor_addr){7, 8});
    size_t len;
    uint8_t *buf = pack_msg(m, &len);
    // The bytes are protobuf-c's for the same Envelope.
    hdr h = {.type = "trtest.Sample", .reply = {7, 8}, .prio = 3};
    size_t rlen;
    uint8_t *ref = wrap_msg(&h, &s->base, &rlen);
    assert_int_equal(len, rlen);
    assert_memory_equal(buf, ref, len);
    // And they unpack into the same message.
    tr_msg *u;
    tr_unpack_info info;
    assert_int_equal(tr_msg_unpack(buf, len, NULL, &u, &info), TR_OK);
    assert_int_equal(info.reason, TR_UNPACK_OK);
    assert_string_equal(info.type, "trtest.Sample");
    assert_true(tr_msg_is_actor(u));
    assert_true(tr_msg_is(u, &trtest__sample__descriptor));
    check_sample(tr_msg_body(u));
    assert_int_equal(tr_msg_priority(u), 3);
    assert_true(tr_actor_addr_eq(tr_msg_reply_to(u), (tr_actor_addr){7, 8}));
    assert_true(tr_actor_addr_is_none(tr_msg_sender(u)));
    assert_int_equal(tr_msg_correlation(u), 0);
    // The unpacked message packs to the same bytes again, and grows its
    // arena like any other.
    size_t len2;
    uint8_t *buf2 = pack_msg(u, &len2);
    assert_int_equal(len2, len);
    assert_memory_equal(buf2, buf, len);
    assert_string_equal(tr_msg_strdup(u, "more"), "more");
    (void)tr_msg_arena(u, 10000);
    free(buf2);
    tr_msg_free(u);
    free(ref);
    free(buf);
    tr_msg_free(m);
    assert_no_flight();
}

// Every envelope field, from bytes protobuf-c packed, and back.
static void
test_envelope_header_fields(void **state)
{
    (void)state;
    hdr hs[] = {
        {.type = "troupe.v1.Down"},
        {.type = "troupe.v1.Down",
         .corr = UINT64_MAX,
         .from = {1, 2},
         .reply = {UINT64_MAX, 1},
         .prio = UINT32_MAX,
         .kind = 4},
        {.type = "troupe.v1.Exit", .corr = 1, .from = {0, 9}, .kind = 3},
        {.type = "troupe.v1.Stop", .reply = {5, 0}, .kind = 2},
        {.type = "troupe.v1.CallFailed", .kind = 5, .prio = 1},
        {.type = "troupe.v1.ExecutorCommand", .kind = 1, .corr = 300},
    };
    Troupe__V1__Address a = TROUPE__V1__ADDRESS__INIT;
    a.node = 3;
    a.actor = 4;
    Troupe__V1__Reason why = TROUPE__V1__REASON__INIT;
    why.code = 2;
    Troupe__V1__Down down = TROUPE__V1__DOWN__INIT;
    down.ref = 11;
    down.actor = &a;
    Troupe__V1__Exit ex = TROUPE__V1__EXIT__INIT;
    ex.from = &a;
    ex.reason = &why;
    Troupe__V1__Stop stop = TROUPE__V1__STOP__INIT;
    Troupe__V1__CallFailed cf = TROUPE__V1__CALL_FAILED__INIT;
    cf.correlation = 12;
    Troupe__V1__ExecutorCommand cmd = TROUPE__V1__EXECUTOR_COMMAND__INIT;
    const ProtobufCMessage *bodies[] = {&down.base, &down.base, &ex.base,
                                        &stop.base, &cf.base,   &cmd.base};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        size_t len;
        uint8_t *buf = wrap_msg(&hs[i], bodies[i], &len);
        tr_msg *u;
        tr_unpack_info info;
        assert_int_equal(tr_msg_unpack(buf, len, NULL, &u, &info), TR_OK);
        assert_string_equal(tr_msg_descriptor(u)->name, hs[i].type);
        assert_int_equal(tr_msg_correlation(u), hs[i].corr);
        assert_true(tr_actor_addr_eq(tr_msg_sender(u), hs[i].from));
        assert_true(tr_actor_addr_eq(tr_msg_reply_to(u), hs[i].reply));
        assert_int_equal(tr_msg_priority(u), hs[i].prio);
        assert_int_equal(info.kind, hs[i].kind);
        assert_int_equal(info.correlation, hs[i].corr);
        // Packs back to the same bytes (kind and sender included).
        size_t len2;
        uint8_t *buf2 = pack_msg(u, &len2);
        assert_int_equal(len2, len);
        assert_memory_equal(buf2, buf, len);
        // protobuf-c's Envelope reads what we wrote.
        Troupe__V1__Envelope *e = troupe__v1__envelope__unpack(NULL, len2, buf2);
        assert_non_null(e);
        assert_string_equal(e->type, hs[i].type);
        assert_int_equal(e->kind, hs[i].kind);
        troupe__v1__envelope__free_unpacked(e, NULL);
        free(buf2);
        free(buf);
        tr_msg_free(u);
    }
    // Fields in another order, repeated, and unknown ones: as protobuf-c.
    static const uint8_t odd[] = {
        0x10, 0x01,                  // correlation 1
        0x1a, 0x02, 0x08, 0x05,      // from.node 5
        0x0a, 0x03, 'b',  'a',  'd', // type "bad" (replaced below)
        0xf8, 0x07, 0x2a,            // field 127, varint (unknown)
        0x3a, 0x02, 0x08, 0x07,      // body: Address.node 7
        0x1a, 0x02, 0x10, 0x06,      // from.actor 6 (merged)
        0x10, 0x02,                  // correlation 2 (the last wins)
        0x0a, 0x11, 't',  'r',  'o', 'u', 'p', 'e', '.', 'v',
        '1',  '.',  'A',  'd',  'd', 'r', 'e', 's', 's',
    };
    tr_msg *u;
    assert_int_equal(tr_msg_unpack(odd, sizeof odd, NULL, &u, NULL), TR_OK);
    assert_true(tr_msg_is(u, &troupe__v1__address__descriptor));
    assert_int_equal(((Troupe__V1__Address *)tr_msg_body(u))->node, 7);
    assert_int_equal(tr_msg_correlation(u), 2);
    assert_true(tr_actor_addr_eq(tr_msg_sender(u), (tr_actor_addr){5, 6}));
    tr_msg_free(u);
    assert_no_flight();
}

// A body that packs to nothing leaves the body field out.
static void
test_envelope_empty_body(void **state)
{
    (void)state;
    tr_msg *m = tr_msg_new(&troupe__v1__address__descriptor, 0, NULL);
    size_t len;
    uint8_t *buf = pack_msg(m, &len);
    assert_int_equal(len, 2 + strlen("troupe.v1.Address"));
    tr_msg *u;
    assert_int_equal(tr_msg_unpack(buf, len, NULL, &u, NULL), TR_OK);
    assert_int_equal(((Troupe__V1__Address *)tr_msg_body(u))->actor, 0);
    tr_msg_free(u);
    free(buf);
    tr_msg_free(m);
    // Not an actor message: nothing to pack.
    struct {
        tr_msg hdr;
        unsigned char rest[256];
    } plain;
    memset(&plain, 0, sizeof plain);
    assert_int_equal(tr_msg_packed_size(&plain.hdr), 0);
    assert_int_equal(tr_msg_pack_to(&plain.hdr, (uint8_t *)plain.rest), 0);
}

// ---------------------------------------------------------------------------
// The registry.

static void
test_envelope_registry(void **state)
{
    (void)state;
    // Built in.
    const char *builtin[] = {"troupe.v1.Address", "troupe.v1.Reason",        "troupe.v1.Down",
                             "troupe.v1.Exit",    "troupe.v1.CallFailed",    "troupe.v1.Stop",
                             "troupe.v1.Spawn",   "troupe.v1.ExecutorReply", "troupe.v1.Done"};
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++) {
        const ProtobufCMessageDescriptor *d = tr_type_find(builtin[i]);
        assert_non_null(d);
        assert_string_equal(d->name, builtin[i]);
    }
    assert_ptr_equal(tr_type_find("troupe.v1.Down"), &troupe__v1__down__descriptor);
    assert_null(tr_type_find("troupe.v1.Nope"));
    assert_null(tr_type_find("Down")); // full names only
    assert_null(tr_type_find(""));
    assert_null(tr_type_find(NULL));
    // Errors.
    assert_int_equal(tr_type_register(NULL), TR_EINVAL);
    assert_int_equal(tr_type_register(&troupe__v1__down__descriptor), TR_OK); // the same again
    ProtobufCMessageDescriptor fake = troupe__v1__down__descriptor;
    assert_int_equal(tr_type_register(&fake), TR_EEXIST);
    fake.magic = 0;
    fake.name = "trtest.Fake";
    assert_int_equal(tr_type_register(&fake), TR_EINVAL);
    assert_null(tr_type_find("trtest.Fake"));
    // Many types: the table grows and keeps every one.
    enum { MANY = 300 };
    static ProtobufCMessageDescriptor many[MANY];
    static char names[MANY][32];
    for (int i = 0; i < MANY; i++) {
        many[i] = trtest__node__descriptor;
        snprintf(names[i], sizeof names[i], "trtest.Many%d", i);
        many[i].name = names[i];
        assert_int_equal(tr_type_register(&many[i]), TR_OK);
    }
    for (int i = 0; i < MANY; i++) {
        assert_ptr_equal(tr_type_find(names[i]), &many[i]);
    }
    assert_ptr_equal(tr_type_find("troupe.v1.Down"), &troupe__v1__down__descriptor);
}

// Lookups on other threads while types are registered: each finds every
// type that was registered before it started.
typedef struct race {
    atomic_int done;
    atomic_int misses;
} race;

static void *
race_finder(void *arg)
{
    race *r = arg;
    while (!atomic_load(&r->done)) {
        if (tr_type_find("troupe.v1.Down") != &troupe__v1__down__descriptor ||
            tr_type_find("trtest.Node") != &trtest__node__descriptor) {
            atomic_fetch_add(&r->misses, 1);
        }
    }
    return NULL;
}

// Every message type of proto/troupe/v1 (read from the .proto files at
// configure time) is built in, and a default one makes the round trip
// through an envelope. Envelope itself is never a body.
static void
test_envelope_every_proto_type(void **state)
{
    (void)state;
    static const char *const names[] = {TR_PROTO_TYPES};
    size_t n = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const ProtobufCMessageDescriptor *d = tr_type_find(names[i]);
        if (strcmp(names[i], "troupe.v1.Envelope") == 0) {
            assert_null(d);
            continue;
        }
        if (d == NULL) {
            fail_msg("%s: not in the registry", names[i]);
        }
        assert_string_equal(d->name, names[i]);
        tr_msg *m = tr_msg_new(d, 0, NULL);
        tr_msg_set_priority(m, (uint32_t)i + 1);
        size_t len;
        uint8_t *buf = pack_msg(m, &len);
        tr_msg *u;
        tr_unpack_info info;
        assert_int_equal(tr_msg_unpack(buf, len, NULL, &u, &info), TR_OK);
        assert_true(tr_msg_is(u, d));
        assert_int_equal(tr_msg_priority(u), i + 1);
        size_t len2;
        uint8_t *buf2 = pack_msg(u, &len2);
        assert_int_equal(len2, len);
        assert_memory_equal(buf2, buf, len);
        free(buf2);
        free(buf);
        tr_msg_free(u);
        tr_msg_free(m);
        n++;
    }
    assert_true(n >= 40);
    assert_no_flight();
}

static void
test_envelope_registry_concurrent(void **state)
{
    (void)state;
    register_test_types();
    race r = {0, 0};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, race_finder, &r), 0);
    }
    enum { N = 200 };
    static ProtobufCMessageDescriptor ds[N];
    static char names[N][32];
    for (int i = 0; i < N; i++) {
        ds[i] = trtest__node__descriptor;
        snprintf(names[i], sizeof names[i], "trtest.Race%d", i);
        ds[i].name = names[i];
        assert_int_equal(tr_type_register(&ds[i]), TR_OK);
        assert_ptr_equal(tr_type_find(names[i]), &ds[i]);
    }
    atomic_store(&r.done, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    assert_int_equal(atomic_load(&r.misses), 0);
}

static void
test_envelope_unknown_type(void **state)
{
    (void)state;
    tr_unpack_stats before, after;
    tr_unpack_stats_get(&before);
    hdr h = {.type = "nope.Nope", .corr = 42, .from = {1, 1}, .reply = {1, 2}, .kind = 1};
    size_t len;
    uint8_t *buf = wrap(&h, (const uint8_t *)"\x08\x01", 2, &len);
    tr_msg *u = (tr_msg *)1;
    tr_unpack_info info;
    assert_int_equal(tr_msg_unpack(buf, len, NULL, &u, &info), TR_ENOTFOUND);
    assert_null(u);
    assert_int_equal(info.reason, TR_UNPACK_UNKNOWN);
    assert_string_equal(info.type, "nope.Nope");
    assert_int_equal(info.correlation, 42);
    assert_int_equal(info.kind, 1);
    assert_true(tr_actor_addr_eq(info.reply_to, (tr_actor_addr){1, 2}));
    assert_true(tr_actor_addr_eq(info.from, (tr_actor_addr){1, 1}));
    free(buf);
    // A name with a NUL in it, and one too long for info: unknown, cut.
    static const char nul[] = "troupe.v1.Down\0x";
    Troupe__V1__Envelope e = TROUPE__V1__ENVELOPE__INIT;
    uint8_t raw[600];
    raw[0] = 0x0a;
    raw[1] = sizeof nul - 1;
    memcpy(raw + 2, nul, sizeof nul - 1);
    assert_int_equal(tr_msg_unpack(raw, 2 + sizeof nul - 1, NULL, &u, &info), TR_ENOTFOUND);
    assert_string_equal(info.type, "troupe.v1.Down");
    char longname[400];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    e.type = longname;
    len = troupe__v1__envelope__pack(&e, raw);
    assert_int_equal(tr_msg_unpack(raw, len, NULL, &u, &info), TR_ENOTFOUND);
    assert_int_equal(strlen(info.type), TR_TYPE_NAME_MAX - 1);
    tr_unpack_stats_get(&after);
    assert_int_equal(after.unknown - before.unknown, 3);
    assert_int_equal(after.unpacked, before.unpacked);
}

// ---------------------------------------------------------------------------
// Nesting.

static void
test_envelope_deep_nesting_refused(void **state)
{
    (void)state;
    register_test_types();
    tr_unpack_stats before, after;
    tr_unpack_stats_get(&before);
    size_t blen;
    uint8_t *body = node_chain(10000, &blen);
    assert_true(blen < 40000); // a small message: ~30 KB for 10,000 levels
    tr_msg *u;
    tr_unpack_info info;
    assert_int_equal(unpack_node(body, blen, NULL, &u, &info), TR_ETOOBIG);
    assert_null(u);
    assert_int_equal(info.reason, TR_UNPACK_TOO_DEEP);
    assert_int_equal(info.correlation, 5);
    tr_unpack_stats_get(&after);
    assert_int_equal(after.too_deep - before.too_deep, 1);
    // Deep bytes inside a bytes field, or an unknown field, are not levels:
    // protobuf-c does not recurse into them.
    Trtest__Node n = TRTEST__NODE__INIT;
    n.pad.data = body;
    n.pad.len = blen;
    hdr h = {.type = "trtest.Node"};
    size_t len;
    uint8_t *env = wrap_msg(&h, &n.base, &len);
    assert_int_equal(tr_msg_unpack(env, len, NULL, &u, NULL), TR_OK);
    assert_int_equal(((Trtest__Node *)tr_msg_body(u))->pad.len, blen);
    tr_msg_free(u);
    free(env);
    uint8_t *unk = malloc(blen + 8);
    unk[0] = 0x7a; // field 15, length-delimited: not a field of Node
    size_t k = 1 + put_varint(unk + 1, blen);
    memcpy(unk + k, body, blen);
    assert_int_equal(unpack_node(unk, k + blen, NULL, &u, NULL), TR_OK);
    assert_int_equal(((Trtest__Node *)tr_msg_body(u))->base.n_unknown_fields, 1);
    tr_msg_free(u);
    free(unk);
    free(body);
    assert_no_flight();
}

static void
test_envelope_depth_limit_exact(void **state)
{
    (void)state;
    register_test_types();
    struct {
        size_t levels;
        uint32_t max;
        tr_err want;
    } cases[] = {
        {1, 0, TR_OK},      {64, 0, TR_OK},         {65, 0, TR_ETOOBIG},
        {64, 1000, TR_OK},  {65, 1000, TR_ETOOBIG}, {3, 3, TR_OK},
        {4, 3, TR_ETOOBIG}, {1, 1, TR_OK},          {2, 1, TR_ETOOBIG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t blen;
        uint8_t *body = node_chain(cases[i].levels, &blen);
        tr_unpack_limits lim = {.max_depth = cases[i].max};
        tr_msg *u;
        tr_unpack_info info;
        tr_err rv = unpack_node(body, blen, &lim, &u, &info);
        assert_int_equal(rv, cases[i].want);
        if (rv == TR_OK) {
            assert_int_equal(chain_levels(tr_msg_body(u)), cases[i].levels);
            tr_msg_free(u);
        } else {
            assert_int_equal(info.reason, TR_UNPACK_TOO_DEEP);
        }
        free(body);
    }
    // Levels through a oneof member: Sample (1) -> node (2) -> children.
    for (size_t chain = 62; chain <= 64; chain++) {
        size_t blen;
        uint8_t *nodes = node_chain(chain, &blen);
        uint8_t *body = malloc(blen + 8);
        body[0] = 0x4a; // Sample field 9 (node), length-delimited
        size_t k = 1 + put_varint(body + 1, blen);
        memcpy(body + k, nodes, blen);
        hdr h = {.type = "trtest.Sample"};
        size_t len;
        uint8_t *env = wrap(&h, body, k + blen, &len);
        tr_msg *u;
        tr_err rv = tr_msg_unpack(env, len, NULL, &u, NULL);
        assert_int_equal(rv, 1 + chain <= 64 ? TR_OK : TR_ETOOBIG);
        if (rv == TR_OK) {
            assert_int_equal(chain_levels(((Trtest__Sample *)tr_msg_body(u))->node), chain);
            tr_msg_free(u);
        }
        free(env);
        free(body);
        free(nodes);
    }
    assert_no_flight();
}

// ---------------------------------------------------------------------------
// Bad input.

// A message cut at a field boundary decodes as a valid shorter message:
// the envelope carries no end marker, so the transport's length must be
// exact (an nng message's is). Cut anywhere else, it is malformed.
static void
test_envelope_truncated(void **state)
{
    (void)state;
    register_test_types();
    tr_msg *m;
    (void)build_sample(&m);
    tr_msg_set_priority(m, 9);
    size_t len;
    uint8_t *buf = pack_msg(m, &len);
    // The body is the last field: its key sits after the header fields.
    size_t body_at = len - protobuf_c_message_get_packed_size(tr_msg_body(m));
    while (buf[body_at] != 0x3a) {
        body_at--;
    }
    size_t ok = 0, refused = 0;
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut + 1); // exactly cut bytes readable (ASan)
        memcpy(copy, buf, cut);
        tr_msg *u;
        tr_err rv = tr_msg_unpack(copy, cut, NULL, &u, NULL);
        if (rv == TR_OK) {
            ok++;
            // Only cuts at a boundary of the envelope's fields decode.
            assert_true(cut <= body_at);
            tr_msg_free(u);
        } else {
            refused++;
            assert_true(rv == TR_EINVAL || rv == TR_ENOTFOUND);
        }
        free(copy);
    }
    // Cut just before the body: a Sample with every field at its default.
    tr_msg *u;
    assert_int_equal(tr_msg_unpack(buf, body_at, NULL, &u, NULL), TR_OK);
    Trtest__Sample *s = tr_msg_body(u);
    assert_int_equal(s->n_tags, 0);
    assert_string_equal(s->name, "");
    assert_int_equal(tr_msg_priority(u), 9);
    tr_msg_free(u);
    assert_true(ok >= 2);
    assert_true(refused > len / 2);
    free(buf);
    tr_msg_free(m);
    assert_no_flight();
}

static void
test_envelope_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        uint8_t bytes[24];
        size_t len;
    } bad[] = {
        {"empty", {0}, 0},
        {"no type", {0x10, 0x01}, 2},
        {"wire type 7", {0x0f, 0x00}, 2},
        {"group", {0x0b, 0x0c}, 2},
        {"field 0", {0x02, 0x00}, 2},
        {"overlong varint",
         {0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
         12},
        {"type past the end", {0x0a, 0x20, 't'}, 3},
        {"type as varint", {0x08, 0x01}, 2},
        {"body as varint", {0x0a, 0x01, 'x', 0x38, 0x01}, 5},
        {"from past the end", {0x1a, 0x05, 0x08}, 3},
        {"from with a bad field", {0x1a, 0x02, 0x0a, 0x00}, 4},
        {"cut varint", {0x10, 0x80}, 2},
        {"fixed64 cut", {0x11, 0x00, 0x00}, 3},
    };
    tr_unpack_stats before, after;
    tr_unpack_stats_get(&before);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tr_msg *u = (tr_msg *)1;
        tr_unpack_info info;
        tr_err rv = tr_msg_unpack(bad[i].len ? bad[i].bytes : NULL, bad[i].len, NULL, &u, &info);
        if (rv != TR_EINVAL) {
            fail_msg("%s: %s", bad[i].what, tr_strerror(rv));
        }
        assert_null(u);
        assert_int_equal(info.reason, TR_UNPACK_MALFORMED);
    }
    tr_unpack_stats_get(&after);
    assert_int_equal(after.malformed - before.malformed, sizeof bad / sizeof bad[0]);
    // A known type whose body is not of it, and an unknown kind.
    hdr h = {.type = "troupe.v1.Address"};
    size_t len;
    uint8_t *buf = wrap(&h, (const uint8_t *)"\x0a\x01x", 3, &len); // node as bytes
    tr_msg *u;
    assert_int_equal(tr_msg_unpack(buf, len, NULL, &u, NULL), TR_EINVAL);
    free(buf);
    buf = wrap(&h, (const uint8_t *)"\x08\xff", 2, &len); // a cut varint
    assert_int_equal(tr_msg_unpack(buf, len, NULL, &u, NULL), TR_EINVAL);
    free(buf);
    h.kind = 99;
    buf = wrap(&h, NULL, 0, &len);
    tr_unpack_info info;
    assert_int_equal(tr_msg_unpack(buf, len, NULL, &u, &info), TR_EINVAL);
    assert_int_equal(info.kind, 99);
    free(buf);
    assert_no_flight();
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t
rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

// Random bytes, and random changes to a valid envelope: every input is
// accounted for in exactly one counter, with no crash and no leak.
static void
test_envelope_garbage(void **state)
{
    (void)state;
    register_test_types();
    tr_msg *m;
    (void)build_sample(&m);
    size_t vlen;
    uint8_t *valid = pack_msg(m, &vlen);
    tr_msg_free(m);
    tr_unpack_stats before, after;
    tr_unpack_stats_get(&before);
    enum { N = 20000 };
    uint8_t buf[512];
    for (int i = 0; i < N; i++) {
        size_t len;
        if (i % 2 == 0) {
            len = rnd() % 64;
            for (size_t k = 0; k < len; k++) {
                buf[k] = (uint8_t)rnd();
            }
        } else {
            len = vlen;
            memcpy(buf, valid, vlen);
            for (int k = 0, nk = 1 + (int)(rnd() % 4); k < nk; k++) {
                buf[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
            }
        }
        tr_msg *u;
        if (tr_msg_unpack(buf, len, NULL, &u, NULL) == TR_OK) {
            // Whatever decoded packs again.
            size_t n = tr_msg_packed_size(u);
            uint8_t *p = malloc(n + 1);
            assert_int_equal(tr_msg_pack_to(u, p), n);
            free(p);
            tr_msg_free(u);
        }
    }
    tr_unpack_stats_get(&after);
    uint64_t total = (after.unpacked - before.unpacked) + (after.unknown - before.unknown) +
                     (after.malformed - before.malformed) + (after.too_deep - before.too_deep) +
                     (after.over_budget - before.over_budget) + (after.over_cap - before.over_cap);
    assert_int_equal(total, N);
    free(valid);
    assert_no_flight();
}

// ---------------------------------------------------------------------------
// Memory limits.

// amplified returns a Sample body of n empty Address peers: 2 bytes each on
// the wire, a pointer and a struct each once unpacked (about 24 times).
static uint8_t *
amplified(size_t n, size_t *len)
{
    uint8_t *b = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        b[2 * i] = 0x2a; // field 5 (peers), length-delimited
        b[2 * i + 1] = 0x00;
    }
    *len = 2 * n;
    return b;
}

static tr_err
unpack_sample(const uint8_t *body, size_t blen, const tr_unpack_limits *lim, tr_msg **out,
              tr_unpack_info *info)
{
    hdr h = {.type = "trtest.Sample", .corr = 77};
    size_t len;
    uint8_t *env = wrap(&h, body, blen, &len);
    tr_err rv = tr_msg_unpack(env, len, lim, out, info);
    free(env);
    return rv;
}

static void
test_envelope_budget(void **state)
{
    (void)state;
    register_test_types();
    size_t blen;
    uint8_t *body = amplified(10000, &blen);
    tr_msg *u;
    tr_unpack_info info;
    // The default budget (64 per byte) holds it.
    assert_int_equal(unpack_sample(body, blen, NULL, &u, &info), TR_OK);
    assert_int_equal(((Trtest__Sample *)tr_msg_body(u))->n_peers, 10000);
    tr_msg_free(u);
    // Four bytes per byte of body do not.
    tr_unpack_stats before, after;
    tr_unpack_stats_get(&before);
    tr_unpack_limits lim = {.budget_factor = 4, .budget_base = 16};
    assert_int_equal(unpack_sample(body, blen, &lim, &u, &info), TR_ETOOBIG);
    assert_null(u);
    assert_int_equal(info.reason, TR_UNPACK_OVER_BUDGET);
    assert_int_equal(info.correlation, 77);
    tr_unpack_stats_get(&after);
    assert_int_equal(after.over_budget - before.over_budget, 1);
    // A large plain bytes field needs about its length: fine with little.
    Trtest__Sample s = TRTEST__SAMPLE__INIT;
    uint8_t *big = calloc(1, 1 << 20);
    s.data.data = big;
    s.data.len = 1 << 20;
    hdr h = {.type = "trtest.Sample"};
    size_t len;
    uint8_t *env = wrap_msg(&h, &s.base, &len);
    lim.budget_factor = 2;
    assert_int_equal(tr_msg_unpack(env, len, &lim, &u, NULL), TR_OK);
    assert_int_equal(((Trtest__Sample *)tr_msg_body(u))->data.len, 1 << 20);
    tr_msg_free(u);
    free(env);
    free(big);
    free(body);
    assert_no_flight();
}

static void
test_envelope_global_cap(void **state)
{
    (void)state;
    register_test_types();
    size_t blen;
    uint8_t *body = amplified(10000, &blen); // about 500 KB unpacked
    size_t old = tr_unpack_set_cap(64 * 1024);
    tr_msg *u;
    tr_unpack_info info;
    assert_int_equal(unpack_sample(body, blen, NULL, &u, &info), TR_ENOMEM);
    assert_null(u);
    assert_int_equal(info.reason, TR_UNPACK_OVER_CAP);
    assert_no_flight();
    // Small messages still pass under the small cap.
    tr_msg *m = tr_msg_new(&troupe__v1__down__descriptor, 0, NULL);
    size_t len;
    uint8_t *buf = pack_msg(m, &len);
    assert_int_equal(tr_msg_unpack(buf, len, NULL, &u, NULL), TR_OK);
    tr_msg_free(u);
    free(buf);
    tr_msg_free(m);
    assert_int_equal(tr_unpack_set_cap(0), 64 * 1024);
    assert_int_equal(tr_unpack_set_cap(old), TR_UNPACK_DEFAULT_CAP);
    assert_int_equal(unpack_sample(body, blen, NULL, &u, NULL), TR_OK);
    tr_msg_free(u);
    free(body);
    assert_no_flight();
}

// Threads unpacking at once under a cap that holds about two of their
// messages: each unpack succeeds or is refused with TR_ENOMEM, never
// anything else, and the count of bytes in flight comes back to zero.
typedef struct cap_run {
    const uint8_t *env;
    size_t len;
    atomic_int ok;
    atomic_int nomem;
    atomic_int other;
} cap_run;

static void *
cap_worker(void *arg)
{
    cap_run *r = arg;
    for (int i = 0; i < 100; i++) {
        tr_msg *u;
        tr_err rv = tr_msg_unpack(r->env, r->len, NULL, &u, NULL);
        if (rv == TR_OK) {
            atomic_fetch_add(&r->ok, 1);
            tr_msg_free(u);
        } else if (rv == TR_ENOMEM) {
            atomic_fetch_add(&r->nomem, 1);
        } else {
            atomic_fetch_add(&r->other, 1);
        }
    }
    return NULL;
}

static void
test_envelope_concurrent_cap(void **state)
{
    (void)state;
    register_test_types();
    size_t blen;
    uint8_t *body = amplified(4000, &blen); // about 350 KB unpacked
    hdr h = {.type = "trtest.Sample"};
    cap_run r = {.ok = 0, .nomem = 0, .other = 0};
    r.env = wrap(&h, body, blen, &r.len);
    size_t old = tr_unpack_set_cap(800 * 1024);
    enum { T = 4 };
    run_threads(cap_worker, &r, T);
    tr_unpack_set_cap(old);
    assert_int_equal(atomic_load(&r.other), 0);
    assert_int_equal(atomic_load(&r.ok) + atomic_load(&r.nomem), T * 100);
    assert_true(atomic_load(&r.ok) > 0);
    free((void *)r.env);
    free(body);
    assert_no_flight();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_envelope_round_trip_every_field),
        cmocka_unit_test(test_envelope_header_fields),
        cmocka_unit_test(test_envelope_empty_body),
        cmocka_unit_test(test_envelope_registry),
        cmocka_unit_test(test_envelope_every_proto_type),
        cmocka_unit_test(test_envelope_registry_concurrent),
        cmocka_unit_test(test_envelope_unknown_type),
        cmocka_unit_test(test_envelope_deep_nesting_refused),
        cmocka_unit_test(test_envelope_depth_limit_exact),
        cmocka_unit_test(test_envelope_truncated),
        cmocka_unit_test(test_envelope_malformed),
        cmocka_unit_test(test_envelope_garbage),
        cmocka_unit_test(test_envelope_budget),
        cmocka_unit_test(test_envelope_global_cap),
        cmocka_unit_test(test_envelope_concurrent_cap),
    };
    return tu_run(tests);
}
