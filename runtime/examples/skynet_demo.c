// skynet_demo: the README's demo. Builds a 10-ary tree of 1,111,111 tasks
// (1,000,000 leaves) on the default runtime (work stealing, one worker per
// core; TROUPE_SCHED and TROUPE_WORKERS override); every parent spawns its ten
// children, awaits their join handles and returns the sum. Prints the result
// (499999500000) and how long each of three runs took: the first pays the
// page faults of fresh pool memory, the later ones reuse it.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <troupe/troupe.h>

typedef struct node {
    int tr_pc; // the await macros' resume point
    int i;
    uint64_t num, size, sum;
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
        node kid = {.size = size, .num = st->num + (uint64_t)st->i * size};
        tr_err e = tr_spawn(tr_cx_rt(cx), &node_spec, NULL, &kid, &st->kids[st->i]);
        if (e != TR_OK) {
            fprintf(stderr, "skynet: spawn failed: %s\n", tr_strerror(e));
            exit(1);
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
main(void)
{
    for (int run = 1; run <= 3; run++) {
        tr_rt *rt;
        tr_err e = tr_rt_new(NULL, &rt);
        if (e != TR_OK) {
            fprintf(stderr, "skynet: %s: %s\n", tr_strerror(e), tr_error_detail());
            return 1;
        }
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        tr_outcome out = {0};
        e = tr_rt_run(rt, &node_spec, NULL, &(node){.size = 1000000}, &out);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        tr_rt_stats st;
        tr_rt_get_stats(rt, &st);
        printf("skynet run %d: result %llu in %.1f ms (%llu tasks, %u workers, %s)\n", run,
               (unsigned long long)out.value.u64, ms, (unsigned long long)st.completed, st.workers,
               tr_sched_name(st.sched));
        tr_rt_free(rt);
        if (e != TR_OK || out.value.u64 != 499999500000ull) {
            fprintf(stderr, "skynet: wrong result (%s)\n", tr_strerror(e));
            return 1;
        }
    }
    tr_trim();
    return 0;
}
