// troupe/group.h: task groups. Start tasks into a group instead of holding
// their join handles one by one; then await them all (tr_group_join_all),
// take their outcomes one at a time in the order they finish
// (tr_group_join_next, as tokio's JoinSet), or cancel them all
// (tr_group_cancel). With TR_GROUP_CANCEL_ON_ERROR, the first member that
// fails cancels the rest (structured concurrency: "all or nothing").
//
// Failure. A member fails when it is cancelled (its outcome is
// TR_ECANCELED), or when it completes with a plain (not boxed) result whose
// u64 is nonzero: by convention a member returns a tr_err,
// tr_cx_set_result_u64(cx, err), and TR_OK (0) is success. A group made
// with TR_GROUP_VALUES treats results as plain values instead: only a
// cancelled member fails. A boxed result (tr_cx_set_result_ptr) is always
// a success.
//
// The group hears of each completion as it happens (it registers itself as
// each member's joiner), so the cost per member is O(1), whatever the
// number of members, and "first" means first to complete.
#ifndef TROUPE_GROUP_H
#define TROUPE_GROUP_H

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

typedef struct tr_group tr_group;

// Flags for tr_group_new.
enum {
    // The first member to fail cancels every other member, and every member
    // started into the group afterwards (until the group is empty again).
    TR_GROUP_CANCEL_ON_ERROR = 1u << 0,
    // Member results are values, not tr_err codes: only a cancelled member
    // counts as failed.
    TR_GROUP_VALUES = 1u << 1,
};

// tr_group_new creates an empty group for tasks of rt. flags is a mix of
// TR_GROUP_* (TR_EINVAL for an unknown flag). Any thread. The caller owns
// the group and frees it with tr_group_free.
TR_API tr_err tr_group_new(tr_rt *rt, unsigned flags, tr_group **out);

// tr_group_free releases the group. Members still running are cancelled
// (their drop functions run, on a worker) and the group's memory goes when
// the last of them has finished; outcomes nobody collected are destroyed
// (boxed results' destructors run, on the calling thread). No thread may
// be blocked in tr_group_wait on it; a task that was awaiting it and got
// cancelled is fine. Any thread, never blocks; g must not be used again.
// It may be called after tr_rt_free of the group's runtime (which has then
// cancelled every member).
TR_API void tr_group_free(tr_group *g);

// tr_group_start starts a task prepared with tr_task_new (for the group's
// runtime) as a member of g, instead of tr_task_start. Ownership of state
// passes to the runtime and the group holds its join handle. *id (may be
// NULL) receives the member's task id, which tr_group_join_next reports
// with its outcome. If the group has been cancelled (tr_group_cancel, or a
// failure with TR_GROUP_CANCEL_ON_ERROR) and has not yet been emptied by a
// join, the member is cancelled before it is ever polled: its drop function
// runs and it completes as TR_ECANCELED. Same thread as the tr_task_new
// that made the task (as tr_task_start). Returns TR_OK, or TR_ESHUTDOWN
// when the runtime refused the start (a shutdown was requested; see
// tr_task_start): the task's drop has run, it is not a member and *id is
// zero.
TR_API tr_err tr_group_start(tr_group *g, void *state, tr_task_id *id);

// tr_group_spawn makes a task as tr_spawn does (spec, init, arg) and starts
// it as a member of g, as tr_group_start does. TR_OK and *id (may be NULL),
// or tr_spawn's errors with the same meaning for who owns what arg handed
// over: TR_EINVAL, TR_EEXHAUSTED, TR_ESHUTDOWN (init has not run) or
// TR_ECANCELED (refused after init ran; the drop has run). Any thread.
TR_API tr_err tr_group_spawn(tr_group *g, const tr_task_spec *spec,
                             void (*init)(void *state, void *arg), void *arg, tr_task_id *id);

// tr_group_join_all awaits every member: TR_READY when no member is left
// running, with *err the first failure since the group was last emptied
// (TR_OK if none: see the header notes for what fails). The outcomes of
// finished members that tr_group_join_next did not take are destroyed, and
// the group is empty again and forgets its failure and cancelled state: it
// can be used for a new batch. TR_PENDING while members run. One task at a
// time awaits a group. A leaf operation that charges the poll budget.
// Cancellation-safe: a task cancelled while it awaits the group needs no
// cleanup for the wait (the members keep running until tr_group_cancel or
// tr_group_free).
TR_API tr_poll tr_group_join_all(tr_group *g, tr_cx *cx, tr_err *err);

// tr_group_join_next awaits the next member to finish, in completion order:
// TR_READY with *err TR_OK, its outcome in *out (the caller owns it:
// tr_outcome_fini releases a boxed result) and, when id is not NULL, its
// task id in *id; or TR_READY with *err TR_EEMPTY when the group has no
// member left (none running, none uncollected), which also resets its
// failure and cancelled state as join_all does. TR_PENDING while members
// run and none has finished. One task at a time awaits a group. A leaf
// operation that charges the poll budget. Cancellation-safe: nothing is
// taken from the group unless it returns TR_READY.
TR_API tr_poll tr_group_join_next(tr_group *g, tr_cx *cx, tr_outcome *out, tr_task_id *id,
                                  tr_err *err);

// tr_group_wait is tr_group_join_all for a plain thread: it blocks until no
// member is left running, destroys the uncollected outcomes and stores the
// first failure in *err (may be NULL). Returns TR_OK, or TR_EDEADLOCK at
// once from a worker thread of any runtime (the group is left as it was).
TR_API tr_err tr_group_wait(tr_group *g, tr_err *err);

// tr_group_cancel cancels every member still running (tr_task_cancel on
// each: they complete as TR_ECANCELED, their drop functions run on a
// worker) and every member started later, until a join finds the group
// empty. Members that complete before the cancel reaches them keep their
// result. Any thread, never blocks; await tr_group_join_all to know they
// are all done.
TR_API void tr_group_cancel(tr_group *g);

// tr_group_len returns the members started and not yet collected (running,
// or finished with an outcome waiting for tr_group_join_next). A snapshot;
// any thread.
TR_API size_t tr_group_len(tr_group *g);

// tr_group_running returns the members that have not finished. A snapshot;
// any thread.
TR_API size_t tr_group_running(tr_group *g);

TR_END_DECLS

#endif
