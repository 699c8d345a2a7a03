// troupe/actor.h: actors on top of libtroupe: a behaviour, a mailbox and an
// address; messages that are protobuf-c structs in one arena; monitors,
// links and supervisors in the OTP model.
//
// An actor is a task of its runtime with a mailbox (troupe/mailbox.h). Its
// behaviour handles one message at a time, at most TR_ACTOR_BATCH per turn,
// so a busy actor cannot hog a worker; an actor with nothing to do sleeps
// and costs no thread. Everything here uses only libtroupe's public
// headers; link libtroupe-actors (CMake: troupe_actors).
//
//     static void counter_receive(tr_actor *self, void *state, tr_msg *m) {
//         struct counter *c = state;
//         if (tr_msg_is(m, &demo__add__descriptor)) {
//             c->total += ((Demo__Add *)tr_msg_body(m))->n;
//         }
//     }   // m is freed when receive returns
//     static const tr_actor_spec counter = {
//         .name = "counter", .size = sizeof(struct counter),
//         .receive = counter_receive,
//     };
//     tr_actor_addr a;
//     tr_actor_spawn(rt, &counter, NULL, NULL, &a);
//     Demo__Add *add;
//     tr_msg *m = tr_msg_new(&demo__add__descriptor, 0, (void **)&add);
//     add->n = 2;
//     tr_actor_send(NULL, a, m); // ownership moves with the message
#ifndef TROUPE_ACTOR_H
#define TROUPE_ACTOR_H

#include <protobuf-c/protobuf-c.h>

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/mailbox.h>
#include <troupe/rt.h>
#include <troupe/task.h>
#include <troupe/time.h>
#include <troupe/v1/actor.pb-c.h>

TR_BEGIN_DECLS

// ---------------------------------------------------------------------------
// Addresses.
//
// An address names one actor for good. node 0 is this process; any other
// value names a peer process and includes its incarnation, so an address
// from before a peer restarted never reaches an actor of the new one. The
// actor part is checked on every use: once the actor has stopped, its
// address is stale (TR_ENOTFOUND) and never names another actor.
typedef struct tr_actor_addr {
    uint64_t node;  // 0: this process
    uint64_t actor; // 0: no actor
} tr_actor_addr;

#define TR_ACTOR_NONE ((tr_actor_addr){0, 0})

static inline bool
tr_actor_addr_eq(tr_actor_addr a, tr_actor_addr b)
{
    return a.node == b.node && a.actor == b.actor;
}

static inline bool
tr_actor_addr_is_none(tr_actor_addr a)
{
    return a.actor == 0;
}

// ---------------------------------------------------------------------------
// Messages.
//
// An actor message is a tr_msg whose m_type is the protobuf-c descriptor of
// its body (so a behaviour switches on the type safely), with the envelope's
// fields (sender, reply-to, correlation id, priority) and one arena that
// holds the body and everything it points to: strings, bytes, repeated
// fields, sub-messages. Build them with tr_msg_new and the tr_msg_arena
// helpers; tr_msg_free (troupe/mailbox.h) frees the whole in one call. A
// local send moves the message: nothing is packed or copied. Never point a
// body's fields at memory outside its arena (a string literal is fine: it
// outlives every message), and never free a field on its own.

// tr_msg_new returns a message whose body is a protobuf-c message of type
// d, initialised as d's init value, in *body; extra bytes of arena are
// reserved in the same block for the fields (the arena grows past them as
// needed, so 0 is always correct, and a good guess saves an allocation).
// Never returns NULL (out of memory aborts). Any thread; the caller owns the
// message until a send takes it.
TR_API tr_msg *tr_msg_new(const ProtobufCMessageDescriptor *d, size_t extra, void **body);

// tr_msg_arena returns size bytes (aligned for any type, zeroed) owned by
// m, freed with it. Never NULL. The message's owner only.
TR_API void *tr_msg_arena(tr_msg *m, size_t size);

// tr_msg_strdup copies the string s into m's arena (NULL: NULL).
TR_API char *tr_msg_strdup(tr_msg *m, const char *s);

// tr_msg_memdup copies n bytes into m's arena (n 0: NULL).
TR_API void *tr_msg_memdup(tr_msg *m, const void *p, size_t n);

// tr_msg_body returns the body of an actor message (a ProtobufCMessage of
// the type tr_msg_descriptor says), or NULL for a message that is not one.
TR_API void *tr_msg_body(const tr_msg *m);

// tr_msg_descriptor returns the type of an actor message's body.
static inline const ProtobufCMessageDescriptor *
tr_msg_descriptor(const tr_msg *m)
{
    return (const ProtobufCMessageDescriptor *)m->m_type;
}

// tr_msg_is reports whether m's body is of type d.
static inline bool
tr_msg_is(const tr_msg *m, const ProtobufCMessageDescriptor *d)
{
    return m->m_type == (const void *)d;
}

// tr_msg_is_actor reports whether m is an actor message (from tr_msg_new
// or an unpack), not some other tr_msg.
TR_API bool tr_msg_is_actor(const tr_msg *m);

// The envelope's fields. The sender is who sent it (none from a plain
// thread or task); reply_to is where a reply goes (the sender's address
// unless a forward or the caller said otherwise); the correlation id ties a
// reply to its request (0: not a request or reply).
TR_API tr_actor_addr tr_msg_sender(const tr_msg *m);
TR_API tr_actor_addr tr_msg_reply_to(const tr_msg *m);
TR_API uint64_t tr_msg_correlation(const tr_msg *m);
TR_API uint32_t tr_msg_priority(const tr_msg *m);
TR_API void tr_msg_set_priority(tr_msg *m, uint32_t prio);
// tr_msg_set_reply_to sets where a reply to m goes (before sending it).
TR_API void tr_msg_set_reply_to(tr_msg *m, tr_actor_addr to);

// tr_msg_reason_text returns the text of a Reason (Down, Exit, CallFailed),
// "" when it has none.
static inline const char *
tr_msg_reason_text(const Troupe__V1__Reason *r)
{
    return (r != NULL && r->text != NULL) ? r->text : "";
}

// tr_msg_reason_err returns the code of a Reason as a tr_err (TR_OK when r
// is NULL: a normal stop).
static inline tr_err
tr_msg_reason_err(const Troupe__V1__Reason *r)
{
    return r != NULL ? (tr_err)r->code : TR_OK;
}

// ---------------------------------------------------------------------------
// Actors.

typedef struct tr_actor tr_actor; // the running actor; valid in its callbacks only

// Messages an actor handles per turn at most; then it yields its worker.
#define TR_ACTOR_BATCH 64

// Flags of tr_actor_spec and tr_actor_opts.
enum {
    // Exit signals from linked actors arrive as Exit messages instead of
    // stopping this actor (Erlang's trap_exit).
    TR_ACTOR_TRAP_EXIT = 1u << 0,
    // The actor's task starts on the spawning worker and wakes no idle one
    // (tr_spawn_local): for an actor that its spawner will message at once,
    // or that spends its life waiting (a process actor).
    TR_ACTOR_LOCAL = 1u << 1,
};

// A kind of actor. Keep it in static storage: actors point at it.
typedef struct tr_actor_spec {
    const char *name; // for dumps and logs; static string, may be NULL
    size_t size;      // bytes of state, zeroed, aligned as max_align_t (at most 4096)
    // init runs once, on the spawning thread, before anyone can send to the
    // actor: it fills in the zeroed state from arg. An error refuses the
    // spawn (stopped does not run then: init releases what it set up).
    // NULL: the state stays zeroed (arg is ignored).
    tr_err (*init)(tr_actor *self, void *state, void *arg);
    // receive handles one message (required). m belongs to the actor layer
    // and is freed when receive returns, unless receive passed it on
    // (tr_actor_forward, tr_actor_keep). It runs on a worker, never on two
    // threads at once for one actor, and must not block.
    void (*receive)(tr_actor *self, void *state, tr_msg *m);
    // stopped runs once when the actor has stopped (reason TR_OK: normally),
    // after its last message, to release what the state owns. May be NULL.
    void (*stopped)(tr_actor *self, void *state, tr_err reason);
    uint32_t bound; // user messages the mailbox holds at most; 0: unbounded
    uint32_t flags; // TR_ACTOR_TRAP_EXIT, TR_ACTOR_LOCAL
} tr_actor_spec;

// Options of one spawn; NULL in tr_actor_spawn means all zero.
typedef struct tr_actor_opts {
    tr_actor *parent; // when not NULL: link the new actor to this one, atomically
    const char *name; // when not NULL: register the new actor under this name
    uint32_t bound;   // when not 0: overrides spec->bound
    uint32_t flags;   // or'ed into spec->flags
} tr_actor_opts;

// tr_actor_spawn starts an actor of kind spec in rt: init(self, state, arg)
// runs first, on the calling thread; then the actor waits for messages.
// TR_OK and *addr (may be NULL). Errors, with nothing started: TR_EINVAL
// (bad spec or name), TR_EEXIST (opts->name is taken), init's error, or
// tr_spawn's (TR_ESHUTDOWN, TR_EEXHAUSTED). Any thread.
TR_API tr_err tr_actor_spawn(tr_rt *rt, const tr_actor_spec *spec, void *arg,
                             const tr_actor_opts *opts, tr_actor_addr *addr);

// tr_actor_self returns an actor's own address.
TR_API tr_actor_addr tr_actor_self(const tr_actor *self);

// tr_actor_rt returns the runtime an actor runs in.
TR_API tr_rt *tr_actor_rt(const tr_actor *self);

// tr_actor_stop makes the actor stop with reason (TR_OK: normally) once the
// current callback returns; the messages still queued are dropped (freed),
// monitors get Down and links get Exit with the reason. From its own
// callbacks only.
TR_API void tr_actor_stop(tr_actor *self, tr_err reason, const char *text);

// tr_actor_stop_other asks the actor at addr to stop with reason (TR_OK:
// normally): the request jumps the queue of user messages (the system
// lane), so the actor stops before its next user message, whether or not
// it traps exits; what was queued is dropped. TR_OK, or TR_ENOTFOUND when no
// such actor runs. Any thread.
TR_API tr_err tr_actor_stop_other(tr_actor_addr addr, tr_err reason, const char *text);

// tr_actor_alive reports whether an actor runs at addr (a snapshot).
TR_API bool tr_actor_alive(tr_actor_addr addr);

// tr_actor_keep takes ownership of the message receive is handling: it is
// not freed when receive returns; the actor frees it or sends it on later.
TR_API void tr_actor_keep(tr_actor *self, tr_msg *m);

// ---------------------------------------------------------------------------
// Sending.
//
// Order: the messages one sender (an actor, a thread, a task) sends to one
// receiver arrive in the order sent. A Down or Exit from an actor arrives
// after every message it sent before it stopped.

// tr_actor_send sends m to the actor at to, from self (NULL: no sender, as
// from a plain thread or task). Its reply-to is what tr_msg_set_reply_to
// set, else the sender (a received message sent on keeps its reply-to, as
// a forward does). Never waits. Takes ownership of m on TR_OK;
// on an error the caller still owns it: TR_ENOTFOUND (no such actor: it
// stopped, or never was), TR_EAGAIN (its mailbox is bounded and full: try
// later, or wait with tr_actor_send_wait from a task; or, for an actor on
// another node, the link's send buffer is full: the peer is far behind),
// TR_EINVAL (m is not an actor message). Any thread.
TR_API tr_err tr_actor_send(tr_actor *self, tr_actor_addr to, tr_msg *m);

// An awaitable send or call; embed it zeroed in the task's state. Idle
// again whenever the operation returns TR_READY.
typedef struct tr_actor_op {
    void *ao_endpoint;   // private: a call's reply endpoint
    uint64_t ao_ref;     // private: a call's monitor of the callee
    tr_actor_addr ao_to; // private: the callee
    uint32_t ao_state;   // private: idle, waiting for room, calling
    uint32_t ao_pad;     // private
    tr_timer ao_timer;   // private: a call's timeout
} tr_actor_op;

_Static_assert(sizeof(tr_actor_op) == 4 * sizeof(uint64_t) + 8 + sizeof(tr_timer),
               "tr_actor_op: an endpoint, a monitor, an address, a state and a timer");

// tr_actor_send_wait is the awaitable send: it waits for room in a bounded
// mailbox. TR_READY with *err TR_OK: sent (the mailbox owns m); with
// another error (TR_ENOTFOUND: the receiver stopped meanwhile, TR_EINVAL;
// TR_EAGAIN for an actor on another node whose link buffer is full: that
// is not waited for) the caller still owns m. TR_PENDING: call again with the same m and op.
// A leaf operation (charges the poll budget). From a task. A task cancelled
// while the send waits calls tr_actor_op_abandon in its drop (and frees m).
TR_API tr_poll tr_actor_send_wait(tr_actor_addr to, tr_cx *cx, tr_actor_op *op, tr_msg *m,
                                  tr_err *err);

// tr_actor_call sends the request m to the actor at to and waits for its
// reply (tr_actor_reply), at most timeout_ns (0: no limit). TR_READY with
// *err TR_OK and *reply (the caller owns it), or with an error and *reply
// NULL: TR_ETIMEDOUT, TR_ENOTFOUND (no such actor), or the reason the
// callee stopped with before replying (TR_OK becomes TR_ECLOSED: a callee
// that stops normally without replying still fails the call), at once, not
// at the timeout; TR_EAGAIN at once for an actor on another node whose
// link buffer is full. Takes ownership of m in every case. From a task; a task
// cancelled mid-call calls tr_actor_op_abandon in its drop.
TR_API tr_poll tr_actor_call(tr_actor_addr to, tr_cx *cx, tr_actor_op *op, tr_msg *m,
                             uint64_t timeout_ns, tr_msg **reply, tr_err *err);

// tr_actor_op_abandon withdraws a pending send or call (a reply that
// arrives later is freed). A no-op for an idle op. Any thread.
TR_API void tr_actor_op_abandon(tr_actor_op *op);

// tr_actor_request is the actor's call: it sends m to to with a fresh
// correlation id (in *corr) and returns at once; the reply arrives as a
// message with that correlation id, or a CallFailed message (callee stopped
// or timeout_ns passed; 0: no limit) — exactly one of the two. Takes
// ownership of m on TR_OK; TR_ENOTFOUND, and TR_EAGAIN (an actor on another
// node whose link buffer is full), leave it to the caller. From the actor's
// callbacks.
TR_API tr_err tr_actor_request(tr_actor *self, tr_actor_addr to, tr_msg *m, uint64_t timeout_ns,
                               uint64_t *corr);

// tr_actor_reply sends reply to whoever sent request (its reply-to), with
// request's correlation id. Takes ownership of reply in every case (it is
// freed when nobody waits any more: TR_ENOTFOUND). Any thread; request is
// only read.
TR_API tr_err tr_actor_reply(tr_actor *self, const tr_msg *request, tr_msg *reply);

// tr_actor_forward sends m on to to, keeping its sender, reply-to and
// correlation id, so the new receiver's reply goes to the original caller.
// Takes ownership of m on TR_OK (also of the message receive is handling).
TR_API tr_err tr_actor_forward(tr_actor *self, tr_actor_addr to, tr_msg *m);

// ---------------------------------------------------------------------------
// Names: one actor per name per runtime; a name leaves when its actor stops.

// tr_actor_register names the actor at addr in rt: TR_OK, TR_EEXIST (taken),
// TR_EINVAL (1 to 64 bytes of [A-Za-z0-9_.:-]), TR_ENOTFOUND. Any thread.
TR_API tr_err tr_actor_register(tr_rt *rt, const char *name, tr_actor_addr addr);

// tr_actor_whereis looks a name up: TR_OK and *addr, or TR_ENOTFOUND.
TR_API tr_err tr_actor_whereis(tr_rt *rt, const char *name, tr_actor_addr *addr);

// tr_actor_unregister removes a name (TR_ENOTFOUND when it is not there).
TR_API tr_err tr_actor_unregister(tr_rt *rt, const char *name);

// ---------------------------------------------------------------------------
// Monitors and links.

// tr_actor_monitor makes watcher receive a Down message when target stops,
// with the reason, after every message target sent watcher before it
// stopped. A target that is already gone gives a Down at once, with
// TR_ENOTFOUND. *ref names the monitor. TR_OK, or TR_ENOTFOUND when the
// watcher itself is gone. Any thread.
TR_API tr_err tr_actor_monitor(tr_actor_addr watcher, tr_actor_addr target, uint64_t *ref);

// tr_actor_demonitor removes a monitor; a Down already sent still arrives.
TR_API void tr_actor_demonitor(tr_actor_addr target, uint64_t ref);

// tr_actor_link links self and other: when either stops with an error, the
// other gets an exit signal (it stops with the same reason, or receives an
// Exit message when it traps exits). A normal stop kills nobody (a trapping
// actor still receives the Exit). Linking to an actor that is gone is an
// exit signal with TR_ENOTFOUND at once. From self's callbacks.
TR_API tr_err tr_actor_link(tr_actor *self, tr_actor_addr other);

// tr_actor_unlink removes a link (both directions).
TR_API void tr_actor_unlink(tr_actor *self, tr_actor_addr other);

// ---------------------------------------------------------------------------
// Supervisors (OTP): a supervisor actor starts children, links to them and
// restarts them when they stop, within a restart intensity.

typedef enum tr_sup_strategy {
    TR_SUP_ONE_FOR_ONE = 0,  // restart the child that stopped
    TR_SUP_ONE_FOR_ALL = 1,  // stop every other child, restart all
    TR_SUP_REST_FOR_ONE = 2, // stop the children started after it, restart those and it
} tr_sup_strategy;

typedef enum tr_sup_restart {
    TR_RESTART_PERMANENT = 0, // always restarted
    TR_RESTART_TRANSIENT = 1, // restarted after an abnormal stop only
    TR_RESTART_TEMPORARY = 2, // never restarted
} tr_sup_restart;

typedef struct tr_sup_child {
    const char *id; // unique among the children, copied
    const tr_actor_spec *spec;
    void *arg; // passed to spec->init at every start
    tr_sup_restart restart;
    const char *name; // registered name, or NULL (copied)
} tr_sup_child;

typedef struct tr_sup_spec {
    tr_sup_strategy strategy;
    uint32_t intensity; // restarts allowed within period_ms (0: none)
    uint32_t period_ms; // the window of intensity
    const tr_sup_child *children;
    size_t nchildren;
} tr_sup_spec;

// tr_sup_start starts a supervisor and its children, in order. More than
// intensity restarts within period_ms make the supervisor stop every child
// (in reverse order) and itself with TR_EEXHAUSTED, which its own
// supervisor sees. spec and the children array are copied. TR_OK and *addr;
// an error of a child's start stops those already started and is returned.
// Any thread.
TR_API tr_err tr_sup_start(tr_rt *rt, const tr_sup_spec *spec, const tr_actor_opts *opts,
                           tr_actor_addr *addr);

// tr_sup_which returns the current address of the child called id (it
// changes at each restart): TR_OK, or TR_ENOTFOUND. Any thread; the answer
// is a snapshot.
TR_API tr_err tr_sup_which(tr_actor_addr sup, const char *id, tr_actor_addr *child);

// tr_sup_restarts returns how many restarts the supervisor has made.
TR_API uint64_t tr_sup_restarts(tr_actor_addr sup);

TR_END_DECLS

#endif
