// Design notes.
//
// One waiter line, three primitives. The semaphore, the mutex and the notify
// each keep their state under one short futex mutex (tr__mutex) and their
// waiting tasks in an intrusive FIFO of tr__sync_node, the private part of
// the op the task embeds in its state. As in chan.c, no critical section
// calls out: wakers to fire are copied out under the lock (at most
// WAKE_BATCH per lock hold) and fired after the unlock. Wakers name tasks by
// key, so one fired after its task finished or moved on is a no-op at worst
// and a spurious poll at most; every await re-checks its op under the lock.
//
// Node states (n_state), all read and written under the owner's lock:
//   IDLE      zeroed, or finished: not linked, holds nothing.
//   WAITING   linked in the line; n_waker is the task to wake.
//   GRANTED   unlinked by the releasing side, which gave it what it waited
//             for (n_arg permits, or a notification) and fired its waker.
//             The task sees this on its next poll and completes.
//   PREPARED  notify only: not linked, but n_arg holds the notify_all epoch
//             it started to count from.
// Only the owning task moves its op out of IDLE; the releasing side moves
// it from WAITING to GRANTED (or to IDLE when a semaphore closes).
//
// Hand-off, not barging. A release never leaves permits lying around while
// somebody waits: it grants them to the head of the line on the spot, as
// long as the head's request fits, and stops at the first that does not
// (strict FIFO: a small request never overtakes a larger one ahead of it,
// so large ones cannot starve). Hence the invariant
//
//     line not empty  =>  s_avail < head's request,
//
// and the fast path (acquire with enough permits) is only taken when the
// line is empty. try_acquire refuses whenever somebody waits.
//
// Abandon. A drop that abandons a GRANTED op gives its permits back and runs
// the same grant loop: the permits and the wake-up pass on down the line, so
// a task cancelled just after being chosen loses nobody a wake-up. Removing
// a WAITING op may also unblock the line (it may have been the head whose
// request did not fit), so abandon runs the grant loop in both cases.
//
// The mutex is a semaphore with one permit (as tokio's): unlock is a
// release of one, handed to the next waiter. A double unlock is caught when
// it would make a second permit.
//
// Notify keeps a stored permit (n_permit, at most one) and an epoch counting
// tr_notify_all calls. notify_one grants the head waiter (flag NOTIFY_ONE),
// or stores the permit when nobody waits. notify_all bumps the epoch and
// moves the whole line onto a list on its own stack in one step, then grants
// those ops in batches (flag NOTIFY_ALL): a task that starts to wait while
// the batches go out joins the (now empty) real line and is not woken by
// this call, and a notify_one in between does not pick an op that is
// already being woken. The ops on the stack list stay WAITING until
// granted, so an abandon in between unlinks them from it, under the same
// lock. A PREPARED op is notified by any notify_all whose epoch bump it
// sees. Abandoning an op granted by notify_one passes the notification on
// (to the next waiter, or as the permit); one granted by notify_all is just
// dropped, as in tokio.
#include <string.h>

#include <troupe/sync.h>

#include "sync/sync.h"

// Wakers copied out per lock hold by the loops that wake many.
#define WAKE_BATCH 16

enum { ST_IDLE = 0, ST_WAITING = 1, ST_GRANTED = 2, ST_PREPARED = 3 };
enum { NOTIFY_ONE = 1, NOTIFY_ALL = 2 };

static const tr_waker no_waker = {NULL, NULL};

// ---------------------------------------------------------------------------
// The line: a circular doubly linked list whose sentinel lives in the object.
// All called with the owner's lock held.

static void
line_init(tr__sync_node *head)
{
    head->n_next = head;
    head->n_prev = head;
}

static bool
line_empty(const tr__sync_node *head)
{
    return head->n_next == head;
}

static void
line_push(tr__sync_node *head, tr__sync_node *n)
{
    tr__sync_node *tail = head->n_prev;
    n->n_next = head;
    n->n_prev = tail;
    tail->n_next = n;
    head->n_prev = n;
}

static void
line_unlink(tr__sync_node *n)
{
    n->n_prev->n_next = n->n_next;
    n->n_next->n_prev = n->n_prev;
    n->n_next = NULL;
    n->n_prev = NULL;
}

// line_take moves every node of src to the (empty) list dst in O(1).
static void
line_take(tr__sync_node *dst, tr__sync_node *src)
{
    if (line_empty(src)) {
        line_init(dst);
        return;
    }
    dst->n_next = src->n_next;
    dst->n_prev = src->n_prev;
    dst->n_next->n_prev = dst;
    dst->n_prev->n_next = dst;
    line_init(src);
}

// node_grant unlinks a waiting node, marks it granted and returns its waker
// for the caller to fire after the unlock. Once the lock is dropped the node
// may vanish (its task can complete), so nothing reads it afterwards.
static tr_waker
node_grant(tr__sync_node *n, uint32_t flags)
{
    TR__ASSERT(n->n_state == ST_WAITING);
    line_unlink(n);
    n->n_state = ST_GRANTED;
    n->n_flags = flags;
    tr_waker w = n->n_waker;
    n->n_waker = no_waker;
    return w;
}

static void
node_wait(tr__sync_node *head, tr__sync_node *n, tr_waker self, uint64_t arg)
{
    n->n_state = ST_WAITING;
    n->n_flags = 0;
    n->n_arg = arg;
    n->n_waker = self;
    line_push(head, n);
}

static void
node_reset(tr__sync_node *n)
{
    memset(n, 0, sizeof *n);
}

static void
fire(const tr_waker *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tr_wake(w[i]);
    }
}

// ---------------------------------------------------------------------------
// Semaphore.

struct tr_sem {
    tr__mutex s_lock;
    // All below: protected by s_lock.
    size_t s_avail;          // permits neither held nor granted
    bool s_closed;           // tr_sem_close ran
    tr__sync_node s_waiters; // sentinel of the FIFO of waiting acquires
};

struct tr_mutex {
    tr_sem m_sem; // one permit: available means unlocked
};

// sem_grant_locked grants permits to the head of the line while its request
// fits, copying up to WAKE_BATCH wakers into w. Returns how many; a full
// batch means the caller must look again after firing them.
static size_t
sem_grant_locked(tr_sem *s, tr_waker *w)
{
    size_t n = 0;
    while (n < WAKE_BATCH && !line_empty(&s->s_waiters)) {
        tr__sync_node *head = s->s_waiters.n_next;
        if (head->n_arg > s->s_avail) {
            break; // FIFO: nobody overtakes the head
        }
        s->s_avail -= (size_t)head->n_arg;
        w[n++] = node_grant(head, 0);
    }
    return n;
}

// sem_grant_unlock runs the grant loop, drops the lock (held on entry) and
// fires the wakers, batch by batch.
static void
sem_grant_unlock(tr_sem *s)
{
    for (;;) {
        tr_waker w[WAKE_BATCH];
        size_t n = sem_grant_locked(s, w);
        tr__mutex_unlock(&s->s_lock);
        fire(w, n);
        if (n < WAKE_BATCH) {
            return;
        }
        tr__mutex_lock(&s->s_lock);
    }
}

static void
sem_init(tr_sem *s, size_t permits)
{
    s->s_lock = (tr__mutex)TR__MUTEX_INIT;
    s->s_avail = permits;
    s->s_closed = false;
    line_init(&s->s_waiters);
}

static void
sem_fini(tr_sem *s)
{
    tr__mutex_lock(&s->s_lock);
    bool idle = line_empty(&s->s_waiters);
    tr__mutex_unlock(&s->s_lock);
    if (!idle) {
        tr__panic("freeing a semaphore or mutex that tasks wait on");
    }
}

static tr_poll
sem_acquire(tr_sem *s, tr_cx *cx, tr__sync_node *op, size_t n, tr_err *err)
{
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    tr__mutex_lock(&s->s_lock);
    switch (op->n_state) {
    case ST_GRANTED:
        // The permits were set aside for us by a release (or an abandon).
        node_reset(op);
        tr__mutex_unlock(&s->s_lock);
        *err = TR_OK;
        return TR_READY;
    case ST_WAITING:
        // Still in line (a spurious poll): keep the place, refresh the waker.
        op->n_waker = tr_cx_waker(cx);
        tr__mutex_unlock(&s->s_lock);
        return TR_PENDING;
    default:
        TR__ASSERT(op->n_state == ST_IDLE);
        break;
    }
    if (s->s_closed) {
        tr__mutex_unlock(&s->s_lock);
        *err = TR_ECLOSED;
        return TR_READY;
    }
    if (n == 0 || (line_empty(&s->s_waiters) && s->s_avail >= n)) {
        s->s_avail -= n;
        tr__mutex_unlock(&s->s_lock);
        *err = TR_OK;
        return TR_READY;
    }
    node_wait(&s->s_waiters, op, tr_cx_waker(cx), n);
    tr__mutex_unlock(&s->s_lock);
    return TR_PENDING;
}

static void
sem_abandon(tr_sem *s, tr__sync_node *op)
{
    tr__mutex_lock(&s->s_lock);
    switch (op->n_state) {
    case ST_WAITING:
        line_unlink(op);
        break;
    case ST_GRANTED:
        // Chosen but not yet run: the permits go back, then down the line.
        s->s_avail += (size_t)op->n_arg;
        break;
    default:
        node_reset(op);
        tr__mutex_unlock(&s->s_lock);
        return;
    }
    node_reset(op);
    if (s->s_closed) {
        tr__mutex_unlock(&s->s_lock);
        return;
    }
    sem_grant_unlock(s);
}

static tr_err
sem_try_acquire(tr_sem *s, size_t n)
{
    tr_err rv = TR_EAGAIN;
    tr__mutex_lock(&s->s_lock);
    if (s->s_closed) {
        rv = TR_ECLOSED;
    } else if (n == 0 || (line_empty(&s->s_waiters) && s->s_avail >= n)) {
        s->s_avail -= n;
        rv = TR_OK;
    }
    tr__mutex_unlock(&s->s_lock);
    return rv;
}

tr_err
tr_sem_new(size_t permits, tr_sem **out)
{
    if (out == NULL) {
        return TR_EINVAL;
    }
    *out = NULL;
    if (permits > TR_SEM_MAX_PERMITS) {
        return TR_EINVAL;
    }
    tr_sem *s = tr__alloc(sizeof *s);
    sem_init(s, permits);
    *out = s;
    return TR_OK;
}

void
tr_sem_free(tr_sem *s)
{
    if (s == NULL) {
        return;
    }
    sem_fini(s);
    tr__free(s, sizeof *s);
}

tr_poll
tr_sem_acquire(tr_sem *s, tr_cx *cx, tr_sem_acquire_op *op, size_t n, tr_err *err)
{
    return sem_acquire(s, cx, &op->sa_node, n, err);
}

void
tr_sem_acquire_abandon(tr_sem *s, tr_sem_acquire_op *op)
{
    if (s == NULL || op == NULL) {
        return;
    }
    sem_abandon(s, &op->sa_node);
}

tr_err
tr_sem_try_acquire(tr_sem *s, size_t n)
{
    return sem_try_acquire(s, n);
}

void
tr_sem_release(tr_sem *s, size_t n)
{
    if (n == 0) {
        return;
    }
    tr__mutex_lock(&s->s_lock);
    TR__ASSERT(n <= TR_SEM_MAX_PERMITS && s->s_avail <= TR_SEM_MAX_PERMITS - n);
    s->s_avail += n;
    sem_grant_unlock(s);
}

size_t
tr_sem_available(tr_sem *s)
{
    tr__mutex_lock(&s->s_lock);
    size_t n = s->s_avail;
    tr__mutex_unlock(&s->s_lock);
    return n;
}

void
tr_sem_close(tr_sem *s)
{
    bool more = true;
    while (more) {
        tr_waker w[WAKE_BATCH];
        size_t n = 0;
        tr__mutex_lock(&s->s_lock);
        s->s_closed = true;
        while (n < WAKE_BATCH && !line_empty(&s->s_waiters)) {
            // Back to idle: its next poll sees the semaphore closed.
            tr__sync_node *head = s->s_waiters.n_next;
            w[n++] = node_grant(head, 0);
            node_reset(head);
        }
        more = !line_empty(&s->s_waiters);
        tr__mutex_unlock(&s->s_lock);
        fire(w, n);
    }
}

// ---------------------------------------------------------------------------
// Mutex.

tr_err
tr_mutex_new(tr_mutex **out)
{
    if (out == NULL) {
        return TR_EINVAL;
    }
    tr_mutex *m = tr__alloc(sizeof *m);
    sem_init(&m->m_sem, 1);
    *out = m;
    return TR_OK;
}

void
tr_mutex_free(tr_mutex *m)
{
    if (m == NULL) {
        return;
    }
    sem_fini(&m->m_sem);
    tr__free(m, sizeof *m);
}

tr_poll
tr_mutex_lock(tr_mutex *m, tr_cx *cx, tr_mutex_lock_op *op)
{
    tr_err err; // a mutex is never closed
    return sem_acquire(&m->m_sem, cx, &op->ml_node, 1, &err);
}

void
tr_mutex_lock_abandon(tr_mutex *m, tr_mutex_lock_op *op)
{
    if (m == NULL || op == NULL) {
        return;
    }
    sem_abandon(&m->m_sem, &op->ml_node);
}

tr_err
tr_mutex_try_lock(tr_mutex *m)
{
    return sem_try_acquire(&m->m_sem, 1) == TR_OK ? TR_OK : TR_EAGAIN;
}

void
tr_mutex_unlock(tr_mutex *m)
{
    tr_sem *s = &m->m_sem;
    tr__mutex_lock(&s->s_lock);
    if (s->s_avail != 0) {
        tr__mutex_unlock(&s->s_lock);
        tr__panic("tr_mutex_unlock: the mutex is not locked");
    }
    s->s_avail = 1;
    sem_grant_unlock(s);
}

bool
tr_mutex_is_locked(tr_mutex *m)
{
    return tr_sem_available(&m->m_sem) == 0;
}

// ---------------------------------------------------------------------------
// Notify.

struct tr_notify {
    tr__mutex n_lock;
    // All below: protected by n_lock.
    bool n_permit;           // a notify_one found nobody waiting
    uint64_t n_epoch;        // tr_notify_all calls so far
    tr__sync_node n_waiters; // sentinel of the FIFO of waiting ops
};

// notify_one_locked delivers one notification: to the head waiter (whose
// waker it returns) or as the stored permit.
static tr_waker
notify_one_locked(tr_notify *n)
{
    if (line_empty(&n->n_waiters)) {
        n->n_permit = true;
        return no_waker;
    }
    return node_grant(n->n_waiters.n_next, NOTIFY_ONE);
}

tr_err
tr_notify_new(tr_notify **out)
{
    if (out == NULL) {
        return TR_EINVAL;
    }
    tr_notify *n = tr__alloc(sizeof *n);
    n->n_lock = (tr__mutex)TR__MUTEX_INIT;
    n->n_permit = false;
    n->n_epoch = 0;
    line_init(&n->n_waiters);
    *out = n;
    return TR_OK;
}

void
tr_notify_free(tr_notify *n)
{
    if (n == NULL) {
        return;
    }
    tr__mutex_lock(&n->n_lock);
    bool idle = line_empty(&n->n_waiters);
    tr__mutex_unlock(&n->n_lock);
    if (!idle) {
        tr__panic("tr_notify_free: tasks wait on it");
    }
    tr__free(n, sizeof *n);
}

void
tr_notify_one(tr_notify *n)
{
    tr__mutex_lock(&n->n_lock);
    tr_waker w = notify_one_locked(n);
    tr__mutex_unlock(&n->n_lock);
    tr_wake(w);
}

void
tr_notify_all(tr_notify *n)
{
    // The line moves to this list in one step: see the notes.
    tr__sync_node mine;
    tr__mutex_lock(&n->n_lock);
    n->n_epoch++;
    line_take(&mine, &n->n_waiters);
    for (;;) {
        tr_waker w[WAKE_BATCH];
        size_t k = 0;
        while (k < WAKE_BATCH && !line_empty(&mine)) {
            w[k++] = node_grant(mine.n_next, NOTIFY_ALL);
        }
        bool more = !line_empty(&mine);
        tr__mutex_unlock(&n->n_lock);
        fire(w, k);
        if (!more) {
            return;
        }
        tr__mutex_lock(&n->n_lock);
    }
}

void
tr_notify_wait_prepare(tr_notify *n, tr_notify_wait_op *op)
{
    tr__sync_node *o = &op->nw_node;
    tr__mutex_lock(&n->n_lock);
    if (o->n_state == ST_IDLE) {
        o->n_state = ST_PREPARED;
        o->n_arg = n->n_epoch;
    }
    tr__mutex_unlock(&n->n_lock);
}

tr_poll
tr_notify_wait(tr_notify *n, tr_cx *cx, tr_notify_wait_op *op)
{
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    tr__sync_node *o = &op->nw_node;
    tr__mutex_lock(&n->n_lock);
    switch (o->n_state) {
    case ST_GRANTED:
        node_reset(o);
        tr__mutex_unlock(&n->n_lock);
        return TR_READY;
    case ST_WAITING:
        o->n_waker = tr_cx_waker(cx);
        tr__mutex_unlock(&n->n_lock);
        return TR_PENDING;
    case ST_PREPARED:
        if (o->n_arg != n->n_epoch) {
            // A notify_all came after the prepare.
            node_reset(o);
            tr__mutex_unlock(&n->n_lock);
            return TR_READY;
        }
        break;
    default:
        TR__ASSERT(o->n_state == ST_IDLE);
        break;
    }
    if (n->n_permit) {
        n->n_permit = false;
        node_reset(o);
        tr__mutex_unlock(&n->n_lock);
        return TR_READY;
    }
    node_wait(&n->n_waiters, o, tr_cx_waker(cx), n->n_epoch);
    tr__mutex_unlock(&n->n_lock);
    return TR_PENDING;
}

void
tr_notify_wait_abandon(tr_notify *n, tr_notify_wait_op *op)
{
    if (n == NULL || op == NULL) {
        return;
    }
    tr__sync_node *o = &op->nw_node;
    tr_waker w = no_waker;
    tr__mutex_lock(&n->n_lock);
    if (o->n_state == ST_WAITING) {
        line_unlink(o);
    } else if (o->n_state == ST_GRANTED && o->n_flags == NOTIFY_ONE) {
        // Delivered but never seen: pass it on.
        w = notify_one_locked(n);
    }
    node_reset(o);
    tr__mutex_unlock(&n->n_lock);
    tr_wake(w);
}
