// exec.h: the runtime's internals shared by task.c and exec.c: the runtime
// and worker structs, the poll context, the run-queue ops table that the
// schedulers will implement, and the executor's command messages.
#ifndef TR_CORE_EXEC_H
#define TR_CORE_EXEC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <troupe/rt.h>
#include <troupe/task.h>
#include <troupe/v1/executor.pb-c.h>

#include "base.h"
#include "pool.h"

typedef struct tr__worker tr__worker;

// A run-queue ops table: the seam the scheduler issue widens into full
// schedulers (round robin, work stealing, hybrid). Only the worker that
// owns a queue calls push/pop on it.
typedef struct tr__sched_ops {
    const char *name;
    void (*push)(tr__worker *w, tr__slot *s); // a task became runnable here
    tr__slot *(*pop)(tr__worker *w);          // next task, or NULL
    bool (*empty)(const tr__worker *w);
} tr__sched_ops;

extern const tr__sched_ops tr__sched_fifo TR__HIDDEN;

// An executor command: the protobuf-c message is the in-memory form, with
// its body embedded so that one allocation carries it. Linked into the
// executor's inbox (a multi-producer stack taken whole by the executor).
typedef struct tr__cmd {
    struct tr__cmd *c_next;
    Troupe__V1__ExecutorCommand c_msg;
    union {
        Troupe__V1__Spawn spawn;
        Troupe__V1__Cancel cancel;
        Troupe__V1__Shutdown shutdown;
    } c_body;
} tr__cmd;

struct tr__worker {
    tr_rt *w_rt;
    unsigned w_index;
    // The FIFO run queue (owner only).
    tr__slot *w_head;
    tr__slot *w_tail;
    // Coarse clock for the dump: ms since the runtime started, refreshed
    // every few dozen polls and after parking (owner only).
    uint32_t w_now_ms;
    uint32_t w_tick;
    // Counters: written by the owner, read by anyone (relaxed).
    _Atomic uint64_t w_polls;
    _Atomic uint64_t w_spawned;
    _Atomic uint64_t w_completed;
    _Atomic uint64_t w_cancelled;
    _Atomic uint64_t w_commands;
    _Atomic uint64_t w_parks;
};

// Shutdown progress, in r_shutdown.
enum { SD_NONE = 0, SD_REQUESTED = 1, SD_CANCELLING = 2, SD_DONE = 3 };

// Parker states, in r_park.
enum { PARK_EMPTY = 0, PARK_PARKED = 1, PARK_NOTIFIED = 2 };

struct tr_rt {
    tr_rt_config r_cfg;
    tr__pool r_pool;
    const tr__sched_ops *r_sched;
    unsigned r_nworkers;
    tr__worker *r_workers;
    uint64_t r_start_ns;

    // The executor's inbox: commands from any thread. CAS push (release),
    // taken whole by the executor (acquire exchange).
    _Atomic(tr__cmd *) r_inbox;
    // Tasks woken from outside the runtime: same discipline as r_inbox.
    _Atomic(tr__slot *) r_inject;
    // Worker 0's parker; see park()/unpark() in exec.c.
    _Atomic uint32_t r_park;

    // Shutdown state (SD_*), set by tr_rt_shutdown (any thread) and moved
    // on by the executor. Read by tr_task_new to refuse spawns.
    _Atomic int r_shutdown;
    // Executor-owned: deadline of a graceful shutdown (0: none).
    uint64_t r_deadline_ns;
    // Set while a thread is inside tr_rt_block_on.
    _Atomic int r_in_block_on;
    // Tasks started from outside the runtime (counted at start).
    _Atomic uint64_t r_ext_spawned;
};

// The context of one poll, on the worker's stack.
struct tr_cx {
    tr_rt *cx_rt;
    tr__worker *cx_w;
    tr__slot *cx_slot;
    uint64_t cx_key;
    uint32_t cx_budget;
    bool cx_yielded; // the task asked to be polled again (yield, budget)
    bool cx_boxed;   // the result is {ptr, dtor}
};

// The worker the calling thread is, or NULL on a thread outside every
// runtime. One initial-exec TLS pointer, as DESIGN.md allows.
extern __thread tr__worker *tr__cur __attribute__((tls_model("initial-exec"))) TR__HIDDEN;

// tr__worker_of returns the calling thread's worker if it belongs to rt.
static inline tr__worker *
tr__worker_of(tr_rt *rt)
{
    tr__worker *w = tr__cur;
    return (w != NULL && w->w_rt == rt) ? w : NULL;
}

// tr__shard_of returns the pool shard the calling thread may use freely.
static inline unsigned
tr__shard_of(tr_rt *rt)
{
    tr__worker *w = tr__worker_of(rt);
    return w ? w->w_index : rt->r_nworkers;
}

// From task.c.
void tr__task_run(tr__worker *w, tr__slot *s) TR__HIDDEN;
void tr__task_cancel_now(tr__worker *w, tr__slot *s) TR__HIDDEN;
void tr__task_schedule(tr_rt *rt, tr__slot *s) TR__HIDDEN;
void tr__slot_release(tr_rt *rt, tr__slot *s, uint64_t clear) TR__HIDDEN;
tr_rt *tr__slot_rt(tr__slot *s) TR__HIDDEN;
// Task wakers are {&tr__task_waker_ops, key}: the key names the task
// process-wide, and the wake finds the runtime through the slot.
extern const tr_waker_ops tr__task_waker_ops TR__HIDDEN;
void tr__take_outcome(tr__slot *s, uint64_t word, tr_outcome *out) TR__HIDDEN;

// From exec.c.
void tr__rt_inject(tr_rt *rt, tr__slot *s) TR__HIDDEN;
tr_err tr__rt_send(tr_rt *rt, tr__cmd *cmd) TR__HIDDEN;
tr__cmd *tr__cmd_new(Troupe__V1__ExecutorCommand__CommandCase kind) TR__HIDDEN;

#endif
