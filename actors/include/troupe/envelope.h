// troupe/envelope.h: actor messages on the wire: the envelope
// (troupe.v1.Envelope in proto/troupe/v1/envelope.proto), the registry of
// body types it names, and a decoder that is safe on bytes from a peer.
//
// Sending to another process packs the message into an envelope: the body
// packed, its type by full name, and the header's sender, reply-to,
// correlation id, priority and kind. The receiver looks the name up in its
// registry and unpacks the body into one actor message (troupe/actor.h),
// its arena holding everything, so tr_msg_free frees it whole.
//
//     size_t n = tr_msg_packed_size(m);
//     nng_msg *nm;
//     nng_msg_alloc(&nm, n);
//     tr_msg_pack_to(m, nng_msg_body(nm));
//     ...
//     tr_unpack_info info;
//     tr_msg *in;
//     tr_err rv = tr_msg_unpack(nng_msg_body(nm), nng_msg_len(nm), NULL, &in, &info);
//     if (rv == TR_ENOTFOUND) { /* answer info.correlation with an error */ }
//
// Bytes from a peer are untrusted. tr_msg_unpack refuses nesting deeper
// than a limit before protobuf-c sees the body (protobuf-c recurses once
// per level with no limit of its own), and unpacks through an allocator
// with a budget per message (proportional to its length) and a cap on the
// bytes all running unpacks hold together, since protobuf-c's output can
// be twenty times its input. What it cannot see: a message cut at a field
// boundary is a valid shorter message (protobuf has no end marker), so the
// transport must deliver exact lengths, as nng messages do, and a batch
// states its count.
#ifndef TROUPE_ENVELOPE_H
#define TROUPE_ENVELOPE_H

#include <troupe/actor.h>
#include <troupe/v1/envelope.pb-c.h>

TR_BEGIN_DECLS

// ---------------------------------------------------------------------------
// The type registry: full protobuf name to descriptor, one per process.
// The types of troupe/v1/actor.proto and troupe/v1/executor.proto are
// registered from the start.

// tr_type_register makes the body type d known by its full name
// (d->name): TR_OK, also when d was registered already; TR_EEXIST when
// another descriptor holds the name; TR_EINVAL when d is NULL or not a
// message descriptor. d must outlive every use (generated descriptors are
// static). Any thread; registering costs a copy of the registry (do it at
// start-up), looking up costs no lock.
TR_API tr_err tr_type_register(const ProtobufCMessageDescriptor *d);

// tr_type_find returns the descriptor registered under the full name
// name, or NULL. Any thread; lock-free.
TR_API const ProtobufCMessageDescriptor *tr_type_find(const char *name);

// ---------------------------------------------------------------------------
// Packing.

// tr_msg_packed_size returns the bytes of m's envelope, body included (0
// when m is not an actor message). The message's owner, or anyone while it
// is not being changed.
TR_API size_t tr_msg_packed_size(const tr_msg *m);

// tr_msg_pack_to writes m's envelope into buf, which holds at least
// tr_msg_packed_size(m) bytes, and returns how many it wrote (the same
// number; 0 when m is not an actor message). m is only read. The bytes
// are what protobuf-c packs for the same troupe.v1.Envelope.
TR_API size_t tr_msg_pack_to(const tr_msg *m, uint8_t *buf);

// ---------------------------------------------------------------------------
// Unpacking.

// The nesting a body may have at most: the body is level 1, each message
// field inside it one more.
#define TR_UNPACK_MAX_DEPTH 64

// The global cap's default (tr_unpack_set_cap).
#define TR_UNPACK_DEFAULT_CAP ((size_t)256 << 20)

// Limits of one tr_msg_unpack (NULL: all defaults; a field 0: its default).
typedef struct tr_unpack_limits {
    uint32_t max_depth;     // levels of nesting at most (0 or above TR_UNPACK_MAX_DEPTH: that)
    uint32_t budget_factor; // the memory budget: this many bytes per byte of body (0: 64)
    size_t budget_base;     // plus this many (0: 4096)
} tr_unpack_limits;

// Why an unpack failed (tr_unpack_info.reason).
typedef enum tr_unpack_reason {
    TR_UNPACK_OK = 0,
    TR_UNPACK_MALFORMED = 1,   // TR_EINVAL: not an envelope, or a body not of its type
    TR_UNPACK_UNKNOWN = 2,     // TR_ENOTFOUND: no type registered under the name
    TR_UNPACK_TOO_DEEP = 3,    // TR_ETOOBIG: nested deeper than the limit
    TR_UNPACK_OVER_BUDGET = 4, // TR_ETOOBIG: the body needs more than its budget
    TR_UNPACK_OVER_CAP = 5,    // TR_ENOMEM: running unpacks hold the global cap
} tr_unpack_reason;

// Room for a type name in tr_unpack_info, NUL included (longer names are
// truncated there, and are never registered types).
#define TR_TYPE_NAME_MAX 256

// What a failed unpack could read of its envelope, so that the receiver
// can answer a request it cannot deliver (an unknown type above all).
// The envelope's fields are zero when the envelope itself did not decode.
typedef struct tr_unpack_info {
    tr_unpack_reason reason;
    uint32_t kind;               // the envelope's kind
    uint64_t correlation;        // the envelope's correlation id
    tr_actor_addr from;          // the envelope's sender
    tr_actor_addr reply_to;      // where the envelope says a reply goes
    char type[TR_TYPE_NAME_MAX]; // the body's type name ("" when none)
} tr_unpack_info;

// tr_msg_unpack decodes the envelope of len bytes at data into a new actor
// message: its body of the type the envelope names, in the message's arena,
// and its sender, reply-to, correlation id, priority and kind from the
// envelope. TR_OK and *out (the caller owns it), or an error with *out
// NULL, nothing allocated, and *info saying why (info may be NULL; it is
// filled in on TR_OK too, with reason TR_UNPACK_OK):
//   TR_EINVAL     malformed: not an envelope, no type name, an unknown kind,
//                 or a body that is not a message of its type;
//   TR_ENOTFOUND  the type is not registered (info: its name, the
//                 correlation id and the reply-to, for an error answer);
//   TR_ETOOBIG    nested deeper than lim->max_depth, or the body needs more
//                 memory than its budget (budget_factor * body length +
//                 budget_base);
//   TR_ENOMEM     all running unpacks together would hold more than the
//                 global cap (tr_unpack_set_cap): try again later.
// Depth is checked by an iterative scan of the bytes with the type's
// descriptors before protobuf-c unpacks anything. data is only read (the
// message keeps no pointer into it). Any thread.
TR_API tr_err tr_msg_unpack(const uint8_t *data, size_t len, const tr_unpack_limits *lim,
                            tr_msg **out, tr_unpack_info *info);

// tr_unpack_set_cap sets the bytes that all running unpacks may hold
// together (0: TR_UNPACK_DEFAULT_CAP) and returns the previous cap. Unpacks
// already past the check keep what they hold. Any thread.
TR_API size_t tr_unpack_set_cap(size_t bytes);

// Counters of tr_msg_unpack since the process started (each a snapshot;
// they are not read together atomically).
typedef struct tr_unpack_stats {
    uint64_t unpacked;    // messages unpacked
    uint64_t unknown;     // TR_ENOTFOUND
    uint64_t malformed;   // TR_EINVAL
    uint64_t too_deep;    // TR_ETOOBIG, nesting
    uint64_t over_budget; // TR_ETOOBIG, a message's budget
    uint64_t over_cap;    // TR_ENOMEM, the global cap
    uint64_t in_flight;   // bytes that running unpacks hold now
} tr_unpack_stats;

// tr_unpack_stats_get reads the counters. Any thread.
TR_API void tr_unpack_stats_get(tr_unpack_stats *out);

TR_END_DECLS

#endif
