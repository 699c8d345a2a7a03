// Design notes.
//
// A channel is a ring of `capacity` fixed-size slots (one allocation, items
// copied in and out by value) plus a little bookkeeping, all under one short
// futex mutex, c_lock. Every operation takes the lock once (the receiver's
// release takes it once per batch of waiters), copies at most one item, and
// never calls out while holding it: a waker to fire is copied into a local,
// the lock is dropped, then tr_wake runs. Wakers name tasks by key, so firing
// one whose task has finished, or now waits on something else, is at worst a
// spurious wake-up; every await re-checks its condition under the lock. Item
// copies (up to 64 KiB) happen under the lock: the ring position an item
// takes is only known while the lock is held.
//
// Backpressure and fairness. A sender that finds no room links its op (the
// tr_chan_send_op embedded in its task state) at the tail of an intrusive
// FIFO and returns TR_PENDING. Room that appears is never left for whoever
// asks next: when the receiver takes an item while a sender waits, the freed
// slot is *granted* to the head waiter on the spot (the op is unlinked and
// marked granted, c_reserved counts the slot) and that task is woken. Room
// is c_len + c_reserved < capacity, so a granted slot can be filled only by
// its sender, on its next poll; a sender that has not waited (or
// tr_chan_try_send) sees the channel full. Hence the invariant
//
//     not closed and a sender waiting  =>  c_len + c_reserved == capacity,
//
// the fast path (there is room) implies that nobody is waiting, and waiting
// senders are served strictly in arrival order. Each sender's items keep
// their order; two senders granted one after the other fill their slots when
// they are next polled, so their two items may land in either order.
//
// No lost wake-ups. A grant belongs to its op until the sender fills the slot
// or withdraws. tr_chan_send_abandon on a granted op gives the slot back and,
// in the same critical section, grants it to the next waiter, whose waker is
// fired after the unlock: a cancelled task's drop passes its wake-up on.
// Abandon on a waiting op just unlinks it, and on an idle (zeroed or
// completed) op does nothing, so a drop function may call it unconditionally.
// The receiver's waker is stored under the same lock that senders push
// under, so a push either sees the waker or happens before the receiver's
// check of c_len.
//
// Op encoding: four pointers, cs_priv[OP_NEXT, OP_PREV, OP_WAKER_OPS,
// OP_WAKER_DATA]. next == NULL is idle, next == OP_GRANTED is granted,
// anything else means linked into the circular list whose sentinel is
// c_waiters. Only the owning task moves its op out of idle; the receiver
// moves it from waiting to granted (or to idle when it closes the channel).
// All of these words are read and written under c_lock only.
//
// Closing. The receiver's release sets c_closed, discards the buffer, and
// unlinks the waiting senders in batches, copying their wakers under the lock
// (once unlinked, an op may vanish: its task can see the channel closed and
// finish) and firing them after. A send polled on a closed channel resets its
// op and returns TR_ECLOSED, whatever the op's state. The last sender's
// release wakes the receiver, which drains the buffer and then gets
// TR_ECLOSED. Memory: whichever side releases last frees the channel.
// c_rx_alive is cleared only in the receiver's final critical section, so a
// sender cannot free the channel under the receiver's close loop. A waiting
// or granted op belongs to a task that holds a sender reference (it abandons
// before it releases), so c_senders reaches 0 only with no waiter and no
// reservation; that is asserted.
#include <string.h>

#include <troupe/chan.h>

#include "sync/sync.h"

#define CHAN_MAX_ELEM ((size_t)65536)
#define CHAN_MAX_CAP ((size_t)1 << 24)
#define CHAN_MAX_RING ((size_t)1 << 30) // bytes of ring at most

// Wakers copied out of the waiter list per lock hold in receiver_release.
#define CLOSE_BATCH 16

enum { OP_NEXT = 0, OP_PREV = 1, OP_WAKER_OPS = 2, OP_WAKER_DATA = 3 };

// The address of granted_mark, stored in cs_priv[OP_NEXT], marks a granted op
// (not const, so that it cannot be merged with another constant).
static char granted_mark;
#define OP_GRANTED ((void *)&granted_mark)

static const tr_waker no_waker = {NULL, NULL};

struct tr_chan {
    tr__mutex c_lock;

    // Immutable after tr_chan_new.
    size_t c_elem;         // bytes per item
    size_t c_cap;          // items the ring holds
    unsigned char *c_ring; // c_cap * c_elem bytes

    // All below: protected by c_lock.
    size_t c_head;             // ring index of the oldest item
    size_t c_len;              // buffered items
    size_t c_reserved;         // slots granted to woken senders, not yet filled
    size_t c_senders;          // sender references
    bool c_rx_alive;           // the receiver has not finished releasing
    bool c_closed;             // the receiver released (or is releasing)
    tr_waker c_rx_waker;       // the receiver awaiting an item, or empty
    tr_chan_send_op c_waiters; // sentinel of the FIFO of waiting senders
};

// ---------------------------------------------------------------------------
// Ops and the waiter list. All called with c_lock held.

static bool
op_is_granted(const tr_chan_send_op *op)
{
    return op->cs_priv[OP_NEXT] == OP_GRANTED;
}

static bool
op_is_waiting(const tr_chan_send_op *op)
{
    return op->cs_priv[OP_NEXT] != NULL && op->cs_priv[OP_NEXT] != OP_GRANTED;
}

static void
op_set_waker(tr_chan_send_op *op, tr_waker w)
{
    op->cs_priv[OP_WAKER_OPS] = (void *)w.ops;
    op->cs_priv[OP_WAKER_DATA] = (void *)w.data;
}

static tr_waker
op_waker(const tr_chan_send_op *op)
{
    tr_waker w = {op->cs_priv[OP_WAKER_OPS], op->cs_priv[OP_WAKER_DATA]};
    return w;
}

// op_make_idle also forgets the waker, so a stale copy is never fired.
static void
op_make_idle(tr_chan_send_op *op)
{
    memset(op->cs_priv, 0, sizeof op->cs_priv);
}

static bool
waiters_empty(const tr_chan *ch)
{
    return ch->c_waiters.cs_priv[OP_NEXT] == &ch->c_waiters;
}

static void
waiters_push(tr_chan *ch, tr_chan_send_op *op)
{
    tr_chan_send_op *tail = ch->c_waiters.cs_priv[OP_PREV];
    op->cs_priv[OP_NEXT] = &ch->c_waiters;
    op->cs_priv[OP_PREV] = tail;
    tail->cs_priv[OP_NEXT] = op;
    ch->c_waiters.cs_priv[OP_PREV] = op;
}

// waiters_unlink removes a linked op and leaves its words for the caller to
// set (idle or granted).
static void
waiters_unlink(tr_chan_send_op *op)
{
    tr_chan_send_op *next = op->cs_priv[OP_NEXT];
    tr_chan_send_op *prev = op->cs_priv[OP_PREV];
    prev->cs_priv[OP_NEXT] = next;
    next->cs_priv[OP_PREV] = prev;
}

// waiters_pop unlinks and returns the longest-waiting op, or NULL.
static tr_chan_send_op *
waiters_pop(tr_chan *ch)
{
    if (waiters_empty(ch)) {
        return NULL;
    }
    tr_chan_send_op *op = ch->c_waiters.cs_priv[OP_NEXT];
    waiters_unlink(op);
    return op;
}

// grant_head gives one free slot to the longest-waiting sender, if any, and
// returns the waker to fire after the unlock (empty when nobody waits).
static tr_waker
grant_head(tr_chan *ch)
{
    tr_chan_send_op *op = waiters_pop(ch);
    if (op == NULL) {
        return no_waker;
    }
    TR__ASSERT(ch->c_len + ch->c_reserved < ch->c_cap);
    tr_waker w = op_waker(op);
    op->cs_priv[OP_NEXT] = OP_GRANTED;
    op->cs_priv[OP_PREV] = NULL;
    ch->c_reserved++;
    return w;
}

// op_withdraw returns op to idle, unlinking it or giving back its grant.
// Returns true when it held a grant (a slot is free again).
static bool
op_withdraw(tr_chan *ch, tr_chan_send_op *op)
{
    bool had_grant = false;
    if (op_is_waiting(op)) {
        waiters_unlink(op);
    } else if (op_is_granted(op)) {
        TR__ASSERT(ch->c_reserved > 0);
        ch->c_reserved--;
        had_grant = true;
    }
    op_make_idle(op);
    return had_grant;
}

static tr_waker
take_rx_waker(tr_chan *ch)
{
    tr_waker w = ch->c_rx_waker;
    ch->c_rx_waker = no_waker;
    return w;
}

// ---------------------------------------------------------------------------
// The ring. Called with c_lock held.

static void
ring_push(tr_chan *ch, const void *item)
{
    size_t tail = ch->c_head + ch->c_len;
    if (tail >= ch->c_cap) {
        tail -= ch->c_cap;
    }
    memcpy(ch->c_ring + tail * ch->c_elem, item, ch->c_elem);
    ch->c_len++;
}

static void
ring_pop(tr_chan *ch, void *out)
{
    memcpy(out, ch->c_ring + ch->c_head * ch->c_elem, ch->c_elem);
    if (++ch->c_head == ch->c_cap) {
        ch->c_head = 0;
    }
    ch->c_len--;
}

// recv_locked takes the oldest item: TR_OK (and *wake is the sender granted
// the freed slot), TR_ECLOSED or TR_EAGAIN.
static tr_err
recv_locked(tr_chan *ch, void *out, tr_waker *wake)
{
    TR__ASSERT(ch->c_rx_alive && !ch->c_closed);
    if (ch->c_len > 0) {
        ring_pop(ch, out);
        *wake = grant_head(ch);
        return TR_OK;
    }
    if (ch->c_senders == 0) {
        return TR_ECLOSED;
    }
    return TR_EAGAIN;
}

static void
chan_free(tr_chan *ch)
{
    tr__free(ch->c_ring, ch->c_cap * ch->c_elem);
    tr__free(ch, sizeof *ch);
}

// ---------------------------------------------------------------------------
// Public API.

tr_err
tr_chan_new(size_t elem_size, size_t capacity, tr_chan **out)
{
    if (out == NULL) {
        return TR_EINVAL;
    }
    *out = NULL;
    if (elem_size < 1 || elem_size > CHAN_MAX_ELEM || capacity < 1 || capacity > CHAN_MAX_CAP ||
        capacity > SIZE_MAX / elem_size) {
        return TR_EINVAL;
    }
    // The ring is allocated up front, and tr__alloc aborts on failure: refuse
    // rings that could not reasonably be had instead of crashing.
    if (capacity * elem_size > CHAN_MAX_RING) {
        return TR_ETOOBIG;
    }
    tr_chan *ch = tr__zalloc(sizeof *ch);
    ch->c_lock = (tr__mutex)TR__MUTEX_INIT;
    ch->c_elem = elem_size;
    ch->c_cap = capacity;
    ch->c_ring = tr__alloc(capacity * elem_size);
    ch->c_senders = 1;
    ch->c_rx_alive = true;
    ch->c_waiters.cs_priv[OP_NEXT] = &ch->c_waiters;
    ch->c_waiters.cs_priv[OP_PREV] = &ch->c_waiters;
    *out = ch;
    return TR_OK;
}

void
tr_chan_sender_clone(tr_chan *ch)
{
    tr__mutex_lock(&ch->c_lock);
    TR__ASSERT(ch->c_senders > 0);
    ch->c_senders++;
    tr__mutex_unlock(&ch->c_lock);
}

void
tr_chan_sender_release(tr_chan *ch)
{
    tr_waker wake = no_waker;
    tr__mutex_lock(&ch->c_lock);
    TR__ASSERT(ch->c_senders > 0);
    ch->c_senders--;
    if (ch->c_senders == 0) {
        // A pending send must be abandoned before its task releases.
        TR__ASSERT(waiters_empty(ch) && ch->c_reserved == 0);
        wake = take_rx_waker(ch);
    }
    bool free_it = ch->c_senders == 0 && !ch->c_rx_alive;
    tr__mutex_unlock(&ch->c_lock);
    if (free_it) {
        chan_free(ch);
    } else {
        tr_wake(wake);
    }
}

void
tr_chan_receiver_release(tr_chan *ch)
{
    bool done = false;
    bool free_it = false;
    while (!done) {
        tr_waker batch[CLOSE_BATCH];
        size_t n = 0;
        tr_chan_send_op *op;
        tr__mutex_lock(&ch->c_lock);
        TR__ASSERT(ch->c_rx_alive);
        ch->c_closed = true;
        ch->c_head = 0;
        ch->c_len = 0;
        ch->c_rx_waker = no_waker;
        while (n < CLOSE_BATCH && (op = waiters_pop(ch)) != NULL) {
            batch[n++] = op_waker(op);
            op_make_idle(op);
        }
        if (waiters_empty(ch)) {
            // Last touch of the channel by the receiver side.
            ch->c_rx_alive = false;
            free_it = ch->c_senders == 0;
            done = true;
        }
        tr__mutex_unlock(&ch->c_lock);
        for (size_t i = 0; i < n; i++) {
            tr_wake(batch[i]);
        }
    }
    if (free_it) {
        chan_free(ch);
    }
}

tr_poll
tr_chan_send(tr_chan *ch, tr_cx *cx, tr_chan_send_op *op, const void *item, tr_err *err)
{
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    tr_waker self = tr_cx_waker(cx);
    tr_waker wake;
    tr__mutex_lock(&ch->c_lock);
    if (ch->c_closed) {
        op_withdraw(ch, op);
        tr__mutex_unlock(&ch->c_lock);
        *err = TR_ECLOSED;
        return TR_READY;
    }
    if (op_is_waiting(op)) {
        // Still in line (a spurious poll): keep the place, refresh the waker.
        op_set_waker(op, self);
        tr__mutex_unlock(&ch->c_lock);
        return TR_PENDING;
    }
    if (op_is_granted(op)) {
        // Fill the slot that was set aside for us.
        ch->c_reserved--;
        op_make_idle(op);
    } else if (ch->c_len + ch->c_reserved == ch->c_cap) {
        op_set_waker(op, self);
        waiters_push(ch, op);
        tr__mutex_unlock(&ch->c_lock);
        return TR_PENDING;
    } else {
        TR__ASSERT(waiters_empty(ch));
    }
    ring_push(ch, item);
    wake = take_rx_waker(ch);
    tr__mutex_unlock(&ch->c_lock);
    tr_wake(wake);
    *err = TR_OK;
    return TR_READY;
}

void
tr_chan_send_abandon(tr_chan *ch, tr_chan_send_op *op)
{
    if (ch == NULL || op == NULL) {
        return;
    }
    tr_waker wake = no_waker;
    tr__mutex_lock(&ch->c_lock);
    if (op_withdraw(ch, op) && !ch->c_closed) {
        // Pass the slot, and the wake-up that came with it, down the line.
        wake = grant_head(ch);
    }
    tr__mutex_unlock(&ch->c_lock);
    tr_wake(wake);
}

tr_err
tr_chan_try_send(tr_chan *ch, const void *item)
{
    tr_waker wake;
    tr__mutex_lock(&ch->c_lock);
    if (ch->c_closed) {
        tr__mutex_unlock(&ch->c_lock);
        return TR_ECLOSED;
    }
    if (ch->c_len + ch->c_reserved == ch->c_cap) {
        tr__mutex_unlock(&ch->c_lock);
        return TR_EAGAIN;
    }
    TR__ASSERT(waiters_empty(ch));
    ring_push(ch, item);
    wake = take_rx_waker(ch);
    tr__mutex_unlock(&ch->c_lock);
    tr_wake(wake);
    return TR_OK;
}

tr_poll
tr_chan_recv(tr_chan *ch, tr_cx *cx, void *out, tr_err *err)
{
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    tr_waker self = tr_cx_waker(cx);
    tr_waker wake = no_waker;
    tr__mutex_lock(&ch->c_lock);
    tr_err e = recv_locked(ch, out, &wake);
    if (e == TR_EAGAIN) {
        ch->c_rx_waker = self;
        tr__mutex_unlock(&ch->c_lock);
        return TR_PENDING;
    }
    // Done waiting: a later push need not wake us.
    ch->c_rx_waker = no_waker;
    tr__mutex_unlock(&ch->c_lock);
    tr_wake(wake);
    *err = e;
    return TR_READY;
}

tr_err
tr_chan_try_recv(tr_chan *ch, void *out)
{
    tr_waker wake = no_waker;
    tr__mutex_lock(&ch->c_lock);
    tr_err e = recv_locked(ch, out, &wake);
    tr__mutex_unlock(&ch->c_lock);
    tr_wake(wake);
    return e;
}

size_t
tr_chan_len(tr_chan *ch)
{
    tr__mutex_lock(&ch->c_lock);
    size_t n = ch->c_len;
    tr__mutex_unlock(&ch->c_lock);
    return n;
}
