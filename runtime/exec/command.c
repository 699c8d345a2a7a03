// command.c: the executor's commands from anywhere (tr_exec_send) and its
// replies (troupe/executor.h).
//
// tr_exec_send checks what can be checked without the runtime's state,
// copies the command into one message (the protobuf-c struct with its
// TaskSpec's kind and args behind it) and queues it on the inbox; a worker
// carries it out between polls (tr__cmd_handle, from the inbox's drain) and
// answers on the reply-to mailbox. A reply is one message too: the
// ExecutorReply struct, its body and whatever it points to (strings, a
// result's bytes, a page of the task list) in one tr_msg_alloc block, so
// that the receiver frees it with tr_msg_free as it frees any message, and
// a mailbox's fini drops unread replies without knowing what they are.
//
// A Spawn with want_result starts a second, small task next to the
// spawned one: it joins it, encodes its result with the kind's encoder and
// sends the TaskResult (or, cancelled itself, as at shutdown, sends
// TR_ECANCELED from its drop), so every such Spawn gets exactly one.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/exec.h"

// A page of the task list holds at most this many tasks, and this many when
// StatusRequest.max_tasks is 0.
#define STATUS_PAGE_MAX 10000u
#define STATUS_PAGE_DEFAULT 1000u

// The largest result a kind's encoder may hand back.
#define RESULT_MAX ((size_t)1 << 24)

// ---------------------------------------------------------------------------
// Replies.

typedef struct tr__reply {
    tr_exec_reply r_pub;
    Troupe__V1__ExecutorReply r_msg;
    union {
        Troupe__V1__Error error;
        Troupe__V1__Spawned spawned;
        Troupe__V1__TaskResult result;
        Troupe__V1__StatusReply status;
        Troupe__V1__Done done;
    } r_body;
} tr__reply;

static char *
reply_extra(tr__reply *r)
{
    return (char *)(r + 1);
}

static tr__reply *
reply_new(uint64_t corr, Troupe__V1__ExecutorReply__ReplyCase kind, size_t extra)
{
    tr__reply *r =
        (tr__reply *)tr__msg_zalloc(sizeof(*r) + extra, &troupe__v1__executor_reply__descriptor);
    r->r_pub.reply = &r->r_msg;
    troupe__v1__executor_reply__init(&r->r_msg);
    r->r_msg.correlation_id = corr;
    r->r_msg.reply_case = kind;
    switch (kind) {
    case TROUPE__V1__EXECUTOR_REPLY__REPLY_ERROR:
        troupe__v1__error__init(&r->r_body.error);
        r->r_msg.error = &r->r_body.error;
        break;
    case TROUPE__V1__EXECUTOR_REPLY__REPLY_SPAWNED:
        troupe__v1__spawned__init(&r->r_body.spawned);
        r->r_msg.spawned = &r->r_body.spawned;
        break;
    case TROUPE__V1__EXECUTOR_REPLY__REPLY_RESULT:
        troupe__v1__task_result__init(&r->r_body.result);
        r->r_msg.result = &r->r_body.result;
        break;
    case TROUPE__V1__EXECUTOR_REPLY__REPLY_STATUS:
        troupe__v1__status_reply__init(&r->r_body.status);
        r->r_msg.status = &r->r_body.status;
        break;
    case TROUPE__V1__EXECUTOR_REPLY__REPLY_DONE:
        troupe__v1__done__init(&r->r_body.done);
        r->r_msg.done = &r->r_body.done;
        break;
    default:
        TR__ASSERT(!"reply_new: no such reply");
    }
    return r;
}

static void
reply_send(tr_mailbox *to, tr__reply *r)
{
    // Replies are never refused: the user lane's bound does not apply.
    tr_mailbox_push(to, &r->r_pub.hdr);
}

// reply_error answers with an Error: err, its name and the detail.
static void __attribute__((format(printf, 4, 5)))
reply_error(tr_mailbox *to, uint64_t corr, tr_err err, const char *fmt, ...)
{
    if (to == NULL) {
        return;
    }
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n >= sizeof(detail) ? sizeof(detail) - 1 : (size_t)n;
    tr__reply *r = reply_new(corr, TROUPE__V1__EXECUTOR_REPLY__REPLY_ERROR, len + 1);
    memcpy(reply_extra(r), detail, len);
    r->r_body.error.code = (int32_t)err;
    r->r_body.error.name = (char *)tr_err_name(err);
    r->r_body.error.detail = reply_extra(r);
    reply_send(to, r);
}

static void
reply_done(tr_mailbox *to, uint64_t corr)
{
    if (to != NULL) {
        reply_send(to, reply_new(corr, TROUPE__V1__EXECUTOR_REPLY__REPLY_DONE, 0));
    }
}

// ---------------------------------------------------------------------------
// Results of spawns by spec.

typedef struct result_watch {
    tr_join rw_join;
    const tr__kind *rw_kind;
    tr_mailbox *rw_reply_to;
    uint64_t rw_corr;
    uint64_t rw_task;
    bool rw_sent;
} result_watch;

// send_result sends the TaskResult for out and finalises it.
static void
send_result(result_watch *rw, tr_outcome *out)
{
    void *data = NULL;
    size_t len = 0;
    tr_err err = out->err;
    if (err == TR_OK) {
        err = rw->rw_kind->k_encode(out, &data, &len);
        if (err == TR_OK && len > RESULT_MAX) {
            err = TR_ETOOBIG;
        }
        if (err != TR_OK || data == NULL) {
            free(data);
            data = NULL;
            len = 0;
        }
    }
    tr_outcome_fini(out);
    tr__reply *r = reply_new(rw->rw_corr, TROUPE__V1__EXECUTOR_REPLY__REPLY_RESULT, len);
    r->r_body.result.task_id = rw->rw_task;
    r->r_body.result.error = (int32_t)err;
    r->r_body.result.error_name = (char *)tr_err_name(err);
    if (len > 0) {
        memcpy(reply_extra(r), data, len);
        r->r_body.result.result.data = (uint8_t *)reply_extra(r);
        r->r_body.result.result.len = len;
    }
    free(data);
    rw->rw_sent = true;
    reply_send(rw->rw_reply_to, r);
}

static tr_poll
watch_poll(void *state, tr_cx *cx)
{
    result_watch *rw = state;
    tr_outcome out;
    if (tr_join_poll(&rw->rw_join, cx, &out) == TR_PENDING) {
        return TR_PENDING;
    }
    send_result(rw, &out);
    return TR_READY;
}

static void
watch_drop(void *state)
{
    result_watch *rw = state;
    if (!rw->rw_sent) {
        // Cancelled (a shutdown) or refused before its first poll: the
        // task it watches is cancelled too, or detached to run on.
        tr_join_release(&rw->rw_join);
        tr_outcome out = {.err = TR_ECANCELED};
        send_result(rw, &out);
    }
}

static const tr_task_spec watch_spec = {
    .name = "tr.exec.result",
    .poll = watch_poll,
    .drop = watch_drop,
    .size = sizeof(result_watch),
};

// ---------------------------------------------------------------------------
// Carrying commands out.

static void
spawn_by_spec(tr__worker *w, tr__cmd *c)
{
    tr_rt *rt = w->w_rt;
    const Troupe__V1__Spawn *sp = &c->c_body.spawn;
    const Troupe__V1__TaskSpec *spec = sp->spec;
    uint64_t corr = c->c_msg.correlation_id;
    tr_mailbox *to = c->c_reply_to;
    size_t klen = strlen(spec->kind);
    const tr__kind *k = tr__kind_find(rt, spec->kind, klen);
    if (k == NULL) {
        reply_error(to, corr, TR_ENOTFOUND, "no task kind '%s'", spec->kind);
        return;
    }
    if (k->k_encode == NULL) {
        reply_error(to, corr, TR_ENOTSUP,
                    "kind '%s' has no result encoder: it is spawned only in its own process "
                    "(tr_kind_spawn)",
                    k->k_name);
        return;
    }
    void *watch = NULL, *st;
    tr_err rv;
    if (sp->want_result && (rv = tr_task_new(rt, &watch_spec, &watch)) != TR_OK) {
        reply_error(to, corr, rv, "spawn of kind '%s': %s", k->k_name, tr_strerror(rv));
        return;
    }
    tr__detail_clear(); // so that a detail below is the init's own
    rv = tr__kind_new(rt, k, spec->args.data, spec->args.len, &st);
    if (rv != TR_OK) {
        if (watch != NULL) {
            tr_task_discard(watch);
        }
        const char *d = tr_error_detail();
        reply_error(to, corr, rv, "spawn of kind '%s': %s", k->k_name,
                    d != NULL && d[0] != '\0' ? d : tr_strerror(rv));
        return;
    }
    // A handle even without a watcher: the Spawned reply names the task.
    tr_join j = TR_JOIN_NONE;
    rv = tr_task_start(st, &j);
    if (rv != TR_OK) {
        if (watch != NULL) {
            tr_task_discard(watch);
        }
        reply_error(to, corr, rv, "spawn of kind '%s': %s", k->k_name, tr_strerror(rv));
        return;
    }
    uint64_t id = tr_join_id(&j).id;
    if (watch == NULL) {
        tr_join_release(&j);
    }
    if (to != NULL) {
        tr__reply *r = reply_new(corr, TROUPE__V1__EXECUTOR_REPLY__REPLY_SPAWNED, 0);
        r->r_body.spawned.task_id = id;
        reply_send(to, r);
    }
    if (watch != NULL) {
        result_watch *rw = watch;
        rw->rw_join = j;
        rw->rw_kind = k;
        rw->rw_reply_to = to;
        rw->rw_corr = corr;
        rw->rw_task = id;
        // Refused (a shutdown came meanwhile): its drop sends TR_ECANCELED.
        (void)tr_task_start(watch, NULL);
    }
}

typedef struct status_page {
    Troupe__V1__TaskStatus *entries;
    Troupe__V1__TaskStatus **ptrs;
    size_t n, max;
    uint64_t now_ms;
} status_page;

static bool
status_one(tr__slot *s, void *arg)
{
    status_page *pg = arg;
    tr_task_info info;
    if (!tr__slot_info(s, pg->now_ms, &info)) {
        return true;
    }
    Troupe__V1__TaskStatus *e = &pg->entries[pg->n];
    troupe__v1__task_status__init(e);
    e->id = info.id.id;
    e->name = (char *)info.name; // static strings, read only
    e->state = (char *)tr_task_state_name(info.state);
    e->polls = info.polls;
    e->sleeps = info.sleeps;
    e->idle_ms = info.idle_ms;
    pg->ptrs[pg->n] = e;
    return ++pg->n < pg->max;
}

static void
status(tr__worker *w, tr__cmd *c)
{
    tr_rt *rt = w->w_rt;
    const Troupe__V1__StatusRequest *rq = &c->c_body.status;
    if (c->c_reply_to == NULL) {
        return;
    }
    size_t max = 0;
    if (rq->include_tasks) {
        max = rq->max_tasks == 0 ? STATUS_PAGE_DEFAULT : rq->max_tasks;
        if (max > STATUS_PAGE_MAX) {
            max = STATUS_PAGE_MAX;
        }
    }
    size_t extra = max * (sizeof(Troupe__V1__TaskStatus) + sizeof(Troupe__V1__TaskStatus *));
    tr__reply *r =
        reply_new(c->c_msg.correlation_id, TROUPE__V1__EXECUTOR_REPLY__REPLY_STATUS, extra);
    Troupe__V1__StatusReply *sr = &r->r_body.status;
    tr_rt_stats st;
    tr_rt_get_stats(rt, &st);
    sr->live_tasks = st.live_tasks;
    sr->spawned = st.spawned;
    sr->completed = st.completed;
    sr->cancelled = st.cancelled;
    sr->polls = st.polls;
    sr->commands = st.commands;
    sr->workers = st.workers;
    sr->scheduler = (char *)tr_sched_name(st.sched);
    sr->shutting_down = atomic_load_explicit(&rt->r_shutdown, memory_order_acquire) != TR__SD_NONE;
    if (max > 0) {
        status_page pg = {
            .entries = (Troupe__V1__TaskStatus *)reply_extra(r),
            .ptrs =
                (Troupe__V1__TaskStatus **)(reply_extra(r) + max * sizeof(Troupe__V1__TaskStatus)),
            .max = max,
            .now_ms = tr__rt_now_ms(rt),
        };
        sr->next_offset = tr__pool_scan(&rt->r_pool, rq->offset, status_one, &pg);
        sr->n_tasks = pg.n;
        sr->tasks = pg.n > 0 ? pg.ptrs : NULL;
    }
    reply_send(c->c_reply_to, r);
}

void
tr__cmd_handle(tr__worker *w, tr__cmd *c)
{
    tr_rt *rt = w->w_rt;
    const Troupe__V1__ExecutorCommand *m = &c->c_msg;
    bool local = (c->c_hdr.m_flags & TR__CMD_LOCAL) != 0;
    uint64_t corr = m->correlation_id;
    switch (m->command_case) {
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN:
        if (local) {
            // tr_task_start set SCHED, which keeps the slot alive for us.
            tr__slot *s = tr__pool_lookup(tr__key_index(m->spawn->task_key));
            TR__ASSERT(s != NULL);
            rt->r_sched->push(w, s, TR__PUSH_NEW);
        } else {
            spawn_by_spec(w, c);
        }
        break;
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL:
        if (local) {
            tr__rt_cancel_cmd(w, m->cancel->task_id);
        } else {
            tr_err rv = tr_task_cancel(rt, (tr_task_id){m->cancel->task_id});
            if (rv == TR_OK) {
                reply_done(c->c_reply_to, corr);
            } else {
                reply_error(c->c_reply_to, corr, rv, "cancel of task %016llx: %s",
                            (unsigned long long)m->cancel->task_id, tr_strerror(rv));
            }
        }
        break;
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN:
        // The sender moved r_shutdown to REQUESTED (tr_rt_shutdown, or
        // tr_exec_send as it): here the mode and the deadline take effect.
        if (m->shutdown->mode == TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_IMMEDIATE) {
            int expect = TR__SD_REQUESTED;
            atomic_compare_exchange_strong_explicit(&rt->r_shutdown, &expect, TR__SD_CANCELLING,
                                                    memory_order_acq_rel, memory_order_acquire);
        } else if (m->shutdown->deadline_ms > 0) {
            atomic_store_explicit(&rt->r_deadline_ns,
                                  tr__now_ns() + (uint64_t)m->shutdown->deadline_ms * 1000000u,
                                  memory_order_release);
        }
        // Worker 0 carries it out (or tr_rt_free): wake it to look.
        tr__wake_main(rt);
        reply_done(c->c_reply_to, corr);
        break;
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_STATUS:
        status(w, c);
        break;
    default:
        // tr_exec_send refuses every other case, and tr__cmd_new makes none.
        TR__ASSERT(!"tr__cmd_handle: a command tr_exec_send should have refused");
    }
    tr__counter_add(&w->w_commands, 1);
}

// ---------------------------------------------------------------------------
// Sending.

tr_err
tr_exec_send(tr_rt *rt, const Troupe__V1__ExecutorCommand *cmd, tr_mailbox *reply_to)
{
    if (rt == NULL || cmd == NULL) {
        return tr__fail(TR_EINVAL, "tr_exec_send: NULL runtime or command");
    }
    if (cmd->base.descriptor != &troupe__v1__executor_command__descriptor) {
        return tr__fail(TR_EINVAL, "tr_exec_send: the message is not a troupe.v1.ExecutorCommand");
    }
    tr__cmd *c;
    switch (cmd->command_case) {
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN: {
        const Troupe__V1__Spawn *sp = cmd->spawn;
        if (sp == NULL || sp->task_case != TROUPE__V1__SPAWN__TASK_SPEC || sp->spec == NULL) {
            return tr__fail(TR_EINVAL, "tr_exec_send: a Spawn carries a TaskSpec (a task_key is "
                                       "the runtime's own)");
        }
        const Troupe__V1__TaskSpec *spec = sp->spec;
        const char *kind = spec->kind != NULL ? spec->kind : "";
        size_t klen = strnlen(kind, TR_KIND_NAME_MAX + 1);
        if (klen > TR_KIND_NAME_MAX) {
            return tr__fail(TR_ETOOBIG, "tr_exec_send: a kind's name is at most %d bytes",
                            TR_KIND_NAME_MAX);
        }
        if (spec->args.len > TR_EXEC_ARGS_MAX) {
            return tr__fail(TR_ETOOBIG, "tr_exec_send: %zu bytes of args (at most %zu)",
                            spec->args.len, TR_EXEC_ARGS_MAX);
        }
        if (spec->args.len > 0 && spec->args.data == NULL) {
            return tr__fail(TR_EINVAL, "tr_exec_send: TaskSpec.args: NULL data");
        }
        if (sp->want_result && reply_to == NULL) {
            return tr__fail(TR_EINVAL, "tr_exec_send: want_result needs a reply_to");
        }
        c = tr__cmd_new(TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN, klen + 1 + spec->args.len, 0);
        char *kcopy = tr__cmd_extra(c);
        memcpy(kcopy, kind, klen);
        troupe__v1__task_spec__init(&c->c_spec);
        c->c_spec.kind = kcopy;
        if (spec->args.len > 0) {
            memcpy(kcopy + klen + 1, spec->args.data, spec->args.len);
            c->c_spec.args.data = (uint8_t *)kcopy + klen + 1;
            c->c_spec.args.len = spec->args.len;
        }
        c->c_body.spawn.task_case = TROUPE__V1__SPAWN__TASK_SPEC;
        c->c_body.spawn.spec = &c->c_spec;
        c->c_body.spawn.want_result = sp->want_result;
        break;
    }
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL:
        if (cmd->cancel == NULL) {
            return tr__fail(TR_EINVAL, "tr_exec_send: a Cancel without its body");
        }
        c = tr__cmd_new(TROUPE__V1__EXECUTOR_COMMAND__COMMAND_CANCEL, 0, 0);
        c->c_body.cancel.task_id = cmd->cancel->task_id;
        break;
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN: {
        const Troupe__V1__Shutdown *sd = cmd->shutdown;
        if (sd == NULL || (sd->mode != TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_GRACEFUL &&
                           sd->mode != TROUPE__V1__SHUTDOWN_MODE__SHUTDOWN_MODE_IMMEDIATE)) {
            return tr__fail(TR_EINVAL, "tr_exec_send: a Shutdown with an unknown mode");
        }
        if (!tr__rt_shutdown_begin(rt)) {
            return tr__fail(TR_ESHUTDOWN, "tr_exec_send: a shutdown was already requested");
        }
        c = tr__cmd_new(TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN, 0, 0);
        c->c_body.shutdown.mode = sd->mode;
        c->c_body.shutdown.deadline_ms = sd->deadline_ms;
        break;
    }
    case TROUPE__V1__EXECUTOR_COMMAND__COMMAND_STATUS:
        if (cmd->status == NULL) {
            return tr__fail(TR_EINVAL, "tr_exec_send: a StatusRequest without its body");
        }
        c = tr__cmd_new(TROUPE__V1__EXECUTOR_COMMAND__COMMAND_STATUS, 0, 0);
        c->c_body.status.include_tasks = cmd->status->include_tasks;
        c->c_body.status.max_tasks = cmd->status->max_tasks;
        c->c_body.status.offset = cmd->status->offset;
        break;
    default:
        return tr__fail(TR_EINVAL,
                        "tr_exec_send: no command, or one this version does not know "
                        "(case %d)",
                        (int)cmd->command_case);
    }
    c->c_msg.correlation_id = cmd->correlation_id;
    c->c_reply_to = reply_to;
    tr__rt_send(rt, c);
    return TR_OK;
}
