// bench_yield_storm: the root task spawns N tasks (default 10,000) that each
// yield Y times (--yields, default 100) with TR_YIELD and then return their
// count, and joins them all. Every yield re-queues the task behind the
// others, so this measures the scheduler's re-queue and pick path under a
// full run queue (plus, with more workers, how evenly the work spreads and
// what stealing and the shared queues cost). Default --workers 2 --sched ws.
//
// Headline: yields/s (N*Y / wall, median of --runs); then wall (ms),
// peak_rss (B), and the runtime's steals and parks of the last run.
// Self-check: every task joined with TR_OK and returned Y, and the yields
// add up to N*Y.
#include <troupe/troupe.h>

#include "bench.h"

typedef struct yielder {
    int tr_pc;
    uint64_t yields, i;
} yielder;

static tr_poll
yielder_poll(void *arg, tr_cx *cx)
{
    yielder *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->yields; st->i++) {
        TR_YIELD(st, cx);
    }
    tr_cx_set_result_u64(cx, st->i);
    TR_END(st);
}

static const tr_task_spec yielder_spec = {
    .name = "yielder", .poll = yielder_poll, .size = sizeof(yielder)};

// What the root hands back to main.
typedef struct tally {
    uint64_t spawned; // tasks started
    uint64_t good;    // tasks joined with TR_OK and a count of Y
    uint64_t yields;  // the counts they returned, summed
} tally;

typedef struct root {
    int tr_pc;
    uint64_t n, yields, i;
    tr_join *joins;
    tally *t;
    tr_outcome out;
} root;

static tr_poll
root_poll(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->n; st->i++) {
        if (tr_spawn(tr_cx_rt(cx), &yielder_spec, NULL, &(yielder){.yields = st->yields},
                     &st->joins[st->i]) != TR_OK) {
            break; // the check fails on the count; join what was started
        }
        st->t->spawned++;
    }
    for (st->i = 0; st->i < st->t->spawned; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->joins[st->i], cx, &st->out));
        if (st->out.err == TR_OK && st->out.value.u64 == st->yields) {
            st->t->good++;
        }
        if (st->out.err == TR_OK) {
            st->t->yields += st->out.value.u64;
        }
    }
    TR_END(st);
}

static const tr_task_spec root_spec = {.name = "root", .poll = root_poll, .size = sizeof(root)};

int
main(int argc, char **argv)
{
    static uint64_t yields = 100;
    static const bench_opt opts[] = {
        {.flag = "--yields", .help = "yields per task (default 100)", .num = &yields},
    };
    static const bench_def def = {
        .name = "yield_storm", .n = 10000, .workers = 2, .opts = opts, .nopts = 1};
    bench_args a = bench_parse(argc, argv, &def);
    double *secs = calloc(a.runs, sizeof(double));
    tr_join *joins = calloc(a.n ? a.n : 1, sizeof(tr_join));
    bool ok = true;
    tr_rt_stats stats = {0};
    for (unsigned r = 0; r < a.runs; r++) {
        tr_rt *rt = bench_rt_new(&a);
        tally t = {0};
        root init = {.n = a.n, .yields = yields, .joins = joins, .t = &t};
        tr_err e;
        tr_outcome out = {0};
        secs[r] = bench_run(&a, rt, &root_spec, &init, &e, &out);
        tr_rt_get_stats(rt, &stats);
        bool run_ok = e == TR_OK && t.spawned == a.n && t.good == a.n && t.yields == a.n * yields &&
                      stats.completed == a.n + 1 && stats.live_tasks == 0;
        if (!run_ok) {
            fprintf(stderr,
                    "bench_yield_storm: run %u: block_on %s, spawned %llu, good %llu, "
                    "yields %llu, completed %llu, live %llu (want %llu tasks, %llu yields)\n",
                    r, tr_strerror(e), (unsigned long long)t.spawned, (unsigned long long)t.good,
                    (unsigned long long)t.yields, (unsigned long long)stats.completed,
                    (unsigned long long)stats.live_tasks, (unsigned long long)a.n,
                    (unsigned long long)(a.n * yields));
        }
        ok = ok && run_ok;
        tr_rt_free(rt);
    }
    double med = bench_median(secs, a.runs);
    bench_line(&a, "throughput", (double)(a.n * yields) / med, "yields/s", ok);
    bench_line(&a, "wall", med * 1e3, "ms", ok);
    bench_line(&a, "peak_rss", (double)bench_peak_rss(), "B", ok);
    bench_line(&a, "steals_last_run", (double)stats.steals, "count", ok);
    bench_line(&a, "parks_last_run", (double)stats.parks, "count", ok);
    free(secs);
    free(joins);
    return ok ? 0 : 1;
}
