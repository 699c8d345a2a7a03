// Design notes.
//
// Timers sit in a hierarchical timing wheel: six levels of 64 slots, level
// L's slots spanning 64^L ticks of 1 ms, so the wheel covers 2^36 ms (about
// two years; a later deadline waits in the last level and is re-filed when
// its slot comes round). A timer goes to the level of the highest bit in
// which its deadline differs from the wheel's time, so every timer at a
// lower level is due earlier than any at a higher level, and the next
// deadline is the first occupied slot (a bitmap per level) of the lowest
// occupied level. When the wheel's time reaches a slot, its timers are
// either due (fired) or re-filed lower (cascaded). Insert and removal are
// O(1); each timer cascades at most five times.
//
// One lock guards the wheel. The driver (reactor.c) moves the wheel to the
// clock's time on each turn and collects the wakers of due timers, then
// wakes them after the lock. A timer's memory is its task's: it is linked
// while armed and unlinked when it fires (under the lock, state FIRED) or
// when dropped. Arming a timer earlier than the one the driver sleeps
// until wakes the driver, so its epoll_wait timeout is recomputed.
#define _GNU_SOURCE
#include <string.h>

#include "exec/exec.h"
#include "reactor/reactor.h"

enum { T_IDLE = 0, T_ARMED = 1, T_FIRED = 2 };

#define LEVEL_BITS 6
#define WHEEL_SPAN_BITS (LEVEL_BITS * TR__WHEEL_LEVELS) // 36
#define WHEEL_MAX ((UINT64_C(1) << WHEEL_SPAN_BITS) - 1)

// ---------------------------------------------------------------------------
// Clocks.

struct tr_clock {
    _Atomic uint64_t c_now;
    _Atomic(tr__reactor *) c_rx;
};

tr_err
tr_clock_new_virtual(uint64_t start_ns, tr_clock **out)
{
    if (out == NULL) {
        return TR_EINVAL;
    }
    tr_clock *c = tr__zalloc(sizeof(*c));
    atomic_init(&c->c_now, start_ns);
    *out = c;
    return TR_OK;
}

void
tr_clock_advance(tr_clock *c, uint64_t ns)
{
    // seq_cst store, then the load of rx_drv_until in tr__reactor_wake:
    // pairs with tr__reactor_park (store rx_drv_until, then read the clock).
    atomic_fetch_add_explicit(&c->c_now, ns, memory_order_seq_cst);
    tr__reactor *rx = atomic_load_explicit(&c->c_rx, memory_order_acquire);
    if (rx != NULL) {
        tr__reactor_wake(rx);
    }
}

uint64_t
tr_clock_now(const tr_clock *c)
{
    return atomic_load_explicit(&c->c_now, memory_order_seq_cst);
}

void
tr_clock_free(tr_clock *c)
{
    if (c != NULL) {
        TR__ASSERT(atomic_load_explicit(&c->c_rx, memory_order_relaxed) == NULL);
        tr__free(c, sizeof(*c));
    }
}

tr_err
tr__clock_attach(tr_clock *c, tr__reactor *rx)
{
    tr__reactor *expect = NULL;
    if (!atomic_compare_exchange_strong_explicit(&c->c_rx, &expect, rx, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        return TR_EBUSY;
    }
    return TR_OK;
}

void
tr__clock_detach(tr_clock *c)
{
    atomic_store_explicit(&c->c_rx, NULL, memory_order_release);
}

uint64_t
tr__rx_now(tr__reactor *rx)
{
    return rx->rx_clock != NULL ? tr_clock_now(rx->rx_clock) : tr__now_ns();
}

uint64_t
tr_now(tr_rt *rt)
{
    return tr__rx_now(tr__rt_reactor(rt));
}

uint64_t
tr_rt_timers(tr_rt *rt)
{
    return atomic_load_explicit(&tr__rt_reactor(rt)->rx_ntimers, memory_order_relaxed);
}

// ---------------------------------------------------------------------------
// The wheel (under rx_tm_lock).

static uint64_t
tick_floor(const tr__reactor *rx, uint64_t ns)
{
    return ns <= rx->rx_base_ns ? 0 : (ns - rx->rx_base_ns) / TR_NS_PER_MS;
}

static uint64_t
tick_ceil(const tr__reactor *rx, uint64_t ns)
{
    return ns <= rx->rx_base_ns ? 0 : (ns - rx->rx_base_ns + TR_NS_PER_MS - 1) / TR_NS_PER_MS;
}

static void
wheel_link(tr__reactor *rx, tr_timer *t)
{
    uint64_t when = t->t_when;
    if (when - rx->rx_elapsed > WHEEL_MAX) {
        when = rx->rx_elapsed + WHEEL_MAX; // re-filed when its slot comes
    }
    uint64_t masked = (rx->rx_elapsed ^ when) | (TR__WHEEL_SLOTS - 1);
    if (masked > WHEEL_MAX) {
        masked = WHEEL_MAX; // a carry past the span: the last level
    }
    unsigned level = (unsigned)(63 - __builtin_clzll(masked)) / LEVEL_BITS;
    unsigned slot = (unsigned)(when >> (level * LEVEL_BITS)) & (TR__WHEEL_SLOTS - 1);
    tr_timer **head = &rx->rx_slots[level][slot];
    t->t_prev = NULL;
    t->t_next = *head;
    if (*head != NULL) {
        (*head)->t_prev = t;
    }
    *head = t;
    rx->rx_occupied[level] |= UINT64_C(1) << slot;
    t->t_slot = (uint16_t)(level * TR__WHEEL_SLOTS + slot);
}

static void
wheel_unlink(tr__reactor *rx, tr_timer *t)
{
    unsigned level = t->t_slot / TR__WHEEL_SLOTS;
    unsigned slot = t->t_slot % TR__WHEEL_SLOTS;
    if (t->t_prev != NULL) {
        t->t_prev->t_next = t->t_next;
    } else {
        rx->rx_slots[level][slot] = t->t_next;
    }
    if (t->t_next != NULL) {
        t->t_next->t_prev = t->t_prev;
    }
    if (rx->rx_slots[level][slot] == NULL) {
        rx->rx_occupied[level] &= ~(UINT64_C(1) << slot);
    }
    t->t_prev = t->t_next = NULL;
}

// next_slot finds the next occupied slot: its level and slot, and the tick
// at which it starts. false when the wheel is empty.
static bool
next_slot(const tr__reactor *rx, unsigned *level_out, unsigned *slot_out, uint64_t *tick_out)
{
    uint64_t now = rx->rx_elapsed;
    for (unsigned level = 0; level < TR__WHEEL_LEVELS; level++) {
        uint64_t occ = rx->rx_occupied[level];
        if (occ == 0) {
            continue;
        }
        unsigned shift = level * LEVEL_BITS;
        uint64_t slot_range = UINT64_C(1) << shift;
        uint64_t level_range = slot_range << LEVEL_BITS;
        unsigned now_slot = (unsigned)(now >> shift) & (TR__WHEEL_SLOTS - 1);
        uint64_t rot = now_slot == 0 ? occ : (occ >> now_slot) | (occ << (64 - now_slot));
        unsigned slot = (now_slot + (unsigned)__builtin_ctzll(rot)) & (TR__WHEEL_SLOTS - 1);
        uint64_t start = (now & ~(level_range - 1)) + slot * slot_range;
        if (start < now) {
            // Only at the last level: a slot behind the wheel's time holds
            // deadlines beyond the wheel's span, a full turn later. (A
            // lower level never has one: a slot is processed before the
            // wheel's time passes it.)
            TR__ASSERT(level == TR__WHEEL_LEVELS - 1);
            start += level_range;
        }
        *level_out = level;
        *slot_out = slot;
        *tick_out = start;
        return true;
    }
    return false;
}

uint64_t
tr__timers_next(tr__reactor *rx)
{
    unsigned level, slot;
    uint64_t tick;
    return next_slot(rx, &level, &slot, &tick) ? tick : UINT64_MAX;
}

// next_publish stores when the wheel's earliest slot comes due, for busy
// workers (rx_next_ns). Under rx_tm_lock.
static void
next_publish(tr__reactor *rx)
{
    uint64_t tick = rx->rx_clock == NULL ? tr__timers_next(rx) : UINT64_MAX;
    atomic_store_explicit(&rx->rx_next_ns,
                          tick == UINT64_MAX ? UINT64_MAX : rx->rx_base_ns + tick * TR_NS_PER_MS,
                          memory_order_relaxed);
}

size_t
tr__timers_fire(tr__reactor *rx)
{
    if (atomic_load_explicit(&rx->rx_ntimers, memory_order_relaxed) == 0) {
        // No timer: keep the wheel's time fresh (so new timers file low).
        // Only under the lock and only if the wheel is still empty: a
        // timer armed since the load above is filed against the old time,
        // and moving the time past its slot would push it a level span
        // late. (Arming counts under the lock; firing uncounts after it, so
        // a zero read under the lock means an empty wheel.)
        tr__mutex_lock(&rx->rx_tm_lock);
        if (atomic_load_explicit(&rx->rx_ntimers, memory_order_relaxed) == 0) {
            uint64_t now = tick_floor(rx, tr__rx_now(rx));
            if (now > rx->rx_elapsed) {
                rx->rx_elapsed = now;
            }
            atomic_store_explicit(&rx->rx_next_ns, UINT64_MAX, memory_order_relaxed);
        }
        tr__mutex_unlock(&rx->rx_tm_lock);
        return 0;
    }
    size_t fired = 0;
    tr__mutex_lock(&rx->rx_tm_lock);
    uint64_t now = tick_floor(rx, tr__rx_now(rx));
    unsigned level, slot;
    uint64_t start;
    while (next_slot(rx, &level, &slot, &start) && start <= now) {
        tr_timer *t = rx->rx_slots[level][slot];
        rx->rx_slots[level][slot] = NULL;
        rx->rx_occupied[level] &= ~(UINT64_C(1) << slot);
        if (start > rx->rx_elapsed) {
            rx->rx_elapsed = start;
        }
        while (t != NULL) {
            tr_timer *next = t->t_next;
            if (t->t_when > rx->rx_elapsed) {
                wheel_link(rx, t); // cascades to a lower level
            } else {
                t->t_prev = t->t_next = NULL;
                tr__fire_push(rx, t->t_waker);
                // Release: the task that sees FIRED may free the memory.
                atomic_store_explicit(&t->t_state, T_FIRED, memory_order_release);
                fired++;
            }
            t = next;
        }
    }
    if (now > rx->rx_elapsed) {
        rx->rx_elapsed = now;
    }
    next_publish(rx);
    tr__mutex_unlock(&rx->rx_tm_lock);
    atomic_fetch_sub_explicit(&rx->rx_ntimers, fired, memory_order_relaxed);
    return fired;
}

// ---------------------------------------------------------------------------
// Timers.

void
tr_timer_init(tr_timer *t)
{
    memset(t, 0, sizeof(*t));
}

bool
tr_timer_armed(const tr_timer *t)
{
    return atomic_load_explicit(&t->t_state, memory_order_acquire) == T_ARMED;
}

void
tr_timer_abandon(tr_timer *t)
{
    uint32_t st = atomic_load_explicit(&t->t_state, memory_order_acquire);
    if (st == T_IDLE) {
        return;
    }
    if (st == T_ARMED) {
        tr__reactor *rx = tr__rt_reactor(t->t_rt);
        tr__mutex_lock(&rx->rx_tm_lock);
        if (atomic_load_explicit(&t->t_state, memory_order_relaxed) == T_ARMED) {
            wheel_unlink(rx, t);
            atomic_fetch_sub_explicit(&rx->rx_ntimers, 1, memory_order_relaxed);
        }
        atomic_store_explicit(&t->t_state, T_IDLE, memory_order_relaxed);
        tr__mutex_unlock(&rx->rx_tm_lock);
        return;
    }
    atomic_store_explicit(&t->t_state, T_IDLE, memory_order_relaxed);
}

// timer_poll waits for t's deadline (ns), arming it on the first poll.
static tr_poll
timer_poll(tr_timer *t, tr_cx *cx, uint64_t deadline, bool relative)
{
    uint32_t st = atomic_load_explicit(&t->t_state, memory_order_acquire);
    if (st == T_FIRED) {
        atomic_store_explicit(&t->t_state, T_IDLE, memory_order_relaxed);
        return TR_READY;
    }
    tr_rt *rt = tr_cx_rt(cx);
    tr__reactor *rx = tr__rt_reactor(rt);
    tr_waker wk = tr_cx_waker(cx);
    if (st == T_ARMED) {
        if (!tr_waker_eq(t->t_waker, wk)) {
            // Polled by another task than the one that armed it (an op
            // handed over): later wakes go to this one.
            tr__mutex_lock(&rx->rx_tm_lock);
            t->t_waker = wk;
            tr__mutex_unlock(&rx->rx_tm_lock);
        }
        return TR_PENDING;
    }
    if (!tr_cx_budget_spend(cx)) {
        return TR_PENDING;
    }
    uint64_t now = tr__rx_now(rx);
    if (relative) {
        deadline = deadline > UINT64_MAX - now ? UINT64_MAX : now + deadline;
    }
    if (deadline <= now) {
        return TR_READY;
    }
    t->t_waker = wk;
    t->t_rt = rt;
    tr__mutex_lock(&rx->rx_tm_lock);
    t->t_when = tick_ceil(rx, deadline);
    if (t->t_when <= rx->rx_elapsed) {
        // The wheel is ahead of our reading of the clock: due already.
        tr__mutex_unlock(&rx->rx_tm_lock);
        return TR_READY;
    }
    wheel_link(rx, t);
    atomic_store_explicit(&t->t_state, T_ARMED, memory_order_relaxed);
    atomic_fetch_add_explicit(&rx->rx_ntimers, 1, memory_order_relaxed);
    if (rx->rx_clock == NULL) {
        uint64_t due = rx->rx_base_ns + t->t_when * TR_NS_PER_MS;
        if (due < atomic_load_explicit(&rx->rx_next_ns, memory_order_relaxed)) {
            atomic_store_explicit(&rx->rx_next_ns, due, memory_order_relaxed);
        }
    }
    tr__worker_set_timed(tr__cx_worker(cx)); // watch the clock from the next poll on
    bool wake = t->t_when < atomic_load_explicit(&rx->rx_drv_until, memory_order_relaxed);
    tr__mutex_unlock(&rx->rx_tm_lock);
    if (wake) {
        tr__reactor_wake(rx);
    }
    return TR_PENDING;
}

tr_poll
tr_sleep(tr_timer *t, tr_cx *cx, uint64_t ns)
{
    return timer_poll(t, cx, ns, true);
}

tr_poll
tr_sleep_until(tr_timer *t, tr_cx *cx, uint64_t deadline_ns)
{
    return timer_poll(t, cx, deadline_ns, false);
}

// Either way the timer ends idle (dropped, or fired and seen): the op is
// back to its zeroed state.
static tr_poll
timeout_poll(tr_timeout *op, tr_cx *cx, uint64_t when, bool relative, tr_poll inner, bool *expired)
{
    if (inner == TR_READY) {
        tr_timer_abandon(&op->to_timer);
        *expired = false;
        return TR_READY;
    }
    if (timer_poll(&op->to_timer, cx, when, relative) == TR_READY) {
        *expired = true;
        return TR_READY;
    }
    return TR_PENDING;
}

tr_poll
tr_timeout_poll(tr_timeout *op, tr_cx *cx, uint64_t ns, tr_poll inner, bool *expired)
{
    return timeout_poll(op, cx, ns, true, inner, expired);
}

tr_poll
tr_timeout_poll_until(tr_timeout *op, tr_cx *cx, uint64_t deadline_ns, tr_poll inner, bool *expired)
{
    return timeout_poll(op, cx, deadline_ns, false, inner, expired);
}

void
tr_interval_init(tr_interval *iv, uint64_t period_ns)
{
    memset(iv, 0, sizeof(*iv));
    iv->iv_period = period_ns > 0 ? period_ns : 1;
}

tr_poll
tr_interval_tick(tr_interval *iv, tr_cx *cx)
{
    tr_rt *rt = tr_cx_rt(cx);
    if (iv->iv_period == 0) {
        iv->iv_period = TR_NS_PER_MS;
    }
    if (iv->iv_next == 0) {
        if (!tr_cx_budget_spend(cx)) {
            return TR_PENDING;
        }
        iv->iv_next = tr_now(rt) + iv->iv_period;
        return TR_READY;
    }
    if (timer_poll(&iv->iv_timer, cx, iv->iv_next, false) == TR_PENDING) {
        return TR_PENDING;
    }
    uint64_t now = tr_now(rt);
    uint64_t next = iv->iv_next + iv->iv_period;
    if (next <= now) {
        uint64_t late = (now - iv->iv_next) / iv->iv_period;
        iv->iv_missed += late;
        next = iv->iv_next + (late + 1) * iv->iv_period;
    }
    iv->iv_next = next;
    return TR_READY;
}
