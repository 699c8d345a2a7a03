// exec/exec.h: the executor layer (README, Architecture: layer 2). It owns
// the runtime and worker structs, the executor's inbox of command messages
// and the global injector (inbox.c), the park/unpark protocol and the
// reactor hand-over (park.c), the worker loop and shutdown (worker.c), the
// runtime's lifecycle, configuration and statistics (rt.c) and the dump
// (dump.c); the poll context; the per-runtime extension slots.
//
// Layers, bottom up: base -> task -> sched -> exec -> reactor -> io, fs,
// sync (tests/integration/layers.sh checks every #include "..."). This
// header may include: base/base.h, task/task.h, sched/sched.h. Named
// back-edge: exec <-> reactor park (park.c waits in the reactor's backend
// through tr__reactor_park; worker.c and rt.c service and create it).
#ifndef TR_EXEC_EXEC_H
#define TR_EXEC_EXEC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>

#include <troupe/rt.h>
#include <troupe/task.h>
#include <troupe/executor.h>
#include <troupe/v1/executor.pb-c.h>

#include "base/base.h"
#include "sched/sched.h"
#include "task/task.h"

typedef struct tr__worker tr__worker;

// An executor command: a message (its tr_msg header first, m_type the
// ExecutorCommand descriptor) whose protobuf-c struct is the in-memory form,
// with its body embedded so that one tr_msg_alloc carries it; a TaskSpec's
// strings and bytes follow the struct in the same block. Linked into the
// executor's inbox through the header (a multi-producer stack that any
// worker takes whole: see inbox.c).
typedef struct tr__cmd {
    tr_msg c_hdr;           // m_flags: TR__CMD_*
    tr_mailbox *c_reply_to; // where replies go, or NULL
    Troupe__V1__ExecutorCommand c_msg;
    union {
        Troupe__V1__Spawn spawn;
        Troupe__V1__Cancel cancel;
        Troupe__V1__Shutdown shutdown;
        Troupe__V1__StatusRequest status;
    } c_body;
    Troupe__V1__TaskSpec c_spec; // c_body.spawn.spec, for a spawn by spec
} tr__cmd;

// The runtime sent this command itself (tr_task_start, tr_task_cancel and
// tr_rt_shutdown from outside the runtime): a Cancel whose flag is already
// set, a Spawn by slot key.
#define TR__CMD_LOCAL 1u

// A registered task kind (kind.c). Never freed before the runtime.
typedef struct tr__kind {
    char k_name[TR_KIND_NAME_MAX + 1];
    const tr_task_spec *k_spec;
    tr_kind_init_fn k_init;
    tr_kind_encode_fn k_encode;
    _Atomic bool k_remote; // may be spawned from another node (tr_kind_set_remote)
} tr__kind;

struct tr__worker {
    tr_rt *w_rt;
    unsigned w_index;
    pthread_t w_thread; // workers 1..N-1

    // The scheduler's per-worker state (sched/: its ops table says the
    // size; nothing outside the scheduler's own file looks inside).
    void *w_sched;

    // --- Parking (see park.c): the futex word, and whether the worker is
    // on the sleepers stack (under r_idle_lock; read racily with acquire).
    _Alignas(64) _Atomic uint32_t w_park;
    _Atomic bool w_sleeping;
    bool w_searching; // owner only
    // Its last park drove the reactor (owner only): a searcher that then
    // finds work hands the driver over (tr__end_searching).
    bool w_was_driver;

    // Coarse clock for the dump: ms since the runtime started (owner).
    uint32_t w_now_ms;
    uint32_t w_tick;
    // CLOCK_MONOTONIC_COARSE (ns) at the last look, the loop count when it
    // last moved, and whether the polls of that coarse tick were long (at
    // most 64): owner only (see time_due in worker.c).
    uint64_t w_coarse;
    uint32_t w_tick_mark;
    bool w_long_polls;
    // Timers are armed or descriptors registered: look at the coarse clock
    // after each poll (owner; refreshed by service turns, set when a task
    // of this worker arms a timer or waits for IO).
    bool w_timed;
    // tr_worker_defer's one deferral, run before the worker next looks
    // for work in vain and at each service turn; w_in_loop: the thread is
    // inside tr__run_loop, where it will run (owner only).
    void (*w_defer_fn)(void *);
    void *w_defer_arg;
    bool w_in_loop;
    // Counters: written by the owner, read by anyone (relaxed).
    _Atomic uint64_t w_polls;
    _Atomic uint64_t w_spawned;
    _Atomic uint64_t w_completed;
    _Atomic uint64_t w_cancelled;
    _Atomic uint64_t w_commands;
    _Atomic uint64_t w_parks;
    _Atomic uint64_t w_steals;
    _Atomic uint64_t w_stolen;
    _Atomic uint64_t w_inject_pops;
    _Atomic uint64_t w_lifo_hits;
};

// Shutdown progress, in r_shutdown.
enum { TR__SD_NONE = 0, TR__SD_REQUESTED = 1, TR__SD_CANCELLING = 2, TR__SD_DONE = 3 };

// Parker states, in w_park.
// TR__PARK_DRIVER: parked in the reactor's backend wait (unpark writes its
// eventfd instead of a futex wake).
enum { TR__PARK_EMPTY = 0, TR__PARK_PARKED = 1, TR__PARK_NOTIFIED = 2, TR__PARK_DRIVER = 3 };

// r_idle packs the number of searching workers (low 16 bits) and of
// workers that are not parked (high 16 bits).
#define TR__IDLE_SEARCHING_ONE 1u
#define TR__IDLE_UNPARKED_ONE (1u << 16)

struct tr_rt {
    tr_rt_config r_cfg;
    tr__pool r_pool;
    const tr__sched_ops *r_sched;
    unsigned r_nworkers;
    tr__worker *r_workers;
    uint64_t r_start_ns;

    // The executor's inbox: tr__cmd messages from any thread. CAS push
    // (release), taken whole by whichever worker drains it (acquire
    // exchange).
    _Alignas(64) _Atomic(tr_msg *) r_inbox;

    // The global injector: tasks woken outside the runtime and ring
    // overflow. A growable circular array of slot pointers under
    // r_inj_lock (pointers only, so moving a batch never touches the tasks
    // themselves); r_inj_len lets workers skip the lock when it is empty
    // (seq_cst: see the parking protocol).
    _Alignas(64) tr__mutex r_inj_lock;
    tr__slot **r_inj_buf; // under r_inj_lock
    uint32_t r_inj_cap;   // under r_inj_lock: a power of two, or 0
    uint32_t r_inj_head;  // under r_inj_lock: index of the oldest
    _Atomic uint32_t r_inj_len;

    // Idle coordination (tokio's): searching/unparked counts, and the
    // stack of parked workers under r_idle_lock.
    _Alignas(64) _Atomic uint32_t r_idle;
    tr__mutex r_idle_lock;
    unsigned *r_sleepers; // under r_idle_lock
    unsigned r_nsleepers; // under r_idle_lock

    // Shutdown state (TR__SD_*), set by tr_rt_shutdown (any thread) and moved
    // on by worker 0 or tr_rt_free. Read by tr_task_new to refuse spawns.
    _Alignas(64) _Atomic int r_shutdown;
    // Deadline of a graceful shutdown (0: none), from the Shutdown message.
    _Atomic uint64_t r_deadline_ns;
    // Set while a thread is inside tr_rt_block_on.
    _Atomic int r_in_block_on;
    // Tasks started from outside the runtime (counted at start).
    _Atomic uint64_t r_ext_spawned;
    // Starts from outside the runtime between their shutdown check and the
    // Spawn message's push (futex word): the shutdown waits for them, so
    // that a start it did not refuse is in the inbox when the last drain
    // runs (see tr__rt_start_enter).
    _Atomic uint32_t r_starting;
    // Worker threads that have stopped for the shutdown (futex word), and
    // the flag that lets them exit (futex word).
    _Atomic uint32_t r_stopped;
    _Atomic uint32_t r_exit;

    // The reactor (reactor.c): epoll, registrations, timers, the driver.
    struct tr__reactor *r_reactor;
    // Per-runtime state of modules (tr_rt_local_set: io/'s blocking pool,
    // signals and processes, actors/, daemon/), finalised by tr_rt_free once
    // every task is gone and every worker thread has exited, last installed
    // first, before the reactor.
    _Atomic(void *) r_local[TR_RT_LOCAL_MAX]; // by key id - 1
    uint8_t r_local_order[TR_RT_LOCAL_MAX];   // key ids - 1, in install order (r_idle_lock)
    unsigned r_nlocal;                        // under r_idle_lock

    // Task kinds by name (kind.c): an array of pointers under r_kind_lock.
    tr__mutex r_kind_lock;
    tr__kind **r_kinds;
    unsigned r_nkinds;
    unsigned r_kind_cap;
};

// The worker the calling thread is, or NULL on a thread outside every
// runtime. One initial-exec TLS pointer, as README's Architecture allows.
extern __thread tr__worker *tr__cur __attribute__((tls_model("initial-exec"))) TR__HIDDEN;

// tr__worker_of returns the calling thread's worker if it belongs to rt.
static inline tr__worker *
tr__worker_of(tr_rt *rt)
{
    tr__worker *w = tr__cur;
    return (w != NULL && w->w_rt == rt) ? w : NULL;
}

// tr__timed_here notes that a task polled on the calling thread's worker of
// rt waits for a timer or IO, so that the worker watches the clock after
// its polls (see time_due in worker.c). Slow paths only.
static inline void
tr__timed_here(tr_rt *rt)
{
    tr__worker *w = tr__worker_of(rt);
    if (w != NULL) {
        w->w_timed = true;
    }
}

// tr__shard_of returns the pool shard the calling thread may use freely.
static inline unsigned
tr__shard_of(tr_rt *rt)
{
    tr__worker *w = tr__worker_of(rt);
    return w ? w->w_index : rt->r_nworkers;
}

// inbox.c: the executor's inbox and the global injector.
void tr__inject_push(tr_rt *rt, tr__slot *const *tasks, uint32_t n) TR__HIDDEN;
void tr__notify_parked(tr_rt *rt) TR__HIDDEN;
void tr__unpark_worker(tr__worker *w) TR__HIDDEN;
// tr__park_notify makes w's current or next park return at once (futex
// wake, or the reactor's eventfd when w waits in the backend).
void tr__park_notify(tr__worker *w) TR__HIDDEN;
uint64_t tr__rng_next(uint64_t *state) TR__HIDDEN;
// tr__rt_send queues cmd on rt's inbox (ownership moves with it) and
// makes a worker look.
void tr__rt_send(tr_rt *rt, tr__cmd *cmd) TR__HIDDEN;
// tr__rt_start_enter admits a start from outside the runtime: false once a
// shutdown was requested (the start is refused). On true the caller pushes
// its Spawn message, then calls tr__rt_start_exit.
bool tr__rt_start_enter(tr_rt *rt) TR__HIDDEN;
void tr__rt_start_exit(tr_rt *rt) TR__HIDDEN;
// ---------------------------------------------------------------------------
// The executor's face to the other layers. The runtime and worker structs
// are this layer's: task/, sched/, reactor/ and the layers above read and
// write them only through these (tests/integration/layers.sh checks that
// no file outside exec/ names a field of either).

static inline tr_rt *
tr__worker_rt(const tr__worker *w)
{
    return w->w_rt;
}

static inline unsigned
tr__worker_index(const tr__worker *w)
{
    return w->w_index;
}

// tr__worker_sched returns w's scheduler state (the scheduler's own file
// alone knows its type).
static inline void *
tr__worker_sched(const tr__worker *w)
{
    return w->w_sched;
}

// tr__worker_now_ms returns w's coarse clock (ms since the runtime began).
static inline uint32_t
tr__worker_now_ms(const tr__worker *w)
{
    return w->w_now_ms;
}

// tr__worker_set_timed makes w watch the clock after its polls (a task of
// it arms a timer or waits for IO).
static inline void
tr__worker_set_timed(tr__worker *w)
{
    w->w_timed = true;
}

// Counters other layers keep for the statistics (owner thread only).
static inline void
tr__worker_count_poll(tr__worker *w)
{
    tr__counter_add(&w->w_polls, 1);
}

static inline void
tr__worker_count_spawn(tr__worker *w)
{
    tr__counter_add(&w->w_spawned, 1);
}

// tr__worker_count_done counts a task that completed or was cancelled.
static inline void
tr__worker_count_done(tr__worker *w, bool cancelled)
{
    tr__counter_add(cancelled ? &w->w_cancelled : &w->w_completed, 1);
}

// tr__worker_count_steal counts one steal of n tasks.
static inline void
tr__worker_count_steal(tr__worker *w, uint64_t n)
{
    tr__counter_add(&w->w_steals, 1);
    tr__counter_add(&w->w_stolen, n);
}

static inline void
tr__worker_count_lifo_hit(tr__worker *w)
{
    tr__counter_add(&w->w_lifo_hits, 1);
}

static inline unsigned
tr__rt_nworkers(const tr_rt *rt)
{
    return rt->r_nworkers;
}

static inline tr__worker *
tr__rt_worker(tr_rt *rt, unsigned i)
{
    return &rt->r_workers[i];
}

static inline tr__pool *
tr__rt_pool(tr_rt *rt)
{
    return &rt->r_pool;
}

static inline const tr__sched_ops *
tr__rt_sched(const tr_rt *rt)
{
    return rt->r_sched;
}

static inline const tr_rt_config *
tr__rt_config(const tr_rt *rt)
{
    return &rt->r_cfg;
}

static inline struct tr__reactor *
tr__rt_reactor(const tr_rt *rt)
{
    return rt->r_reactor;
}

// tr__rt_shutting_down reports whether a shutdown was requested (acquire).
static inline bool
tr__rt_shutting_down(tr_rt *rt)
{
    return atomic_load_explicit(&rt->r_shutdown, memory_order_acquire) != TR__SD_NONE;
}

// tr__rt_count_ext_spawn counts a task started from outside the runtime.
static inline void
tr__rt_count_ext_spawn(tr_rt *rt)
{
    atomic_fetch_add_explicit(&rt->r_ext_spawned, 1, memory_order_relaxed);
}

// tr__cmd_new allocates a zeroed command of kind with extra bytes after
// the struct (a TaskSpec's strings and bytes), flags TR__CMD_*.
tr__cmd *tr__cmd_new(Troupe__V1__ExecutorCommand__CommandCase kind, size_t extra,
                     uint32_t flags) TR__HIDDEN;
// tr__cmd_extra returns the extra bytes of a command.
static inline char *
tr__cmd_extra(tr__cmd *c)
{
    return (char *)(c + 1);
}
// tr__inject_pop takes up to max tasks from the injector: it returns the
// first and gives the others to w's scheduler.
tr__slot *tr__inject_pop(tr__worker *w, uint32_t max) TR__HIDDEN;
// tr__drain_inbox handles every queued command in arrival order: true if
// there was any.
bool tr__drain_inbox(tr__worker *w) TR__HIDDEN;
// tr__wait_starts waits until no start from outside is between its
// shutdown check and its push (see tr__rt_start_enter).
void tr__wait_starts(tr_rt *rt) TR__HIDDEN;

// park.c: parking, unparking and the searching count.
// tr__wake_main wakes worker 0 for something no queue shows (its root
// completed elsewhere, a graceful shutdown may be done, a Shutdown came).
void tr__wake_main(tr_rt *rt) TR__HIDDEN;
// tr__wake_one_sleeper makes one parked worker look again (it stays
// parked if it finds nothing): so that some worker drives the reactor.
void tr__wake_one_sleeper(tr_rt *rt) TR__HIDDEN;
void tr__unpark_all(tr_rt *rt) TR__HIDDEN;
bool tr__try_start_searching(tr__worker *w) TR__HIDDEN;
void tr__end_searching(tr__worker *w) TR__HIDDEN;
// tr__park_worker announces w asleep, looks at every queue once more, and
// sleeps (in the reactor when it gets the driver, else on its futex) until
// unparked or timeout_ns.
void tr__park_worker(tr__worker *w, uint64_t timeout_ns) TR__HIDDEN;
// tr__park_as_driver moves w's parker to TR__PARK_DRIVER before the
// reactor's wait (counting the park): false when w was notified already
// (the wait then only collects what is there). tr__park_driver_done moves
// it back once the wait returned. The reactor's park (tr__reactor_park).
bool tr__park_as_driver(tr__worker *w) TR__HIDDEN;
void tr__park_driver_done(tr__worker *w) TR__HIDDEN;

// rt.c: tr__rt_shutdown_begin moves the runtime to TR__SD_REQUESTED (from
// then on it accepts no task): false when a shutdown was requested already.
// The caller then sends the Shutdown message (tr_rt_shutdown, tr_exec_send).
bool tr__rt_shutdown_begin(tr_rt *rt) TR__HIDDEN;

// command.c: carrying out commands from tr_exec_send and answering them.
// tr__cmd_handle carries c out on w (the inbox's drain; c stays the
// caller's to free).
void tr__cmd_handle(tr__worker *w, tr__cmd *c) TR__HIDDEN;

// dump.c: what a runtime holds.
// tr__rt_now_ms returns ms since the runtime began (tr__slot_info's clock).
uint64_t tr__rt_now_ms(tr_rt *rt) TR__HIDDEN;

// kind.c: the registry of task kinds.
// tr__kind_find returns rt's kind called name (len bytes), or NULL.
const tr__kind *tr__kind_find(tr_rt *rt, const char *name, size_t len) TR__HIDDEN;
// tr__kind_new prepares a task of kind k from args (as tr_kind_spawn, up to
// the start): TR_OK and *state, or an error with the task discarded.
tr_err tr__kind_new(tr_rt *rt, const tr__kind *k, const void *args, size_t len,
                    void **state) TR__HIDDEN;
void tr__kinds_free(tr_rt *rt) TR__HIDDEN;

// worker.c: the worker loop and shutdown.
// tr__run_loop runs tasks on w until it should stop. main: w is worker 0
// inside block_on, which returns when root completes (root may be NULL) and
// carries out shutdowns; the other workers return once a shutdown reaches
// TR__SD_CANCELLING.
void tr__run_loop(tr__worker *w, tr__slot *root, bool main) TR__HIDDEN;
void *tr__worker_main(void *arg) TR__HIDDEN;
void tr__coarse_res_init(void) TR__HIDDEN;
// tr__cancel_all completes every started task as cancelled and empties
// every queue; tr__stop_others makes every worker thread leave its loop
// and waits for them (shutdown and tr_rt_free).
void tr__cancel_all(tr__worker *w) TR__HIDDEN;
void tr__stop_others(tr_rt *rt) TR__HIDDEN;

#endif
