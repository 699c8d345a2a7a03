// troupe/select.h: wait for whichever of several awaitables is ready first
// (tokio's select!), and race tasks (the first to finish wins).
//
// In C an awaitable is a poll expression, so a select is an array of
// branches, each a poll function (with the same type as a task's poll
// function, tr_poll_fn), a cancel function and an argument, usually a
// struct in the task state that holds the branch's op and its result. For
// example, a receive with a deadline set by another task's notify:
//
//   static tr_poll recv_branch(void *a, tr_cx *cx) {
//       struct st *st = a;
//       return tr_chan_recv(st->ch, cx, &st->item, &st->err);
//   }
//   static tr_poll stop_branch(void *a, tr_cx *cx) {
//       struct st *st = a;
//       return tr_notify_wait(st->stop, cx, &st->stop_op);
//   }
//   static void stop_cancel(void *a) {
//       struct st *st = a;
//       tr_notify_wait_abandon(st->stop, &st->stop_op);
//   }
//   ...
//   tr_select_branch br[2] = {{recv_branch, NULL, st}, {stop_branch, stop_cancel, st}};
//   TR_AWAIT(st, tr_select(&st->sel, cx, br, 2, &st->winner));
//
// (tr_chan_recv needs no cancel: it holds nothing while pending.)
#ifndef TROUPE_SELECT_H
#define TROUPE_SELECT_H

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

// One branch of a select. poll is called with arg like a leaf operation
// (TR_READY when its awaitable completed, TR_PENDING after arranging a
// wake-up); NULL disables the branch (it is never polled, and still
// cancelled). cancel (may be NULL) withdraws the branch's operation, like an
// _abandon function: it must be harmless for an operation that never
// started or that finished, since every loser is cancelled, polled or not.
typedef struct tr_select_branch {
    tr_poll_fn poll;
    tr_drop_fn cancel;
    void *arg;
} tr_select_branch;

// The progress of one select; embed it in the task state, zeroed. When
// tr_select or tr_race_join returns TR_READY it holds nothing and may be
// reused at once; the one thing it keeps is where the next select starts
// polling, on purpose: a loop of selects whose first branch is
// always ready would otherwise never poll the others.
typedef struct tr_select_op {
    uint32_t sel_next;   // private: the branch to poll first next time
    uint32_t sel_active; // private: polled and not yet finished
} tr_select_op;

_Static_assert(sizeof(tr_select_op) == sizeof(uint64_t), "tr_select_op: two halves of a word");

// The winner reported when every branch is disabled.
#define TR_SELECT_NONE ((size_t)-1)

// tr_select polls the branches, starting from a different one each time
// (in turn, so that a branch that is always ready cannot starve the
// others), and stops at the first that is TR_READY: it then stores its
// index in *winner, calls the cancel function of every other branch
// exactly once, and returns TR_READY. The winner's result is wherever its
// poll function put it. With n == 0 or every branch disabled it is
// TR_READY at once with *winner TR_SELECT_NONE (after cancelling them all).
// TR_PENDING when no branch is ready; every branch polled has arranged its
// wake-up. The branches may be rebuilt on each poll (an array on the
// stack is fine) but must be the same, in the same order, for one select.
// After TR_READY, op is ready for the next select. From a task only.
// Cancellation: a task cancelled while a select is pending must call
// tr_select_abandon(op, branches, n) from its drop.
TR_API tr_poll tr_select(tr_select_op *op, tr_cx *cx, const tr_select_branch *branches, size_t n,
                         size_t *winner);

// tr_select_abandon withdraws a pending select: every branch's cancel
// function is called exactly once. A no-op for an op that has not been
// polled or whose select finished, so a drop function may call it
// unconditionally. The thread that runs the task's drop.
TR_API void tr_select_abandon(tr_select_op *op, const tr_select_branch *branches, size_t n);

// tr_race_join awaits the first of n tasks to finish: TR_READY with its
// index in *winner and its outcome in *out (the caller owns it; its handle
// is released). Every other task is then cancelled (tr_task_abort) and its
// handle released: it finishes in the background, its drop function runs,
// and it frees itself (a loser that had already finished keeps nothing:
// its result is destroyed). All n handles are empty afterwards. Empty
// handles (TR_JOIN_NONE) are skipped; when all are empty it is TR_READY at
// once with *winner TR_SELECT_NONE. TR_PENDING while none has finished. The
// tasks are polled in turn, starting from a different one each time; each
// poll costs O(n) and n budget units, so race a handful of tasks (for many,
// use a tr_group). From a task only. Cancellation: a task cancelled while
// the race is pending must call tr_race_join_abandon(joins, n) from its
// drop (or release the handles itself).
TR_API tr_poll tr_race_join(tr_select_op *op, tr_cx *cx, tr_join *joins, size_t n, size_t *winner,
                            tr_outcome *out);

// tr_race_join_abandon cancels (tr_task_abort) and releases every handle
// that is not empty, leaving them all empty. A no-op when they are all
// empty (after tr_race_join returned TR_READY), so a drop function may call
// it unconditionally. Any thread.
TR_API void tr_race_join_abandon(tr_join *joins, size_t n);

TR_END_DECLS

#endif
