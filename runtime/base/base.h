// base/base.h: the base layer, below every other: internal utilities every
// runtime source uses: allocation that aborts on failure, assertions and
// panics, errno mapping, error details, time, futexes, a small mutex, test
// hooks. It may include no other layer header (tests/integration/layers.sh
// checks every #include "..." of runtime/).
#ifndef TR_BASE_BASE_H
#define TR_BASE_BASE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <troupe/err.h>

#define TR__HIDDEN __attribute__((visibility("hidden")))

// tr__panic_at reports a bug and aborts. Never for input validation.
_Noreturn void tr__panic_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4))) TR__HIDDEN;

#define tr__panic(...) tr__panic_at(__FILE__, __LINE__, __VA_ARGS__)

#define TR__ASSERT(x)                                                     \
    do {                                                                  \
        if (__builtin_expect(!(x), 0)) {                                  \
            tr__panic_at(__FILE__, __LINE__, "assertion failed: %s", #x); \
        }                                                                 \
    } while (0)

#define TR__LIKELY(x) __builtin_expect(!!(x), 1)
#define TR__UNLIKELY(x) __builtin_expect(!!(x), 0)

#define TR__CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

// tr__alloc returns sz bytes; it aborts on out-of-memory and never returns
// NULL. tr__free takes the size that was allocated.
void *tr__alloc(size_t sz) TR__HIDDEN;
void *tr__zalloc(size_t sz) TR__HIDDEN;
void tr__free(void *p, size_t sz) TR__HIDDEN;

// tr__counter_add adds n to a statistics counter that only one thread
// writes (a worker's own): a plain add, published relaxed for readers.
static inline void
tr__counter_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

// Test hooks. A test may install a function that the runtime calls at a
// few named points on cold paths, to hold a thread there and so replay a
// race in one chosen order (tests/runtime). NULL outside tests: one
// relaxed load and a predicted branch where used, never on a hot path.
enum {
    TR__HOOK_START_ACCEPTED = 1, // tr_task_start from outside: accepted, not yet sent
    TR__HOOK_WAIT_STARTS = 2,    // a shutdown waits for starts in flight
    TR__HOOK_MAILBOX_MARKED = 3, // markempty has set the mark, not yet re-checked the system lane
};
typedef void (*tr__hook_fn)(int point);
extern _Atomic(tr__hook_fn) tr__test_hook TR__HIDDEN;

static inline void
tr__hook(int point)
{
    tr__hook_fn h = atomic_load_explicit(&tr__test_hook, memory_order_relaxed);
    if (__builtin_expect(h != NULL, 0)) {
        h(point);
    }
}

// tr__fail records the detail of an error for tr_error_detail (this
// thread) and returns err: `return tr__fail(TR_EINVAL, "x=%d: ...", x);`.
// For errors of configuration and misuse, never on a hot path.
tr_err tr__fail(tr_err err, const char *fmt, ...) __attribute__((format(printf, 2, 3))) TR__HIDDEN;

// tr__name_list writes "a, b or c" (the n names name(0..n-1)) into buf, for
// a detail that lists what a setting may be (truncated to len).
void tr__name_list(char *buf, size_t len, size_t n, const char *(*name)(size_t i)) TR__HIDDEN;

// tr__detail_clear empties this thread's detail, so that a detail read
// after a callback (a kind's init) is the callback's own or none.
void tr__detail_clear(void) TR__HIDDEN;

// tr__errno maps an errno value to a tr_err.
tr_err tr__errno(int e) TR__HIDDEN;

// tr__now_ns returns CLOCK_MONOTONIC in nanoseconds.
uint64_t tr__now_ns(void) TR__HIDDEN;

// Futex wait/wake on a 32-bit atomic word (process-private).
// tr__futex_wait sleeps while *word == expect, for at most timeout_ns
// (UINT64_MAX: no limit). Spurious returns are possible.
void tr__futex_wait(_Atomic uint32_t *word, uint32_t expect, uint64_t timeout_ns) TR__HIDDEN;
void tr__futex_wake(_Atomic uint32_t *word, int n) TR__HIDDEN;

// A tiny mutex for short critical sections that never call out (futex
// based, three states as in Drepper's "Futexes are tricky").
typedef struct tr__mutex {
    _Atomic uint32_t m_word; // 0 free, 1 locked, 2 locked with waiters
} tr__mutex;

#define TR__MUTEX_INIT \
    {                  \
        0              \
    }
void tr__mutex_lock_slow(tr__mutex *m) TR__HIDDEN;

static inline void
tr__mutex_lock(tr__mutex *m)
{
    uint32_t expect = 0;
    // Pairs with the release exchange in tr__mutex_unlock.
    if (TR__LIKELY(atomic_compare_exchange_strong_explicit(
            &m->m_word, &expect, 1, memory_order_acquire, memory_order_relaxed))) {
        return;
    }
    tr__mutex_lock_slow(m);
}

static inline void
tr__mutex_unlock(tr__mutex *m)
{
    // Pairs with the acquire CAS/exchange in tr__mutex_lock(_slow).
    if (TR__UNLIKELY(atomic_exchange_explicit(&m->m_word, 0, memory_order_release) == 2)) {
        tr__futex_wake(&m->m_word, 1);
    }
}

#endif
