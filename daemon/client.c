// Design notes.
//
// One REQ0 socket per handle, with NNG_OPT_REQ_RESENDTIME set to 0 before
// any context opens (contexts copy the socket's resend time), and one
// context per call, so calls from several threads run at once and a late
// reply to a call that timed out is discarded by nng with its context.
// Requests and replies are envelopes (troupe/envelope.h) around
// ControlRequest and ControlReply; the reply is decoded with
// tr_msg_unpack's limits, since a daemon is a peer like any other.
#define _GNU_SOURCE
#include <troupe/client.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <troupe/envelope.h>
#include <troupe/node.h>

struct tr_client {
    nng_socket c_sock;
    uint32_t c_timeout_ms; // written before calls run, then read only
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

tr_err
tr_client_connect(const char *url, tr_client **out)
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
    if (rv == 0) {
        // Non-blocking dial: the daemon may start after us.
        rv = nng_dial(c->c_sock, url, NULL, NNG_FLAG_NONBLOCK);
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

void
tr_client_close(tr_client *c)
{
    if (c != NULL) {
        nng_close(c->c_sock);
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

tr_err
tr_client_call(tr_client *c, tr_msg *req, uint32_t timeout_ms, tr_msg **reply)
{
    t_err[0] = '\0';
    *reply = NULL;
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
    nng_msg *rm = NULL;
    tr_err rv = exchange(c, nm, timeout_ms != 0 ? timeout_ms : c->c_timeout_ms, &rm);
    if (rv != TR_OK) {
        return rv;
    }
    tr_msg *in = NULL;
    tr_unpack_info info;
    rv = tr_msg_unpack(nng_msg_body(rm), nng_msg_len(rm), NULL, &in, &info);
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
        rv = e->code != 0 ? (tr_err)e->code : TR_EIO;
        tr_msg_free(in);
        return rv;
    }
    *reply = in;
    return TR_OK;
}

static tr_msg *
request_new(Troupe__V1__ControlRequest **req)
{
    tr_msg *m = tr_msg_new(&troupe__v1__control_request__descriptor, 128, (void **)req);
    (*req)->version = TROUPE__V1__CONTROL_VERSION__CONTROL_VERSION_1;
    return m;
}

tr_err
tr_client_ping(tr_client *c, char *ver, size_t verlen)
{
    Troupe__V1__ControlRequest *req;
    tr_msg *m = request_new(&req);
    Troupe__V1__Ping *p = tr_msg_arena(m, sizeof *p);
    troupe__v1__ping__init(p);
    req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_PING;
    req->ping = p;
    tr_msg *reply;
    tr_err rv = tr_client_call(c, m, 0, &reply);
    if (rv != TR_OK) {
        return rv;
    }
    const Troupe__V1__ControlReply *rep = tr_msg_body(reply);
    if (rep->reply_case != TROUPE__V1__CONTROL_REPLY__REPLY_PONG) {
        tr_msg_free(reply);
        set_err("ping: the reply is not a Pong");
        return TR_EINVAL;
    }
    if (verlen > 0) {
        snprintf(ver, verlen, "%s", rep->pong->version);
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
    tr_msg *m = request_new(&req);
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
    tr_err rv = tr_client_call(c, m, 0, &reply);
    if (rv != TR_OK) {
        return rv;
    }
    const Troupe__V1__ControlReply *rep = tr_msg_body(reply);
    if (rep->reply_case != TROUPE__V1__CONTROL_REPLY__REPLY_SUBMITTED) {
        tr_msg_free(reply);
        set_err("submit: the reply is not Submitted");
        return TR_EINVAL;
    }
    *first_id = rep->submitted->first_id;
    *count = rep->submitted->count;
    tr_msg_free(reply);
    return TR_OK;
}

const Troupe__V1__JobList *
tr_client_reply_jobs(const tr_msg *reply)
{
    const Troupe__V1__ControlReply *rep = reply != NULL ? tr_msg_body(reply) : NULL;
    return rep != NULL && rep->reply_case == TROUPE__V1__CONTROL_REPLY__REPLY_JOBS ? rep->jobs
                                                                                   : NULL;
}

// ids_call sends a Status or WaitJobs over ids and checks the reply holds
// a JobList.
static tr_err
ids_call(tr_client *c, const uint64_t *ids, size_t n, uint64_t wait_ms, bool wait,
         uint32_t timeout_ms, tr_msg **reply)
{
    Troupe__V1__ControlRequest *req;
    tr_msg *m = request_new(&req);
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
    tr_err rv = tr_client_call(c, m, timeout_ms, reply);
    if (rv == TR_OK && tr_client_reply_jobs(*reply) == NULL) {
        tr_msg_free(*reply);
        *reply = NULL;
        set_err("the reply holds no job list");
        return TR_EINVAL;
    }
    return rv;
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
