#define _GNU_SOURCE
// test_daemon.c: a real trouped in a child process (--ephemeral, a fresh
// ipc socket), driven through troupe/client.h: ping, a batch of an exec job
// and a dependent noop, wait and status, a malformed request answered with
// an error (and the daemon still serving), a second trouped on the same
// state directory refused, and a SIGTERM stop within a deadline.
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child_util.h"
#include "daemon_util.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/protocol/pubsub0/sub.h>
#include <sys/stat.h>
#include <troupe/client.h>
#include <troupe/envelope.h>

#ifndef TROUPED_BIN
#error "TROUPED_BIN: the path of trouped"
#endif

static daemon_proc g_d;

static void
start_daemon(void)
{
    step("start trouped");
    snprintf(g_d.url, sizeof g_d.url, "ipc:///tmp/troupe-test-daemon-%d.sock", (int)getpid());
    char *args[] = {"--ephemeral", "--listen", g_d.url, "--durability", "process", NULL};
    daemon_spawn(&g_d, args);
    daemon_ready(&g_d);
}

static void
stop_daemon(void)
{
    step("stop trouped");
    daemon_stop(&g_d);
}

// ---------------------------------------------------------------------------
// Requests by hand (the library's own calls for them are tested with the
// CLI): a ControlRequest message, its body in *req.

static tr_msg *
req_new(Troupe__V1__ControlRequest **req)
{
    tr_msg *m = tr_msg_new(&troupe__v1__control_request__descriptor, 512, (void **)req);
    (*req)->version = TROUPE__V1__CONTROL_VERSION__CONTROL_VERSION_1;
    return m;
}

// submit_one submits one job (spec; its group g, NULL: the default) and
// returns its id.
static uint64_t
submit_one(tr_client *c, Troupe__V1__JobSpec *spec)
{
    Troupe__V1__JobSpec *jobs[] = {spec};
    Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
    b.jobs = jobs;
    b.n_jobs = 1;
    b.job_count = 1;
    uint64_t first = 0;
    uint32_t count = 0;
    assert_int_equal(tr_client_submit(c, &b, &first, &count), TR_OK);
    assert_int_equal(count, 1);
    return first;
}

// noop_job fills spec (and its task) with a noop of group grp (NULL: the
// default group).
static void
noop_job(Troupe__V1__JobSpec *spec, Troupe__V1__NoopTask *noop, const char *grp)
{
    troupe__v1__job_spec__init(spec);
    troupe__v1__noop_task__init(noop);
    spec->task_case = TROUPE__V1__JOB_SPEC__TASK_NOOP;
    spec->noop = noop;
    spec->group = (char *)(grp != NULL ? grp : "");
}

// sh_job fills spec (and ex, argv) with `sh -c script`.
static void
sh_job(Troupe__V1__JobSpec *spec, Troupe__V1__ExecTask *ex, char **argv, const char *script)
{
    troupe__v1__job_spec__init(spec);
    troupe__v1__exec_task__init(ex);
    argv[0] = "/bin/sh";
    argv[1] = "-c";
    argv[2] = (char *)script;
    ex->argv = argv;
    ex->n_argv = 3;
    spec->task_case = TROUPE__V1__JOB_SPEC__TASK_EXEC;
    spec->exec = ex;
}

static Troupe__V1__JobInfo *
job_status(tr_client *c, uint64_t id, tr_msg **reply)
{
    assert_int_equal(tr_client_status(c, &id, 1, reply), TR_OK);
    const Troupe__V1__JobList *jl = tr_client_reply_jobs(*reply);
    assert_non_null(jl);
    assert_int_equal(jl->n_jobs, 1);
    return jl->jobs[0];
}

// wait_state waits (with a deadline) for job id to be final and returns
// its state.
static int
wait_state(tr_client *c, uint64_t id)
{
    tr_msg *reply;
    bool timed_out = true;
    assert_int_equal(tr_client_wait(c, &id, 1, 60000, &reply, &timed_out), TR_OK);
    assert_false(timed_out);
    int st = (int)tr_client_reply_jobs(reply)->jobs[0]->state;
    tr_msg_free(reply);
    return st;
}

// logs calls Logs (tr_client_logs): TR_OK and *reply (its LogChunk in
// *lc), or the error.
static tr_err
logs(tr_client *c, uint64_t id, uint32_t stream, uint64_t offset, uint32_t max, bool follow,
     tr_msg **reply, const Troupe__V1__LogChunk **lc)
{
    tr_err rv = tr_client_logs(c, id, stream, offset, max, follow, reply);
    if (rv == TR_OK) {
        *lc = tr_client_reply_log(*reply);
        assert_non_null(*lc);
    }
    return rv;
}

// read_all reads stream of a final job until eof: malloc'd, *len bytes.
static uint8_t *
read_all(tr_client *c, uint64_t id, uint32_t stream, size_t *len, bool *truncated)
{
    uint8_t *buf = NULL;
    size_t n = 0;
    for (;;) {
        tr_msg *reply;
        const Troupe__V1__LogChunk *lc = NULL;
        assert_int_equal(logs(c, id, stream, n, 0, false, &reply, &lc), TR_OK);
        assert_int_equal(lc->offset, n);
        buf = realloc(buf, n + lc->data.len + 1);
        memcpy(buf + n, lc->data.data, lc->data.len);
        n += lc->data.len;
        bool eof = lc->eof;
        if (truncated != NULL) {
            *truncated = lc->truncated;
        }
        tr_msg_free(reply);
        if (eof) {
            break;
        }
        assert_true(lc != NULL); // a final job's chunks end in eof
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static tr_err
cancel(tr_client *c, const uint64_t *ids, size_t n)
{
    return tr_client_cancel(c, ids, n);
}

static tr_err
group_ctl(tr_client *c, const char *group, bool pause)
{
    return tr_client_group(c, group, pause);
}

static tr_err
shutdown_req(tr_client *c, bool immediate, uint64_t deadline_ms)
{
    return tr_client_shutdown(c, immediate, deadline_ms);
}

// wait_output blocks (Logs with follow) until job id has written at
// least want bytes to stdout: it runs.
static void
wait_output(tr_client *c, uint64_t id, size_t want)
{
    size_t n = 0;
    while (n < want) {
        tr_msg *reply;
        const Troupe__V1__LogChunk *lc = NULL;
        assert_int_equal(logs(c, id, 1, n, 0, true, &reply, &lc), TR_OK);
        assert_false(lc->eof);
        n += lc->data.len;
        tr_msg_free(reply);
    }
}

static void
test_daemon_ping_submit_wait(void **unused)
{
    (void)unused;
    tr_client *c;
    step("connect");
    assert_int_equal(tr_client_connect(g_d.url, &c), TR_OK);
    char ver[32];
    step("ping");
    assert_int_equal(tr_client_ping(c, ver, sizeof ver), TR_OK);
    assert_string_equal(ver, "0.1.0");

    step("submit");
    char *argv[] = {"/bin/sh", "-c", "echo hi"};
    Troupe__V1__ExecTask ex = TROUPE__V1__EXEC_TASK__INIT;
    ex.argv = argv;
    ex.n_argv = 3;
    Troupe__V1__JobSpec a = TROUPE__V1__JOB_SPEC__INIT;
    a.name = "echo";
    Troupe__V1__Label lab = TROUPE__V1__LABEL__INIT;
    lab.key = "team";
    lab.value = "infra";
    Troupe__V1__Label *labs[] = {&lab};
    a.labels = labs;
    a.n_labels = 1;
    a.task_case = TROUPE__V1__JOB_SPEC__TASK_EXEC;
    a.exec = &ex;
    Troupe__V1__NoopTask noop = TROUPE__V1__NOOP_TASK__INIT;
    char *after[] = {"echo"};
    Troupe__V1__JobSpec b = TROUPE__V1__JOB_SPEC__INIT;
    b.task_case = TROUPE__V1__JOB_SPEC__TASK_NOOP;
    b.noop = &noop;
    b.after_names = after;
    b.n_after_names = 1;
    Troupe__V1__JobSpec *jobs[] = {&a, &b};
    Troupe__V1__SubmitBatch batch = TROUPE__V1__SUBMIT_BATCH__INIT;
    batch.jobs = jobs;
    batch.n_jobs = 2;
    batch.job_count = 2;
    uint64_t first = 0;
    uint32_t count = 0;
    assert_int_equal(tr_client_submit(c, &batch, &first, &count), TR_OK);
    assert_int_equal(count, 2);
    assert_true(first >= 1);

    step("wait");
    uint64_t ids[] = {first, first + 1};
    tr_msg *reply;
    bool timed_out = true;
    assert_int_equal(tr_client_wait(c, ids, 2, 30000, &reply, &timed_out), TR_OK);
    assert_false(timed_out);
    const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
    assert_non_null(jl);
    assert_int_equal(jl->n_jobs, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(jl->jobs[i]->state, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    }
    tr_msg_free(reply);

    step("status");
    assert_int_equal(tr_client_status(c, ids, 1, &reply), TR_OK);
    jl = tr_client_reply_jobs(reply);
    assert_int_equal(jl->n_jobs, 1);
    assert_int_equal(jl->jobs[0]->state, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    assert_int_equal(jl->jobs[0]->exit_code, 0);
    assert_int_equal(jl->jobs[0]->stdout_bytes, 3);
    assert_string_equal(jl->jobs[0]->name, "echo");
    assert_int_equal(jl->jobs[0]->n_labels, 1);
    assert_string_equal(jl->jobs[0]->labels[0]->key, "team");
    assert_string_equal(jl->jobs[0]->labels[0]->value, "infra");
    tr_msg_free(reply);

    step("status of an unknown id");
    uint64_t bogus = first + 1000;
    assert_int_equal(tr_client_status(c, &bogus, 1, &reply), TR_ENOTFOUND);
    assert_non_null(strstr(tr_client_error(), "no such job"));

    step("a batch whose count is wrong");
    batch.job_count = 3;
    assert_int_equal(tr_client_submit(c, &batch, &first, &count), TR_EINVAL);
    assert_non_null(strstr(tr_client_error(), "states 3 jobs but holds 2"));
    tr_client_close(c);
}

static void
test_daemon_malformed_request(void **unused)
{
    (void)unused;
    step("raw REQ");
    nng_socket s;
    assert_int_equal(nng_req0_open(&s), 0);
    assert_int_equal(nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, 0), 0);
    assert_int_equal(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 10000), 0);
    assert_int_equal(nng_dial(s, g_d.url, NULL, 0), 0);
    static const char garbage[] = "\xff\xff\xff\xff not an envelope";
    assert_int_equal(nng_send(s, (void *)garbage, sizeof garbage - 1, 0), 0);
    nng_msg *nm;
    assert_int_equal(nng_recvmsg(s, &nm, 0), 0);
    tr_msg *in;
    assert_int_equal(tr_msg_unpack(nng_msg_body(nm), nng_msg_len(nm), NULL, &in, NULL), TR_OK);
    nng_msg_free(nm);
    assert_true(tr_msg_is(in, &troupe__v1__control_reply__descriptor));
    const Troupe__V1__ControlReply *rep = tr_msg_body(in);
    assert_int_equal(rep->reply_case, TROUPE__V1__CONTROL_REPLY__REPLY_ERROR);
    assert_int_equal(rep->error->code, TR_EINVAL);
    assert_string_equal(rep->error->name, "TR_EINVAL");
    assert_non_null(strstr(rep->error->detail, "malformed"));
    tr_msg_free(in);

    step("10^4 random, truncated and mutated requests, each answered");
    // Seeds: valid requests (no Submit of a program: a mutation could turn
    // it into another command line), and a Submit of a noop to cut short.
    uint8_t seeds[4][512];
    size_t seed_len[4];
    for (int k = 0; k < 4; k++) {
        Troupe__V1__ControlRequest *req;
        tr_msg *m = req_new(&req);
        uint64_t ids[] = {1, 2, 3};
        Troupe__V1__NoopTask noop = TROUPE__V1__NOOP_TASK__INIT;
        Troupe__V1__JobSpec js = TROUPE__V1__JOB_SPEC__INIT;
        Troupe__V1__JobSpec *jobs[] = {&js, &js};
        Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
        Troupe__V1__Submit sm = TROUPE__V1__SUBMIT__INIT;
        Troupe__V1__StatusJobs st = TROUPE__V1__STATUS_JOBS__INIT;
        Troupe__V1__ListJobs li = TROUPE__V1__LIST_JOBS__INIT;
        Troupe__V1__Logs lg = TROUPE__V1__LOGS__INIT;
        switch (k) {
        case 0:
            js.task_case = TROUPE__V1__JOB_SPEC__TASK_NOOP;
            js.noop = &noop;
            js.name = "";
            b.jobs = jobs;
            b.n_jobs = 2;
            b.job_count = 2;
            sm.batch = &b;
            req->request_id = "fuzz-seed";
            req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_SUBMIT;
            req->submit = &sm;
            break;
        case 1:
            st.ids = ids;
            st.n_ids = 3;
            req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_STATUS;
            req->status = &st;
            break;
        case 2:
            li.limit = 5;
            li.name_prefix = "x";
            req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_LIST;
            req->list = &li;
            break;
        default:
            lg.id = 1;
            lg.stream = 1;
            req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_LOGS;
            req->logs = &lg;
            break;
        }
        seed_len[k] = tr_msg_packed_size(m);
        assert_true(seed_len[k] <= sizeof seeds[k]);
        tr_msg_pack_to(m, seeds[k]);
        // The stack parts are not the arena's: detach them before the free.
        req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST__NOT_SET;
        req->request_id = NULL;
        tr_msg_free(m);
    }
    unsigned seed = 12345;
    size_t errors = 0, oks = 0;
    for (int i = 0; i < 10000; i++) {
        uint8_t buf[600];
        size_t n;
        int kind = (int)(rand_r(&seed) % 3), k = (int)(rand_r(&seed) % 4);
        if (kind == 0) { // random bytes
            n = rand_r(&seed) % sizeof buf;
            for (size_t j = 0; j < n; j++) {
                buf[j] = (uint8_t)rand_r(&seed);
            }
        } else if (kind == 1 || k == 0) { // a valid request cut short
            n = seed_len[k] > 0 ? rand_r(&seed) % seed_len[k] : 0;
            memcpy(buf, seeds[k], n);
        } else { // a few bytes of one flipped
            n = seed_len[k];
            memcpy(buf, seeds[k], n);
            for (int f = 0; f < 1 + (int)(rand_r(&seed) % 4); f++) {
                buf[rand_r(&seed) % n] ^= (uint8_t)(1u << (rand_r(&seed) % 8));
            }
        }
        assert_int_equal(nng_send(s, buf, n, 0), 0);
        assert_int_equal(nng_recvmsg(s, &nm, 0), 0);
        assert_int_equal(tr_msg_unpack(nng_msg_body(nm), nng_msg_len(nm), NULL, &in, NULL), TR_OK);
        nng_msg_free(nm);
        assert_true(tr_msg_is(in, &troupe__v1__control_reply__descriptor));
        rep = tr_msg_body(in);
        if (rep->reply_case == TROUPE__V1__CONTROL_REPLY__REPLY_ERROR) {
            assert_true(rep->error->code != 0);
            assert_true(rep->error->detail[0] != '\0');
            errors++;
        } else {
            oks++;
        }
        tr_msg_free(in);
    }
    fprintf(stderr, "malformed: %zu errors, %zu served\n", errors, oks);
    assert_true(errors > 5000);
    nng_close(s);

    step("ping after garbage");
    tr_client *c;
    assert_int_equal(tr_client_connect(g_d.url, &c), TR_OK);
    assert_int_equal(tr_client_ping(c, NULL, 0), TR_OK);
    tr_msg *pr;
    assert_int_equal(tr_client_pong(c, &pr), TR_OK);
    uint64_t dropped0 = tr_client_reply_pong(pr)->pipes_dropped;
    assert_true(tr_client_reply_pong(pr)->pipes >= 1);
    tr_msg_free(pr);

    step("a request over the size limit: its connection dropped and counted, the rest served");
    // By hand on the ipc socket, so that no nng socket of this process
    // sees its pipe dropped (nng 1.5.2 then leaks a redialling pipe): the
    // SP header of a REQ peer, then a message header that announces
    // TR_CLIENT_MAX_REQUEST + 1 bytes. trouped's nng closes the connection
    // without reading further, which is the event waited for (EOF or
    // ECONNRESET, within a deadline).
    assert_int_equal(strncmp(g_d.url, "ipc://", 6), 0);
    int us = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(us >= 0);
    struct sockaddr_un ua = {.sun_family = AF_UNIX};
    assert_true(strlen(g_d.url + 6) < sizeof ua.sun_path);
    memcpy(ua.sun_path, g_d.url + 6, strlen(g_d.url + 6) + 1);
    assert_int_equal(connect(us, (struct sockaddr *)&ua, sizeof ua), 0);
    static const uint8_t sp_req[8] = {0, 'S', 'P', 0, 0x00, 0x30, 0, 0}; // REQ0 is 0x30
    assert_int_equal(write(us, sp_req, sizeof sp_req), (ssize_t)sizeof sp_req);
    uint8_t frame[9] = {1};
    uint64_t bigl = TR_CLIENT_MAX_REQUEST + 1;
    for (int k = 0; k < 8; k++) {
        frame[1 + k] = (uint8_t)(bigl >> (56 - 8 * k));
    }
    assert_int_equal(write(us, frame, sizeof frame), (ssize_t)sizeof frame);
    bool hung_up = false;
    for (;;) {
        struct pollfd upf = {.fd = us, .events = POLLIN};
        int pr_n;
        do {
            pr_n = poll(&upf, 1, 20000);
        } while (pr_n < 0 && errno == EINTR);
        assert_int_equal(pr_n, 1);
        uint8_t junk[64];
        ssize_t got = read(us, junk, sizeof junk); // the server's SP header first
        if (got == 0 || (got < 0 && errno == ECONNRESET)) {
            hung_up = true;
            break;
        }
        assert_true(got > 0);
    }
    assert_true(hung_up);
    close(us);
    assert_int_equal(tr_client_pong(c, &pr), TR_OK);
    fprintf(stderr, "oversized: pipes_dropped %llu -> %llu\n", (unsigned long long)dropped0,
            (unsigned long long)tr_client_reply_pong(pr)->pipes_dropped);
    assert_true(tr_client_reply_pong(pr)->pipes_dropped > dropped0);
    tr_msg_free(pr);
    tr_client_close(c);
}

static void
test_daemon_logs(void **unused)
{
    (void)unused;
    tr_client *c;
    assert_int_equal(tr_client_connect(g_d.url, &c), TR_OK);
    step("logs: 200000 bytes on stdout, 4 on stderr");
    Troupe__V1__JobSpec spec;
    Troupe__V1__ExecTask ex;
    char *argv[3];
    sh_job(&spec, &ex, argv, "head -c 200000 /dev/zero | tr '\\0' x; echo err >&2");
    uint64_t id = submit_one(c, &spec);
    assert_int_equal(wait_state(c, id), TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    size_t n;
    bool trunc = true;
    uint8_t *out = read_all(c, id, 1, &n, &trunc);
    assert_int_equal(n, 200000);
    assert_false(trunc);
    for (size_t i = 0; i < n; i++) {
        if (out[i] != 'x') {
            fail_msg("byte %zu is %d", i, out[i]);
        }
    }
    free(out);
    out = read_all(c, id, 2, &n, NULL);
    assert_string_equal((char *)out, "err\n");
    free(out);

    step("logs: chunks of max_bytes, past the end, bad requests");
    tr_msg *reply;
    const Troupe__V1__LogChunk *lc = NULL;
    assert_int_equal(logs(c, id, 1, 1000, 10, false, &reply, &lc), TR_OK);
    assert_int_equal(lc->data.len, 10);
    assert_int_equal(lc->offset, 1000);
    assert_false(lc->eof);
    tr_msg_free(reply);
    assert_int_equal(logs(c, id, 1, 500000, 0, true, &reply, &lc), TR_OK);
    assert_int_equal(lc->data.len, 0);
    assert_true(lc->eof); // final: follow does not wait
    tr_msg_free(reply);
    assert_int_equal(logs(c, id, 3, 0, 0, false, &reply, &lc), TR_EINVAL);
    assert_int_equal(logs(c, id + 100000, 1, 0, 0, false, &reply, &lc), TR_ENOTFOUND);
    assert_int_equal(logs(c, id, 1, 0, 2u << 20, false, &reply, &lc), TR_EINVAL);

    step("logs: follow waits for output that comes later");
    char fifo[128];
    snprintf(fifo, sizeof fifo, "/tmp/troupe-test-daemon-%d.fifo", (int)getpid());
    unlink(fifo);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    char script[256];
    snprintf(script, sizeof script, "echo one; cat %s; echo two", fifo);
    sh_job(&spec, &ex, argv, script);
    id = submit_one(c, &spec);
    wait_output(c, id, 4);
    // The job waits in cat: a follow at offset 4 waits for what we write.
    int fd = open(fifo, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "mid\n", 4), 4);
    close(fd);
    assert_int_equal(logs(c, id, 1, 4, 0, true, &reply, &lc), TR_OK);
    assert_true(lc->data.len >= 4);
    assert_memory_equal(lc->data.data, "mid\n", 4);
    tr_msg_free(reply);
    assert_int_equal(wait_state(c, id), TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    out = read_all(c, id, 1, &n, NULL);
    assert_string_equal((char *)out, "one\nmid\ntwo\n");
    free(out);
    unlink(fifo);

    step("logs: output past the job's cap is dropped, the job marked truncated");
    sh_job(&spec, &ex, argv, "head -c 5000 /dev/zero");
    spec.output_cap = 1000;
    id = submit_one(c, &spec);
    assert_int_equal(wait_state(c, id), TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    out = read_all(c, id, 1, &n, &trunc);
    assert_int_equal(n, 1000);
    assert_true(trunc);
    free(out);
    Troupe__V1__JobInfo *ji = job_status(c, id, &reply);
    assert_true(ji->truncated);
    assert_int_equal(ji->stdout_bytes, 5000);
    tr_msg_free(reply);
    tr_client_close(c);
}

static void
test_daemon_cancel(void **unused)
{
    (void)unused;
    tr_client *c;
    assert_int_equal(tr_client_connect(g_d.url, &c), TR_OK);
    step("cancel: a running job, its dependant, a queued job");
    Troupe__V1__JobSpec a;
    Troupe__V1__ExecTask ex;
    char *argv[3];
    sh_job(&a, &ex, argv, "echo started; exec sleep 60");
    a.name = "long";
    a.kill_grace_ms = 10000; // sleep dies of the SIGTERM
    Troupe__V1__NoopTask noop = TROUPE__V1__NOOP_TASK__INIT;
    char *after[] = {"long"};
    Troupe__V1__JobSpec b = TROUPE__V1__JOB_SPEC__INIT;
    b.task_case = TROUPE__V1__JOB_SPEC__TASK_NOOP;
    b.noop = &noop;
    b.after_names = after;
    b.n_after_names = 1;
    Troupe__V1__JobSpec *jobs[] = {&a, &b};
    Troupe__V1__SubmitBatch batch = TROUPE__V1__SUBMIT_BATCH__INIT;
    batch.jobs = jobs;
    batch.n_jobs = 2;
    batch.job_count = 2;
    uint64_t first = 0;
    uint32_t count = 0;
    assert_int_equal(tr_client_submit(c, &batch, &first, &count), TR_OK);
    wait_output(c, first, 8); // "started\n": it runs
    assert_int_equal(cancel(c, &first, 1), TR_OK);
    assert_int_equal(wait_state(c, first), TROUPE__V1__JOB_STATE__JOB_STATE_CANCELLED);
    assert_int_equal(wait_state(c, first + 1), TROUPE__V1__JOB_STATE__JOB_STATE_FAILED);
    tr_msg *reply;
    Troupe__V1__JobInfo *ji = job_status(c, first, &reply);
    assert_string_equal(ji->error, "cancelled");
    assert_int_equal(ji->signal, SIGTERM);
    tr_msg_free(reply);
    ji = job_status(c, first + 1, &reply);
    assert_non_null(strstr(ji->error, "cancelled"));
    tr_msg_free(reply);

    step("cancel: queued in a paused group; again (final: a no-op); unknown ids");
    assert_int_equal(group_ctl(c, "held", true), TR_OK);
    Troupe__V1__JobSpec q = TROUPE__V1__JOB_SPEC__INIT;
    q.task_case = TROUPE__V1__JOB_SPEC__TASK_NOOP;
    q.noop = &noop;
    q.group = "held";
    uint64_t qid = submit_one(c, &q);
    assert_int_equal(cancel(c, &qid, 1), TR_OK);
    assert_int_equal(wait_state(c, qid), TROUPE__V1__JOB_STATE__JOB_STATE_CANCELLED);
    assert_int_equal(cancel(c, &qid, 1), TR_OK);
    uint64_t two[] = {qid, qid + 100000};
    assert_int_equal(cancel(c, two, 2), TR_ENOTFOUND);
    assert_non_null(strstr(tr_client_error(), "no such job"));
    assert_int_equal(group_ctl(c, "held", false), TR_OK);
    tr_client_close(c);
}

static void
test_daemon_pause_resume(void **unused)
{
    (void)unused;
    tr_client *c;
    assert_int_equal(tr_client_connect(g_d.url, &c), TR_OK);
    step("pause: a job of a paused group stays queued");
    assert_int_equal(group_ctl(c, "paused", true), TR_OK);
    Troupe__V1__NoopTask noop;
    Troupe__V1__JobSpec p;
    noop_job(&p, &noop, "paused");
    uint64_t pid = submit_one(c, &p);
    // A later job of the default group ends; the runner took the first
    // batch before the second, and its writes commit in order: had the
    // paused job run, its end would be stored by now.
    Troupe__V1__JobSpec o = TROUPE__V1__JOB_SPEC__INIT;
    o.task_case = TROUPE__V1__JOB_SPEC__TASK_NOOP;
    o.noop = &noop;
    uint64_t oid = submit_one(c, &o);
    assert_int_equal(wait_state(c, oid), TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    tr_msg *reply;
    assert_int_equal(job_status(c, pid, &reply)->state, TROUPE__V1__JOB_STATE__JOB_STATE_QUEUED);
    tr_msg_free(reply);
    step("resume: it runs");
    assert_int_equal(group_ctl(c, "paused", false), TR_OK);
    assert_int_equal(wait_state(c, pid), TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    tr_client_close(c);
}

static void
test_daemon_events(void **unused)
{
    (void)unused;
    tr_client *c;
    assert_int_equal(tr_client_connect(g_d.url, &c), TR_OK);
    char url[512];
    step("events: subscribe");
    nng_socket sub = events_subscribe(c, url, sizeof url);
    assert_non_null(strstr(url, "ipc://"));

    step("events: a job's state changes and output, seq from 1 without gaps");
    Troupe__V1__JobSpec spec;
    Troupe__V1__ExecTask ex;
    char *argv[3];
    sh_job(&spec, &ex, argv, "echo hello");
    uint64_t id = submit_one(c, &spec);
    uint64_t seq = 0;
    bool queued = false, running = false, output = false, done = false;
    while (!done) {
        tr_msg *m = next_event(sub, id, 30000);
        assert_non_null(m);
        const Troupe__V1__JobEvent *ev = tr_msg_body(m);
        assert_int_equal(ev->seq, seq + 1);
        seq = ev->seq;
        if (ev->stream == 1) {
            assert_int_equal(ev->offset, 0);
            assert_int_equal(ev->data.len, 6);
            assert_memory_equal(ev->data.data, "hello\n", 6);
            output = true;
        } else if (ev->state == TROUPE__V1__JOB_STATE__JOB_STATE_QUEUED) {
            queued = true;
        } else if (ev->state == TROUPE__V1__JOB_STATE__JOB_STATE_RUNNING) {
            running = true;
        } else {
            assert_int_equal(ev->state, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
            done = true;
        }
        tr_msg_free(m);
    }
    assert_true(queued && running && output);
    nng_close(sub);
    tr_client_close(c);
}

// A second trouped of its own for the shutdown tests, on a state
// directory the test keeps, so that a restart finds the jobs.
static void
test_daemon_shutdown(void **unused)
{
    (void)unused;
    char dir[128];
    snprintf(dir, sizeof dir, "/tmp/troupe-test-daemon-%d.state", (int)getpid());
    mkdir(dir, 0700);
    daemon_proc p = {0};
    snprintf(p.url, sizeof p.url, "ipc:///tmp/troupe-test-daemon-%d-s.sock", (int)getpid());
    char *args[] = {"--state-dir", dir, "--listen", p.url, "--durability", "process", NULL};
    char line[512];
    for (int round = 0; round < 2; round++) {
        step(round == 0 ? "shutdown: graceful with a deadline" : "shutdown: after a restart");
        daemon_spawn(&p, args);
        assert_non_null(fgets(line, sizeof line, p.out));
        assert_non_null(strstr(line, "TROUPED READY"));
        tr_client *c;
        assert_int_equal(tr_client_connect(p.url, &c), TR_OK);
        if (round == 0) {
            // A job that runs past the deadline, and one held in a paused group.
            Troupe__V1__JobSpec spec;
            Troupe__V1__ExecTask ex;
            char *argv[3];
            sh_job(&spec, &ex, argv, "echo started; exec sleep 60");
            uint64_t long_id = submit_one(c, &spec);
            assert_int_equal(long_id, 1);
            wait_output(c, long_id, 8);
            assert_int_equal(group_ctl(c, "later", true), TR_OK);
            Troupe__V1__NoopTask noop;
            Troupe__V1__JobSpec q;
            noop_job(&q, &noop, "later");
            assert_int_equal(submit_one(c, &q), 2);
            assert_int_equal(shutdown_req(c, false, 100), TR_OK);
        } else {
            // The pause outlived the daemon: the queued job waits until
            // the group is resumed. The one the shutdown killed was left
            // running, and recovered.
            tr_msg *reply;
            assert_int_equal(job_status(c, 2, &reply)->state,
                             TROUPE__V1__JOB_STATE__JOB_STATE_QUEUED);
            tr_msg_free(reply);
            assert_int_equal(group_ctl(c, "later", false), TR_OK);
            assert_int_equal(wait_state(c, 2), TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
            assert_int_equal(wait_state(c, 1), TROUPE__V1__JOB_STATE__JOB_STATE_FAILED);
            assert_int_equal(shutdown_req(c, true, 0), TR_OK);
        }
        tr_client_close(c);
        int st;
        assert_true(wait_exit(p.pid, 30000, &st));
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
        fclose(p.out);
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

// ---------------------------------------------------------------------------
// kill -9 of the daemon at points chosen at random (after k acknowledged
// Submits, with one more in flight), ten times, then a last start: every
// acknowledged Submit is one set of jobs (re-sent Submits included), each
// job ends with one final record, and no job ever ran beside a surviving
// copy of itself (each holds a flock on its id while it runs; a second
// copy finds it taken and leaves a mark).

typedef struct crash_sub {
    tr_client *cs_c;
    char cs_rid[64];
    const char *cs_script;
    tr_err cs_rv;
    uint64_t cs_first;
    uint32_t cs_count;
    bool cs_repeated;
} crash_sub;

static void
crash_submit(crash_sub *cs)
{
    Troupe__V1__JobSpec a, b;
    Troupe__V1__ExecTask ea, eb;
    char *aa[3], *ab[3];
    sh_job(&a, &ea, aa, cs->cs_script);
    sh_job(&b, &eb, ab, cs->cs_script);
    a.retries = b.retries = 20;
    Troupe__V1__JobSpec *jobs[] = {&a, &b};
    Troupe__V1__SubmitBatch batch = TROUPE__V1__SUBMIT_BATCH__INIT;
    batch.jobs = jobs;
    batch.n_jobs = 2;
    batch.job_count = 2;
    Troupe__V1__ControlRequest *req;
    tr_msg *m = req_new(&req);
    Troupe__V1__Submit *sm = tr_msg_arena(m, sizeof *sm);
    troupe__v1__submit__init(sm);
    sm->batch = &batch; // packed by the call, before it returns
    req->request_id = cs->cs_rid;
    req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_SUBMIT;
    req->submit = sm;
    tr_msg *reply = NULL;
    cs->cs_rv = tr_client_call(cs->cs_c, m, 2000, &reply);
    if (cs->cs_rv == TR_OK) {
        const Troupe__V1__ControlReply *rep = tr_msg_body(reply);
        assert_int_equal(rep->reply_case, TROUPE__V1__CONTROL_REPLY__REPLY_SUBMITTED);
        cs->cs_first = rep->submitted->first_id;
        cs->cs_count = rep->submitted->count;
        cs->cs_repeated = rep->submitted->repeated;
        tr_msg_free(reply);
    }
}

static void *
crash_submit_thread(void *arg)
{
    crash_submit(arg);
    return NULL;
}

enum { CRASH_ROUNDS = 10, CRASH_SUBS_MAX = 200 };

static void
test_daemon_crash(void **unused)
{
    (void)unused;
    char dir[128], work[128], script[512], cmd[300];
    snprintf(dir, sizeof dir, "/tmp/troupe-test-daemon-%d.crash", (int)getpid());
    snprintf(work, sizeof work, "/tmp/troupe-test-daemon-%d.work", (int)getpid());
    mkdir(dir, 0700);
    mkdir(work, 0700);
    snprintf(script, sizeof script,
             "flock -n %s/$TROUPE_JOB_ID.lock -c 'echo $TROUPE_JOB_ID >> %s/runs; sleep 0.02'"
             " || touch %s/$TROUPE_JOB_ID.overlap",
             work, work, work);
    unsigned seed = (unsigned)getpid();
    fprintf(stderr, "test_daemon_crash: seed %u\n", seed);
    daemon_proc p = {0};
    snprintf(p.url, sizeof p.url, "ipc:///tmp/troupe-test-daemon-%d-c.sock", (int)getpid());
    char *args[] = {"--state-dir", dir, "--listen", p.url, "--durability", "process", NULL};
    static crash_sub subs[CRASH_SUBS_MAX];
    size_t nsubs = 0, acked = 0;
    char line[512];
    for (int round = 0; round <= CRASH_ROUNDS; round++) {
        step(round < CRASH_ROUNDS ? "crash: a round" : "crash: the last start");
        daemon_spawn(&p, args);
        assert_non_null(fgets(line, sizeof line, p.out));
        assert_non_null(strstr(line, "TROUPED READY"));
        tr_client *c;
        assert_int_equal(tr_client_connect(p.url, &c), TR_OK);
        // Re-send what was not acknowledged, under its first request id.
        for (size_t i = 0; i < nsubs; i++) {
            if (subs[i].cs_rv != TR_OK) {
                subs[i].cs_c = c;
                crash_submit(&subs[i]);
                assert_int_equal(subs[i].cs_rv, TR_OK);
                acked++;
            }
        }
        if (round == CRASH_ROUNDS) {
            // Every job of every acknowledged Submit ends, once.
            for (size_t i = 0; i < nsubs; i++) {
                for (uint32_t k = 0; k < subs[i].cs_count; k++) {
                    int st = wait_state(c, subs[i].cs_first + k);
                    assert_int_equal(st, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
                }
            }
            // No other jobs: ids are consecutive from 1 and the list ends
            // with the last acknowledged Submit's.
            uint64_t max_id = 0;
            for (size_t i = 0; i < nsubs; i++) {
                uint64_t last = subs[i].cs_first + subs[i].cs_count - 1;
                max_id = last > max_id ? last : max_id;
            }
            assert_int_equal(max_id, 2 * nsubs);
            uint64_t beyond = max_id + 1;
            tr_msg *reply;
            assert_int_equal(tr_client_status(c, &beyond, 1, &reply), TR_ENOTFOUND);
            assert_int_equal(shutdown_req(c, true, 0), TR_OK);
            tr_client_close(c);
            int st;
            assert_true(wait_exit(p.pid, 30000, &st));
            assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
            fclose(p.out);
            break;
        }
        int k = (int)(rand_r(&seed) % 12);
        for (int i = 0; i < k && nsubs < CRASH_SUBS_MAX - 1; i++) {
            crash_sub *cs = &subs[nsubs++];
            *cs = (crash_sub){.cs_c = c, .cs_script = script};
            snprintf(cs->cs_rid, sizeof cs->cs_rid, "crash-%d-%d", round, i);
            crash_submit(cs);
            if (cs->cs_rv == TR_OK) {
                acked++;
            }
        }
        // One more in flight while the daemon dies: committed or not,
        // acknowledged or not, its re-send makes no second set.
        crash_sub *cs = &subs[nsubs++];
        *cs = (crash_sub){.cs_c = c, .cs_script = script};
        snprintf(cs->cs_rid, sizeof cs->cs_rid, "crash-%d-last", round);
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, crash_submit_thread, cs), 0);
        assert_int_equal(kill(p.pid, SIGKILL), 0);
        int st;
        assert_true(wait_exit(p.pid, 30000, &st));
        assert_true(WIFSIGNALED(st));
        pthread_join(th, NULL);
        if (cs->cs_rv == TR_OK) {
            acked++;
        }
        tr_client_close(c);
        fclose(p.out);
    }
    fprintf(stderr, "test_daemon_crash: %zu submits, %zu acknowledged (re-sends included)\n", nsubs,
            acked);
    snprintf(cmd, sizeof cmd, "ls %s | grep -c overlap", work);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    int overlaps = -1;
    assert_int_equal(fscanf(f, "%d", &overlaps), 1);
    pclose(f);
    assert_int_equal(overlaps, 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", dir, work);
    assert_int_equal(system(cmd), 0);
}

// ping_token pings over c with token (NULL: none).
static tr_err
ping_token(tr_client *c, const char *token)
{
    tr_client_set_token(c, token);
    return tr_client_ping(c, NULL, 0);
}

// start_refused runs trouped with args and expects it to refuse to start
// (exit 1, no ready line) with want in its error.
static void
start_refused(char *const *args)
{
    daemon_proc p = {0};
    daemon_spawn(&p, args);
    daemon_refused(&p);
}

static void
test_daemon_tcp_token(void **unused)
{
    (void)unused;
    char tok[128], url[128];
    snprintf(tok, sizeof tok, "/tmp/troupe-test-daemon-%d.token", (int)getpid());
    snprintf(url, sizeof url, "ipc:///tmp/troupe-test-daemon-%d-t.sock", (int)getpid());
    FILE *f = fopen(tok, "w");
    assert_non_null(f);
    fputs("0123456789abcdef-secret\n", f);
    fclose(f);
    step("tcp: refused configurations");
    assert_int_equal(chmod(tok, 0644), 0);
    char *loose[] = {"--ephemeral",    "--listen",     url, "--tcp", "tcp://127.0.0.1:0",
                     "--insecure-tcp", "--token-file", tok, NULL};
    start_refused(loose); // a token others can read
    assert_int_equal(chmod(tok, 0600), 0);
    char *plain[] = {"--ephemeral",       "--listen",     url, "--tcp",
                     "tcp://127.0.0.1:0", "--token-file", tok, NULL};
    start_refused(plain); // plain tcp without the test flag
    char *wide[] = {"--ephemeral",    "--listen",     url, "--tcp", "tcp://0.0.0.0:0",
                    "--insecure-tcp", "--token-file", tok, NULL};
    start_refused(wide); // plain tcp off loopback
    char *notoken[] = {"--ephemeral",       "--listen",       url, "--tcp",
                       "tcp://127.0.0.1:0", "--insecure-tcp", NULL};
    start_refused(notoken);

    step("tcp: requests need the token");
    char *args[] = {"--ephemeral",    "--listen",     url, "--tcp", "tcp://127.0.0.1:0",
                    "--insecure-tcp", "--token-file", tok, NULL};
    daemon_proc p = {0};
    daemon_spawn(&p, args);
    char line[512], u1[256], u2[256];
    assert_non_null(fgets(line, sizeof line, p.out));
    assert_int_equal(sscanf(line, "TROUPED READY %255s %255s", u1, u2), 2);
    assert_non_null(strstr(u2, "tcp://127.0.0.1:"));
    tr_client *c;
    assert_int_equal(tr_client_connect(u2, &c), TR_OK);
    assert_int_equal(ping_token(c, NULL), TR_EPERM);
    assert_non_null(strstr(tr_client_error(), "token"));
    assert_int_equal(ping_token(c, "0123456789abcdef-secreT"), TR_EPERM);
    assert_int_equal(ping_token(c, "0123456789abcdef-secret-and-more"), TR_EPERM);
    assert_int_equal(ping_token(c, "0123456789abcdef-secret"), TR_OK);
    tr_client_close(c);
    // The local socket needs none.
    assert_int_equal(tr_client_connect(u1, &c), TR_OK);
    assert_int_equal(ping_token(c, NULL), TR_OK);
    struct stat sb;
    assert_int_equal(stat(u1 + 6, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(shutdown_req(c, true, 0), TR_OK);
    tr_client_close(c);
    int st;
    assert_true(wait_exit(p.pid, 30000, &st));
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    fclose(p.out);

    step("tls+tcp: the certificate verified, the token required");
    char dir[64], cmd[1024], cert[96], both[96];
    snprintf(dir, sizeof dir, "/tmp/troupe-test-daemon-%d.tls", (int)getpid());
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(both, sizeof both, "%s/both.pem", dir);
    assert_true(make_cert(dir, cert, both)); // openssl: deploy/debian-deps.sh
    char *targs[] = {
        "--ephemeral", "--listen",     url, "--tcp", "tls+tcp://127.0.0.1:0", "--tls-cert-key",
        both,          "--token-file", tok, NULL};
    daemon_spawn(&p, targs);
    assert_non_null(fgets(line, sizeof line, p.out));
    assert_int_equal(sscanf(line, "TROUPED READY %255s %255s", u1, u2), 2);
    assert_non_null(strstr(u2, "tls+tcp://127.0.0.1:"));
    unsetenv("TROUPE_TLS_CA");
    assert_int_equal(tr_client_connect(u2, &c), TR_EINVAL); // no CA given
    assert_non_null(strstr(tr_client_error(), "TROUPE_TLS_CA"));
    setenv("TROUPE_TLS_CA", cert, 1);
    setenv("TROUPE_TLS_SERVER_NAME", "localhost", 1);
    assert_int_equal(tr_client_connect(u2, &c), TR_OK);
    assert_int_equal(ping_token(c, NULL), TR_EPERM);
    tr_client_set_token(c, "0123456789abcdef-secret");
    assert_int_equal(tr_client_ping(c, NULL, 0), TR_OK);
    tr_client_close(c);
    // A plain tcp client gets nothing from a TLS listener: its call times
    // out (bounded), it is never served.
    char plain_url[300];
    snprintf(plain_url, sizeof plain_url, "tcp://%s", u2 + 10);
    assert_int_equal(tr_client_connect(plain_url, &c), TR_OK);
    tr_client_set_timeout(c, 500);
    assert_int_not_equal(ping_token(c, "0123456789abcdef-secret"), TR_OK);
    tr_client_close(c);
    unsetenv("TROUPE_TLS_CA");
    unsetenv("TROUPE_TLS_SERVER_NAME");
    assert_int_equal(tr_client_connect(u1, &c), TR_OK);
    assert_int_equal(shutdown_req(c, true, 0), TR_OK);
    tr_client_close(c);
    assert_true(wait_exit(p.pid, 30000, &st));
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    fclose(p.out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    unlink(tok);
}

// max_concurrent returns the most slots in use at once among jobs
// [first, first + n) (their weights in w, NULL: 1 each), from their
// recorded start and end times (ms): at each start t, the jobs k with
// start_k <= t < end_k. Times are whole ms, so a job that ends and the
// one that starts after it in the same ms do not overlap, and a job
// shorter than 1 ms counts nowhere (the check can miss an overlap that
// short, never invent one).
static uint32_t
max_concurrent(tr_client *c, uint64_t first, size_t n, const uint32_t *w)
{
    int64_t *st = calloc(n, sizeof *st), *en = calloc(n, sizeof *en);
    for (size_t i = 0; i < n; i++) {
        tr_msg *reply;
        Troupe__V1__JobInfo *ji = job_status(c, first + i, &reply);
        assert_int_equal(ji->state, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
        st[i] = ji->started_ms;
        en[i] = ji->ended_ms;
        assert_true(st[i] > 0 && en[i] >= st[i]);
        tr_msg_free(reply);
    }
    uint32_t most = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t used = 0;
        for (size_t k = 0; k < n; k++) {
            if (st[k] <= st[i] && st[i] < en[k]) {
                used += w != NULL ? w[k] : 1;
            }
        }
        most = used > most ? used : most;
    }
    free(st);
    free(en);
    return most;
}

enum { LIMIT_JOBS = 500 };

static void
test_daemon_group_limits(void **unused)
{
    (void)unused;
    tr_client *c;
    assert_int_equal(tr_client_connect(g_d.url, &c), TR_OK);
    step("limits: 500 jobs in a group of 2");
    static Troupe__V1__JobSpec specs[LIMIT_JOBS];
    static Troupe__V1__JobSpec *jobs[LIMIT_JOBS];
    char *argv[] = {"sleep", "0.002"}; // long enough to be seen in ms
    Troupe__V1__ExecTask ex = TROUPE__V1__EXEC_TASK__INIT;
    ex.argv = argv;
    ex.n_argv = 2;
    for (size_t i = 0; i < LIMIT_JOBS; i++) {
        troupe__v1__job_spec__init(&specs[i]);
        specs[i].task_case = TROUPE__V1__JOB_SPEC__TASK_EXEC;
        specs[i].exec = &ex;
        specs[i].group = "two";
        jobs[i] = &specs[i];
    }
    Troupe__V1__GroupSpec two = TROUPE__V1__GROUP_SPEC__INIT, three = TROUPE__V1__GROUP_SPEC__INIT;
    two.name = "two";
    two.parallel = 2;
    three.name = "three";
    three.parallel = 3;
    Troupe__V1__GroupSpec *groups[] = {&two, &three};
    Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
    b.groups = groups;
    b.n_groups = 2;
    b.jobs = jobs;
    b.n_jobs = LIMIT_JOBS;
    b.job_count = LIMIT_JOBS;
    uint64_t first;
    uint32_t count;
    assert_int_equal(tr_client_submit(c, &b, &first, &count), TR_OK);
    assert_int_equal(wait_state(c, first + LIMIT_JOBS - 1),
                     TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    uint64_t *ids = calloc(LIMIT_JOBS, sizeof *ids);
    for (size_t i = 0; i < LIMIT_JOBS; i++) {
        ids[i] = first + i;
    }
    tr_msg *reply;
    bool timed_out;
    assert_int_equal(tr_client_wait(c, ids, LIMIT_JOBS, 120000, &reply, &timed_out), TR_OK);
    assert_false(timed_out);
    tr_msg_free(reply);
    free(ids);
    uint32_t most = max_concurrent(c, first, LIMIT_JOBS, NULL);
    fprintf(stderr, "group of 2: at most %u at once\n", most);
    assert_true(most <= 2);
    assert_true(most >= 1);

    step("limits: weighted slots in a group of 3");
    enum { WN = 60 };
    static Troupe__V1__JobSpec ws[WN];
    static Troupe__V1__JobSpec *wj[WN];
    uint32_t w[WN];
    Troupe__V1__JobSpec spec;
    Troupe__V1__ExecTask sex;
    char *sargv[3];
    sh_job(&spec, &sex, sargv, "sleep 0.01");
    for (size_t i = 0; i < WN; i++) {
        ws[i] = spec;
        ws[i].group = "three";
        ws[i].slots = w[i] = (i % 3 == 0) ? 2 : 1;
        if (i == 7) {
            ws[i].slots = w[i] = 3; // the whole group
        }
        wj[i] = &ws[i];
    }
    b.groups = NULL;
    b.n_groups = 0;
    b.jobs = wj;
    b.n_jobs = WN;
    b.job_count = WN;
    assert_int_equal(tr_client_submit(c, &b, &first, &count), TR_OK);
    for (size_t i = 0; i < WN; i++) {
        assert_int_equal(wait_state(c, first + i), TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    }
    most = max_concurrent(c, first, WN, w);
    fprintf(stderr, "group of 3 slots: at most %u in use\n", most);
    assert_true(most <= 3);
    tr_client_close(c);
}

// A daemon with caps: at most 1 job running over every group, at most 5
// queued or running; and a runtime of one worker (--workers 1), which
// does all of it.
static void
test_daemon_caps(void **unused)
{
    (void)unused;
    daemon_proc p = {0};
    snprintf(p.url, sizeof p.url, "ipc:///tmp/troupe-test-daemon-%d-k.sock", (int)getpid());
    char *args[] = {"--ephemeral", "--listen", p.url, "--max-queued", "5", "--max-running", "1",
                    "--workers",   "1",        NULL};
    daemon_spawn(&p, args);
    char line[512];
    assert_non_null(fgets(line, sizeof line, p.out));
    tr_client *c;
    assert_int_equal(tr_client_connect(p.url, &c), TR_OK);
    step("caps: one running at once over two groups");
    Troupe__V1__JobSpec a, b2;
    Troupe__V1__ExecTask ea, eb;
    char *aa[3], *ab[3];
    sh_job(&a, &ea, aa, "sleep 0.02");
    sh_job(&b2, &eb, ab, "sleep 0.02");
    a.group = "x";
    b2.group = "y";
    Troupe__V1__JobSpec *jobs[] = {&a, &b2, &a, &b2};
    Troupe__V1__SubmitBatch batch = TROUPE__V1__SUBMIT_BATCH__INIT;
    batch.jobs = jobs;
    batch.n_jobs = 4;
    batch.job_count = 4;
    uint64_t first;
    uint32_t count;
    assert_int_equal(tr_client_submit(c, &batch, &first, &count), TR_OK);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(wait_state(c, first + i), TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    }
    assert_int_equal(max_concurrent(c, first, 4, NULL), 1);

    step("caps: the sixth unfinished job is refused, precisely");
    assert_int_equal(group_ctl(c, "held", true), TR_OK);
    Troupe__V1__NoopTask noop;
    Troupe__V1__JobSpec q;
    noop_job(&q, &noop, "held");
    for (int i = 0; i < 5; i++) {
        submit_one(c, &q);
    }
    Troupe__V1__JobSpec *one[] = {&q};
    batch.jobs = one;
    batch.n_jobs = 1;
    batch.job_count = 1;
    assert_int_equal(tr_client_submit(c, &batch, &first, &count), TR_ENOSPC);
    assert_non_null(strstr(tr_client_error(), "the cap is 5"));
    assert_non_null(strstr(tr_client_error(), "--max-queued"));
    assert_int_equal(group_ctl(c, "held", false), TR_OK);
    assert_int_equal(shutdown_req(c, false, 0), TR_OK);
    tr_client_close(c);
    int st;
    assert_true(wait_exit(p.pid, 30000, &st));
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    fclose(p.out);
}

// gone waits up to ms for process pid to exit (pidfd: no polling); true
// when it has (or never existed).
static bool
gone(pid_t pid, int ms)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) {
        return errno == ESRCH;
    }
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int r;
    do {
        r = poll(&pf, 1, ms);
    } while (r < 0 && errno == EINTR);
    close(fd);
    return r > 0;
}

// A timeout kills the job's whole tree: its session (a child of the
// leader), and where trouped has cgroups (here as root, or under systemd
// with Delegate=yes) a grandchild that made a session of its own too.
// Without cgroups that grandchild survives: the test says so and kills it.
static void
test_daemon_timeout_kills_tree(void **unused)
{
    (void)unused;
    tr_client *c;
    assert_int_equal(tr_client_connect(g_d.url, &c), TR_OK);
    step("timeout: a tree with a setsid grandchild");
    Troupe__V1__JobSpec spec;
    Troupe__V1__ExecTask ex;
    char *argv[3];
    sh_job(&spec, &ex, argv, "sleep 300 & echo $!; setsid sleep 300 & echo $!; echo ready; wait");
    spec.timeout_ms = 300;
    spec.kill_grace_ms = 200;
    uint64_t id = submit_one(c, &spec);
    assert_int_equal(wait_state(c, id), TROUPE__V1__JOB_STATE__JOB_STATE_TIMED_OUT);
    size_t n;
    uint8_t *out = read_all(c, id, 1, &n, NULL);
    int child = 0, grandchild = 0;
    assert_int_equal(sscanf((char *)out, "%d\n%d\nready", &child, &grandchild), 2);
    free(out);
    assert_true(gone(child, 10000)); // in the job's session: always killed
    bool cg = gone(grandchild, 2000);
    if (!cg) {
        fprintf(stderr,
                "timeout: no cgroup for jobs here: the setsid grandchild %d "
                "outlived its job (as documented); killing it\n",
                grandchild);
        kill(grandchild, SIGKILL);
    }
    char cgpath[64];
    snprintf(cgpath, sizeof cgpath, "/sys/fs/cgroup/unified");
    if (geteuid() == 0 && access(cgpath, W_OK) == 0) {
        assert_true(cg); // root with a writable cgroup2 (CI here): must be gone
    }
    tr_client_close(c);
}

static void
test_daemon_second_instance_refused(void **unused)
{
    (void)unused;
    step("second trouped");
    // The first one's state directory, from /proc: its lock file names it.
    char lnk[64], dir[256] = "";
    for (int fd = 0; fd < 64 && dir[0] == '\0'; fd++) {
        snprintf(lnk, sizeof lnk, "/proc/%d/fd/%d", (int)g_d.pid, fd);
        char tgt[256];
        ssize_t n = readlink(lnk, tgt, sizeof tgt - 1);
        if (n > 5) {
            tgt[n] = '\0';
            if (strcmp(tgt + n - 5, "/lock") == 0) {
                tgt[n - 5] = '\0';
                snprintf(dir, sizeof dir, "%s", tgt);
            }
        }
    }
    assert_true(dir[0] != '\0');
    char url[256];
    snprintf(url, sizeof url, "ipc:///tmp/troupe-test-daemon-%d-2.sock", (int)getpid());
    char *args[] = {"--state-dir", dir, "--listen", url, NULL};
    daemon_proc p2;
    daemon_spawn(&p2, args);
    daemon_refused(&p2);
}

// held_cap fills the paused group "held" with noop jobs until a Submit is
// refused, and returns how many were taken (the daemon's max-queued).
static int
held_cap(tr_client *c)
{
    assert_int_equal(group_ctl(c, "held", true), TR_OK);
    Troupe__V1__NoopTask noop;
    Troupe__V1__JobSpec q;
    noop_job(&q, &noop, "held");
    Troupe__V1__JobSpec *one[] = {&q};
    Troupe__V1__SubmitBatch batch = TROUPE__V1__SUBMIT_BATCH__INIT;
    batch.jobs = one;
    batch.n_jobs = 1;
    batch.job_count = 1;
    int n = 0;
    uint64_t first;
    uint32_t count;
    tr_err rv;
    while ((rv = tr_client_submit(c, &batch, &first, &count)) == TR_OK && n < 100) {
        n++;
    }
    assert_int_equal(rv, TR_ENOSPC);
    return n;
}

// recv_notify waits up to 20 s for one datagram on fd: its text.
static void
recv_notify(int fd, char *buf, size_t len)
{
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int r;
    do {
        r = poll(&pf, 1, 20000);
    } while (r < 0 && errno == EINTR);
    assert_int_equal(r, 1);
    ssize_t n = recv(fd, buf, len - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
}

// Settings: the config file under the environment under the flags, key by
// key; a bad setting in the file is exit status 2 naming file:line; and
// systemd's readiness protocol (READY=1 with MAINPID once it listens,
// STOPPING=1 when it stops) where NOTIFY_SOCKET is set.
static void
test_daemon_settings(void **unused)
{
    (void)unused;
    char dir[] = "/tmp/troupe-test-settings-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char conf[100], sock[100];
    snprintf(conf, sizeof conf, "%s/trouped.conf", dir);
    snprintf(sock, sizeof sock, "%s/notify.sock", dir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fputs("# a config file\nmax-queued = 2\nevents = none\ndurability = process\n", f);
    fclose(f);
    int nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(nfd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    assert_true(strlen(sock) < sizeof sa.sun_path);
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    assert_int_equal(bind(nfd, (struct sockaddr *)&sa, sizeof sa), 0);

    step("settings: environment over file, file over default; sd_notify");
    char e_conf[128], e_notify[128];
    snprintf(e_conf, sizeof e_conf, "TROUPED_CONFIG=%s", conf);
    snprintf(e_notify, sizeof e_notify, "NOTIFY_SOCKET=%s", sock);
    char *env1[] = {e_conf, "TROUPED_MAX_QUEUED=3", e_notify, "PATH=/usr/bin:/bin", NULL};
    daemon_proc p = {0};
    snprintf(p.url, sizeof p.url, "ipc:///tmp/troupe-test-daemon-%d-s.sock", (int)getpid());
    char *args1[] = {"--ephemeral", "--listen", p.url, NULL};
    daemon_spawn_env(&p, args1, env1, false);
    char line[512];
    assert_non_null(fgets(line, sizeof line, p.out));
    char msg[512];
    recv_notify(nfd, msg, sizeof msg);
    char want[64];
    snprintf(want, sizeof want, "READY=1\nMAINPID=%d\n", (int)p.pid);
    assert_memory_equal(msg, want, strlen(want));
    tr_client *c;
    assert_int_equal(tr_client_connect(p.url, &c), TR_OK);
    tr_msg *reply;
    assert_int_equal(tr_client_pong(c, &reply), TR_OK);
    assert_string_equal(tr_client_reply_pong(reply)->events_url, ""); // the file's
    tr_msg_free(reply);
    assert_int_equal(held_cap(c), 3); // the environment's
    assert_int_equal(group_ctl(c, "held", false), TR_OK);
    assert_int_equal(shutdown_req(c, false, 0), TR_OK);
    tr_client_close(c);
    recv_notify(nfd, msg, sizeof msg);
    assert_string_equal(msg, "STOPPING=1");
    int st;
    assert_true(wait_exit(p.pid, 30000, &st));
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    fclose(p.out);

    step("settings: a flag over the environment");
    char *args2[] = {"--ephemeral", "--listen", p.url, "--max-queued", "1", NULL};
    daemon_spawn_env(&p, args2, env1, false);
    assert_non_null(fgets(line, sizeof line, p.out));
    recv_notify(nfd, msg, sizeof msg);
    assert_int_equal(tr_client_connect(p.url, &c), TR_OK);
    assert_int_equal(held_cap(c), 1);
    assert_int_equal(group_ctl(c, "held", false), TR_OK);
    assert_int_equal(shutdown_req(c, false, 0), TR_OK);
    tr_client_close(c);
    assert_true(wait_exit(p.pid, 30000, &st));
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    fclose(p.out);

    step("settings: a bad line in the file is exit status 2, naming it");
    f = fopen(conf, "w");
    fputs("max-queued = 2\n\nmax-running = lots\n", f);
    fclose(f);
    daemon_spawn_env(&p, args1, env1, true);
    char all[2048] = "";
    size_t got = fread(all, 1, sizeof all - 1, p.out);
    all[got] = '\0';
    assert_true(wait_exit(p.pid, 20000, &st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    char wanterr[400];
    snprintf(wanterr, sizeof wanterr, "%s:3: max-running: \"lots\" is not a number", conf);
    if (strstr(all, wanterr) == NULL) {
        print_error("trouped said: %s\n", all);
    }
    assert_non_null(strstr(all, wanterr));
    assert_null(strstr(all, "TROUPED READY"));
    fclose(p.out);

    step("settings: --config of a missing file is an error");
    char *args3[] = {"--ephemeral", "--listen", p.url, "--config", "/nonexistent/t.conf", NULL};
    daemon_spawn_env(&p, args3, env1, true);
    got = fread(all, 1, sizeof all - 1, p.out);
    all[got] = '\0';
    assert_true(wait_exit(p.pid, 20000, &st));
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    assert_non_null(strstr(all, "config file /nonexistent/t.conf: No such file or directory"));
    fclose(p.out);
    close(nfd);
    unlink(sock);
    unlink(conf);
    rmdir(dir);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    start_daemon();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_daemon_ping_submit_wait),
        cmocka_unit_test(test_daemon_malformed_request),
        cmocka_unit_test(test_daemon_second_instance_refused),
        cmocka_unit_test(test_daemon_logs),
        cmocka_unit_test(test_daemon_cancel),
        cmocka_unit_test(test_daemon_pause_resume),
        cmocka_unit_test(test_daemon_events),
        cmocka_unit_test(test_daemon_shutdown),
        cmocka_unit_test(test_daemon_crash),
        cmocka_unit_test(test_daemon_tcp_token),
        cmocka_unit_test(test_daemon_group_limits),
        cmocka_unit_test(test_daemon_caps),
        cmocka_unit_test(test_daemon_timeout_kills_tree),
        cmocka_unit_test(test_daemon_settings),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    stop_daemon();
    step("nng_fini");
    nng_fini();
    alarm(0);
    return rc;
}
