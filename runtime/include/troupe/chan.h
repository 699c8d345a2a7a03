// troupe/chan.h: channels between tasks (and from plain threads into tasks):
// a oneshot for a single value, and a bounded multi-producer single-consumer
// queue whose senders wait when it is full (backpressure).
//
// Items are copied in and out by value (elem_size bytes each). Receiving and
// sending from a task are awaitables that charge the poll budget.
#ifndef TROUPE_CHAN_H
#define TROUPE_CHAN_H

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

// ---------------------------------------------------------------------------
// Oneshot: one value from one sender to one receiver. Both ends start owned
// by the creator; the object is freed when both ends are released (sending
// releases the sender end, a finished receive releases the receiver end).

typedef struct tr_oneshot tr_oneshot;

// tr_oneshot_new creates a oneshot carrying values of value_size bytes
// (at most 4096). A value_size of 0 makes a pure signal: value pointers may
// then be NULL. Sending twice, or releasing an end twice, is a bug (panic).
TR_API tr_err tr_oneshot_new(size_t value_size, tr_oneshot **out);

// tr_oneshot_send stores the value (copied) and wakes the receiver. Any
// thread, never blocks; releases the sender end whatever it returns.
// TR_ECLOSED when the receiver end is already released (value dropped).
TR_API tr_err tr_oneshot_send(tr_oneshot *o, const void *value);

// tr_oneshot_sender_release drops the sender end without sending: the
// receiver then completes with TR_ECLOSED.
TR_API void tr_oneshot_sender_release(tr_oneshot *o);

// tr_oneshot_recv awaits the value: TR_READY with *err TR_OK (value copied to
// out) or TR_ECLOSED (the sender went away). On TR_READY the receiver end is
// released, and o must not be used again. Cancellation-safe: a task
// cancelled while waiting calls tr_oneshot_receiver_release from its drop.
TR_API tr_poll tr_oneshot_recv(tr_oneshot *o, tr_cx *cx, void *out, tr_err *err);

// tr_oneshot_try_recv: TR_OK (value copied, receiver released), TR_EAGAIN
// (nothing yet: a receive would wait; o still owned) or TR_ECLOSED
// (receiver released).
TR_API tr_err tr_oneshot_try_recv(tr_oneshot *o, void *out);

// tr_oneshot_receiver_release drops the receiver end without receiving.
TR_API void tr_oneshot_receiver_release(tr_oneshot *o);

// ---------------------------------------------------------------------------
// Bounded MPSC channel. Created with one sender reference and the receiver.
// The channel closes when the receiver is released (sends fail with
// TR_ECLOSED) or when the last sender is released (the receiver drains what
// is buffered, then gets TR_ECLOSED). Freed when both sides are released.

typedef struct tr_chan tr_chan;

// A send in progress; embed it in the task state, zeroed (a new task's
// state is). Back to its zeroed state when tr_chan_send returns TR_READY,
// so it may be reused at once.
typedef struct tr_chan_send_op {
    void *cs_priv[4]; // private: the line of waiting senders and the waker, under the chan's lock
} tr_chan_send_op;

_Static_assert(sizeof(tr_chan_send_op) == 4 * sizeof(void *), "tr_chan_send_op: four words");

// tr_chan_new creates a channel of capacity items (1 .. 1<<24) of elem_size
// bytes (1 .. 65536); TR_EINVAL outside those, TR_ETOOBIG when the ring
// would exceed 1 GiB. The ring is allocated at once.
//
// Order: each sender's items arrive in the order it sent them, and waiting
// senders get room in the order they started waiting; items of two
// different senders that both waited may arrive in either order.
TR_API tr_err tr_chan_new(size_t elem_size, size_t capacity, tr_chan **out);

// tr_chan_sender_clone adds a sender reference (any thread).
TR_API void tr_chan_sender_clone(tr_chan *ch);

// tr_chan_sender_release drops a sender reference (any thread).
TR_API void tr_chan_sender_release(tr_chan *ch);

// tr_chan_receiver_release drops the receiver: buffered items are discarded
// and waiting senders complete with TR_ECLOSED.
TR_API void tr_chan_receiver_release(tr_chan *ch);

// tr_chan_send awaits room and copies *item in: TR_READY with *err TR_OK or
// TR_ECLOSED (item not sent). TR_PENDING while the channel is full: op holds
// the task's place in line, and item must stay readable until TR_READY.
// Cancellation: a task cancelled while a send is pending must call
// tr_chan_send_abandon(ch, op) from its drop function; nothing was sent.
TR_API tr_poll tr_chan_send(tr_chan *ch, tr_cx *cx, tr_chan_send_op *op, const void *item,
                            tr_err *err);

// tr_chan_send_abandon withdraws a pending send; a no-op when none is
// pending, for a zeroed op, or when ch is NULL, so a drop function may call
// it unconditionally. A slot already granted to op passes to the next
// waiting sender.
TR_API void tr_chan_send_abandon(tr_chan *ch, tr_chan_send_op *op);

// tr_chan_try_send copies *item in if there is room: TR_OK, TR_EAGAIN (full:
// a send would wait) or TR_ECLOSED. Any thread, never blocks.
TR_API tr_err tr_chan_try_send(tr_chan *ch, const void *item);

// tr_chan_recv awaits an item: TR_READY with *err TR_OK (item copied to out)
// or TR_ECLOSED (all senders gone and nothing buffered). Only the receiver's
// task. Cancellation-safe: nothing is lost if the task is cancelled while
// pending.
TR_API tr_poll tr_chan_recv(tr_chan *ch, tr_cx *cx, void *out, tr_err *err);

// tr_chan_try_recv: TR_OK, TR_EAGAIN (nothing buffered: a receive would
// wait) or TR_ECLOSED. Receiver side only.
TR_API tr_err tr_chan_try_recv(tr_chan *ch, void *out);

// tr_chan_len returns the number of buffered items (a snapshot).
TR_API size_t tr_chan_len(tr_chan *ch);

TR_END_DECLS

#endif
