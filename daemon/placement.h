// placement.h: where a job's program runs.
//
// A worker is a place that starts process actors (troupe/proc_actor.h) for
// the runner. Whatever the worker, the actor's ProcessStarted,
// ProcessOutput and ProcessExit reach the runner the same way, and a
// ProcessKill is a message to the actor's address: addresses name their
// node (troupe/actor.h), so the runner never needs to know where a job
// runs. Today trouped has one worker, itself (trd_placement_add_local: its
// runtime, the jobs' cgroups below its own). The next issue's `troupe
// worker --connect URL` adds remote ones, whose start asks the worker
// node's executor, and the runner stays as it is: it asks trd_place for a
// worker with room, starts the job there (trd_worker_start), and gives the
// room back with trd_unplace when the job's process has exited.
//
// A worker offers slots (0: no limit of its own, the local worker's); a job
// takes as many as it takes of its group, at most all of a worker's (so a
// heavy job waits for an empty worker, never forever). The groups and
// --max-running bound what runs first. One thread (the runner's) uses a
// placement.
#ifndef TRD_PLACEMENT_H
#define TRD_PLACEMENT_H

#include <stdint.h>

#include <troupe/proc_actor.h>

typedef struct trd_worker trd_worker;

typedef struct trd_worker_ops {
    // start starts the program o describes on the worker (impl: what
    // trd_placement_add was given), reporting to owner: TR_OK and *proc,
    // or an error (nothing runs). o and what it points to are the
    // caller's: copy what outlives the call.
    tr_err (*start)(void *impl, const tr_proc_opts *o, tr_actor_addr owner, tr_actor_addr *proc);
    // free releases impl when the placement goes (may be NULL).
    void (*free)(void *impl);
} trd_worker_ops;

typedef struct trd_placement trd_placement;

// trd_placement_new makes an empty placement (aborts on no memory).
trd_placement *trd_placement_new(void);

// trd_placement_free frees p, its workers and their impls.
void trd_placement_free(trd_placement *p);

// trd_placement_add adds a worker named name (copied) offering slots (0:
// no limit of its own); ops is static, impl the worker's own. Workers are
// tried in the order they were added.
trd_worker *trd_placement_add(trd_placement *p, const trd_worker_ops *ops, void *impl,
                              const char *name, uint32_t slots);

// trd_placement_add_local adds trouped itself: programs start as process
// actors of rt, in cgroups below cgroup_parent ("" or NULL: none), which
// are reused when they empty (tr_proc_opts.cgroup_reuse; the caller
// releases them, trd_cgroup_cleanup).
trd_worker *trd_placement_add_local(trd_placement *p, tr_rt *rt, const char *cgroup_parent);

// trd_place returns the first worker with room for slots (0 counts as 1;
// more than a worker offers: all of it) and counts them taken (*taken, for
// trd_unplace), or NULL when none has room now.
trd_worker *trd_place(trd_placement *p, uint32_t slots, uint32_t *taken);

// trd_placement_room reports whether trd_place(p, slots) would find one.
bool trd_placement_room(const trd_placement *p, uint32_t slots);

// trd_unplace gives back the slots trd_place took on w (its *taken).
void trd_unplace(trd_worker *w, uint32_t taken);

// trd_worker_start starts o's program on w (see trd_worker_ops.start).
tr_err trd_worker_start(trd_worker *w, const tr_proc_opts *o, tr_actor_addr owner,
                        tr_actor_addr *proc);

// trd_worker_name is w's name ("local" for trouped itself).
const char *trd_worker_name(const trd_worker *w);

// trd_worker_used is how many of w's slots are taken.
uint32_t trd_worker_used(const trd_worker *w);

#endif
