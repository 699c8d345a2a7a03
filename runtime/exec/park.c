// Design notes.
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
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "exec/exec.h"
#include "reactor/reactor.h"

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
        tr__rx_wake_worker(w->w_rt->r_reactor, w);
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
    // seq_cst pairs with the announcement in tr__park_worker (see the notes).
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
    // Rather one that sleeps on its futex than the reactor's driver: the
    // driver stays in its wait, so no one need wake again to take it over
    // (see tr__end_searching).
    tr__worker *t = NULL;
    for (unsigned i = rt->r_nsleepers; i-- > 0;) {
        t = &rt->r_workers[rt->r_sleepers[i]];
        if (atomic_load_explicit(&t->w_park, memory_order_relaxed) != TR__PARK_DRIVER) {
            break;
        }
    }
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
    // seq_cst pairs with the announcement in tr__park_worker: the caller pushed
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

// tr__wake_main wakes worker 0 for something no queue shows (its root
// completed elsewhere, a graceful shutdown may be done, a Shutdown came):
// tr__unpark_worker alone would miss a worker 0 that has looked but not
// yet announced it sleeps. The NOTIFIED state sticks, so its next park
// returns at once and it looks again.
void
tr__wake_main(tr_rt *rt)
{
    futex_unpark(&rt->r_workers[0]);
}

void
tr__wake_one_sleeper(tr_rt *rt)
{
    tr__mutex_lock(&rt->r_idle_lock);
    tr__worker *t = rt->r_nsleepers ? &rt->r_workers[rt->r_sleepers[rt->r_nsleepers - 1]] : NULL;
    tr__mutex_unlock(&rt->r_idle_lock);
    if (t != NULL) {
        futex_unpark(t); // it stays on the stack; its park looks again
    }
}

void
tr__unpark_all(tr_rt *rt)
{
    for (unsigned i = 0; i < rt->r_nworkers; i++) {
        tr__unpark_worker(&rt->r_workers[i]);
        futex_unpark(&rt->r_workers[i]);
    }
}

bool
tr__try_start_searching(tr__worker *w)
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

// more_work: after w took a task, is there work a woken worker could take
// (the injector, or any worker's queue, for thieves)? A push skipped its
// wake while w searched, counting on w to pass it on: it shows here.
static bool
more_work(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    if (atomic_load_explicit(&rt->r_inj_len, memory_order_seq_cst) != 0) {
        return true;
    }
    if (rt->r_sched->stealable == NULL) {
        return rt->r_sched->len(w) > 0;
    }
    for (unsigned i = 0; i < rt->r_nworkers; i++) {
        if (rt->r_sched->stealable(&rt->r_workers[i]) > 0) {
            return true;
        }
    }
    return false;
}

void
tr__end_searching(tr__worker *w)
{
    tr_rt *rt = w->w_rt;
    w->w_searching = false;
    uint32_t prev =
        atomic_fetch_sub_explicit(&rt->r_idle, TR__IDLE_SEARCHING_ONE, memory_order_seq_cst);
    bool was_driver = w->w_was_driver;
    w->w_was_driver = false;
    if ((prev & 0xffff) == 1 && (more_work(w) || (was_driver && tr__rx_watching(rt->r_reactor)))) {
        // The last searcher found work: wake a helper when there is more,
        // or when this worker leaves the reactor's wait for it while
        // descriptors or timers are watched (the helper, finding nothing,
        // parks as the driver, so that IO and timers go on during a long
        // poll here). Waking one for nothing else costs a futex wake and a
        // sleep per message on a request/reply path (remote_ping_pong).
        tr__notify_parked(rt);
    }
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
    if (rt->r_sched->stealable != NULL) {
        for (unsigned i = 0; i < rt->r_nworkers; i++) {
            if (rt->r_sched->stealable(&rt->r_workers[i]) > 0) {
                return true;
            }
        }
    }
    return false;
}

void
tr__park_worker(tr__worker *w, uint64_t timeout_ns)
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
    w->w_was_driver = driver;

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

bool
tr__park_as_driver(tr__worker *w)
{
    uint32_t expect = TR__PARK_EMPTY;
    if (atomic_compare_exchange_strong_explicit(&w->w_park, &expect, TR__PARK_DRIVER,
                                                memory_order_seq_cst, memory_order_seq_cst)) {
        tr__counter_add(&w->w_parks, 1);
        return true;
    }
    return false;
}

void
tr__park_driver_done(tr__worker *w)
{
    atomic_store_explicit(&w->w_park, TR__PARK_EMPTY, memory_order_seq_cst);
}
