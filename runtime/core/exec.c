// Design notes.
//
// The executor is an actor. Spawn, Cancel and Shutdown arrive as messages
// (protobuf-c structs from proto/troupe/v1/executor.proto, never packed
// inside a process) on the runtime's inbox: a multi-producer stack that any
// thread pushes onto with one CAS and that a worker takes whole with one
// exchange, then reverses into arrival order. Tasks woken from outside the
// runtime go to the global injector (a locked circular array of slot
// pointers with an atomic length). A task running on a worker takes the
// fast path into its worker's queues instead, with the same semantics.
//
// Workers. tr_rt_new starts workers-1 threads; the thread inside
// tr_rt_block_on is worker 0. Every worker runs the same loop: every 32
// polls it drains the inbox and takes a task from the injector first (so
// outside work is not starved by a busy local queue), otherwise it asks the
// scheduler (sched.c) for its next local task, then the injector, then it
// searches other workers' queues, then it parks.
//
// Parking follows tokio's idle protocol. r_idle counts searching and
// unparked workers; parked workers sit on a stack under r_idle_lock. Work
// pushed where others could take it calls tr__notify_parked, which wakes
// one parked worker only if nobody is searching (the searcher will find the
// work, and the last searcher to find some wakes another). A worker that
// parks first announces it (seq_cst), then looks at every shared queue once
// more, and only then sleeps on its own futex; a producer pushes first, then
// reads the announcement (seq_cst). So either the producer sees the sleeper
// and wakes it, or the sleeper sees the work: no push is lost, and an idle
// runtime sleeps without timed polling.
//
// Shutdown: tr_rt_shutdown flips r_shutdown so tr_task_new refuses new
// tasks at once, and sends a Shutdown message. Graceful: the runtime keeps
// running until no started task is left, or until the deadline, when the
// rest is cancelled. Cancelling is done by one thread (worker 0 in
// block_on, or tr_rt_free) after every other worker has stopped: it sweeps
// the pool, running the drop function of every started task that is not
// complete and completing it as cancelled, so joiners wake and nothing
// leaks; tasks still queued are completed in place and freed when popped.
#define _GNU_SOURCE // pthread_setname_np
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "exec.h"
#include "reactor.h"

void tr__rt_cancel_cmd(tr__worker *w, uint64_t key) TR__HIDDEN;

// ---------------------------------------------------------------------------
// Parking: a three-state futex per worker.

static void
futex_park(tr__worker *w, uint64_t timeout_ns)
{
    uint32_t expect = TR__PARK_EMPTY;
    if (atomic_compare_exchange_strong_explicit(&w->w_park, &expect, TR__PARK_PARKED,
                                                memory_order_seq_cst, memory_order_seq_cst)) {
        tr__counter_add(&w->w_parks, 1);
        tr__futex_wait(&w->w_park, TR__PARK_PARKED, timeout_ns);
    }
    // NOTIFIED (now or while we slept) or a timeout: either way the caller
    // looks at every queue again before it sleeps again.
    atomic_store_explicit(&w->w_park, TR__PARK_EMPTY, memory_order_seq_cst);
}

static void
futex_unpark(tr__worker *w)
{
    uint32_t old = atomic_exchange_explicit(&w->w_park, TR__PARK_NOTIFIED, memory_order_seq_cst);
    if (old == TR__PARK_PARKED) {
        tr__futex_wake(&w->w_park, 1);
    } else if (old == TR__PARK_DRIVER) {
        // Blocked in the reactor's backend: the one case the eventfd is
        // written.
        tr__reactor *rx = w->w_rt->r_reactor;
        rx->rx_ops->notify(rx);
    }
}

void
tr__park_notify(tr__worker *w)
{
    futex_unpark(w);
}

// sleepers_remove takes w off the sleepers stack. Under r_idle_lock.
static void
sleepers_remove(tr_rt *rt, tr__worker *w)
{
    for (unsigned i = 0; i < rt->r_nsleepers; i++) {
        if (rt->r_sleepers[i] == w->w_index) {
            rt->r_sleepers[i] = rt->r_sleepers[--rt->r_nsleepers];
            break;
        }
    }
    atomic_store_explicit(&w->w_sleeping, false, memory_order_seq_cst);
}

void
tr__notify_parked(tr_rt *rt)
{
    // seq_cst pairs with the announcement in park_worker (see the notes).
    uint32_t st = atomic_load_explicit(&rt->r_idle, memory_order_seq_cst);
    if ((st & 0xffff) != 0 || (st >> 16) >= rt->r_nworkers) {
        return; // someone is searching, or nobody sleeps
    }
    tr__mutex_lock(&rt->r_idle_lock);
    st = atomic_load_explicit(&rt->r_idle, memory_order_seq_cst);
    if ((st & 0xffff) != 0 || rt->r_nsleepers == 0) {
        tr__mutex_unlock(&rt->r_idle_lock);
        return;
    }
    tr__worker *t = &rt->r_workers[rt->r_sleepers[rt->r_nsleepers - 1]];
    sleepers_remove(rt, t);
    // It wakes as a searcher: counted here, so a burst of pushes wakes one.
    t->w_searching = true;
    atomic_fetch_add_explicit(&rt->r_idle, TR__IDLE_UNPARKED_ONE + TR__IDLE_SEARCHING_ONE,
                              memory_order_seq_cst);
    tr__mutex_unlock(&rt->r_idle_lock);
    futex_unpark(t);
}

void
tr__unpark_worker(tr__worker *t)
{
    tr_rt *rt = t->w_rt;
    // seq_cst pairs with the announcement in park_worker: the caller pushed
    // to t's own queue before this load.
    if (atomic_load_explicit(&t->w_sleeping, memory_order_seq_cst)) {
        tr__mutex_lock(&rt->r_idle_lock);
        if (atomic_load_explicit(&t->w_sleeping, memory_order_relaxed)) {
            sleepers_remove(rt, t);
            atomic_fetch_add_explicit(&rt->r_idle, TR__IDLE_UNPARKED_ONE, memory_order_seq_cst);
        }
        tr__mutex_unlock(&rt->r_idle_lock);
        futex_unpark(t);
    }
}

// wake_main wakes worker 0 for something no queue shows (its root
// completed elsewhere, a graceful shutdown may be done, a Shutdown came):
// tr__unpark_worker alone would miss a worker 0 that has looked but not
// yet announced it sleeps. The NOTIFIED state sticks, so its next park
// returns at once and it looks again.
static void
wake_main(tr_rt *rt)
{
    futex_unpark(&rt->r_workers[0]);
}

static void
wake_one_sleeper(tr_rt *rt)
{
    tr__mutex_lock(&rt->r_idle_lock);
    tr__worker *t = rt->r_nsleepers ? &rt->r_workers[rt->r_sleepers[rt->r_nsleepers - 1]] : NULL;
    tr__mutex_unlock(&rt->r_idle_lock);
    if (t != NULL) {
        futex_unpark(t); // it stays on the stack; its park looks again
    }
}

static void
unpark_all(tr_rt *rt)
{
    for (unsigned i = 0; i < rt->r_nworkers; i++) {
        tr__unpark_worker(&rt->r_workers[i]);
        futex_unpark(&rt->r_workers[i]);
    }
}

static bool
try_start_searching(tr__worker *w)
{
    if (w->w_searching) {
        return true;
    }
    tr_rt *rt = w->w_rt;
    // At most half the workers search at once, or thieves fight.
    uint32_t st = atomic_load_explicit(&rt->r_idle, memory_order_seq_cst);
    if (2 * (st & 0xffff) >= rt->r_nworkers) {
        return false;
    }
    atomic_fetch_add_explicit(&rt->r_idle, TR__IDLE_SEARCHING_ONE, memory_order_seq_cst);
    w->w_searching = true;
    return true;
}

static void
end_searching(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    w->w_searching = false;
    uint32_t prev =
        atomic_fetch_sub_explicit(&rt->r_idle, TR__IDLE_SEARCHING_ONE, memory_order_seq_cst);
    if ((prev & 0xffff) == 1) {
        // The last searcher found work: there may be more, wake a helper.
        tr__notify_parked(rt);
    }
}

// ---------------------------------------------------------------------------
// The inbox and the injector.

tr__cmd *
tr__cmd_new(Troupe__V1__ExecutorCommand__CommandCase kind)
{
    tr__cmd *c = tr__zalloc(sizeof(*c));
    troupe__v1__executor_command__init(&c->c_msg);
    c->c_msg.command_case = kind;
    switch (kind) {
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN:
        troupe__v1__spawn__init(&c->c_body.spawn);
        c->c_msg.spawn = &c->c_body.spawn;
        break;
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL:
        troupe__v1__cancel__init(&c->c_body.cancel);
        c->c_msg.cancel = &c->c_body.cancel;
        break;
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN:
        troupe__v1__shutdown__init(&c->c_body.shutdown);
        c->c_msg.shutdown = &c->c_body.shutdown;
        break;
    default:
        break;
    }
    return c;
}

static void
cmd_free(tr__cmd *c)
{
    tr__free(c, sizeof(*c));
}

tr_err
tr__rt_send(tr_rt *rt, tr__cmd *cmd)
{
    // Once pushed, cmd belongs to whichever worker drains it.
    bool shutdown = cmd->c_msg.command_case == TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN;
    tr__cmd *head = atomic_load_explicit(&rt->r_inbox, memory_order_relaxed);
    do {
        cmd->c_next = head;
        // seq_cst: the release half pairs with the acquire exchange in
        // drain_inbox; the rest with park_worker's last look.
    } while (!atomic_compare_exchange_weak_explicit(&rt->r_inbox, &head, cmd, memory_order_seq_cst,
                                                    memory_order_relaxed));
    tr__notify_parked(rt);
    // Worker 0 carries out shutdowns and deadlines: make sure it looks.
    if (shutdown) {
        wake_main(rt);
    }
    return TR_OK;
}

// Starts from outside the runtime and the shutdown meet as in Dekker's
// protocol: the starter announces itself in r_starting, then reads
// r_shutdown; the shutdown stores r_shutdown (tr_rt_shutdown's CAS), and
// its finisher reads r_starting before the last drain (wait_starts). All
// four are seq_cst, so either the starter sees the shutdown and refuses,
// or the finisher sees the starter and waits until its Spawn message is in
// the inbox. A start is thus either refused or carried out (run or
// cancelled) before block_on returns from the shutdown.
bool
tr__rt_start_enter(tr_rt *rt)
{
    atomic_fetch_add_explicit(&rt->r_starting, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&rt->r_shutdown, memory_order_seq_cst) != TR__SD_NONE) {
        tr__rt_start_exit(rt);
        return false;
    }
    return true;
}

void
tr__rt_start_exit(tr_rt *rt)
{
    // Release: a finisher that reads 0 sees the Spawn message pushed.
    if (atomic_fetch_sub_explicit(&rt->r_starting, 1, memory_order_seq_cst) == 1 &&
        atomic_load_explicit(&rt->r_shutdown, memory_order_seq_cst) != TR__SD_NONE) {
        // A finisher may wait: on the word (wait_starts), or, graceful, in
        // worker 0's park until no start is in flight.
        tr__futex_wake(&rt->r_starting, INT32_MAX);
        wake_main(rt);
    }
}

// wait_starts waits until no start from outside is between its shutdown
// check and its push. Only once a shutdown was requested, when no new one
// can begin; so the wait is bounded by those few instructions.
static void
wait_starts(tr_rt *rt)
{
    uint32_t n;
    while ((n = atomic_load_explicit(&rt->r_starting, memory_order_seq_cst)) != 0) {
        tr__hook(TR__HOOK_WAIT_STARTS);
        tr__futex_wait(&rt->r_starting, n, UINT64_MAX);
    }
}

void
tr__inject_push(tr_rt *rt, tr__slot *const *tasks, uint32_t n)
{
    tr__mutex_lock(&rt->r_inj_lock);
    uint32_t len = atomic_load_explicit(&rt->r_inj_len, memory_order_relaxed);
    if (len + n > rt->r_inj_cap) {
        // Grow to a power of two, unwrapping the old contents.
        uint32_t cap = rt->r_inj_cap ? rt->r_inj_cap : 256;
        while (cap < len + n) {
            cap *= 2;
        }
        tr__slot **buf = tr__alloc(sizeof(*buf) * cap);
        for (uint32_t i = 0; i < len; i++) {
            buf[i] = rt->r_inj_buf[(rt->r_inj_head + i) & (rt->r_inj_cap - 1)];
        }
        if (rt->r_inj_buf != NULL) {
            tr__free(rt->r_inj_buf, sizeof(*buf) * rt->r_inj_cap);
        }
        rt->r_inj_buf = buf;
        rt->r_inj_cap = cap;
        rt->r_inj_head = 0;
    }
    uint32_t mask = rt->r_inj_cap - 1;
    for (uint32_t i = 0; i < n; i++) {
        rt->r_inj_buf[(rt->r_inj_head + len + i) & mask] = tasks[i];
    }
    // seq_cst pairs with park_worker's last look.
    atomic_store_explicit(&rt->r_inj_len, len + n, memory_order_seq_cst);
    tr__mutex_unlock(&rt->r_inj_lock);
    tr__notify_parked(rt);
}

// inject_pop takes up to max tasks from the injector: it returns the first
// and gives the others to w's scheduler.
static tr__slot *
inject_pop(tr__worker *w, uint32_t max)
{
    tr_rt *rt = w->w_rt;
    if (atomic_load_explicit(&rt->r_inj_len, memory_order_relaxed) == 0) {
        return NULL;
    }
    tr__slot *got[TR__RING_CAP / 2];
    if (max > TR__RING_CAP / 2) {
        max = TR__RING_CAP / 2;
    }
    tr__mutex_lock(&rt->r_inj_lock);
    uint32_t len = atomic_load_explicit(&rt->r_inj_len, memory_order_relaxed);
    uint32_t n = len < max ? len : max;
    uint32_t mask = rt->r_inj_cap - 1;
    for (uint32_t i = 0; i < n; i++) {
        got[i] = rt->r_inj_buf[(rt->r_inj_head + i) & mask];
    }
    rt->r_inj_head = (rt->r_inj_head + n) & mask;
    atomic_store_explicit(&rt->r_inj_len, len - n, memory_order_relaxed);
    tr__mutex_unlock(&rt->r_inj_lock);
    if (n == 0) {
        return NULL;
    }
    tr__counter_add(&w->w_inject_pops, n);
    for (uint32_t i = 1; i < n; i++) {
        rt->r_sched->push(w, got[i], TR__PUSH_YIELD);
    }
    return got[0];
}

static void
handle_cmd(tr__worker *w, tr__cmd *c)
{
    tr_rt *rt = w->w_rt;
    const Troupe__V1__ExecutorCommand *m = &c->c_msg;
    switch (m->command_case) {
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN:
        if (m->spawn->task_case == TROUPE__V1__SPAWN__TASK_TASK_KEY) {
            tr__slot *s = tr__pool_lookup(tr__key_index(m->spawn->task_key));
            // tr_task_start set SCHED, which keeps the slot alive for us.
            TR__ASSERT(s != NULL);
            rt->r_sched->push(w, s, TR__PUSH_NEW);
        }
        // A spawn by task spec needs a registry of task kinds: the actors
        // layer resolves those before they reach a runtime.
        break;
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL:
        tr__rt_cancel_cmd(w, m->cancel->task_id);
        break;
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN:
        if (m->shutdown->mode == TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_IMMEDIATE) {
            int expect = TR__SD_REQUESTED;
            atomic_compare_exchange_strong_explicit(&rt->r_shutdown, &expect, TR__SD_CANCELLING,
                                                    memory_order_acq_rel, memory_order_acquire);
        } else if (m->shutdown->deadline_ms > 0) {
            atomic_store_explicit(&rt->r_deadline_ns,
                                  tr__now_ns() + (uint64_t)m->shutdown->deadline_ms * 1000000u,
                                  memory_order_release);
        }
        // Worker 0 carries it out (or tr_rt_free): wake it to look.
        wake_main(rt);
        break;
    default:
        break;
    }
    tr__counter_add(&w->w_commands, 1);
}

// drain_inbox handles every queued command in arrival order.
static bool
drain_inbox(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    if (atomic_load_explicit(&rt->r_inbox, memory_order_relaxed) == NULL) {
        return false;
    }
    tr__cmd *c = atomic_exchange_explicit(&rt->r_inbox, NULL, memory_order_acquire);
    tr__cmd *fifo = NULL;
    while (c != NULL) { // reverse the stack into arrival order
        tr__cmd *next = c->c_next;
        c->c_next = fifo;
        fifo = c;
        c = next;
    }
    bool any = fifo != NULL;
    while (fifo != NULL) {
        tr__cmd *next = fifo->c_next;
        handle_cmd(w, fifo);
        cmd_free(fifo);
        fifo = next;
    }
    return any;
}

// ---------------------------------------------------------------------------
// Shutdown.

// active_tasks counts started tasks that have not completed.
static uint64_t
active_tasks(tr_rt *rt)
{
    // Pairs with the seq_cst CAS after which a worker counts a completion
    // and then reads r_shutdown (task.c complete(), run_loop): the caller
    // read r_shutdown first. Cold: shutdown checks only.
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t started = atomic_load_explicit(&rt->r_ext_spawned, memory_order_relaxed), done = 0;
    for (unsigned i = 0; i < rt->r_nworkers; i++) {
        tr__worker *w = &rt->r_workers[i];
        started += atomic_load_explicit(&w->w_spawned, memory_order_relaxed);
        done += atomic_load_explicit(&w->w_completed, memory_order_relaxed);
        done += atomic_load_explicit(&w->w_cancelled, memory_order_relaxed);
    }
    return started > done ? started - done : 0;
}

static void
sweep_one(tr__slot *s, void *arg)
{
    tr__worker *w = arg;
    uint64_t old = atomic_load_explicit(&s->s_word, memory_order_acquire);
    for (;;) {
        if ((old & (TR__W_LIVE | TR__W_STARTED)) != (TR__W_LIVE | TR__W_STARTED) ||
            (old & (TR__W_COMPLETE | TR__W_RUNNING))) {
            return;
        }
        // Claim it as if polling it; SCHED stays so a queued slot is only
        // freed by whoever pops it.
        if (atomic_compare_exchange_weak_explicit(&s->s_word, &old, old | TR__W_RUNNING,
                                                  memory_order_acquire, memory_order_acquire)) {
            break;
        }
    }
    tr__task_cancel_now(w, s);
}

// retire takes a popped slot out of the queues during cancel_all: complete
// ones just leave; one queued since the sweep (started late by whoever
// prepared it) is cancelled, never polled. A queued slot is never free, so
// the flag lands on the right task.
static void
retire(tr__worker *w, tr__slot *s)
{
    atomic_fetch_or_explicit(&s->s_word, TR__W_CANCEL, memory_order_relaxed);
    tr__task_run(w, s);
}

// cancel_all completes every started task as cancelled, running its drop
// function, and empties every queue. The caller is w (worker 0, or the
// thread in tr_rt_free acting as it) and every other worker has stopped.
static void
cancel_all(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    for (;;) {
        wait_starts(rt);
        drain_inbox(w);
        tr__pool_foreach(&rt->r_pool, sweep_one, w);
        bool again = true;
        while (again) {
            again = false;
            tr__slot *s;
            while ((s = inject_pop(w, UINT32_MAX)) != NULL) {
                retire(w, s);
                again = true;
            }
            for (unsigned i = 0; i < rt->r_nworkers; i++) {
                while ((s = rt->r_sched->pop(&rt->r_workers[i])) != NULL) {
                    retire(w, s);
                    again = true;
                }
            }
        }
        if (atomic_load_explicit(&rt->r_inbox, memory_order_acquire) == NULL &&
            atomic_load_explicit(&rt->r_inj_len, memory_order_acquire) == 0 &&
            active_tasks(rt) == 0) {
            return;
        }
    }
}

// stop_others makes every worker thread leave its loop (r_shutdown is at
// least TR__SD_CANCELLING) and waits until they all have.
static void
stop_others(tr_rt *rt)
{
    uint32_t want = rt->r_nworkers - 1;
    unpark_all(rt);
    uint32_t n;
    // Pairs with the release add in worker_main: their queues are ours now.
    while ((n = atomic_load_explicit(&rt->r_stopped, memory_order_acquire)) < want) {
        tr__futex_wait(&rt->r_stopped, n, UINT64_MAX);
    }
}

static void
shutdown_finish(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    int expect = TR__SD_REQUESTED;
    atomic_compare_exchange_strong_explicit(&rt->r_shutdown, &expect, TR__SD_CANCELLING,
                                            memory_order_acq_rel, memory_order_acquire);
    stop_others(rt);
    cancel_all(w);
    atomic_store_explicit(&rt->r_shutdown, TR__SD_DONE, memory_order_release);
}

// ---------------------------------------------------------------------------
// The worker loop.

static void
refresh_clock(tr__worker *w)
{
    w->w_now_ms = (uint32_t)((tr__now_ns() - w->w_rt->r_start_ns) / 1000000u);
}

// The resolution of CLOCK_MONOTONIC_COARSE (a scheduler tick), read once.
static uint64_t coarse_res_ns = 4000000;

static void
coarse_res_init(void)
{
    struct timespec ts;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &ts) == 0) {
        coarse_res_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
}

// service_turn is the worker's periodic look outside its queues: the
// reactor (IO and timers, without blocking) when `reactor`, the inbox, and
// the dump's clock.
static void
service_turn(tr__worker *w, bool reactor)
{
    if (reactor) {
        tr__reactor_maintain(w);
    }
    drain_inbox(w);
    refresh_clock(w);
    tr__reactor *rx = w->w_rt->r_reactor;
    w->w_timed = atomic_load_explicit(&rx->rx_ntimers, memory_order_relaxed) != 0 ||
                 atomic_load_explicit(&rx->rx_nregs, memory_order_relaxed) != 0;
}

// time_due is the look after a poll, while timers or IO wait (w_timed):
// true when the worker should take a service turn now, so that IO and
// timers are serviced after a long poll however few polls there were; a
// turn every 64 polls alone left a 1 ms sleeper 3 s late behind 50 ms
// polls. It reads CLOCK_MONOTONIC_COARSE (3-6 ns here; CLOCK_MONOTONIC
// ~25 ns, rdtsc ~10 ns; a fifth of a yield, hence w_timed): a turn each
// time it has moved (every 4 ms at HZ=250). When the polls are long (at
// most 64 of them in the last coarse tick), a timer that comes due before
// the next tick does not wait for it: the precise clock is read while one
// is that close (rx_next_ns; the coarse time lags by up to a tick, so
// "close" is within two of it), which costs nothing next to such polls.
// Deterministic mode keeps to the count, so that a seed replays the same
// order whatever the clock does.
static inline bool
time_due(tr__worker *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    uint64_t c = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    if (TR__UNLIKELY(c != w->w_coarse)) {
        w->w_long_polls = w->w_tick - w->w_tick_mark <= 64;
        w->w_tick_mark = w->w_tick;
        w->w_coarse = c;
        return w->w_rt->r_cfg.deterministic_seed == 0;
    }
    if (w->w_long_polls) {
        uint64_t due = atomic_load_explicit(&w->w_rt->r_reactor->rx_next_ns, memory_order_relaxed);
        if (due < c + 2 * coarse_res_ns && tr__now_ns() >= due) {
            return w->w_rt->r_cfg.deterministic_seed == 0;
        }
    }
    return false;
}

static bool
root_done(tr__slot *root)
{
    return root != NULL &&
           (atomic_load_explicit(&root->s_word, memory_order_acquire) & TR__W_COMPLETE);
}

// work_visible is the last look before sleeping: anything w could run?
static bool
work_visible(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    if (atomic_load_explicit(&rt->r_inbox, memory_order_seq_cst) != NULL ||
        atomic_load_explicit(&rt->r_inj_len, memory_order_seq_cst) != 0 ||
        rt->r_sched->len(w) != 0) {
        return true;
    }
    if (rt->r_sched->steal != NULL) {
        // Both stealing schedulers keep their stealable tasks in w_ring (a
        // LIFO slot or a hot heap is not stealable).
        for (unsigned i = 0; i < rt->r_nworkers; i++) {
            if (tr__ring_len(&rt->r_workers[i].w_ring) > 0) {
                return true;
            }
        }
    }
    return false;
}

static void
park_worker(tr__worker *w, uint64_t timeout_ns)
{
    tr_rt *rt = w->w_rt;
    tr__mutex_lock(&rt->r_idle_lock);
    uint32_t dec = TR__IDLE_UNPARKED_ONE + (w->w_searching ? TR__IDLE_SEARCHING_ONE : 0);
    w->w_searching = false;
    rt->r_sleepers[rt->r_nsleepers++] = w->w_index;
    atomic_store_explicit(&w->w_sleeping, true, memory_order_seq_cst);
    // The announcement: seq_cst, before the last look below.
    atomic_fetch_sub_explicit(&rt->r_idle, dec, memory_order_seq_cst);
    tr__mutex_unlock(&rt->r_idle_lock);

    // The first worker to park drives the reactor: it waits in epoll
    // instead of on its futex (reactor.c).
    bool driver = false;
    if (!work_visible(w)) {
        driver = tr__reactor_park(w, timeout_ns);
        if (!driver) {
            futex_park(w, timeout_ns);
        }
    }

    tr__mutex_lock(&rt->r_idle_lock);
    if (atomic_load_explicit(&w->w_sleeping, memory_order_relaxed)) {
        // Nobody took us off the stack: a timeout, or work we saw ourselves.
        sleepers_remove(rt, w);
        atomic_fetch_add_explicit(&rt->r_idle, TR__IDLE_UNPARKED_ONE, memory_order_seq_cst);
    }
    // (Taken off by tr__notify_parked: w_searching is already set and
    // counted; by tr__unpark_worker: unparked is counted.)
    tr__mutex_unlock(&rt->r_idle_lock);
    if (driver) {
        // Awake again: now wake what the wait found, into our own queues.
        tr__reactor_park_done(w);
    }
}

static tr__slot *
find_work(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    const tr__sched_ops *ops = rt->r_sched;
    tr__slot *s;
    // Fairness: now and then the injector goes first.
    if ((w->w_tick & 31) == 0 && (s = inject_pop(w, 1)) != NULL) {
        return s;
    }
    if ((s = ops->pop(w)) != NULL) {
        return s;
    }
    // A fair share of the injector, but never more than the local queue
    // takes without overflowing (back into the injector).
    uint32_t batch = atomic_load_explicit(&rt->r_inj_len, memory_order_relaxed);
    batch = batch / rt->r_nworkers + 1;
    uint32_t room = ops->room(w) / 2;
    if (batch > room) {
        batch = room > 0 ? room : 1;
    }
    if (batch > TR__RING_CAP / 2) {
        batch = TR__RING_CAP / 2;
    }
    if ((s = inject_pop(w, batch)) != NULL) {
        return s;
    }
    if (ops->steal != NULL && try_start_searching(w)) {
        if ((s = ops->steal(w)) != NULL) {
            return s;
        }
        return inject_pop(w, batch);
    }
    return NULL;
}

// run_loop runs tasks on w until it should stop. main: w is worker 0 inside
// block_on, which returns when root completes (root may be NULL) and
// carries out shutdowns; the other workers return once a shutdown reaches
// TR__SD_CANCELLING.
static void
run_loop(tr__worker *w, tr__slot *root, bool main)
{
    tr_rt *rt = w->w_rt;
    refresh_clock(w);
    // Commands sent before we started (a Shutdown among them) come first.
    drain_inbox(w);
    for (;;) {
        if ((++w->w_tick & 31) == 0) {
            service_turn(w, (w->w_tick & (TR__RX_MAINT_TICKS - 1)) == 0);
            if (main &&
                atomic_load_explicit(&rt->r_shutdown, memory_order_relaxed) == TR__SD_NONE &&
                root_done(root)) {
                return;
            }
        }
        int sd = atomic_load_explicit(&rt->r_shutdown, memory_order_acquire);
        if (TR__UNLIKELY(sd != TR__SD_NONE)) {
            if (!main) {
                if (sd >= TR__SD_CANCELLING) {
                    return;
                }
            } else {
                uint64_t dl = atomic_load_explicit(&rt->r_deadline_ns, memory_order_acquire);
                if (sd >= TR__SD_CANCELLING || (dl != 0 && tr__now_ns() >= dl)) {
                    shutdown_finish(w);
                    return;
                }
            }
        }
        tr__slot *s = find_work(w);
        if (s != NULL) {
            if (w->w_searching) {
                end_searching(w);
            }
            tr__task_run(w, s);
            if (w->w_timed && TR__UNLIKELY(time_due(w))) {
                service_turn(w, true);
            }
            if (main) {
                if (s == root && sd == TR__SD_NONE && root_done(root)) {
                    return;
                }
            } else if (atomic_load_explicit(&rt->r_shutdown, memory_order_seq_cst) ==
                       TR__SD_REQUESTED) {
                // Worker 0 decides when a graceful shutdown is done. Read
                // afresh: the shutdown may have come during this poll (a
                // stale read left worker 0 parked until the deadline, or
                // for good without one). Pairs with the seq_cst CAS that
                // counted the completion (task.c complete()).
                wake_main(rt);
            }
            continue;
        }
        if (drain_inbox(w)) {
            continue;
        }
        uint64_t timeout = UINT64_MAX;
        if (main) {
            if (sd == TR__SD_NONE && root_done(root)) {
                return;
            }
            if (sd == TR__SD_REQUESTED && active_tasks(rt) == 0 &&
                atomic_load_explicit(&rt->r_inbox, memory_order_acquire) == NULL) {
                // A start in flight (accepted before the shutdown) runs
                // too: park until its exit wakes us.
                if (atomic_load_explicit(&rt->r_starting, memory_order_seq_cst) == 0) {
                    shutdown_finish(w);
                    return;
                }
                tr__hook(TR__HOOK_WAIT_STARTS);
            }
            uint64_t dl = atomic_load_explicit(&rt->r_deadline_ns, memory_order_acquire);
            if (sd == TR__SD_REQUESTED && dl != 0) {
                uint64_t now = tr__now_ns();
                timeout = dl > now ? dl - now : 0;
            }
        }
        park_worker(w, timeout);
        refresh_clock(w);
    }
}

static void *
worker_main(void *arg)
{
    tr__worker *w = arg;
    tr_rt *rt = w->w_rt;
    tr__cur = w;
    run_loop(w, NULL, false);
    if (w->w_searching) {
        end_searching(w);
    }
    // Stopped: hand our queues to the canceller. Pairs with the acquire
    // load in stop_others.
    atomic_fetch_add_explicit(&rt->r_stopped, 1, memory_order_release);
    tr__futex_wake(&rt->r_stopped, INT32_MAX);
    uint32_t x;
    while ((x = atomic_load_explicit(&rt->r_exit, memory_order_acquire)) == 0) {
        tr__futex_wait(&rt->r_exit, x, UINT64_MAX);
    }
    tr__cur = NULL;
    return NULL;
}

// ---------------------------------------------------------------------------
// The public runtime API.

const char *
tr_sched_name(tr_sched_kind k)
{
    switch (k) {
    case TR_SCHED_WS:
        return "ws";
    case TR_SCHED_RR:
        return "rr";
    case TR_SCHED_HYBRID:
        return "hybrid";
    }
    return "?";
}

void
tr_rt_config_init(tr_rt_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->workers = 0;
    cfg->sched = TR_SCHED_WS;
    cfg->budget = 128;
    cfg->max_tasks = (uint64_t)1 << 24;
}

#define MAX_WORKERS 255 // the task word keeps the last worker in 8 bits

static bool
parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9') {
        return false;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (*end != '\0' || errno != 0) {
        return false;
    }
    *out = v;
    return true;
}

// apply_env applies the TROUPE_* overrides; an error names the variable,
// its value and what is allowed (tr_error_detail).
static tr_err
apply_env(tr_rt_config *c)
{
    const char *e = getenv("TROUPE_SCHED");
    if (e != NULL) {
        if (strcmp(e, "ws") == 0) {
            c->sched = TR_SCHED_WS;
        } else if (strcmp(e, "rr") == 0) {
            c->sched = TR_SCHED_RR;
        } else if (strcmp(e, "hybrid") == 0) {
            c->sched = TR_SCHED_HYBRID;
        } else {
            return tr__fail(TR_EINVAL, "TROUPE_SCHED=%.64s: not a scheduler (ws, rr or hybrid)", e);
        }
    }
    uint64_t v;
    if ((e = getenv("TROUPE_WORKERS")) != NULL) {
        if (!parse_u64(e, &v) || v > MAX_WORKERS) {
            return tr__fail(TR_EINVAL,
                            "TROUPE_WORKERS=%.64s: not a number of workers (0 for one per core, "
                            "or 1 to %d)",
                            e, MAX_WORKERS);
        }
        c->workers = (unsigned)v;
    }
    if ((e = getenv("TROUPE_DETERMINISTIC")) != NULL) {
        if (!parse_u64(e, &v) || v == 0) {
            return tr__fail(TR_EINVAL, "TROUPE_DETERMINISTIC=%.64s: a seed is a number above 0", e);
        }
        c->deterministic_seed = v;
    }
    return TR_OK;
}

tr_err
tr_rt_new(const tr_rt_config *cfg, tr_rt **out)
{
    tr_rt_config c;
    if (cfg == NULL) {
        tr_rt_config_init(&c);
    } else {
        c = *cfg;
    }
    if (out == NULL) {
        return tr__fail(TR_EINVAL, "tr_rt_new: out is NULL");
    }
    tr_err rv;
    if (!c.ignore_env && (rv = apply_env(&c)) != TR_OK) {
        return rv;
    }
    if (c.workers > MAX_WORKERS) {
        return tr__fail(TR_EINVAL, "tr_rt_config.workers=%u: at most %d (0 for one per core)",
                        c.workers, MAX_WORKERS);
    }
    if (c.workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c.workers = n < 1 ? 1 : (n > MAX_WORKERS ? MAX_WORKERS : (unsigned)n);
    }
    if (c.deterministic_seed != 0) {
        c.workers = 1;
    }
    if (c.budget == 0) {
        return tr__fail(TR_EINVAL, "tr_rt_config.budget=0: a poll needs at least 1 (default 128)");
    }
    if (c.max_tasks == 0) {
        return tr__fail(TR_EINVAL, "tr_rt_config.max_tasks=0: at least 1 (default 16 Mi)");
    }
    if (c.sched != TR_SCHED_WS && c.sched != TR_SCHED_RR && c.sched != TR_SCHED_HYBRID) {
        return tr__fail(TR_EINVAL,
                        "tr_rt_config.sched=%d: not a scheduler (TR_SCHED_WS, TR_SCHED_RR or "
                        "TR_SCHED_HYBRID)",
                        (int)c.sched);
    }
    tr_rt *rt = tr__zalloc(sizeof(*rt));
    rt->r_cfg = c;
    if (c.deterministic_seed != 0) {
        rt->r_sched = &tr__sched_det;
    } else if (c.sched == TR_SCHED_RR) {
        rt->r_sched = &tr__sched_rr;
    } else if (c.sched == TR_SCHED_HYBRID) {
        rt->r_sched = &tr__sched_hybrid;
    } else {
        rt->r_sched = &tr__sched_ws;
    }
    rt->r_nworkers = c.workers;
    rv = tr__pool_init(&rt->r_pool, c.workers, c.max_tasks);
    if (rv != TR_OK) {
        tr__free(rt, sizeof(*rt));
        return rv;
    }
    rt->r_inj_lock = (tr__mutex)TR__MUTEX_INIT;
    rt->r_idle_lock = (tr__mutex)TR__MUTEX_INIT;
    rt->r_sleepers = tr__zalloc(sizeof(unsigned) * c.workers);
    rt->r_workers = aligned_alloc(64, sizeof(tr__worker) * c.workers);
    if (rt->r_workers == NULL) {
        tr__panic("out of memory allocating workers");
    }
    memset(rt->r_workers, 0, sizeof(tr__worker) * c.workers);
    for (unsigned i = 0; i < c.workers; i++) {
        tr__worker *w = &rt->r_workers[i];
        w->w_rt = rt;
        w->w_index = i;
        rt->r_sched->init(w);
    }
    rv = tr__reactor_new(rt, c.clock, &rt->r_reactor);
    if (rv != TR_OK) {
        for (unsigned i = 0; i < c.workers; i++) {
            rt->r_sched->fini(&rt->r_workers[i]);
        }
        free(rt->r_workers);
        tr__free(rt->r_sleepers, sizeof(unsigned) * c.workers);
        tr__pool_fini(&rt->r_pool);
        tr__free(rt, sizeof(*rt));
        return rv;
    }
    rt->r_start_ns = tr__now_ns();
    static pthread_once_t res_once = PTHREAD_ONCE_INIT;
    pthread_once(&res_once, coarse_res_init);
    // Workers 1..N-1 run from now on; worker 0 joins inside block_on.
    atomic_store_explicit(&rt->r_idle, (c.workers - 1) * TR__IDLE_UNPARKED_ONE,
                          memory_order_relaxed);
    for (unsigned i = 1; i < c.workers; i++) {
        tr__worker *w = &rt->r_workers[i];
        if (pthread_create(&w->w_thread, NULL, worker_main, w) != 0) {
            tr__panic("cannot start worker thread %u", i);
        }
        char name[16];
        snprintf(name, sizeof(name), "troupe-w%u", i % 1000u);
        pthread_setname_np(w->w_thread, name);
    }
    *out = rt;
    return TR_OK;
}

static const tr_waker_ops main_waker_ops;

static void
main_wake(const tr_waker *wk)
{
    wake_main(((tr__worker *)wk->data)->w_rt);
}

static const tr_waker_ops main_waker_ops = {main_wake};

// hand_off gives worker 0's queued tasks to the others when block_on
// returns, so that nothing waits for the next block_on needlessly.
static void
hand_off(tr__worker *w)
{
    tr__slot *s;
    while ((s = w->w_rt->r_sched->pop(w)) != NULL) {
        tr__inject_push(w->w_rt, &s, 1);
    }
}

tr_err
tr_rt_block_on(tr_rt *rt, void *root, tr_outcome *out)
{
    if (rt == NULL) {
        return TR_EINVAL;
    }
    if (tr__cur != NULL) {
        return TR_EDEADLOCK;
    }
    if (root != NULL && tr__slot_rt(tr__state_slot(root)) != rt) {
        return TR_EINVAL;
    }
    if (atomic_exchange_explicit(&rt->r_in_block_on, 1, memory_order_acquire) != 0) {
        return TR_EBUSY;
    }
    tr__worker *w = &rt->r_workers[0];
    tr__cur = w;
    atomic_fetch_add_explicit(&rt->r_idle, TR__IDLE_UNPARKED_ONE, memory_order_seq_cst);
    tr_join j = TR_JOIN_NONE;
    tr__slot *rs = NULL;
    tr_outcome o = {.err = TR_ESHUTDOWN};
    if (root != NULL) {
        if (tr_task_start(root, &j) == TR_OK) {
            rs = tr__state_slot(root);
            // Wherever root completes, worker 0 must wake to return.
            tr__join_register(rs, (tr_waker){&main_waker_ops, w});
        } else {
            // Refused (a shutdown was requested): its drop has run. Carry
            // the shutdown out below all the same.
            o.err = TR_ECANCELED;
        }
    }
    run_loop(w, rs, true);
    if (w->w_searching) {
        end_searching(w);
    }
    hand_off(w);
    atomic_fetch_sub_explicit(&rt->r_idle, TR__IDLE_UNPARKED_ONE, memory_order_seq_cst);
    // If we drove the reactor last, every other worker may be asleep on its
    // futex: wake one, so that it parks again as the driver and IO and
    // timers keep going while no thread is inside block_on.
    wake_one_sleeper(rt);
    if (rs != NULL) {
        uint64_t word = atomic_load_explicit(&rs->s_word, memory_order_acquire);
        TR__ASSERT(word & TR__W_COMPLETE);
        tr__take_outcome(rs, word, &o);
        tr__slot_release(rt, rs, TR__W_BOXED);
    }
    tr__cur = NULL;
    atomic_store_explicit(&rt->r_in_block_on, 0, memory_order_release);
    bool sd = atomic_load_explicit(&rt->r_shutdown, memory_order_acquire) != TR__SD_NONE;
    if (out != NULL) {
        *out = o;
    } else {
        tr_outcome_fini(&o);
    }
    if (o.err == TR_OK) {
        return TR_OK;
    }
    return sd ? TR_ESHUTDOWN : o.err;
}

void *
tr__rt_ext_install(tr_rt *rt, int which, void *ext, void (*fini)(tr_rt *rt, void *ext))
{
    tr__mutex_lock(&rt->r_idle_lock);
    void *cur = atomic_load_explicit(&rt->r_ext[which], memory_order_relaxed);
    if (cur == NULL) {
        rt->r_ext_fini[which] = fini;
        atomic_store_explicit(&rt->r_ext[which], ext, memory_order_release);
        cur = ext;
    }
    tr__mutex_unlock(&rt->r_idle_lock);
    return cur;
}

tr_err
tr_rt_shutdown(tr_rt *rt, tr_shutdown_mode mode, uint32_t deadline_ms)
{
    if (rt == NULL || (mode != TR_SHUTDOWN_GRACEFUL && mode != TR_SHUTDOWN_IMMEDIATE)) {
        return TR_EINVAL;
    }
    int expect = TR__SD_NONE;
    if (!atomic_compare_exchange_strong_explicit(&rt->r_shutdown, &expect, TR__SD_REQUESTED,
                                                 memory_order_acq_rel, memory_order_acquire)) {
        return TR_ESHUTDOWN;
    }
    tr__cmd *cmd = tr__cmd_new(TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN);
    cmd->c_body.shutdown.mode = mode == TR_SHUTDOWN_IMMEDIATE
                                    ? TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_IMMEDIATE
                                    : TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_GRACEFUL;
    cmd->c_body.shutdown.deadline_ms = deadline_ms;
    return tr__rt_send(rt, cmd);
}

bool
tr_rt_is_shutdown(tr_rt *rt)
{
    return atomic_load_explicit(&rt->r_shutdown, memory_order_acquire) != TR__SD_NONE;
}

static void
destroy_result(tr__slot *s, void *arg)
{
    (void)arg;
    uint64_t word = atomic_load_explicit(&s->s_word, memory_order_acquire);
    if ((word & (TR__W_LIVE | TR__W_COMPLETE | TR__W_BOXED)) ==
            (TR__W_LIVE | TR__W_COMPLETE | TR__W_BOXED) &&
        s->s_result.box.dtor != NULL) {
        s->s_result.box.dtor(s->s_result.box.ptr);
    }
}

void
tr_rt_free(tr_rt *rt)
{
    if (rt == NULL) {
        return;
    }
    TR__ASSERT(atomic_load_explicit(&rt->r_in_block_on, memory_order_acquire) == 0);
    // Act as worker 0 while cancelling, so frees go to its shard.
    tr__worker *saved = tr__cur;
    tr__cur = &rt->r_workers[0];
    if (atomic_load_explicit(&rt->r_shutdown, memory_order_acquire) != TR__SD_DONE) {
        atomic_store_explicit(&rt->r_shutdown, TR__SD_CANCELLING, memory_order_release);
        stop_others(rt);
        cancel_all(&rt->r_workers[0]);
        atomic_store_explicit(&rt->r_shutdown, TR__SD_DONE, memory_order_release);
    } else {
        stop_others(rt);
        cancel_all(&rt->r_workers[0]); // commands that came after the end
    }
    // Results still waiting for a join handle that will never be used.
    tr__pool_foreach(&rt->r_pool, destroy_result, NULL);
    tr__cur = saved;
    atomic_store_explicit(&rt->r_exit, 1, memory_order_release);
    tr__futex_wake(&rt->r_exit, INT32_MAX);
    for (unsigned i = 1; i < rt->r_nworkers; i++) {
        pthread_join(rt->r_workers[i].w_thread, NULL);
    }
    // Modules, last installed first (no task is left to use them).
    for (int i = TR__EXT_COUNT - 1; i >= 0; i--) {
        void *ext = atomic_load_explicit(&rt->r_ext[i], memory_order_acquire);
        if (ext != NULL) {
            rt->r_ext_fini[i](rt, ext);
        }
    }
    tr__reactor_free(rt->r_reactor);
    for (unsigned i = 0; i < rt->r_nworkers; i++) {
        rt->r_sched->fini(&rt->r_workers[i]);
    }
    if (rt->r_inj_buf != NULL) {
        tr__free(rt->r_inj_buf, sizeof(*rt->r_inj_buf) * rt->r_inj_cap);
    }
    tr__pool_fini(&rt->r_pool);
    free(rt->r_workers);
    tr__free(rt->r_sleepers, sizeof(unsigned) * rt->r_nworkers);
    tr__free(rt, sizeof(*rt));
}

void
tr_rt_get_stats(tr_rt *rt, tr_rt_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->spawned = atomic_load_explicit(&rt->r_ext_spawned, memory_order_relaxed);
    for (unsigned i = 0; i < rt->r_nworkers; i++) {
        tr__worker *w = &rt->r_workers[i];
        out->spawned += atomic_load_explicit(&w->w_spawned, memory_order_relaxed);
        out->completed += atomic_load_explicit(&w->w_completed, memory_order_relaxed);
        out->cancelled += atomic_load_explicit(&w->w_cancelled, memory_order_relaxed);
        out->polls += atomic_load_explicit(&w->w_polls, memory_order_relaxed);
        out->commands += atomic_load_explicit(&w->w_commands, memory_order_relaxed);
        out->steals += atomic_load_explicit(&w->w_steals, memory_order_relaxed);
        out->parks += atomic_load_explicit(&w->w_parks, memory_order_relaxed);
    }
    out->live_tasks = tr__pool_live(&rt->r_pool);
    tr__pool_usage(&rt->r_pool, &out->pool_slots, &out->pool_bytes);
    out->workers = rt->r_nworkers;
    out->sched = rt->r_cfg.sched;
    out->deterministic_seed = rt->r_cfg.deterministic_seed;
}

tr_err
tr_rt_worker_stats(tr_rt *rt, unsigned i, tr_worker_stats *out)
{
    if (rt == NULL || out == NULL || i >= rt->r_nworkers) {
        return TR_EINVAL;
    }
    tr__worker *w = &rt->r_workers[i];
    out->polls = atomic_load_explicit(&w->w_polls, memory_order_relaxed);
    out->steals = atomic_load_explicit(&w->w_steals, memory_order_relaxed);
    out->stolen = atomic_load_explicit(&w->w_stolen, memory_order_relaxed);
    out->parks = atomic_load_explicit(&w->w_parks, memory_order_relaxed);
    out->injector_pops = atomic_load_explicit(&w->w_inject_pops, memory_order_relaxed);
    out->lifo_hits = atomic_load_explicit(&w->w_lifo_hits, memory_order_relaxed);
    out->queue_len = rt->r_sched->len(w);
    return TR_OK;
}

// ---------------------------------------------------------------------------
// Dump.

const char *
tr_task_state_name(tr_task_state s)
{
    static const char *const names[] = {"prepared", "idle",       "scheduled",
                                        "running",  "cancelling", "complete"};
    if ((unsigned)s >= sizeof(names) / sizeof(names[0])) {
        return "?";
    }
    return names[s];
}

typedef struct foreach_arg {
    void (*fn)(const tr_task_info *info, void *arg);
    void *arg;
    uint64_t now_ms;
} foreach_arg;

static void
foreach_one(tr__slot *s, void *arg)
{
    foreach_arg *fa = arg;
    uint64_t word = atomic_load_explicit(&s->s_word, memory_order_acquire);
    if (!(word & TR__W_LIVE)) {
        return;
    }
    const tr_task_spec *spec = atomic_load_explicit(&s->s_spec, memory_order_relaxed);
    tr_task_info info;
    info.id.id = tr__slot_key(s, word);
    info.name = (spec != NULL && spec->name != NULL) ? spec->name : "?";
    if (!(word & TR__W_STARTED)) {
        info.state = TR_TASK_PREPARED;
    } else if (word & TR__W_COMPLETE) {
        info.state = TR_TASK_COMPLETE;
    } else if (word & TR__W_CANCEL) {
        info.state = TR_TASK_CANCELLING;
    } else if (word & TR__W_RUNNING) {
        info.state = TR_TASK_RUNNING;
    } else if (word & TR__W_SCHED) {
        info.state = TR_TASK_SCHEDULED;
    } else {
        info.state = TR_TASK_IDLE;
    }
    info.polls = atomic_load_explicit(&s->s_polls, memory_order_relaxed);
    info.sleeps = (uint32_t)((word & TR__W_SLEEP_MASK) >> TR__W_SLEEP_SHIFT);
    uint32_t last = atomic_load_explicit(&s->s_last_poll_ms, memory_order_relaxed);
    info.idle_ms = (info.polls == 0 || fa->now_ms < last) ? 0 : fa->now_ms - last;
    fa->fn(&info, fa->arg);
}

void
tr_rt_foreach_task(tr_rt *rt, void (*fn)(const tr_task_info *info, void *arg), void *arg)
{
    foreach_arg fa = {fn, arg, (tr__now_ns() - rt->r_start_ns) / 1000000u};
    tr__pool_foreach(&rt->r_pool, foreach_one, &fa);
}

static void
dump_one(const tr_task_info *info, void *arg)
{
    fprintf((FILE *)arg, "  %016llx  %-24s %-10s polls=%-8u sleeps=%-6u idle=%llums\n",
            (unsigned long long)info->id.id, info->name, tr_task_state_name(info->state),
            info->polls, info->sleeps, (unsigned long long)info->idle_ms);
}

void
tr_rt_dump(tr_rt *rt, FILE *f)
{
    tr_rt_stats st;
    tr_rt_get_stats(rt, &st);
    fprintf(f, "troupe runtime %p: %u worker(s), scheduler %s%s, %llu live task(s)\n", (void *)rt,
            st.workers, tr_sched_name(st.sched), st.deterministic_seed ? " (deterministic)" : "",
            (unsigned long long)st.live_tasks);
    for (unsigned i = 0; i < rt->r_nworkers; i++) {
        tr_worker_stats ws;
        tr_rt_worker_stats(rt, i, &ws);
        fprintf(f,
                "  worker %u: polls=%llu steals=%llu stolen=%llu parks=%llu injector=%llu "
                "lifo=%llu queue=%llu\n",
                i, (unsigned long long)ws.polls, (unsigned long long)ws.steals,
                (unsigned long long)ws.stolen, (unsigned long long)ws.parks,
                (unsigned long long)ws.injector_pops, (unsigned long long)ws.lifo_hits,
                (unsigned long long)ws.queue_len);
    }
    tr_rt_foreach_task(rt, dump_one, f);
    fprintf(f,
            "  spawned=%llu completed=%llu cancelled=%llu polls=%llu commands=%llu "
            "pool_slots=%llu pool_bytes=%llu\n",
            (unsigned long long)st.spawned, (unsigned long long)st.completed,
            (unsigned long long)st.cancelled, (unsigned long long)st.polls,
            (unsigned long long)st.commands, (unsigned long long)st.pool_slots,
            (unsigned long long)st.pool_bytes);
}
