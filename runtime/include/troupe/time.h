// troupe/time.h: time for tasks. Each runtime reads one clock: the real
// monotonic clock, or a virtual clock that moves only when a test advances
// it (so that no timer test sleeps). Sleeps, timeouts around any awaitable
// and intervals are timers in a hierarchical timing wheel of 1 ms
// resolution; its next deadline is the reactor's epoll_wait timeout, so an
// idle runtime sleeps exactly until its next timer. A timer never fires
// early: a deadline is rounded up to the next millisecond.
//
// A timer lives in its task's state (the tr_timer below, embedded in an op
// struct) and is armed by its first poll. It is disarmed when it fires and
// is awaited, and by tr_timer_abandon: a task cancelled while a timer is armed
// must call the matching *_abandon function from its drop function, before the
// state memory goes away.
#ifndef TROUPE_TIME_H
#define TROUPE_TIME_H

#include <stdbool.h>
#include <stdint.h>

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

#define TR_NS_PER_MS UINT64_C(1000000)
#define TR_NS_PER_SEC UINT64_C(1000000000)

// ---------------------------------------------------------------------------
// Clocks.

typedef struct tr_clock tr_clock;

// tr_clock_new_virtual creates a virtual clock reading start_ns. Pass it in
// tr_rt_config.clock; one runtime at a time may use it. The caller owns it
// and frees it after the runtime.
TR_API tr_err tr_clock_new_virtual(uint64_t start_ns, tr_clock **out);

// tr_clock_advance moves a virtual clock forward by ns and wakes the
// runtime using it, whose timers that are now due fire (in deadline order).
// Any thread. Never blocks.
TR_API void tr_clock_advance(tr_clock *c, uint64_t ns);

// tr_clock_now reads a clock (ns). Any thread.
TR_API uint64_t tr_clock_now(const tr_clock *c);

// tr_clock_free frees a virtual clock no runtime uses any more.
TR_API void tr_clock_free(tr_clock *c);

// tr_now returns the time of rt's clock in nanoseconds (CLOCK_MONOTONIC,
// or the virtual clock). Any thread.
TR_API uint64_t tr_now(tr_rt *rt);

// tr_rt_timers returns the number of armed timers of rt (diagnostics).
TR_API uint64_t tr_rt_timers(tr_rt *rt);

// ---------------------------------------------------------------------------
// Timers. Embed one in the task state, zeroed (as a new task's state is).
// Idle again when tr_sleep or tr_sleep_until returns TR_READY (disarmed;
// its private fields may keep their last values, which mean nothing once
// idle), so the same timer may sleep again at once, as a zeroed one would.

typedef struct tr_timer {
    struct tr_timer *t_prev;  // private: the wheel slot's list, under the reactor's timer lock
    struct tr_timer *t_next;  // private
    uint64_t t_when;          // private: deadline, in wheel ticks (ms since the base)
    tr_waker t_waker;         // private: the sleeping task
    tr_rt *t_rt;              // private: the runtime whose wheel holds it
    _Atomic uint32_t t_state; // private: idle, armed, fired
    uint16_t t_slot;          // private: wheel slot while armed
    uint16_t t_pad;           // private
} tr_timer;

_Static_assert(sizeof(tr_timer) == 5 * sizeof(void *) + sizeof(uint64_t) + 8,
               "tr_timer: two links, a deadline, a waker, a runtime and two words of state");

// tr_timer_init zeroes a timer (a zeroed tr_timer is already initialised).
// A timer holds nothing while idle, so it needs no _fini: withdrawing a
// pending sleep is tr_timer_abandon.
TR_API void tr_timer_init(tr_timer *t);

// tr_timer_abandon disarms t if it is armed; afterwards t is idle and its
// memory may be freed. Idempotent; any thread. A task's drop function calls
// it for every timer its state embeds (tr_sleep_abandon, tr_timeout_abandon and
// tr_interval_abandon are the same call for the op structs below).
TR_API void tr_timer_abandon(tr_timer *t);

// tr_timer_armed reports whether t is armed (waiting for its deadline).
TR_API bool tr_timer_armed(const tr_timer *t);

// ---------------------------------------------------------------------------
// Sleep.

// tr_sleep waits until ns nanoseconds after its first poll. It never fails,
// so it has no error out-parameter. TR_READY once
// that time has come (the timer is then idle again: the same tr_timer may
// sleep again). Charges the budget once. Cancel-safe through tr_timer_abandon.
TR_API tr_poll tr_sleep(tr_timer *t, tr_cx *cx, uint64_t ns);

// tr_sleep_until waits until the runtime's clock reads deadline_ns (at once
// when that has passed). As tr_sleep otherwise.
TR_API tr_poll tr_sleep_until(tr_timer *t, tr_cx *cx, uint64_t deadline_ns);

// tr_sleep_abandon is tr_timer_abandon.
static inline void
tr_sleep_abandon(tr_timer *t)
{
    tr_timer_abandon(t);
}

// ---------------------------------------------------------------------------
// Timeout around any awaitable. Pass the inner awaitable's poll result on
// every poll:
//
//     TR_AWAIT(st, tr_timeout_poll(&st->to, cx, 500 * TR_NS_PER_MS,
//                                  tr_read(st->io, cx, st->buf, sizeof st->buf, &st->n,
//                                          &st->err),
//                                  &st->expired));
//     if (st->expired) { ...give the inner operation up... }
//
// TR_READY when the inner is READY (*expired false) or when the deadline
// passed first (*expired true). On expiry the inner operation has not
// completed and the caller must give it up: a leaf IO operation needs
// nothing (it only left a stale wake-up behind); an op struct with its own
// _abandon (a channel send, a lock wait, a read_exact) has it called.

// A timeout in progress: embed it in the task state, zeroed. Idle again
// (as its timer is) when tr_timeout_poll returns TR_READY (the deadline is
// disarmed or has fired), so it may be reused at once.
typedef struct tr_timeout {
    tr_timer to_timer; // private
} tr_timeout;

_Static_assert(sizeof(tr_timeout) == sizeof(tr_timer), "tr_timeout: one tr_timer");

// tr_timeout_poll arms a deadline ns after its first poll (see above).
// The op is the object (a timeout has no other). Never fails.
TR_API tr_poll tr_timeout_poll(tr_timeout *op, tr_cx *cx, uint64_t ns, tr_poll inner,
                               bool *expired);

// tr_timeout_poll_until is tr_timeout_poll with an absolute deadline on
// the runtime's clock.
TR_API tr_poll tr_timeout_poll_until(tr_timeout *op, tr_cx *cx, uint64_t deadline_ns, tr_poll inner,
                                     bool *expired);

// tr_timeout_abandon disarms the deadline (call from drop when cancelled).
static inline void
tr_timeout_abandon(tr_timeout *op)
{
    tr_timer_abandon(&op->to_timer);
}

// ---------------------------------------------------------------------------
// Interval: ticks every period. The first tick completes at once; a tick
// that is late by more than a period skips the missed ones (counted).
// An interval is an object (tr_interval_init), not an op: its schedule
// carries on from one tick to the next, and tr_interval_tick never fails.

typedef struct tr_interval {
    tr_timer iv_timer;  // private
    uint64_t iv_period; // private: ns
    uint64_t iv_next;   // private: ns on the runtime's clock; 0 before the first tick
    uint64_t iv_missed; // private: ticks skipped because the task came late
} tr_interval;

_Static_assert(sizeof(tr_interval) == sizeof(tr_timer) + 3 * sizeof(uint64_t),
               "tr_interval: a tr_timer and three words");

// tr_interval_init sets the period (ns, > 0) of a zeroed interval.
TR_API void tr_interval_init(tr_interval *iv, uint64_t period_ns);

// tr_interval_tick waits for the next tick. Cancel-safe through
// tr_interval_abandon.
TR_API tr_poll tr_interval_tick(tr_interval *iv, tr_cx *cx);

// tr_interval_abandon disarms the interval's timer.
static inline void
tr_interval_abandon(tr_interval *iv)
{
    tr_timer_abandon(&iv->iv_timer);
}

// tr_interval_next returns when the next tick is due, in ns on the
// runtime's clock (0 before the first tick). Any thread that owns iv.
static inline uint64_t
tr_interval_next(const tr_interval *iv)
{
    return iv->iv_next;
}

// tr_interval_missed returns the ticks skipped so far because the task came
// late (see above). Any thread that owns iv.
static inline uint64_t
tr_interval_missed(const tr_interval *iv)
{
    return iv->iv_missed;
}

TR_END_DECLS

#endif
