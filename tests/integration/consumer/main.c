// The packaging test's consumer (not a tutorial: runtime/examples/hello.c is
// the tour). It includes the installed headers in a strict build, then runs
// a one-worker runtime: a root task spawns a child that sleeps 1 ms (a
// timer, so the reactor's driver waits in epoll_wait), joins it and returns
// its result plus one. That pulls the executor, the scheduler, the reactor
// and the protobuf-c command messages into the program, so a link that
// misses a dependency (libprotobuf-c, pthreads) fails here rather than in a
// user's build. It also packs and unpacks an executor command through the
// installed <troupe/v1/executor.pb-c.h>, whose code libtroupe exports (one
// copy of each descriptor). Exits 0 when every answer is as documented.
#include <stdio.h>
#include <string.h>

#include <troupe/plugin.h> // trouped's plugin ABI: builds on the installed headers alone
#include <troupe/troupe.h>
#include <troupe/v1/executor.pb-c.h>

typedef struct child {
    int tr_pc;
    tr_timer timer;
} child;

static tr_poll
child_poll(void *arg, tr_cx *cx)
{
    child *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_sleep(&st->timer, cx, TR_NS_PER_MS));
    tr_cx_set_result_u64(cx, 41);
    TR_END(st);
}

static void
child_drop(void *arg)
{
    child *st = arg;
    tr_sleep_abandon(&st->timer);
}

static const tr_task_spec child_spec = {
    .name = "child", .poll = child_poll, .drop = child_drop, .size = sizeof(child)};

typedef struct root {
    int tr_pc;
    tr_join child;
    tr_outcome out;
} root;

static tr_poll
root_poll(void *arg, tr_cx *cx)
{
    root *st = arg;
    TR_BEGIN(st);
    if (tr_spawn(tr_cx_rt(cx), &child_spec, NULL, NULL, &st->child) != TR_OK) {
        TR_RETURN(st); // result 0: main reports the failure
    }
    TR_AWAIT(st, tr_join_poll(&st->child, cx, &st->out));
    tr_cx_set_result_u64(cx, st->out.err == TR_OK ? st->out.value.u64 + 1 : 0);
    TR_END(st);
}

static void
root_drop(void *arg)
{
    root *st = arg;
    tr_join_release(&st->child); // a no-op once the join completed
}

static const tr_task_spec root_spec = {
    .name = "root", .poll = root_poll, .drop = root_drop, .size = sizeof(root)};

int
main(void)
{
    const char *s = tr_strerror(TR_ECLOSED);
    if (s == NULL || strcmp(s, "closed") != 0) {
        fprintf(stderr, "tr_strerror(TR_ECLOSED) = \"%s\", want \"closed\"\n", s ? s : "(null)");
        return 1;
    }

    // A Cancel command through the generated code libtroupe exports.
    Troupe__V1__Cancel cancel = TROUPE__V1__CANCEL__INIT;
    cancel.task_id = 12345;
    Troupe__V1__ExecutorCommand cmd = TROUPE__V1__EXECUTOR_COMMAND__INIT;
    cmd.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL;
    cmd.cancel = &cancel;
    uint8_t wire[64];
    size_t len = troupe__v1__executor_command__get_packed_size(&cmd);
    if (len > sizeof(wire) || troupe__v1__executor_command__pack(&cmd, wire) != len) {
        fprintf(stderr, "packing an ExecutorCommand failed\n");
        return 1;
    }
    Troupe__V1__ExecutorCommand *back = troupe__v1__executor_command__unpack(NULL, len, wire);
    if (back == NULL || back->command_case != TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL ||
        back->cancel->task_id != 12345) {
        fprintf(stderr, "unpacking an ExecutorCommand failed\n");
        return 1;
    }
    troupe__v1__executor_command__free_unpacked(back, NULL);

    tr_rt_config cfg;
    tr_rt_config_init(&cfg);
    cfg.workers = 1;
    cfg.ignore_env = true;
    tr_rt *rt;
    tr_err e = tr_rt_new(&cfg, &rt);
    if (e != TR_OK) {
        fprintf(stderr, "tr_rt_new: %s: %s\n", tr_strerror(e), tr_error_detail());
        return 1;
    }
    tr_outcome out = {0};
    e = tr_rt_run(rt, &root_spec, NULL, NULL, &out);
    tr_rt_free(rt);
    if (e != TR_OK || out.value.u64 != 42) {
        fprintf(stderr, "tr_rt_run: %s, result %llu, want success and 42\n", tr_strerror(e),
                (unsigned long long)out.value.u64);
        return 1;
    }
    printf("troupe %d.%d.%d: tr_rt_run ran a task tree, result %llu\n", TR_VERSION_MAJOR,
           TR_VERSION_MINOR, TR_VERSION_PATCH, (unsigned long long)out.value.u64);
    return 0;
}
