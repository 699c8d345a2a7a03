// fuzz_control.c: trouped's control-request decoder (daemon/request.h), as
// a client reaches it: any bytes off the control socket. Every input must
// be refused cleanly (an error, no message, a non-empty reason) or decode
// into a ControlRequest of protocol 1 that names an operation and passes
// the checks trouped relies on (a Submit's request id, job count and
// tasks, a plugin task's kind one that the lookup knows; id lists within
// bounds), and that packs, unpacks and packs to the same bytes; no crash,
// no leak. The lookup knows one plugin kind, "demo.echo", as a trouped
// that loaded the test plugin would.
//
// Built two ways, as every harness here (fuzz_replay.h): a libFuzzer
// target with clang and -DTR_FUZZ=ON (`fuzz_control corpus/`), and always
// a replay driver that ctest runs over the seeds below and a bounded number
// of deterministic mutations of them (fuzz.control).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

static size_t decoded, refused;

static bool
known(void *arg, const char *name)
{
    (void)arg;
    return strcmp(name, "demo.echo") == 0;
}

static void
bad(const char *what)
{
    fprintf(stderr, "fuzz_control: %s\n", what);
    abort();
}

static void
check_request(tr_msg *m)
{
    const Troupe__V1__ControlRequest *r = tr_msg_body(m);
    if (!tr_msg_is(m, &troupe__v1__control_request__descriptor) ||
        r->version != TROUPE__V1__CONTROL_VERSION__CONTROL_VERSION_1 ||
        r->request_case == TROUPE__V1__CONTROL_REQUEST__REQUEST__NOT_SET) {
        bad("a decoded request is not one trouped can act on");
    }
    if (r->request_case == TROUPE__V1__CONTROL_REQUEST__REQUEST_SUBMIT) {
        const Troupe__V1__SubmitBatch *b = r->submit->batch;
        if (r->request_id[0] == '\0' || b == NULL || b->n_jobs == 0 || b->job_count != b->n_jobs) {
            bad("a decoded Submit fails its own checks");
        }
        for (size_t i = 0; i < b->n_jobs; i++) {
            const Troupe__V1__JobSpec *j = b->jobs[i];
            if (j->task_case == TROUPE__V1__JOB_SPEC__TASK_EXEC &&
                (j->exec->n_argv == 0 || j->exec->argv[0][0] == '\0')) {
                bad("a decoded exec job has no program");
            }
            if (j->task_case == TROUPE__V1__JOB_SPEC__TASK_PLUGIN &&
                (!trd_kind_name_ok(j->plugin->kind) || !known(NULL, j->plugin->kind))) {
                bad("a decoded plugin job names a kind nobody registered");
            }
        }
    }
    if (r->request_case == TROUPE__V1__CONTROL_REQUEST__REQUEST_STATUS &&
        (r->status->n_ids == 0 || r->status->n_ids > TRD_IDS_MAX)) {
        bad("a decoded Status has an id list out of bounds");
    }
    size_t n1 = tr_msg_packed_size(m);
    uint8_t *b1 = malloc(n1 + 1);
    if (b1 == NULL || tr_msg_pack_to(m, b1) != n1) {
        abort();
    }
    tr_msg *u;
    char why[512];
    if (trd_request_decode(b1, n1, known, NULL, &u, why, sizeof why) != TR_OK) {
        bad("a decoded request does not decode again");
    }
    size_t n2 = tr_msg_packed_size(u);
    uint8_t *b2 = malloc(n2 + 1);
    if (b2 == NULL || tr_msg_pack_to(u, b2) != n2 || n1 != n2 || memcmp(b1, b2, n1) != 0) {
        bad("packing is not stable");
    }
    tr_msg_free(u);
    free(b2);
    free(b1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tr_msg *m;
    char why[512];
    tr_err rv = trd_request_decode(data, size, known, NULL, &m, why, sizeof why);
    if (rv == TR_OK) {
        check_request(m);
        tr_msg_free(m);
        decoded++;
        return 0;
    }
    if (m != NULL || why[0] == '\0' || memchr(why, '\0', sizeof why) == NULL) {
        fprintf(stderr, "fuzz_control: a bad refusal: %s: %.511s\n", tr_strerror(rv), why);
        abort();
    }
    refused++;
    return 0;
}

#ifndef TR_LIBFUZZER

// ---------------------------------------------------------------------------
// The replay driver (fuzz_replay.h): seeds packed here from real requests.

#include "fuzz_replay.h"

static size_t
pack_request(Troupe__V1__ControlRequest *r, uint8_t *buf, size_t cap)
{
    tr_msg *m;
    Troupe__V1__ControlRequest *body;
    m = tr_msg_new(&troupe__v1__control_request__descriptor, 0, (void **)&body);
    *body = *r; // the seed's own fields point at static data: only packed
    size_t n = tr_msg_packed_size(m);
    if (n > cap) {
        abort();
    }
    tr_msg_pack_to(m, buf);
    troupe__v1__control_request__init(body); // not ours to free
    tr_msg_free(m);
    return n;
}

static size_t
seed(int i, uint8_t *buf, size_t cap)
{
    Troupe__V1__ControlRequest r = TROUPE__V1__CONTROL_REQUEST__INIT;
    r.version = TROUPE__V1__CONTROL_VERSION__CONTROL_VERSION_1;
    r.request_id = "0123456789abcdef";
    Troupe__V1__Ping ping = TROUPE__V1__PING__INIT;
    Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
    Troupe__V1__Submit sub = TROUPE__V1__SUBMIT__INIT;
    Troupe__V1__JobSpec j0 = TROUPE__V1__JOB_SPEC__INIT, j1 = TROUPE__V1__JOB_SPEC__INIT;
    Troupe__V1__JobSpec *jobs[] = {&j0, &j1};
    Troupe__V1__ExecTask ex = TROUPE__V1__EXEC_TASK__INIT;
    char *argv[] = {"/bin/sh", "-c", "echo hi"};
    Troupe__V1__NoopTask noop = TROUPE__V1__NOOP_TASK__INIT;
    Troupe__V1__PluginTask plug = TROUPE__V1__PLUGIN_TASK__INIT;
    char *after[] = {"hi"};
    Troupe__V1__StatusJobs st = TROUPE__V1__STATUS_JOBS__INIT;
    uint64_t ids[] = {1, 2, 3};
    Troupe__V1__ListJobs li = TROUPE__V1__LIST_JOBS__INIT;
    Troupe__V1__JobState states[] = {TROUPE__V1__JOB_STATE__JOB_STATE_QUEUED,
                                     TROUPE__V1__JOB_STATE__JOB_STATE_FAILED};
    Troupe__V1__WaitJobs wa = TROUPE__V1__WAIT_JOBS__INIT;
    switch (i) {
    case 0:
        r.request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_PING;
        r.ping = &ping;
        break;
    case 1:
    case 2:
        ex.argv = argv;
        ex.n_argv = 3;
        j0.name = "hi";
        j0.task_case = TROUPE__V1__JOB_SPEC__TASK_EXEC;
        j0.exec = &ex;
        j1.task_case = TROUPE__V1__JOB_SPEC__TASK_NOOP;
        j1.noop = &noop;
        j1.after_names = after;
        j1.n_after_names = 1;
        b.jobs = jobs;
        b.n_jobs = 2;
        b.job_count = i == 1 ? 2 : 3; // 2: a count that does not match
        sub.batch = &b;
        r.request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_SUBMIT;
        r.submit = &sub;
        break;
    case 3:
        st.ids = ids;
        st.n_ids = 3;
        r.request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_STATUS;
        r.status = &st;
        break;
    case 4:
        li.states = states;
        li.n_states = 2;
        li.group = "build";
        li.limit = 10;
        r.request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_LIST;
        r.list = &li;
        break;
    case 5:
    case 6:
        wa.ids = ids;
        wa.n_ids = 1;
        wa.timeout_ms = 1000;
        r.version = i == 5 ? r.version : 2; // 6: another protocol
        r.request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_WAIT;
        r.wait = &wa;
        break;
    default:
        // A plugin job: a kind the lookup knows (7), and one it does not (8).
        plug.kind = i == 7 ? "demo.echo" : "demo.nope";
        plug.args.data = (uint8_t *)"hello";
        plug.args.len = 5;
        j0.task_case = TROUPE__V1__JOB_SPEC__TASK_PLUGIN;
        j0.plugin = &plug;
        b.jobs = jobs;
        b.n_jobs = 1;
        b.job_count = 1;
        sub.batch = &b;
        r.request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_SUBMIT;
        r.submit = &sub;
        break;
    }
    return pack_request(&r, buf, cap);
}

static const char *
done(void)
{
    static char text[96];
    snprintf(text, sizeof text, "%zu decoded, %zu refused", decoded, refused);
    return text;
}

int
main(int argc, char **argv)
{
    const fuzz_replay r = {"control", seed, 9, 20000, done};
    return fuzz_replay_main(argc, argv, &r);
}

#endif
