// Design notes.
//
// One REQ0 socket per handle, with NNG_OPT_REQ_RESENDTIME set to 0 before
// any context opens (contexts copy the socket's resend time), and one
// context per call, so calls from several threads run at once and a late
// reply to a call that timed out is discarded by nng with its context.
// Requests and replies are envelopes (troupe/envelope.h) around
// ControlRequest and ControlReply; the reply is decoded with
// tr_msg_unpack's limits, since a daemon is a peer like any other.
//
// Follow and watch wait on several things at once (the PUB socket's next
// event, an outstanding Wait, Logs long-polls) without a timer: each is a
// source with one aio and at most one operation in flight, whose callback
// (an nng thread) only marks it done under the mux's lock and signals the
// condition variable; the calling thread sleeps on it, handles what is
// done and starts the next operation itself. So the callbacks never block
// or decode, a slow on_output callback slows only its own thread, and
// what piles up meanwhile is bounded by the SUB socket's queue: past it
// nng drops events, which the follower sees as a gap in offsets and reads
// again with Logs. Teardown sets the mux's stopping flag (a callback then
// no longer turns a finished send into a receive) and nng_aio_stop's each
// source (nng 1.5 refuses to start an operation on a stopped aio).
#define _GNU_SOURCE
#include <troupe/client.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <troupe/envelope.h>
#include <troupe/node.h>

struct tr_client {
    nng_socket c_sock;
    uint32_t c_timeout_ms; // written before calls run, then read only
    char *c_token;         // malloc'd or NULL; as c_timeout_ms
};

static _Thread_local char t_err[512];

static void set_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
set_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_err, sizeof t_err, fmt, ap);
    va_end(ap);
}

const char *
tr_client_error(void)
{
    return t_err;
}

// tls_dial dials a tls+tcp URL: the daemon's certificate must verify
// against $TROUPE_TLS_CA (a PEM file) under the name
// $TROUPE_TLS_SERVER_NAME, else the URL's host. An nng error, with
// t_err set.
static int
tls_dial(nng_socket sock, const char *url, int flags)
{
    const char *ca = getenv("TROUPE_TLS_CA");
    if (ca == NULL || ca[0] == '\0') {
        set_err("dial %s: tls+tcp needs the daemon's CA certificate: set TROUPE_TLS_CA "
                "to a PEM file",
                url);
        return NNG_EINVAL;
    }
    char host[256];
    const char *name = getenv("TROUPE_TLS_SERVER_NAME");
    if (name == NULL || name[0] == '\0') {
        const char *h = url + 10, *colon = strrchr(h, ':');
        size_t n = colon != NULL ? (size_t)(colon - h) : strlen(h);
        if (n > 1 && h[0] == '[' && h[n - 1] == ']') { // [::1]
            h++;
            n -= 2;
        }
        snprintf(host, sizeof host, "%.*s", (int)n, h);
        name = host;
    }
    nng_dialer d;
    nng_tls_config *cfg = NULL;
    int rv = nng_dialer_create(&d, sock, url);
    if (rv == 0 && (rv = nng_tls_config_alloc(&cfg, NNG_TLS_MODE_CLIENT)) == 0 &&
        (rv = nng_tls_config_ca_file(cfg, ca)) == 0 &&
        (rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED)) == 0 &&
        (rv = nng_tls_config_server_name(cfg, name)) == 0) {
        rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg);
    }
    if (cfg != NULL) {
        nng_tls_config_free(cfg); // the dialer holds its own reference
    }
    if (rv == 0) {
        rv = nng_dialer_start(d, flags);
    }
    if (rv != 0) {
        set_err("dial %s (CA %s, name %s): %s", url, ca, name, nng_strerror(rv));
    }
    return rv;
}

// client_open opens the socket and dials url (flags: 0 waits for the
// dial, NNG_FLAG_NONBLOCK does not).
static tr_err
client_open(const char *url, int flags, tr_client **out)
{
    t_err[0] = '\0';
    tr_client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return TR_ENOMEM;
    }
    c->c_timeout_ms = TR_CLIENT_TIMEOUT_MS;
    int rv = nng_req0_open(&c->c_sock);
    if (rv == 0) {
        rv = nng_socket_set_ms(c->c_sock, NNG_OPT_REQ_RESENDTIME, 0);
    }
    if (rv == 0 && strncmp(url, "tls+tcp://", 10) == 0) {
        if ((rv = tls_dial(c->c_sock, url, flags)) != 0) {
            nng_close(c->c_sock);
        }
    } else if (rv == 0) {
        rv = nng_dial(c->c_sock, url, NULL, flags);
        if (rv != 0) {
            set_err("dial %s: %s", url, nng_strerror(rv));
            nng_close(c->c_sock);
        }
    }
    if (rv != 0) {
        free(c);
        return tr_err_from_nng(rv);
    }
    *out = c;
    return TR_OK;
}

tr_err
tr_client_connect(const char *url, tr_client **out)
{
    // Non-blocking dial: the daemon may start after us.
    return client_open(url, NNG_FLAG_NONBLOCK, out);
}

tr_err
tr_client_connect_now(const char *url, tr_client **out)
{
    return client_open(url, 0, out);
}

void
tr_client_set_token(tr_client *c, const char *token)
{
    free(c->c_token);
    c->c_token = token != NULL && token[0] != '\0' ? strdup(token) : NULL;
}

void
tr_client_close(tr_client *c)
{
    if (c != NULL) {
        nng_close(c->c_sock);
        free(c->c_token);
        free(c);
    }
}

void
tr_client_set_timeout(tr_client *c, uint32_t ms)
{
    c->c_timeout_ms = ms != 0 ? ms : TR_CLIENT_TIMEOUT_MS;
}

// exchange sends msg on a new context and receives its reply (one aio,
// waited on: this thread blocks, no callback).
static tr_err
exchange(tr_client *c, nng_msg *msg, uint32_t timeout_ms, nng_msg **reply)
{
    nng_ctx ctx;
    nng_aio *aio = NULL;
    int rv = nng_ctx_open(&ctx, c->c_sock);
    if (rv != 0) {
        nng_msg_free(msg);
        set_err("nng_ctx_open: %s", nng_strerror(rv));
        return tr_err_from_nng(rv);
    }
    if ((rv = nng_aio_alloc(&aio, NULL, NULL)) != 0) {
        nng_msg_free(msg);
        nng_ctx_close(ctx);
        return tr_err_from_nng(rv);
    }
    nng_aio_set_timeout(aio, (nng_duration)timeout_ms);
    nng_aio_set_msg(aio, msg);
    nng_ctx_send(ctx, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0) {
        nng_msg_free(nng_aio_get_msg(aio));
        set_err("send: %s", nng_strerror(rv));
    } else {
        nng_aio_set_timeout(aio, (nng_duration)timeout_ms);
        nng_ctx_recv(ctx, aio);
        nng_aio_wait(aio);
        if ((rv = nng_aio_result(aio)) != 0) {
            set_err("no reply within %u ms: %s", timeout_ms, nng_strerror(rv));
        } else {
            *reply = nng_aio_get_msg(aio);
        }
    }
    nng_aio_free(aio);
    nng_ctx_close(ctx);
    return tr_err_from_nng(rv);
}

// pack_request packs req (taking it) into a new nng message.
static tr_err
pack_request(tr_msg *req, nng_msg **out)
{
    size_t n = tr_msg_packed_size(req);
    if (n > TR_CLIENT_MAX_REQUEST) {
        tr_msg_free(req);
        set_err("request of %zu bytes is over the daemon's limit of %zu", n, TR_CLIENT_MAX_REQUEST);
        return TR_ETOOBIG;
    }
    nng_msg *nm;
    if (nng_msg_alloc(&nm, n) != 0) {
        tr_msg_free(req);
        return TR_ENOMEM;
    }
    tr_msg_pack_to(req, nng_msg_body(nm));
    tr_msg_free(req);
    *out = nm;
    return TR_OK;
}

// decode_reply decodes rm (taking it) into a ControlReply message: TR_OK
// and *reply, or the daemon's ControlError code, or TR_EINVAL and friends
// for a reply that is not one.
static tr_err
decode_reply(nng_msg *rm, tr_msg **reply)
{
    tr_msg *in = NULL;
    tr_unpack_info info;
    tr_err rv = tr_msg_unpack(nng_msg_body(rm), nng_msg_len(rm), NULL, &in, &info);
    nng_msg_free(rm);
    if (rv != TR_OK) {
        set_err("reply does not decode (%s)", tr_strerror(rv));
        return rv;
    }
    if (!tr_msg_is(in, &troupe__v1__control_reply__descriptor)) {
        set_err("reply is a %s, not a ControlReply", tr_msg_descriptor(in)->name);
        tr_msg_free(in);
        return TR_EINVAL;
    }
    const Troupe__V1__ControlReply *rep = tr_msg_body(in);
    if (rep->reply_case == TROUPE__V1__CONTROL_REPLY__REPLY_ERROR) {
        const Troupe__V1__ControlError *e = rep->error;
        set_err("%s", e->detail);
        rv = e->code > 0 && e->code < TR__ERR_COUNT ? (tr_err)e->code : TR_EIO;
        tr_msg_free(in);
        return rv;
    }
    *reply = in;
    return TR_OK;
}

tr_err
tr_client_call(tr_client *c, tr_msg *req, uint32_t timeout_ms, tr_msg **reply)
{
    t_err[0] = '\0';
    *reply = NULL;
    nng_msg *nm;
    tr_err rv = pack_request(req, &nm);
    if (rv != TR_OK) {
        return rv;
    }
    nng_msg *rm = NULL;
    rv = exchange(c, nm, timeout_ms != 0 ? timeout_ms : c->c_timeout_ms, &rm);
    if (rv != TR_OK) {
        return rv;
    }
    return decode_reply(rm, reply);
}

// reply_of returns reply's ControlReply when its reply is of case rc,
// else NULL.
static const Troupe__V1__ControlReply *
reply_of(const tr_msg *reply, Troupe__V1__ControlReply__ReplyCase rc)
{
    const Troupe__V1__ControlReply *rep = reply != NULL ? tr_msg_body(reply) : NULL;
    return rep != NULL && rep->reply_case == rc ? rep : NULL;
}

// expect passes a call's result on, unless the call succeeded with a reply
// of another case than rc: then it frees the reply and fails (TR_EINVAL,
// "what").
static tr_err
expect(tr_err rv, tr_msg **reply, Troupe__V1__ControlReply__ReplyCase rc, const char *what)
{
    if (rv == TR_OK && reply_of(*reply, rc) == NULL) {
        tr_msg_free(*reply);
        *reply = NULL;
        set_err("%s", what);
        return TR_EINVAL;
    }
    return rv;
}

static tr_msg *
request_new(const tr_client *c, Troupe__V1__ControlRequest **req)
{
    tr_msg *m = tr_msg_new(&troupe__v1__control_request__descriptor, 128, (void **)req);
    (*req)->version = TROUPE__V1__CONTROL_VERSION__CONTROL_VERSION_1;
    if (c->c_token != NULL) {
        (*req)->token = c->c_token; // only packed, while c lives
    }
    return m;
}

tr_err
tr_client_pong(tr_client *c, tr_msg **reply)
{
    Troupe__V1__ControlRequest *req;
    tr_msg *m = request_new(c, &req);
    Troupe__V1__Ping *p = tr_msg_arena(m, sizeof *p);
    troupe__v1__ping__init(p);
    req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_PING;
    req->ping = p;
    return expect(tr_client_call(c, m, 0, reply), reply, TROUPE__V1__CONTROL_REPLY__REPLY_PONG,
                  "ping: the reply is not a Pong");
}

const Troupe__V1__Pong *
tr_client_reply_pong(const tr_msg *reply)
{
    const Troupe__V1__ControlReply *rep = reply_of(reply, TROUPE__V1__CONTROL_REPLY__REPLY_PONG);
    return rep != NULL ? rep->pong : NULL;
}

tr_err
tr_client_ping(tr_client *c, char *ver, size_t verlen)
{
    tr_msg *reply;
    tr_err rv = tr_client_pong(c, &reply);
    if (rv != TR_OK) {
        return rv;
    }
    if (verlen > 0) {
        snprintf(ver, verlen, "%s", tr_client_reply_pong(reply)->version);
    }
    tr_msg_free(reply);
    return TR_OK;
}

tr_err
tr_client_submit(tr_client *c, const Troupe__V1__SubmitBatch *batch, uint64_t *first_id,
                 uint32_t *count)
{
    uint8_t rnd[16];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        set_err("getrandom failed");
        return TR_EIO;
    }
    Troupe__V1__ControlRequest *req;
    tr_msg *m = request_new(c, &req);
    char *id = tr_msg_arena(m, 33);
    for (size_t i = 0; i < sizeof rnd; i++) {
        snprintf(id + 2 * i, 3, "%02x", rnd[i]);
    }
    req->request_id = id;
    Troupe__V1__Submit *s = tr_msg_arena(m, sizeof *s);
    troupe__v1__submit__init(s);
    // A shallow copy, so that job_count can be filled in: the jobs and
    // groups stay the caller's. This message is only packed and freed, and
    // freeing an actor message frees its arena only, so pointing outside
    // it is safe here.
    Troupe__V1__SubmitBatch *b = tr_msg_memdup(m, batch, sizeof *batch);
    if (b->job_count == 0) {
        b->job_count = (uint32_t)b->n_jobs;
    }
    s->batch = b;
    req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_SUBMIT;
    req->submit = s;
    tr_msg *reply;
    tr_err rv =
        expect(tr_client_call(c, m, 0, &reply), &reply, TROUPE__V1__CONTROL_REPLY__REPLY_SUBMITTED,
               "submit: the reply is not Submitted");
    if (rv != TR_OK) {
        return rv;
    }
    const Troupe__V1__ControlReply *rep = tr_msg_body(reply);
    *first_id = rep->submitted->first_id;
    *count = rep->submitted->count;
    tr_msg_free(reply);
    return TR_OK;
}

const Troupe__V1__JobList *
tr_client_reply_jobs(const tr_msg *reply)
{
    const Troupe__V1__ControlReply *rep = reply_of(reply, TROUPE__V1__CONTROL_REPLY__REPLY_JOBS);
    return rep != NULL ? rep->jobs : NULL;
}

// ids_request makes a Status or (wait) a WaitJobs over ids.
static tr_msg *
ids_request(const tr_client *c, const uint64_t *ids, size_t n, uint64_t wait_ms, bool wait)
{
    Troupe__V1__ControlRequest *req;
    tr_msg *m = request_new(c, &req);
    uint64_t *copy = tr_msg_memdup(m, ids, n * sizeof *ids);
    if (wait) {
        Troupe__V1__WaitJobs *w = tr_msg_arena(m, sizeof *w);
        troupe__v1__wait_jobs__init(w);
        w->ids = copy;
        w->n_ids = n;
        w->timeout_ms = wait_ms;
        req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_WAIT;
        req->wait = w;
    } else {
        Troupe__V1__StatusJobs *st = tr_msg_arena(m, sizeof *st);
        troupe__v1__status_jobs__init(st);
        st->ids = copy;
        st->n_ids = n;
        req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_STATUS;
        req->status = st;
    }
    return m;
}

// expect_jobs checks that a call's reply holds a JobList.
static tr_err
expect_jobs(tr_err rv, tr_msg **reply)
{
    return expect(rv, reply, TROUPE__V1__CONTROL_REPLY__REPLY_JOBS, "the reply holds no job list");
}

// ids_call sends a Status or WaitJobs over ids and checks the reply holds
// a JobList.
static tr_err
ids_call(tr_client *c, const uint64_t *ids, size_t n, uint64_t wait_ms, bool wait,
         uint32_t timeout_ms, tr_msg **reply)
{
    tr_msg *m = ids_request(c, ids, n, wait_ms, wait);
    return expect_jobs(tr_client_call(c, m, timeout_ms, reply), reply);
}

tr_err
tr_client_status(tr_client *c, const uint64_t *ids, size_t n, tr_msg **reply)
{
    return ids_call(c, ids, n, 0, false, 0, reply);
}

// The daemon holds a WaitJobs for at most this long (its TRD_WAIT_MAX_MS);
// the client asks for no more per request, and asks again.
#define WAIT_SLICE_MS 30000u

tr_err
tr_client_wait(tr_client *c, const uint64_t *ids, size_t n, uint64_t timeout_ms, tr_msg **reply,
               bool *timed_out)
{
    uint64_t left = timeout_ms;
    for (;;) {
        uint64_t slice = (timeout_ms == 0 || left > WAIT_SLICE_MS) ? WAIT_SLICE_MS : left;
        tr_err rv = ids_call(c, ids, n, slice, true, c->c_timeout_ms + (uint32_t)slice, reply);
        if (rv != TR_OK) {
            return rv;
        }
        const Troupe__V1__ControlReply *rep = tr_msg_body(*reply);
        if (!rep->timed_out || (timeout_ms != 0 && left <= slice)) {
            if (timed_out != NULL) {
                *timed_out = rep->timed_out;
            }
            return TR_OK;
        }
        if (timeout_ms != 0) {
            left -= slice;
        }
        tr_msg_free(*reply);
        *reply = NULL;
    }
}

// ---------------------------------------------------------------------------
// Cancel, List, Logs, Group, Shutdown.

// ack_call sends m and checks that the reply is an Ack.
static tr_err
ack_call(tr_client *c, tr_msg *m, const char *what)
{
    tr_msg *reply;
    char why[64];
    snprintf(why, sizeof why, "%s: the reply is not an Ack", what);
    tr_err rv =
        expect(tr_client_call(c, m, 0, &reply), &reply, TROUPE__V1__CONTROL_REPLY__REPLY_ACK, why);
    if (rv == TR_OK) {
        tr_msg_free(reply);
    }
    return rv;
}

tr_err
tr_client_cancel(tr_client *c, const uint64_t *ids, size_t n)
{
    Troupe__V1__ControlRequest *req;
    tr_msg *m = request_new(c, &req);
    Troupe__V1__CancelJobs *cj = tr_msg_arena(m, sizeof *cj);
    troupe__v1__cancel_jobs__init(cj);
    cj->ids = tr_msg_memdup(m, ids, n * sizeof *ids);
    cj->n_ids = n;
    req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_CANCEL;
    req->cancel = cj;
    return ack_call(c, m, "cancel");
}

tr_err
tr_client_list(tr_client *c, const Troupe__V1__ListJobs *q, tr_msg **reply)
{
    Troupe__V1__ControlRequest *req;
    tr_msg *m = request_new(c, &req);
    Troupe__V1__ListJobs *l = tr_msg_arena(m, sizeof *l);
    if (q != NULL) {
        // Shallow: the strings and states stay the caller's, as in submit.
        *l = *q;
    } else {
        troupe__v1__list_jobs__init(l);
    }
    req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_LIST;
    req->list = l;
    return expect_jobs(tr_client_call(c, m, 0, reply), reply);
}

// The daemon holds a Logs follow for at most this long.
#define LOGS_SLICE_MS 30000u

static tr_msg *
logs_request(const tr_client *c, uint64_t id, uint32_t stream, uint64_t offset, uint32_t max_bytes,
             bool follow)
{
    Troupe__V1__ControlRequest *req;
    tr_msg *m = request_new(c, &req);
    Troupe__V1__Logs *l = tr_msg_arena(m, sizeof *l);
    troupe__v1__logs__init(l);
    l->id = id;
    l->stream = stream;
    l->offset = offset;
    l->max_bytes = max_bytes;
    l->follow = follow;
    req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_LOGS;
    req->logs = l;
    return m;
}

const Troupe__V1__LogChunk *
tr_client_reply_log(const tr_msg *reply)
{
    const Troupe__V1__ControlReply *rep = reply_of(reply, TROUPE__V1__CONTROL_REPLY__REPLY_LOG);
    return rep != NULL ? rep->log : NULL;
}

// expect_log checks that a call's reply holds a LogChunk.
static tr_err
expect_log(tr_err rv, tr_msg **reply)
{
    return expect(rv, reply, TROUPE__V1__CONTROL_REPLY__REPLY_LOG,
                  "logs: the reply holds no log chunk");
}

tr_err
tr_client_logs(tr_client *c, uint64_t id, uint32_t stream, uint64_t offset, uint32_t max_bytes,
               bool follow, tr_msg **reply)
{
    tr_msg *m = logs_request(c, id, stream, offset, max_bytes, follow);
    uint32_t t = c->c_timeout_ms + (follow ? LOGS_SLICE_MS : 0);
    return expect_log(tr_client_call(c, m, t, reply), reply);
}

tr_err
tr_client_group(tr_client *c, const char *group, bool pause)
{
    Troupe__V1__ControlRequest *req;
    tr_msg *m = request_new(c, &req);
    Troupe__V1__GroupControl *g = tr_msg_arena(m, sizeof *g);
    troupe__v1__group_control__init(g);
    g->group = tr_msg_strdup(m, group != NULL ? group : "");
    g->pause = pause;
    req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_GROUP;
    req->group = g;
    return ack_call(c, m, pause ? "pause" : "resume");
}

tr_err
tr_client_shutdown(tr_client *c, bool immediate, uint64_t deadline_ms)
{
    Troupe__V1__ControlRequest *req;
    tr_msg *m = request_new(c, &req);
    Troupe__V1__ShutdownDaemon *sd = tr_msg_arena(m, sizeof *sd);
    troupe__v1__shutdown_daemon__init(sd);
    sd->immediate = immediate;
    sd->deadline_ms = deadline_ms;
    req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_SHUTDOWN;
    req->shutdown = sd;
    return ack_call(c, m, "shutdown");
}

// ---------------------------------------------------------------------------
// Sources and the mux (see the design notes).

enum { SRC_IDLE = 0, SRC_SEND, SRC_RECV, SRC_DONE };

typedef struct mux {
    pthread_mutex_t m_mu;
    pthread_cond_t m_cv;
    bool m_stopping; // under m_mu
} mux;

typedef struct src {
    mux *s_mux;
    nng_aio *s_aio;
    nng_ctx s_ctx;     // a REQ exchange's (s_sub false)
    nng_socket s_sock; // a SUB receive's (s_sub true)
    bool s_sub;
    bool s_open;    // s_aio (and s_ctx) allocated
    int s_state;    // under m_mu once an operation started
    int s_rv;       // when SRC_DONE: nng's result
    nng_msg *s_msg; // when SRC_DONE and s_rv == 0: the reply or event
} src;

// src_cb runs on an nng thread: turns a sent request into a receive, or
// marks the source done. Never blocks.
static void
src_cb(void *arg)
{
    src *s = arg;
    mux *m = s->s_mux;
    int rv = nng_aio_result(s->s_aio);
    pthread_mutex_lock(&m->m_mu);
    if (s->s_state == SRC_SEND) {
        if (rv == 0 && !m->m_stopping) {
            s->s_state = SRC_RECV;
            pthread_mutex_unlock(&m->m_mu);
            nng_ctx_recv(s->s_ctx, s->s_aio);
            return;
        }
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(s->s_aio));
        }
        nng_aio_set_msg(s->s_aio, NULL);
        s->s_rv = rv != 0 ? rv : NNG_ECANCELED;
        s->s_msg = NULL;
    } else {
        s->s_rv = rv;
        s->s_msg = rv == 0 ? nng_aio_get_msg(s->s_aio) : NULL;
        nng_aio_set_msg(s->s_aio, NULL);
    }
    s->s_state = SRC_DONE;
    pthread_cond_broadcast(&m->m_cv);
    pthread_mutex_unlock(&m->m_mu);
}

static tr_err
src_open(src *s, mux *m, tr_client *c)
{
    *s = (src){.s_mux = m};
    int rv = nng_aio_alloc(&s->s_aio, src_cb, s);
    if (rv == 0 && c != NULL) {
        if ((rv = nng_ctx_open(&s->s_ctx, c->c_sock)) != 0) {
            nng_aio_free(s->s_aio);
        }
    }
    if (rv != 0) {
        set_err("aio: %s", nng_strerror(rv));
        return tr_err_from_nng(rv);
    }
    s->s_open = true;
    s->s_sub = c == NULL;
    return TR_OK;
}

// src_start sends req (taking it) on s's context, its reply awaited up to
// timeout_ms. The caller's thread, while s is idle.
static tr_err
src_start(src *s, tr_msg *req, uint32_t timeout_ms)
{
    nng_msg *nm;
    tr_err rv = pack_request(req, &nm);
    if (rv != TR_OK) {
        return rv;
    }
    s->s_state = SRC_SEND; // before the operation starts: no callback yet
    nng_aio_set_timeout(s->s_aio, (nng_duration)timeout_ms);
    nng_aio_set_msg(s->s_aio, nm);
    nng_ctx_send(s->s_ctx, s->s_aio);
    return TR_OK;
}

// src_recv receives the next message of s's SUB socket, with no timeout.
static void
src_recv(src *s)
{
    s->s_state = SRC_RECV;
    nng_aio_set_timeout(s->s_aio, NNG_DURATION_INFINITE);
    nng_recv_aio(s->s_sock, s->s_aio);
}

// mux_wait sleeps until one of srcs[0..n) is done (none busy: returns).
static void
mux_wait(mux *m, src *const *srcs, size_t n)
{
    pthread_mutex_lock(&m->m_mu);
    for (;;) {
        bool busy = false;
        for (size_t i = 0; i < n; i++) {
            if (srcs[i]->s_state == SRC_DONE) {
                pthread_mutex_unlock(&m->m_mu);
                return;
            }
            busy |= srcs[i]->s_state == SRC_SEND || srcs[i]->s_state == SRC_RECV;
        }
        if (!busy) {
            break;
        }
        pthread_cond_wait(&m->m_cv, &m->m_mu);
    }
    pthread_mutex_unlock(&m->m_mu);
}

// src_done says whether s's operation is done; read under the mux's lock,
// which also orders the callback's writes of its result before the
// caller's reads.
static bool
src_done(src *s)
{
    if (s->s_mux == NULL) {
        return false; // never opened
    }
    pthread_mutex_lock(&s->s_mux->m_mu);
    bool done = s->s_state == SRC_DONE;
    pthread_mutex_unlock(&s->s_mux->m_mu);
    return done;
}

// src_take returns s's result once done (and makes it idle): TR_OK and
// *reply, the decoded ControlReply, or an error. REQ sources only.
static tr_err
src_take(src *s, tr_msg **reply)
{
    *reply = NULL;
    s->s_state = SRC_IDLE;
    if (s->s_rv != 0) {
        set_err("no reply: %s", nng_strerror(s->s_rv));
        return tr_err_from_nng(s->s_rv);
    }
    nng_msg *rm = s->s_msg;
    s->s_msg = NULL;
    return decode_reply(rm, reply);
}

static void
mux_stop(mux *m, src *const *srcs, size_t n)
{
    pthread_mutex_lock(&m->m_mu);
    m->m_stopping = true;
    pthread_mutex_unlock(&m->m_mu);
    for (size_t i = 0; i < n; i++) {
        src *s = srcs[i];
        if (!s->s_open) {
            continue;
        }
        nng_aio_stop(s->s_aio);
        if (s->s_msg != NULL) {
            nng_msg_free(s->s_msg);
        }
        nng_aio_free(s->s_aio);
        if (!s->s_sub) {
            nng_ctx_close(s->s_ctx);
        }
        s->s_open = false;
    }
}

// events_open asks the daemon for its events_url and opens a SUB socket
// there, subscribed to the n topics (8-byte big-endian job ids; n == 0:
// every job), dialled synchronously, so that what is published after the
// call returns is received. TR_ENOTSUP when the daemon has no PUB socket.
static tr_err
events_open(tr_client *c, const uint64_t *ids, size_t n, nng_socket *out)
{
    tr_msg *pong;
    tr_err rv = tr_client_pong(c, &pong);
    if (rv != TR_OK) {
        return rv;
    }
    const char *url = tr_client_reply_pong(pong)->events_url;
    if (url == NULL || url[0] == '\0') {
        tr_msg_free(pong);
        set_err("the daemon publishes no events");
        return TR_ENOTSUP;
    }
    nng_socket s;
    int nrv = nng_sub0_open(&s);
    if (nrv == 0) {
        // A deeper queue than nng's default drops fewer events while the
        // caller is busy; drops are handled either way.
        (void)nng_socket_set_int(s, NNG_OPT_RECVBUF, 1024);
        for (size_t i = 0; nrv == 0 && i < n; i++) {
            uint8_t topic[8];
            for (int b = 0; b < 8; b++) {
                topic[b] = (uint8_t)(ids[i] >> (56 - 8 * b));
            }
            nrv = nng_socket_set(s, NNG_OPT_SUB_SUBSCRIBE, topic, sizeof topic);
        }
        if (nrv == 0 && n == 0) {
            nrv = nng_socket_set(s, NNG_OPT_SUB_SUBSCRIBE, "", 0);
        }
        if (nrv == 0 && (nrv = nng_dial(s, url, NULL, 0)) != 0) {
            set_err("dial events %s: %s", url, nng_strerror(nrv));
        }
        if (nrv != 0) {
            nng_close(s);
        }
    }
    tr_msg_free(pong);
    if (nrv != 0) {
        return tr_err_from_nng(nrv);
    }
    *out = s;
    return TR_OK;
}

// events_close closes a SUB socket of events_open. nng 1.5.2's nng_close
// of a SUB socket whose ipc pipe still receives hangs, often, when the
// publisher is busy (a standalone PUB/SUB loop hangs within a few closes
// at 1000 messages a second). A receive limit of one byte first makes nng
// drop the pipe at its next message instead, and then the close does not
// hang (thousands of closes at full publishing rate).
static void
events_close(nng_socket sub)
{
    (void)nng_socket_set_size(sub, NNG_OPT_RECVMAXSZ, 1);
    nng_close(sub);
}

// event_decode decodes a PUB message: the job id, then an envelope around
// a JobEvent. NULL for anything else (ignored: a peer's bytes).
static tr_msg *
event_decode(nng_msg *nm)
{
    size_t len = nng_msg_len(nm);
    const uint8_t *p = nng_msg_body(nm);
    if (len < 8) {
        return NULL;
    }
    tr_msg *in = NULL;
    if (tr_msg_unpack(p + 8, len - 8, NULL, &in, NULL) != TR_OK) {
        return NULL;
    }
    if (!tr_msg_is(in, &troupe__v1__job_event__descriptor)) {
        tr_msg_free(in);
        return NULL;
    }
    uint64_t id = 0;
    for (int b = 0; b < 8; b++) {
        id = id << 8 | p[b];
    }
    if (((const Troupe__V1__JobEvent *)tr_msg_body(in))->id != id) {
        tr_msg_free(in);
        return NULL;
    }
    return in;
}

static bool
state_final(int st)
{
    return st >= TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED;
}

// wait_timeout is a WaitJobs slice's aio timeout: the slice and the call's.
static uint32_t
wait_timeout(const tr_client *c)
{
    return c->c_timeout_ms + WAIT_SLICE_MS;
}

// ---------------------------------------------------------------------------
// Follow.

typedef struct follow {
    tr_client *f_c;
    uint64_t f_id;
    tr_client_output_fn f_fn;
    void *f_arg;
    uint64_t f_next[3]; // per stream: the offset of the next byte to deliver
    bool f_eof[3];
} follow;

// deliver hands the part of data at offset that starts at the stream's
// next byte to the callback: false when offset is past it (a gap).
static bool
deliver(follow *f, uint32_t stream, uint64_t offset, const uint8_t *data, size_t len)
{
    uint64_t next = f->f_next[stream];
    if (offset > next) {
        return false;
    }
    uint64_t skip = next - offset;
    if (skip < len) {
        f->f_fn(f->f_arg, stream, next, data + skip, len - (size_t)skip);
        f->f_next[stream] = offset + len;
    }
    return true;
}

// apply_chunk delivers a Logs reply's chunk. The daemon's chunk starts at
// the offset asked for; one that starts later (the daemon dropped output)
// moves the stream on to it, so the follow cannot loop on a hole.
static void
apply_chunk(follow *f, uint32_t stream, const Troupe__V1__LogChunk *ch)
{
    if (ch->offset > f->f_next[stream]) {
        f->f_next[stream] = ch->offset;
    }
    (void)deliver(f, stream, ch->offset, ch->data.data, ch->data.len);
    if (ch->eof) {
        f->f_eof[stream] = true;
    }
}

// read_to reads stream with Logs (no follow) from its next byte until
// upto, the daemon's end of what exists (an empty chunk), or eof.
static tr_err
read_to(follow *f, uint32_t stream, uint64_t upto)
{
    while (!f->f_eof[stream] && f->f_next[stream] < upto) {
        tr_msg *reply;
        tr_err rv =
            tr_client_logs(f->f_c, f->f_id, stream, f->f_next[stream], 1u << 20, false, &reply);
        if (rv != TR_OK) {
            return rv;
        }
        const Troupe__V1__LogChunk *ch = tr_client_reply_log(reply);
        bool empty = ch->data.len == 0;
        apply_chunk(f, stream, ch);
        tr_msg_free(reply);
        if (empty) {
            break;
        }
    }
    return TR_OK;
}

// follow_event applies one JobEvent: true when it says the job is final.
static tr_err
follow_event(follow *f, unsigned mask, const Troupe__V1__JobEvent *ev, bool *ended)
{
    if (ev->stream == 0) {
        *ended |= state_final(ev->state);
        return TR_OK;
    }
    if (ev->stream > 2 || (mask & ev->stream) == 0) {
        return TR_OK;
    }
    if (deliver(f, ev->stream, ev->offset, ev->data.data, ev->data.len)) {
        return TR_OK;
    }
    // A gap: events were dropped. Read it, then this event's bytes (what
    // Logs did not cover yet); if Logs is behind still, the end's drain
    // delivers them.
    tr_err rv = read_to(f, ev->stream, ev->offset);
    if (rv == TR_OK) {
        (void)deliver(f, ev->stream, ev->offset, ev->data.data, ev->data.len);
    }
    return rv;
}

// follow_events: the follow with the PUB socket (sub) and a Wait.
static tr_err
follow_events(follow *f, unsigned mask, nng_socket sub)
{
    mux m = {.m_mu = PTHREAD_MUTEX_INITIALIZER, .m_cv = PTHREAD_COND_INITIALIZER};
    src es, ws;
    src *srcs[] = {&es, &ws};
    tr_err rv = src_open(&es, &m, NULL);
    if (rv != TR_OK) {
        return rv;
    }
    es.s_sock = sub;
    if ((rv = src_open(&ws, &m, f->f_c)) != TR_OK) {
        mux_stop(&m, srcs, 1);
        return rv;
    }
    src_recv(&es);
    rv =
        src_start(&ws, ids_request(f->f_c, &f->f_id, 1, WAIT_SLICE_MS, true), wait_timeout(f->f_c));
    // Catch up with what exists; events from here on are queued meanwhile.
    for (uint32_t st = 1; rv == TR_OK && st <= 2; st++) {
        if (mask & st) {
            rv = read_to(f, st, UINT64_MAX);
        }
    }
    bool ended = false;
    while (rv == TR_OK && !ended) {
        mux_wait(&m, srcs, 2);
        if (src_done(&es)) {
            int nrv = es.s_rv;
            if (nrv == 0) {
                tr_msg *ev = event_decode(es.s_msg);
                nng_msg_free(es.s_msg);
                es.s_msg = NULL;
                if (ev != NULL) {
                    rv = follow_event(f, mask, tr_msg_body(ev), &ended);
                    tr_msg_free(ev);
                }
                src_recv(&es);
            } else {
                // The events stopped (the socket failed): the Wait ends it.
                es.s_state = SRC_IDLE;
            }
        }
        if (rv == TR_OK && src_done(&ws)) {
            tr_msg *reply;
            rv = expect_jobs(src_take(&ws, &reply), &reply);
            if (rv == TR_OK) {
                if (((const Troupe__V1__ControlReply *)tr_msg_body(reply))->timed_out) {
                    rv = src_start(&ws, ids_request(f->f_c, &f->f_id, 1, WAIT_SLICE_MS, true),
                                   wait_timeout(f->f_c));
                } else {
                    ended = true;
                }
                tr_msg_free(reply);
            }
        }
    }
    mux_stop(&m, srcs, 2);
    return rv;
}

// follow_poll: the follow without events, a Logs long-poll per stream,
// until each is at eof.
static tr_err
follow_poll(follow *f, unsigned mask)
{
    mux m = {.m_mu = PTHREAD_MUTEX_INITIALIZER, .m_cv = PTHREAD_COND_INITIALIZER};
    src ls[2];
    src *srcs[] = {&ls[0], &ls[1]};
    tr_err rv = TR_OK;
    size_t opened = 0;
    for (uint32_t st = 1; rv == TR_OK && st <= 2; st++, opened++) {
        if ((rv = src_open(&ls[st - 1], &m, f->f_c)) == TR_OK && (mask & st)) {
            rv = src_start(&ls[st - 1], logs_request(f->f_c, f->f_id, st, 0, 1u << 20, true),
                           f->f_c->c_timeout_ms + LOGS_SLICE_MS);
        }
    }
    while (rv == TR_OK && !((!(mask & 1) || f->f_eof[1]) && (!(mask & 2) || f->f_eof[2]))) {
        mux_wait(&m, srcs, 2);
        for (uint32_t st = 1; rv == TR_OK && st <= 2; st++) {
            src *s = &ls[st - 1];
            if (!src_done(s)) {
                continue;
            }
            tr_msg *reply;
            rv = expect_log(src_take(s, &reply), &reply);
            if (rv != TR_OK) {
                break;
            }
            apply_chunk(f, st, tr_client_reply_log(reply));
            tr_msg_free(reply);
            if (!f->f_eof[st]) {
                rv = src_start(s, logs_request(f->f_c, f->f_id, st, f->f_next[st], 1u << 20, true),
                               f->f_c->c_timeout_ms + LOGS_SLICE_MS);
            }
        }
    }
    mux_stop(&m, srcs, opened);
    return rv;
}

tr_err
tr_client_follow(tr_client *c, uint64_t id, unsigned stream_mask, tr_client_output_fn on_output,
                 void *arg, tr_msg **final_reply)
{
    t_err[0] = '\0';
    *final_reply = NULL;
    stream_mask &= TR_CLIENT_STDOUT | TR_CLIENT_STDERR;
    follow f = {.f_c = c, .f_id = id, .f_fn = on_output, .f_arg = arg};
    nng_socket sub;
    tr_err rv = events_open(c, &id, 1, &sub);
    // The error detail lives in this thread's t_err; the mux's callbacks
    // never set it.
    if (rv == TR_OK) {
        rv = follow_events(&f, stream_mask, sub);
        events_close(sub);
        // The end: what the events did not bring, to eof. The job is
        // final, so the daemon's chunk at the end says eof; a read that
        // brings nothing and no eof ends the stream too (never a loop).
        for (uint32_t st = 1; rv == TR_OK && st <= 2; st++) {
            while (rv == TR_OK && (stream_mask & st) && !f.f_eof[st]) {
                uint64_t at = f.f_next[st];
                rv = read_to(&f, st, UINT64_MAX);
                if (f.f_next[st] == at) {
                    break;
                }
            }
        }
    } else if (rv == TR_ENOTSUP) {
        rv = follow_poll(&f, stream_mask);
    }
    if (rv != TR_OK) {
        return rv;
    }
    return tr_client_status(c, &id, 1, final_reply);
}

// ---------------------------------------------------------------------------
// Watch.

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

// The most topics a watch subscribes to one by one; above it, to every
// job, and filters.
#define WATCH_TOPICS 64u

tr_err
tr_client_watch(tr_client *c, const uint64_t *ids, size_t n, tr_client_event_fn on_event, void *arg)
{
    t_err[0] = '\0';
    if (n == 0) {
        return TR_OK;
    }
    uint64_t *sorted = malloc(n * sizeof *sorted);
    if (sorted == NULL) {
        return TR_ENOMEM;
    }
    memcpy(sorted, ids, n * sizeof *ids);
    qsort(sorted, n, sizeof *sorted, cmp_u64);
    nng_socket sub;
    tr_err rv = events_open(c, ids, n <= WATCH_TOPICS ? n : 0, &sub);
    if (rv != TR_OK) {
        free(sorted);
        return rv;
    }
    mux m = {.m_mu = PTHREAD_MUTEX_INITIALIZER, .m_cv = PTHREAD_COND_INITIALIZER};
    src es, ws;
    src *srcs[] = {&es, &ws};
    size_t opened = 0;
    if ((rv = src_open(&es, &m, NULL)) == TR_OK) {
        opened = 1;
        es.s_sock = sub;
        if ((rv = src_open(&ws, &m, c)) == TR_OK) {
            opened = 2;
        }
    }
    // Wait on the ids in slices of the daemon's limit per request; a
    // slice ends when all of it is final.
    size_t at = 0, slice = n - at < 1000 ? n - at : 1000;
    if (rv == TR_OK) {
        src_recv(&es);
        rv = src_start(&ws, ids_request(c, ids + at, slice, WAIT_SLICE_MS, true), wait_timeout(c));
    }
    while (rv == TR_OK && at < n) {
        mux_wait(&m, srcs, 2);
        if (src_done(&es)) {
            if (es.s_rv == 0) {
                tr_msg *ev = event_decode(es.s_msg);
                nng_msg_free(es.s_msg);
                es.s_msg = NULL;
                if (ev != NULL) {
                    const Troupe__V1__JobEvent *e = tr_msg_body(ev);
                    if (bsearch(&e->id, sorted, n, sizeof *sorted, cmp_u64) != NULL) {
                        on_event(arg, e);
                    }
                    tr_msg_free(ev);
                }
                src_recv(&es);
            } else {
                es.s_state = SRC_IDLE;
            }
        }
        if (src_done(&ws)) {
            tr_msg *reply;
            rv = expect_jobs(src_take(&ws, &reply), &reply);
            if (rv != TR_OK) {
                break;
            }
            if (!((const Troupe__V1__ControlReply *)tr_msg_body(reply))->timed_out) {
                at += slice;
                slice = n - at < 1000 ? n - at : 1000;
            }
            tr_msg_free(reply);
            if (at < n) {
                rv = src_start(&ws, ids_request(c, ids + at, slice, WAIT_SLICE_MS, true),
                               wait_timeout(c));
            }
        }
    }
    mux_stop(&m, srcs, opened);
    events_close(sub);
    free(sorted);
    return rv;
}
