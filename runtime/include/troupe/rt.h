// troupe/rt.h: the runtime: create it, run a root task to completion with
// tr_rt_block_on, shut it down, read its statistics and dump its live tasks.
//
// The executor is an actor: Spawn, Cancel, Shutdown and StatusRequest reach
// it as messages (proto/troupe/v1/executor.proto) on a multi-producer queue
// that any thread may push to; troupe/executor.h sends them from anywhere,
// another process included, and registers the task kinds a remote Spawn
// names. The thread that calls tr_rt_block_on is worker 0.
#ifndef TROUPE_RT_H
#define TROUPE_RT_H

#include <stdio.h>

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

// Schedulers (README, "Schedulers" and "Architecture", layer 3).
typedef enum tr_sched_kind {
    // Work stealing, as tokio: per-worker stealable rings, a LIFO slot for
    // the task just woken, a global injector. The default.
    TR_SCHED_WS = 0,
    // Round robin: new tasks dealt to workers in turn, each worker with its
    // own queue; a woken task returns to the worker that last ran it.
    TR_SCHED_RR = 1,
    // Hybrid prioritized stealing: a stealable cold ring plus a private hot
    // queue ordered by how often each task has had to sleep.
    TR_SCHED_HYBRID = 2,
} tr_sched_kind;

// Timers and IO while workers are busy. A worker with nothing to run
// sleeps in the reactor (one worker at a time: the driver, in epoll_wait
// until the next timer) or on its futex. A busy worker services timers and
// IO itself, without blocking: every 64 polls, and, while timers are armed
// or descriptors registered, after any poll once the coarse clock
// (CLOCK_MONOTONIC_COARSE, 4 ms at HZ=250) has moved since its last turn
// or, when its polls are long, once the earliest timer is due. So a due
// timer waits at most for the end of the poll that is running (its
// deadline is rounded up to the wheel's 1 ms), a ready descriptor for that
// plus 4 ms. A poll that never returns still holds its own worker: keep
// polls short (yield, or move blocking work to tr_spawn_blocking).

typedef struct tr_rt_config {
    unsigned workers;    // worker threads incl. the block_on thread (0: one per core; at most 255)
    tr_sched_kind sched; // TR_SCHED_WS
    uint32_t budget;     // leaf operations per poll before a forced yield (128)
    uint64_t max_tasks;  // live tasks at most; tr_task_new fails past it (16 Mi)
    // Nonzero: deterministic mode. One worker, and each pick among the
    // runnable tasks is drawn from a generator seeded with this value, so
    // a failing interleaving can be replayed from its seed.
    uint64_t deterministic_seed;
    // Ignore the TROUPE_* environment overrides (see tr_rt_new).
    bool ignore_env;
    // The clock timers read (troupe/time.h): NULL for CLOCK_MONOTONIC, or
    // a virtual clock (tr_clock_new_virtual), which the caller keeps alive
    // until tr_rt_free.
    struct tr_clock *clock;
    // The reactor backend by name: NULL for the default, "epoll" (the only
    // one today; TROUPE_BACKEND overrides it). An unknown name makes
    // tr_rt_new fail with TR_EINVAL.
    const char *backend;
} tr_rt_config;

// tr_rt_config_init fills cfg with the defaults.
TR_API void tr_rt_config_init(tr_rt_config *cfg);

// tr_rt_new creates a runtime; cfg may be NULL for the defaults. Unless
// cfg->ignore_env, the environment overrides the config, for tools and
// benchmarks: TROUPE_SCHED=rr|ws|hybrid, TROUPE_WORKERS=N,
// TROUPE_BACKEND=epoll and TROUPE_DETERMINISTIC=seed (TROUPE_WORKERS=0: one per core). Starts
// workers-1 threads; the thread that calls tr_rt_block_on is worker 0.
// Returns TR_EINVAL for a bad config or environment value, and
// tr_error_detail then names it.
TR_API tr_err tr_rt_new(const tr_rt_config *cfg, tr_rt **out);

// tr_rt_free shuts the runtime down at once if it is not already (cancelling
// every live task: each drop function runs), destroys uncollected results
// and frees all memory. Join handles still held become invalid. Call it from
// the thread that created the runtime, never from inside it.
TR_API void tr_rt_free(tr_rt *rt);

// tr_rt_block_on starts the prepared task root (from tr_task_new; may be
// NULL) and runs the runtime on the calling thread until root completes or
// a shutdown is carried out. On return *out (may be NULL) holds root's
// outcome: TR_ECANCELED when a shutdown cancelled or refused it. Returns
// TR_OK when root completed, TR_ESHUTDOWN when the runtime shut down (root
// is then cancelled, or was refused and dropped without a poll),
// TR_EDEADLOCK from a worker thread, TR_EBUSY when another thread is
// already inside block_on. When it returns because root completed, without
// a shutdown, the other tasks stay live: workers 1..N-1 go on running
// them, and tasks waiting for worker 0 run in the next block_on.
TR_API tr_err tr_rt_block_on(tr_rt *rt, void *root, tr_outcome *out);

// tr_rt_run is tr_rt_block_on for a root it makes, as tr_spawn makes a task:
// it allocates a root of kind spec, init(state, arg) fills it in (init NULL:
// spec->size bytes are copied from arg, or the state stays zeroed when arg
// is NULL too), then runs it as tr_rt_block_on does and returns what that
// returns. When the root cannot be made (tr_task_new's errors: TR_EINVAL,
// TR_EEXHAUSTED, TR_ESHUTDOWN) it returns that error, with out->err the
// same, and init has not run: after a shutdown was requested that is
// TR_ESHUTDOWN with no root made (a root prepared before the shutdown ends
// as TR_ECANCELED instead). The way to run a program's main task.
TR_API tr_err tr_rt_run(tr_rt *rt, const tr_task_spec *spec, void (*init)(void *state, void *arg),
                        void *arg, tr_outcome *out);

// Shutdown. From the moment tr_rt_shutdown is called the runtime accepts no
// task: tr_task_new and tr_spawn fail with TR_ESHUTDOWN, and tr_task_start
// refuses a task prepared earlier (TR_ESHUTDOWN; its drop runs on the
// caller's thread). Every task accepted before that moment is carried out:
// it runs to completion, or it is cancelled (its drop runs and its join
// completes with TR_ECANCELED), before tr_rt_block_on returns from the
// shutdown. Graceful: the tasks run until none is left or the deadline
// passes, then the rest are cancelled. Immediate: they are cancelled at
// once. The thread in tr_rt_block_on carries a shutdown out; requested
// while no thread is inside it, the next tr_rt_block_on (a NULL root will
// do) or tr_rt_free does.

typedef enum tr_shutdown_mode {
    // Refuse new spawns, let the live tasks run until they finish or the
    // deadline passes, then cancel what is left.
    TR_SHUTDOWN_GRACEFUL = 0,
    // Refuse new spawns and cancel every live task now.
    TR_SHUTDOWN_IMMEDIATE = 1,
} tr_shutdown_mode;

// tr_rt_shutdown begins a shutdown (see "Shutdown" above) and sends the
// executor a Shutdown message. Any thread, including a task. deadline_ms
// bounds a graceful shutdown (0: wait for the tasks however long they
// take). Does not block. TR_ESHUTDOWN if a shutdown was already requested.
TR_API tr_err tr_rt_shutdown(tr_rt *rt, tr_shutdown_mode mode, uint32_t deadline_ms);

// tr_rt_is_shutdown reports whether a shutdown has been requested.
TR_API bool tr_rt_is_shutdown(tr_rt *rt);

typedef struct tr_rt_stats {
    uint64_t live_tasks; // started or prepared, not yet freed
    uint64_t spawned;    // tasks started, in total
    uint64_t completed;  // tasks that returned TR_READY (counted after the drop ran)
    uint64_t cancelled;  // tasks completed by a cancel or by shutdown
    uint64_t polls;      // poll calls
    uint64_t commands;   // executor messages handled
    uint64_t pool_slots; // slots the pool has carved (live + free)
    uint64_t pool_bytes; // memory the pool holds for task slots
    uint64_t steals;     // successful steals (batches), all workers
    uint64_t parks;      // times a worker went to sleep, all workers
    unsigned workers;
    tr_sched_kind sched;
    uint64_t deterministic_seed; // 0 unless in deterministic mode
} tr_rt_stats;

typedef struct tr_worker_stats {
    uint64_t polls;         // tasks polled
    uint64_t steals;        // batches stolen from other workers
    uint64_t stolen;        // tasks those batches held
    uint64_t parks;         // times it went to sleep
    uint64_t injector_pops; // tasks taken from the global injector
    uint64_t lifo_hits;     // tasks run from the LIFO slot
    uint64_t queue_len;     // tasks in its local queues (a snapshot)
} tr_worker_stats;

// tr_rt_worker_stats fills *out for worker i (0 .. workers-1). Any thread.
TR_API tr_err tr_rt_worker_stats(tr_rt *rt, unsigned i, tr_worker_stats *out);

// tr_sched_name returns the name of a scheduler ("ws", "rr" or "hybrid"),
// or "?" for a kind that is none.
TR_API const char *tr_sched_name(tr_sched_kind k);

// tr_sched_parse sets *out to the scheduler called name (the names
// tr_sched_name returns, as TROUPE_SCHED takes them). TR_EINVAL for any
// other name, and tr_error_detail then lists the names. Any thread.
TR_API tr_err tr_sched_parse(const char *name, tr_sched_kind *out);

// Per-runtime slots, for modules built on the runtime (actors/, daemon/,
// or a program's own) to attach state to a runtime without touching it. A
// module creates a key once per process; each runtime then holds one value
// per key.
typedef struct tr_rt_key {
    uint32_t id; // 0: no key
} tr_rt_key;

// How many keys a process may create.
#define TR_RT_LOCAL_MAX 64

// tr_rt_key_create makes a new key (process-wide; keys are never freed):
// fini (may be NULL) releases a runtime's value at tr_rt_free, once every
// task is gone and every worker thread has exited, values in reverse order
// of their setting. TR_EFULL when all TR_RT_LOCAL_MAX keys are taken. Any
// thread; create keys once (pthread_once), not per runtime.
TR_API tr_err tr_rt_key_create(tr_rt_key *key, void (*fini)(tr_rt *rt, void *value));

// tr_rt_local_get returns rt's value for key, or NULL before one is set
// (or for a key that was never created). Any thread, lock-free.
TR_API void *tr_rt_local_get(tr_rt *rt, tr_rt_key key);

// tr_rt_local_set sets rt's value for key to value unless one is set
// already, and returns the value that is set: value, or the one another
// thread set first (then the caller still owns value and frees it). The
// runtime owns what it set: the key's fini releases it. NULL for a bad
// key or a NULL value. Any thread.
TR_API void *tr_rt_local_set(tr_rt *rt, tr_rt_key key, void *value);

// tr_worker_defer asks the worker running the caller to call fn(arg) on
// its own thread once it has run the tasks that are ready in front of it:
// before it next looks for work and finds none (so before it sleeps), and
// in any case within 32 task polls, and before its thread leaves the
// runtime. Work that tasks produce as they run one after another can so
// leave in one piece (troupe/node.h sends a peer one frame for a run of
// tasks' messages). One deferral per worker at a time: true when fn(arg)
// is deferred now (or was already); false off a worker thread (a plain
// thread, the blocking pool, tr_rt_free's cancellations) or while another
// deferral waits: the caller then does the work itself. fn must not block;
// it may spawn, wake and defer again. From a task's poll, drop or waker.
TR_API bool tr_worker_defer(void (*fn)(void *arg), void *arg);

// tr_rt_get_stats fills *out with a snapshot of counters. Any thread; the
// figures are read without stopping the runtime, so while it runs they may
// lag what a caller saw by a task per worker (a worker counts a task after
// its drop ran, and frees its slot after that). Once a shutdown has been
// carried out every worker is quiet and they are exact.
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
// 512), and the message slabs (troupe/mailbox.h) of every size class that
// has no message allocated or cached by a live thread (the calling thread's
// cache is emptied first). Any thread.
TR_API void tr_trim(void);

TR_END_DECLS

#endif
