// fuzz_exec_command.c: the executor's decoder, as a remote peer reaches it:
// bytes off a socket are unpacked as an ExecutorCommand and handed to
// tr_exec_send on a live runtime with registered kinds; every command it
// accepts must be answered (and only answered: no crash, no leak, no
// silent drop), and every reply must pack.
//
// Built two ways. With clang and -DTR_FUZZ=ON: a libFuzzer target
// (`fuzz_exec_command corpus/`). Always: a replay driver (the same
// LLVMFuzzerTestOneInput under a main of ours) that runs the files named on
// its command line, or, given none, a fixed set of seeds and a bounded
// number of deterministic mutations of them (fuzz_replay.h); ctest runs it that way
// (fuzz.exec_command), under ASan in CI. `--write-seeds DIR` writes the
// seeds as files, the corpus .ci/run starts libFuzzer from.
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <troupe/troupe.h>

// ---------------------------------------------------------------------------
// One runtime for the whole run (libFuzzer calls the target millions of
// times): two workers, so that worker 1 carries commands out without a
// thread in block_on.

static tr_rt *rt;

typedef struct box {
    _Alignas(64) tr_mailbox mb;
    sem_t sem;
} box;

static box *bx;

static void
box_wake(const tr_waker *w)
{
    sem_post((sem_t *)w->data);
}

static const tr_waker_ops box_ops = {box_wake};

static tr_poll
sum_poll(void *state, tr_cx *cx)
{
    uint64_t *v = state;
    tr_cx_set_result_u64(cx, *v);
    return TR_READY;
}

static const tr_task_spec sum_spec = {.name = "sum", .poll = sum_poll, .size = 8};

static tr_err
sum_init(void *state, const void *args, size_t len)
{
    if (len > 64) {
        return TR_EINVAL;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        v += ((const uint8_t *)args)[i];
    }
    *(uint64_t *)state = v;
    return TR_OK;
}

static tr_err
sum_encode(const tr_outcome *out, void **data, size_t *len)
{
    *data = malloc(8);
    memcpy(*data, &out->value.u64, 8);
    *len = 8;
    return TR_OK;
}

static void
fuzz_fini(void)
{
    tr_rt_free(rt);
    tr_mailbox_fini(&bx->mb, NULL, NULL);
    sem_destroy(&bx->sem);
    free(bx);
}

static void
fuzz_init(void)
{
    tr_rt_config cfg;
    tr_rt_config_init(&cfg);
    cfg.workers = 2;
    cfg.ignore_env = true;
    if (tr_rt_new(&cfg, &rt) != TR_OK ||
        tr_kind_register(rt, "sum", &sum_spec, sum_init, sum_encode) != TR_OK ||
        tr_kind_register(rt, "local", &sum_spec, sum_init, NULL) != TR_OK) {
        abort();
    }
    bx = aligned_alloc(64, 256);
    tr_mailbox_init(&bx->mb, 0);
    sem_init(&bx->sem, 0, 0);
    atexit(fuzz_fini);
}

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// take_reply waits (at most 10 s: a lost reply is a bug) for one reply.
static tr_exec_reply *
take_reply(void)
{
    uint64_t until = now_ns() + 10000000000ull;
    for (;;) {
        tr_msg *m = tr_mailbox_pop(&bx->mb);
        if (m != NULL) {
            tr_exec_reply *r = tr_exec_reply_of(m);
            if (r == NULL) {
                abort();
            }
            return r;
        }
        if (now_ns() > until) {
            fprintf(stderr, "fuzz_exec_command: an accepted command was not answered\n");
            abort();
        }
        if (tr_mailbox_markempty(&bx->mb, (tr_waker){&box_ops, &bx->sem})) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            (void)sem_timedwait(&bx->sem, &ts);
        } else {
            sched_yield();
        }
    }
}

static void
check_reply(tr_exec_reply *r, uint64_t corr)
{
    if (r->reply->correlation_id != corr) {
        abort();
    }
    size_t n = troupe__v1__executor_reply__get_packed_size(r->reply);
    uint8_t *buf = malloc(n + 1);
    if (troupe__v1__executor_reply__pack(r->reply, buf) != n) {
        abort();
    }
    Troupe__V1__ExecutorReply *u = troupe__v1__executor_reply__unpack(NULL, n, buf);
    if (u == NULL) {
        abort();
    }
    troupe__v1__executor_reply__free_unpacked(u, NULL);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (rt == NULL) {
        fuzz_init();
    }
    Troupe__V1__ExecutorCommand *c = troupe__v1__executor_command__unpack(NULL, size, data);
    if (c == NULL) {
        return 0; // protobuf-c refused the bytes: nothing reaches the runtime
    }
    if (c->command_case == TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN) {
        // Keep the one runtime alive: a Shutdown is checked, not sent.
        c->shutdown->mode = c->shutdown->mode > 1 ? c->shutdown->mode : 5;
    }
    // Large listings are fine but slow: keep pages small.
    if (c->command_case == TROUPE__V1__EXECUTOR_COMMAND__COMMAND_STATUS &&
        c->status->max_tasks > 16) {
        c->status->max_tasks = 16;
    }
    bool want = c->command_case == TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN &&
                c->spawn->task_case == TROUPE__V1__SPAWN__TASK_SPEC && c->spawn->want_result;
    tr_err rv = tr_exec_send(rt, c, &bx->mb);
    if (rv == TR_OK) {
        tr_exec_reply *r = take_reply();
        check_reply(r, c->correlation_id);
        bool spawned = r->reply->reply_case == TROUPE__V1__EXECUTOR_REPLY__REPLY_SPAWNED;
        tr_msg_free(&r->hdr);
        if (want && spawned) {
            r = take_reply();
            if (r->reply->reply_case != TROUPE__V1__EXECUTOR_REPLY__REPLY_RESULT) {
                abort();
            }
            check_reply(r, c->correlation_id);
            tr_msg_free(&r->hdr);
        }
    }
    tr_msg *extra = tr_mailbox_pop(&bx->mb);
    if (extra != NULL) {
        fprintf(stderr, "fuzz_exec_command: a reply too many\n");
        abort();
    }
    troupe__v1__executor_command__free_unpacked(c, NULL);
    return 0;
}

#ifndef TR_LIBFUZZER

// ---------------------------------------------------------------------------
// The replay driver (fuzz_replay.h).

#include "fuzz_replay.h"

static size_t
pack(const Troupe__V1__ExecutorCommand *c, uint8_t *buf, size_t cap)
{
    size_t n = troupe__v1__executor_command__get_packed_size(c);
    if (n > cap) {
        abort();
    }
    return troupe__v1__executor_command__pack(c, buf);
}

// seed fills buf with seed number i (of nseeds) and returns its length.
static size_t
seed(int i, uint8_t *buf, size_t cap)
{
    Troupe__V1__ExecutorCommand c = TROUPE__V1__EXECUTOR_COMMAND__INIT;
    Troupe__V1__Spawn sp = TROUPE__V1__SPAWN__INIT;
    Troupe__V1__TaskSpec spec = TROUPE__V1__TASK_SPEC__INIT;
    Troupe__V1__Cancel cn = TROUPE__V1__CANCEL__INIT;
    Troupe__V1__StatusRequest st = TROUPE__V1__STATUS_REQUEST__INIT;
    Troupe__V1__Shutdown sd = TROUPE__V1__SHUTDOWN__INIT;
    static uint8_t args[] = {1, 2, 3, 4, 5, 6, 7, 8};
    c.correlation_id = 1000 + (uint64_t)i;
    switch (i) {
    case 0:
    case 1:
    case 2:
    case 3:
        spec.kind = i == 0 ? "sum" : i == 1 ? "local" : i == 2 ? "nosuch" : "";
        spec.args.data = args;
        spec.args.len = sizeof(args);
        spec.name = "seed";
        sp.task_case = TROUPE__V1__SPAWN__TASK_SPEC;
        sp.spec = &spec;
        sp.want_result = i != 2;
        c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN;
        c.spawn = &sp;
        break;
    case 4:
        sp.task_case = TROUPE__V1__SPAWN__TASK_TASK_KEY;
        sp.task_key = 0x0000000500000003ull;
        c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN;
        c.spawn = &sp;
        break;
    case 5:
        cn.task_id = 0x0000000100000001ull;
        c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL;
        c.cancel = &cn;
        break;
    case 6:
        st.include_tasks = 1;
        st.max_tasks = 4;
        c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_STATUS;
        c.status = &st;
        break;
    default:
        sd.mode = TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_IMMEDIATE;
        c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN;
        c.shutdown = &sd;
        break;
    }
    return pack(&c, buf, cap);
}

static const char *
done(void)
{
    return "all answered";
}

int
main(int argc, char **argv)
{
    const fuzz_replay r = {"exec_command", seed, 8, 4000, done};
    return fuzz_replay_main(argc, argv, &r);
}

#endif
