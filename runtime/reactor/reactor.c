// Design notes.
//
// The reactor is driven by whichever worker parks first. A parking worker
// that finds nothing to run tries the driver lock (rx_drv); the winner
// waits in epoll_wait instead of on its futex, with the next timer deadline
// as the timeout, and its park state says so (TR__PARK_DRIVER in exec/park.c), so
// that an unpark writes the eventfd instead of a futex wake: the eventfd is
// written only while the driver is blocked. Other parking workers sleep on
// their futexes as before. Busy workers borrow the driver without blocking
// every TR__RX_MAINT_TICKS polls (when anything is registered or armed), so
// IO and timers progress while every worker is busy. A worker that parked
// on its futex while the driver was taken is woken to take it over when
// the holder goes back to running tasks (see drv_unlock), so a long poll
// on the driver's worker does not stall everyone else's IO. With one
// worker, that worker drives epoll itself.
//
// Events are collected while the driver is still "parked" (on the sleepers
// stack) and the wakes run once it has left the stack (park_done), so that
// the tasks woken go to a worker that counts as awake.
//
// Registrations live in a slab of fixed chunks that are never freed while
// the runtime lives (type-stable), named by {index, generation}; the key is
// the epoll user data, so an event for a slot that was closed and reused is
// recognised by its generation and dropped.
//
// Readiness (see io.c for the operations): the driver ORs the event's
// direction bits into io_ready with its tick, then takes the waiters of
// those directions under io_lock and wakes them. An operation that sees
// EAGAIN clears its direction only if the tick is still the one it read
// before the system call, then registers its waker under io_lock after
// checking readiness once more: either it sees the new event, or the
// driver sees its waker. Error and hang-up wake both directions.
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec/exec.h"
#include "reactor/reactor.h"

// The backends: adding one is a file and a row.
static const tr__backend_ops *const backends[] = {&tr__backend_epoll};

const tr__backend_ops *
tr__backend_find(const char *name)
{
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
        if (name == NULL || strcmp(name, backends[i]->name) == 0) {
            return backends[i];
        }
    }
    return NULL;
}

static const char *
backend_name_at(size_t i)
{
    return backends[i]->name;
}

void
tr__backend_names(char *buf, size_t len)
{
    tr__name_list(buf, len, sizeof(backends) / sizeof(backends[0]), backend_name_at);
}

// ---------------------------------------------------------------------------
// Lifecycle.

tr_err
tr__reactor_new(tr_rt *rt, struct tr_clock *clock, const tr__backend_ops *ops, tr__reactor **out)
{
    tr__reactor *rx = tr__zalloc(sizeof(*rx));
    rx->rx_rt = rt;
    rx->rx_ops = ops;
    rx->rx_be = tr__zalloc(ops->state_size);
    rx->rx_chunks = tr__zalloc(sizeof(*rx->rx_chunks) * TR__REG_MAX_CHUNKS);
    rx->rx_tick = 1;
    int e = rx->rx_ops->init(rx);
    tr_err rv = e != 0 ? tr__errno(e) : TR_OK;
    if (rv == TR_OK && clock != NULL && (rv = tr__clock_attach(clock, rx)) != TR_OK) {
        rx->rx_ops->fini(rx);
    }
    if (rv != TR_OK) {
        tr__free(rx->rx_chunks, sizeof(*rx->rx_chunks) * TR__REG_MAX_CHUNKS);
        tr__free(rx->rx_be, ops->state_size);
        tr__free(rx, sizeof(*rx));
        return rv;
    }
    rx->rx_clock = clock;
    rx->rx_base_ns = tr__rx_now(rx);
    atomic_init(&rx->rx_next_ns, UINT64_MAX);
    *out = rx;
    return TR_OK;
}

static void
waitq_fini(tr__waitq *q)
{
    if (q->q_more != NULL) {
        tr__free(q->q_more, sizeof(tr_waker) * q->q_cap);
    }
    memset(q, 0, sizeof(*q));
}

void
tr__reactor_free(tr__reactor *rx)
{
    // Registrations nobody closed: close their descriptors (ours only).
    for (uint32_t c = 0; c < rx->rx_nchunks; c++) {
        tr_io *chunk = atomic_load_explicit(&rx->rx_chunks[c], memory_order_relaxed);
        for (uint32_t i = 0; i < TR__REG_CHUNK; i++) {
            tr_io *io = &chunk[i];
            if (atomic_load_explicit(&io->io_refs, memory_order_relaxed) != 0) {
                int fd = atomic_load_explicit(&io->io_fd, memory_order_relaxed);
                if (fd >= 0 && !(io->io_flags & TR__IOF_BORROWED)) {
                    close(fd);
                }
            }
            waitq_fini(&io->io_wait[0]);
            waitq_fini(&io->io_wait[1]);
        }
        tr__free(chunk, sizeof(tr_io) * TR__REG_CHUNK);
    }
    tr__free(rx->rx_chunks, sizeof(*rx->rx_chunks) * TR__REG_MAX_CHUNKS);
    if (rx->rx_fire != NULL) {
        tr__free(rx->rx_fire, sizeof(tr_waker) * rx->rx_fire_cap);
    }
    if (rx->rx_clock != NULL) {
        tr__clock_detach(rx->rx_clock);
    }
    rx->rx_ops->fini(rx);
    tr__free(rx->rx_be, rx->rx_ops->state_size);
    tr__free(rx, sizeof(*rx));
}

// ---------------------------------------------------------------------------
// The registration slab.

tr_io *
tr__reg_alloc(tr__reactor *rx)
{
    tr__mutex_lock(&rx->rx_reg_lock);
    tr_io *io = rx->rx_free;
    if (io == NULL) {
        if (rx->rx_nchunks == TR__REG_MAX_CHUNKS) {
            tr__mutex_unlock(&rx->rx_reg_lock);
            return NULL;
        }
        tr_io *chunk = tr__zalloc(sizeof(tr_io) * TR__REG_CHUNK);
        uint32_t base = rx->rx_nchunks * TR__REG_CHUNK;
        for (uint32_t i = TR__REG_CHUNK; i-- > 0;) {
            chunk[i].io_index = base + i;
            chunk[i].io_rx = rx;
            chunk[i].io_rt = rx->rx_rt;
            atomic_init(&chunk[i].io_fd, -1);
            atomic_init(&chunk[i].io_gen, 1);
            chunk[i].io_free_next = rx->rx_free;
            rx->rx_free = &chunk[i];
        }
        // Release: the driver looks chunks up without the lock.
        atomic_store_explicit(&rx->rx_chunks[rx->rx_nchunks], chunk, memory_order_release);
        rx->rx_nchunks++;
        io = rx->rx_free;
    }
    rx->rx_free = io->io_free_next;
    io->io_free_next = NULL;
    tr__mutex_unlock(&rx->rx_reg_lock);
    atomic_fetch_add_explicit(&rx->rx_nregs, 1, memory_order_relaxed);
    return io;
}

void
tr__reg_free(tr_io *io)
{
    tr__reactor *rx = io->io_rx;
    // Under io_lock: the driver may still be handling an event it looked up
    // before the generation changes.
    tr__mutex_lock(&io->io_lock);
    waitq_fini(&io->io_wait[0]);
    waitq_fini(&io->io_wait[1]);
    io->io_armed = 0;
    io->io_busy = 0;
    // A new generation, under io_lock: late events for the old one are
    // dropped (tr__io_event checks it again under the lock).
    uint32_t g = atomic_load_explicit(&io->io_gen, memory_order_relaxed) + 1;
    atomic_store_explicit(&io->io_gen, g == 0 ? 1 : g, memory_order_release);
    tr__mutex_unlock(&io->io_lock);
    tr__mutex_lock(&rx->rx_reg_lock);
    io->io_free_next = rx->rx_free;
    rx->rx_free = io;
    tr__mutex_unlock(&rx->rx_reg_lock);
    atomic_fetch_sub_explicit(&rx->rx_nregs, 1, memory_order_relaxed);
}

static tr_io *
reg_lookup(tr__reactor *rx, uint64_t key)
{
    uint32_t index = (uint32_t)key;
    uint32_t c = index / TR__REG_CHUNK;
    if (c >= TR__REG_MAX_CHUNKS) {
        return NULL;
    }
    tr_io *chunk = atomic_load_explicit(&rx->rx_chunks[c], memory_order_acquire);
    if (chunk == NULL) {
        return NULL;
    }
    tr_io *io = &chunk[index % TR__REG_CHUNK];
    if (atomic_load_explicit(&io->io_gen, memory_order_acquire) != (uint32_t)(key >> 32)) {
        return NULL; // closed (and maybe reused) since the event was queued
    }
    return io;
}

// ---------------------------------------------------------------------------
// Waiters.

void
tr__fire_push(tr__reactor *rx, tr_waker wk)
{
    if (rx->rx_nfire == rx->rx_fire_cap) {
        size_t cap = rx->rx_fire_cap ? 2 * rx->rx_fire_cap : 64;
        tr_waker *n = tr__alloc(sizeof(tr_waker) * cap);
        if (rx->rx_nfire) {
            memcpy(n, rx->rx_fire, sizeof(tr_waker) * rx->rx_nfire);
        }
        if (rx->rx_fire) {
            tr__free(rx->rx_fire, sizeof(tr_waker) * rx->rx_fire_cap);
        }
        rx->rx_fire = n;
        rx->rx_fire_cap = cap;
    }
    rx->rx_fire[rx->rx_nfire++] = wk;
}

// waitq_add adds wk unless it is there already. Under io_lock.
static void
waitq_add(tr__waitq *q, tr_waker wk)
{
    if (q->q_n == 0) {
        q->q_first = wk;
        q->q_n = 1;
        return;
    }
    if (tr_waker_eq(q->q_first, wk)) {
        return;
    }
    for (uint32_t i = 0; i + 1 < q->q_n; i++) {
        if (tr_waker_eq(q->q_more[i], wk)) {
            return;
        }
    }
    if (q->q_n - 1 == q->q_cap) {
        uint32_t cap = q->q_cap ? 2 * q->q_cap : 4;
        tr_waker *n = tr__alloc(sizeof(tr_waker) * cap);
        if (q->q_cap) {
            memcpy(n, q->q_more, sizeof(tr_waker) * q->q_cap);
            tr__free(q->q_more, sizeof(tr_waker) * q->q_cap);
        }
        q->q_more = n;
        q->q_cap = cap;
    }
    q->q_more[q->q_n - 1] = wk;
    q->q_n++;
}

// waitq_take moves every waker of q to the driver's batch. Under io_lock.
static void
waitq_take(tr__reactor *rx, tr__waitq *q)
{
    if (q->q_n == 0) {
        return;
    }
    tr__fire_push(rx, q->q_first);
    for (uint32_t i = 0; i + 1 < q->q_n; i++) {
        tr__fire_push(rx, q->q_more[i]);
    }
    q->q_n = 0;
}

bool
tr__io_wait(tr_io *io, int dir, tr_waker wk)
{
    tr__timed_here(io->io_rt); // a waiter: the worker watches the clock
    uint64_t bit = dir == TR_IO_READ ? TR__RD_READ : TR__RD_WRITE;
    tr__mutex_lock(&io->io_lock);
    uint64_t r = atomic_load_explicit(&io->io_ready, memory_order_acquire);
    if (r & (bit | TR__RD_CLOSED)) {
        tr__mutex_unlock(&io->io_lock);
        return false;
    }
    waitq_add(&io->io_wait[dir], wk);
    // (ONESHOT: not while a claimed call is in flight: the level-triggered
    // registration would report the data that call is about to take; the
    // call re-arms when it ends.)
    if ((io->io_flags & TR__IOF_ONESHOT) && !(io->io_armed & (1u << dir)) &&
        !(io->io_busy & (1u << dir))) {
        io->io_armed |= 1u << dir;
        int e = io->io_rx->rx_ops->rearm(io->io_rx, io, io->io_armed);
        if (e != 0) {
            // Cannot watch it any more (closed behind our back): let the
            // operation run and report the error.
            io->io_armed &= ~(1u << dir);
            atomic_fetch_or_explicit(&io->io_ready, bit, memory_order_release);
            tr__mutex_unlock(&io->io_lock);
            return false;
        }
    }
    tr__mutex_unlock(&io->io_lock);
    return true;
}

bool
tr__io_claim(tr_io *io, int dir)
{
    uint64_t bit = dir == TR_IO_READ ? TR__RD_READ : TR__RD_WRITE;
    tr__mutex_lock(&io->io_lock);
    uint64_t r = atomic_load_explicit(&io->io_ready, memory_order_acquire);
    bool ok = (r & bit) && !(io->io_busy & (1u << dir));
    if (ok) {
        atomic_fetch_and_explicit(&io->io_ready, ~bit, memory_order_acq_rel);
        io->io_busy |= 1u << dir;
    }
    tr__mutex_unlock(&io->io_lock);
    return ok;
}

void
tr__io_unclaim(tr_io *io, int dir)
{
    tr__mutex_lock(&io->io_lock);
    io->io_busy &= ~(1u << dir);
    if (io->io_wait[dir].q_n != 0 && !(io->io_armed & (1u << dir))) {
        io->io_armed |= 1u << dir;
        if (io->io_rx->rx_ops->rearm(io->io_rx, io, io->io_armed) != 0) {
            io->io_armed &= ~(1u << dir);
        }
    }
    tr__mutex_unlock(&io->io_lock);
}

void
tr__io_wake_all(tr_io *io)
{
    tr__mutex_lock(&io->io_lock);
    tr__waitq saved[2] = {io->io_wait[0], io->io_wait[1]};
    memset(io->io_wait, 0, sizeof(io->io_wait));
    tr__mutex_unlock(&io->io_lock);
    for (int d = 0; d < 2; d++) {
        tr__waitq *q = &saved[d];
        if (q->q_n != 0) {
            tr_wake(q->q_first);
        }
        for (uint32_t i = 0; i + 1 < q->q_n; i++) {
            tr_wake(q->q_more[i]);
        }
        waitq_fini(q);
    }
}

void
tr__io_event(tr__reactor *rx, uint64_t key, uint64_t bits)
{
    tr_io *io = reg_lookup(rx, key);
    if (io == NULL || bits == 0) {
        return;
    }
    tr__mutex_lock(&io->io_lock);
    if (atomic_load_explicit(&io->io_gen, memory_order_relaxed) != (uint32_t)(key >> 32)) {
        tr__mutex_unlock(&io->io_lock); // freed (and maybe reused) since the lookup
        return;
    }
    uint64_t tick = (uint64_t)rx->rx_tick << TR__RD_TICK_SHIFT;
    uint64_t old = atomic_load_explicit(&io->io_ready, memory_order_relaxed);
    uint64_t nw;
    do {
        nw = ((old | bits) & ~TR__RD_TICK_MASK) | tick;
    } while (!atomic_compare_exchange_weak_explicit(&io->io_ready, &old, nw, memory_order_acq_rel,
                                                    memory_order_relaxed));
    if (bits & TR__RD_READ) {
        waitq_take(rx, &io->io_wait[TR_IO_READ]);
    }
    if (bits & TR__RD_WRITE) {
        waitq_take(rx, &io->io_wait[TR_IO_WRITE]);
    }
    if (io->io_flags & TR__IOF_ONESHOT) {
        // The one-shot registration is disarmed now; re-arm it for the
        // directions that still have waiters (an event for one direction
        // disarms both).
        io->io_armed = 0;
        uint32_t want = 0;
        for (int d = 0; d < 2; d++) {
            if (io->io_wait[d].q_n != 0 && !(io->io_busy & (1u << d))) {
                want |= 1u << d;
            }
        }
        if (want != 0 && rx->rx_ops->rearm(rx, io, want) == 0) {
            io->io_armed = want;
        }
    }
    tr__mutex_unlock(&io->io_lock);
}

// ---------------------------------------------------------------------------
// The driver.

static bool
drv_trylock(tr__reactor *rx, tr__worker *w)
{
    uint32_t expect = 0;
    return atomic_compare_exchange_strong_explicit(&rx->rx_drv, &expect, tr__worker_index(w) + 1,
                                                   memory_order_seq_cst, memory_order_seq_cst);
}

// drv_unlock releases the driver. A worker that found the driver taken
// while it parked sleeps on its futex and left its index in rx_drv_missed.
// handoff (the releaser goes on to run tasks: after a maintenance turn, or
// after a park whose wait found work): wake that worker, so that it parks
// again and takes the driver; else IO and timers would wait for this
// worker's next maintenance, or for the end of a long poll. The parker
// stores rx_drv_missed, then tries the lock once more; we release, then
// read rx_drv_missed (both seq_cst): one of the two sees the other. A park
// that found nothing (woken for work another queue shows) keeps the word
// for a later hand-off. Measured: tcp_echo on two workers is not slower
// with the hand-off (292 k against 280 k msgs/s).
static void
drv_unlock(tr__reactor *rx, bool handoff)
{
    atomic_store_explicit(&rx->rx_drv, 0, memory_order_seq_cst);
    if (!handoff) {
        return; // leave rx_drv_missed for a later hand-off
    }
    uint32_t missed = atomic_exchange_explicit(&rx->rx_drv_missed, 0, memory_order_seq_cst);
    if (missed != 0) {
        tr__park_notify(tr__rt_worker(rx->rx_rt, missed - 1));
    }
}

// fire_all wakes the batch a turn collected. Driver only.
static void
fire_all(tr__reactor *rx)
{
    for (size_t i = 0; i < rx->rx_nfire; i++) {
        tr_wake(rx->rx_fire[i]);
    }
    rx->rx_nfire = 0;
}

static int
ms_ceil(uint64_t ns)
{
    uint64_t ms = (ns + TR_NS_PER_MS - 1) / TR_NS_PER_MS;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

bool
tr__reactor_park(tr__worker *w, uint64_t timeout_ns)
{
    tr__reactor *rx = tr__rt_reactor(tr__worker_rt(w));
    if (!drv_trylock(rx, w)) {
        // Leave word for the holder (see drv_unlock), then look once more.
        atomic_store_explicit(&rx->rx_drv_missed, tr__worker_index(w) + 1, memory_order_seq_cst);
        if (!drv_trylock(rx, w)) {
            return false;
        }
        uint32_t me = tr__worker_index(w) + 1;
        atomic_compare_exchange_strong_explicit(&rx->rx_drv_missed, &me, 0, memory_order_relaxed,
                                                memory_order_relaxed);
    }
    atomic_store_explicit(&rx->rx_drv_worker, w, memory_order_relaxed);
    tr__mutex_lock(&rx->rx_tm_lock);
    uint64_t next = tr__timers_next(rx);
    // Announce the sleep (seq_cst) before reading the clock: a virtual
    // clock's advance stores the time, then reads this (see tr_clock_advance).
    atomic_store_explicit(&rx->rx_drv_until, next == 0 ? 1 : next, memory_order_seq_cst);
    uint64_t now = tr__rx_now(rx);
    tr__mutex_unlock(&rx->rx_tm_lock);

    int tmo = -1;
    if (next != UINT64_MAX) {
        uint64_t dl = rx->rx_base_ns + next * TR_NS_PER_MS;
        if (dl <= now) {
            tmo = 0;
        } else if (rx->rx_clock == NULL) {
            tmo = ms_ceil(dl - now);
        }
    }
    if (timeout_ns != UINT64_MAX) {
        int t = ms_ceil(timeout_ns);
        if (tmo < 0 || t < tmo) {
            tmo = t;
        }
    }
    if (!tr__park_as_driver(w)) {
        tmo = 0; // notified already: only collect what is there
    }
    rx->rx_ops->wait(rx, w, tmo);
    tr__park_driver_done(w);
    atomic_store_explicit(&rx->rx_drv_until, 0, memory_order_seq_cst);
    return true;
}

void
tr__reactor_park_done(tr__worker *w)
{
    tr__reactor *rx = tr__rt_reactor(tr__worker_rt(w));
    tr__timers_fire(rx);
    // About to run what the wait found: hand the driver over to a worker
    // that sleeps on its futex, so that IO and timers go on during a long
    // poll.
    bool work = rx->rx_nfire != 0;
    fire_all(rx);
    drv_unlock(rx, work);
}

void
tr__reactor_maintain(tr__worker *w)
{
    tr__reactor *rx = tr__rt_reactor(tr__worker_rt(w));
    bool regs = atomic_load_explicit(&rx->rx_nregs, memory_order_relaxed) != 0;
    if (!regs && atomic_load_explicit(&rx->rx_ntimers, memory_order_relaxed) == 0) {
        return;
    }
    if (!drv_trylock(rx, w)) {
        return;
    }
    if (regs) {
        rx->rx_ops->wait(rx, w, 0);
    }
    tr__timers_fire(rx);
    fire_all(rx);
    drv_unlock(rx, true);
}

void
tr__reactor_wake(tr__reactor *rx)
{
    if (atomic_load_explicit(&rx->rx_drv_until, memory_order_seq_cst) == 0) {
        return; // nobody sleeps in the backend
    }
    tr__worker *w = atomic_load_explicit(&rx->rx_drv_worker, memory_order_relaxed);
    if (w != NULL) {
        tr__park_notify(w);
    }
}
