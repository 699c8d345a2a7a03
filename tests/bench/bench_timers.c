// bench_timers: issue #4's timer benchmark. N tasks (default 1,000,000)
// each sleep until a random deadline in [0, 1 s) after the start; measured
// from the first arm to the last wake-up, with peak RSS.
//
// Headline: "elapsed" in s (first arm to last wake; the deadlines alone
// make it at least ~1 s). Then late_p50 / late_p99 / late_max (how long
// after its deadline a task ran, ms; from its first poll for a task that
// first ran after its deadline, as tasks spawned late in the burst do) and
// peak_rss (B). Self-check: every
// task woke, none before its deadline. One run per process (RSS).
//
//   bench_timers [--n 1000000] [--workers 1] [--sched ws] [--span-ms 1000]
#include "bench.h"

#include <stdatomic.h>

typedef struct shared {
    uint64_t t0;      // ns on the runtime's clock: deadlines count from here
    uint64_t span_ns; // deadlines in [t0, t0 + span)
    uint64_t n;
    uint64_t t_spawned; // when the last sleeper was spawned
    atomic_uint_fast64_t done;
    atomic_uint_fast64_t early;
    atomic_uint_fast64_t last_wake; // ns
    uint32_t *late_us;              // per task, for percentiles
    tr_oneshot *all_done;
} shared;

typedef struct sleeper {
    int tr_pc;
    uint32_t idx;
    tr_timer t;
    uint64_t deadline;
    uint64_t due; // max(deadline, first poll)
    shared *sh;
} sleeper;

static tr_poll
sleeper_poll(void *arg, tr_cx *cx)
{
    sleeper *st = arg;
    TR_BEGIN(st);
    {
        // Lateness counts from the deadline, or from the first poll when
        // the task first ran after its deadline (spawned late in the burst).
        uint64_t now = tr_now(tr_cx_rt(cx));
        st->due = now > st->deadline ? now : st->deadline;
    }
    TR_AWAIT(st, tr_sleep_until(&st->t, cx, st->deadline));
    {
        shared *sh = st->sh;
        uint64_t now = tr_now(tr_cx_rt(cx));
        if (now < st->deadline) {
            atomic_fetch_add_explicit(&sh->early, 1, memory_order_relaxed);
        }
        uint64_t late = (now - st->due) / 1000;
        sh->late_us[st->idx] = late > UINT32_MAX ? UINT32_MAX : (uint32_t)late;
        uint64_t prev = atomic_load_explicit(&sh->last_wake, memory_order_relaxed);
        while (prev < now &&
               !atomic_compare_exchange_weak_explicit(&sh->last_wake, &prev, now,
                                                      memory_order_relaxed, memory_order_relaxed)) {
        }
        if (atomic_fetch_add_explicit(&sh->done, 1, memory_order_acq_rel) + 1 == sh->n) {
            tr_oneshot_send(sh->all_done, NULL);
        }
    }
    TR_END(st);
}

static void
sleeper_drop(void *arg)
{
    sleeper *st = arg;
    tr_timer_abandon(&st->t);
}

static const tr_task_spec sleeper_spec = {
    .name = "sleeper", .poll = sleeper_poll, .drop = sleeper_drop, .size = sizeof(sleeper)};

typedef struct root {
    int tr_pc;
    shared *sh;
    uint64_t i;
    uint64_t rng;
    tr_err err;
} root;

static uint64_t
splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void
spawn_one(root *st, tr_rt *rt)
{
    shared *sh = st->sh;
    sleeper s = {
        .idx = (uint32_t)st->i, .sh = sh, .deadline = sh->t0 + splitmix(&st->rng) % sh->span_ns};
    if (tr_spawn(rt, &sleeper_spec, NULL, &s, NULL) != TR_OK) {
        fprintf(stderr, "bench_timers: spawn failed at %llu\n", (unsigned long long)st->i);
        exit(1);
    }
}

static tr_poll
root_poll(void *arg, tr_cx *cx)
{
    root *st = arg;
    shared *sh = st->sh;
    tr_rt *rt = tr_cx_rt(cx);
    TR_BEGIN(st);
    sh->t0 = tr_now(rt);
    for (st->i = 0; st->i < sh->n; st->i++) {
        spawn_one(st, rt);
        if ((st->i & 1023) == 1023) {
            // Let the sleepers spawned so far arm (and fire) meanwhile.
            TR_YIELD(st, cx);
        }
    }
    sh->t_spawned = tr_now(rt);
    TR_AWAIT(st, tr_oneshot_recv(sh->all_done, cx, NULL, &st->err));
    TR_END(st);
}

static const tr_task_spec root_spec = {.name = "root", .poll = root_poll, .size = sizeof(root)};

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
    static uint64_t span_ms = 1000;
    static const bench_opt opts[] = {
        {"--span-ms", "deadlines are spread over [0, span) ms (1000)", &span_ms, NULL},
    };
    static const bench_def def = {
        .name = "timers", .n = 1000000, .workers = 1, .opts = opts, .nopts = 1};
    bench_args a = bench_parse(argc, argv, &def);
    tr_rt *rt = bench_rt_new(&a);
    shared sh = {.n = a.n, .span_ns = span_ms * TR_NS_PER_MS};
    sh.late_us = calloc(a.n, sizeof(uint32_t));
    if (sh.late_us == NULL || tr_oneshot_new(0, &sh.all_done) != TR_OK) {
        return 1;
    }
    tr_err e;
    tr_outcome out = {0};
    bench_run(&a, rt, &root_spec, &(root){.sh = &sh, .rng = 42}, &e, &out);
    uint64_t done = atomic_load(&sh.done);
    bool ok = e == TR_OK && done == a.n && atomic_load(&sh.early) == 0;
    double elapsed = (double)(atomic_load(&sh.last_wake) - sh.t0) * 1e-9;
    qsort(sh.late_us, a.n, sizeof(uint32_t), cmp_u32);
    bench_line(&a, "elapsed", elapsed, "s", ok);
    bench_line(&a, "spawn_phase", (double)(sh.t_spawned - sh.t0) * 1e-9, "s", ok);
    bench_line(&a, "late_p50", sh.late_us[a.n / 2] / 1e3, "ms", ok);
    bench_line(&a, "late_p99", sh.late_us[a.n * 99 / 100] / 1e3, "ms", ok);
    bench_line(&a, "late_max", sh.late_us[a.n - 1] / 1e3, "ms", ok);
    bench_line(&a, "peak_rss", (double)bench_peak_rss(), "B", ok);
    bench_line(&a, "early", (double)atomic_load(&sh.early), "count", ok);
    tr_rt_free(rt);
    free(sh.late_us);
    if (!ok) {
        fprintf(stderr, "bench_timers: self-check failed: %s, %llu of %llu woke\n", tr_strerror(e),
                (unsigned long long)done, (unsigned long long)a.n);
        return 1;
    }
    return 0;
}
