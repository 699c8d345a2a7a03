// Design notes.
//
// A select owns no memory and takes no lock: its only state is the
// tr_select_op in the task (where to start the next round and whether a
// round is in progress). Each poll tries the branches once, starting from
// sel_next and wrapping around, then moves sel_next on by one, so a branch that
// is always ready wins at most one round in n when the others are ready
// too (tokio picks the start at random; turns are as fair and
// reproducible). The first TR_READY ends the round: the other branches are
// cancelled right away, in index order, each exactly once. Branches after
// the winner in this round's order were not polled this time, but may hold
// an operation from an earlier poll, and those before it have just
// registered wake-ups, so all of them are cancelled alike; cancel functions
// are abandon functions, harmless on an idle op.
//
// Exactly once: sel_active is set by the first poll of a round and cleared
// when the round ends (winner found, losers cancelled) or is abandoned, and
// only a set sel_active makes tr_select_abandon cancel anything. A round that
// ends in its first poll never sets it.
//
// tr_race_join is the same loop over join handles, with the tasks as the
// branches: a loser is aborted and its handle released, which detaches it.
// Each tr_join_poll of a pending task re-registers the racer's waker (a
// no-op when it is already there), so a poll costs O(n).
#include <troupe/select.h>

#include "sync/sync.h"

tr_poll
tr_select(tr_select_op *op, tr_cx *cx, const tr_select_branch *branches, size_t n, size_t *winner)
{
    TR__ASSERT(n < UINT32_MAX);
    size_t start = op->sel_next < n ? op->sel_next : 0;
    size_t won = TR_SELECT_NONE;
    bool pending = false;
    for (size_t k = 0; k < n; k++) {
        size_t i = start + k < n ? start + k : start + k - n;
        if (branches[i].poll == NULL) {
            continue;
        }
        if (branches[i].poll(branches[i].arg, cx) == TR_READY) {
            won = i;
            break;
        }
        pending = true;
    }
    op->sel_next = (uint32_t)(n > 0 ? (start + 1) % n : 0);
    if (won == TR_SELECT_NONE && pending) {
        op->sel_active = 1;
        return TR_PENDING;
    }
    // A winner, or every branch disabled: the round ends.
    op->sel_active = 0;
    for (size_t i = 0; i < n; i++) {
        if (i != won && branches[i].cancel != NULL) {
            branches[i].cancel(branches[i].arg);
        }
    }
    *winner = won;
    return TR_READY;
}

void
tr_select_abandon(tr_select_op *op, const tr_select_branch *branches, size_t n)
{
    if (op == NULL || !op->sel_active) {
        return;
    }
    op->sel_active = 0;
    for (size_t i = 0; i < n; i++) {
        if (branches[i].cancel != NULL) {
            branches[i].cancel(branches[i].arg);
        }
    }
}

tr_poll
tr_race_join(tr_select_op *op, tr_cx *cx, tr_join *joins, size_t n, size_t *winner, tr_outcome *out)
{
    TR__ASSERT(n < UINT32_MAX);
    size_t start = op->sel_next < n ? op->sel_next : 0;
    size_t won = TR_SELECT_NONE;
    bool pending = false;
    for (size_t k = 0; k < n; k++) {
        size_t i = start + k < n ? start + k : start + k - n;
        if (tr_join_id(&joins[i]).id == 0) {
            continue;
        }
        if (tr_join_poll(&joins[i], cx, out) == TR_READY) {
            won = i;
            break;
        }
        pending = true;
    }
    op->sel_next = (uint32_t)(n > 0 ? (start + 1) % n : 0);
    if (won == TR_SELECT_NONE && pending) {
        op->sel_active = 1;
        return TR_PENDING;
    }
    op->sel_active = 0;
    // The winner's handle was released and emptied by tr_join_poll.
    tr_race_join_abandon(joins, n);
    *winner = won;
    return TR_READY;
}

void
tr_race_join_abandon(tr_join *joins, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (tr_join_id(&joins[i]).id != 0) {
            (void)tr_task_abort(&joins[i]);
            tr_join_release(&joins[i]);
        }
    }
}
