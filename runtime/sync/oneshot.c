// Design notes.
//
// A oneshot is one allocation: a small header and room for the value. Its
// state (two "end alive" flags, a "value stored" flag and the receiver's
// waker) lives under one short futex mutex, o_lock. Every operation is a
// single critical section that never calls out: the waker to fire is copied
// out, the lock dropped, and then tr_wake runs. The sender may be any thread
// (a task, a plain thread, another library's callback); the receiver awaits
// from a task or polls with try_recv.
//
// Why no wake-up is lost: the receiver stores its waker in the same critical
// section in which it finds neither a value nor a closed sender, and the
// sender stores the value (or marks itself gone) and takes that waker in one
// critical section too. Whichever comes second sees what the first did.
// Wakers name tasks by key, so one fired after the receiver task has gone
// away is harmless.
//
// Who frees: each end is released exactly once (send, sender_release, a
// receive that returned TR_READY or a value/TR_ECLOSED from try_recv, or
// receiver_release), and the release that finds the other end already gone
// frees the object after dropping the lock. Nothing touches the object after
// its own release's unlock, so the free cannot pull memory from under the
// other side. A second release of the same end is a bug and is asserted
// (while the object is still alive, i.e. when the other end still holds it).
#include <string.h>

#include <troupe/chan.h>

#include "sync/sync.h"

#define ONESHOT_MAX_VALUE ((size_t)4096)

static const tr_waker no_waker = {NULL, NULL};

// 24 bytes before the value: a pure signal (value_size 0) fits the
// allocator's smallest chunk, which matters to a million idle tasks.
struct tr_oneshot {
    tr_waker o_rx_waker; // the receiver awaiting the value, or empty (o_lock)
    tr__mutex o_lock;
    uint16_t o_size; // value bytes (at most ONESHOT_MAX_VALUE); immutable

    // Under o_lock.
    bool o_tx_alive : 1;     // the sender end is held
    bool o_rx_alive : 1;     // the receiver end is held
    bool o_full : 1;         // o_value holds the sent value
    unsigned char o_value[]; // o_size bytes, written once by the sender
};
_Static_assert(sizeof(struct tr_oneshot) <= 24, "a signal oneshot is one small chunk");

static void
oneshot_free(tr_oneshot *o)
{
    tr__free(o, sizeof *o + o->o_size);
}

// take_locked ends a receive if it can: TR_OK (value copied, receiver end
// released), TR_ECLOSED (receiver end released) or TR_EAGAIN (nothing yet).
// Whenever it releases the receiver end, the sender end is already gone, so
// the caller frees the object after the unlock.
static tr_err
take_locked(tr_oneshot *o, void *out)
{
    TR__ASSERT(o->o_rx_alive);
    if (o->o_full) {
        if (o->o_size > 0) {
            memcpy(out, o->o_value, o->o_size);
        }
        o->o_rx_alive = false;
        return TR_OK;
    }
    if (!o->o_tx_alive) {
        o->o_rx_alive = false;
        return TR_ECLOSED;
    }
    return TR_EAGAIN;
}

tr_err
tr_oneshot_new(size_t value_size, tr_oneshot **out)
{
    if (out == NULL) {
        return TR_EINVAL;
    }
    *out = NULL;
    if (value_size > ONESHOT_MAX_VALUE) {
        return TR_EINVAL;
    }
    tr_oneshot *o = tr__zalloc(sizeof *o + value_size);
    o->o_lock = (tr__mutex)TR__MUTEX_INIT;
    o->o_size = (uint16_t)value_size;
    o->o_tx_alive = true;
    o->o_rx_alive = true;
    *out = o;
    return TR_OK;
}

tr_err
tr_oneshot_send(tr_oneshot *o, const void *value)
{
    tr_waker wake = no_waker;
    tr_err err = TR_OK;
    tr__mutex_lock(&o->o_lock);
    TR__ASSERT(o->o_tx_alive);
    o->o_tx_alive = false;
    bool free_it = !o->o_rx_alive;
    if (free_it) {
        err = TR_ECLOSED;
    } else {
        if (o->o_size > 0) {
            memcpy(o->o_value, value, o->o_size);
        }
        o->o_full = true;
        wake = o->o_rx_waker;
        o->o_rx_waker = no_waker;
    }
    tr__mutex_unlock(&o->o_lock);
    if (free_it) {
        oneshot_free(o);
    } else {
        tr_wake(wake);
    }
    return err;
}

void
tr_oneshot_sender_release(tr_oneshot *o)
{
    tr__mutex_lock(&o->o_lock);
    TR__ASSERT(o->o_tx_alive);
    o->o_tx_alive = false;
    bool free_it = !o->o_rx_alive;
    tr_waker wake = o->o_rx_waker;
    o->o_rx_waker = no_waker;
    tr__mutex_unlock(&o->o_lock);
    if (free_it) {
        oneshot_free(o);
    } else {
        tr_wake(wake);
    }
}

tr_poll
tr_oneshot_recv(tr_oneshot *o, tr_cx *cx, void *out, tr_err *err)
{
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    tr_waker self = tr_cx_waker(cx);
    tr__mutex_lock(&o->o_lock);
    tr_err e = take_locked(o, out);
    if (e == TR_EAGAIN) {
        o->o_rx_waker = self;
        tr__mutex_unlock(&o->o_lock);
        return TR_PENDING;
    }
    tr__mutex_unlock(&o->o_lock);
    oneshot_free(o);
    *err = e;
    return TR_READY;
}

tr_err
tr_oneshot_try_recv(tr_oneshot *o, void *out)
{
    tr__mutex_lock(&o->o_lock);
    tr_err e = take_locked(o, out);
    tr__mutex_unlock(&o->o_lock);
    if (e != TR_EAGAIN) {
        oneshot_free(o);
    }
    return e;
}

void
tr_oneshot_receiver_release(tr_oneshot *o)
{
    tr__mutex_lock(&o->o_lock);
    TR__ASSERT(o->o_rx_alive);
    o->o_rx_alive = false;
    o->o_rx_waker = no_waker;
    bool free_it = !o->o_tx_alive;
    tr__mutex_unlock(&o->o_lock);
    if (free_it) {
        oneshot_free(o);
    }
}
