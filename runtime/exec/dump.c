// dump.c: what a runtime holds, for people: the task listing
// (tr_rt_foreach_task) and tr_rt_dump.
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "exec/exec.h"
#include "reactor/reactor.h"

// ---------------------------------------------------------------------------
// Dump.

const char *
tr_task_state_name(tr_task_state s)
{
    static const char *const names[] = {"prepared", "idle",       "scheduled",
                                        "running",  "cancelling", "complete"};
    if ((unsigned)s >= sizeof(names) / sizeof(names[0])) {
        return "?";
    }
    return names[s];
}

uint64_t
tr__rt_now_ms(tr_rt *rt)
{
    return (tr__now_ns() - rt->r_start_ns) / 1000000u;
}

typedef struct foreach_arg {
    void (*fn)(const tr_task_info *info, void *arg);
    void *arg;
    uint64_t now_ms;
} foreach_arg;

static void
foreach_one(tr__slot *s, void *arg)
{
    foreach_arg *fa = arg;
    tr_task_info info;
    if (tr__slot_info(s, fa->now_ms, &info)) {
        fa->fn(&info, fa->arg);
    }
}

void
tr_rt_foreach_task(tr_rt *rt, void (*fn)(const tr_task_info *info, void *arg), void *arg)
{
    foreach_arg fa = {fn, arg, tr__rt_now_ms(rt)};
    tr__pool_foreach(&rt->r_pool, foreach_one, &fa);
}

static void
dump_one(const tr_task_info *info, void *arg)
{
    fprintf((FILE *)arg, "  %016llx  %-24s %-10s polls=%-8u sleeps=%-6u idle=%llums\n",
            (unsigned long long)info->id.id, info->name, tr_task_state_name(info->state),
            info->polls, info->sleeps, (unsigned long long)info->idle_ms);
}

void
tr_rt_dump(tr_rt *rt, FILE *f)
{
    tr_rt_stats st;
    tr_rt_get_stats(rt, &st);
    fprintf(f, "troupe runtime %p: %u worker(s), scheduler %s%s, %llu live task(s)\n", (void *)rt,
            st.workers, tr_sched_name(st.sched), st.deterministic_seed ? " (deterministic)" : "",
            (unsigned long long)st.live_tasks);
    for (unsigned i = 0; i < rt->r_nworkers; i++) {
        tr_worker_stats ws;
        tr_rt_worker_stats(rt, i, &ws);
        fprintf(f,
                "  worker %u: polls=%llu steals=%llu stolen=%llu parks=%llu injector=%llu "
                "lifo=%llu queue=%llu\n",
                i, (unsigned long long)ws.polls, (unsigned long long)ws.steals,
                (unsigned long long)ws.stolen, (unsigned long long)ws.parks,
                (unsigned long long)ws.injector_pops, (unsigned long long)ws.lifo_hits,
                (unsigned long long)ws.queue_len);
    }
    tr_rt_foreach_task(rt, dump_one, f);
    fprintf(f,
            "  spawned=%llu completed=%llu cancelled=%llu polls=%llu commands=%llu "
            "pool_slots=%llu pool_bytes=%llu\n",
            (unsigned long long)st.spawned, (unsigned long long)st.completed,
            (unsigned long long)st.cancelled, (unsigned long long)st.polls,
            (unsigned long long)st.commands, (unsigned long long)st.pool_slots,
            (unsigned long long)st.pool_bytes);
}
