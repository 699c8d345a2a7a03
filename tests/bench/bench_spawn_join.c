// bench_spawn_join: the root task spawns N tasks that each return their
// index, joins them all in order and checks the sum. Measures spawn + poll +
// complete + join throughput. Headline: tasks/s (median of --runs).
#include <troupe/troupe.h>

#include "bench.h"

typedef struct leaf {
    int tr_pc;
    uint64_t idx;
} leaf;

static tr_poll
leaf_poll(void *arg, tr_cx *cx)
{
    leaf *st = arg;
    tr_cx_set_result_u64(cx, st->idx);
    return TR_READY;
}

static const tr_task_spec leaf_spec = {.name = "leaf", .poll = leaf_poll, .size = sizeof(leaf)};

typedef struct root {
    int tr_pc;
    uint64_t n;
    uint64_t i;
    uint64_t sum;
    tr_err err;
    tr_join *joins;
    tr_outcome out;
} root;

static tr_poll
root_poll(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    for (st->i = 0; st->i < st->n; st->i++) {
        st->err =
            tr_spawn(tr_cx_rt(cx), &leaf_spec, NULL, &(leaf){.idx = st->i}, &st->joins[st->i]);
        if (st->err != TR_OK) {
            TR_RETURN(st);
        }
    }
    for (st->i = 0; st->i < st->n; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->joins[st->i], cx, &st->out));
        st->sum += st->out.value.u64;
    }
    tr_cx_set_result_u64(cx, st->sum);
    TR_END(st);
}

static const tr_task_spec root_spec = {.name = "root", .poll = root_poll, .size = sizeof(root)};

int
main(int argc, char **argv)
{
    // The target is for one worker; --workers and --sched compare.
    static const bench_def def = {.name = "spawn_join", .n = 1000000, .workers = 1};
    bench_args a = bench_parse(argc, argv, &def);
    double *secs = calloc(a.runs, sizeof(double));
    tr_join *joins = calloc(a.n, sizeof(tr_join));
    bool ok = true;
    for (unsigned r = 0; r < a.runs; r++) {
        tr_rt *rt = bench_rt_new(&a);
        tr_err e;
        tr_outcome out = {0};
        secs[r] = bench_run(&a, rt, &root_spec, &(root){.n = a.n, .joins = joins}, &e, &out);
        tr_rt_stats stats;
        tr_rt_get_stats(rt, &stats);
        ok = ok && e == TR_OK && out.value.u64 == a.n * (a.n - 1) / 2 &&
             stats.completed == a.n + 1 && stats.live_tasks == 0;
        tr_rt_free(rt);
    }
    double first = secs[0];
    double med = bench_median(secs, a.runs);
    bench_line(&a, "throughput", (double)a.n / med, "tasks/s", ok);
    // The first run maps fresh pool memory; later runs reuse it.
    bench_line(&a, "throughput_first_run", (double)a.n / first, "tasks/s", ok);
    bench_line(&a, "wall", med * 1e3, "ms", ok);
    bench_line(&a, "peak_rss", (double)bench_peak_rss(), "B", ok);
    free(secs);
    free(joins);
    return ok ? 0 : 1;
}
