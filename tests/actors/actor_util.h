// actor_util.h: the harness of the actor tests: a runtime whose workers
// run on a background thread until the test ends (so a test body is a
// plain thread that waits on events with deadlines), and numbered messages
// (a troupe.v1.Address body carries two numbers: node a tag, actor a
// sequence number).
#ifndef TR_ACTOR_UTIL_H
#define TR_ACTOR_UTIL_H

#include "runtime/test_util.h"

#include <troupe/actor.h>

// ---------------------------------------------------------------------------
// Harness: a runtime whose workers run on a background thread until the
// test ends, so the test body is a plain thread that waits on events.

typedef struct bg {
    tr_rt *rt;
    pthread_t th;
    tu_event stop;
} bg;

typedef struct bg_root {
    tu_event *stop;
} bg_root;

static TU_UNUSED tr_poll
bg_root_poll(void *arg, tr_cx *cx)
{
    bg_root *st = arg;
    return tu_event_poll(st->stop, cx);
}

static const tr_task_spec bg_root_spec = {"bg_root", bg_root_poll, NULL, sizeof(bg_root)};

static TU_UNUSED void *
bg_main(void *arg)
{
    bg *b = arg;
    bg_root init = {&b->stop};
    tr_outcome out;
    tr_err err = tr_rt_run(b->rt, &bg_root_spec, NULL, &init, &out);
    TU_CHECK(err == TR_OK);
    return NULL;
}

static TU_UNUSED tr_rt *
rt_new(unsigned workers)
{
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.workers = workers;
    cfg.sched = TR_SCHED_WS;
    return tu_rt_new_cfg(&cfg);
}

static TU_UNUSED void
bg_start(bg *b, unsigned workers)
{
    b->rt = rt_new(workers);
    tu_event_init(&b->stop);
    tu_thread_start(&b->th, bg_main, b);
}

// bg_start_on runs the workers of an existing runtime.
static TU_UNUSED void
bg_start_on(bg *b, tr_rt *rt)
{
    b->rt = rt;
    tu_event_init(&b->stop);
    tu_thread_start(&b->th, bg_main, b);
}

static TU_UNUSED void
bg_stop(bg *b)
{
    tu_event_set(&b->stop);
    tu_thread_join(b->th);
    tr_rt_free(b->rt);
    tu_event_destroy(&b->stop);
    tu_checks_pass();
}

static TU_UNUSED tr_msg *
num_msg(uint64_t tag, uint64_t seq)
{
    Troupe__V1__Address *a;
    tr_msg *m = tr_msg_new(&troupe__v1__address__descriptor, 0, (void **)&a);
    a->node = tag;
    a->actor = seq;
    return m;
}

static TU_UNUSED const Troupe__V1__Address *
num_of(const tr_msg *m)
{
    return tr_msg_is(m, &troupe__v1__address__descriptor) ? tr_msg_body(m) : NULL;
}

#endif
