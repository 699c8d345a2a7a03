// test_command.c: the executor as an actor (troupe/executor.h): the kind
// registry, Spawn by TaskSpec and its results, Cancel, Shutdown and
// StatusRequest through tr_exec_send, answered on a mailbox; commands that
// are refused at once, and hostile ones.
//
// Each test runs a runtime with a host thread inside tr_rt_block_on (a root
// task that waits for the test to end), so that commands are carried out
// whatever the worker count; the test thread is the remote peer: it builds
// commands (packed and unpacked, as if they came off a socket), sends them
// and waits on its reply box (a mailbox whose waker posts a semaphore).
#include "../test_util.h"

// ---------------------------------------------------------------------------
// The host: a runtime kept running by a root task until the test ends.

typedef struct host_root {
    tu_event *stop;
} host_root;

static tr_poll
host_root_poll(void *arg, tr_cx *cx)
{
    host_root *st = arg;
    return tu_event_poll(st->stop, cx);
}

static const tr_task_spec host_root_spec = {
    .name = "host.root", .poll = host_root_poll, .size = sizeof(host_root)};

typedef struct host {
    tr_rt *rt;
    tu_event stop;
    pthread_t thr;
    tr_err rv; // tr_rt_run's
} host;

static void *
host_main(void *arg)
{
    host *h = arg;
    h->rv = tr_rt_run(h->rt, &host_root_spec, NULL, &(host_root){.stop = &h->stop}, NULL);
    return NULL;
}

static void
host_start(host *h)
{
    h->rt = tu_rt_new();
    tu_event_init(&h->stop);
    tu_thread_start(&h->thr, host_main, h);
}

// host_join ends the root and waits for block_on.
static void
host_join(host *h)
{
    tu_event_set(&h->stop);
    tu_thread_join(h->thr);
}

static void
host_end(host *h)
{
    host_join(h);
    tu_event_destroy(&h->stop);
}

// ---------------------------------------------------------------------------
// The reply box: a mailbox a plain thread consumes.

typedef struct rbox {
    _Alignas(64) tr_mailbox mb;
    sem_t sem;
} rbox;

static void
rbox_wake(const tr_waker *w)
{
    sem_post((sem_t *)w->data);
}

static const tr_waker_ops rbox_ops = {rbox_wake};

static rbox *
rbox_new(void)
{
    rbox *b = aligned_alloc(64, sizeof(rbox) + 64 - sizeof(rbox) % 64);
    assert_non_null(b);
    tr_mailbox_init(&b->mb, 0);
    sem_init(&b->sem, 0, 0);
    return b;
}

static void
rbox_free(rbox *b)
{
    tr_mailbox_fini(&b->mb, NULL, NULL);
    sem_destroy(&b->sem);
    free(b);
}

// rbox_next returns the next reply, waiting at most ms; fails the test when
// none comes.
static tr_exec_reply *
rbox_next(rbox *b, unsigned ms)
{
    uint64_t until = tu_deadline(ms);
    for (;;) {
        tr_msg *m = tr_mailbox_pop(&b->mb);
        if (m != NULL) {
            tr_exec_reply *r = tr_exec_reply_of(m);
            assert_non_null(r);
            return r;
        }
        uint64_t now = tu_now_ns();
        if (now > until) {
            fail_msg("no reply within %u ms", ms);
        }
        if (tr_mailbox_markempty(&b->mb, (tr_waker){&rbox_ops, &b->sem})) {
            (void)tu_sem_wait_ms(&b->sem, (unsigned)((until - now) / 1000000u) + 1);
        } else {
            sched_yield(); // a push in its window: it shows in a moment
        }
    }
}

// rbox_empty asserts that nothing more has arrived.
static void
rbox_assert_empty(rbox *b)
{
    assert_null(tr_mailbox_pop(&b->mb));
}

// ---------------------------------------------------------------------------
// Commands, as a remote peer makes them: built, packed, unpacked.

static Troupe__V1__ExecutorCommand *
wire(const Troupe__V1__ExecutorCommand *c)
{
    size_t n = troupe__v1__executor_command__get_packed_size(c);
    uint8_t *buf = malloc(n + 1);
    assert_int_equal(troupe__v1__executor_command__pack(c, buf), n);
    Troupe__V1__ExecutorCommand *u = troupe__v1__executor_command__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(u);
    return u;
}

// send_wire sends c as it would come off a socket.
static tr_err
send_wire(tr_rt *rt, const Troupe__V1__ExecutorCommand *c, rbox *b)
{
    Troupe__V1__ExecutorCommand *u = wire(c);
    tr_err rv = tr_exec_send(rt, u, b != NULL ? &b->mb : NULL);
    troupe__v1__executor_command__free_unpacked(u, NULL);
    return rv;
}

static tr_err
send_spawn(tr_rt *rt, rbox *b, uint64_t corr, const char *kind, const void *args, size_t len,
           bool want_result)
{
    Troupe__V1__TaskSpec spec = TROUPE__V1__TASK_SPEC__INIT;
    spec.kind = (char *)kind;
    spec.args.data = (uint8_t *)args;
    spec.args.len = len;
    Troupe__V1__Spawn sp = TROUPE__V1__SPAWN__INIT;
    sp.task_case = TROUPE__V1__SPAWN__TASK_SPEC;
    sp.spec = &spec;
    sp.want_result = want_result;
    Troupe__V1__ExecutorCommand c = TROUPE__V1__EXECUTOR_COMMAND__INIT;
    c.correlation_id = corr;
    c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN;
    c.spawn = &sp;
    return send_wire(rt, &c, b);
}

static tr_err
send_cancel(tr_rt *rt, rbox *b, uint64_t corr, uint64_t id)
{
    Troupe__V1__Cancel cn = TROUPE__V1__CANCEL__INIT;
    cn.task_id = id;
    Troupe__V1__ExecutorCommand c = TROUPE__V1__EXECUTOR_COMMAND__INIT;
    c.correlation_id = corr;
    c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL;
    c.cancel = &cn;
    return send_wire(rt, &c, b);
}

static tr_err
send_status(tr_rt *rt, rbox *b, uint64_t corr, bool tasks, uint32_t max, uint64_t offset)
{
    Troupe__V1__StatusRequest rq = TROUPE__V1__STATUS_REQUEST__INIT;
    rq.include_tasks = tasks;
    rq.max_tasks = max;
    rq.offset = offset;
    Troupe__V1__ExecutorCommand c = TROUPE__V1__EXECUTOR_COMMAND__INIT;
    c.correlation_id = corr;
    c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_STATUS;
    c.status = &rq;
    return send_wire(rt, &c, b);
}

static tr_err
send_shutdown(tr_rt *rt, rbox *b, uint64_t corr, Troupe__V1__ShutdownMode mode)
{
    Troupe__V1__Shutdown sd = TROUPE__V1__SHUTDOWN__INIT;
    sd.mode = mode;
    Troupe__V1__ExecutorCommand c = TROUPE__V1__EXECUTOR_COMMAND__INIT;
    c.correlation_id = corr;
    c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN;
    c.shutdown = &sd;
    return send_wire(rt, &c, b);
}

// reply_repack checks that a reply packs and unpacks as a peer would see it.
static void
reply_repack(const tr_exec_reply *r)
{
    size_t n = troupe__v1__executor_reply__get_packed_size(r->reply);
    uint8_t *buf = malloc(n + 1);
    assert_int_equal(troupe__v1__executor_reply__pack(r->reply, buf), n);
    Troupe__V1__ExecutorReply *u = troupe__v1__executor_reply__unpack(NULL, n, buf);
    assert_non_null(u);
    assert_int_equal(u->correlation_id, r->reply->correlation_id);
    assert_int_equal(u->reply_case, r->reply->reply_case);
    troupe__v1__executor_reply__free_unpacked(u, NULL);
    free(buf);
}

// expect_error takes the next reply and checks it is an Error with err.
static void
expect_error(rbox *b, uint64_t corr, tr_err err, const char *detail_has)
{
    tr_exec_reply *r = rbox_next(b, TU_WAIT_MS);
    assert_int_equal(r->reply->correlation_id, corr);
    assert_int_equal(r->reply->reply_case, TROUPE__V1__EXECUTOR_REPLY__REPLY_ERROR);
    assert_int_equal(r->reply->error->code, err);
    assert_string_equal(r->reply->error->name, tr_err_name(err));
    if (detail_has != NULL && strstr(r->reply->error->detail, detail_has) == NULL) {
        fail_msg("detail '%s' does not say '%s'", r->reply->error->detail, detail_has);
    }
    reply_repack(r);
    tr_msg_free(&r->hdr);
}

static uint64_t
expect_spawned(rbox *b, uint64_t corr)
{
    tr_exec_reply *r = rbox_next(b, TU_WAIT_MS);
    assert_int_equal(r->reply->correlation_id, corr);
    assert_int_equal(r->reply->reply_case, TROUPE__V1__EXECUTOR_REPLY__REPLY_SPAWNED);
    uint64_t id = r->reply->spawned->task_id;
    assert_int_not_equal(id, 0);
    reply_repack(r);
    tr_msg_free(&r->hdr);
    return id;
}

static void
expect_done(rbox *b, uint64_t corr)
{
    tr_exec_reply *r = rbox_next(b, TU_WAIT_MS);
    assert_int_equal(r->reply->correlation_id, corr);
    assert_int_equal(r->reply->reply_case, TROUPE__V1__EXECUTOR_REPLY__REPLY_DONE);
    reply_repack(r);
    tr_msg_free(&r->hdr);
}

// expect_result takes a TaskResult for task id: its error, and its bytes
// copied into out (at most cap; returns the length).
static size_t
expect_result(rbox *b, uint64_t corr, uint64_t id, tr_err err, void *out, size_t cap)
{
    tr_exec_reply *r = rbox_next(b, TU_WAIT_MS);
    assert_int_equal(r->reply->correlation_id, corr);
    assert_int_equal(r->reply->reply_case, TROUPE__V1__EXECUTOR_REPLY__REPLY_RESULT);
    assert_int_equal(r->reply->result->task_id, id);
    assert_int_equal(r->reply->result->error, err);
    assert_string_equal(r->reply->result->error_name, tr_err_name(err));
    size_t n = r->reply->result->result.len;
    assert_true(n <= cap);
    if (n > 0) {
        memcpy(out, r->reply->result->result.data, n);
    }
    reply_repack(r);
    tr_msg_free(&r->hdr);
    return n;
}

// ---------------------------------------------------------------------------
// Kinds used by the tests.

// "add": args are two little-endian u32; the result is their u64 sum, sent
// back as 8 bytes.
typedef struct add_task {
    uint32_t a, b;
    uint32_t yields;
} add_task;

static tr_poll
add_poll(void *arg, tr_cx *cx)
{
    add_task *st = arg;
    if (st->yields > 0) {
        st->yields--;
        tr_cx_yield(cx);
        return TR_PENDING;
    }
    tr_cx_set_result_u64(cx, (uint64_t)st->a + st->b);
    return TR_READY;
}

static const tr_task_spec add_spec = {.name = "add", .poll = add_poll, .size = sizeof(add_task)};

static tr_err
add_init(void *state, const void *args, size_t len)
{
    add_task *st = state;
    if (len != 8) {
        return TR_EINVAL;
    }
    memcpy(&st->a, args, 4);
    memcpy(&st->b, (const char *)args + 4, 4);
    st->yields = 3;
    return TR_OK;
}

static tr_err
add_encode(const tr_outcome *out, void **data, size_t *len)
{
    uint64_t *v = malloc(sizeof(*v));
    if (v == NULL) {
        return TR_ENOMEM;
    }
    *v = out->value.u64;
    *data = v;
    *len = sizeof(*v);
    return TR_OK;
}

// "boxed": no args, a heap result (a string) the encoder copies out; its
// outcome must be finalised by the executor (ASan sees a leak otherwise).
static tr_poll
boxed_poll(void *arg, tr_cx *cx)
{
    (void)arg;
    tr_cx_set_result_ptr(cx, strdup("forty-two"), free);
    return TR_READY;
}

static const tr_task_spec boxed_spec = {.name = "boxed", .poll = boxed_poll, .size = 8};

static tr_err
boxed_encode(const tr_outcome *out, void **data, size_t *len)
{
    *len = strlen(out->value.ptr);
    *data = malloc(*len);
    memcpy(*data, out->value.ptr, *len);
    return TR_OK;
}

// "failenc": the encoder fails.
static tr_err
failenc_encode(const tr_outcome *out, void **data, size_t *len)
{
    (void)out;
    (void)data;
    (void)len;
    return TR_EIO;
}

// "stuck": never finishes on its own (test_util.h's tu_stuck).
static tr_err
nothing_encode(const tr_outcome *out, void **data, size_t *len)
{
    (void)out;
    *data = NULL;
    *len = 0;
    return TR_OK;
}

static void
register_kinds(tr_rt *rt)
{
    assert_int_equal(tr_kind_register(rt, "add", &add_spec, add_init, add_encode), TR_OK);
    assert_int_equal(tr_kind_register(rt, "boxed", &boxed_spec, NULL, boxed_encode), TR_OK);
    assert_int_equal(tr_kind_register(rt, "failenc", &boxed_spec, NULL, failenc_encode), TR_OK);
    assert_int_equal(tr_kind_register(rt, "stuck", &tu_stuck_spec, NULL, nothing_encode), TR_OK);
    assert_int_equal(tr_kind_register(rt, "local.add", &add_spec, add_init, NULL), TR_OK);
}

static void
pack_args(uint8_t out[8], uint32_t a, uint32_t b)
{
    memcpy(out, &a, 4);
    memcpy(out + 4, &b, 4);
}

// ---------------------------------------------------------------------------
// The registry.

static void
test_kind_register_refuses_bad_names_and_specs(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    assert_int_equal(tr_kind_register(rt, "add", &add_spec, add_init, add_encode), TR_OK);
    assert_int_equal(tr_kind_register(rt, "add", &add_spec, add_init, add_encode), TR_EEXIST);
    assert_int_equal(tr_kind_register(rt, "", &add_spec, NULL, NULL), TR_EINVAL);
    assert_int_equal(tr_kind_register(rt, "a b", &add_spec, NULL, NULL), TR_EINVAL);
    assert_int_equal(tr_kind_register(rt, "caf\xc3\xa9", &add_spec, NULL, NULL), TR_EINVAL);
    char longname[TR_KIND_NAME_MAX + 2];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(tr_kind_register(rt, longname, &add_spec, NULL, NULL), TR_EINVAL);
    longname[TR_KIND_NAME_MAX] = '\0'; // exactly the most
    assert_int_equal(tr_kind_register(rt, longname, &add_spec, NULL, NULL), TR_OK);
    assert_int_equal(tr_kind_register(rt, NULL, &add_spec, NULL, NULL), TR_EINVAL);
    assert_int_equal(tr_kind_register(rt, "nospec", NULL, NULL, NULL), TR_EINVAL);
    static const tr_task_spec nopoll = {.name = "nopoll", .size = 8};
    assert_int_equal(tr_kind_register(rt, "nopoll", &nopoll, NULL, NULL), TR_EINVAL);
    assert_int_equal(tr_kind_register(NULL, "x", &add_spec, NULL, NULL), TR_EINVAL);
    // Many kinds: the registry grows.
    for (int i = 0; i < 100; i++) {
        char name[32];
        snprintf(name, sizeof(name), "k%d", i);
        assert_int_equal(tr_kind_register(rt, name, &add_spec, add_init, NULL), TR_OK);
    }
    tr_rt_free(rt);
}

static void
test_kind_spawn_locally(void **state)
{
    (void)state;
    host h;
    host_start(&h);
    register_kinds(h.rt);
    uint8_t args[8];
    pack_args(args, 40, 2);
    tr_join j;
    // A kind without an encoder is spawned locally as any other.
    assert_int_equal(tr_kind_spawn(h.rt, "local.add", args, sizeof(args), &j), TR_OK);
    tr_outcome out;
    assert_int_equal(tr_join_wait_timeout(&j, &out, (uint64_t)TU_WAIT_MS * 1000000u), TR_OK);
    assert_int_equal(out.err, TR_OK);
    assert_int_equal(out.value.u64, 42);
    assert_int_equal(tr_kind_spawn(h.rt, "nosuch", NULL, 0, &j), TR_ENOTFOUND);
    assert_int_equal(tr_join_id(&j).id, 0);
    assert_int_equal(tr_kind_spawn(h.rt, "add", args, 7, &j), TR_EINVAL);   // its init says
    assert_int_equal(tr_kind_spawn(h.rt, "boxed", args, 8, &j), TR_EINVAL); // takes none
    assert_int_equal(tr_kind_spawn(h.rt, "add", NULL, 8, &j), TR_EINVAL);
    assert_int_equal(tr_kind_spawn(h.rt, "boxed", NULL, 0, &j), TR_OK);
    assert_int_equal(tr_join_wait_timeout(&j, &out, (uint64_t)TU_WAIT_MS * 1000000u), TR_OK);
    assert_string_equal(out.value.ptr, "forty-two");
    tr_outcome_fini(&out);
    host_end(&h);
    tu_rt_free_clean(h.rt);
}

// ---------------------------------------------------------------------------
// Spawn by spec.

static void
test_spawn_by_spec_runs_and_sends_its_result(void **state)
{
    (void)state;
    host h;
    host_start(&h);
    register_kinds(h.rt);
    rbox *b = rbox_new();
    enum { N = 64 };
    uint64_t ids[N];
    for (uint32_t i = 0; i < N; i++) {
        uint8_t args[8];
        pack_args(args, i, 1000);
        assert_int_equal(send_spawn(h.rt, b, 100 + i, "add", args, sizeof(args), true), TR_OK);
    }
    // Replies to one command come in order: Spawned, then its TaskResult;
    // those of different commands interleave as the tasks finish.
    bool spawned[N] = {0}, resulted[N] = {0};
    for (int k = 0; k < 2 * N; k++) {
        tr_exec_reply *r = rbox_next(b, TU_WAIT_MS);
        uint64_t i = r->reply->correlation_id - 100;
        assert_true(i < N);
        if (r->reply->reply_case == TROUPE__V1__EXECUTOR_REPLY__REPLY_SPAWNED) {
            assert_false(spawned[i]);
            spawned[i] = true;
            ids[i] = r->reply->spawned->task_id;
        } else {
            assert_int_equal(r->reply->reply_case, TROUPE__V1__EXECUTOR_REPLY__REPLY_RESULT);
            assert_true(spawned[i]);
            assert_false(resulted[i]);
            resulted[i] = true;
            assert_int_equal(r->reply->result->task_id, ids[i]);
            assert_int_equal(r->reply->result->error, TR_OK);
            assert_int_equal(r->reply->result->result.len, 8);
            uint64_t v;
            memcpy(&v, r->reply->result->result.data, 8);
            assert_int_equal(v, i + 1000);
        }
        reply_repack(r);
        tr_msg_free(&r->hdr);
    }
    rbox_assert_empty(b);

    // A boxed result is encoded, then released by the executor.
    assert_int_equal(send_spawn(h.rt, b, 7, "boxed", NULL, 0, true), TR_OK);
    uint64_t id = expect_spawned(b, 7);
    char buf[32];
    size_t n = expect_result(b, 7, id, TR_OK, buf, sizeof(buf));
    assert_int_equal(n, 9);
    assert_memory_equal(buf, "forty-two", 9);
    // An encoder's error travels as the result's error.
    assert_int_equal(send_spawn(h.rt, b, 8, "failenc", NULL, 0, true), TR_OK);
    id = expect_spawned(b, 8);
    assert_int_equal(expect_result(b, 8, id, TR_EIO, buf, sizeof(buf)), 0);
    // Without want_result: only Spawned.
    uint8_t args[8];
    pack_args(args, 1, 2);
    assert_int_equal(send_spawn(h.rt, b, 9, "add", args, 8, false), TR_OK);
    expect_spawned(b, 9);
    // Without a reply box: nothing comes back, the task still runs.
    assert_int_equal(send_spawn(h.rt, NULL, 10, "add", args, 8, false), TR_OK);
    host_end(&h);
    rbox_assert_empty(b);
    tu_rt_free_clean(h.rt);
    rbox_free(b);
}

static void
test_spawn_by_spec_errors_are_answered(void **state)
{
    (void)state;
    host h;
    host_start(&h);
    register_kinds(h.rt);
    rbox *b = rbox_new();
    uint8_t args[8];
    pack_args(args, 1, 2);
    assert_int_equal(send_spawn(h.rt, b, 1, "nosuch", args, 8, true), TR_OK);
    expect_error(b, 1, TR_ENOTFOUND, "nosuch");
    assert_int_equal(send_spawn(h.rt, b, 2, "", NULL, 0, false), TR_OK);
    expect_error(b, 2, TR_ENOTFOUND, NULL);
    assert_int_equal(send_spawn(h.rt, b, 3, "bad name!", NULL, 0, false), TR_OK);
    expect_error(b, 3, TR_ENOTFOUND, NULL);
    assert_int_equal(send_spawn(h.rt, b, 4, "add", args, 5, true), TR_OK); // bad args
    expect_error(b, 4, TR_EINVAL, "add");
    assert_int_equal(send_spawn(h.rt, b, 5, "boxed", args, 8, true), TR_OK); // takes none
    expect_error(b, 5, TR_EINVAL, "takes no arguments");
    assert_int_equal(send_spawn(h.rt, b, 6, "local.add", args, 8, false), TR_OK);
    expect_error(b, 6, TR_ENOTSUP, "local.add");
    rbox_assert_empty(b);
    assert_int_equal(tu_stats(h.rt).spawned, 1); // the root alone
    host_end(&h);
    tu_rt_free_clean(h.rt);
    rbox_free(b);
}

// ---------------------------------------------------------------------------
// Refused at once.

static void
test_send_refuses_malformed_commands(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    rbox *b = rbox_new();
    Troupe__V1__ExecutorCommand c = TROUPE__V1__EXECUTOR_COMMAND__INIT;
    assert_int_equal(tr_exec_send(NULL, &c, &b->mb), TR_EINVAL);
    assert_int_equal(tr_exec_send(rt, NULL, &b->mb), TR_EINVAL);
    // No command.
    assert_int_equal(tr_exec_send(rt, &c, &b->mb), TR_EINVAL);
    // Some other message.
    Troupe__V1__Cancel cn = TROUPE__V1__CANCEL__INIT;
    assert_int_equal(tr_exec_send(rt, (Troupe__V1__ExecutorCommand *)&cn, &b->mb), TR_EINVAL);
    // A case this version does not know.
    c.command_case = (Troupe__V1__ExecutorCommand__CommandCase)99;
    assert_int_equal(tr_exec_send(rt, &c, &b->mb), TR_EINVAL);
    // A case without its body.
    c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN;
    c.spawn = NULL;
    assert_int_equal(tr_exec_send(rt, &c, &b->mb), TR_EINVAL);
    c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL;
    assert_int_equal(tr_exec_send(rt, &c, &b->mb), TR_EINVAL);
    c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_STATUS;
    assert_int_equal(tr_exec_send(rt, &c, &b->mb), TR_EINVAL);
    c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN;
    assert_int_equal(tr_exec_send(rt, &c, &b->mb), TR_EINVAL);
    // A Spawn by slot key (a forged one would name any slot), or by nothing.
    Troupe__V1__Spawn sp = TROUPE__V1__SPAWN__INIT;
    c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN;
    c.spawn = &sp;
    assert_int_equal(tr_exec_send(rt, &c, &b->mb), TR_EINVAL);
    sp.task_case = TROUPE__V1__SPAWN__TASK_TASK_KEY;
    sp.task_key = 0x100000001ull;
    assert_int_equal(tr_exec_send(rt, &c, &b->mb), TR_EINVAL);
    assert_non_null(strstr(tr_error_detail(), "task_key"));
    sp.task_case = TROUPE__V1__SPAWN__TASK_SPEC;
    sp.spec = NULL;
    assert_int_equal(tr_exec_send(rt, &c, &b->mb), TR_EINVAL);
    // Too big.
    Troupe__V1__TaskSpec spec = TROUPE__V1__TASK_SPEC__INIT;
    sp.spec = &spec;
    uint8_t one = 1;
    spec.kind = "add";
    spec.args.data = &one;
    spec.args.len = TR_EXEC_ARGS_MAX + 1; // never read: refused on its length
    assert_int_equal(tr_exec_send(rt, &c, &b->mb), TR_ETOOBIG);
    spec.args.len = 1;
    char longname[TR_KIND_NAME_MAX + 2];
    memset(longname, 'k', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    spec.kind = longname;
    assert_int_equal(tr_exec_send(rt, &c, &b->mb), TR_ETOOBIG);
    spec.kind = "add";
    spec.args.data = NULL;
    assert_int_equal(tr_exec_send(rt, &c, &b->mb), TR_EINVAL);
    // want_result without a reply box.
    spec.args.data = &one;
    sp.want_result = true;
    assert_int_equal(tr_exec_send(rt, &c, NULL), TR_EINVAL);
    // A Shutdown with a mode that is none.
    Troupe__V1__Shutdown sd = TROUPE__V1__SHUTDOWN__INIT;
    sd.mode = (Troupe__V1__ShutdownMode)7;
    c.command_case = TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN;
    c.shutdown = &sd;
    assert_int_equal(tr_exec_send(rt, &c, &b->mb), TR_EINVAL);
    assert_false(tr_rt_is_shutdown(rt));
    // Nothing was queued: nothing comes back, even once the runtime runs
    // (block_on carries out what is queued before its root's first poll).
    assert_int_equal(tr_rt_run(rt, &tu_value_spec, NULL, TU_VALUE(1, 0, NULL), NULL), TR_OK);
    rbox_assert_empty(b);
    assert_int_equal(tu_stats(rt).commands, 0);
    tr_rt_free(rt);
    rbox_free(b);
}

// ---------------------------------------------------------------------------
// Cancel.

static void
test_cancel_by_command(void **state)
{
    (void)state;
    host h;
    host_start(&h);
    register_kinds(h.rt);
    rbox *b = rbox_new();
    // Without want_result: Spawned, then Done for the Cancel.
    assert_int_equal(send_spawn(h.rt, b, 50, "stuck", NULL, 0, false), TR_OK);
    uint64_t id = expect_spawned(b, 50);
    assert_int_equal(send_cancel(h.rt, b, 51, id), TR_OK);
    expect_done(b, 51);
    assert_int_equal(send_spawn(h.rt, b, 1, "stuck", NULL, 0, true), TR_OK);
    id = expect_spawned(b, 1);
    assert_int_equal(send_cancel(h.rt, b, 2, id), TR_OK);
    // Done for the Cancel and TR_ECANCELED for the Spawn, in either order.
    bool done = false, result = false;
    for (int k = 0; k < 2; k++) {
        tr_exec_reply *r = rbox_next(b, TU_WAIT_MS);
        if (r->reply->reply_case == TROUPE__V1__EXECUTOR_REPLY__REPLY_DONE) {
            assert_int_equal(r->reply->correlation_id, 2);
            done = true;
        } else {
            assert_int_equal(r->reply->reply_case, TROUPE__V1__EXECUTOR_REPLY__REPLY_RESULT);
            assert_int_equal(r->reply->correlation_id, 1);
            assert_int_equal(r->reply->result->task_id, id);
            assert_int_equal(r->reply->result->error, TR_ECANCELED);
            result = true;
        }
        tr_msg_free(&r->hdr);
    }
    assert_true(done && result);
    // The same id again: the task is gone.
    assert_int_equal(send_cancel(h.rt, b, 3, id), TR_OK);
    expect_error(b, 3, TR_ENOTFOUND, NULL);
    // A finished task that is not yet joined.
    tr_join j;
    uint8_t args[8];
    pack_args(args, 1, 1);
    assert_int_equal(tr_kind_spawn(h.rt, "local.add", args, 8, &j), TR_OK);
    assert_true(TU_SPIN_UNTIL(tr_join_is_finished(&j), TU_WAIT_MS));
    assert_int_equal(send_cancel(h.rt, b, 4, tr_join_id(&j).id), TR_OK);
    expect_error(b, 4, TR_EFINISHED, NULL);
    tr_join_release(&j);
    // Ids a hostile peer makes up: every one is answered, none names a task.
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 500; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t forged = i < 4 ? (uint64_t[]){0, 1, UINT64_MAX, 1ull << 32}[i] : x;
        assert_int_equal(send_cancel(h.rt, b, 1000 + (uint64_t)i, forged), TR_OK);
    }
    for (int i = 0; i < 500; i++) {
        expect_error(b, 1000 + (uint64_t)i, TR_ENOTFOUND, NULL);
    }
    host_end(&h);
    tu_rt_free_clean(h.rt);
    rbox_free(b);
}

// ---------------------------------------------------------------------------
// StatusRequest.

static void
test_status_round_trip_and_paging(void **state)
{
    (void)state;
    host h;
    host_start(&h);
    register_kinds(h.rt);
    rbox *b = rbox_new();
    enum { N = 2500 };
    atomic_int drops = 0;
    tr_join *joins = calloc(N, sizeof(*joins));
    for (int i = 0; i < N; i++) {
        tu_start(h.rt, &tu_stuck_spec, TU_STUCK(NULL, &drops), &joins[i]);
    }
    // Counters only.
    assert_int_equal(send_status(h.rt, b, 1, false, 0, 0), TR_OK);
    tr_exec_reply *r = rbox_next(b, TU_WAIT_MS);
    assert_int_equal(r->reply->correlation_id, 1);
    assert_int_equal(r->reply->reply_case, TROUPE__V1__EXECUTOR_REPLY__REPLY_STATUS);
    Troupe__V1__StatusReply *sr = r->reply->status;
    assert_true(sr->live_tasks >= N + 1);
    assert_true(sr->spawned >= N + 1);
    assert_int_equal(sr->n_tasks, 0);
    assert_int_equal(sr->next_offset, 0);
    assert_int_equal(sr->workers, tu_stats(h.rt).workers);
    assert_string_equal(sr->scheduler, tr_sched_name(tu_stats(h.rt).sched));
    assert_false(sr->shutting_down);
    reply_repack(r);
    tr_msg_free(&r->hdr);

    // Pages of 1000 until next_offset is 0: every stuck task exactly once.
    uint64_t offset = 0;
    size_t seen = 0, pages = 0, stuck = 0;
    uint64_t *ids = calloc(N + 16, sizeof(*ids));
    do {
        assert_int_equal(send_status(h.rt, b, 10 + pages, true, 1000, offset), TR_OK);
        r = rbox_next(b, TU_WAIT_MS);
        assert_int_equal(r->reply->correlation_id, 10 + pages);
        sr = r->reply->status;
        assert_true(sr->n_tasks <= 1000);
        size_t packed = troupe__v1__executor_reply__get_packed_size(r->reply);
        assert_true(packed < 1000 * 64); // bounded by the page, not the task count
        for (size_t i = 0; i < sr->n_tasks; i++) {
            if (strcmp(sr->tasks[i]->name, "stuck") == 0) {
                assert_true(stuck < N);
                ids[stuck++] = sr->tasks[i]->id;
            }
            seen++;
        }
        reply_repack(r);
        offset = sr->next_offset;
        tr_msg_free(&r->hdr);
        pages++;
        assert_true(pages < 100);
    } while (offset != 0);
    assert_int_equal(stuck, N);
    assert_true(pages >= 3);
    for (int i = 0; i < N; i++) { // each id exactly once
        uint64_t want = tr_join_id(&joins[i]).id;
        int hits = 0;
        for (size_t k = 0; k < stuck; k++) {
            hits += ids[k] == want;
        }
        assert_int_equal(hits, 1);
    }
    // max_tasks 0 is a page of 1000; more than 10000 is 10000.
    assert_int_equal(send_status(h.rt, b, 2, true, 0, 0), TR_OK);
    r = rbox_next(b, TU_WAIT_MS);
    assert_int_equal(r->reply->status->n_tasks, 1000);
    assert_int_not_equal(r->reply->status->next_offset, 0);
    tr_msg_free(&r->hdr);
    assert_int_equal(send_status(h.rt, b, 3, true, 1u << 30, 0), TR_OK);
    r = rbox_next(b, TU_WAIT_MS);
    assert_true(r->reply->status->n_tasks >= N + 1 && r->reply->status->n_tasks <= 10000);
    tr_msg_free(&r->hdr);
    // An offset past every task: an empty, final page.
    assert_int_equal(send_status(h.rt, b, 4, true, 10, UINT64_MAX), TR_OK);
    r = rbox_next(b, TU_WAIT_MS);
    assert_int_equal(r->reply->status->n_tasks, 0);
    assert_int_equal(r->reply->status->next_offset, 0);
    tr_msg_free(&r->hdr);

    for (int i = 0; i < N; i++) {
        assert_int_equal(tr_task_abort(&joins[i]), TR_OK);
        tr_outcome o;
        assert_int_equal(tr_join_wait_timeout(&joins[i], &o, (uint64_t)TU_WAIT_MS * 1000000u),
                         TR_OK);
        assert_int_equal(o.err, TR_ECANCELED);
    }
    assert_int_equal(atomic_load(&drops), N);
    free(ids);
    free(joins);
    host_end(&h);
    tu_rt_free_clean(h.rt);
    rbox_free(b);
}

// ---------------------------------------------------------------------------
// Shutdown.

static void
test_shutdown_by_command(void **state)
{
    (void)state;
    host h;
    host_start(&h);
    register_kinds(h.rt);
    rbox *b = rbox_new();
    assert_int_equal(send_spawn(h.rt, b, 1, "stuck", NULL, 0, true), TR_OK);
    uint64_t id = expect_spawned(b, 1);
    assert_int_equal(send_shutdown(h.rt, b, 2, TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_IMMEDIATE),
                     TR_OK);
    assert_true(tr_rt_is_shutdown(h.rt));
    // A second one is refused at once, as tr_rt_shutdown refuses it.
    assert_int_equal(send_shutdown(h.rt, b, 3, TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_GRACEFUL),
                     TR_ESHUTDOWN);
    // The root is cancelled: block_on returns without the test's stop.
    tu_thread_join(h.thr);
    assert_int_equal(h.rv, TR_ESHUTDOWN);
    bool done = false, result = false;
    for (int k = 0; k < 2; k++) {
        tr_exec_reply *r = rbox_next(b, TU_WAIT_MS);
        if (r->reply->reply_case == TROUPE__V1__EXECUTOR_REPLY__REPLY_DONE) {
            assert_int_equal(r->reply->correlation_id, 2);
            done = true;
        } else {
            assert_int_equal(r->reply->result->task_id, id);
            assert_int_equal(r->reply->result->error, TR_ECANCELED);
            result = true;
        }
        tr_msg_free(&r->hdr);
    }
    assert_true(done && result);
    // After the shutdown: a Spawn is answered (when the runtime is freed,
    // since no worker runs now), a Status too.
    uint8_t args[8];
    pack_args(args, 1, 2);
    assert_int_equal(send_spawn(h.rt, b, 4, "add", args, 8, true), TR_OK);
    assert_int_equal(send_status(h.rt, b, 5, false, 0, 0), TR_OK);
    tu_event_destroy(&h.stop);
    tr_rt_free(h.rt);
    expect_error(b, 4, TR_ESHUTDOWN, NULL);
    tr_exec_reply *r = rbox_next(b, TU_WAIT_MS);
    assert_int_equal(r->reply->correlation_id, 5);
    assert_true(r->reply->status->shutting_down);
    tr_msg_free(&r->hdr);
    rbox_assert_empty(b);
    rbox_free(b);
}

// A graceful Shutdown lets a spawned-by-spec task finish and its result
// arrive; replies for many senders at once (threads) all arrive.
typedef struct sender_arg {
    tr_rt *rt;
    int idx;
    int n;
    atomic_int *ok;
} sender_arg;

static void *
sender_main(void *arg)
{
    sender_arg *sa = arg;
    rbox *b = rbox_new();
    for (int i = 0; i < sa->n; i++) {
        uint8_t args[8];
        pack_args(args, (uint32_t)sa->idx, (uint32_t)i);
        uint64_t corr = (uint64_t)sa->idx << 32 | (uint32_t)i;
        assert_int_equal(send_spawn(sa->rt, b, corr, "add", args, 8, true), TR_OK);
        uint64_t id = expect_spawned(b, corr);
        uint64_t v = 0;
        assert_int_equal(expect_result(b, corr, id, TR_OK, &v, sizeof(v)), 8);
        assert_int_equal(v, (uint64_t)sa->idx + (uint64_t)i);
        atomic_fetch_add(sa->ok, 1);
    }
    rbox_free(b);
    return NULL;
}

static void
test_many_senders(void **state)
{
    (void)state;
    host h;
    host_start(&h);
    register_kinds(h.rt);
    enum { T = 8, N = 200 };
    atomic_int ok = 0;
    pthread_t thr[T];
    sender_arg sa[T];
    for (int t = 0; t < T; t++) {
        sa[t] = (sender_arg){h.rt, t, N, &ok};
        tu_thread_start(&thr[t], sender_main, &sa[t]);
    }
    for (int t = 0; t < T; t++) {
        tu_thread_join(thr[t]);
    }
    assert_int_equal(atomic_load(&ok), T * N);
    host_end(&h);
    tu_rt_free_clean(h.rt);
}

// Commands racing a shutdown and the runtime's free: every command
// tr_exec_send accepted is answered exactly once (a Spawn with want_result:
// Spawned then exactly one TaskResult, or an Error), whether a worker, the
// shutdown's last drain or tr_rt_free carries it out.
enum { RACE_SENDERS = 4, RACE_MAX = 3000 };

typedef struct race_sender {
    tr_rt *rt;
    rbox *b;
    atomic_bool *stop;
    uint32_t sent;          // accepted commands, corr 0 .. sent-1
    uint8_t want[RACE_MAX]; // 1: a Spawn with want_result, 2: a Status
} race_sender;

static void *
race_main(void *arg)
{
    race_sender *rs = arg;
    uint8_t args[8];
    pack_args(args, 1, 2);
    for (uint32_t i = 0; i < RACE_MAX && !atomic_load(rs->stop); i++) {
        tr_err rv;
        if (i % 3 == 2) {
            rv = send_status(rs->rt, rs->b, rs->sent, i % 2, 4, 0);
            rs->want[rs->sent] = 2;
        } else {
            rv = send_spawn(rs->rt, rs->b, rs->sent, i % 3 ? "add" : "stuck", args, i % 3 ? 8 : 0,
                            true);
            rs->want[rs->sent] = 1;
        }
        if (rv == TR_OK) {
            rs->sent++;
        }
    }
    return NULL;
}

static void
test_commands_racing_shutdown_are_all_answered(void **state)
{
    (void)state;
    for (int round = 0; round < 6; round++) {
        host h;
        host_start(&h);
        register_kinds(h.rt);
        atomic_bool stop = false;
        race_sender *rs = calloc(RACE_SENDERS, sizeof(*rs));
        pthread_t thr[RACE_SENDERS];
        for (int t = 0; t < RACE_SENDERS; t++) {
            rs[t] = (race_sender){.rt = h.rt, .b = rbox_new(), .stop = &stop};
            tu_thread_start(&thr[t], race_main, &rs[t]);
        }
        // Shut down while they send: as soon as some commands went through.
        assert_true(
            TU_SPIN_UNTIL(tu_stats(h.rt).commands >= 50u * (unsigned)(round + 1), TU_WAIT_MS));
        assert_int_equal(
            tr_rt_shutdown(h.rt, round % 2 ? TR_SHUTDOWN_IMMEDIATE : TR_SHUTDOWN_GRACEFUL, 50),
            TR_OK);
        tu_thread_join(h.thr); // block_on returns from the shutdown
        atomic_store(&stop, true);
        for (int t = 0; t < RACE_SENDERS; t++) {
            tu_thread_join(thr[t]);
        }
        tu_event_destroy(&h.stop);
        tr_rt_free(h.rt); // answers what is still queued
        for (int t = 0; t < RACE_SENDERS; t++) {
            uint8_t *got = calloc(rs[t].sent + 1, 1);  // bit 1: first reply, bit 2: result
            uint32_t replies = 0, expect = rs[t].sent; // + one per TaskResult
            tr_msg *m;
            while ((m = tr_mailbox_pop(&rs[t].b->mb)) != NULL) {
                tr_exec_reply *r = tr_exec_reply_of(m);
                assert_non_null(r);
                uint64_t c = r->reply->correlation_id;
                assert_true(c < rs[t].sent);
                switch (r->reply->reply_case) {
                case TROUPE__V1__EXECUTOR_REPLY__REPLY_RESULT:
                    assert_int_equal(rs[t].want[c], 1);
                    assert_true(got[c] & 1); // after its Spawned
                    assert_false(got[c] & 2);
                    got[c] |= 2;
                    expect++;
                    break;
                case TROUPE__V1__EXECUTOR_REPLY__REPLY_SPAWNED:
                    assert_int_equal(rs[t].want[c], 1);
                    assert_false(got[c] & 1);
                    got[c] |= 1 | 4; // 4: owes a result
                    break;
                case TROUPE__V1__EXECUTOR_REPLY__REPLY_STATUS:
                    assert_int_equal(rs[t].want[c], 2);
                    assert_false(got[c] & 1);
                    got[c] |= 1;
                    break;
                default:
                    assert_int_equal(r->reply->reply_case, TROUPE__V1__EXECUTOR_REPLY__REPLY_ERROR);
                    assert_int_equal(r->reply->error->code, TR_ESHUTDOWN);
                    assert_false(got[c] & 1);
                    got[c] |= 1;
                    break;
                }
                replies++;
                tr_msg_free(m);
            }
            for (uint32_t c = 0; c < rs[t].sent; c++) {
                if (!(got[c] & 1)) {
                    fail_msg("round %d sender %d: command %u was never answered", round, t, c);
                }
                if ((got[c] & 4) && !(got[c] & 2)) {
                    fail_msg("round %d sender %d: spawn %u got no TaskResult", round, t, c);
                }
            }
            assert_int_equal(replies, expect);
            free(got);
            rbox_free(rs[t].b);
        }
        free(rs);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_register_refuses_bad_names_and_specs),
        cmocka_unit_test(test_kind_spawn_locally),
        cmocka_unit_test(test_spawn_by_spec_runs_and_sends_its_result),
        cmocka_unit_test(test_spawn_by_spec_errors_are_answered),
        cmocka_unit_test(test_send_refuses_malformed_commands),
        cmocka_unit_test(test_cancel_by_command),
        cmocka_unit_test(test_status_round_trip_and_paging),
        cmocka_unit_test(test_shutdown_by_command),
        cmocka_unit_test(test_many_senders),
        cmocka_unit_test(test_commands_racing_shutdown_are_all_answered),
    };
    return tu_run(tests);
}
