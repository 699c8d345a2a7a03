// Design notes.
//
// Workers. tr_rt_new starts workers-1 threads; the thread inside
// tr_rt_block_on is worker 0. Every worker runs the same loop: every 32
// polls it drains the inbox and takes a task from the injector first (so
// outside work is not starved by a busy local queue), otherwise it asks the
// scheduler (sched/) for its next local task, then the injector, then it
// searches other workers' queues, then it parks.
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
#define _GNU_SOURCE // pthread_setname_np
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "exec/exec.h"
#include "reactor/reactor.h"

// ---------------------------------------------------------------------------
// Shutdown.

// active_tasks counts started tasks that have not completed.
static uint64_t
active_tasks(tr_rt *rt)
{
    // Pairs with the seq_cst CAS after which a worker counts a completion
    // and then reads r_shutdown (task.c complete(), tr__run_loop): the caller
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
    if (tr__slot_claim_cancel(s)) {
        tr__task_cancel_now(arg, s);
    }
}

// retire takes a popped slot out of the queues during tr__cancel_all: complete
// ones just leave; one queued since the sweep (started late by whoever
// prepared it) is cancelled, never polled. A queued slot is never free, so
// the flag lands on the right task.
static void
retire(tr__worker *w, tr__slot *s)
{
    tr__slot_flag_cancel(s);
    tr__task_run(w, s);
}

// tr__cancel_all completes every started task as cancelled, running its drop
// function, and empties every queue. The caller is w (worker 0, or the
// thread in tr_rt_free acting as it) and every other worker has stopped.
void
tr__cancel_all(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    for (;;) {
        tr__wait_starts(rt);
        tr__drain_inbox(w);
        tr__pool_foreach(&rt->r_pool, sweep_one, w);
        bool again = true;
        while (again) {
            again = false;
            tr__slot *s;
            while ((s = tr__inject_pop(w, UINT32_MAX)) != NULL) {
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

// tr__stop_others makes every worker thread leave its loop (r_shutdown is at
// least TR__SD_CANCELLING) and waits until they all have.
void
tr__stop_others(tr_rt *rt)
{
    uint32_t want = rt->r_nworkers - 1;
    tr__unpark_all(rt);
    uint32_t n;
    // Pairs with the release add in tr__worker_main: their queues are ours now.
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
    tr__stop_others(rt);
    tr__cancel_all(w);
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

void
tr__coarse_res_init(void)
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
    tr__drain_inbox(w);
    refresh_clock(w);
    w->w_timed = tr__rx_watching(w->w_rt->r_reactor);
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
        uint64_t due = tr__rx_next_ns(w->w_rt->r_reactor);
        if (due < c + 2 * coarse_res_ns && tr__now_ns() >= due) {
            return w->w_rt->r_cfg.deterministic_seed == 0;
        }
    }
    return false;
}

static bool
root_done(tr__slot *root)
{
    return root != NULL && tr__slot_is_complete(root);
}

static tr__slot *
find_work(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    const tr__sched_ops *ops = rt->r_sched;
    tr__slot *s;
    // Fairness: now and then the injector goes first.
    if ((w->w_tick & 31) == 0 && (s = tr__inject_pop(w, 1)) != NULL) {
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
    if ((s = tr__inject_pop(w, batch)) != NULL) {
        return s;
    }
    if (ops->steal != NULL && tr__try_start_searching(w)) {
        if ((s = ops->steal(w)) != NULL) {
            return s;
        }
        return tr__inject_pop(w, batch);
    }
    return NULL;
}

// run_deferred runs the worker's deferral (tr_worker_defer), if any: true
// when one ran.
static inline bool
run_deferred(tr__worker *w)
{
    void (*fn)(void *) = w->w_defer_fn;
    if (TR__LIKELY(fn == NULL)) {
        return false;
    }
    w->w_defer_fn = NULL;
    fn(w->w_defer_arg);
    return true;
}

bool
tr_worker_defer(void (*fn)(void *), void *arg)
{
    tr__worker *w = tr__cur;
    if (w == NULL || !w->w_in_loop || fn == NULL) {
        return false;
    }
    if (w->w_defer_fn == NULL) {
        w->w_defer_fn = fn;
        w->w_defer_arg = arg;
        return true;
    }
    return w->w_defer_fn == fn && w->w_defer_arg == arg;
}

static void run_loop(tr__worker *w, tr__slot *root, bool main);

void
tr__run_loop(tr__worker *w, tr__slot *root, bool main)
{
    w->w_in_loop = true;
    run_loop(w, root, main);
    run_deferred(w);
    w->w_in_loop = false;
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
    tr__drain_inbox(w);
    for (;;) {
        if ((++w->w_tick & 31) == 0) {
            run_deferred(w);
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
                tr__end_searching(w);
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
                tr__wake_main(rt);
            }
            continue;
        }
        if (run_deferred(w) || tr__drain_inbox(w)) {
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
        tr__park_worker(w, timeout);
        refresh_clock(w);
    }
}

void *
tr__worker_main(void *arg)
{
    tr__worker *w = arg;
    tr_rt *rt = w->w_rt;
    tr__cur = w;
    tr__run_loop(w, NULL, false);
    if (w->w_searching) {
        tr__end_searching(w);
    }
    // Stopped: hand our queues to the canceller. Pairs with the acquire
    // load in tr__stop_others.
    atomic_fetch_add_explicit(&rt->r_stopped, 1, memory_order_release);
    tr__futex_wake(&rt->r_stopped, INT32_MAX);
    uint32_t x;
    while ((x = atomic_load_explicit(&rt->r_exit, memory_order_acquire)) == 0) {
        tr__futex_wait(&rt->r_exit, x, UINT64_MAX);
    }
    tr__cur = NULL;
    return NULL;
}
