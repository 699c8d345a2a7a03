// test_client.c: troupe/client.h's tr_client_follow and tr_client_watch
// against a fake daemon in this process (inproc REP contexts, each served
// by a thread, and a PUB socket the test publishes on), so that what the
// real daemon rarely does on demand happens every run: output events
// dropped (gaps), sent twice (overlaps), a final state event lost (the
// Wait ends the follow), no event socket at all (Logs long-polls), and
// the per-call token. The CLI's commands whose daemon side trouped does
// not serve yet (logs, logs -f, cancel, pause, resume, shutdown) run here
// too, the built troupe against the fake over ipc. The fake serves one
// job; nothing here sleeps: the
// producer waits for the follower's first Logs read on a condition
// variable, and held Waits and Logs wait on it too.
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "integration/child_util.h"
#include "integration/cli_util.h"

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/reqrep0/rep.h>
#include <troupe/client.h>
#include <troupe/envelope.h>

enum { JOB_ID = 42, SERVERS = 4, OUT_MAX = 1 << 20 };

// CHECK is for the fake's threads: cmocka's asserts may fail only on the
// test's own thread (they longjmp into it).
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

// The fake daemon: one job, its output, its state.
typedef struct fake {
    nng_socket f_rep, f_pub;
    char f_url[128], f_events[128];
    bool f_no_events; // Pong.events_url ""
    bool f_hold_wait; // Waits never end (until teardown): under f_mu
    pthread_t f_threads[SERVERS];
    nng_ctx f_ctx[SERVERS]; // opened before the threads start (a quick case closes soon)
    pthread_mutex_t f_mu;
    pthread_cond_t f_cv;
    // Under f_mu:
    uint8_t *f_out[3]; // streams 1, 2
    size_t f_len[3];
    bool f_final;
    unsigned f_logs_seen; // Logs requests served
    unsigned f_pub_pipes; // subscribers the PUB socket has taken on
    char f_token[64];     // the last request's token
    // The last request that was not a Ping, a Logs, a Wait or a Status.
    int f_last_case;
    uint64_t f_last_ids[8];
    size_t f_last_nids;
    char f_last_group[64];
    bool f_last_pause, f_last_imm;
    uint64_t f_last_deadline;
} fake;

static fake g_f;

static tr_msg *
reply_new(Troupe__V1__ControlReply **rep)
{
    return tr_msg_new(&troupe__v1__control_reply__descriptor, 256, (void **)rep);
}

static Troupe__V1__JobList *
job_list(tr_msg *m)
{
    Troupe__V1__JobList *jl = tr_msg_arena(m, sizeof *jl);
    troupe__v1__job_list__init(jl);
    Troupe__V1__JobInfo *ji = tr_msg_arena(m, sizeof *ji);
    troupe__v1__job_info__init(ji);
    ji->id = JOB_ID;
    ji->state = g_f.f_final ? TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED
                            : TROUPE__V1__JOB_STATE__JOB_STATE_RUNNING;
    ji->stdout_bytes = g_f.f_len[1];
    ji->stderr_bytes = g_f.f_len[2];
    jl->jobs = tr_msg_arena(m, sizeof *jl->jobs);
    jl->jobs[0] = ji;
    jl->n_jobs = 1;
    return jl;
}

// handle answers one request (f_mu held; Wait and Logs follow wait on
// f_cv).
static tr_msg *
handle(const Troupe__V1__ControlRequest *req)
{
    Troupe__V1__ControlReply *rep;
    tr_msg *m = reply_new(&rep);
    snprintf(g_f.f_token, sizeof g_f.f_token, "%s", req->token);
    switch (req->request_case) {
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_PING: {
        Troupe__V1__Pong *p = tr_msg_arena(m, sizeof *p);
        troupe__v1__pong__init(p);
        p->version = "fake";
        p->protocol = 1;
        p->events_url = g_f.f_no_events ? "" : g_f.f_events;
        rep->reply_case = TROUPE__V1__CONTROL_REPLY__REPLY_PONG;
        rep->pong = p;
        return m;
    }
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_WAIT:
        while (!g_f.f_final || g_f.f_hold_wait) {
            pthread_cond_wait(&g_f.f_cv, &g_f.f_mu);
        }
        rep->reply_case = TROUPE__V1__CONTROL_REPLY__REPLY_JOBS;
        rep->jobs = job_list(m);
        return m;
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_STATUS:
        rep->reply_case = TROUPE__V1__CONTROL_REPLY__REPLY_JOBS;
        rep->jobs = job_list(m);
        return m;
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_LOGS: {
        const Troupe__V1__Logs *l = req->logs;
        g_f.f_logs_seen++;
        pthread_cond_broadcast(&g_f.f_cv);
        if (l->stream != 1 && l->stream != 2) {
            Troupe__V1__ControlError *e = tr_msg_arena(m, sizeof *e);
            troupe__v1__control_error__init(e);
            e->code = TR_EINVAL;
            e->detail = "logs: stream must be 1 or 2";
            rep->reply_case = TROUPE__V1__CONTROL_REPLY__REPLY_ERROR;
            rep->error = e;
            return m;
        }
        while (l->follow && !g_f.f_final && l->offset >= g_f.f_len[l->stream]) {
            pthread_cond_wait(&g_f.f_cv, &g_f.f_mu);
        }
        size_t max = l->max_bytes != 0 ? l->max_bytes : 65536;
        size_t len = g_f.f_len[l->stream];
        size_t off = l->offset < len ? (size_t)l->offset : len;
        size_t n = len - off < max ? len - off : max;
        Troupe__V1__LogChunk *ch = tr_msg_arena(m, sizeof *ch);
        troupe__v1__log_chunk__init(ch);
        ch->offset = off;
        ch->data.data = tr_msg_memdup(m, g_f.f_out[l->stream] + off, n > 0 ? n : 1);
        ch->data.len = n;
        ch->eof = g_f.f_final && off + n == len;
        rep->reply_case = TROUPE__V1__CONTROL_REPLY__REPLY_LOG;
        rep->log = ch;
        return m;
    }
    default:
        g_f.f_last_case = (int)req->request_case;
        if (req->request_case == TROUPE__V1__CONTROL_REQUEST__REQUEST_CANCEL) {
            g_f.f_last_nids = req->cancel->n_ids < 8 ? req->cancel->n_ids : 8;
            memcpy(g_f.f_last_ids, req->cancel->ids, g_f.f_last_nids * sizeof(uint64_t));
        } else if (req->request_case == TROUPE__V1__CONTROL_REQUEST__REQUEST_GROUP) {
            snprintf(g_f.f_last_group, sizeof g_f.f_last_group, "%s", req->group->group);
            g_f.f_last_pause = req->group->pause;
        } else if (req->request_case == TROUPE__V1__CONTROL_REQUEST__REQUEST_SHUTDOWN) {
            g_f.f_last_imm = req->shutdown->immediate;
            g_f.f_last_deadline = req->shutdown->deadline_ms;
        }
        rep->reply_case = TROUPE__V1__CONTROL_REPLY__REPLY_ACK;
        rep->ack = tr_msg_arena(m, sizeof *rep->ack);
        troupe__v1__ack__init(rep->ack);
        return m;
    }
}

static void *
serve(void *arg)
{
    nng_ctx ctx = *(nng_ctx *)arg;
    nng_aio *aio;
    CHECK(nng_aio_alloc(&aio, NULL, NULL) == 0);
    for (;;) {
        nng_ctx_recv(ctx, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0) {
            break;
        }
        nng_msg *nm = nng_aio_get_msg(aio);
        tr_msg *in;
        CHECK(tr_msg_unpack(nng_msg_body(nm), nng_msg_len(nm), NULL, &in, NULL) == TR_OK);
        nng_msg_free(nm);
        pthread_mutex_lock(&g_f.f_mu);
        tr_msg *out = handle(tr_msg_body(in));
        pthread_mutex_unlock(&g_f.f_mu);
        tr_msg_free(in);
        size_t n = tr_msg_packed_size(out);
        CHECK(nng_msg_alloc(&nm, n) == 0);
        tr_msg_pack_to(out, nng_msg_body(nm));
        tr_msg_free(out);
        nng_aio_set_msg(aio, nm);
        nng_ctx_send(ctx, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0) {
            nng_msg_free(nng_aio_get_msg(aio));
        }
    }
    nng_aio_free(aio);
    return NULL;
}

// on_pub_pipe counts the PUB socket's pipes (an nng thread): a dial's
// return does not mean the PUB side has the pipe yet.
static void
on_pub_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    (void)ev;
    (void)arg;
    pthread_mutex_lock(&g_f.f_mu);
    g_f.f_pub_pipes++;
    pthread_cond_broadcast(&g_f.f_cv);
    pthread_mutex_unlock(&g_f.f_mu);
}

static int
fake_start(void **state)
{
    (void)state;
    static int gen;
    gen++;
    g_f = (fake){.f_mu = PTHREAD_MUTEX_INITIALIZER, .f_cv = PTHREAD_COND_INITIALIZER};
    // ipc, so that the troupe CLI (another process) reaches it too.
    snprintf(g_f.f_url, sizeof g_f.f_url, "ipc:///tmp/troupe-test-fake-%d-%d.sock", (int)getpid(),
             gen);
    snprintf(g_f.f_events, sizeof g_f.f_events, "ipc:///tmp/troupe-test-fake-%d-%d.ev",
             (int)getpid(), gen);
    for (int s = 1; s <= 2; s++) {
        g_f.f_out[s] = malloc(OUT_MAX);
    }
    assert_int_equal(nng_rep0_open(&g_f.f_rep), 0);
    assert_int_equal(nng_listen(g_f.f_rep, g_f.f_url, NULL, 0), 0);
    assert_int_equal(nng_pub0_open(&g_f.f_pub), 0);
    assert_int_equal(nng_pipe_notify(g_f.f_pub, NNG_PIPE_EV_ADD_POST, on_pub_pipe, NULL), 0);
    assert_int_equal(nng_listen(g_f.f_pub, g_f.f_events, NULL, 0), 0);
    for (int i = 0; i < SERVERS; i++) {
        assert_int_equal(nng_ctx_open(&g_f.f_ctx[i], g_f.f_rep), 0);
        assert_int_equal(pthread_create(&g_f.f_threads[i], NULL, serve, &g_f.f_ctx[i]), 0);
    }
    return 0;
}

static int
fake_stop(void **state)
{
    (void)state;
    // Release the servers held in a Wait or a Logs follow, close their
    // contexts (which ends their receives) and join them before the
    // socket closes: nng 1.5 must not see a send on a context of a socket
    // that is closing.
    pthread_mutex_lock(&g_f.f_mu);
    g_f.f_final = true;
    g_f.f_hold_wait = false;
    pthread_cond_broadcast(&g_f.f_cv);
    pthread_mutex_unlock(&g_f.f_mu);
    for (int i = 0; i < SERVERS; i++) {
        nng_ctx_close(g_f.f_ctx[i]);
    }
    for (int i = 0; i < SERVERS; i++) {
        pthread_join(g_f.f_threads[i], NULL);
    }
    nng_close(g_f.f_rep);
    nng_close(g_f.f_pub);
    for (int s = 1; s <= 2; s++) {
        free(g_f.f_out[s]);
    }
    return 0;
}

// publish sends a JobEvent on the PUB socket, framed as trouped does.
static void
publish(uint64_t seq, int state, uint32_t stream, uint64_t offset, const uint8_t *data, size_t len)
{
    Troupe__V1__JobEvent *ev;
    tr_msg *m = tr_msg_new(&troupe__v1__job_event__descriptor, len, (void **)&ev);
    ev->id = JOB_ID;
    ev->seq = seq;
    ev->state = (Troupe__V1__JobState)state;
    ev->stream = stream;
    ev->offset = offset;
    ev->data.data = len > 0 ? tr_msg_memdup(m, data, len) : NULL;
    ev->data.len = len;
    size_t n = tr_msg_packed_size(m);
    nng_msg *nm;
    CHECK(nng_msg_alloc(&nm, 8 + n) == 0);
    uint8_t *p = nng_msg_body(nm);
    for (int b = 0; b < 8; b++) {
        p[b] = (uint8_t)((uint64_t)JOB_ID >> (56 - 8 * b));
    }
    tr_msg_pack_to(m, p + 8);
    tr_msg_free(m);
    CHECK(nng_sendmsg(g_f.f_pub, nm, 0) == 0);
}

// The producer's plan.
typedef struct plan {
    unsigned p_chunks;     // chunks per stream
    unsigned p_drop_every; // drop every n-th output event (0: none)
    bool p_dup;            // publish every 5th chunk twice, and an overlap
    bool p_drop_final;     // never publish the final state event
    uint32_t p_streams;    // mask
} plan;

// chunk_byte: the k-th byte of stream s, so that order errors show.
static uint8_t
chunk_byte(uint32_t s, size_t k)
{
    return (uint8_t)(k * 7 + s * 13 + k / 251);
}

static void *
produce(void *arg)
{
    const plan *pl = arg;
    // Start once the follower reads (it subscribed before that) and, with
    // events, once the PUB side has its pipe: what is published before
    // that is lost, which the follower's catch-up and Wait cover, but the
    // case that ends on the final event needs that event delivered.
    pthread_mutex_lock(&g_f.f_mu);
    while (g_f.f_logs_seen == 0 || (!g_f.f_no_events && g_f.f_pub_pipes == 0)) {
        pthread_cond_wait(&g_f.f_cv, &g_f.f_mu);
    }
    pthread_mutex_unlock(&g_f.f_mu);
    uint64_t seq = 0;
    publish(++seq, TROUPE__V1__JOB_STATE__JOB_STATE_RUNNING, 0, 0, NULL, 0);
    for (unsigned c = 0; c < pl->p_chunks; c++) {
        for (uint32_t s = 1; s <= 2; s++) {
            if ((pl->p_streams & s) == 0) {
                continue;
            }
            size_t len = 100 + (c * 37) % 900;
            pthread_mutex_lock(&g_f.f_mu);
            size_t off = g_f.f_len[s];
            for (size_t k = 0; k < len; k++) {
                g_f.f_out[s][off + k] = chunk_byte(s, off + k);
            }
            g_f.f_len[s] += len;
            pthread_cond_broadcast(&g_f.f_cv);
            pthread_mutex_unlock(&g_f.f_mu);
            seq++;
            if (pl->p_drop_every == 0 || c % pl->p_drop_every != 1) {
                publish(seq, 0, s, off, g_f.f_out[s] + off, len);
            }
            if (pl->p_dup && c % 5 == 0) {
                publish(++seq, 0, s, off, g_f.f_out[s] + off, len); // the same again
                if (off >= 10) {
                    // An overlap: starts 10 bytes back.
                    publish(++seq, 0, s, off - 10, g_f.f_out[s] + off - 10, len + 10);
                }
            }
        }
    }
    pthread_mutex_lock(&g_f.f_mu);
    g_f.f_final = true;
    pthread_cond_broadcast(&g_f.f_cv);
    pthread_mutex_unlock(&g_f.f_mu);
    if (!pl->p_drop_final) {
        publish(++seq, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED, 0, 0, NULL, 0);
    }
    return NULL;
}

typedef struct got {
    uint8_t *g_b[3];
    size_t g_n[3];
} got;

static void
on_out(void *arg, uint32_t stream, uint64_t offset, const uint8_t *data, size_t len)
{
    got *g = arg;
    assert_true(stream == 1 || stream == 2);
    assert_int_equal(offset, g->g_n[stream]); // in order, once
    assert_true(len > 0);
    assert_true(g->g_n[stream] + len <= OUT_MAX);
    memcpy(g->g_b[stream] + g->g_n[stream], data, len);
    g->g_n[stream] += len;
}

static void
follow_case(const plan *pl)
{
    tr_client *c;
    assert_int_equal(tr_client_connect(g_f.f_url, &c), TR_OK);
    tr_client_set_token(c, "tok-1");
    pthread_t prod;
    assert_int_equal(pthread_create(&prod, NULL, produce, (void *)pl), 0);
    got g = {0};
    for (int s = 1; s <= 2; s++) {
        g.g_b[s] = malloc(OUT_MAX);
    }
    tr_msg *final_reply = NULL;
    tr_err rv = tr_client_follow(c, JOB_ID, pl->p_streams, on_out, &g, &final_reply);
    if (rv != TR_OK) {
        fprintf(stderr, "follow: %s: %s\n", tr_err_name(rv), tr_client_error());
    }
    assert_int_equal(rv, TR_OK);
    pthread_join(prod, NULL);
    const Troupe__V1__JobList *jl = tr_client_reply_jobs(final_reply);
    assert_non_null(jl);
    assert_int_equal(jl->jobs[0]->state, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    tr_msg_free(final_reply);
    for (uint32_t s = 1; s <= 2; s++) {
        size_t want = (pl->p_streams & s) ? g_f.f_len[s] : 0;
        assert_int_equal(g.g_n[s], want);
        assert_memory_equal(g.g_b[s], g_f.f_out[s], want);
        free(g.g_b[s]);
    }
    pthread_mutex_lock(&g_f.f_mu);
    assert_string_equal(g_f.f_token, "tok-1");
    pthread_mutex_unlock(&g_f.f_mu);
    tr_client_close(c);
}

static void
test_follow_events_in_order(void **state)
{
    (void)state;
    plan pl = {.p_chunks = 200, .p_streams = TR_CLIENT_STDOUT};
    follow_case(&pl);
}

static void
test_follow_gaps_and_overlaps(void **state)
{
    (void)state;
    plan pl = {.p_chunks = 300,
               .p_drop_every = 3,
               .p_dup = true,
               .p_streams = TR_CLIENT_STDOUT | TR_CLIENT_STDERR};
    follow_case(&pl);
}

static void
test_follow_final_event_lost(void **state)
{
    (void)state;
    // The Wait kept outstanding ends the follow.
    plan pl = {
        .p_chunks = 50, .p_drop_every = 4, .p_drop_final = true, .p_streams = TR_CLIENT_STDERR};
    follow_case(&pl);
}

static void
test_follow_ends_on_final_event(void **state)
{
    (void)state;
    // The Wait never answers: the final state event must end the follow.
    // Few events, fewer than nng's PUB queue per pipe holds (16), so that
    // the PUB cannot drop the final one.
    g_f.f_hold_wait = true;
    plan pl = {.p_chunks = 5, .p_streams = TR_CLIENT_STDOUT};
    follow_case(&pl);
}

static void
test_follow_without_events(void **state)
{
    (void)state;
    g_f.f_no_events = true;
    plan pl = {.p_chunks = 100, .p_streams = TR_CLIENT_STDOUT | TR_CLIENT_STDERR};
    follow_case(&pl);
}

static void
test_follow_bad_stream_error(void **state)
{
    (void)state;
    tr_client *c;
    assert_int_equal(tr_client_connect(g_f.f_url, &c), TR_OK);
    tr_msg *reply = (tr_msg *)1;
    assert_int_equal(tr_client_logs(c, JOB_ID, 3, 0, 0, false, &reply), TR_EINVAL);
    assert_null(reply);
    assert_non_null(strstr(tr_client_error(), "stream"));
    tr_client_close(c);
}

static unsigned g_events;

static void
count_event(void *arg, const Troupe__V1__JobEvent *ev)
{
    (void)arg;
    assert_int_equal(ev->id, JOB_ID);
    g_events++;
}

static void
test_watch_until_final(void **state)
{
    (void)state;
    tr_client *c;
    assert_int_equal(tr_client_connect(g_f.f_url, &c), TR_OK);
    plan pl = {.p_chunks = 20, .p_drop_final = true, .p_streams = TR_CLIENT_STDOUT};
    // The producer waits for a Logs read: give it one.
    tr_msg *reply;
    assert_int_equal(tr_client_logs(c, JOB_ID, 1, 0, 0, false, &reply), TR_OK);
    tr_msg_free(reply);
    pthread_t prod;
    assert_int_equal(pthread_create(&prod, NULL, produce, &pl), 0);
    uint64_t id = JOB_ID;
    g_events = 0;
    assert_int_equal(tr_client_watch(c, &id, 1, count_event, NULL), TR_OK);
    pthread_join(prod, NULL);
    // Events may be dropped; none for another job came through.
    assert_true(g_events <= 21);
    g_f.f_no_events = true;
    assert_int_equal(tr_client_watch(c, &id, 1, count_event, NULL), TR_ENOTSUP);
    tr_client_close(c);
}

// ---------------------------------------------------------------------------
// The troupe CLI on the fake.

// produce_all writes the whole output now (no follower to wait for).
static void
produce_all(const plan *pl)
{
    pthread_mutex_lock(&g_f.f_mu);
    g_f.f_logs_seen = 1;
    g_f.f_pub_pipes = 1; // nobody subscribes: publish to no one
    pthread_mutex_unlock(&g_f.f_mu);
    produce((void *)pl);
}

static void
assert_out(const cli_out *o, uint32_t stream)
{
    pthread_mutex_lock(&g_f.f_mu);
    size_t n = g_f.f_len[stream];
    pthread_mutex_unlock(&g_f.f_mu);
    assert_true(n > 0);
    assert_int_equal(o->outlen, n);
    assert_memory_equal(o->out, g_f.f_out[stream], n);
}

static void
test_cli_logs_on_fake(void **state)
{
    (void)state;
    plan pl = {.p_chunks = 40, .p_streams = TR_CLIENT_STDOUT | TR_CLIENT_STDERR};
    produce_all(&pl);
    cli_out o;
    step("logs");
    cli_argv(g_f.f_url, (char *[]){"logs", "42", NULL}, 30000, &o);
    assert_int_equal(o.rc, 0);
    assert_out(&o, 1);
    cli_free(&o);
    step("logs --stderr");
    cli_argv(g_f.f_url, (char *[]){"logs", "--stderr", "42", NULL}, 30000, &o);
    assert_int_equal(o.rc, 0);
    assert_out(&o, 2);
    cli_free(&o);
    step("logs --json");
    cli_argv(g_f.f_url, (char *[]){"--json", "logs", "42", NULL}, 30000, &o);
    assert_int_equal(o.rc, 0);
    json_t *j = json_loadb(o.out, o.outlen, 0, NULL);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "eof")));
    assert_int_equal(json_integer_value(json_object_get(j, "stream")), 1);
    assert_int_equal(json_string_length(json_object_get(j, "data")), (g_f.f_len[1] + 2) / 3 * 4);
    json_decref(j);
    cli_free(&o);
}

// follow_cli runs `troupe logs -f 42 [--stderr]` while pl is produced.
static void
follow_cli(const plan *pl, uint32_t stream)
{
    pthread_t prod;
    assert_int_equal(pthread_create(&prod, NULL, produce, (void *)pl), 0);
    cli_out o;
    char *args[] = {"logs", "-f", "42", stream == 2 ? "--stderr" : NULL, NULL};
    cli_argv(g_f.f_url, args, 60000, &o);
    pthread_join(prod, NULL);
    if (o.rc != 0) {
        fprintf(stderr, "logs -f: %s", o.err);
    }
    assert_int_equal(o.rc, 0);
    assert_out(&o, stream);
    cli_free(&o);
}

static void
test_cli_logs_follow_on_fake(void **state)
{
    (void)state;
    step("logs -f, events with gaps and overlaps");
    plan pl = {.p_chunks = 300, .p_drop_every = 3, .p_dup = true, .p_streams = TR_CLIENT_STDOUT};
    follow_cli(&pl, 1);
}

static void
test_cli_logs_follow_no_events_on_fake(void **state)
{
    (void)state;
    step("logs -f --stderr, no event socket");
    g_f.f_no_events = true;
    plan pl = {.p_chunks = 100, .p_streams = TR_CLIENT_STDERR};
    follow_cli(&pl, 2);
}

// fake_cli runs troupe ARGS... on the fake and checks it exits 0.
static void
fake_cli(char *const *args)
{
    cli_out o;
    cli_argv(g_f.f_url, args, 30000, &o);
    if (o.rc != 0) {
        fprintf(stderr, "troupe %s: %d: %s", args[0], o.rc, o.err);
    }
    assert_int_equal(o.rc, 0);
    cli_free(&o);
}

static void
test_cli_control_on_fake(void **state)
{
    (void)state;
    step("cancel");
    fake_cli((char *[]){"cancel", "42", "43", NULL});
    pthread_mutex_lock(&g_f.f_mu); // the fake's record, written on nng's threads
    assert_int_equal(g_f.f_last_case, TROUPE__V1__CONTROL_REQUEST__REQUEST_CANCEL);
    assert_int_equal(g_f.f_last_nids, 2);
    assert_int_equal(g_f.f_last_ids[0], 42);
    assert_int_equal(g_f.f_last_ids[1], 43);
    step("cancel --wait");
    g_f.f_final = true;
    pthread_mutex_unlock(&g_f.f_mu);
    cli_out o;
    cli_argv(g_f.f_url, (char *[]){"cancel", "--wait", "42", NULL}, 30000, &o);
    assert_int_equal(o.rc, 0);
    assert_non_null(strstr(o.out, "STATE"));
    cli_free(&o);
    step("pause, resume");
    fake_cli((char *[]){"pause", "grp", NULL});
    pthread_mutex_lock(&g_f.f_mu); // the fake's record, written on nng's threads
    assert_int_equal(g_f.f_last_case, TROUPE__V1__CONTROL_REQUEST__REQUEST_GROUP);
    assert_string_equal(g_f.f_last_group, "grp");
    assert_true(g_f.f_last_pause);
    pthread_mutex_unlock(&g_f.f_mu);
    fake_cli((char *[]){"resume", "", NULL});
    pthread_mutex_lock(&g_f.f_mu); // the fake's record, written on nng's threads
    assert_string_equal(g_f.f_last_group, "");
    assert_false(g_f.f_last_pause);
    pthread_mutex_unlock(&g_f.f_mu);
    step("shutdown");
    fake_cli((char *[]){"shutdown", "--deadline", "2s", NULL});
    pthread_mutex_lock(&g_f.f_mu); // the fake's record, written on nng's threads
    assert_int_equal(g_f.f_last_case, TROUPE__V1__CONTROL_REQUEST__REQUEST_SHUTDOWN);
    assert_false(g_f.f_last_imm);
    assert_int_equal(g_f.f_last_deadline, 2000);
    pthread_mutex_unlock(&g_f.f_mu);
    cli_argv(g_f.f_url, (char *[]){"--json", "shutdown", "--immediate", NULL}, 30000, &o);
    assert_int_equal(o.rc, 0);
    assert_string_equal(o.out, "{}\n");
    pthread_mutex_lock(&g_f.f_mu); // the fake's record, written on nng's threads
    assert_true(g_f.f_last_imm);
    pthread_mutex_unlock(&g_f.f_mu);
    cli_free(&o);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_follow_events_in_order, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_follow_gaps_and_overlaps, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_follow_final_event_lost, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_follow_ends_on_final_event, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_follow_without_events, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_follow_bad_stream_error, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_watch_until_final, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_cli_logs_on_fake, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_cli_logs_follow_on_fake, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_cli_logs_follow_no_events_on_fake, fake_start,
                                        fake_stop),
        cmocka_unit_test_setup_teardown(test_cli_control_on_fake, fake_start, fake_stop),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nng_fini();
    alarm(0);
    return rc;
}
