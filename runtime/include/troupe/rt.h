// troupe/rt.h: the runtime: create it, run a root task to completion with
// tr_rt_block_on, shut it down, read its statistics and dump its live tasks.
//
// The executor is an actor: Spawn, Cancel and Shutdown reach it as messages
// (proto/troupe/v1/executor.proto) on a multi-producer queue that any thread
// may push to. The thread that calls tr_rt_block_on is worker 0.
#ifndef TROUPE_RT_H
#define TROUPE_RT_H

#include <stdio.h>

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

typedef struct tr_rt_config {
    unsigned workers;   // worker threads, including the block_on thread (1)
    uint32_t budget;    // leaf operations per poll before a forced yield (128)
    uint64_t max_tasks; // pool limit; tr_task_new fails past it (16 Mi)
} tr_rt_config;

// tr_rt_config_init fills cfg with the defaults.
TR_API void tr_rt_config_init(tr_rt_config *cfg);

// tr_rt_new creates a runtime; cfg may be NULL for the defaults. No thread
// is started until tr_rt_block_on. Returns TR_EINVAL for a bad config,
// TR_ENOTSUP for a feature this build lacks (more than one worker, for now).
TR_API tr_err tr_rt_new(const tr_rt_config *cfg, tr_rt **out);

// tr_rt_free shuts the runtime down at once if it is not already (cancelling
// every live task: each drop function runs), destroys uncollected results
// and frees all memory. Join handles still held become invalid. Call it from
// the thread that created the runtime, never from inside it.
TR_API void tr_rt_free(tr_rt *rt);

// tr_rt_block_on starts the prepared task root (from tr_task_new) and runs
// the runtime on the calling thread until root completes or a shutdown
// finishes. On return *out (may be NULL) holds root's outcome: TR_ECANCELED
// when a shutdown cancelled it. Returns TR_OK when root completed,
// TR_ESHUTDOWN when the runtime shut down (root is then cancelled or was
// never started), TR_EDEADLOCK from a worker thread, TR_EBUSY when another
// thread is already inside block_on. Tasks other than root that are still
// pending stay so until the next block_on or tr_rt_free.
TR_API tr_err tr_rt_block_on(tr_rt *rt, void *root, tr_outcome *out);

typedef enum tr_shutdown_mode {
    // Refuse new spawns, let the live tasks run until they finish or the
    // deadline passes, then cancel what is left.
    TR_SHUTDOWN_GRACEFUL = 0,
    // Refuse new spawns and cancel every live task now.
    TR_SHUTDOWN_IMMEDIATE = 1,
} tr_shutdown_mode;

// tr_rt_shutdown sends the executor a Shutdown message. Any thread,
// including a task. deadline_ms bounds a graceful shutdown (0: wait for the
// tasks however long they take). Does not block. TR_ESHUTDOWN if a shutdown
// was already requested.
TR_API tr_err tr_rt_shutdown(tr_rt *rt, tr_shutdown_mode mode, uint32_t deadline_ms);

// tr_rt_is_shutdown reports whether a shutdown has been requested.
TR_API bool tr_rt_is_shutdown(tr_rt *rt);

typedef struct tr_rt_stats {
    uint64_t live_tasks; // started or prepared, not yet freed
    uint64_t spawned;    // tasks started, in total
    uint64_t completed;  // tasks that returned TR_READY
    uint64_t cancelled;  // tasks completed by a cancel or by shutdown
    uint64_t polls;      // poll calls
    uint64_t commands;   // executor messages handled
    uint64_t pool_slots; // slots the pool has carved (live + free)
    uint64_t pool_bytes; // memory the pool holds for task slots
    unsigned workers;
} tr_rt_stats;

// tr_rt_get_stats fills *out with a snapshot of counters. Any thread; the
// figures are read without stopping the runtime.
TR_API void tr_rt_get_stats(tr_rt *rt, tr_rt_stats *out);

typedef enum tr_task_state {
    TR_TASK_PREPARED,   // tr_task_new, not yet started
    TR_TASK_IDLE,       // waiting to be woken
    TR_TASK_SCHEDULED,  // in a run queue
    TR_TASK_RUNNING,    // being polled (or woken while polled)
    TR_TASK_CANCELLING, // cancel requested, not yet carried out
    TR_TASK_COMPLETE,   // finished; result waits for its joiner
} tr_task_state;

// tr_task_state_name returns "idle", "running", ... for a state.
TR_API const char *tr_task_state_name(tr_task_state s);

typedef struct tr_task_info {
    tr_task_id id;
    const char *name; // the spec's name, or "?"
    tr_task_state state;
    uint32_t polls;   // times polled
    uint32_t sleeps;  // times the task returned TR_PENDING
    uint64_t idle_ms; // time since its last poll (coarse, ~ms)
} tr_task_info;

// tr_rt_foreach_task calls fn once per live task, in pool order. Any
// thread; a snapshot that may race with tasks changing state.
TR_API void tr_rt_foreach_task(tr_rt *rt, void (*fn)(const tr_task_info *info, void *arg),
                               void *arg);

// tr_rt_dump writes one line per live task to f, then a summary line.
TR_API void tr_rt_dump(tr_rt *rt, FILE *f);

// tr_trim returns to the system the task-pool memory that freed runtimes
// left in the process-wide cache (capped by TROUPE_POOL_CACHE_MB, default
// 512). Any thread.
TR_API void tr_trim(void);

TR_END_DECLS

#endif
