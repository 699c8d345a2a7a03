// troupe/task.h: tasks, the poll context, wakers and join handles.
//
// A task is C's version of a future: a poll function, a block of state and an
// optional drop function, described once by a static tr_task_spec. Polling
// either finishes (TR_READY) or returns TR_PENDING after arranging to be
// woken. State lives in the runtime's slab pool: tr_task_new hands back the
// zeroed state to fill in, tr_task_start schedules it. The await macros at
// the end of this header let a poll function read top to bottom.
#ifndef TROUPE_TASK_H
#define TROUPE_TASK_H

#include <troupe/common.h>
#include <troupe/err.h>

TR_BEGIN_DECLS

typedef struct tr_rt tr_rt; // a runtime (troupe/rt.h)
typedef struct tr_cx tr_cx; // the context of one poll; valid during it only

typedef enum tr_poll { TR_PENDING = 0, TR_READY = 1 } tr_poll;

// A poll function. It runs on a worker thread, never on two threads at once.
typedef tr_poll (*tr_poll_fn)(void *state, tr_cx *cx);

// A drop function releases what the state owns (registrations, buffers). It
// runs exactly once per started task: after the poll returned TR_READY, when
// a cancel is carried out, or at shutdown for a task that never completed.
typedef void (*tr_drop_fn)(void *state);

// tr_task_spec describes a kind of task. Keep it in static storage: tasks
// point at it for their whole life.
typedef struct tr_task_spec {
    const char *name; // shown by the dump; static string, may be NULL
    tr_poll_fn poll;  // required
    tr_drop_fn drop;  // NULL when the state owns nothing
    size_t size;      // bytes of state (at most TR_TASK_MAX_STATE)
} tr_task_spec;

// The largest state a pool slot holds. Keep bigger buffers behind a pointer.
#define TR_TASK_MAX_STATE ((size_t)65536 - 64)

// A task id names a task for cancellation and in dumps. A stale id (the task
// is gone and its slot reused) is recognised, never confused with another.
typedef struct tr_task_id {
    uint64_t id;
} tr_task_id;

// A task's result. Up to 16 bytes are stored inline in the task's slot.
typedef union tr_value {
    uint64_t u64;
    int64_t i64;
    double f64;
    void *ptr;
    unsigned char bytes[16];
} tr_value;

typedef void (*tr_dtor)(void *ptr);

// What joining a task yields. err is TR_OK (value is the result) or
// TR_ECANCELED. When dtor is not NULL the joiner owns value.ptr and must
// release it (tr_outcome_fini does).
typedef struct tr_outcome {
    tr_err err;
    tr_dtor dtor;
    tr_value value;
} tr_outcome;

// tr_outcome_fini releases a boxed result the joiner took ownership of. A
// plain result (a number, set with tr_cx_set_result or _u64: dtor NULL)
// needs nothing; the call is then a no-op, so calling it on every outcome
// is always right.
TR_API void tr_outcome_fini(tr_outcome *out);

// A join handle. It is the task's key, which names the task for good in
// this process; the field is private. A zeroed handle (TR_JOIN_NONE) is
// empty. Move it rather than copy it: the first call that consumes a
// handle (tr_join_wait, a tr_join_poll that returns TR_READY,
// tr_join_release) makes every copy stale, and a stale handle never
// reaches another task: join operations through it report TR_ENOTFOUND
// (tr_join_is_finished says true: nothing is left to wait for) and touch
// nothing. Wait on one task from one thread or task at a time.
typedef struct tr_join {
    uint64_t j_key; // private: the task's key, 0 when empty; read it with tr_join_id
} tr_join;

_Static_assert(sizeof(tr_join) == sizeof(uint64_t), "tr_join: one key");

#define TR_JOIN_NONE ((tr_join){0})

// ---------------------------------------------------------------------------
// Spawning.

// tr_task_new allocates a task of kind spec from rt's pool and stores a
// pointer to its zeroed state in *state, for the caller to fill in before
// tr_task_start. Any thread. Fails with TR_ESHUTDOWN once shutdown has begun,
// TR_EEXHAUSTED when the pool is at its limit (tr_rt_config.max_tasks) and
// TR_EINVAL for a bad spec. Spawns from a task of rt take a lock-free local
// path; spawns from other threads travel to the executor as a Spawn message.
TR_API tr_err tr_task_new(tr_rt *rt, const tr_task_spec *spec, void **state);

// tr_task_start schedules a task prepared by tr_task_new. When join is not
// NULL it receives the join handle; when NULL the task is detached and its
// slot is freed when it completes. Ownership of state passes to the runtime
// in every case. Same thread as the tr_task_new that made it. Returns
// TR_OK, or TR_ESHUTDOWN when a shutdown was requested after tr_task_new
// (see "Shutdown" in troupe/rt.h): the task is refused, its drop function
// runs on the calling thread (releasing what the caller put in the state),
// its slot is freed and *join is left empty. An accepted task is run, or
// cancelled, before tr_rt_block_on returns from a shutdown.
TR_API tr_err tr_task_start(void *state, tr_join *join);

// tr_spawn prepares, initialises and starts a task in one call: it
// allocates the state (as tr_task_new), then init(state, arg) fills it in
// (or, when init is NULL, spec->size bytes are copied from arg, or the
// state stays zeroed when arg is NULL too), then starts it (as
// tr_task_start). On TR_OK *join (may be NULL: detached) holds the handle.
// On an error nothing is started and *join is empty, and the code says
// who owns what arg handed over: TR_EINVAL, TR_EEXHAUSTED or TR_ESHUTDOWN
// from tr_task_new (init has not run: the caller still owns it all), or
// TR_ECANCELED when a shutdown began between the allocation and the start
// (init has run, and the drop function has released what init took over).
// Any thread.
TR_API tr_err tr_spawn(tr_rt *rt, const tr_task_spec *spec, void (*init)(void *state, void *arg),
                       void *arg, tr_join *join);

// tr_spawn_local is tr_spawn for a short task that the running task starts
// for its own use (a helper it will wait for or talk to): the new task
// wakes no idle worker. It runs on the calling worker once the current
// task has returned, unless a worker that is awake takes it first; so it
// is never lost, but it gets no parallelism it does not find. A spawn
// that wakes an idle worker costs that worker's wake-up and, often, a
// trip of the data to another CPU; for a task that is about to be joined
// or messaged that is pure cost. Under ws the task goes to the spawner's
// ring, under rr to the spawner's own queue; under hybrid, or from a
// thread that is not one of rt's workers, it is tr_spawn.
// Same arguments, results and ownership as tr_spawn. Any thread.
TR_API tr_err tr_spawn_local(tr_rt *rt, const tr_task_spec *spec,
                             void (*init)(void *state, void *arg), void *arg, tr_join *join);

// tr_task_discard frees a task prepared by tr_task_new but never started.
// Its drop function does not run (it never started).
TR_API void tr_task_discard(void *state);

// ---------------------------------------------------------------------------
// Join handles.

// tr_join_poll is the awaitable form of join: TR_READY with *out filled when
// the task has completed, or TR_PENDING after registering the current task to
// be woken. On TR_READY the handle is consumed and emptied. A stale handle
// (see tr_join) is TR_READY at once with out->err TR_ENOTFOUND, an empty one
// with TR_EINVAL. A leaf operation: it charges the poll budget. Cancelling
// the joining task releases nothing: the drop function must call
// tr_join_release for handles it still holds.
TR_API tr_poll tr_join_poll(tr_join *j, tr_cx *cx, tr_outcome *out);

// tr_join_wait blocks the calling thread until the task completes, then fills
// *out (may be NULL: a boxed result is destroyed), consumes the handle and
// empties it; TR_OK. Not from a worker thread of any runtime: there it
// returns TR_EDEADLOCK at once and leaves the handle as it was. TR_EINVAL
// for an empty handle, TR_ENOTFOUND for a stale one.
TR_API tr_err tr_join_wait(tr_join *j, tr_outcome *out);

// tr_join_wait_timeout is tr_join_wait for at most timeout_ns: TR_ETIMEDOUT
// when the task has not completed by then, with the handle still valid and
// *out untouched. Same rules and other errors as tr_join_wait.
TR_API tr_err tr_join_wait_timeout(tr_join *j, tr_outcome *out, uint64_t timeout_ns);

// tr_join_release detaches the task: it runs on and frees itself when done;
// a result it had already produced is destroyed. Consumes and empties the
// handle. Any thread; an empty or stale handle is a no-op (it is emptied).
TR_API void tr_join_release(tr_join *j);

// tr_join_id returns the id of the task behind a handle (id 0 for an
// empty one, TR_JOIN_NONE).
TR_API tr_task_id tr_join_id(const tr_join *j);

// tr_join_is_finished reports whether joining through j would not wait: the
// task has completed, or j is empty or stale (any thread).
TR_API bool tr_join_is_finished(const tr_join *j);

// ---------------------------------------------------------------------------
// Cancellation. Cancel sets a flag and wakes the task; the next time a worker
// picks it up it runs the drop function instead of the poll function and the
// join completes with TR_ECANCELED. A task that completes before the cancel
// is carried out keeps its result (completion wins).

// tr_task_abort cancels the task behind a handle; the handle stays valid for
// joining. Returns TR_OK when the cancel was requested (or already was),
// TR_EFINISHED when the task had already completed, TR_ENOTFOUND for a
// stale handle (see tr_join). Any thread.
TR_API tr_err tr_task_abort(const tr_join *j);

// tr_task_cancel cancels a task by id. TR_OK, TR_EFINISHED, or TR_ENOTFOUND
// for an id whose task is gone. Any thread.
TR_API tr_err tr_task_cancel(tr_rt *rt, tr_task_id id);

// ---------------------------------------------------------------------------
// Wakers. A waker is two words and needs no reference counting: a task's
// waker names it by key, and waking a finished or stale task does nothing.

typedef struct tr_waker tr_waker;

typedef struct tr_waker_ops {
    // wake is called from any thread with the waker it belongs to. It must
    // not block. A runtime's task wakers find their runtime through w->ops.
    void (*wake)(const tr_waker *w);
} tr_waker_ops;

struct tr_waker {
    const tr_waker_ops *ops;
    const void *data;
};

// tr_cx_waker returns the waker of the task being polled.
TR_API tr_waker tr_cx_waker(tr_cx *cx);

// tr_wake wakes whatever w names. Safe from any thread, including callbacks
// of other libraries (nng's aio). An empty waker ({NULL, NULL}) is a no-op.
TR_API void tr_wake(tr_waker w);

// tr_waker_eq reports whether two wakers wake the same thing.
static inline bool
tr_waker_eq(tr_waker a, tr_waker b)
{
    return a.ops == b.ops && a.data == b.data;
}

// ---------------------------------------------------------------------------
// The poll context.

// tr_cx_rt returns the runtime of the task being polled.
TR_API tr_rt *tr_cx_rt(tr_cx *cx);

// tr_cx_worker returns the index of the worker polling the task (0 is the
// thread inside tr_rt_block_on).
TR_API unsigned tr_cx_worker(tr_cx *cx);

// tr_cx_task_id returns the id of the task being polled.
TR_API tr_task_id tr_cx_task_id(tr_cx *cx);

// tr_cx_set_result stores up to 16 bytes of result (copied); the joiner gets
// it in tr_outcome.value. Call before returning TR_READY.
TR_API void tr_cx_set_result(tr_cx *cx, tr_value v);

// tr_cx_set_result_u64 is tr_cx_set_result for a plain integer.
TR_API void tr_cx_set_result_u64(tr_cx *cx, uint64_t v);

// tr_cx_set_result_ptr stores a result that owns heap memory: the joiner
// takes ownership, or dtor(ptr) runs if nobody joins.
TR_API void tr_cx_set_result_ptr(tr_cx *cx, void *ptr, tr_dtor dtor);

// tr_cx_budget_spend charges one unit of the cooperative budget. It returns
// false when the budget of this poll is spent: the task has then been woken
// again, and the caller (a leaf operation) must return TR_PENDING. Every
// leaf operation (IO, channel, join, timer) calls it first; user awaitables
// should too.
TR_API bool tr_cx_budget_spend(tr_cx *cx);

// tr_cx_budget returns the budget left in this poll (tests, diagnostics).
TR_API uint32_t tr_cx_budget(const tr_cx *cx);

// tr_cx_yield wakes the current task so that it is polled again after the
// others in the run queue; the caller returns TR_PENDING. TR_YIELD uses it.
TR_API void tr_cx_yield(tr_cx *cx);

// ---------------------------------------------------------------------------
// Await macros (protothread style). The state struct needs an `int tr_pc`
// member, zeroed (tr_task_new zeroes the state); only a poll function that
// uses these macros needs one. Every local that lives across an await is a
// field of the state; a value an awaitable hands back on TR_READY may be a
// local, used before the next await.
//
// With GCC and clang the macros resume through the address of a label (a
// GNU C extension: the resume point is the label's offset from the start of
// the function), so an await may sit anywhere a statement may: in loops,
// in if/else, and inside a switch of your own. Such a function is never
// inlined (its label offsets live in static storage). With other compilers
// (and in C++) they expand to a switch on tr_pc, and an await must not sit
// inside a switch of your own: its case label would attach to your switch,
// and resuming there panics with "task resumed at unknown point N (the
// switch form of the await macros: a TR_AWAIT inside a switch of its own)".
// Define TR_AWAIT_SWITCH to get the switch form with GCC or clang too.
//
// A task polled again after it finished panics with "task polled again
// after it finished" (the runtime never does that). Locals initialised
// before an await and read after it hold garbage on resume: gcc -Wall -O2
// (-Wmaybe-uninitialized) and clang -Wall (-Wuninitialized) report most;
// with the switch form gcc's -Wjump-misses-init reports them all.
//
//   static tr_poll run(void *arg, tr_cx *cx) {
//       struct job *st = arg;
//       TR_BEGIN(st);
//       TR_AWAIT(st, tr_join_poll(&st->child, cx, &st->out));
//       TR_YIELD(st, cx);
//       tr_cx_set_result_u64(cx, st->out.value.u64 + 1);
//       TR_END(st);
//   }

TR_API __attribute__((noreturn)) void tr__bad_resume(const char *file, int line, int pc);

#define TR__DONE (-2147483647 - 1)
#define TR__CAT2(a, b) a##b
#define TR__CAT(a, b) TR__CAT2(a, b)

#if defined(__GNUC__) && !defined(__cplusplus) && !defined(TR_AWAIT_SWITCH)

// The resume point is the offset of the await's label from tr__top. A
// label's address used in a static initialiser keeps the function from
// being inlined or cloned, so every offset is taken in the one copy that
// jumps to it (GCC manual, "Labels as Values").
#define TR_BEGIN(st)                                             \
    do {                                                         \
        if ((st)->tr_pc != 0) {                                  \
            if (__builtin_expect((st)->tr_pc == TR__DONE, 0)) {  \
                tr__bad_resume(__FILE__, __LINE__, (st)->tr_pc); \
            }                                                    \
            goto *(void *)((char *)&&tr__top + (st)->tr_pc);     \
        }                                                        \
    } while (0);                                                 \
    tr__top:

#define TR__MARK(st, n)                                           \
    static const int TR__CAT(tr__off_, n) =                       \
        (int)((char *)&&TR__CAT(tr__at_, n) - (char *)&&tr__top); \
    (st)->tr_pc = TR__CAT(tr__off_, n)

#define TR__AWAIT(st, expr, n)                          \
    do {                                                \
        TR__MARK(st, n);                                \
        TR__CAT(tr__at_, n) : if ((expr) == TR_PENDING) \
        {                                               \
            return TR_PENDING;                          \
        }                                               \
    } while (0)

#define TR__YIELD(st, cx, n)   \
    do {                       \
        TR__MARK(st, n);       \
        tr_cx_yield(cx);       \
        return TR_PENDING;     \
        TR__CAT(tr__at_, n) :; \
    } while (0)

#define TR__END(st)         \
    (st)->tr_pc = TR__DONE; \
    return TR_READY;

#else // the switch form

#define TR_BEGIN(st)       \
    switch ((st)->tr_pc) { \
    case 0:

// n is __COUNTER__ (from 0): case n + 1, since 0 is the start.
#define TR__AWAIT(st, expr, n)        \
    do {                              \
        (st)->tr_pc = (n) + 1;        \
        __attribute__((fallthrough)); \
    case (n) + 1:                     \
        if ((expr) == TR_PENDING) {   \
            return TR_PENDING;        \
        }                             \
    } while (0)

#define TR__YIELD(st, cx, n)   \
    do {                       \
        (st)->tr_pc = (n) + 1; \
        tr_cx_yield(cx);       \
        return TR_PENDING;     \
    case (n) + 1:;             \
    } while (0)

#define TR__END(st)                                      \
    (st)->tr_pc = TR__DONE;                              \
    return TR_READY;                                     \
    default:                                             \
        tr__bad_resume(__FILE__, __LINE__, (st)->tr_pc); \
        }

#endif

// TR_AWAIT(st, expr): evaluate expr (a tr_poll) until it is TR_READY,
// returning TR_PENDING from the poll function meanwhile.
#define TR_AWAIT(st, expr) TR__AWAIT(st, expr, __COUNTER__)

// TR_YIELD(st, cx): let the other runnable tasks run, then continue.
#define TR_YIELD(st, cx) TR__YIELD(st, cx, __COUNTER__)

// TR_RETURN(st): finish the task now (set the result first).
#define TR_RETURN(st)           \
    do {                        \
        (st)->tr_pc = TR__DONE; \
        return TR_READY;        \
    } while (0)

// TR_END(st): closes TR_BEGIN; falling off the end finishes the task.
#define TR_END(st) TR__END(st)

TR_END_DECLS

#endif
