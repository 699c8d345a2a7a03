// request.c: decoding and checking control requests (request.h).
#include "request.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static tr_err fail(char *why, size_t n, tr_err err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static tr_err
fail(char *why, size_t n, tr_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
    return err;
}

static const char *
unpack_reason(tr_unpack_reason r)
{
    switch (r) {
    case TR_UNPACK_MALFORMED:
        return "malformed envelope or body";
    case TR_UNPACK_UNKNOWN:
        return "unknown body type";
    case TR_UNPACK_TOO_DEEP:
        return "nested too deep";
    case TR_UNPACK_OVER_BUDGET:
        return "body needs more memory than its budget";
    case TR_UNPACK_OVER_CAP:
        return "the daemon's unpack memory is in use: try again";
    default:
        return "ok";
    }
}

static tr_err
check_ids(const char *what, size_t count, char *why, size_t n)
{
    if (count == 0) {
        return fail(why, n, TR_EINVAL, "%s: no job ids", what);
    }
    if (count > TRD_IDS_MAX) {
        return fail(why, n, TR_ETOOBIG, "%s: %zu ids, at most %u", what, count, TRD_IDS_MAX);
    }
    return TR_OK;
}

bool
trd_kind_name_ok(const char *s)
{
    size_t len = s != NULL ? strnlen(s, TR_KIND_NAME_MAX + 1) : 0;
    if (len == 0 || len > TR_KIND_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-')) {
            return false;
        }
    }
    return true;
}

// The kinds a Submit's plugin tasks may name: the caller's lookup.
typedef struct kinds {
    trd_kind_known_fn k_known; // NULL: no plugin kind
    void *k_arg;
} kinds;

static tr_err
check_plugin(const Troupe__V1__PluginTask *p, const kinds *ks, size_t i, char *why, size_t n)
{
    const char *k = p->kind != NULL ? p->kind : "";
    if (!trd_kind_name_ok(k)) {
        return fail(why, n, TR_EINVAL,
                    "submit: job %zu: plugin kind '%.*s' is not a kind name (1 to %d bytes of "
                    "[A-Za-z0-9_.:-])",
                    i, TR_KIND_NAME_MAX, k, TR_KIND_NAME_MAX);
    }
    if (ks->k_known == NULL || !ks->k_known(ks->k_arg, k)) {
        return fail(why, n, TR_ENOTFOUND,
                    "submit: job %zu: no plugin of this trouped registered the task kind '%s'%s", i,
                    k, ks->k_known == NULL ? " (it loads no plugins: --plugin-dir)" : "");
    }
    return TR_OK;
}

// check_job says what is wrong with job i of a batch.
static tr_err
check_job(const Troupe__V1__JobSpec *j, const kinds *ks, size_t i, char *why, size_t n)
{
    switch (j->task_case) {
    case TROUPE__V1__JOB_SPEC__TASK_EXEC:
        if (j->exec->n_argv == 0 || j->exec->argv[0][0] == '\0') {
            return fail(why, n, TR_EINVAL, "submit: job %zu: exec needs a program (argv is empty)",
                        i);
        }
        return TR_OK;
    case TROUPE__V1__JOB_SPEC__TASK_SHELL:
        if (j->shell->script == NULL || j->shell->script[0] == '\0') {
            return fail(why, n, TR_EINVAL, "submit: job %zu: shell needs a script", i);
        }
        return TR_OK;
    case TROUPE__V1__JOB_SPEC__TASK_SLEEP:
    case TROUPE__V1__JOB_SPEC__TASK_NOOP:
        return TR_OK;
    case TROUPE__V1__JOB_SPEC__TASK_PLUGIN:
        return check_plugin(j->plugin, ks, i, why, n);
    default:
        return fail(why, n, TR_EINVAL,
                    "submit: job %zu: no task (exec, shell, sleep, noop or plugin)", i);
    }
}

static tr_err
check_submit(const Troupe__V1__ControlRequest *req, const kinds *ks, char *why, size_t n)
{
    const Troupe__V1__SubmitBatch *b = req->submit->batch;
    if (req->request_id == NULL || req->request_id[0] == '\0') {
        return fail(why, n, TR_EINVAL, "submit: request_id is required");
    }
    if (b == NULL || b->n_jobs == 0) {
        return fail(why, n, TR_EINVAL, "submit: the batch has no jobs");
    }
    if (b->job_count != b->n_jobs) {
        return fail(why, n, TR_EINVAL,
                    "submit: the batch states %u jobs but holds %zu (cut in transit?)",
                    b->job_count, b->n_jobs);
    }
    for (size_t i = 0; i < b->n_jobs; i++) {
        tr_err rv = check_job(b->jobs[i], ks, i, why, n);
        if (rv != TR_OK) {
            return rv;
        }
    }
    return TR_OK;
}

static tr_err
check_list(const Troupe__V1__ListJobs *l, char *why, size_t n)
{
    for (size_t i = 0; l != NULL && i < l->n_states; i++) {
        int s = (int)l->states[i];
        if (s < TROUPE__V1__JOB_STATE__JOB_STATE_QUEUED ||
            s > TROUPE__V1__JOB_STATE__JOB_STATE_SKIPPED) {
            return fail(why, n, TR_EINVAL, "list: unknown state %d", s);
        }
    }
    return TR_OK;
}

static tr_err
check_logs(const Troupe__V1__Logs *l, char *why, size_t n)
{
    if (l->id == 0) {
        return fail(why, n, TR_EINVAL, "logs: no job id");
    }
    if (l->stream != 1 && l->stream != 2) {
        return fail(why, n, TR_EINVAL, "logs: stream %u: 1 (stdout) or 2 (stderr)", l->stream);
    }
    if (l->max_bytes > TRD_LOG_CHUNK_MAX) {
        return fail(why, n, TR_EINVAL, "logs: max_bytes %u: at most %u", l->max_bytes,
                    TRD_LOG_CHUNK_MAX);
    }
    return TR_OK;
}

static tr_err
check(const Troupe__V1__ControlRequest *req, const kinds *ks, char *why, size_t n)
{
    if (req->version != TROUPE__V1__CONTROL_VERSION__CONTROL_VERSION_1) {
        return fail(why, n, TR_ENOTSUP, "protocol version %d: this trouped speaks 1",
                    (int)req->version);
    }
    switch (req->request_case) {
    case TROUPE__V1__CONTROL_REQUEST__REQUEST__NOT_SET:
        return fail(why, n, TR_EINVAL, "the request names no operation");
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_SUBMIT:
        return check_submit(req, ks, why, n);
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_STATUS:
        return check_ids("status", req->status->n_ids, why, n);
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_WAIT:
        return check_ids("wait", req->wait->n_ids, why, n);
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_CANCEL:
        return check_ids("cancel", req->cancel->n_ids, why, n);
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_LIST:
        return check_list(req->list, why, n);
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_LOGS:
        return check_logs(req->logs, why, n);
    case TROUPE__V1__CONTROL_REQUEST__REQUEST_GROUP:
        if (strlen(req->group->group) > TRD_NAME_MAX) {
            return fail(why, n, TR_EINVAL, "group: a name of %zu bytes, at most %u",
                        strlen(req->group->group), TRD_NAME_MAX);
        }
        return TR_OK;
    default:
        return TR_OK; // Ping, and what trouped answers itself
    }
}

tr_err
trd_request_decode(const void *buf, size_t len, trd_kind_known_fn known, void *arg, tr_msg **out,
                   char *why, size_t n)
{
    const kinds ks = {.k_known = known, .k_arg = arg};
    *out = NULL;
    why[0] = '\0';
    tr_unpack_info info;
    tr_msg *in = NULL;
    tr_err rv = tr_msg_unpack(buf, len, NULL, &in, &info);
    if (rv != TR_OK) {
        return fail(why, n, rv, "request of %zu bytes: %s%s%s", len, unpack_reason(info.reason),
                    info.type[0] != '\0' ? ": " : "", info.type);
    }
    if (!tr_msg_is(in, &troupe__v1__control_request__descriptor)) {
        rv = fail(why, n, TR_EINVAL, "expected a troupe.v1.ControlRequest, got %s",
                  tr_msg_descriptor(in)->name);
        tr_msg_free(in);
        return rv;
    }
    if ((rv = check(tr_msg_body(in), &ks, why, n)) != TR_OK) {
        tr_msg_free(in);
        return rv;
    }
    *out = in;
    return TR_OK;
}
