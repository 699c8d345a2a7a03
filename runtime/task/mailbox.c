// Design notes.
//
// Lanes. Each lane is Vyukov's intrusive multi-producer single-consumer
// queue, as the Pony runtime's messageq: a singly linked list from the
// consumer's tail (oldest) to the producers' head (newest). A push is
//
//     m->next = NULL; prev = exchange(head, m); prev->next = m;
//
// one atomic exchange and one release store, no loop, no lock. Unlike
// ponyc's queue, which keeps the last popped message as the next stub and
// frees it later, ours hands every message to its new owner, so each lane
// has a placeholder message of its own in the mailbox (the stub): when the
// consumer is about to hand out the last linked message it pushes the stub
// behind it, exactly as a producer would, and skips the stub when it comes
// round. An empty lane, canonically, is tail == head == &stub with
// stub.next == NULL.
//
// The window. Between a producer's exchange and its link, the message it
// replaced has no next yet, so the consumer cannot step past it: pop returns
// NULL for that lane (rather than spin on a producer that may have been
// preempted there), and the message shows on a later pop. The lane is not
// canonically empty either (the head has moved), so markempty returns false
// and the consumer, which was not woken, polls again later. No wake is lost:
// the consumer never sleeps in that state. That is the one busy case, and it
// lasts as long as the producer's window.
//
// The empty mark: bit 0 of the user lane's head. Messages (and stubs) are
// pointer-aligned, so the bit is free. markempty sets it with a CAS from
// exactly &stub to &stub | 1, i.e. only on a canonically empty user lane, so
// the marked word is always the same value, and an RMW that expects it can
// only succeed on the mark it read. The mark is removed by exactly one RMW on
// the head, whichever comes first in the head's modification order:
//   (a) a user push's exchange, which replaces &stub | 1 with its message
//       (prev had the bit: this push wakes);
//   (b) a system push's CAS &stub | 1 -> &stub, after it has swapped itself
//       into the system lane's head (its CAS succeeded: this push wakes);
//   (c) markempty's own CAS &stub | 1 -> &stub, when it re-checks the system
//       lane after marking and finds it no longer empty: markempty then
//       returns false, and no push wakes for that mark.
// Each of these reads the marked value and writes an unmarked one, so at most
// one of them succeeds per mark, and the pushes that lose see no mark (a user
// exchange returns an unmarked prev, a system CAS fails and sees no bit).
// When (c) fails, a push has taken the mark and will wake: markempty returns
// true, so that every true return is matched by exactly one wake.
//
// The second lane (Dekker). A system push does not touch the user head unless
// the mark is there, so nothing orders it with markempty by itself. Both
// sides therefore write their own word, then read the other's, all seq_cst:
//     markempty:    CAS(head, &stub, &stub|1)  ;  load(sys_head)
//     system push:  exchange(sys_head, m)      ;  load(head), CAS if marked
// In the single total order of seq_cst operations, one side's write precedes
// the other side's read. If the mark precedes the push's load, the push sees
// the mark (or its removal by (a) or (c), both later in the head's order) and
// CASes it off (b); if the push's exchange precedes markempty's load,
// markempty sees the system lane non-empty and tries (c). If both, (b) and
// (c) race for the one mark, and exactly one of them wins. Either way the
// consumer does not sleep on a system message. (seq_cst operations, not
// fences: ThreadSanitizer models the former only.)
//
// Old pushes never clear a new mark: a push reads the head (its exchange, or
// the system push's load) before it links its message, and the consumer
// reaches a canonically empty lane only through that link (acquire), so the
// read happens before the next mark and cannot see it.
//
// The waker. markempty stores it (a plain two-word field) before the CAS that
// sets the mark (release); the one push that removes the mark reads it after
// its RMW (acquire), so it sees the waker of that mark. The consumer may
// store a new waker only once that push has read the old one: the push reads
// it before its link, and markempty stores only after it has seen the user
// head back at &stub, unmarked, and the system lane empty. After (a) the user
// head is &stub again only once the consumer has popped that message, through
// its link. After (b) the user head is &stub at once, but the system push had
// swapped the system head before its CAS, and markempty reads the user head
// (synchronising with that CAS, or with the RMW release sequence it heads)
// before it looks at the system lane, so it sees the system lane non-empty
// until it has popped that message, through its link. So the waker never has
// a reader and a writer at once, and tr_wake runs on a copy, after the link.
//
// Visibility of messages. A producer's writes into its message happen before
// its release store of prev->next, which the consumer's pop reads with
// acquire. m->next = NULL is ordered before any later producer's link to m by
// the exchanges (each reads the previous one's value: a release sequence).
//
// The bound: mb_len counts the user lane's messages (queued or being pushed)
// plus places granted to waiting senders; tr_mailbox_push adds to it
// unconditionally, try_push and send reserve a place with a CAS that never
// exceeds mb_bound (so a failed attempt never inflates the count), and the
// consumer subtracts what it takes, once per take. A sender that finds no
// room joins a FIFO ring of waiting senders (its op, embedded in its task
// state) under mb_lock, the only lock, taken only when the lane is full. Room
// is granted, not just signalled: whoever holds the lock and sees room
// reserves it for the sender at the head of the ring (the count includes it
// from then on), marks the op granted and wakes its task after the unlock;
// the woken sender pushes without reserving again, and a newcomer (the fast
// path reads mb_waiters and joins the line when it is not zero) cannot take
// the place. Every lock holder that changes the ring or the room grants
// until the ring is empty or the lane full, so at each unlock "somebody waits
// => no room" holds. The consumer does not take the lock to find that out:
// it subtracts from mb_len, then reads mb_waiters (seq_cst), while a sender
// adds to mb_waiters before it looks for room (seq_cst), Dekker again: either
// the consumer sees a waiter and grants under the lock, or the sender's own
// grant pass (under the lock, after its increment) sees the room. An
// abandoned op that had been granted gives its place back and grants it on,
// in one critical section, so a cancelled sender's wake-up passes down the
// line. The wakers of granted senders are copied under the lock (a granted
// op may vanish as soon as the lock is dropped) and fired after it, at most
// GRANT_BATCH per lock hold.
//
// Op states (o_state): idle (zero), waiting (in the ring), granted (out of
// the ring, a place reserved). Only the owner moves an op out of idle, and
// only under the lock; the unlocked read that sees idle is the owner's own.
#include <string.h>

#include <troupe/mailbox.h>

#include "task/task.h"

#define MARK ((uintptr_t)1)

// Wakers copied out per hold of the lock.
#define GRANT_BATCH 16

enum { OP_IDLE = 0, OP_WAITING = 1, OP_GRANTED = 2 };

// mb_lock is a tr__mutex (one futex word); the public struct cannot name it.
_Static_assert(sizeof(tr__mutex) == sizeof(uint32_t), "tr__mutex is one word");

static inline tr__mutex *
mb_lock(tr_mailbox *mb)
{
    return (tr__mutex *)(void *)&mb->mb_lock;
}

static const tr_waker no_waker = {NULL, NULL};

// ---------------------------------------------------------------------------
// Lanes.

// lane_swap is a push's first half: it makes m the lane's head and returns
// the previous head (user lane: with its mark bit).
static inline uintptr_t
lane_swap(_Atomic(uintptr_t) *headp, tr_msg_link *m)
{
    atomic_store_explicit(&m->l_next, NULL, memory_order_relaxed);
    // Release: m->next = NULL is ordered before the next producer's link
    // to m (its exchange reads ours). Acquire: pairs with markempty's CAS
    // when the previous head is the mark (the waker). seq_cst: one total
    // order with the mark's CASes and, on the system lane, markempty's
    // re-check (Dekker, see the notes).
    return atomic_exchange_explicit(headp, (uintptr_t)m, memory_order_seq_cst);
}

// lane_link is a push's second half: prev (a head lane_swap returned) gets m
// as its next.
static inline void
lane_link(uintptr_t prev, tr_msg_link *m)
{
    tr_msg_link *p = (tr_msg_link *)(prev & ~MARK);
    // Pairs with the acquire loads of l_next in lane_pop and markempty: what
    // the producer wrote into m is visible to the consumer that reaches it.
    atomic_store_explicit(&p->l_next, m, memory_order_release);
}

// lane_pop takes the oldest message of a lane, or returns NULL when the lane
// is empty or its oldest message waits for a push's link. Consumer only.
static tr_msg *
lane_pop(_Atomic(uintptr_t) *headp, tr_msg_link **tailp, tr_msg_link *stub)
{
    tr_msg_link *tail = *tailp;
    // Pairs with the release store in lane_link.
    tr_msg_link *next = atomic_load_explicit(&tail->l_next, memory_order_acquire);
    if (tail == stub) {
        if (next == NULL) {
            return NULL; // empty, or its first push is in its window
        }
        *tailp = next;
        tail = next;
        next = atomic_load_explicit(&next->l_next, memory_order_acquire);
    }
    if (next != NULL) {
        *tailp = next;
        return (tr_msg *)(void *)tail; // a message: its link is its first member
    }
    // tail is the last message linked. Unless it is the last pushed too (a
    // push is in its window behind it), put the stub behind it, so that it
    // can be handed out. Acquire: pairs with the exchanges of lane_swap
    // (only a comparison is made; the links carry the data).
    uintptr_t head = atomic_load_explicit(headp, memory_order_acquire);
    if (head != (uintptr_t)tail) {
        return NULL;
    }
    uintptr_t prev = lane_swap(headp, stub);
    // A mark sits only on a canonically empty user lane, never behind a
    // message the consumer still holds.
    TR__ASSERT((prev & MARK) == 0);
    lane_link(prev, stub);
    next = atomic_load_explicit(&tail->l_next, memory_order_acquire);
    if (next != NULL) {
        *tailp = next;
        return (tr_msg *)(void *)tail;
    }
    return NULL; // a push came between the look at the head and the stub's
}

static inline tr_msg *
sys_pop(tr_mailbox *mb)
{
    return lane_pop(&mb->mb_sys_head, &mb->mb_sys_tail, &mb->mb_sys_stub);
}

static inline tr_msg *
user_pop(tr_mailbox *mb)
{
    return lane_pop(&mb->mb_head, &mb->mb_tail, &mb->mb_stub);
}

// sys_empty reports whether the system lane is canonically empty. The load
// of the head is seq_cst: it is markempty's read of the Dekker pair.
static bool
sys_empty(tr_mailbox *mb)
{
    return mb->mb_sys_tail == &mb->mb_sys_stub &&
           atomic_load_explicit(&mb->mb_sys_stub.l_next, memory_order_acquire) == NULL &&
           atomic_load_explicit(&mb->mb_sys_head, memory_order_seq_cst) ==
               (uintptr_t)&mb->mb_sys_stub;
}

// push_user links m into the user lane (its place already counted) and
// wakes the consumer if this push took the mark.
static bool
push_user(tr_mailbox *mb, tr_msg *m)
{
    uintptr_t prev = lane_swap(&mb->mb_head, &m->m_link);
    if (TR__LIKELY((prev & MARK) == 0)) {
        lane_link(prev, &m->m_link);
        return false;
    }
    // This push took the mark (a). Read the waker before the link: once m
    // is linked the consumer may run and store another (see the notes).
    tr_waker wk = mb->mb_waker;
    lane_link(prev, &m->m_link);
    tr_wake(wk);
    return true;
}

// ---------------------------------------------------------------------------
// The bound and the line of waiting senders.

// reserve counts one more message in the user lane if that stays within the
// bound. seq_cst: the sender's side of the Dekker pair with room_made.
static bool
reserve(tr_mailbox *mb)
{
    uint32_t n = atomic_load_explicit(&mb->mb_len, memory_order_seq_cst);
    do {
        if (n >= mb->mb_bound) {
            return false;
        }
    } while (!atomic_compare_exchange_weak_explicit(&mb->mb_len, &n, n + 1, memory_order_seq_cst,
                                                    memory_order_seq_cst));
    return true;
}

// fast_reserve is the lock-free path of try_push and send.
static bool
fast_reserve(tr_mailbox *mb)
{
    if (mb->mb_bound == 0) {
        // Relaxed: a count for tr_mailbox_len only.
        atomic_fetch_add_explicit(&mb->mb_len, 1, memory_order_relaxed);
        return true;
    }
    // Senders in line go first. Relaxed: a hint (a newcomer that misses a
    // waiter that just joined merely overtakes it); the line itself is only
    // read under the lock.
    if (atomic_load_explicit(&mb->mb_waiters, memory_order_relaxed) != 0) {
        return false;
    }
    return reserve(mb);
}

static void
ring_push(tr_mailbox *mb, tr_mailbox_op *op)
{
    tr_mailbox_op *h = mb->mb_wait;
    if (h == NULL) {
        op->o_next = op;
        op->o_prev = op;
        mb->mb_wait = op;
        return;
    }
    tr_mailbox_op *t = h->o_prev;
    op->o_next = h;
    op->o_prev = t;
    t->o_next = op;
    h->o_prev = op;
}

static void
ring_unlink(tr_mailbox *mb, tr_mailbox_op *op)
{
    if (op->o_next == op) {
        mb->mb_wait = NULL;
    } else {
        op->o_prev->o_next = op->o_next;
        op->o_next->o_prev = op->o_prev;
        if (mb->mb_wait == op) {
            mb->mb_wait = op->o_next;
        }
    }
    op->o_next = NULL;
    op->o_prev = NULL;
}

// grant_locked, under mb_lock, grants room to the senders in line, longest
// waiting first, until nobody waits, there is no room, or GRANT_BATCH wakers
// are collected into out (*n of them; self's, the caller's own, is not
// collected). Returns true in the last case: call again once they are woken.
static bool
grant_locked(tr_mailbox *mb, const tr_mailbox_op *self, tr_waker *out, size_t *n)
{
    tr_mailbox_op *op;
    *n = 0;
    while ((op = mb->mb_wait) != NULL) {
        if (*n == GRANT_BATCH) {
            return true;
        }
        if (!reserve(mb)) {
            return false;
        }
        ring_unlink(mb, op);
        atomic_fetch_sub_explicit(&mb->mb_waiters, 1, memory_order_seq_cst);
        // Relaxed: a count for tr_mailbox_fini's check only.
        atomic_fetch_add_explicit(&mb->mb_granted, 1, memory_order_relaxed);
        if (op != self) {
            out[(*n)++] = op->o_waker;
        }
        op->o_waker = no_waker;
        // Relaxed: the owner reads it under the lock (an unlocked read only
        // tests for idle, which this is not).
        atomic_store_explicit(&op->o_state, OP_GRANTED, memory_order_relaxed);
    }
    return false;
}

static void
wake_all(const tr_waker *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tr_wake(w[i]);
    }
}

// serve grants what room there is to the senders in line and wakes them.
static void
serve(tr_mailbox *mb)
{
    tr_waker w[GRANT_BATCH];
    size_t n;
    bool more;
    do {
        tr__mutex_lock(mb_lock(mb));
        more = grant_locked(mb, NULL, w, &n);
        tr__mutex_unlock(mb_lock(mb));
        wake_all(w, n);
    } while (more);
}

// room_made is the consumer's: it has taken k user messages.
static void
room_made(tr_mailbox *mb, uint32_t k)
{
    if (mb->mb_bound == 0) {
        // Relaxed: a count for tr_mailbox_len only.
        atomic_fetch_sub_explicit(&mb->mb_len, k, memory_order_relaxed);
        return;
    }
    // seq_cst, then the seq_cst load: the consumer's side of the Dekker pair
    // with a sender's increment of mb_waiters and its reserve.
    atomic_fetch_sub_explicit(&mb->mb_len, k, memory_order_seq_cst);
    if (atomic_load_explicit(&mb->mb_waiters, memory_order_seq_cst) != 0) {
        serve(mb);
    }
}

// ---------------------------------------------------------------------------
// Public API.

void
tr_mailbox_init(tr_mailbox *mb, uint32_t bound)
{
    if (((uintptr_t)mb & 15) != 0) {
        tr__panic("tr_mailbox_init(%p): not on a 16-byte boundary", (void *)mb);
    }
    memset(mb, 0, sizeof *mb);
    atomic_init(&mb->mb_stub.l_next, NULL);
    atomic_init(&mb->mb_sys_stub.l_next, NULL);
    atomic_init(&mb->mb_head, (uintptr_t)&mb->mb_stub);
    atomic_init(&mb->mb_sys_head, (uintptr_t)&mb->mb_sys_stub);
    atomic_init(&mb->mb_len, 0);
    atomic_init(&mb->mb_lock, 0);
    atomic_init(&mb->mb_waiters, 0);
    atomic_init(&mb->mb_granted, 0);
    mb->mb_bound = bound;
    mb->mb_wait = NULL;
    mb->mb_waker = no_waker;
    mb->mb_tail = &mb->mb_stub;
    mb->mb_sys_tail = &mb->mb_sys_stub;
}

void
tr_mailbox_fini(tr_mailbox *mb, void (*drop)(tr_msg *m, void *arg), void *arg)
{
    if (atomic_load_explicit(&mb->mb_waiters, memory_order_relaxed) != 0 ||
        atomic_load_explicit(&mb->mb_granted, memory_order_relaxed) != 0) {
        tr__panic("tr_mailbox_fini(%p): senders still waiting (their drops must abandon)",
                  (void *)mb);
    }
    // No producer is left: no push is in its window, both lanes drain.
    tr_msg *m;
    while ((m = sys_pop(mb)) != NULL || (m = user_pop(mb)) != NULL) {
        if (drop != NULL) {
            drop(m, arg);
        } else {
            tr_msg_free(m);
        }
    }
    atomic_store_explicit(&mb->mb_len, 0, memory_order_relaxed);
}

bool
tr_mailbox_push(tr_mailbox *mb, tr_msg *m)
{
    // Relaxed: the count needs no order with the link (the consumer
    // subtracts only after it has popped m, which happens after this).
    atomic_fetch_add_explicit(&mb->mb_len, 1, memory_order_relaxed);
    return push_user(mb, m);
}

tr_err
tr_mailbox_try_push(tr_mailbox *mb, tr_msg *m, bool *woke)
{
    if (!fast_reserve(mb)) {
        if (woke != NULL) {
            *woke = false;
        }
        return TR_EAGAIN;
    }
    bool w = push_user(mb, m);
    if (woke != NULL) {
        *woke = w;
    }
    return TR_OK;
}

bool
tr_mailbox_push_system(tr_mailbox *mb, tr_msg *m)
{
    uintptr_t prev = lane_swap(&mb->mb_sys_head, &m->m_link);
    // The push's side of the Dekker pair with markempty: after the exchange
    // above, look for the mark (seq_cst), and take it if it is there (b).
    uintptr_t h = atomic_load_explicit(&mb->mb_head, memory_order_seq_cst);
    bool woke = false;
    tr_waker wk = no_waker;
    while ((h & MARK) != 0) {
        // Acquire (in seq_cst): pairs with markempty's CAS, for the waker.
        if (atomic_compare_exchange_weak_explicit(&mb->mb_head, &h, h & ~MARK, memory_order_seq_cst,
                                                  memory_order_seq_cst)) {
            // Read before the link, as in push_user.
            wk = mb->mb_waker;
            woke = true;
            break;
        }
    }
    lane_link(prev, &m->m_link);
    tr_wake(wk);
    return woke;
}

tr_poll
tr_mailbox_send(tr_mailbox *mb, tr_cx *cx, tr_mailbox_op *op, tr_msg *m, tr_err *err)
{
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    uint32_t state;
    if (atomic_load_explicit(&op->o_state, memory_order_relaxed) == OP_IDLE) {
        if (TR__LIKELY(fast_reserve(mb))) {
            push_user(mb, m);
            *err = TR_OK;
            return TR_READY;
        }
        // Join the line, then grant what room there is (to those ahead
        // first, perhaps to this op too).
        tr_waker w[GRANT_BATCH];
        size_t n;
        tr__mutex_lock(mb_lock(mb));
        // seq_cst: the sender's side of the Dekker pair with room_made
        // (then reserve, in grant_locked).
        atomic_fetch_add_explicit(&mb->mb_waiters, 1, memory_order_seq_cst);
        op->o_waker = tr_cx_waker(cx);
        atomic_store_explicit(&op->o_state, OP_WAITING, memory_order_relaxed);
        ring_push(mb, op);
        bool more = grant_locked(mb, op, w, &n);
        state = atomic_load_explicit(&op->o_state, memory_order_relaxed);
        if (state == OP_GRANTED) {
            atomic_store_explicit(&op->o_state, OP_IDLE, memory_order_relaxed);
            atomic_fetch_sub_explicit(&mb->mb_granted, 1, memory_order_relaxed);
        }
        tr__mutex_unlock(mb_lock(mb));
        wake_all(w, n);
        if (more) {
            serve(mb);
        }
    } else {
        tr__mutex_lock(mb_lock(mb));
        state = atomic_load_explicit(&op->o_state, memory_order_relaxed);
        if (state == OP_WAITING) {
            // Still in line (a spurious poll): keep the place, refresh the waker.
            op->o_waker = tr_cx_waker(cx);
        } else {
            TR__ASSERT(state == OP_GRANTED);
            atomic_store_explicit(&op->o_state, OP_IDLE, memory_order_relaxed);
            atomic_fetch_sub_explicit(&mb->mb_granted, 1, memory_order_relaxed);
        }
        tr__mutex_unlock(mb_lock(mb));
    }
    if (state != OP_GRANTED) {
        return TR_PENDING;
    }
    // The place granted is counted already.
    push_user(mb, m);
    *err = TR_OK;
    return TR_READY;
}

void
tr_mailbox_send_abandon(tr_mailbox *mb, tr_mailbox_op *op)
{
    if (mb == NULL || op == NULL ||
        atomic_load_explicit(&op->o_state, memory_order_relaxed) == OP_IDLE) {
        return;
    }
    tr_waker w[GRANT_BATCH];
    size_t n = 0;
    bool more = false;
    tr__mutex_lock(mb_lock(mb));
    uint32_t state = atomic_load_explicit(&op->o_state, memory_order_relaxed);
    if (state == OP_WAITING) {
        ring_unlink(mb, op);
        atomic_fetch_sub_explicit(&mb->mb_waiters, 1, memory_order_seq_cst);
    } else if (state == OP_GRANTED) {
        atomic_fetch_sub_explicit(&mb->mb_granted, 1, memory_order_relaxed);
        // Give the place back and grant it on, in one critical section: the
        // wake-up this op had passes down the line.
        atomic_fetch_sub_explicit(&mb->mb_len, 1, memory_order_seq_cst);
        more = grant_locked(mb, NULL, w, &n);
    }
    op->o_waker = no_waker;
    atomic_store_explicit(&op->o_state, OP_IDLE, memory_order_relaxed);
    tr__mutex_unlock(mb_lock(mb));
    wake_all(w, n);
    if (more) {
        serve(mb);
    }
}

tr_msg *
tr_mailbox_pop(tr_mailbox *mb)
{
    tr_msg *m = sys_pop(mb);
    if (m != NULL) {
        return m;
    }
    m = user_pop(mb);
    if (m != NULL) {
        room_made(mb, 1);
    }
    return m;
}

size_t
tr_mailbox_take(tr_mailbox *mb, tr_msg **out, size_t max)
{
    size_t n = 0;
    tr_msg *m;
    while (n < max && (m = sys_pop(mb)) != NULL) {
        out[n++] = m;
    }
    uint32_t users = 0;
    while (n < max && (m = user_pop(mb)) != NULL) {
        out[n++] = m;
        users++;
    }
    if (users > 0) {
        room_made(mb, users);
    }
    return n;
}

bool
tr_mailbox_markempty(tr_mailbox *mb, tr_waker wk)
{
    const uintptr_t stub = (uintptr_t)&mb->mb_stub;
    // The user lane first, then the system lane (the order matters: see the
    // notes on the waker). seq_cst: synchronises with the RMW that wrote
    // the head (a push's exchange, a system push's CAS).
    uintptr_t h = atomic_load_explicit(&mb->mb_head, memory_order_seq_cst);
    if (h == (stub | MARK)) {
        // Still marked: no push since the last markempty.
        if (tr_waker_eq(mb->mb_waker, wk)) {
            return true;
        }
        // Another waker: take the mark back to store it, unless a push has
        // just taken the mark (it wakes the old waker; a message is there).
        if (!atomic_compare_exchange_strong_explicit(&mb->mb_head, &h, stub, memory_order_seq_cst,
                                                     memory_order_seq_cst)) {
            return false;
        }
        h = stub;
    }
    if (h != stub || mb->mb_tail != &mb->mb_stub ||
        atomic_load_explicit(&mb->mb_stub.l_next, memory_order_acquire) != NULL || !sys_empty(mb)) {
        return false;
    }
    // No push has read the previous waker without linking since (notes).
    mb->mb_waker = wk;
    // The mark. Release (in seq_cst): the waker, for the push that takes the
    // mark (its RMW reads this). seq_cst: the write of the Dekker pair.
    if (!atomic_compare_exchange_strong_explicit(&mb->mb_head, &h, stub | MARK,
                                                 memory_order_seq_cst, memory_order_seq_cst)) {
        return false; // a user push came in
    }
    tr__hook(TR__HOOK_MAILBOX_MARKED); // tests: a push lands here
    // The read of the Dekker pair: a system push that came in meanwhile
    // might not have seen the mark.
    if (atomic_load_explicit(&mb->mb_sys_head, memory_order_seq_cst) ==
        (uintptr_t)&mb->mb_sys_stub) {
        return true;
    }
    h = stub | MARK;
    if (atomic_compare_exchange_strong_explicit(&mb->mb_head, &h, stub, memory_order_seq_cst,
                                                memory_order_seq_cst)) {
        return false; // (c): the mark is withdrawn, nobody wakes
    }
    return true; // a push took the mark (a or b) and wakes wk
}

void
tr_mailbox_set_waker(tr_mailbox *mb, tr_waker wk)
{
    if ((atomic_load_explicit(&mb->mb_head, memory_order_relaxed) & MARK) != 0 ||
        mb->mb_waker.ops != NULL) {
        tr__panic("tr_mailbox_set_waker(%p): after a markempty", (void *)mb);
    }
    mb->mb_waker = wk;
}

void
tr_mailbox_wake_consumer(tr_mailbox *mb)
{
    tr_wake(mb->mb_waker);
}

uint32_t
tr_mailbox_len(const tr_mailbox *mb)
{
    return atomic_load_explicit(&mb->mb_len, memory_order_relaxed);
}
