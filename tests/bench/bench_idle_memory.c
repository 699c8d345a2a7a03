// bench_idle_memory: what an idle task costs. The root task creates N
// oneshots (default 1,000,000, --tasks or --n), spawns N tasks that each
// await one of them, and waits until every task has parked: each task, on
// its first poll, counts itself in an atomic after tr_oneshot_recv returned
// TR_PENDING (its waker is then stored), and the one that brings the count
// to N sends on a "gate" oneshot the root is awaiting. No sleeping: the
// measurement is taken on that event. Then the root sends on every oneshot,
// joins every task and the runtime is freed.
//
// Memory is the resident set (VmRSS, from /proc/self/statm), read three
// times inside the root task: before the oneshots exist (rss0), once they
// all exist (rss1), and once every task has parked (rss2). The harness's own
// arrays (one oneshot pointer and one join handle per task, 16 B) are
// allocated and touched before rss0, so they are not counted.
//
// Headline: bytes_per_task = (rss2 - rss0) / N, in B/task (the issue:
// tokio 224 B, target <= 128 B): everything an idle task costs, its oneshot
// included. Then the parts:
//   oneshot_bytes_per_task  (rss1 - rss0) / N: the heap-allocated oneshot
//                           (header, lock, waker, malloc's chunk overhead);
//   task_bytes_per_task     (rss2 - rss1) / N: the task itself, i.e. its
//                           pool slot plus whatever the run queues kept
//                           (spawning a million tasks at once overflows the
//                           worker's ring into the injector, whose array
//                           grows and stays allocated);
//   slot_bytes_per_task     growth of tr_rt_stats.pool_bytes / N: the pool
//                           memory for slots alone (64 B header + state,
//                           rounded up to the slot class);
// and the wall time of spawn-until-all-parked and of release-and-join, and
// peak RSS. Self-check: every oneshot created, every task spawned, parked
// once, woken with TR_OK and joined with its own index, every send TR_OK,
// and the runtime counts N+1 completed tasks and none live.
//
// One measurement per process: a second run in the same process would reuse
// the memory the first one freed (the pool's cache, malloc's free lists), so
// --runs is ignored. Default --workers 1 --sched ws.
#include <stdatomic.h>

#include <troupe/troupe.h>

#include "bench.h"

// ---------------------------------------------------------------------------
// Parking signal, shared by all the idlers of the one run.

static _Atomic uint64_t g_parked;           // idlers that have been polled once
static _Atomic uint64_t g_target;           // the count that opens the gate
static _Atomic(tr_oneshot *) g_gate;        // the root's gate; taken by its sender
static _Atomic uint64_t g_parked_not_empty; // idlers whose first poll was not PENDING

// gate_take returns the gate's sender end once, to whoever asks first (the
// idler that completes the count, or the root giving up after a failed
// spawn), and NULL to everyone else.
static tr_oneshot *
gate_take(void)
{
    return atomic_exchange_explicit(&g_gate, NULL, memory_order_acq_rel);
}

static void
parked_one(void)
{
    uint64_t k = atomic_fetch_add_explicit(&g_parked, 1, memory_order_acq_rel) + 1;
    if (k == atomic_load_explicit(&g_target, memory_order_acquire)) {
        tr_oneshot *gate = gate_take();
        if (gate != NULL) {
            (void)tr_oneshot_send(gate, NULL);
        }
    }
}

// ---------------------------------------------------------------------------
// The idle task: awaits its oneshot, returns its index.

// 16 bytes: with the 64-byte header, the pool's 80-byte class.
typedef struct idler {
    tr_oneshot *rx; // receiver end; NULL once the receive finished
    uint32_t idx;
    uint8_t err; // a tr_err
    bool counted;
} idler;
_Static_assert(sizeof(idler) == 16, "the idle task's state is 16 bytes");

static tr_poll
idler_poll(void *arg, tr_cx *cx)
{
    idler *st = arg;
    tr_err err = TR_OK;
    tr_poll p = tr_oneshot_recv(st->rx, cx, NULL, &err);
    st->err = (uint8_t)err;
    if (!st->counted) {
        st->counted = true;
        if (p != TR_PENDING) {
            atomic_fetch_add_explicit(&g_parked_not_empty, 1, memory_order_relaxed);
        }
        parked_one();
    }
    if (p == TR_PENDING) {
        return TR_PENDING;
    }
    st->rx = NULL; // the finished receive released the receiver end
    tr_cx_set_result_u64(cx, st->err == TR_OK ? st->idx : UINT64_MAX);
    return TR_READY;
}

static void
idler_drop(void *arg)
{
    idler *st = arg;
    if (st->rx != NULL) {
        tr_oneshot_receiver_release(st->rx);
    }
}

static const tr_task_spec idler_spec = {
    .name = "idler", .poll = idler_poll, .drop = idler_drop, .size = sizeof(idler)};

// ---------------------------------------------------------------------------
// The root task.

typedef struct report {
    uint64_t rss0, rss1, rss2;
    uint64_t pool0, pool2;
    double t_spawn0, t_parked, t_joined;
    uint64_t created;   // oneshots created
    uint64_t spawned;   // idlers started
    uint64_t sends_ok;  // sends that returned TR_OK
    uint64_t joined_ok; // idlers joined with TR_OK and their own index
    bool gate_ok;       // the gate opened with TR_OK
} report;

typedef struct root {
    int tr_pc;
    uint64_t n, i;
    tr_oneshot **tx; // tx[i]: idler i's oneshot (sender end, then sent)
    tr_join *joins;
    tr_oneshot *gate; // receiver end
    tr_err err;
    tr_outcome out;
    report *rep;
} root;

// spawn_all creates the gate and starts the idlers; false if one could not
// be started (the ones that were are released by the caller's join loop).
static bool
spawn_all(root *st, tr_cx *cx)
{
    report *rep = st->rep;
    atomic_store(&g_parked, 0);
    atomic_store(&g_parked_not_empty, 0);
    atomic_store(&g_target, st->n);
    if (tr_oneshot_new(0, &st->gate) != TR_OK) {
        return false;
    }
    atomic_store(&g_gate, st->gate);
    for (uint64_t i = 0; i < st->n; i++) {
        idler init = {.rx = st->tx[i], .idx = (uint32_t)i};
        if (tr_spawn(tr_cx_rt(cx), &idler_spec, NULL, &init, &st->joins[i]) != TR_OK) {
            return false;
        }
        rep->spawned++;
    }
    return true;
}

static tr_poll
root_poll(void *arg, tr_cx *cx)
{
    root *st = arg;
    report *rep = st->rep;
    TR_BEGIN(st);
    rep->pool0 = bench_pool_bytes(tr_cx_rt(cx));
    rep->rss0 = bench_rss();
    for (st->i = 0; st->i < st->n; st->i++) {
        if (tr_oneshot_new(0, &st->tx[st->i]) != TR_OK) {
            break;
        }
        rep->created++;
    }
    rep->rss1 = bench_rss();
    rep->t_spawn0 = bench_now();
    if (rep->created == st->n && spawn_all(st, cx)) {
        TR_AWAIT(st, tr_oneshot_recv(st->gate, cx, NULL, &st->err));
        rep->gate_ok = st->err == TR_OK;
        rep->t_parked = bench_now();
        rep->rss2 = bench_rss();
        rep->pool2 = bench_pool_bytes(tr_cx_rt(cx));
    } else {
        // Something could not be made: give up the gate (if nobody took its
        // sender end yet) and release what the idlers did not get.
        fprintf(stderr, "bench_idle_memory: created %llu oneshots, spawned %llu tasks of %llu\n",
                (unsigned long long)rep->created, (unsigned long long)rep->spawned,
                (unsigned long long)st->n);
        if (st->gate != NULL) {
            tr_oneshot *g = gate_take();
            if (g != NULL) {
                tr_oneshot_sender_release(g);
            }
            tr_oneshot_receiver_release(st->gate);
        }
        for (uint64_t i = rep->spawned; i < rep->created; i++) {
            tr_oneshot_sender_release(st->tx[i]);
            tr_oneshot_receiver_release(st->tx[i]);
        }
    }
    // Release every idler that was started, then join them all.
    for (st->i = 0; st->i < rep->spawned; st->i++) {
        if (tr_oneshot_send(st->tx[st->i], NULL) == TR_OK) {
            rep->sends_ok++;
        }
    }
    for (st->i = 0; st->i < rep->spawned; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->joins[st->i], cx, &st->out));
        if (st->out.err == TR_OK && st->out.value.u64 == st->i) {
            rep->joined_ok++;
        }
    }
    rep->t_joined = bench_now();
    TR_END(st);
}

static const tr_task_spec root_spec = {.name = "root", .poll = root_poll, .size = sizeof(root)};

int
main(int argc, char **argv)
{
    static uint64_t tasks;
    static const bench_opt opts[] = {
        {.flag = "--tasks", .help = "idle tasks (same as --n; default 1000000)", .num = &tasks},
    };
    static const bench_def def = {
        .name = "idle_memory", .n = 1000000, .workers = 1, .opts = opts, .nopts = 1};
    bench_args a = bench_parse(argc, argv, &def);
    uint64_t n = tasks != 0 ? tasks : a.n;
    if (n == 0) {
        fprintf(stderr, "bench_idle_memory: --tasks must be at least 1\n");
        return 2;
    }

    // The harness's arrays: resident before the baseline.
    tr_oneshot **tx = malloc(n * sizeof *tx);
    tr_join *joins = malloc(n * sizeof *joins);
    if (tx == NULL || joins == NULL) {
        fprintf(stderr, "bench_idle_memory: out of memory for %llu tasks\n", (unsigned long long)n);
        return 1;
    }
    bench_touch(tx, n * sizeof *tx);
    bench_touch(joins, n * sizeof *joins);

    tr_rt *rt = bench_rt_new(&a);
    report rep = {0};
    tr_err e;
    tr_outcome out = {0};
    bench_run(&a, rt, &root_spec, &(root){.n = n, .tx = tx, .joins = joins, .rep = &rep}, &e, &out);
    tr_rt_stats stats;
    tr_rt_get_stats(rt, &stats);
    tr_rt_free(rt);

    uint64_t parked = atomic_load(&g_parked);
    uint64_t not_empty = atomic_load(&g_parked_not_empty);
    bool ok = e == TR_OK && out.err == TR_OK && rep.created == n && rep.spawned == n &&
              rep.gate_ok && parked == n && not_empty == 0 && rep.sends_ok == n &&
              rep.joined_ok == n && stats.completed == n + 1 && stats.live_tasks == 0 &&
              rep.rss0 > 0 && rep.rss2 >= rep.rss0;
    if (!ok) {
        fprintf(stderr,
                "bench_idle_memory: block_on %s, created %llu, spawned %llu, gate %d, parked "
                "%llu (%llu not pending), sends ok %llu, joined ok %llu, completed %llu, live "
                "%llu (want %llu)\n",
                tr_strerror(e), (unsigned long long)rep.created, (unsigned long long)rep.spawned,
                rep.gate_ok, (unsigned long long)parked, (unsigned long long)not_empty,
                (unsigned long long)rep.sends_ok, (unsigned long long)rep.joined_ok,
                (unsigned long long)stats.completed, (unsigned long long)stats.live_tasks,
                (unsigned long long)n);
    }
    double dn = (double)n;
    double total = ((double)rep.rss2 - (double)rep.rss0) / dn;
    double oneshot = ((double)rep.rss1 - (double)rep.rss0) / dn;
    double task = ((double)rep.rss2 - (double)rep.rss1) / dn;
    double slot = ((double)rep.pool2 - (double)rep.pool0) / dn;
    bench_line(&a, "bytes_per_task", total, "B/task", ok);
    bench_line(&a, "task_bytes_per_task", task, "B/task", ok);
    bench_line(&a, "slot_bytes_per_task", slot, "B/task", ok);
    bench_line(&a, "oneshot_bytes_per_task", oneshot, "B/task", ok);
    bench_line(&a, "spawn_park_wall", (rep.t_parked - rep.t_spawn0) * 1e3, "ms", ok);
    bench_line(&a, "release_join_wall", (rep.t_joined - rep.t_parked) * 1e3, "ms", ok);
    bench_line(&a, "peak_rss", (double)bench_peak_rss(), "B", ok);
    free(tx);
    free(joins);
    return ok ? 0 : 1;
}
