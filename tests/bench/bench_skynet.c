// bench_skynet: a 10-ary tree of tasks with N leaves (default 1,000,000);
// each leaf returns its number, each parent spawns its ten children, joins
// them and returns their sum; the root's result must be N(N-1)/2
// (499999500000). Headline: wall time in ms (median of --runs).
#include <troupe/troupe.h>

#include "bench.h"

typedef struct node {
    int tr_pc;
    int i;
    uint64_t num;
    uint64_t size;
    uint64_t sum;
    tr_join kids[10];
} node;

static tr_poll node_poll(void *arg, tr_cx *cx);

static const tr_task_spec node_spec = {.name = "skynet", .poll = node_poll, .size = sizeof(node)};

static tr_poll
node_poll(void *arg, tr_cx *cx)
{
    node *st = arg;
    tr_outcome out; // used only in the poll that completes the join
    TR_BEGIN(st);
    if (st->size == 1) {
        tr_cx_set_result_u64(cx, st->num);
        TR_RETURN(st);
    }
    for (st->i = 0; st->i < 10; st->i++) {
        uint64_t size = st->size / 10;
        node k = {.size = size, .num = st->num + (uint64_t)st->i * size};
        if (tr_spawn(tr_cx_rt(cx), &node_spec, NULL, &k, &st->kids[st->i]) != TR_OK) {
            tr_cx_set_result_u64(cx, 0); // the check at the root fails
            TR_RETURN(st);
        }
    }
    for (st->i = 0; st->i < 10; st->i++) {
        TR_AWAIT(st, tr_join_poll(&st->kids[st->i], cx, &out));
        st->sum += out.value.u64;
    }
    tr_cx_set_result_u64(cx, st->sum);
    TR_END(st);
}

int
main(int argc, char **argv)
{
    // The target is for one worker; --workers and --sched compare.
    static const bench_def def = {.name = "skynet", .n = 1000000, .workers = 1};
    bench_args a = bench_parse(argc, argv, &def);
    uint64_t leaves = 1;
    while (leaves < a.n) {
        leaves *= 10;
    }
    a.n = leaves;
    double *secs = calloc(a.runs, sizeof(double));
    bool ok = true;
    uint64_t tasks = 0;
    for (uint64_t k = leaves; k >= 1; k /= 10) {
        tasks += k;
    }
    for (unsigned r = 0; r < a.runs; r++) {
        tr_rt *rt = bench_rt_new(&a);
        tr_err e;
        tr_outcome out = {0};
        secs[r] = bench_run(&a, rt, &node_spec, &(node){.size = leaves}, &e, &out);
        tr_rt_stats stats;
        tr_rt_get_stats(rt, &stats);
        ok = ok && e == TR_OK && out.value.u64 == leaves * (leaves - 1) / 2 &&
             stats.completed == tasks && stats.live_tasks == 0;
        tr_rt_free(rt);
    }
    double first = secs[0];
    double med = bench_median(secs, a.runs);
    bench_line(&a, "wall", med * 1e3, "ms", ok);
    // The first run maps fresh pool memory; later runs reuse it.
    bench_line(&a, "wall_first_run", first * 1e3, "ms", ok);
    bench_line(&a, "throughput", (double)tasks / med, "tasks/s", ok);
    bench_line(&a, "peak_rss", (double)bench_peak_rss(), "B", ok);
    free(secs);
    return ok ? 0 : 1;
}
