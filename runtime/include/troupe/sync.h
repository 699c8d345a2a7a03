// troupe/sync.h: synchronisation between tasks: an async mutex, a counting
// semaphore and a notification primitive (tr_notify, as tokio's Notify).
//
// All three are fair: tasks that wait are served strictly in the order they
// started waiting, and a newcomer (or a try_ call) never overtakes a task in
// line. Waiting is an awaitable that keeps its place in line in an op struct
// the caller embeds in its task state. A task cancelled while it waits must
// call the matching _abandon function from its drop function: what had
// already been granted to it (a permit, the lock, a notification) passes on
// to the next in line, so nothing is lost and nobody is left waiting. The
// non-waiting calls (release, unlock, notify, try_) work from any thread.
#ifndef TROUPE_SYNC_H
#define TROUPE_SYNC_H

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

// The place of one waiting task in a line. It is embedded in the op structs
// below, which must live in the waiting task's state (or anywhere that
// outlives the wait). Private: sync.c reads and writes it under the lock of
// the object waited on; zero it (tr_task_new's zeroed state does) before the
// first use.
typedef struct tr__sync_node {
    struct tr__sync_node *n_next; // private
    struct tr__sync_node *n_prev; // private
    tr_waker n_waker;             // private
    uint64_t n_arg;               // private
    uint32_t n_state;             // private
    uint32_t n_flags;             // private
} tr__sync_node;

_Static_assert(sizeof(tr__sync_node) == 4 * sizeof(void *) + sizeof(uint64_t) + 8,
               "tr__sync_node: two links, a waker, a word and two halves");

// ---------------------------------------------------------------------------
// Semaphore: a count of permits. Acquiring takes n permits (waiting in line
// until they are there), releasing gives permits back (or new ones). Waiters
// are served first come, first served: a large request at the head of the
// line holds back smaller ones behind it, so it cannot be starved.

typedef struct tr_sem tr_sem;

// An acquire in progress; embed it in the task state, zeroed. Back to its
// zeroed state when tr_sem_acquire returns TR_READY.
typedef struct tr_sem_acquire_op {
    tr__sync_node sa_node; // private: this task's place in the line
} tr_sem_acquire_op;

_Static_assert(sizeof(tr_sem_acquire_op) == sizeof(tr__sync_node),
               "tr_sem_acquire_op: one tr__sync_node");

// The most permits a semaphore holds.
#define TR_SEM_MAX_PERMITS (SIZE_MAX / 2)

// tr_sem_new creates a semaphore holding permits permits (at most
// TR_SEM_MAX_PERMITS, else TR_EINVAL). Any thread. The caller owns it and
// frees it with tr_sem_free.
TR_API tr_err tr_sem_new(size_t permits, tr_sem **out);

// tr_sem_free frees a semaphore. Nobody may be waiting on it (a bug: it
// panics); permits still held by tasks are forgotten. Any thread.
TR_API void tr_sem_free(tr_sem *s);

// tr_sem_acquire awaits n permits: TR_READY with *err TR_OK (the caller now
// holds n permits, to give back with tr_sem_release) or TR_ECLOSED (the
// semaphore was closed; nothing acquired). TR_PENDING while the task waits:
// op holds its place in line and must not move or be reused until TR_READY.
// n must be the same on every poll of one acquire; n == 0 is ready at once.
// A request for more permits than will ever be released waits until the
// semaphore is closed. From a task only; a leaf operation that charges the
// poll budget. Cancellation: a task cancelled while an acquire is pending
// must call tr_sem_acquire_abandon(s, op) from its drop; permits already
// granted to op go back to the semaphore and on to the next in line.
TR_API tr_poll tr_sem_acquire(tr_sem *s, tr_cx *cx, tr_sem_acquire_op *op, size_t n, tr_err *err);

// tr_sem_acquire_abandon withdraws a pending acquire: it leaves the line,
// and permits granted to it (the task was woken but had not yet seen them)
// are handed to the next waiter or returned. A no-op for an idle or
// completed op and when s or op is NULL, so a drop function may call it
// unconditionally. It does not release permits that tr_sem_acquire has
// returned (TR_READY/TR_OK): those belong to the caller. Any thread.
TR_API void tr_sem_acquire_abandon(tr_sem *s, tr_sem_acquire_op *op);

// tr_sem_try_acquire takes n permits if it can without waiting: TR_OK,
// TR_EAGAIN (too few permits, or tasks waiting in line ahead) or
// TR_ECLOSED. Any thread, never blocks.
TR_API tr_err tr_sem_try_acquire(tr_sem *s, size_t n);

// tr_sem_release adds n permits and wakes the waiters they satisfy, in
// order. Any thread (tasks, plain threads, callbacks), never blocks. Adding
// beyond TR_SEM_MAX_PERMITS is a bug (panic).
TR_API void tr_sem_release(tr_sem *s, size_t n);

// tr_sem_available returns the permits nobody holds or has been granted (a
// snapshot). Any thread.
TR_API size_t tr_sem_available(tr_sem *s);

// tr_sem_close closes the semaphore: every waiting acquire completes with
// TR_ECLOSED, and so do later ones and tr_sem_try_acquire. An acquire that
// had already been granted its permits before the close still completes
// with TR_OK. Releases still count. Idempotent; any thread.
TR_API void tr_sem_close(tr_sem *s);

// ---------------------------------------------------------------------------
// Mutex: mutual exclusion between tasks, held across awaits. Unlocking
// hands the lock straight to the task that has waited longest (no barging),
// so nobody starves. The mutex guards no data of its own: keep the data
// next to it.

typedef struct tr_mutex tr_mutex;

// A lock in progress; embed it in the task state, zeroed. Back to its
// zeroed state when tr_mutex_lock returns TR_READY.
typedef struct tr_mutex_lock_op {
    tr__sync_node ml_node; // private: this task's place in the line
} tr_mutex_lock_op;

_Static_assert(sizeof(tr_mutex_lock_op) == sizeof(tr__sync_node),
               "tr_mutex_lock_op: one tr__sync_node");

// tr_mutex_new creates an unlocked mutex. Any thread. The caller owns it
// and frees it with tr_mutex_free.
TR_API tr_err tr_mutex_new(tr_mutex **out);

// tr_mutex_free frees an unlocked mutex that nobody waits on (a waiter is
// a bug: it panics). Any thread.
TR_API void tr_mutex_free(tr_mutex *m);

// tr_mutex_lock awaits the lock: TR_READY once the calling task holds it.
// It never fails (a mutex cannot be closed), so it has no error
// out-parameter.
// TR_PENDING while it waits in line: op holds its place and must not move
// or be reused until TR_READY. From a task only; a leaf operation that
// charges the poll budget. Not reentrant: a task that locks a mutex it
// holds waits forever. Cancellation: a task cancelled while a lock is
// pending must call tr_mutex_lock_abandon(m, op) from its drop (a lock
// already handed to op passes to the next waiter); a task cancelled while
// it holds the lock must unlock it from its drop (keep a flag in the state).
TR_API tr_poll tr_mutex_lock(tr_mutex *m, tr_cx *cx, tr_mutex_lock_op *op);

// tr_mutex_lock_abandon withdraws a pending lock; if the lock had already
// been handed to op, it passes to the next waiter (or the mutex becomes
// unlocked). A no-op for an idle or completed op and when m or op is NULL.
// It does not unlock a lock that tr_mutex_lock returned. Any thread.
TR_API void tr_mutex_lock_abandon(tr_mutex *m, tr_mutex_lock_op *op);

// tr_mutex_try_lock takes the lock if it is free and nobody waits: TR_OK or
// TR_EAGAIN (a lock would wait). Any thread, never blocks.
TR_API tr_err tr_mutex_try_lock(tr_mutex *m);

// tr_mutex_unlock releases the lock, handing it to the longest waiter, if
// any, and waking it. The holder calls it; it need not be on the thread
// that locked (a lock belongs to a task, which may move between workers,
// or may be handed to a plain thread). Unlocking an unlocked mutex is a bug
// (panic). Any thread, never blocks.
TR_API void tr_mutex_unlock(tr_mutex *m);

// tr_mutex_is_locked reports whether the mutex is held (or handed to a
// waiter that has not run yet). A snapshot; any thread.
TR_API bool tr_mutex_is_locked(tr_mutex *m);

// ---------------------------------------------------------------------------
// Notify: wakes tasks that wait for "something changed", as tokio's Notify.
// tr_notify_one wakes the longest waiter, or, when nobody waits, stores one
// permit that the next wait consumes at once (so a notification sent just
// before a task starts to wait is not lost). tr_notify_all wakes every task
// waiting at that moment and stores nothing.
//
// The usual loop re-checks the condition after each wake-up; to make it
// race-free against tr_notify_all from another thread, prepare the op
// before checking the condition:
//
//   for (;;) {
//       tr_notify_wait_prepare(n, &st->wait);
//       if (condition()) { tr_notify_wait_abandon(n, &st->wait); break; }
//       TR_AWAIT(st, tr_notify_wait(n, cx, &st->wait));
//   }

typedef struct tr_notify tr_notify;

// A wait in progress; embed it in the task state, zeroed. Back to its
// zeroed state when tr_notify_wait returns TR_READY.
typedef struct tr_notify_wait_op {
    tr__sync_node nw_node; // private: this task's place in the line
} tr_notify_wait_op;

_Static_assert(sizeof(tr_notify_wait_op) == sizeof(tr__sync_node),
               "tr_notify_wait_op: one tr__sync_node");

// tr_notify_new creates a notify with no stored permit. Any thread. The
// caller owns it and frees it with tr_notify_free.
TR_API tr_err tr_notify_new(tr_notify **out);

// tr_notify_free frees a notify nobody waits on (a waiter is a bug: it
// panics). Any thread.
TR_API void tr_notify_free(tr_notify *n);

// tr_notify_one wakes the task that has waited longest; when nobody waits
// it stores a permit (at most one: notifying twice stores one). Any thread,
// never blocks.
TR_API void tr_notify_one(tr_notify *n);

// tr_notify_all wakes every task waiting now, and every op prepared with
// tr_notify_wait_prepare before this call; it stores no permit and does not
// consume one. Any thread, never blocks.
TR_API void tr_notify_all(tr_notify *n);

// tr_notify_wait_prepare makes op count as waiting for tr_notify_all from
// now on, before its first poll (see the loop above). Optional: a zeroed op
// starts to count at its first poll. The op is then pending: abandon it
// (tr_notify_wait_abandon) if the task decides not to wait. Any thread.
TR_API void tr_notify_wait_prepare(tr_notify *n, tr_notify_wait_op *op);

// tr_notify_wait awaits a notification (it never fails, so it has no error
// out-parameter): TR_READY when tr_notify_one chose
// this op, a stored permit was consumed, or tr_notify_all came after the op
// started to wait (or was prepared). TR_PENDING while it waits: op holds its
// place in line and must not move or be reused until TR_READY. From a task
// only; a leaf operation that charges the poll budget. Cancellation: a task
// cancelled while a wait is pending must call tr_notify_wait_abandon(n, op)
// from its drop; a tr_notify_one already delivered to op passes on to the
// next waiter (or is stored as the permit).
TR_API tr_poll tr_notify_wait(tr_notify *n, tr_cx *cx, tr_notify_wait_op *op);

// tr_notify_wait_abandon withdraws a pending or prepared wait; a
// notification from tr_notify_one that op received but had not yet seen
// passes on. A no-op for an idle or completed op and when n or op is NULL,
// so a drop function may call it unconditionally. Any thread.
TR_API void tr_notify_wait_abandon(tr_notify *n, tr_notify_wait_op *op);

TR_END_DECLS

#endif
