// actor_int.h: what the files of actors/ share and nothing outside uses:
// the layout of an actor message, the address table, and the runtime's
// per-runtime actor state. May include public headers only.
#ifndef TR_ACTOR_INT_H
#define TR_ACTOR_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <troupe/actor.h>

#define TRA_HIDDEN __attribute__((visibility("hidden")))
#define TRA_LIKELY(x) __builtin_expect(!!(x), 1)
#define TRA_UNLIKELY(x) __builtin_expect(!!(x), 0)

// tra_panic reports a bug in the actor layer or its use and aborts.
__attribute__((noreturn, format(printf, 1, 2))) void tra_panic(const char *fmt, ...) TRA_HIDDEN;

// tra_zalloc returns n zeroed bytes from calloc; out of memory panics.
void *tra_zalloc(size_t n) TRA_HIDDEN;

// tra_strdup copies s with tra_zalloc (NULL: NULL).
char *tra_strdup(const char *s) TRA_HIDDEN;

// ---------------------------------------------------------------------------
// Messages (msg.c).
//
// One block from tr_msg_alloc: this header, then the body (the protobuf-c
// struct), then the inline arena. Arena allocations past the block come
// from overflow chunks (malloc), listed from am_chunks; a message that has
// any gets the actor layer's own message class, whose free function frees
// the chunks and then the block (am_class keeps the block's class).
typedef struct tra_msg {
    tr_msg am_hdr;          // m_type: the body's descriptor
    tr_actor_addr am_from;  // the sender (none: 0)
    tr_actor_addr am_reply; // where a reply goes
    uint64_t am_corr;       // correlation id (0: none)
    uint32_t am_prio;       // priority (the envelope's)
    uint32_t am_magic;      // TRA_MSG_MAGIC: an actor message
    void *am_body;          // the ProtobufCMessage
    char *am_next;          // the arena's next free byte (the block's, then the newest chunk's)
    char *am_end;           // the end of that arena (the block's end, then the chunk's)
    void *am_chunks;        // overflow chunks (a list), NULL: none
    uint32_t am_class;      // the block's class while m_class is the chained class
    uint32_t am_kind;       // TRA_K_*: what the actor layer does with it
} tra_msg;

#define TRA_MSG_MAGIC 0x61637472u // "actr"

// Kinds of messages the actor layer treats itself (am_kind).
enum {
    TRA_K_USER = 0,    // a user message: receive gets it
    TRA_K_REPLY = 1,   // a reply (matched against requests)
    TRA_K_STOP = 2,    // a Stop on the system lane
    TRA_K_EXIT = 3,    // an exit signal from a link (Exit body)
    TRA_K_DOWN = 4,    // a Down (matched against requests' monitors first)
    TRA_K_TIMEOUT = 5, // a request's timer fired (CallFailed body)
};

static inline tra_msg *
tra_msg_of(tr_msg *m)
{
    return (tra_msg *)(void *)m;
}

// tra_msg_class_ours reports whether cls is one of the message classes the
// actor layer registered (msg.c, node.c).
bool tra_msg_class_ours(uint32_t cls) TRA_HIDDEN;

// tra_msg_class_add records a class the actor layer registered.
void tra_msg_class_add(uint32_t cls) TRA_HIDDEN;

static inline bool
tra_msg_valid(const tr_msg *m)
{
    // The magic is read only where it can be: in a block big enough to be
    // an actor message, or in one of the actor layer's own classes.
    return m != NULL &&
           (tr_msg_capacity_fast(m) >= sizeof(tra_msg) || tra_msg_class_ours(m->m_class)) &&
           ((const tra_msg *)(const void *)m)->am_magic == TRA_MSG_MAGIC;
}

// tra_msg_new_sized is tr_msg_new for a message whose body is of type d
// and whose whole block (header, body, arena) is at least size bytes.
tr_msg *tra_msg_new_sized(const ProtobufCMessageDescriptor *d, size_t size, void **body) TRA_HIDDEN;

// tra_msg_new_empty is a message of type d with no body yet (am_body NULL)
// whose block is at least size bytes, all of it arena past the header: an
// unpack allocates the body from the arena and sets am_body.
tr_msg *tra_msg_new_empty(const ProtobufCMessageDescriptor *d, size_t size) TRA_HIDDEN;

// tra_msg_take returns size bytes of m's arena, 16-aligned, not zeroed.
void *tra_msg_take(tr_msg *m, size_t size) TRA_HIDDEN;

#endif

// ---------------------------------------------------------------------------
// The address table (table.c).
//
// Process-wide, so an actor part of an address names one actor (or one
// call's reply endpoint) for good in this process. An id is generation
// << 32 | index; an entry's word is generation << 32 | CLOSED | count of
// holders. tra_table_acquire is one CAS that checks the generation, checks
// the entry is open and counts the holder; the thing the entry points at
// stays valid while anyone holds it. Closing stops new holders; whoever
// brings a closed entry's count to zero (the closer, or the last release)
// finalises the thing and then frees the entry, which bumps the generation.
typedef struct tra_entry {
    _Atomic uint64_t e_word; // generation | closed | holders
    _Atomic(void *) e_ptr;   // the actor or endpoint; bit 0 set: an endpoint
} tra_entry;

#define TRA_E_CLOSED ((uint64_t)1 << 31)
#define TRA_E_COUNT ((uint64_t)0x7fffffff)

// tra_table_alloc returns the id of a fresh open entry pointing at ptr.
uint64_t tra_table_alloc(void *ptr) TRA_HIDDEN;

// tra_table_acquire holds the entry of id if it is open: the entry, with
// *ptr, or NULL (stale, closed or never allocated).
tra_entry *tra_table_acquire(uint64_t id, void **ptr) TRA_HIDDEN;

// tra_table_release drops a hold: true when this was the last holder of a
// closed entry (the caller must now finalise what it points at).
bool tra_table_release(tra_entry *e) TRA_HIDDEN;

// tra_table_close closes id's entry: true when nobody holds it (the caller
// finalises now), false when the last release will report it.
bool tra_table_close(uint64_t id) TRA_HIDDEN;

// tra_table_holders returns how many hold id's entry (a snapshot).
uint32_t tra_table_holders(uint64_t id) TRA_HIDDEN;

// tra_table_free frees a closed entry nobody holds; its id becomes stale.
void tra_table_free(uint64_t id) TRA_HIDDEN;

// ---------------------------------------------------------------------------
// Reaching an actor's state from another thread (actor.c).

// tra_with_state runs fn(state, arg) on the user state of the actor at
// addr while holding it, if it is an actor of kind spec: TR_OK, or
// TR_ENOTFOUND. fn runs on the calling thread, concurrently with the
// actor's own callbacks: the state must guard what fn reads.
tr_err tra_with_state(tr_actor_addr addr, const tr_actor_spec *spec,
                      void (*fn)(void *state, void *arg), void *arg) TRA_HIDDEN;

// ---------------------------------------------------------------------------
// Delivery, for the node (actor.c).

enum { TRA_LANE_TRY, TRA_LANE_FORCE, TRA_LANE_SYSTEM };

// More kinds of messages (am_kind) that cross or come from the wire.
enum {
    TRA_K_NODE = 6, // node control (Hello, Heartbeat, MonitorReq...): for actor 0
    TRA_K_WIRE = 7, // a received nng message, body the nng_msg (node.c's own)
};

// tra_deliver hands m to the actor (or endpoint) at to, local or remote:
// TR_OK takes m.
tr_err tra_deliver(tr_actor_addr to, tr_msg *m, int lane) TRA_HIDDEN;

// tra_monitor_ref sets a monitor named ref (as tr_actor_monitor).
tr_err tra_monitor_ref(tr_actor_addr watcher, tr_actor_addr target, uint64_t ref) TRA_HIDDEN;

// tra_new_address puts an Address into m's arena.
Troupe__V1__Address *tra_new_address(tr_msg *m, tr_actor_addr a) TRA_HIDDEN;

// tra_new_down builds the Down that a monitor of `from` gets.
tr_msg *tra_new_down(tr_actor_addr from, uint64_t ref, tr_err reason, const char *text) TRA_HIDDEN;

// The node's side (node.c): remote delivery, monitors of remote actors.
// TR_ENOTFOUND when no node runs or the peer is unknown.
tr_err tra_node_deliver(tr_actor_addr to, tr_msg *m, int lane) TRA_HIDDEN;
// tra_node_watch records that watcher waits on the remote target (its
// peer's death gives watcher a Down named ref); with wire, it also sets a
// monitor on the peer (MonitorReq). tra_node_unwatch undoes it.
tr_err tra_node_watch(tr_actor_addr watcher, tr_actor_addr target, uint64_t ref,
                      bool wire) TRA_HIDDEN;
void tra_node_unwatch(tr_actor_addr target, uint64_t ref, bool wire) TRA_HIDDEN;

// tra_node_link links the local actor me with the remote actor other
// (LinkReq; the peer's death gives me an Exit with TR_ENOTCONN);
// tra_node_unlink undoes it. TR_ENOTFOUND: no such peer.
tr_err tra_node_link(tr_actor_addr me, tr_actor_addr other) TRA_HIDDEN;
void tra_node_unlink(tr_actor_addr me, tr_actor_addr other) TRA_HIDDEN;

// tra_remote_link links (or unlinks) the local actor with a remote one, on
// the local side only (the node calls it for a LinkReq): TR_OK, or
// TR_ENOTFOUND when the local actor is gone (the remote one then gets its
// Exit at once).
tr_err tra_remote_link(tr_actor_addr local, tr_actor_addr remote, bool link) TRA_HIDDEN;

// tra_new_exit builds the Exit that a linked actor of `from` gets.
tr_msg *tra_new_exit(tr_actor_addr from, tr_err reason, const char *text) TRA_HIDDEN;
