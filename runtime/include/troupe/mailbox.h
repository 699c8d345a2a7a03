// troupe/mailbox.h: messages and mailboxes, the seam between the runtime and
// actors (and the executor's own inbox).
//
// A message is any struct whose first member is a tr_msg header:
//
//     typedef struct ping { tr_msg hdr; uint64_t seq; } ping;
//     ping *p = (ping *)tr_msg_alloc(sizeof(ping));
//     p->hdr.m_type = &ping_type;
//     p->seq = 1;
//     tr_mailbox_push(&actor->mbox, &p->hdr); // ownership moves with the message
//
// Messages come from per-size-class slabs with a per-thread cache, so a
// steady stream of messages costs no malloc. A mailbox is an intrusive
// multi-producer, single-consumer queue of messages with two lanes: the
// system lane (down, exit, stop: never refused, delivered first) and the user
// lane (optionally bounded, with an awaitable send that waits for room). A
// push to an empty mailbox wakes its consumer exactly once.
#ifndef TROUPE_MAILBOX_H
#define TROUPE_MAILBOX_H

#include <stdatomic.h>
#include <stddef.h>

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

// ---------------------------------------------------------------------------
// Messages.

// A mailbox lane's link (private): first in every message, and all a
// lane's placeholder is.
typedef struct tr_msg_link {
    _Atomic(struct tr_msg_link *) l_next; // private
} tr_msg_link;

// The header every message starts with. m_type and m_flags are the sender's;
// m_link and m_class are private: the mailbox links messages through
// m_link, and m_class says where the memory came from. Touch neither while
// the message is queued, and never change m_class, except to and from a
// class of one's own (tr_msg_class_register).
typedef struct tr_msg {
    tr_msg_link m_link; // private: the mailbox link
    const void *m_type; // type tag, the sender's to set (actors: the protobuf-c descriptor)
    uint32_t m_class;   // private: size class (see tr_msg_alloc); TR_MSG_CLASS_NONE: caller-owned
    uint32_t m_flags;   // free for the user
} tr_msg;

_Static_assert(sizeof(tr_msg) == 2 * sizeof(void *) + 8, "tr_msg is two pointers and two words");

// The class of a message whose memory its owner manages (static, embedded,
// or from an allocator of its own). Zero, so that a zeroed header is one.
#define TR_MSG_CLASS_NONE 0u

// Messages of at most this many bytes (header included) come from slabs;
// larger ones are one malloc each.
#define TR_MSG_SMALL_MAX 4096

// tr_msg_alloc returns a message of size bytes, header included (a size
// below sizeof(tr_msg) is rounded up). The header is zeroed but for m_class;
// the bytes after it are not initialised. The memory is aligned as malloc's
// (alignof(max_align_t)). Up to TR_MSG_SMALL_MAX bytes the message comes from
// the slab of the smallest of the classes 32, 64, ..., 4096 bytes that holds
// it, through the calling thread's cache (no lock, no malloc in the steady
// state); larger ones are a plain malloc, whose size is kept in a hidden word
// in front of the header. Never returns NULL: out of memory aborts the
// process (as every runtime allocation does). Any thread. The caller owns the
// message until it hands it on (a push takes ownership) or frees it.
TR_API tr_msg *tr_msg_alloc(size_t size);

// tr_msg_free frees a message from tr_msg_alloc. Any thread, not necessarily
// the one that allocated it. A message of class TR_MSG_CLASS_NONE is left
// alone (its memory is its owner's), and one of a registered class goes to
// its class's free function (tr_msg_class_register), so freeing every
// message taken from a mailbox is always right. NULL is ignored, as by
// free(3). Slab memory is kept for reuse (tr_trim returns
// what is no longer used to the system).
TR_API void tr_msg_free(tr_msg *m);

// Classes that layers above the runtime own (tr_msg_class_register):
// TR_MSG_CLASS_USER .. TR_MSG_CLASS_USER + TR_MSG_CLASS_USER_MAX - 1, above
// every class of tr_msg_alloc's.
#define TR_MSG_CLASS_USER 0x100u
#define TR_MSG_CLASS_USER_MAX 16u

// tr_msg_class_register gives a layer above the runtime a message class of
// its own, and returns it (0 when all TR_MSG_CLASS_USER_MAX are taken, or
// free_fn is NULL). tr_msg_free of a message of that class calls
// free_fn(m) instead of freeing it: the owner sets m_class of a message
// from tr_msg_alloc to its class when the message holds more than its block
// (the actor layer does when a message's arena overflows into chunks of its
// own), and free_fn releases the rest, puts the block's class back and
// calls tr_msg_free again. free_fn runs on the thread that frees the
// message, so it must be callable from any thread. Each call takes a new
// class (register once per process, as a constructor does); there is no
// unregistering. Any thread.
TR_API uint32_t tr_msg_class_register(void (*free_fn)(tr_msg *m));

// tr_msg_capacity returns the bytes of m's memory, header included, for a
// message from tr_msg_alloc (at least the size asked for: a slab object's
// whole class), and 0 for a caller-owned message (TR_MSG_CLASS_NONE) or one
// of a class a layer above registered (tr_msg_class_register), whose
// memory the runtime does not know. A layer that reads fields past the
// header of a message it did not make checks this first. Any thread.
// (tr_msg_capacity_fast is the inline part of it: classes 1 to
// TR_MSG_NSLAB are the slabs, class c of 32 << (c - 1) bytes.)
TR_API size_t tr_msg_capacity(const tr_msg *m);

#define TR_MSG_NSLAB 8u

static inline size_t
tr_msg_capacity_fast(const tr_msg *m)
{
    uint32_t c = m->m_class;
    return c - 1u < TR_MSG_NSLAB ? (size_t)32 << (c - 1u) : tr_msg_capacity(m);
}

// tr_msg_init prepares the header of a caller-owned message (class
// TR_MSG_CLASS_NONE; a zeroed header is the same with a NULL type).
static inline void
tr_msg_init(tr_msg *m, const void *type)
{
    atomic_init(&m->m_link.l_next, NULL);
    m->m_type = type;
    m->m_class = TR_MSG_CLASS_NONE;
    m->m_flags = 0;
}

// ---------------------------------------------------------------------------
// Mailboxes.
//
// Roles. Any number of producers (any thread: tasks, plain threads, callbacks
// of other libraries) push; one consumer (one thread at a time: the owning
// task, whose polls the runtime orders) pops, takes, marks empty and
// finalises. Producers are lock-free: a push is one atomic exchange on its
// lane's head (plus a count of the user lane), as in the Pony runtime.
//
// Order. Each lane is FIFO: the messages of one producer arrive in the order
// it pushed them. A system message is delivered before every user message
// that is queued when the consumer takes: system messages jump the user lane.
//
// Sleeping. The consumer that finds nothing calls tr_mailbox_markempty with
// its waker. When that returns true the consumer may sleep: exactly one later
// push, on either lane, calls tr_wake on that waker. When it returns false a
// message is there, or is on its way: take again.
//
// The window of a push. A push first swaps itself into its lane's head, then
// links the previous message to itself. Between the two (two instructions,
// unless the producer is preempted there) its message, and any pushed behind
// it, are invisible: pop and take return nothing for that lane rather than
// wait for the link, and markempty returns false. The message shows on a
// later pop. A consumer that gets neither a message nor a mark just tries
// again later (a task yields with tr_cx_yield): it must not sleep, since the
// push found no mark and will wake nobody. This is the only case in which the
// consumer polls without being woken, and it lasts as long as that producer's
// window.
//
// Memory ordering. Everything a producer wrote into a message before pushing
// it is visible to the consumer that pops it (the link is a release store
// that the pop reads with acquire). Everything the consumer did before a
// markempty that returned true happens before the waker runs.
//
// Bound. tr_mailbox_init's bound limits the user lane for tr_mailbox_try_push
// and tr_mailbox_send; tr_mailbox_push (and the system lane) ignore it, so the
// lane may hold more. Senders that wait for room are served in the order they
// started waiting: the consumer's take grants each place it frees to the
// sender that has waited longest, and a newcomer does not overtake them.

// A send waiting for room; embed it in the sending task's state, zeroed (as
// tr_task_new's state is). Private fields, read and written by mailbox.c
// under the mailbox's lock. Back to its zeroed state whenever
// tr_mailbox_send returns TR_READY, so it may be reused at once.
typedef struct tr_mailbox_op {
    struct tr_mailbox_op *o_next; // private: the mailbox's line of waiting senders
    struct tr_mailbox_op *o_prev; // private
    tr_waker o_waker;             // private: the waiting task
    _Atomic uint32_t o_state;     // private: idle, waiting, granted
    uint32_t o_pad;               // private
} tr_mailbox_op;

_Static_assert(sizeof(tr_mailbox_op) == 4 * sizeof(void *) + 8, "tr_mailbox_op: four words");

// The mailbox itself; embed it (an actor does) at a 16-byte boundary at
// least (tr_mailbox_init panics on less), best at a 64-byte one
// (aligned_alloc(64, ...), a member declared _Alignas(64)): then the words
// producers write and the consumer's are on two different cache lines, the
// first holding the lanes' heads, the count, the line of waiting senders
// and the consumer's waker (read by the one push that wakes it), the second
// the consumer's ends of the lanes and their placeholders in its first
// half. TR_MAILBOX_SIZE (96) bytes in all, so that an embedder can put 32
// bytes of its own on that second line. 32 bytes into a line (an actor in
// a 224-byte task slot: every other one) the words producers write on
// every push (the heads and the count, the first 24 bytes) still share no
// line with the consumer's ends. Every field is private.
typedef struct tr_mailbox {
    // The producers' line.
    _Atomic(uintptr_t) mb_head;     // private: user lane's last message; bit 0: empty mark
    _Atomic(uintptr_t) mb_sys_head; // private: system lane's last message
    _Atomic uint32_t mb_len;        // private: user lane length (+ granted places)
    uint32_t mb_bound;              // private: user lane bound, 0: none (immutable)
    _Atomic uint32_t mb_lock;       // private: a mutex for the line of waiting senders
    _Atomic uint32_t mb_waiters;    // private: senders in line
    _Atomic uint32_t mb_granted;    // private: places granted, not yet filled
    uint32_t mb_pad;                // private
    struct tr_mailbox_op *mb_wait;  // private: the longest waiting (a ring), under mb_lock
    tr_waker mb_waker;              // private: the consumer's, stored by markempty
    // The consumer's line (its first half).
    tr_msg_link *mb_tail;     // private: the user lane's oldest link (consumer)
    tr_msg_link *mb_sys_tail; // private: the system lane's oldest link (consumer)
    tr_msg_link mb_stub;      // private: the user lane's placeholder
    tr_msg_link mb_sys_stub;  // private: the system lane's placeholder
} tr_mailbox;

#define TR_MAILBOX_SIZE 96
_Static_assert(sizeof(tr_mailbox) == TR_MAILBOX_SIZE, "tr_mailbox: a cache line and a half");
_Static_assert(offsetof(tr_mailbox, mb_tail) == 64, "the consumer's words start a cache line");

// tr_mailbox_init prepares an empty, unmarked mailbox whose user lane holds
// at most bound messages for tr_mailbox_try_push and tr_mailbox_send (0: no
// bound). The consumer is taken to be running: it calls tr_mailbox_markempty
// before it first sleeps. Before any producer can reach mb.
TR_API void tr_mailbox_init(tr_mailbox *mb, uint32_t bound);

// tr_mailbox_fini calls drop(m, arg) for every message still queued, system
// lane first, each lane in order (drop NULL: tr_msg_free), and leaves mb
// unusable until the next tr_mailbox_init. The consumer only, once no
// producer can push any more (every push has returned) and no send is
// waiting (a sender's drop abandons its op first; a waiting or granted send
// is a bug: it panics).
TR_API void tr_mailbox_fini(tr_mailbox *mb, void (*drop)(tr_msg *m, void *arg), void *arg);

// tr_mailbox_push queues m on the user lane, whatever the bound (actors send
// Down and Exit this way, which must keep their order with user messages).
// Takes ownership of m. Any thread; lock-free, never blocks. Returns true
// when this push found the mailbox marked empty: it has then woken the
// consumer (tr_wake on the waker markempty stored, after linking m), and it
// is the only push that does so for that mark.
TR_API bool tr_mailbox_push(tr_mailbox *mb, tr_msg *m);

// tr_mailbox_try_push queues m on the user lane if the bound allows it:
// TR_OK takes ownership of m (and *woke, when woke is not NULL, says what
// tr_mailbox_push's result says); TR_EAGAIN, the one "would block" code,
// when the lane holds bound messages or senders are waiting for room: the
// caller keeps m. Any thread; lock-free, never blocks.
TR_API tr_err tr_mailbox_try_push(tr_mailbox *mb, tr_msg *m, bool *woke);

// tr_mailbox_push_system queues m on the system lane: never refused, not
// counted against the bound, delivered before the user messages queued when
// the consumer next takes. Takes ownership of m. Any thread; lock-free, never
// blocks. Returns as tr_mailbox_push (either lane's push may be the one that
// wakes).
TR_API bool tr_mailbox_push_system(tr_mailbox *mb, tr_msg *m);

// tr_mailbox_send is the awaitable form of tr_mailbox_try_push: it waits for
// room. TR_READY with *err TR_OK: m is queued and the mailbox owns it (op is
// idle again). TR_PENDING: the lane is full, and op holds the task's place in
// the line of waiting senders; the caller still owns m and passes it again on
// the next poll (keep op where it is until TR_READY). A leaf operation: it
// charges the poll budget first. From a task only.
//
// Cancellation: a task cancelled while a send is pending calls
// tr_mailbox_send_abandon(mb, op) from its drop function (and frees m, which
// it still owns). Nothing was sent.
TR_API tr_poll tr_mailbox_send(tr_mailbox *mb, tr_cx *cx, tr_mailbox_op *op, tr_msg *m,
                               tr_err *err);

// tr_mailbox_send_abandon withdraws a pending send: op leaves the line, and a
// place already granted to it (its task was woken but has not yet pushed)
// passes to the next sender in line, so no room is lost. A no-op for an idle
// op, and when mb or op is NULL, so a drop function may call it
// unconditionally. Any thread.
TR_API void tr_mailbox_send_abandon(tr_mailbox *mb, tr_mailbox_op *op);

// tr_mailbox_pop returns the next message, system lane first, or NULL (none,
// or only messages still in a push's window). The caller owns the message.
// The consumer only. Does not charge the poll budget: the consumer bounds its
// turn itself (an actor takes at most a batch per turn).
TR_API tr_msg *tr_mailbox_pop(tr_mailbox *mb);

// tr_mailbox_take moves up to max messages into out (system lane first, each
// lane in order) and returns how many; the caller owns them. Places freed in
// the user lane go to waiting senders, one each, longest waiting first. The
// consumer only; as tr_mailbox_pop otherwise.
TR_API size_t tr_mailbox_take(tr_mailbox *mb, tr_msg **out, size_t max);

// tr_mailbox_markempty marks the mailbox empty if both lanes are, storing
// wk first: true when marked (the consumer may sleep; exactly one later
// push, on either lane, clears the mark and calls tr_wake(wk)), false when a
// message is there or in a push's window (take again, or try later). The
// waker is stored only when the mailbox is being marked (the push that took
// the previous mark may still be reading the old one until its message is
// linked). A mailbox already marked stays so (true); with a different waker
// it is marked again for the new one, or false when a push took the old mark
// meanwhile (that push wakes the old waker; a message is there). Everything
// the consumer did before a true return happens before wk runs. The consumer
// only.
TR_API bool tr_mailbox_markempty(tr_mailbox *mb, tr_waker wk);

// tr_mailbox_set_waker records wk as the consumer's waker without marking
// the mailbox, for tr_mailbox_wake_consumer: the consumer only, before its
// first tr_mailbox_markempty (no mark was ever set, so no push reads the
// waker meanwhile; panics otherwise). An actor records its task's waker at
// its first poll.
TR_API void tr_mailbox_set_waker(tr_mailbox *mb, tr_waker wk);

// tr_mailbox_wake_consumer calls tr_wake with the consumer's waker (the
// last one tr_mailbox_set_waker or tr_mailbox_markempty recorded; nothing
// before either). Any thread, ordered after that recording by the caller
// (an actor's last holder: through the entry word the actor closed).
TR_API void tr_mailbox_wake_consumer(tr_mailbox *mb);

// tr_mailbox_len returns the length of the user lane: messages queued or
// being pushed, plus places granted to waiting senders that have not pushed
// yet. A snapshot; any thread.
TR_API uint32_t tr_mailbox_len(const tr_mailbox *mb);

TR_END_DECLS

#endif
