// Design notes.
//
// The envelope (troupe.v1.Envelope) is packed and decoded here by hand, not
// through its generated code: packing writes the header fields and then
// packs the body straight after its length prefix, so a body is packed
// once, into the caller's buffer (an nng message); decoding leaves the body
// where it is in the input instead of copying it into a malloc'd bytes
// field first. The bytes are exactly protobuf-c's for the same Envelope
// (fields in number order, proto3 defaults left out, an absent address
// left out), and the decoder takes what protobuf-c takes: fields in any
// order, repeated (the last wins; an address is merged), unknown fields
// skipped.
//
// Body types are looked up by full name in a registry that is an immutable
// open-addressing table behind one atomic pointer: a lookup is a load and
// a probe, with no lock; a registration (rare, at start-up) copies the
// table under a mutex and publishes the copy. A replaced table is kept on
// the new one's list (a reader may still be probing it), so the registry
// only grows: a few KiB for hundreds of types.
//
// Untrusted bodies. protobuf-c 1.4.1 recurses once per level of nesting
// with no limit, so a small message nested deeply overflows the stack.
// Before it sees the body, depth_scan walks the bytes iteratively with the
// type's descriptors, keeping an explicit stack of (end, descriptor) of at
// most TR_UNPACK_MAX_DEPTH entries, and refuses anything deeper: only a
// length-delimited field that the descriptor says is a message opens a
// level (protobuf-c keeps unknown fields as bytes and does not recurse
// into them), others are skipped. Then protobuf-c unpacks through an
// allocator that takes from the new message's arena (its free is a no-op:
// the arena goes with the message) and charges a budget proportional to
// the body's length and, in steps of RESERVE_STEP, a global count of
// bytes held by running unpacks, against a cap. A refused allocation makes
// protobuf-c fail; the message is freed whole, so nothing leaks.
#include "actor_int.h"

#include <pthread.h>
#include <string.h>

#include <troupe/envelope.h>
#include <troupe/v1/control.pb-c.h>
#include <troupe/v1/executor.pb-c.h>
#include <troupe/v1/job.pb-c.h>
#include <troupe/v1/node.pb-c.h>
#include <troupe/v1/process.pb-c.h>

// Field numbers and wire types of the envelope and of Address.
enum {
    WT_VARINT = 0,
    WT_I64 = 1,
    WT_LEN = 2,
    WT_I32 = 5,
};

enum {
    F_TYPE = 1,
    F_CORRELATION = 2,
    F_FROM = 3,
    F_REPLY_TO = 4,
    F_PRIORITY = 5,
    F_KIND = 6,
    F_BODY = 7,
};

#define TAG(f, wt) ((uint8_t)((f) << 3 | (wt)))

#define RESERVE_STEP ((size_t)16 * 1024) // bytes taken from the global cap at once

// ---------------------------------------------------------------------------
// The wire format.

static size_t
varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *
put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

// get_varint reads a varint of at most 10 bytes from p[*pos..end).
static bool
get_varint(const uint8_t *p, size_t *pos, size_t end, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned i = 0; i < 10 && *pos < end; i++) {
        uint8_t b = p[(*pos)++];
        r |= (uint64_t)(b & 0x7f) << (7 * i);
        if (b < 0x80) {
            *v = r;
            return true;
        }
    }
    return false;
}

// get_tag reads a field's key: its number (1 .. 2^29 - 1) and wire type.
static bool
get_tag(const uint8_t *p, size_t *pos, size_t end, uint32_t *num, unsigned *wt)
{
    uint64_t tag;
    if (!get_varint(p, pos, end, &tag) || tag > UINT32_MAX || (tag >> 3) == 0) {
        return false;
    }
    *num = (uint32_t)(tag >> 3);
    *wt = (unsigned)(tag & 7);
    return true;
}

// skip_value skips a value of wire type wt (groups, wire types 3 and 4,
// are malformed: protobuf-c refuses them too). A length-delimited value's
// length is checked against end.
static bool
skip_value(const uint8_t *p, size_t *pos, size_t end, unsigned wt)
{
    uint64_t v;
    switch (wt) {
    case WT_VARINT:
        return get_varint(p, pos, end, &v);
    case WT_I64:
        if (end - *pos < 8) {
            return false;
        }
        *pos += 8;
        return true;
    case WT_I32:
        if (end - *pos < 4) {
            return false;
        }
        *pos += 4;
        return true;
    case WT_LEN:
        if (!get_varint(p, pos, end, &v) || v > end - *pos) {
            return false;
        }
        *pos += (size_t)v;
        return true;
    default:
        return false;
    }
}

// get_len reads the length of a length-delimited value and checks it.
static bool
get_len(const uint8_t *p, size_t *pos, size_t end, size_t *n)
{
    uint64_t v;
    if (!get_varint(p, pos, end, &v) || v > end - *pos) {
        return false;
    }
    *n = (size_t)v;
    return true;
}

static bool
addr_present(tr_actor_addr a)
{
    return a.node != 0 || a.actor != 0;
}

// addr_size is the bytes of an Address's fields (not its key and length).
static size_t
addr_size(tr_actor_addr a)
{
    return (a.node != 0 ? 1 + varint_size(a.node) : 0) +
           (a.actor != 0 ? 1 + varint_size(a.actor) : 0);
}

static uint8_t *
put_addr(uint8_t *p, unsigned field, tr_actor_addr a)
{
    *p++ = TAG(field, WT_LEN);
    p = put_varint(p, addr_size(a));
    if (a.node != 0) {
        *p++ = TAG(1, WT_VARINT);
        p = put_varint(p, a.node);
    }
    if (a.actor != 0) {
        *p++ = TAG(2, WT_VARINT);
        p = put_varint(p, a.actor);
    }
    return p;
}

// get_addr merges the Address in p[pos..end) into *a.
static bool
get_addr(const uint8_t *p, size_t pos, size_t end, tr_actor_addr *a)
{
    while (pos < end) {
        uint32_t num;
        unsigned wt;
        if (!get_tag(p, &pos, end, &num, &wt)) {
            return false;
        }
        if (num == 1 || num == 2) {
            uint64_t v;
            if (wt != WT_VARINT || !get_varint(p, &pos, end, &v)) {
                return false;
            }
            *(num == 1 ? &a->node : &a->actor) = v;
        } else if (!skip_value(p, &pos, end, wt)) {
            return false;
        }
    }
    return true;
}

// ---------------------------------------------------------------------------
// Packing.

// head_size is the bytes of the envelope but for the body field.
static size_t
head_size(const tra_msg *am, size_t name_len)
{
    size_t n = 1 + varint_size(name_len) + name_len;
    if (am->am_corr != 0) {
        n += 1 + varint_size(am->am_corr);
    }
    if (addr_present(am->am_from)) {
        size_t a = addr_size(am->am_from);
        n += 1 + varint_size(a) + a;
    }
    if (addr_present(am->am_reply)) {
        size_t a = addr_size(am->am_reply);
        n += 1 + varint_size(a) + a;
    }
    if (am->am_prio != 0) {
        n += 1 + varint_size(am->am_prio);
    }
    if (am->am_kind != 0) {
        n += 1 + varint_size(am->am_kind);
    }
    return n;
}

size_t
tr_msg_packed_size(const tr_msg *m)
{
    if (!tra_msg_valid(m)) {
        return 0;
    }
    const tra_msg *am = (const tra_msg *)(const void *)m;
    size_t body = protobuf_c_message_get_packed_size(am->am_body);
    size_t n = head_size(am, strlen(tr_msg_descriptor(m)->name));
    return body == 0 ? n : n + 1 + varint_size(body) + body;
}

size_t
tr_msg_pack_to(const tr_msg *m, uint8_t *buf)
{
    if (!tra_msg_valid(m)) {
        return 0;
    }
    const tra_msg *am = (const tra_msg *)(const void *)m;
    const char *name = tr_msg_descriptor(m)->name;
    size_t name_len = strlen(name);
    uint8_t *p = buf;
    *p++ = TAG(F_TYPE, WT_LEN);
    p = put_varint(p, name_len);
    memcpy(p, name, name_len);
    p += name_len;
    if (am->am_corr != 0) {
        *p++ = TAG(F_CORRELATION, WT_VARINT);
        p = put_varint(p, am->am_corr);
    }
    if (addr_present(am->am_from)) {
        p = put_addr(p, F_FROM, am->am_from);
    }
    if (addr_present(am->am_reply)) {
        p = put_addr(p, F_REPLY_TO, am->am_reply);
    }
    if (am->am_prio != 0) {
        *p++ = TAG(F_PRIORITY, WT_VARINT);
        p = put_varint(p, am->am_prio);
    }
    if (am->am_kind != 0) {
        *p++ = TAG(F_KIND, WT_VARINT);
        p = put_varint(p, am->am_kind);
    }
    size_t body = protobuf_c_message_get_packed_size(am->am_body);
    if (body != 0) {
        *p++ = TAG(F_BODY, WT_LEN);
        p = put_varint(p, body);
        p += protobuf_c_message_pack(am->am_body, p);
    }
    return (size_t)(p - buf);
}

// ---------------------------------------------------------------------------
// The type registry.

typedef struct reg_table {
    struct reg_table *t_prev; // the table this one replaced (a reader may still use it)
    size_t t_mask;            // slots - 1 (a power of two, at least twice t_count)
    size_t t_count;
    const ProtobufCMessageDescriptor *t_slots[];
} reg_table;

// The current table: published with a release store under g_reg_lock,
// read with an acquire load (pairs with it) by every lookup.
static _Atomic(reg_table *) g_reg;
static pthread_mutex_t g_reg_lock = PTHREAD_MUTEX_INITIALIZER; // writers of g_reg
static pthread_once_t g_reg_once = PTHREAD_ONCE_INIT;

static uint64_t
name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull; // FNV-1a
    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    }
    return h;
}

static const ProtobufCMessageDescriptor *
reg_lookup(const reg_table *t, const char *name)
{
    if (t == NULL) {
        return NULL;
    }
    for (size_t i = name_hash(name) & t->t_mask;; i = (i + 1) & t->t_mask) {
        const ProtobufCMessageDescriptor *d = t->t_slots[i];
        if (d == NULL || strcmp(d->name, name) == 0) {
            return d;
        }
    }
}

static void
reg_put(reg_table *t, const ProtobufCMessageDescriptor *d)
{
    size_t i = name_hash(d->name) & t->t_mask;
    while (t->t_slots[i] != NULL) {
        i = (i + 1) & t->t_mask;
    }
    t->t_slots[i] = d;
    t->t_count++;
}

// reg_add registers d; the caller holds g_reg_lock.
static tr_err
reg_add(const ProtobufCMessageDescriptor *d)
{
    reg_table *old = atomic_load_explicit(&g_reg, memory_order_relaxed);
    const ProtobufCMessageDescriptor *have = reg_lookup(old, d->name);
    if (have != NULL) {
        return have == d ? TR_OK : TR_EEXIST;
    }
    size_t count = old != NULL ? old->t_count : 0;
    size_t slots = 64;
    while (slots < 2 * (count + 1)) {
        slots *= 2;
    }
    reg_table *t = calloc(1, sizeof(reg_table) + slots * sizeof(t->t_slots[0]));
    if (t == NULL) {
        tra_panic("out of memory growing the type registry");
    }
    t->t_mask = slots - 1;
    if (old != NULL) {
        for (size_t i = 0; i <= old->t_mask; i++) {
            if (old->t_slots[i] != NULL) {
                reg_put(t, old->t_slots[i]);
            }
        }
    }
    reg_put(t, d);
    t->t_prev = old;
    atomic_store_explicit(&g_reg, t, memory_order_release);
    return TR_OK;
}

// The messages of every file of proto/troupe/v1 but envelope.proto (an
// envelope carries bodies; it is never one).
static const ProtobufCMessageDescriptor *const builtin_types[] = {
    &troupe__v1__address__descriptor,
    &troupe__v1__reason__descriptor,
    &troupe__v1__down__descriptor,
    &troupe__v1__exit__descriptor,
    &troupe__v1__call_failed__descriptor,
    &troupe__v1__stop__descriptor,
    &troupe__v1__task_spec__descriptor,
    &troupe__v1__spawn__descriptor,
    &troupe__v1__cancel__descriptor,
    &troupe__v1__shutdown__descriptor,
    &troupe__v1__status_request__descriptor,
    &troupe__v1__task_status__descriptor,
    &troupe__v1__status_reply__descriptor,
    &troupe__v1__executor_command__descriptor,
    &troupe__v1__error__descriptor,
    &troupe__v1__spawned__descriptor,
    &troupe__v1__task_result__descriptor,
    &troupe__v1__done__descriptor,
    &troupe__v1__executor_reply__descriptor,
    &troupe__v1__hello__descriptor,
    &troupe__v1__heartbeat__descriptor,
    &troupe__v1__monitor_req__descriptor,
    &troupe__v1__demonitor_req__descriptor,
    &troupe__v1__whereis_req__descriptor,
    &troupe__v1__whereis_reply__descriptor,
    &troupe__v1__node_error__descriptor,
    &troupe__v1__link_req__descriptor,
    &troupe__v1__unlink_req__descriptor,
    &troupe__v1__process_exit__descriptor,
    &troupe__v1__process_kill__descriptor,
    &troupe__v1__process_started__descriptor,
    &troupe__v1__process_output__descriptor,
    &troupe__v1__env_var__descriptor,
    &troupe__v1__label__descriptor,
    &troupe__v1__rlimit__descriptor,
    &troupe__v1__exec_task__descriptor,
    &troupe__v1__shell_task__descriptor,
    &troupe__v1__sleep_task__descriptor,
    &troupe__v1__noop_task__descriptor,
    &troupe__v1__plugin_task__descriptor,
    &troupe__v1__job_spec__descriptor,
    &troupe__v1__group_spec__descriptor,
    &troupe__v1__submit_batch__descriptor,
    &troupe__v1__ping__descriptor,
    &troupe__v1__submit__descriptor,
    &troupe__v1__cancel_jobs__descriptor,
    &troupe__v1__status_jobs__descriptor,
    &troupe__v1__list_jobs__descriptor,
    &troupe__v1__wait_jobs__descriptor,
    &troupe__v1__logs__descriptor,
    &troupe__v1__group_control__descriptor,
    &troupe__v1__shutdown_daemon__descriptor,
    &troupe__v1__control_request__descriptor,
    &troupe__v1__control_error__descriptor,
    &troupe__v1__pong__descriptor,
    &troupe__v1__submitted__descriptor,
    &troupe__v1__job_info__descriptor,
    &troupe__v1__job_list__descriptor,
    &troupe__v1__log_chunk__descriptor,
    &troupe__v1__ack__descriptor,
    &troupe__v1__control_reply__descriptor,
    &troupe__v1__job_event__descriptor,
};

static void
reg_builtins(void)
{
    pthread_mutex_lock(&g_reg_lock);
    for (size_t i = 0; i < sizeof builtin_types / sizeof builtin_types[0]; i++) {
        if (reg_add(builtin_types[i]) != TR_OK) {
            tra_panic("built-in type %s registered twice", builtin_types[i]->name);
        }
    }
    pthread_mutex_unlock(&g_reg_lock);
}

tr_err
tr_type_register(const ProtobufCMessageDescriptor *d)
{
    if (d == NULL || d->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC || d->name == NULL ||
        d->name[0] == '\0' || strlen(d->name) >= TR_TYPE_NAME_MAX) {
        return TR_EINVAL;
    }
    pthread_once(&g_reg_once, reg_builtins);
    pthread_mutex_lock(&g_reg_lock);
    tr_err rv = reg_add(d);
    pthread_mutex_unlock(&g_reg_lock);
    return rv;
}

const ProtobufCMessageDescriptor *
tr_type_find(const char *name)
{
    if (name == NULL) {
        return NULL;
    }
    pthread_once(&g_reg_once, reg_builtins);
    return reg_lookup(atomic_load_explicit(&g_reg, memory_order_acquire), name);
}

// ---------------------------------------------------------------------------
// Unpacking.

// The global cap and the bytes running unpacks hold (relaxed: a counter
// and a limit, ordering nothing else).
static _Atomic size_t g_cap = TR_UNPACK_DEFAULT_CAP;
static _Atomic size_t g_in_flight;

// Counters (relaxed).
static _Atomic uint64_t g_unpacked, g_unknown, g_malformed, g_too_deep, g_over_budget, g_over_cap;

size_t
tr_unpack_set_cap(size_t bytes)
{
    return atomic_exchange_explicit(&g_cap, bytes != 0 ? bytes : TR_UNPACK_DEFAULT_CAP,
                                    memory_order_relaxed);
}

void
tr_unpack_stats_get(tr_unpack_stats *out)
{
    out->unpacked = atomic_load_explicit(&g_unpacked, memory_order_relaxed);
    out->unknown = atomic_load_explicit(&g_unknown, memory_order_relaxed);
    out->malformed = atomic_load_explicit(&g_malformed, memory_order_relaxed);
    out->too_deep = atomic_load_explicit(&g_too_deep, memory_order_relaxed);
    out->over_budget = atomic_load_explicit(&g_over_budget, memory_order_relaxed);
    out->over_cap = atomic_load_explicit(&g_over_cap, memory_order_relaxed);
    out->in_flight = atomic_load_explicit(&g_in_flight, memory_order_relaxed);
}

// A decoded envelope; the type name and body point into the input.
typedef struct env {
    const uint8_t *e_type;
    size_t e_type_len;
    uint64_t e_corr;
    tr_actor_addr e_from;
    tr_actor_addr e_reply;
    uint32_t e_prio;
    uint32_t e_kind;
    const uint8_t *e_body;
    size_t e_body_len;
} env;

static bool
env_decode(const uint8_t *p, size_t len, env *e)
{
    memset(e, 0, sizeof *e);
    size_t pos = 0;
    while (pos < len) {
        uint32_t num;
        unsigned wt;
        uint64_t v;
        size_t n;
        if (!get_tag(p, &pos, len, &num, &wt)) {
            return false;
        }
        switch (num) {
        case F_TYPE:
        case F_BODY:
            if (wt != WT_LEN || !get_len(p, &pos, len, &n)) {
                return false;
            }
            *(num == F_TYPE ? &e->e_type : &e->e_body) = p + pos;
            *(num == F_TYPE ? &e->e_type_len : &e->e_body_len) = n;
            pos += n;
            break;
        case F_FROM:
        case F_REPLY_TO:
            if (wt != WT_LEN || !get_len(p, &pos, len, &n) ||
                !get_addr(p, pos, pos + n, num == F_FROM ? &e->e_from : &e->e_reply)) {
                return false;
            }
            pos += n;
            break;
        case F_CORRELATION:
        case F_PRIORITY:
        case F_KIND:
            if (wt != WT_VARINT || !get_varint(p, &pos, len, &v)) {
                return false;
            }
            if (num == F_CORRELATION) {
                e->e_corr = v;
            } else {
                *(num == F_PRIORITY ? &e->e_prio : &e->e_kind) = (uint32_t)v; // as protobuf-c
            }
            break;
        default:
            if (!skip_value(p, &pos, len, wt)) {
                return false;
            }
            break;
        }
    }
    return true;
}

// depth_scan checks that the body p[0..len) of type d nests at most max
// levels (the body is level 1), iteratively: TR_UNPACK_OK, _TOO_DEEP, or
// _MALFORMED (bytes protobuf-c would refuse anyway).
static tr_unpack_reason
depth_scan(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len, uint32_t max)
{
    struct {
        size_t end;
        const ProtobufCMessageDescriptor *d;
    } st[TR_UNPACK_MAX_DEPTH];
    size_t top = 1, pos = 0;
    st[0].end = len;
    st[0].d = d;
    while (top > 0) {
        size_t end = st[top - 1].end;
        if (pos == end) {
            top--;
            continue;
        }
        uint32_t num;
        unsigned wt;
        if (!get_tag(p, &pos, end, &num, &wt)) {
            return TR_UNPACK_MALFORMED;
        }
        if (wt != WT_LEN) {
            if (!skip_value(p, &pos, end, wt)) {
                return TR_UNPACK_MALFORMED;
            }
            continue;
        }
        size_t n;
        if (!get_len(p, &pos, end, &n)) {
            return TR_UNPACK_MALFORMED;
        }
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field(st[top - 1].d, num);
        if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE) {
            if (top >= max) {
                return TR_UNPACK_TOO_DEEP;
            }
            st[top].end = pos + n;
            st[top].d = f->descriptor;
            top++;
        } else {
            pos += n;
        }
    }
    return TR_UNPACK_OK;
}

// The allocator protobuf-c unpacks through (allocator_data: the budget).
typedef struct budget {
    tr_msg *b_msg;           // whose arena the bytes come from
    size_t b_used;           // bytes handed out, rounded to 16
    size_t b_limit;          // the message's budget
    size_t b_reserved;       // bytes of the global count this unpack holds
    tr_unpack_reason b_fail; // why an allocation was refused
} budget;

// reserve adds at least want bytes to what b holds of the global cap.
static bool
reserve(budget *b, size_t want)
{
    size_t step = want > RESERVE_STEP ? want : RESERVE_STEP;
    size_t cap = atomic_load_explicit(&g_cap, memory_order_relaxed);
    size_t old = atomic_fetch_add_explicit(&g_in_flight, step, memory_order_relaxed);
    if (old > cap || step > cap - old) {
        atomic_fetch_sub_explicit(&g_in_flight, step, memory_order_relaxed);
        b->b_fail = TR_UNPACK_OVER_CAP;
        return false;
    }
    b->b_reserved += step;
    return true;
}

static void *
budget_alloc(void *data, size_t size)
{
    budget *b = data;
    size_t need = size == 0 ? 16 : (size + 15) & ~(size_t)15;
    if (size > b->b_limit || need > b->b_limit - b->b_used) {
        b->b_fail = TR_UNPACK_OVER_BUDGET;
        return NULL;
    }
    if (b->b_used + need > b->b_reserved && !reserve(b, b->b_used + need - b->b_reserved)) {
        return NULL;
    }
    b->b_used += need;
    return tra_msg_take(b->b_msg, size);
}

static void
budget_free(void *data, void *p)
{
    // A no-op: the arena is freed with the message.
    (void)data;
    (void)p;
}

static tr_err
fail(tr_unpack_info *info, tr_unpack_reason why)
{
    info->reason = why;
    switch (why) {
    case TR_UNPACK_UNKNOWN:
        atomic_fetch_add_explicit(&g_unknown, 1, memory_order_relaxed);
        return TR_ENOTFOUND;
    case TR_UNPACK_TOO_DEEP:
        atomic_fetch_add_explicit(&g_too_deep, 1, memory_order_relaxed);
        return TR_ETOOBIG;
    case TR_UNPACK_OVER_BUDGET:
        atomic_fetch_add_explicit(&g_over_budget, 1, memory_order_relaxed);
        return TR_ETOOBIG;
    case TR_UNPACK_OVER_CAP:
        atomic_fetch_add_explicit(&g_over_cap, 1, memory_order_relaxed);
        return TR_ENOMEM;
    default:
        info->reason = TR_UNPACK_MALFORMED;
        atomic_fetch_add_explicit(&g_malformed, 1, memory_order_relaxed);
        return TR_EINVAL;
    }
}

tr_err
tr_msg_unpack(const uint8_t *data, size_t len, const tr_unpack_limits *lim, tr_msg **out,
              tr_unpack_info *info)
{
    tr_unpack_info local;
    if (info == NULL) {
        info = &local;
    }
    memset(info, 0, sizeof *info);
    *out = NULL;
    env e;
    if ((data == NULL && len != 0) || !env_decode(data, len, &e)) {
        return fail(info, TR_UNPACK_MALFORMED);
    }
    info->kind = e.e_kind;
    info->correlation = e.e_corr;
    info->from = e.e_from;
    info->reply_to = e.e_reply;
    size_t tn = e.e_type_len < TR_TYPE_NAME_MAX ? e.e_type_len : TR_TYPE_NAME_MAX - 1;
    if (tn != 0) {
        memcpy(info->type, e.e_type, tn);
    }
    info->type[tn] = '\0';
    if (e.e_type_len == 0 || e.e_kind > TRA_K_NODE) {
        return fail(info, TR_UNPACK_MALFORMED);
    }
    // A name that is cut short or holds a NUL is no registered type's.
    const ProtobufCMessageDescriptor *d = NULL;
    if (tn == e.e_type_len && memchr(e.e_type, '\0', tn) == NULL) {
        d = tr_type_find(info->type);
    }
    if (d == NULL) {
        return fail(info, TR_UNPACK_UNKNOWN);
    }
    uint32_t max = lim != NULL && lim->max_depth != 0 && lim->max_depth < TR_UNPACK_MAX_DEPTH
                       ? lim->max_depth
                       : TR_UNPACK_MAX_DEPTH;
    tr_unpack_reason why = depth_scan(d, e.e_body, e.e_body_len, max);
    if (why != TR_UNPACK_OK) {
        return fail(info, why);
    }
    // The budget: factor * len + base, saturating.
    size_t factor = lim != NULL && lim->budget_factor != 0 ? lim->budget_factor : 64;
    size_t base = lim != NULL && lim->budget_base != 0 ? lim->budget_base : 4096;
    budget b = {.b_limit = SIZE_MAX};
    if (!__builtin_mul_overflow(factor, e.e_body_len, &b.b_limit) && b.b_limit <= SIZE_MAX - base) {
        b.b_limit += base;
    } else {
        b.b_limit = SIZE_MAX;
    }
    // One block for the struct and, most often, all it points to: the
    // body's length plus the struct (strings and bytes take about their
    // wire length); more spills into chunks. It counts against the cap.
    size_t block = d->sizeof_message + e.e_body_len;
    block = block < b.b_limit ? block : b.b_limit;
    block = block + 128 < block ? block : block + 128;
    if (!reserve(&b, block)) {
        return fail(info, TR_UNPACK_OVER_CAP);
    }
    b.b_msg = tra_msg_new_empty(d, sizeof(tra_msg) + block);
    ProtobufCAllocator alloc = {budget_alloc, budget_free, &b};
    void *body = protobuf_c_message_unpack(d, &alloc, e.e_body_len, e.e_body);
    atomic_fetch_sub_explicit(&g_in_flight, b.b_reserved, memory_order_relaxed);
    if (body == NULL) {
        tr_msg_free(b.b_msg);
        return fail(info, b.b_fail != TR_UNPACK_OK ? b.b_fail : TR_UNPACK_MALFORMED);
    }
    tra_msg *am = tra_msg_of(b.b_msg);
    am->am_body = body;
    am->am_from = e.e_from;
    am->am_reply = e.e_reply;
    am->am_corr = e.e_corr;
    am->am_prio = e.e_prio;
    am->am_kind = e.e_kind;
    atomic_fetch_add_explicit(&g_unpacked, 1, memory_order_relaxed);
    *out = b.b_msg;
    return TR_OK;
}
