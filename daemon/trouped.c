// Design notes.
//
// trouped: the state lock, the store, a runtime, the control endpoint and
// two actors (control, runner). Start-up order is the safety order: the
// state directory's flock before anything else (a second instance stops
// before it touches the database or a socket), then the store, then the
// runtime and the actors (the runner recovers unfinished jobs in its init,
// on the main thread), and only then the socket, so that no request can
// arrive before someone can answer it. "TROUPED READY <url>" on stdout says
// the socket listens (tests and scripts read that line instead of
// sleeping).
//
// The control endpoint is a REP0 socket with TRD_CONTEXTS contexts, each
// with one aio whose callback is a two-state machine (receive, send). The
// receive callback never decodes or blocks: it parks the nng_msg in its
// slot and sends the control actor a CtlIn naming the slot (a push to an
// empty mailbox wakes the actor through tr_wake). The actor decodes the
// envelope (tr_msg_unpack: depth scan, memory budget) on a worker and
// answers, or hands the slot on (see trouped.h). The reply is
// nng_ctx_send with the slot's aio, whose callback re-arms the receive.
//
// Signals: SIGINT and SIGTERM are blocked in every thread (they are
// blocked before the store's, nng's and the runtime's threads start; the
// process actor's spawn resets the mask for children) and main waits in
// sigwait. The runtime runs on a thread of its own (worker 0), so main is
// free to do the stop: flag, close the socket (main is the only thread
// that closes sockets), shut the runtime down, close the store (its last
// callbacks' replies fail on the closed contexts and are freed), free the
// aios, the runtime, and nng_fini last.
#define _GNU_SOURCE
#include "trouped.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <nng/protocol/pubsub0/pub.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/protocol/reqrep0/rep.h>
#include <troupe/envelope.h>
#include <troupe/blocking.h>
#include <troupe/rt.h>
#include <troupe/v1/job.pb-c.h>

#include "plugin.h"
#include "request.h"
#include "state.h"
#include "trouped_int.pb-c.h"

// ---------------------------------------------------------------------------
// Logs and small helpers.

static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;

int64_t
trd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
trd_log(const char *event, const char *fmt, ...)
{
    char line[2048];
    int n = snprintf(line, sizeof line, "ts=%lld event=%s", (long long)trd_now_ms(), event);
    if (fmt != NULL && fmt[0] != '\0' && n > 0 && (size_t)n < sizeof line - 1) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
    }
    // One write per line under a lock, so lines of threads never interleave.
    pthread_mutex_lock(&g_log_lock);
    fprintf(stderr, "%s\n", line);
    pthread_mutex_unlock(&g_log_lock);
}

static uint64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

// ---------------------------------------------------------------------------
// Replies.

static void gate_leave(trd_daemon *d);

// gate_enter starts a call into nng on the daemon's sockets from a thread
// of ours (see d_replying): false when they are closing (then do not call,
// and do not call gate_leave). seq_cst, with main's store of d_stopping
// and its load of d_replying: either main waits for this call or the call
// sees the stop.
static bool
gate_enter(trd_daemon *d)
{
    atomic_fetch_add_explicit(&d->d_replying, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&d->d_stopping, memory_order_seq_cst)) {
        gate_leave(d);
        return false;
    }
    return true;
}

// gate_leave ends it.
static void
gate_leave(trd_daemon *d)
{
    if (atomic_fetch_sub_explicit(&d->d_replying, 1, memory_order_seq_cst) == 1 &&
        atomic_load_explicit(&d->d_stopping, memory_order_seq_cst)) {
        pthread_mutex_lock(&d->d_rp_lock);
        pthread_cond_broadcast(&d->d_rp_cond);
        pthread_mutex_unlock(&d->d_rp_lock);
    }
}

// gate_drain: main, d_stopping set, waits until no call of ours is inside
// nng, so that the sockets' close frees nothing under one.
static void
gate_drain(trd_daemon *d)
{
    pthread_mutex_lock(&d->d_rp_lock);
    while (atomic_load_explicit(&d->d_replying, memory_order_seq_cst) != 0) {
        pthread_cond_wait(&d->d_rp_cond, &d->d_rp_lock);
    }
    pthread_mutex_unlock(&d->d_rp_lock);
}

void
trd_reply(trd_daemon *d, uint32_t idx, tr_msg *reply)
{
    trd_slot *s = &d->d_slots[idx];
    if (!gate_enter(d)) {
        tr_msg_free(reply); // the socket is closing: nobody can take it
        return;
    }
    size_t n = tr_msg_packed_size(reply);
    nng_msg *nm;
    if (nng_msg_alloc(&nm, n) != 0) {
        // Out of memory in nng: answer nothing, serve the next request.
        tr_msg_free(reply);
        s->s_state = SLOT_RECV;
        if (s->s_stop_after) {
            s->s_stop_after = false;
            trd_stop_vote(d);
        }
        nng_ctx_recv(s->s_ctx, s->s_aio);
        gate_leave(d);
        return;
    }
    tr_msg_pack_to(reply, nng_msg_body(nm));
    tr_msg_free(reply);
    s->s_state = SLOT_SEND;
    nng_aio_set_msg(s->s_aio, nm);
    nng_ctx_send(s->s_ctx, s->s_aio);
    gate_leave(d);
}

tr_msg *
trd_reply_new(Troupe__V1__ControlReply **out)
{
    return tr_msg_new(&troupe__v1__control_reply__descriptor, 256, (void **)out);
}

void
trd_reply_ack(trd_daemon *d, uint32_t idx, bool stop_after)
{
    Troupe__V1__ControlReply *rep;
    tr_msg *m = trd_reply_new(&rep);
    Troupe__V1__Ack *a = tr_msg_arena(m, sizeof *a);
    troupe__v1__ack__init(a);
    rep->reply_case = TROUPE__V1__CONTROL_REPLY__REPLY_ACK;
    rep->ack = a;
    d->d_slots[idx].s_stop_after = stop_after;
    trd_reply(d, idx, m);
}

void
trd_stop_vote(trd_daemon *d)
{
    if (atomic_fetch_add_explicit(&d->d_stop_votes, 1, memory_order_acq_rel) == 1) {
        atomic_store_explicit(&d->d_stop_requested, true, memory_order_release);
        kill(getpid(), SIGTERM); // main's sigwait takes it
    }
}

// ---------------------------------------------------------------------------
// Job events.

bool
trd_events_wanted(trd_daemon *d)
{
    return atomic_load_explicit(&d->d_subscribers, memory_order_relaxed) > 0;
}

void
trd_publish(trd_daemon *d, uint64_t id, uint64_t seq, trd_job_state st, uint32_t stream,
            uint64_t offset, const void *data, size_t len)
{
    if (!trd_events_wanted(d)) {
        return;
    }
    Troupe__V1__JobEvent *ev;
    tr_msg *m = tr_msg_new(&troupe__v1__job_event__descriptor, 0, (void **)&ev);
    ev->id = id;
    ev->seq = seq;
    ev->state = (Troupe__V1__JobState)st;
    ev->stream = stream;
    ev->offset = offset;
    ev->data.data = (uint8_t *)data; // only read by the pack below
    ev->data.len = len;
    size_t n = tr_msg_packed_size(m);
    nng_msg *nm;
    if (gate_enter(d)) {
        if (nng_msg_alloc(&nm, 8 + n) == 0) {
            uint8_t *p = nng_msg_body(nm);
            for (int i = 0; i < 8; i++) {
                p[i] = (uint8_t)(id >> (56 - 8 * i));
            }
            tr_msg_pack_to(m, p + 8);
            if (nng_sendmsg(d->d_pub, nm, NNG_FLAG_NONBLOCK) != 0) {
                nng_msg_free(nm);
            }
        }
        gate_leave(d);
    }
    ev->data.data = NULL;
    ev->data.len = 0;
    tr_msg_free(m);
}

static void
pub_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    trd_daemon *d = arg;
    atomic_fetch_add_explicit(&d->d_subscribers, ev == NNG_PIPE_EV_ADD_POST ? 1 : -1,
                              memory_order_relaxed);
}

void
trd_reply_error(trd_daemon *d, uint32_t idx, tr_err code, const char *fmt, ...)
{
    Troupe__V1__ControlReply *rep;
    tr_msg *m = trd_reply_new(&rep);
    Troupe__V1__ControlError *e = tr_msg_arena(m, sizeof *e);
    troupe__v1__control_error__init(e);
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    e->code = (int32_t)code;
    e->name = tr_msg_strdup(m, tr_err_name(code));
    e->detail = tr_msg_strdup(m, detail);
    rep->reply_case = TROUPE__V1__CONTROL_REPLY__REPLY_ERROR;
    rep->error = e;
    trd_log("request_error", "slot=%u code=%s detail=\"%s\"", idx, tr_err_name(code), detail);
    trd_reply(d, idx, m);
}

Troupe__V1__JobInfo *
trd_job_info(tr_msg *m, const trd_job_rec *r)
{
    Troupe__V1__JobInfo *ji = tr_msg_arena(m, sizeof *ji);
    troupe__v1__job_info__init(ji);
    ji->id = r->j_id;
    ji->name = tr_msg_strdup(m, r->j_name != NULL ? r->j_name : "");
    ji->group = tr_msg_strdup(m, r->j_group != NULL ? r->j_group : "");
    ji->state = (Troupe__V1__JobState)r->j_state;
    ji->attempt = r->j_attempt;
    ji->created_ms = r->j_created_ms;
    ji->started_ms = r->j_started_ms;
    ji->ended_ms = r->j_ended_ms;
    ji->exit_code = r->j_exit_code;
    ji->signal = r->j_signal;
    ji->error = tr_msg_strdup(m, r->j_error != NULL ? r->j_error : "");
    ji->stdout_bytes = r->j_stdout_bytes;
    ji->stderr_bytes = r->j_stderr_bytes;
    ji->truncated = r->j_truncated;
    ji->priority = r->j_priority;
    // Labels: from the stored spec (the labels table serves the filters).
    Troupe__V1__JobSpec *js =
        r->j_spec_len > 0 ? troupe__v1__job_spec__unpack(NULL, r->j_spec_len, r->j_spec) : NULL;
    if (js != NULL && js->n_labels > 0) {
        ji->labels = tr_msg_arena(m, js->n_labels * sizeof *ji->labels);
        for (size_t i = 0; i < js->n_labels; i++) {
            Troupe__V1__Label *l = tr_msg_arena(m, sizeof *l);
            troupe__v1__label__init(l);
            l->key = tr_msg_strdup(m, js->labels[i]->key);
            l->value = tr_msg_strdup(m, js->labels[i]->value);
            ji->labels[i] = l;
        }
        ji->n_labels = js->n_labels;
    }
    if (js != NULL) {
        troupe__v1__job_spec__free_unpacked(js, NULL);
    }
    return ji;
}

// ---------------------------------------------------------------------------
// The control actor.

// stat_child returns the statistic called name among s's children.
static nng_stat *
stat_child(nng_stat *s, const char *name)
{
    for (nng_stat *c = nng_stat_child(s); c != NULL; c = nng_stat_next(c)) {
        if (strcmp(nng_stat_name(c), name) == 0) {
            return c;
        }
    }
    return NULL;
}

// pipes_dropped adds up the control socket's listeners' error counts
// ("other": a message over NNG_OPT_RECVMAXSZ is one; "proto": a peer that
// spoke something else), from nng's statistics.
static uint64_t
pipes_dropped(const trd_daemon *d)
{
    nng_stat *root;
    if (nng_stats_get(&root) != 0) {
        return 0;
    }
    uint64_t n = 0;
    int sid = nng_socket_id(d->d_sock);
    for (nng_stat *l = nng_stat_child(root); l != NULL; l = nng_stat_next(l)) {
        nng_stat *sock = strcmp(nng_stat_name(l), "listener") == 0 ? stat_child(l, "socket") : NULL;
        if (sock == NULL || nng_stat_value(sock) != (uint64_t)sid) {
            continue;
        }
        nng_stat *other = stat_child(l, "other"), *proto = stat_child(l, "proto");
        n += (other != NULL ? nng_stat_value(other) : 0) +
             (proto != NULL ? nng_stat_value(proto) : 0);
    }
    nng_stats_free(root);
    return n;
}

static void
do_ping(trd_daemon *d, uint32_t idx)
{
    Troupe__V1__ControlReply *rep;
    tr_msg *m = trd_reply_new(&rep);
    Troupe__V1__Pong *p = tr_msg_arena(m, sizeof *p);
    troupe__v1__pong__init(p);
    p->version = TRD_VERSION;
    p->protocol = TROUPE__V1__CONTROL_VERSION__CONTROL_VERSION_1;
    p->uptime_ms = mono_ms() - d->d_start_ms;
    p->events_url = d->d_events_url;
    int open = atomic_load_explicit(&d->d_pipes, memory_order_relaxed);
    p->pipes = open > 0 ? (uint64_t)open : 0;
    p->pipes_refused = atomic_load_explicit(&d->d_pipes_refused, memory_order_relaxed);
    p->pipes_dropped = pipes_dropped(d);
    rep->reply_case = TROUPE__V1__CONTROL_REPLY__REPLY_PONG;
    rep->pong = p;
    trd_reply(d, idx, m);
}

// ---------------------------------------------------------------------------
// The blocking pool: store reads and file reads leave the workers.

typedef struct offload_job {
    void (*oj_fn)(void *arg);
    void (*oj_discard)(void *arg);
    void *oj_arg;
} offload_job;

typedef struct offload {
    tr_blocking_op o_op;
    offload_job *o_job; // NULL once joined (freed)
    bool o_started;
} offload;

static tr_value
offload_run(void *arg)
{
    offload_job *j = arg;
    j->oj_fn(j->oj_arg);
    return (tr_value){0};
}

static void
offload_cleanup(void *arg, tr_value result, bool ran)
{
    (void)result;
    offload_job *j = arg;
    if (!ran && j->oj_discard != NULL) {
        j->oj_discard(j->oj_arg);
    }
    free(j);
}

static tr_poll
offload_poll(void *state, tr_cx *cx)
{
    offload *o = state;
    if (!o->o_started) {
        if (tr_spawn_blocking(tr_cx_rt(cx), &o->o_op, offload_run, o->o_job, offload_cleanup) !=
            TR_OK) {
            // No pool thread (a shutdown, or none could start): here, then.
            offload_run(o->o_job);
            free(o->o_job);
            o->o_job = NULL;
            return TR_READY;
        }
        o->o_started = true;
    }
    tr_value v;
    tr_err e;
    if (tr_blocking_join(&o->o_op, cx, &v, &e) == TR_PENDING) {
        return TR_PENDING;
    }
    if (e == TR_OK) {
        free(o->o_job); // else the cleanup had it
    }
    o->o_job = NULL;
    return TR_READY;
}

static void
offload_drop(void *state)
{
    offload *o = state;
    if (o->o_job == NULL) {
        return;
    }
    if (o->o_started) {
        tr_blocking_abandon(&o->o_op); // the cleanup frees the job
    } else {
        offload_cleanup(o->o_job, (tr_value){0}, false);
    }
}

static const tr_task_spec offload_spec = {
    .name = "trouped.offload",
    .poll = offload_poll,
    .drop = offload_drop,
    .size = sizeof(offload),
};

void
trd_offload(trd_daemon *d, void (*fn)(void *arg), void (*discard)(void *arg), void *arg)
{
    offload_job *j = malloc(sizeof *j);
    if (j == NULL) {
        abort();
    }
    *j = (offload_job){.oj_fn = fn, .oj_discard = discard, .oj_arg = arg};
    offload o = {.o_job = j};
    if (tr_spawn(d->d_rt, &offload_spec, NULL, &o, NULL) != TR_OK) {
        fn(arg); // the runtime stops: answer from here
        free(j);
    }
}

// Up to this many jobs a Status or Wait reply reads on the calling worker
// (a point read by primary key each, ~10-20 us from the page cache, as the
// runner's own); more go to the blocking pool.
enum { JOBS_REPLY_INLINE = 4 };

typedef struct jobs_reply {
    trd_daemon *jr_d;
    uint32_t jr_idx;
    const char *jr_what;
    bool jr_timed_out;
    size_t jr_n;
    uint64_t jr_ids[];
} jobs_reply;

static void
jobs_reply_run(void *arg)
{
    jobs_reply *jr = arg;
    trd_daemon *d = jr->jr_d;
    Troupe__V1__ControlReply *rep;
    tr_msg *m = trd_reply_new(&rep);
    Troupe__V1__JobList *jl = tr_msg_arena(m, sizeof *jl);
    troupe__v1__job_list__init(jl);
    jl->jobs = tr_msg_arena(m, jr->jr_n * sizeof *jl->jobs);
    for (size_t i = 0; i < jr->jr_n; i++) {
        trd_job_rec r;
        tr_err rv = trd_store_get(d->d_store, jr->jr_ids[i], &r);
        if (rv != TR_OK) {
            tr_msg_free(m);
            trd_reply_error(d, jr->jr_idx, rv, "%s: job %llu: %s", jr->jr_what,
                            (unsigned long long)jr->jr_ids[i],
                            rv == TR_ENOTFOUND ? "no such job" : tr_strerror(rv));
            free(jr);
            return;
        }
        jl->jobs[jl->n_jobs++] = trd_job_info(m, &r);
        trd_job_rec_fini(&r);
    }
    rep->reply_case = TROUPE__V1__CONTROL_REPLY__REPLY_JOBS;
    rep->jobs = jl;
    rep->timed_out = jr->jr_timed_out;
    trd_reply(d, jr->jr_idx, m);
    free(jr);
}

void
trd_reply_jobs(trd_daemon *d, uint32_t idx, const char *what, const uint64_t *ids, size_t n,
               bool timed_out)
{
    jobs_reply *jr = malloc(sizeof *jr + n * sizeof *ids);
    if (jr == NULL) {
        abort();
    }
    *jr = (jobs_reply){
        .jr_d = d, .jr_idx = idx, .jr_what = what, .jr_timed_out = timed_out, .jr_n = n};
    memcpy(jr->jr_ids, ids, n * sizeof *ids);
    if (n <= JOBS_REPLY_INLINE) {
        jobs_reply_run(jr); // a few point reads: cheaper than the trip to the pool
        return;
    }
    trd_offload(d, jobs_reply_run, free, jr);
}

static void
do_status(trd_daemon *d, uint32_t idx, const Troupe__V1__StatusJobs *st)
{
    trd_reply_jobs(d, idx, "status", st->ids, st->n_ids, false);
}

typedef struct list_acc {
    tr_msg *la_m;
    Troupe__V1__JobInfo **la_jobs; // malloc'd while listing
    size_t la_n, la_cap;
} list_acc;

static void
list_each(void *arg, const trd_job_rec *r)
{
    list_acc *a = arg;
    if (a->la_n == a->la_cap) {
        a->la_cap = a->la_cap != 0 ? a->la_cap * 2 : 64;
        a->la_jobs = realloc(a->la_jobs, a->la_cap * sizeof *a->la_jobs);
        if (a->la_jobs == NULL) {
            abort();
        }
    }
    a->la_jobs[a->la_n++] = trd_job_info(a->la_m, r);
}

// A List, read on the blocking pool: the query with copies of its
// strings (the request is freed when the control actor returns).
typedef struct list_req {
    trd_daemon *lr_d;
    uint32_t lr_idx;
    trd_list_query lr_q;
    char *lr_group, *lr_key, *lr_value, *lr_prefix; // malloc'd or NULL
} list_req;

static char *
dup_or_null(const char *s)
{
    if (s == NULL) {
        return NULL;
    }
    char *p = strdup(s);
    if (p == NULL) {
        abort();
    }
    return p;
}

static void
list_req_free(void *arg)
{
    list_req *lr = arg;
    free(lr->lr_group);
    free(lr->lr_key);
    free(lr->lr_value);
    free(lr->lr_prefix);
    free(lr);
}

static void
list_run(void *arg)
{
    list_req *lr = arg;
    trd_daemon *d = lr->lr_d;
    uint32_t idx = lr->lr_idx;
    Troupe__V1__ControlReply *rep;
    list_acc a = {.la_m = trd_reply_new(&rep)};
    Troupe__V1__JobList *jl = tr_msg_arena(a.la_m, sizeof *jl);
    troupe__v1__job_list__init(jl);
    uint64_t next = 0;
    tr_err rv = trd_store_list(d->d_store, &lr->lr_q, list_each, &a, &next);
    list_req_free(lr);
    if (rv != TR_OK) {
        free(a.la_jobs);
        tr_msg_free(a.la_m);
        trd_reply_error(d, idx, rv, "list: %s", tr_strerror(rv));
        return;
    }
    jl->n_jobs = a.la_n;
    jl->jobs = tr_msg_memdup(a.la_m, a.la_jobs, a.la_n * sizeof *a.la_jobs);
    jl->next_cursor = next;
    free(a.la_jobs);
    rep->reply_case = TROUPE__V1__CONTROL_REPLY__REPLY_JOBS;
    rep->jobs = jl;
    trd_reply(d, idx, a.la_m);
}

static void
do_list(trd_daemon *d, uint32_t idx, const Troupe__V1__ListJobs *l)
{
    list_req *lr = calloc(1, sizeof *lr);
    if (lr == NULL) {
        abort();
    }
    lr->lr_d = d;
    lr->lr_idx = idx;
    trd_list_query *q = &lr->lr_q;
    q->q_limit = 100;
    if (l != NULL) {
        for (size_t i = 0; i < l->n_states; i++) { // checked by trd_request_decode
            q->q_states |= 1u << (unsigned)l->states[i];
        }
        bool key = l->label_key != NULL && l->label_key[0] != '\0';
        q->q_group = lr->lr_group =
            dup_or_null((l->group != NULL && l->group[0] != '\0') ? l->group : NULL);
        q->q_label_key = lr->lr_key = dup_or_null(key ? l->label_key : NULL);
        q->q_label_value = lr->lr_value = dup_or_null(key ? l->label_value : NULL);
        q->q_name_prefix = lr->lr_prefix = dup_or_null(l->name_prefix);
        q->q_after_id = l->after_id;
        q->q_limit = l->limit == 0 ? 100 : l->limit;
    }
    trd_offload(d, list_run, list_req_free, lr);
}

// What a Submit's done callback needs: where to reply, and the runner's
// JobsAdded, built beforehand with the batch's groups in its arena.
typedef struct submit_ctx {
    trd_daemon *sc_d;
    uint32_t sc_idx;
    tr_msg *sc_added;
    Troupe__Daemon__JobsAdded *sc_body;
} submit_ctx;

// submit_done runs on the store thread after the COMMIT (or the rollback):
// only now may Submitted leave.
static void
submit_done(void *arg, tr_err err, const trd_submit_result *r)
{
    submit_ctx *sc = arg;
    trd_daemon *d = sc->sc_d;
    if (err != TR_OK) {
        tr_msg_free(sc->sc_added);
        trd_reply_error(d, sc->sc_idx, err, "submit: %s%s", r->r_detail,
                        err == TR_ENOSPC && strstr(r->r_detail, "the cap is") != NULL
                            ? " (trouped --max-queued)"
                            : "");
        free(sc);
        return;
    }
    trd_log("submitted", "first_id=%llu count=%u repeated=%d commit=%llu",
            (unsigned long long)r->r_first_id, r->r_count, (int)r->r_repeated,
            (unsigned long long)r->r_commit);
    if (!r->r_repeated && r->r_count > 0) {
        // The runner replies, first thing when it takes the jobs in: a
        // request the client sends once it has the reply then reaches the
        // runner after the jobs (one mailbox), and the reply leaves before
        // the runner's first spawn. (Sent from here, after the JobsAdded,
        // it waited ~0.3 ms: the woken runner took this thread's CPU and
        // spawned first.)
        sc->sc_body->first_id = r->r_first_id;
        sc->sc_body->count = r->r_count;
        sc->sc_body->reply = true;
        sc->sc_body->reply_slot = sc->sc_idx;
        if (tr_actor_send(NULL, d->d_runner, sc->sc_added) == TR_OK) {
            free(sc);
            return;
        }
        tr_msg_free(sc->sc_added); // the runner is gone (a shutdown)
    } else {
        tr_msg_free(sc->sc_added);
    }
    trd_reply_submitted(d, sc->sc_idx, r->r_first_id, r->r_count, r->r_repeated);
    free(sc);
}

void
trd_reply_submitted(trd_daemon *d, uint32_t idx, uint64_t first_id, uint32_t count, bool repeated)
{
    Troupe__V1__ControlReply *rep;
    tr_msg *m = trd_reply_new(&rep);
    Troupe__V1__Submitted *s = tr_msg_arena(m, sizeof *s);
    troupe__v1__submitted__init(s);
    s->first_id = first_id;
    s->count = count;
    s->repeated = repeated;
    rep->reply_case = TROUPE__V1__CONTROL_REPLY__REPLY_SUBMITTED;
    rep->submitted = s;
    trd_reply(d, idx, m);
}

static void
do_submit(trd_daemon *d, uint32_t idx, const Troupe__V1__ControlRequest *req)
{
    // trd_request_decode checked the request id, the count and the jobs.
    const Troupe__V1__SubmitBatch *b = req->submit->batch;
    submit_ctx *sc = calloc(1, sizeof *sc);
    if (sc == NULL) {
        abort();
    }
    sc->sc_d = d;
    sc->sc_idx = idx;
    sc->sc_added = tr_msg_new(&troupe__daemon__jobs_added__descriptor, 0, (void **)&sc->sc_body);
    if (b->n_groups > 0) {
        sc->sc_body->groups = tr_msg_arena(sc->sc_added, b->n_groups * sizeof(void *));
        for (size_t i = 0; i < b->n_groups; i++) {
            Troupe__V1__GroupSpec *g = tr_msg_arena(sc->sc_added, sizeof *g);
            troupe__v1__group_spec__init(g);
            g->name = tr_msg_strdup(sc->sc_added, b->groups[i]->name);
            g->parallel = b->groups[i]->parallel;
            sc->sc_body->groups[i] = g;
        }
        sc->sc_body->n_groups = b->n_groups;
    }
    // The runner takes the jobs from this copy of the batch once it is
    // stored (the store copies it and the request id too).
    size_t n = troupe__v1__submit_batch__get_packed_size(b);
    uint8_t *buf = tr_msg_arena(sc->sc_added, n > 0 ? n : 1);
    troupe__v1__submit_batch__pack(b, buf);
    sc->sc_body->batch.data = buf;
    sc->sc_body->batch.len = n;
    sc->sc_body->request_id = tr_msg_strdup(sc->sc_added, req->request_id);
    trd_store_submit(d->d_store, req->request_id, buf, n, submit_done, sc);
}

// to_runner hands slot idx and m (one of trouped_int's *In messages) to
// the runner, which then owns the slot; what is the request, for the
// error when the runner is gone.
static void
to_runner(trd_daemon *d, uint32_t idx, tr_msg *m, const char *what)
{
    if (tr_actor_send(NULL, d->d_runner, m) != TR_OK) {
        tr_msg_free(m);
        trd_reply_error(d, idx, TR_ESHUTDOWN, "%s: the job runner is gone", what);
    }
}

static void
do_wait(trd_daemon *d, uint32_t idx, const Troupe__V1__WaitJobs *w)
{
    Troupe__Daemon__WaitIn *wi;
    tr_msg *m = tr_msg_new(&troupe__daemon__wait_in__descriptor, w->n_ids * 8, (void **)&wi);
    wi->slot = idx;
    wi->ids = tr_msg_memdup(m, w->ids, w->n_ids * sizeof *w->ids);
    wi->n_ids = w->n_ids;
    wi->timeout_ms = w->timeout_ms;
    to_runner(d, idx, m, "wait");
}

static void
do_cancel(trd_daemon *d, uint32_t idx, const Troupe__V1__CancelJobs *c)
{
    Troupe__Daemon__CancelIn *ci;
    tr_msg *m = tr_msg_new(&troupe__daemon__cancel_in__descriptor, c->n_ids * 8, (void **)&ci);
    ci->slot = idx;
    ci->ids = tr_msg_memdup(m, c->ids, c->n_ids * sizeof *c->ids);
    ci->n_ids = c->n_ids;
    to_runner(d, idx, m, "cancel");
}

static void
do_logs(trd_daemon *d, uint32_t idx, const Troupe__V1__Logs *l)
{
    Troupe__Daemon__LogsIn *li;
    tr_msg *m = tr_msg_new(&troupe__daemon__logs_in__descriptor, 0, (void **)&li);
    li->slot = idx;
    li->id = l->id;
    li->stream = l->stream;
    li->offset = l->offset;
    li->max_bytes = l->max_bytes != 0 ? l->max_bytes : TRD_LOG_CHUNK_DEFAULT;
    li->follow = l->follow;
    to_runner(d, idx, m, "logs");
}

static void
do_group(trd_daemon *d, uint32_t idx, const Troupe__V1__GroupControl *g)
{
    Troupe__Daemon__GroupIn *gi;
    tr_msg *m = tr_msg_new(&troupe__daemon__group_in__descriptor, 0, (void **)&gi);
    gi->slot = idx;
    gi->group = tr_msg_strdup(m, g->group);
    gi->pause = g->pause;
    to_runner(d, idx, m, "group");
}

static void
do_shutdown(trd_daemon *d, uint32_t idx, const Troupe__V1__ShutdownDaemon *sd)
{
    Troupe__Daemon__ShutdownIn *si;
    tr_msg *m = tr_msg_new(&troupe__daemon__shutdown_in__descriptor, 0, (void **)&si);
    si->slot = idx;
    si->immediate = sd->immediate;
    si->deadline_ms = sd->deadline_ms;
    trd_log("shutdown_requested", "immediate=%d deadline_ms=%llu", (int)sd->immediate,
            (unsigned long long)sd->deadline_ms);
    to_runner(d, idx, m, "shutdown");
}

static void
handle_request(trd_daemon *d, uint32_t idx, const Troupe__V1__ControlRequest *req)
{
    switch (req->request_case) { // checked by trd_request_decode
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_PING:
        do_ping(d, idx);
        return;
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_SUBMIT:
        do_submit(d, idx, req);
        return;
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_STATUS:
        do_status(d, idx, req->status);
        return;
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_LIST:
        do_list(d, idx, req->list);
        return;
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_WAIT:
        do_wait(d, idx, req->wait);
        return;
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_CANCEL:
        do_cancel(d, idx, req->cancel);
        return;
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_LOGS:
        do_logs(d, idx, req->logs);
        return;
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_GROUP:
        do_group(d, idx, req->group);
        return;
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_SHUTDOWN:
        do_shutdown(d, idx, req->shutdown);
        return;
    default:
        trd_reply_error(d, idx, TR_ENOTSUP, "operation %d is not served", (int)req->request_case);
        return;
    }
}

// token_ok says whether a request that came in as nm may be served: one
// from an ipc pipe always (the socket's mode guards it), one from a tcp
// pipe only with the daemon's token (compared in constant time).
static bool
token_ok(const trd_daemon *d, nng_msg *nm, const Troupe__V1__ControlRequest *req)
{
    nng_sockaddr sa;
    if (nng_pipe_get_addr(nng_msg_get_pipe(nm), NNG_OPT_REMADDR, &sa) == 0 &&
        sa.s_family == NNG_AF_IPC) {
        return true;
    }
    if (d->d_token[0] == '\0') {
        return false;
    }
    const char *t = req->token != NULL ? req->token : "";
    size_t n = strlen(d->d_token), m = strlen(t);
    unsigned diff = (unsigned)(n ^ m);
    for (size_t i = 0; i < n; i++) {
        diff |= (unsigned)(d->d_token[i] ^ (i < m ? t[i] : 0));
    }
    return diff == 0;
}

static void
control_receive(tr_actor *self, void *state, tr_msg *m)
{
    trd_daemon *d = *(trd_daemon **)state;
    if (!tr_msg_is(m, &troupe__daemon__ctl_in__descriptor)) {
        return;
    }
    uint32_t idx = ((Troupe__Daemon__CtlIn *)tr_msg_body(m))->slot;
    trd_slot *s = &d->d_slots[idx];
    nng_msg *nm = s->s_req;
    s->s_req = NULL;
    tr_msg *in = NULL;
    char why[512];
    tr_err rv = trd_request_decode(nng_msg_body(nm), nng_msg_len(nm), trd_plugin_kind_known,
                                   d->d_rt, &in, why, sizeof why);
    if (rv == TR_OK && !token_ok(d, nm, tr_msg_body(in))) {
        tr_msg_free(in);
        nng_msg_free(nm);
        trd_reply_error(d, idx, TR_EPERM, "a request over tcp needs the daemon's token");
        return;
    }
    if (rv == TR_OK && ((const Troupe__V1__ControlRequest *)tr_msg_body(in))->request_case ==
                           TROUPE__V1__CONTROL_REQUEST__REQUEST_SHUTDOWN) {
        atomic_store_explicit(&d->d_shutdown_pipe, nng_pipe_id(nng_msg_get_pipe(nm)),
                              memory_order_release);
    }
    nng_msg_free(nm);
    if (rv != TR_OK) {
        trd_reply_error(d, idx, rv, "%s", why);
        return;
    }
    handle_request(d, idx, tr_msg_body(in));
    tr_msg_free(in);
}

static tr_err
control_init(tr_actor *self, void *state, void *arg)
{
    *(trd_daemon **)state = arg;
    return TR_OK;
}

static const tr_actor_spec control_spec = {
    .name = "trouped.control",
    .size = sizeof(trd_daemon *),
    .init = control_init,
    .receive = control_receive,
};

// ---------------------------------------------------------------------------
// The control socket's contexts.

// slot_cb runs on an nng thread: it never blocks and never decodes.
static void
slot_cb(void *arg)
{
    trd_slot *s = arg;
    trd_daemon *d = s->s_d;
    int rv = nng_aio_result(s->s_aio);
    bool stopping = atomic_load_explicit(&d->d_stopping, memory_order_acquire);
    if (s->s_state == SLOT_SEND) {
        if (rv != 0) {
            nng_msg *nm = nng_aio_get_msg(s->s_aio);
            nng_aio_set_msg(s->s_aio, NULL);
            nng_msg_free(nm);
        }
        s->s_state = SLOT_RECV;
        if (s->s_stop_after) { // a Shutdown's reply has gone (or failed)
            s->s_stop_after = false;
            trd_stop_vote(d);
        }
        if (!stopping && rv != NNG_ECLOSED) {
            nng_ctx_recv(s->s_ctx, s->s_aio);
        }
        return;
    }
    if (rv != 0) {
        if (rv != NNG_ECLOSED && rv != NNG_ECANCELED && !stopping) {
            nng_ctx_recv(s->s_ctx, s->s_aio);
        }
        return;
    }
    s->s_req = nng_aio_get_msg(s->s_aio);
    nng_aio_set_msg(s->s_aio, NULL);
    s->s_state = SLOT_BUSY;
    Troupe__Daemon__CtlIn *ci;
    tr_msg *m = tr_msg_new(&troupe__daemon__ctl_in__descriptor, 0, (void **)&ci);
    ci->slot = s->s_idx;
    if (tr_actor_send(NULL, d->d_control, m) != TR_OK) {
        // The actor is gone (shutting down): drop the request.
        tr_msg_free(m);
        nng_msg_free(s->s_req);
        s->s_req = NULL;
        s->s_state = SLOT_RECV;
        if (!stopping) {
            nng_ctx_recv(s->s_ctx, s->s_aio);
        }
    }
}

// ctl_pipe_cb counts the control socket's pipes and closes one past
// TRD_PIPES_MAX before it is added (ADD_PRE): a flood of connections costs
// each at most a handshake, and everyone already connected is served on.
static void
ctl_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    trd_daemon *d = arg;
    if (ev == NNG_PIPE_EV_ADD_PRE) {
        if (atomic_fetch_add_explicit(&d->d_pipes, 1, memory_order_relaxed) >= TRD_PIPES_MAX) {
            atomic_fetch_add_explicit(&d->d_pipes_refused, 1, memory_order_relaxed);
            nng_pipe_close(p); // its REM_POST takes the count back
        }
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        atomic_fetch_sub_explicit(&d->d_pipes, 1, memory_order_relaxed);
        uint32_t sp = atomic_load_explicit(&d->d_shutdown_pipe, memory_order_acquire);
        if (sp != 0 && sp == (uint32_t)nng_pipe_id(p)) {
            pthread_mutex_lock(&d->d_sp_lock);
            d->d_sp_gone = true;
            pthread_cond_signal(&d->d_sp_cond);
            pthread_mutex_unlock(&d->d_sp_lock);
        }
    }
}

static int
control_open(trd_daemon *d, const char *url, char *err, size_t errlen)
{
    int rv = nng_rep0_open(&d->d_sock);
    if (rv != 0) {
        snprintf(err, errlen, "nng_rep0_open: %s", nng_strerror(rv));
        return rv;
    }
    // Oversized requests never reach us: nng drops their pipe.
    nng_socket_set_size(d->d_sock, NNG_OPT_RECVMAXSZ, TRD_RECV_MAX);
    nng_pipe_notify(d->d_sock, NNG_PIPE_EV_ADD_PRE, ctl_pipe_cb, d);
    nng_pipe_notify(d->d_sock, NNG_PIPE_EV_REM_POST, ctl_pipe_cb, d);
    for (uint32_t i = 0; i < TRD_CONTEXTS; i++) {
        trd_slot *s = &d->d_slots[i];
        s->s_d = d;
        s->s_idx = i;
        if ((rv = nng_ctx_open(&s->s_ctx, d->d_sock)) != 0 ||
            (rv = nng_aio_alloc(&s->s_aio, slot_cb, s)) != 0) {
            snprintf(err, errlen, "control context: %s", nng_strerror(rv));
            return rv;
        }
    }
    if ((rv = nng_listen(d->d_sock, url, NULL, 0)) != 0) {
        snprintf(err, errlen, "listen on %.300s: %s", url, nng_strerror(rv));
        return rv;
    }
    if (strncmp(url, "ipc://", 6) == 0 && chmod(url + 6, 0600) != 0) {
        snprintf(err, errlen, "chmod 0600 %.300s: %s", url + 6, strerror(errno));
        return NNG_EPERM;
    }
    for (uint32_t i = 0; i < TRD_CONTEXTS; i++) {
        d->d_slots[i].s_state = SLOT_RECV;
        nng_ctx_recv(d->d_slots[i].s_ctx, d->d_slots[i].s_aio);
    }
    return 0;
}

// read_token reads the bearer token from path: a file only its owner may
// read (mode 0600 or 0400), one line of 16 to 255 bytes.
static int
read_token(trd_daemon *d, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "token file %.300s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return NNG_ENOENT;
    }
    if ((st.st_mode & 077) != 0) {
        close(fd);
        snprintf(err, errlen, "token file %.300s: mode %o lets others read it (chmod 600)", path,
                 (unsigned)(st.st_mode & 0777));
        return NNG_EPERM;
    }
    ssize_t n = read(fd, d->d_token, sizeof d->d_token - 1);
    close(fd);
    n = n < 0 ? 0 : n;
    d->d_token[n] = '\0';
    d->d_token[strcspn(d->d_token, "\r\n")] = '\0';
    if (strlen(d->d_token) < 16 || n == (ssize_t)sizeof d->d_token - 1) {
        d->d_token[0] = '\0';
        snprintf(err, errlen, "token file %.300s: one line of 16 to 255 bytes", path);
        return NNG_EINVAL;
    }
    return 0;
}

static bool
loopback_url(const char *u)
{
    const char *h = strstr(u, "://");
    h = h != NULL ? h + 3 : u;
    return strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost:", 10) == 0 ||
           strncmp(h, "[::1]:", 6) == 0;
}

// tcp_open adds a tcp listener to the control socket: tls+tcp with the
// certificate and key in certkey (one PEM) and a token; plain tcp only on
// loopback with insecure (tests). The bound URL goes to d_tcp_url.
static int
tcp_open(trd_daemon *d, const char *url, const char *certkey, const char *token_file, bool insecure,
         char *err, size_t errlen)
{
    bool tls = strncmp(url, "tls+tcp://", 10) == 0;
    if (!tls && strncmp(url, "tcp://", 6) != 0) {
        snprintf(err, errlen, "--tcp %.300s: tls+tcp://HOST:PORT", url);
        return NNG_EINVAL;
    }
    if (!tls && !(insecure && loopback_url(url))) {
        snprintf(err, errlen,
                 "--tcp %.300s: plain tcp is refused (use tls+tcp://; tests may use "
                 "--insecure-tcp on a loopback address)",
                 url);
        return NNG_EINVAL;
    }
    if (tls && certkey == NULL) {
        snprintf(err, errlen, "--tcp %.300s needs --tls-cert-key FILE", url);
        return NNG_EINVAL;
    }
    if (token_file == NULL) {
        snprintf(err, errlen, "--tcp needs --token-file FILE");
        return NNG_EINVAL;
    }
    int rv = read_token(d, token_file, err, errlen);
    if (rv != 0) {
        return rv;
    }
    nng_listener l;
    if ((rv = nng_listener_create(&l, d->d_sock, url)) != 0) {
        snprintf(err, errlen, "--tcp %.300s: %s", url, nng_strerror(rv));
        return rv;
    }
    if (tls) {
        nng_tls_config *cfg;
        if ((rv = nng_tls_config_alloc(&cfg, NNG_TLS_MODE_SERVER)) != 0 ||
            (rv = nng_tls_config_cert_key_file(cfg, certkey, NULL)) != 0) {
            snprintf(err, errlen, "--tls-cert-key %.300s: %s", certkey, nng_strerror(rv));
            return rv;
        }
        rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, cfg);
        nng_tls_config_free(cfg); // the listener holds its own reference
        if (rv != 0) {
            snprintf(err, errlen, "tls config: %s", nng_strerror(rv));
            return rv;
        }
    }
    if ((rv = nng_listener_start(l, 0)) != 0) {
        snprintf(err, errlen, "listen on %.300s: %s", url, nng_strerror(rv));
        return rv;
    }
    int port = 0;
    nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port);
    const char *colon = strrchr(url, ':');
    snprintf(d->d_tcp_url, sizeof d->d_tcp_url, "%.*s:%d", (int)(colon - url), url, port);
    return 0;
}

// events_default sets d_events_url from the control URL: an ipc socket
// beside it (…/trouped.sock → …/trouped-events.sock); none for others.
static void
events_default(trd_daemon *d, const char *url)
{
    d->d_events_url[0] = '\0';
    size_t n = strlen(url);
    if (strncmp(url, "ipc://", 6) != 0 || n + 8 >= sizeof d->d_events_url) {
        return;
    }
    if (n > 5 && strcmp(url + n - 5, ".sock") == 0) {
        snprintf(d->d_events_url, sizeof d->d_events_url, "%.*s-events.sock", (int)(n - 5), url);
    } else {
        snprintf(d->d_events_url, sizeof d->d_events_url, "%s.events", url);
    }
}

static int
events_open(trd_daemon *d, char *err, size_t errlen)
{
    if (d->d_events_url[0] == '\0') {
        return 0;
    }
    int rv = nng_pub0_open(&d->d_pub);
    if (rv != 0) {
        snprintf(err, errlen, "nng_pub0_open: %s", nng_strerror(rv));
        return rv;
    }
    nng_pipe_notify(d->d_pub, NNG_PIPE_EV_ADD_POST, pub_pipe_cb, d);
    nng_pipe_notify(d->d_pub, NNG_PIPE_EV_REM_POST, pub_pipe_cb, d);
    if ((rv = nng_listen(d->d_pub, d->d_events_url, NULL, 0)) != 0) {
        snprintf(err, errlen, "listen on %.300s: %s", d->d_events_url, nng_strerror(rv));
        return rv;
    }
    if (strncmp(d->d_events_url, "ipc://", 6) == 0 && chmod(d->d_events_url + 6, 0600) != 0) {
        snprintf(err, errlen, "chmod 0600 %.300s: %s", d->d_events_url + 6, strerror(errno));
        return NNG_EPERM;
    }
    return 0;
}

// ---------------------------------------------------------------------------
// Flags, directories, main.

static void
usage(FILE *f)
{
    fprintf(f, "usage: trouped [options]\n"
               "  --state-dir DIR        state (database, job output); default\n"
               "                         $STATE_DIRECTORY (systemd), $XDG_STATE_HOME/troupe,\n"
               "                         ~/.local/state/troupe, /var/lib/troupe for root\n"
               "  --ephemeral            a fresh temporary state directory, removed at exit\n"
               "  --listen URL           control endpoint; default ipc:// in\n"
               "                         $RUNTIME_DIRECTORY (systemd), $XDG_RUNTIME_DIR/troupe/\n"
               "                         (/run/troupe/ for root)\n"
               "  --tcp URL              also listen on tls+tcp://HOST:PORT (port 0: any; the\n"
               "                         bound URL follows the ready line's); requests over\n"
               "                         it must carry the token\n"
               "  --tls-cert-key FILE    the certificate and its key, one PEM file\n"
               "  --token-file FILE      the bearer token (one line, 16+ bytes, mode 0600)\n"
               "  --insecure-tcp         allow --tcp tcp:// on a loopback address (tests only)\n"
               "  --max-queued N         jobs queued or running at most (default 1000000);\n"
               "                         a Submit past it is refused\n"
               "  --max-running N        jobs running at once over all groups (default: no cap)\n"
               "  --workers N            the runtime's worker threads (default 0: one per\n"
               "                         core; TROUPE_WORKERS overrides it)\n"
               "  --events URL           the PUB socket of job events; default: beside an\n"
               "                         ipc control socket (trouped-events.sock), none for\n"
               "                         others; \"none\" for none\n"
               "  --output-cap BYTES     stdout and stderr kept per job (each) when a job\n"
               "                         sets none; default 16777216 (16 MiB)\n"
               "  --durability full|process\n"
               "                         full (default): fdatasync per group commit;\n"
               "                         process: survives a crash of trouped, not of the machine\n"
               "  --cgroup auto|none|DIR where jobs' cgroups go (auto, the default: below\n"
               "                         trouped's own cgroup when it may make cgroups there)\n"
               "  --plugin-dir DIR       load task kinds from DIR/*.so (owned by trouped's\n"
               "                         user, not group- or world-writable); jobs name\n"
               "                         them (JobSpec.plugin)\n"
               "  --config FILE          settings file (\"none\": none); default\n"
               "                         /etc/troupe/trouped.conf for root, else\n"
               "                         $XDG_CONFIG_HOME/troupe/trouped.conf or\n"
               "                         ~/.config/troupe/trouped.conf (may be missing)\n"
               "  --help, --version\n"
               "Settings: each option above is also a line `key = value` of the config file\n"
               "(max-queued = 5000; booleans true/false) and an environment variable\n"
               "TROUPED_<KEY> (TROUPED_MAX_QUEUED=5000; TROUPED_CONFIG for --config). The\n"
               "command line overrides the environment, which overrides the file, which\n"
               "overrides the defaults. With NOTIFY_SOCKET set, trouped tells systemd\n"
               "READY=1 once it listens and STOPPING=1 when it stops (Type=notify).\n"
               "Prints \"TROUPED READY <url>\" on stdout once it listens. Exit status: 0 after\n"
               "SIGINT/SIGTERM, 1 on a start-up error (another trouped holds the state\n"
               "directory, a bad database, a socket that cannot be bound), 2 on bad usage or\n"
               "a bad setting.\n");
}

// systemd's readiness protocol (sd_notify(3)): datagrams to the socket
// NOTIFY_SOCKET names, a path or (leading '@') an abstract name. Taken
// out of the environment at start-up, so jobs do not inherit it. The
// protocol is a few lines; libsystemd would add a dependency for them.
static struct sockaddr_un notify_addr;
static socklen_t notify_len;

static void
notify_init(void)
{
    const char *p = getenv("NOTIFY_SOCKET");
    size_t n = p != NULL ? strlen(p) : 0;
    if (n >= 2 && n < sizeof notify_addr.sun_path && (p[0] == '/' || p[0] == '@')) {
        notify_addr.sun_family = AF_UNIX;
        memcpy(notify_addr.sun_path, p, n);
        if (p[0] == '@') {
            notify_addr.sun_path[0] = '\0';
        }
        notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (p[0] == '/'));
    } else if (p != NULL) {
        fprintf(stderr, "trouped: warning: NOTIFY_SOCKET=%s is not a socket address\n", p);
    }
    unsetenv("NOTIFY_SOCKET");
}

static void
notify(const char *state)
{
    if (notify_len == 0) {
        return;
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&notify_addr,
                         notify_len) < 0) {
        trd_log("notify_failed", "errno=%s", strerror(errno));
    }
    if (fd >= 0) {
        close(fd);
    }
}

static void
env_warn(const char *name)
{
    fprintf(stderr, "trouped: warning: %s names no setting (trouped --help lists them)\n", name);
}

// config_path picks the config file: --config, else $TROUPED_CONFIG (both
// must exist; "none": no file), else the user's default file (which may be
// missing). NULL: no file.
static const char *
config_path(const char *flag, char *buf, size_t len, bool *must_exist)
{
    const char *p = flag != NULL ? flag : getenv("TROUPED_CONFIG");
    *must_exist = p != NULL;
    if (p != NULL) {
        return strcmp(p, "none") == 0 ? NULL : p;
    }
    const char *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    if (geteuid() == 0) {
        snprintf(buf, len, "/etc/troupe/trouped.conf");
    } else if (x != NULL && x[0] == '/') {
        snprintf(buf, len, "%s/troupe/trouped.conf", x);
    } else if (home != NULL && home[0] == '/') {
        snprintf(buf, len, "%s/.config/troupe/trouped.conf", home);
    } else {
        return NULL;
    }
    return buf;
}

// parse_settings fills cfg from the command line, the environment and the
// config file (config.h has the precedence): -1 to go on, or the exit
// status (0 after --help or --version, 2 for bad usage or settings).
static int
parse_settings(int argc, char **argv, trd_config *cfg)
{
    enum { O_HELP = 1, O_VERSION, O_CONFIG, O_KEY0 = 16 };
    struct option longopts[TRD_K_COUNT + 4];
    size_t nl = 0;
    for (unsigned k = 0; k < TRD_K_COUNT; k++) {
        longopts[nl++] = (struct option){
            trd_key_name((trd_key)k), trd_key_is_bool((trd_key)k) ? no_argument : required_argument,
            NULL, O_KEY0 + (int)k};
    }
    longopts[nl++] = (struct option){"config", required_argument, NULL, O_CONFIG};
    longopts[nl++] = (struct option){"help", no_argument, NULL, O_HELP};
    longopts[nl++] = (struct option){"version", no_argument, NULL, O_VERSION};
    longopts[nl] = (struct option){NULL, 0, NULL, 0};
    trd_config_init(cfg);
    // The flags are applied first but as the highest source: what the
    // environment and the file say later does not override them.
    const char *cfile = NULL;
    char err[512], why[256];
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c >= O_KEY0 && c < O_KEY0 + TRD_K_COUNT) {
            trd_key k = (trd_key)(c - O_KEY0);
            if (cfg->src[k] == TRD_SRC_FLAG) {
                fprintf(stderr, "trouped: --%s given twice\n", trd_key_name(k));
                return 2;
            }
            if (!trd_config_set(cfg, TRD_SRC_FLAG, k, trd_key_is_bool(k) ? NULL : optarg, why,
                                sizeof why)) {
                fprintf(stderr, "trouped: --%s: %s\n", trd_key_name(k), why);
                return 2;
            }
            continue;
        }
        switch (c) {
        case O_CONFIG:
            cfile = optarg;
            break;
        case O_HELP:
            usage(stdout);
            return 0;
        case O_VERSION:
            printf("trouped %s\n", TRD_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "trouped: unexpected argument %s\n", argv[optind]);
        return 2;
    }
    extern char **environ;
    if (!trd_config_env(cfg, environ, env_warn, err, sizeof err)) {
        fprintf(stderr, "trouped: %s\n", err);
        return 2;
    }
    char pbuf[4096];
    bool must;
    const char *path = config_path(cfile, pbuf, sizeof pbuf, &must);
    if (path != NULL && !trd_config_load_file(cfg, path, must, err, sizeof err)) {
        fprintf(stderr, "trouped: %s\n", err);
        return 2;
    }
    if (!trd_config_finish(cfg, err, sizeof err)) {
        fprintf(stderr, "trouped: %s\n", err);
        return 2;
    }
    return -1;
}

// mkdir_p makes path and its parents (mode for the last one only).
static int
mkdir_p(const char *path, mode_t mode)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
                return -1;
            }
            *p = '/';
        }
    }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST) {
        return -1;
    }
    return 0;
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void *
rt_thread(void *arg)
{
    tr_rt_block_on(arg, NULL, NULL);
    return NULL;
}

static void
daemon_free_slots(trd_daemon *d)
{
    for (uint32_t i = 0; i < TRD_CONTEXTS; i++) {
        trd_slot *s = &d->d_slots[i];
        if (s->s_aio != NULL) {
            nng_aio_stop(s->s_aio);
            nng_msg *nm = nng_aio_get_msg(s->s_aio);
            if (nm != NULL) {
                nng_msg_free(nm);
            }
            nng_aio_free(s->s_aio);
            s->s_aio = NULL;
        }
        if (s->s_req != NULL) {
            nng_msg_free(s->s_req);
            s->s_req = NULL;
        }
    }
}

int
main(int argc, char **argv)
{
    static trd_config cfg;
    notify_init();
    // systemd's directories are trouped's defaults, not its jobs': a
    // trouped started by a job must not take them for its own.
    static char sd_state[4096], sd_runtime[4096];
    const char *sde = getenv("STATE_DIRECTORY"), *rde = getenv("RUNTIME_DIRECTORY");
    snprintf(sd_state, sizeof sd_state, "%s", sde != NULL ? sde : "");
    snprintf(sd_runtime, sizeof sd_runtime, "%s", rde != NULL ? rde : "");
    unsetenv("STATE_DIRECTORY");
    unsetenv("RUNTIME_DIRECTORY");
    int st = parse_settings(argc, argv, &cfg);
    if (st >= 0) {
        trd_config_free(&cfg);
        return st;
    }
    const char *state_dir = cfg.state_dir, *listen_url = cfg.listen, *events_url = cfg.events;
    uint64_t output_cap = cfg.output_cap;
    const char *tcp_url = cfg.tcp, *certkey = cfg.tls_cert_key, *token_file = cfg.token_file;
    uint64_t max_queued = cfg.max_queued, max_running = cfg.max_running;
    bool insecure = cfg.insecure_tcp;
    bool ephemeral = cfg.ephemeral;
    trd_durability dur = cfg.durability_full ? TRD_DURABLE_FULL : TRD_DURABLE_PROCESS;
    const char *plugin_dir = cfg.plugin_dir;
    bool root = geteuid() == 0;
    char dirbuf[4096], urlbuf[4200], eph[64] = "";
    if (ephemeral) {
        snprintf(eph, sizeof eph, "%s/trouped-XXXXXX",
                 getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
        if (mkdtemp(eph) == NULL) {
            fprintf(stderr, "trouped: mkdtemp %s: %s\n", eph, strerror(errno));
            return 1;
        }
        state_dir = eph;
    } else if (state_dir == NULL) {
        const char *x = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
        const char *sd = sd_state; // systemd's StateDirectory=
        if (sd[0] == '/') {
            snprintf(dirbuf, sizeof dirbuf, "%.*s", (int)strcspn(sd, ":"), sd);
        } else if (root) {
            snprintf(dirbuf, sizeof dirbuf, "/var/lib/troupe");
        } else if (x != NULL && x[0] == '/') {
            snprintf(dirbuf, sizeof dirbuf, "%s/troupe", x);
        } else if (home != NULL && home[0] == '/') {
            snprintf(dirbuf, sizeof dirbuf, "%s/.local/state/troupe", home);
        } else {
            fprintf(stderr, "trouped: no HOME or XDG_STATE_HOME: give --state-dir\n");
            return 1;
        }
        state_dir = dirbuf;
    }
    // The state directory's parents (XDG_STATE_HOME may not exist yet).
    if (!ephemeral && mkdir_p(state_dir, 0700) != 0) {
        fprintf(stderr, "trouped: mkdir %s: %s\n", state_dir, strerror(errno));
        return 1;
    }
    char err[512] = "";
    int lockfd = -1;
    tr_err rv = trd_state_lock(state_dir, &lockfd, err, sizeof err);
    if (rv != TR_OK) {
        fprintf(stderr, "trouped: %s\n", err);
        trd_log("start_failed", "step=lock state_dir=\"%s\" code=%s", state_dir, tr_err_name(rv));
        if (ephemeral) {
            rmdir(eph);
        }
        return 1;
    }
    if (listen_url == NULL) {
        const char *xr = getenv("XDG_RUNTIME_DIR");
        const char *rd = sd_runtime; // systemd's RuntimeDirectory=
        char rdir[4096];
        if (rd[0] == '/') {
            snprintf(rdir, sizeof rdir, "%.*s", (int)strcspn(rd, ":"), rd);
        } else if (root || xr == NULL || xr[0] != '/') {
            snprintf(rdir, sizeof rdir, root ? "/run/troupe" : "/tmp/troupe-%d", (int)geteuid());
        } else {
            snprintf(rdir, sizeof rdir, "%s/troupe", xr);
        }
        if (mkdir_p(rdir, 0700) != 0 || chmod(rdir, 0700) != 0) {
            fprintf(stderr, "trouped: mkdir %s: %s\n", rdir, strerror(errno));
            return 1;
        }
        snprintf(urlbuf, sizeof urlbuf, "ipc://%s/trouped.sock", rdir);
        listen_url = urlbuf;
    }

    // Block the stop signals before any thread starts: every thread
    // inherits the mask, and main takes them with sigwait.
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGINT);
    sigaddset(&stop_set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
    signal(SIGPIPE, SIG_IGN);

    static trd_daemon dd;
    trd_daemon *d = &dd;
    pthread_mutex_init(&d->d_sp_lock, NULL);
    pthread_mutex_init(&d->d_rp_lock, NULL);
    pthread_cond_init(&d->d_rp_cond, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->d_sp_cond, &ca);
    pthread_condattr_destroy(&ca);
    d->d_state_dir = state_dir;
    d->d_start_ms = mono_ms();
    d->d_output_cap = output_cap;
    d->d_max_running = (uint32_t)max_running;
    d->d_cgroup_mode = cfg.cgroup;
    if (events_url == NULL) {
        events_default(d, listen_url);
    } else if (strcmp(events_url, "none") != 0) {
        snprintf(d->d_events_url, sizeof d->d_events_url, "%s", events_url);
    }
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    d->d_cores = nc > 0 ? (unsigned)nc : 1;
    if (snprintf(d->d_out_dir, sizeof d->d_out_dir, "%s/out", state_dir) >=
        (int)sizeof d->d_out_dir) {
        fprintf(stderr, "trouped: state directory path too long\n");
        return 1;
    }
    int status = 1, sig = 0;
    char dbpath[sizeof d->d_out_dir + 16];
    pthread_t rtt;
    bool rt_running = false;
    if (mkdir(d->d_out_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "trouped: mkdir %s: %s\n", d->d_out_dir, strerror(errno));
        goto out;
    }
    snprintf(dbpath, sizeof dbpath, "%s/jobs.db", state_dir);
    rv = trd_store_open(dbpath, dur, &d->d_store, err, sizeof err);
    if (rv != TR_OK) {
        fprintf(stderr, "trouped: %s: %s\n", dbpath, err);
        goto out;
    }
    trd_store_set_max_unfinished(d->d_store, max_queued);
    tr_rt_config rc;
    tr_rt_config_init(&rc);
    rc.workers = (unsigned)cfg.workers;
    if ((rv = tr_rt_new(&rc, &d->d_rt)) != TR_OK) {
        fprintf(stderr, "trouped: runtime: %s\n", tr_strerror(rv));
        goto out;
    }
    if ((rv = trd_plugins_load(d->d_rt, plugin_dir, err, sizeof err)) != TR_OK) {
        fprintf(stderr, "trouped: %s\n", err);
        trd_log("start_failed", "step=plugins code=%s", tr_err_name(rv));
        goto out;
    }
    if ((rv = tr_actor_spawn(d->d_rt, &control_spec, d, NULL, &d->d_control)) != TR_OK ||
        (rv = trd_runner_start(d)) != TR_OK) {
        fprintf(stderr, "trouped: actors: %s\n", tr_strerror(rv));
        goto out;
    }
    if (pthread_create(&rtt, NULL, rt_thread, d->d_rt) != 0) {
        fprintf(stderr, "trouped: pthread_create: %s\n", strerror(errno));
        goto out;
    }
    rt_running = true;
    // Events first: a client that learns the control URL may subscribe.
    if (events_open(d, err, sizeof err) != 0 || control_open(d, listen_url, err, sizeof err) != 0 ||
        (tcp_url != NULL &&
         tcp_open(d, tcp_url, certkey, token_file, insecure, err, sizeof err) != 0)) {
        fprintf(stderr, "trouped: %s\n", err);
        goto out;
    }
    trd_log("ready", "url=%s tcp=%s events=%s state_dir=\"%s\" durability=%s contexts=%d pid=%d",
            listen_url, d->d_tcp_url[0] != '\0' ? d->d_tcp_url : "none",
            d->d_events_url[0] != '\0' ? d->d_events_url : "none", state_dir,
            dur == TRD_DURABLE_FULL ? "full" : "process", TRD_CONTEXTS, (int)getpid());
    printf("TROUPED READY %s%s%s\n", listen_url, d->d_tcp_url[0] != '\0' ? " " : "", d->d_tcp_url);
    fflush(stdout);
    char ready[128];
    snprintf(ready, sizeof ready, "READY=1\nMAINPID=%d\nSTATUS=listening on %.64s", (int)getpid(),
             listen_url);
    notify(ready);

    while (sigwait(&stop_set, &sig) != 0) {
    }
    notify("STOPPING=1");
    if (atomic_load_explicit(&d->d_stop_requested, memory_order_acquire) &&
        atomic_load_explicit(&d->d_shutdown_pipe, memory_order_acquire) != 0) {
        // The Shutdown's reply is on its way: let its client take it and
        // hang up before the sockets close (bounded).
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += 3;
        pthread_mutex_lock(&d->d_sp_lock);
        while (!d->d_sp_gone &&
               pthread_cond_timedwait(&d->d_sp_cond, &d->d_sp_lock, &until) != ETIMEDOUT) {
        }
        bool gone = d->d_sp_gone;
        pthread_mutex_unlock(&d->d_sp_lock);
        trd_log("shutdown_reply", "client_hung_up=%d", (int)gone);
    }
    trd_log("stopping", "signal=%s requested=%d", sig == SIGINT ? "SIGINT" : "SIGTERM",
            (int)atomic_load_explicit(&d->d_stop_requested, memory_order_acquire));
    status = 0;
out:
    atomic_store_explicit(&d->d_stopping, true, memory_order_seq_cst);
    gate_drain(d);
    if (d->d_slots[0].s_aio != NULL) {
        nng_close(d->d_sock);
    }
    if (nng_socket_id(d->d_pub) > 0) {
        nng_close(d->d_pub);
    }
    if (d->d_rt != NULL) {
        tr_rt_shutdown(d->d_rt, TR_SHUTDOWN_IMMEDIATE, 0);
        if (rt_running) {
            pthread_join(rtt, NULL);
        }
    }
    if (d->d_store != NULL) {
        trd_store_close(d->d_store);
    }
    // The runtime first: its blocking pool may still be answering a Logs
    // (trd_reply on a slot's aio), so the slots outlive it.
    if (d->d_rt != NULL) {
        tr_rt_free(d->d_rt);
    }
    daemon_free_slots(d);
    nng_fini();
    if (ephemeral) {
        nftw(eph, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    }
    close(lockfd);
    trd_log("stopped", "status=%d", status);
    return status;
}
