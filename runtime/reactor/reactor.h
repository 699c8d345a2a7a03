// reactor/reactor.h: the reactor layer (README, Architecture: layer 4).
// One backend instance (epoll: backend_epoll.c) behind a small ops table,
// the registrations (tr_io) in a type-stable slab named by {index,
// generation} keys, readiness and its waiters, the timing wheel
// (timer.c), and the driver: the one worker at a time that waits in the
// backend instead of on its futex when it parks (and that busy workers
// borrow, without blocking, every TR__RX_MAINT_TICKS polls).
//
// Layers, bottom up: base -> task -> sched -> exec -> reactor -> io, fs,
// sync (tests/integration/layers.sh checks every #include "..."). This
// header may include: base/base.h. Its sources may include every layer
// below (exec/exec.h for the worker's park state and the runtime).
// Named back-edge: exec <-> reactor park (exec/park.c calls
// tr__reactor_park and writes a driver's wake through the backend).
#ifndef TR_REACTOR_REACTOR_H
#define TR_REACTOR_REACTOR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <troupe/io.h>
#include <troupe/time.h>

#include "base/base.h"

typedef struct tr__reactor tr__reactor;
typedef struct tr__worker tr__worker;

// Busy workers poll the reactor without blocking every this many polls.
// (A power of two, checked in the loop's every-32-polls branch, so the
// hot path pays nothing for it; tokio uses 61.)
#define TR__RX_MAINT_TICKS 64

// Readiness word of a registration: direction bits, then the driver tick of
// the event that set them (bits 16..63: 48 bits, so that the tick cannot
// come round while a reader sits between reading it and clearing).
#define TR__RD_READ ((uint64_t)1 << 0)
#define TR__RD_WRITE ((uint64_t)1 << 1)
#define TR__RD_CLOSED ((uint64_t)1 << 2) // tr_io_close: every op fails
// The peer hung up (EPOLLRDHUP/HUP/ERR for reads; HUP/ERR for writes): a
// short transfer no longer means the next call would say EAGAIN.
#define TR__RD_RHUP ((uint64_t)1 << 3)
#define TR__RD_WHUP ((uint64_t)1 << 4)
#define TR__RD_TICK_SHIFT 16
#define TR__RD_TICK_MASK (~(uint64_t)0 << TR__RD_TICK_SHIFT)

// io_life: CLOSING (bit 63) | system calls in flight (low bits).
#define TR__LIFE_CLOSING ((uint64_t)1 << 63)
#define TR__LIFE_ONE ((uint64_t)1)

// io_flags.
enum {
    TR__IOF_BORROWED = 1u << 0, // not ours: never closed, never made non-blocking
    TR__IOF_ONESHOT = 1u << 1,  // blocking descriptor: level-triggered, re-armed per wait
    TR__IOF_NOPOLL = 1u << 2,   // epoll cannot watch it (regular file): always ready
    TR__IOF_STREAM = 1u << 3,   // a stream (pipe, stream socket, tty): a short read clears
    TR__IOF_SOCKET = 1u << 4,   // a socket: writes use send(MSG_NOSIGNAL)
};

// The waiters of one direction: wakers by value (a stale one only wakes a
// finished task, which is harmless), the first inline.
typedef struct tr__waitq {
    tr_waker q_first;
    tr_waker *q_more; // q_n - 1 more, in an array of q_cap
    uint32_t q_n;
    uint32_t q_cap;
} tr__waitq;

struct tr_io {
    _Atomic uint64_t io_ready; // TR__RD_* | tick
    _Atomic uint64_t io_life;  // TR__LIFE_*
    _Atomic uint32_t io_refs;
    _Atomic uint32_t io_gen; // bumped when the slot is freed
    _Atomic int io_fd;       // -1 once closed
    uint32_t io_index;       // slab index (fixed)
    uint32_t io_flags;       // TR__IOF_*, set at open
    uint32_t io_armed;       // ONESHOT: events armed (under io_lock)
    uint32_t io_busy;        // ONESHOT: directions with a claimed call in flight (io_lock)
    tr__mutex io_lock;       // guards io_wait and io_armed
    tr__waitq io_wait[2];    // readers, writers
    tr__reactor *io_rx;
    tr_rt *io_rt;
    struct tr_io *io_free_next; // slab free list (under rx_reg_lock)
};

// A backend is an ops table with private state (rx_be, state_size bytes,
// zeroed, allocated by tr__reactor_new). This table assumes a readiness
// backend (epoll, kqueue, poll): add/rearm/del watch descriptors, and wait
// reports readiness through tr__io_event, each batch after
// tr__rx_new_tick. A completion backend (io_uring, one ring per worker)
// would add submission there (submit) and take the worker in each call,
// which the table already passes. Adding a backend is one file and one row
// of the table in reactor.c.
typedef struct tr__backend_ops {
    const char *name; // as tr_rt_config.backend and TROUPE_BACKEND name it
    size_t state_size;
    // Create the backend's descriptors (close-on-exec) in rx->rx_be. 0 or
    // an errno.
    int (*init)(tr__reactor *rx);
    void (*fini)(tr__reactor *rx);
    // Watch io (edge-triggered, both directions; ONESHOT: level, `events`).
    int (*add)(tr__reactor *rx, tr_io *io, uint32_t events);
    // Re-arm a ONESHOT registration for `events` (TR_IO_READ/WRITE bits).
    int (*rearm)(tr__reactor *rx, tr_io *io, uint32_t events);
    int (*del)(tr__reactor *rx, tr_io *io);
    // Worker w (the driver) waits up to timeout_ms (-1: forever) and hands
    // each event to tr__io_event; the backend's own wake is filtered out.
    // Returns how many registration events there were.
    int (*wait)(tr__reactor *rx, tr__worker *w, int timeout_ms);
    // Interrupt w's wait in progress (any thread).
    void (*wake)(tr__reactor *rx, tr__worker *w);
    // Submit what w queued (completion backends); NULL for readiness.
    void (*submit)(tr__reactor *rx, tr__worker *w);
    // The descriptor a wake writes (white-box tests), or -1.
    int (*wake_fd)(tr__reactor *rx);
} tr__backend_ops;

extern const tr__backend_ops tr__backend_epoll TR__HIDDEN;

// tr__backend_find returns the backend called name (NULL: the default,
// epoll), or NULL; tr__backend_names lists them for error messages.
const tr__backend_ops *tr__backend_find(const char *name) TR__HIDDEN;
void tr__backend_names(char *buf, size_t len) TR__HIDDEN;

#define TR__WHEEL_LEVELS 6
#define TR__WHEEL_SLOTS 64

struct tr__reactor {
    tr_rt *rx_rt;
    const tr__backend_ops *rx_ops;
    void *rx_be; // the backend's state (private to its file)

    // The driver. rx_drv is the lock (0 free; else the holder's index + 1).
    _Alignas(64) _Atomic uint32_t rx_drv;
    // While the driver sleeps in the backend: its worker, and the wheel
    // tick it sleeps until (UINT64_MAX: no timer; 0: not sleeping). Under
    // rx_tm_lock.
    _Atomic uint64_t rx_drv_until;
    _Atomic(tr__worker *) rx_drv_worker;
    // A worker (index + 1) that found the driver taken and sleeps on its
    // futex, for the holder to wake when it lets go (0: none).
    _Atomic uint32_t rx_drv_missed;
    uint64_t rx_tick; // driver only: the current event tick (never 0; 48 bits)
    // Driver only: wakers collected by a turn, woken after the locks.
    tr_waker *rx_fire;
    size_t rx_nfire;
    size_t rx_fire_cap;

    // Registrations: a type-stable slab of TR__REG_CHUNK-entry chunks.
    _Alignas(64) tr__mutex rx_reg_lock;
    _Atomic(tr_io *) *rx_chunks; // TR__REG_MAX_CHUNKS pointers
    uint32_t rx_nchunks;         // under rx_reg_lock
    tr_io *rx_free;              // under rx_reg_lock
    _Atomic uint32_t rx_nregs;   // open registrations

    // Timers: a hierarchical wheel (ticks of 1 ms since rx_base_ns).
    _Alignas(64) tr__mutex rx_tm_lock;
    uint64_t rx_elapsed; // under rx_tm_lock: the wheel's time (ticks)
    uint64_t rx_occupied[TR__WHEEL_LEVELS];
    tr_timer *rx_slots[TR__WHEEL_LEVELS][TR__WHEEL_SLOTS];
    _Atomic uint64_t rx_ntimers;
    // With the real clock: when the wheel's earliest slot comes due
    // (CLOCK_MONOTONIC ns), or earlier (a timer dropped since); UINT64_MAX
    // with no timer or with a virtual clock. Written under rx_tm_lock, read
    // racily by busy workers (exec/worker.c, time_due). A lower bound is enough:
    // a look that finds nothing due recomputes it.
    _Atomic uint64_t rx_next_ns;
    struct tr_clock *rx_clock; // NULL: CLOCK_MONOTONIC
    uint64_t rx_base_ns;
};

#define TR__REG_CHUNK 256
#define TR__REG_MAX_CHUNKS 16384

// From reactor.c.
tr_err tr__reactor_new(tr_rt *rt, struct tr_clock *clock, const tr__backend_ops *ops,
                       tr__reactor **out) TR__HIDDEN;
void tr__reactor_free(tr__reactor *rx) TR__HIDDEN;
// tr__reactor_park: called by a parking worker (announced, nothing seen).
// If it gets the driver, waits in the backend up to timeout_ns (or the next
// timer) and returns true, still holding the driver; else returns false
// and the caller sleeps on its futex.
bool tr__reactor_park(tr__worker *w, uint64_t timeout_ns) TR__HIDDEN;
// tr__reactor_park_done: after the worker left the sleepers, dispatch what
// the wait collected (wakes) and release the driver.
void tr__reactor_park_done(tr__worker *w) TR__HIDDEN;
// tr__reactor_maintain: a busy worker polls without blocking if the driver
// is free and there is anything to poll.
void tr__reactor_maintain(tr__worker *w) TR__HIDDEN;
// tr__reactor_wake interrupts the driver if it sleeps in the backend.
void tr__reactor_wake(tr__reactor *rx) TR__HIDDEN;
// tr__io_event: the backend reports events on the registration named key
// (readiness bits TR__RD_READ/WRITE). Driver only.
void tr__io_event(tr__reactor *rx, uint64_t key, uint64_t bits) TR__HIDDEN;

// tr_io's fields for io/. The registration is the reactor's struct (its
// slab, its readiness cache, its waiters); io/ sets up and ends the
// descriptor's life in it (fd, flags, life, refs) and reads the readiness,
// only through these, each with the memory order its call sites need.

static inline int
tr__io_fd(const tr_io *io) // relaxed
{
    return atomic_load_explicit(&io->io_fd, memory_order_relaxed);
}

static inline int
tr__io_fd_acquire(const tr_io *io)
{
    return atomic_load_explicit(&io->io_fd, memory_order_acquire);
}

static inline void
tr__io_fd_set(tr_io *io, int fd) // relaxed: before the registration is published
{
    atomic_store_explicit(&io->io_fd, fd, memory_order_relaxed);
}

// tr__io_fd_take swaps -1 in (acq_rel) and returns the descriptor it held.
static inline int
tr__io_fd_take(tr_io *io)
{
    return atomic_exchange_explicit(&io->io_fd, -1, memory_order_acq_rel);
}

static inline uint32_t
tr__io_flags(const tr_io *io)
{
    return io->io_flags;
}

static inline void
tr__io_flags_set(tr_io *io, uint32_t flags)
{
    io->io_flags = flags;
}

static inline void
tr__io_armed_set(tr_io *io, uint32_t events)
{
    io->io_armed = events;
}

static inline tr__reactor *
tr__io_rx(const tr_io *io)
{
    return io->io_rx;
}

static inline tr_rt *
tr__io_rt(const tr_io *io)
{
    return io->io_rt;
}

// The life word (TR__LIFE_*): acq_rel read-modify-writes, a relaxed set.
static inline uint64_t
tr__io_life_add(tr_io *io, uint64_t n)
{
    return atomic_fetch_add_explicit(&io->io_life, n, memory_order_acq_rel);
}

static inline uint64_t
tr__io_life_sub(tr_io *io, uint64_t n)
{
    return atomic_fetch_sub_explicit(&io->io_life, n, memory_order_acq_rel);
}

static inline uint64_t
tr__io_life_or(tr_io *io, uint64_t bits)
{
    return atomic_fetch_or_explicit(&io->io_life, bits, memory_order_acq_rel);
}

static inline void
tr__io_life_set(tr_io *io, uint64_t v)
{
    atomic_store_explicit(&io->io_life, v, memory_order_relaxed);
}

// References: taking one is relaxed, dropping one acq_rel (the last frees).
static inline uint32_t
tr__io_refs_inc(tr_io *io)
{
    return atomic_fetch_add_explicit(&io->io_refs, 1, memory_order_relaxed);
}

static inline uint32_t
tr__io_refs_dec(tr_io *io)
{
    return atomic_fetch_sub_explicit(&io->io_refs, 1, memory_order_acq_rel);
}

static inline void
tr__io_refs_set(tr_io *io, uint32_t v)
{
    atomic_store_explicit(&io->io_refs, v, memory_order_relaxed);
}

// The readiness cache (TR__RD_* | tick).
static inline uint64_t
tr__io_ready(const tr_io *io) // acquire
{
    return atomic_load_explicit(&io->io_ready, memory_order_acquire);
}

static inline uint64_t
tr__io_ready_relaxed(const tr_io *io)
{
    return atomic_load_explicit(&io->io_ready, memory_order_relaxed);
}

static inline void
tr__io_ready_set(tr_io *io, uint64_t v) // release
{
    atomic_store_explicit(&io->io_ready, v, memory_order_release);
}

static inline uint64_t
tr__io_ready_or(tr_io *io, uint64_t bits) // acq_rel
{
    return atomic_fetch_or_explicit(&io->io_ready, bits, memory_order_acq_rel);
}

static inline void
tr__io_ready_and(tr_io *io, uint64_t mask) // acq_rel
{
    atomic_fetch_and_explicit(&io->io_ready, mask, memory_order_acq_rel);
}

// tr__io_ready_cas replaces *cur with v if the word still is *cur (weak;
// acq_rel, relaxed on failure, which reloads *cur).
static inline bool
tr__io_ready_cas(tr_io *io, uint64_t *cur, uint64_t v)
{
    return atomic_compare_exchange_weak_explicit(&io->io_ready, cur, v, memory_order_acq_rel,
                                                 memory_order_relaxed);
}

// The reactor's face to the other layers (exec/, io/): they reach its
// struct and its backend only through these.

// tr__rx_watching reports whether timers are armed or descriptors are
// registered (relaxed: a hint for the workers' clock watch).
static inline bool
tr__rx_watching(tr__reactor *rx)
{
    return atomic_load_explicit(&rx->rx_ntimers, memory_order_relaxed) != 0 ||
           atomic_load_explicit(&rx->rx_nregs, memory_order_relaxed) != 0;
}

// tr__rx_next_ns returns when the earliest timer is due (relaxed hint).
static inline uint64_t
tr__rx_next_ns(tr__reactor *rx)
{
    return atomic_load_explicit(&rx->rx_next_ns, memory_order_relaxed);
}

// tr__rx_add and tr__rx_del register io with the backend and take it off
// (errno values, 0 for success).
static inline int
tr__rx_add(tr__reactor *rx, tr_io *io, uint32_t events)
{
    return rx->rx_ops->add(rx, io, events);
}

static inline int
tr__rx_del(tr__reactor *rx, tr_io *io)
{
    return rx->rx_ops->del(rx, io);
}

// tr__rx_wake_worker makes w's wait in the backend return (park.c).
static inline void
tr__rx_wake_worker(tr__reactor *rx, tr__worker *w)
{
    rx->rx_ops->wake(rx, w);
}

// tr__rx_new_tick starts a batch of events: the backend calls it after each
// wait, before the batch's tr__io_event calls. Driver only.
static inline void
tr__rx_new_tick(tr__reactor *rx)
{
    if (++rx->rx_tick >> (64 - TR__RD_TICK_SHIFT) != 0) {
        rx->rx_tick = 1;
    }
}

// The registration slab: a free slot (fields other than index, gen, rx and
// rt are the caller's to set), and its return once the last reference is
// gone.
tr_io *tr__reg_alloc(tr__reactor *rx) TR__HIDDEN;
void tr__reg_free(tr_io *io) TR__HIDDEN;
// tr__io_wait registers wk as a waiter for direction dir unless dir became
// ready (or io closed) meanwhile: true when registered (the caller returns
// TR_PENDING), false when the caller should try again.
bool tr__io_wait(tr_io *io, int dir, tr_waker wk) TR__HIDDEN;
// ONESHOT registrations: tr__io_claim takes direction dir's readiness for
// one call (false: not ready, wait); tr__io_unclaim ends the call and
// re-arms for the waiters that came meanwhile.
bool tr__io_claim(tr_io *io, int dir) TR__HIDDEN;
void tr__io_unclaim(tr_io *io, int dir) TR__HIDDEN;
// tr__io_wake_all wakes every waiter of io (closing, or a waiter that
// drained a shared eventfd hands the edge on). Any thread.
void tr__io_wake_all(tr_io *io) TR__HIDDEN;

// tr__fire_push adds a waker to the turn's batch, woken once the turn
// releases its locks. Driver only.
void tr__fire_push(tr__reactor *rx, tr_waker wk) TR__HIDDEN;

// From timer.c.
uint64_t tr__rx_now(tr__reactor *rx) TR__HIDDEN;
// tr__timers_fire moves the wheel to now and collects the wakers of due
// timers into rx_fire. Driver only. Returns how many fired.
size_t tr__timers_fire(tr__reactor *rx) TR__HIDDEN;
// tr__timers_next returns the wheel tick of the next deadline, or
// UINT64_MAX. Under rx_tm_lock.
uint64_t tr__timers_next(tr__reactor *rx) TR__HIDDEN;
// tr__timer_when returns an armed timer's deadline in wheel ticks and
// tr__timer_level the wheel level it sits in (diagnostics, under
// rx_tm_lock): tr_timer's fields are private to timer.c.
static inline uint64_t
tr__timer_when(const tr_timer *t)
{
    return t->t_when;
}
static inline unsigned
tr__timer_level(const tr_timer *t)
{
    return (unsigned)(t->t_slot / TR__WHEEL_SLOTS);
}
// tr__clock_attach ties a virtual clock to rx (TR_EBUSY if taken).
tr_err tr__clock_attach(struct tr_clock *c, tr__reactor *rx) TR__HIDDEN;
void tr__clock_detach(struct tr_clock *c) TR__HIDDEN;

#endif
