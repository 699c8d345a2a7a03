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
        node *k;
        if (tr_task_new(tr_cx_rt(cx), &node_spec, (void **)&k) != TR_OK) {
            tr_cx_set_result_u64(cx, 0); // the check at the root fails
            TR_RETURN(st);
        }
        k->size = st->size / 10;
        k->num = st->num + (uint64_t)st->i * k->size;
        tr_task_start(k, &st->kids[st->i]);
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
    bench_args a = bench_parse(argc, argv, "skynet", 1000000);
    uint64_t leaves = 1;
    while (leaves < a.n) {
        leaves *= 10;
    }
    a.n = leaves;
    double *secs = calloc(a.runs, sizeof(double));
    bool ok = true;
    tr_rt_config cfg;
    tr_rt_config_init(&cfg);
    cfg.workers = a.workers;
    uint64_t tasks = 0;
    for (uint64_t k = leaves; k >= 1; k /= 10) {
        tasks += k;
    }
    for (unsigned r = 0; r < a.runs; r++) {
        tr_rt *rt;
        tr_err e = tr_rt_new(&cfg, &rt);
        if (e != TR_OK) {
            fprintf(stderr, "tr_rt_new: %s\n", tr_strerror(e));
            return 1;
        }
        node *st;
        tr_task_new(rt, &node_spec, (void **)&st);
        st->num = 0;
        st->size = leaves;
        double t0 = bench_now();
        tr_outcome out;
        e = tr_rt_block_on(rt, st, &out);
        secs[r] = bench_now() - t0;
        tr_rt_stats stats;
        tr_rt_get_stats(rt, &stats);
        ok = ok && e == TR_OK && out.value.u64 == leaves * (leaves - 1) / 2 &&
             stats.completed == tasks && stats.live_tasks == 0;
        tr_rt_free(rt);
    }
    double first = secs[0];
    double med = bench_median(secs, a.runs);
    bench_line("skynet", &a, "wall", med * 1e3, "ms", ok);
    // The first run maps fresh pool memory; later runs reuse it.
    bench_line("skynet", &a, "wall_first_run", first * 1e3, "ms", ok);
    bench_line("skynet", &a, "throughput", (double)tasks / med, "tasks/s", ok);
    bench_line("skynet", &a, "peak_rss", (double)bench_peak_rss(), "B", ok);
    free(secs);
    return ok ? 0 : 1;
}
