#define _GNU_SOURCE
// test_plugins.c: plugin jobs on a real trouped (--ephemeral, a fresh ipc
// socket, --plugin-dir with the test plugin, tests/daemon/plugins/
// demo_plugin.c), through troupe/client.h and the built troupe CLI: a
// demo.echo job succeeds and its stdout is its arguments (up to its cap);
// demo.fail fails with its text (retried first); demo.wait, pending until
// cancelled, is cancelled while it runs (its RUNNING event seen first)
// and times out; a kind no plugin registered and a name that is no kind
// name are refused at Submit; `troupe submit --plugin KIND --args S`;
// and a trouped whose plugin directory is group-writable does not start.
// Nothing sleeps: waits are the daemon's Wait, events and child exits,
// each with a deadline.
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child_util.h"
#include "cli_util.h"
#include "daemon_util.h"
#include "fs_util.h"

#ifndef DEMO_PLUGIN
#error "DEMO_PLUGIN: the path of the built test plugin"
#endif

static daemon_proc g_d;
static char g_plugins[64]; // the plugin directory

// plugins_daemon starts trouped --ephemeral on a socket named by tag, with
// --plugin-dir dir (its stderr captured when capture_err: daemon_util.h).
static void
plugins_daemon(daemon_proc *p, const char *tag, const char *dir, bool capture_err)
{
    snprintf(p->url, sizeof p->url, "ipc:///tmp/troupe-test-plugins-%d-%s.sock", (int)getpid(),
             tag);
    char *args[] = {"--ephemeral", "--listen",     p->url,      "--durability",
                    "process",     "--plugin-dir", (char *)dir, NULL};
    daemon_spawn_io(p, args, capture_err);
}

static void
start_daemon(void)
{
    step("start trouped with the test plugin");
    snprintf(g_plugins, sizeof g_plugins, "/tmp/troupe-test-plugins-XXXXXX");
    assert_non_null(mkdtemp(g_plugins));
    char to[128];
    snprintf(to, sizeof to, "%s/demo.so", g_plugins);
    fs_copy(DEMO_PLUGIN, to, 0644);
    plugins_daemon(&g_d, "main", g_plugins, false);
    daemon_ready(&g_d);
}

static void
stop_daemon(void)
{
    step("stop trouped");
    daemon_stop(&g_d);
    fs_rm_tree(g_plugins);
}

// ---------------------------------------------------------------------------
// Requests.

// plugin_job fills spec (and pt) with a job of kind, args its bytes
// (len of them).
static void
plugin_job(Troupe__V1__JobSpec *spec, Troupe__V1__PluginTask *pt, const char *kind,
           const void *args, size_t len)
{
    troupe__v1__job_spec__init(spec);
    troupe__v1__plugin_task__init(pt);
    pt->kind = (char *)kind;
    pt->args.data = (uint8_t *)args;
    pt->args.len = len;
    spec->task_case = TROUPE__V1__JOB_SPEC__TASK_PLUGIN;
    spec->plugin = pt;
}

// submit submits one job: TR_OK and *id, or the daemon's error.
static tr_err
submit(tr_client *c, Troupe__V1__JobSpec *spec, uint64_t *id)
{
    Troupe__V1__JobSpec *jobs[] = {spec};
    Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
    b.jobs = jobs;
    b.n_jobs = 1;
    b.job_count = 1;
    uint32_t count = 0;
    tr_err rv = tr_client_submit(c, &b, id, &count);
    assert_true(rv != TR_OK || count == 1);
    return rv;
}

// wait_final waits (with a deadline) for job id to be final: its JobInfo
// in *reply (the caller frees it).
static const Troupe__V1__JobInfo *
wait_final(tr_client *c, uint64_t id, tr_msg **reply)
{
    bool timed_out = true;
    assert_int_equal(tr_client_wait(c, &id, 1, 60000, reply, &timed_out), TR_OK);
    assert_false(timed_out);
    const Troupe__V1__JobList *jl = tr_client_reply_jobs(*reply);
    assert_non_null(jl);
    assert_int_equal(jl->n_jobs, 1);
    return jl->jobs[0];
}

// stdout_of reads a final job's stdout to its eof: malloc'd, *len bytes.
static uint8_t *
stdout_of(tr_client *c, uint64_t id, size_t *len)
{
    uint8_t *b = NULL;
    size_t n = 0;
    for (bool eof = false; !eof;) {
        tr_msg *reply;
        assert_int_equal(tr_client_logs(c, id, 1, n, 0, false, &reply), TR_OK);
        const Troupe__V1__LogChunk *lc = tr_client_reply_log(reply);
        assert_non_null(lc);
        assert_int_equal(lc->offset, n);
        b = realloc(b, n + lc->data.len + 1);
        assert_non_null(b);
        memcpy(b + n, lc->data.data, lc->data.len);
        n += lc->data.len;
        eof = lc->eof;
        tr_msg_free(reply);
    }
    *len = n;
    return b;
}

// wait_running waits (30 s at most) for job id's RUNNING event on sub
// (events_subscribe's).
static void
wait_running(nng_socket sub, uint64_t id)
{
    for (bool running = false; !running;) {
        tr_msg *m = next_event(sub, id, 30000);
        assert_non_null(m);
        const Troupe__V1__JobEvent *ev = tr_msg_body(m);
        running = ev->stream == 0 && ev->state == TROUPE__V1__JOB_STATE__JOB_STATE_RUNNING;
        tr_msg_free(m);
    }
}

// ---------------------------------------------------------------------------
// Cases.

static void
test_plugins_echo(void **unused)
{
    (void)unused;
    tr_client *c;
    assert_int_equal(tr_client_connect(g_d.url, &c), TR_OK);
    step("echo: its stdout is its arguments, bytes unchanged");
    static const char args[] = "hello, plugin\n\0and after a NUL";
    Troupe__V1__JobSpec spec;
    Troupe__V1__PluginTask pt;
    plugin_job(&spec, &pt, "demo.echo", args, sizeof args - 1);
    uint64_t id;
    assert_int_equal(submit(c, &spec, &id), TR_OK);
    tr_msg *reply;
    const Troupe__V1__JobInfo *ji = wait_final(c, id, &reply);
    assert_int_equal(ji->state, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    assert_string_equal(ji->error, "");
    assert_int_equal(ji->attempt, 1);
    assert_true(ji->started_ms > 0);
    assert_int_equal(ji->stdout_bytes, sizeof args - 1);
    assert_false(ji->truncated);
    tr_msg_free(reply);
    size_t n;
    uint8_t *out = stdout_of(c, id, &n);
    assert_int_equal(n, sizeof args - 1);
    assert_memory_equal(out, args, n);
    free(out);

    step("echo: past the job's output cap, the rest is dropped");
    spec.output_cap = 5;
    assert_int_equal(submit(c, &spec, &id), TR_OK);
    ji = wait_final(c, id, &reply);
    assert_int_equal(ji->state, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    assert_int_equal(ji->stdout_bytes, sizeof args - 1);
    assert_true(ji->truncated);
    tr_msg_free(reply);
    out = stdout_of(c, id, &n);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "hello", 5);
    free(out);

    step("wait 20 ms: a runtime timer inside a plugin task");
    plugin_job(&spec, &pt, "demo.wait", "20", 2);
    assert_int_equal(submit(c, &spec, &id), TR_OK);
    ji = wait_final(c, id, &reply);
    assert_int_equal(ji->state, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    tr_msg_free(reply);
    out = stdout_of(c, id, &n);
    assert_int_equal(n, strlen("waited 20 ms"));
    assert_memory_equal(out, "waited 20 ms", n);
    free(out);
    tr_client_close(c);
}

static void
test_plugins_fail(void **unused)
{
    (void)unused;
    tr_client *c;
    assert_int_equal(tr_client_connect(g_d.url, &c), TR_OK);
    step("fail: FAILED with its text, after its retry");
    Troupe__V1__JobSpec spec;
    Troupe__V1__PluginTask pt;
    plugin_job(&spec, &pt, "demo.fail", "boom: the demo failed", 21);
    spec.retries = 1;
    uint64_t id;
    assert_int_equal(submit(c, &spec, &id), TR_OK);
    tr_msg *reply;
    const Troupe__V1__JobInfo *ji = wait_final(c, id, &reply);
    assert_int_equal(ji->state, TROUPE__V1__JOB_STATE__JOB_STATE_FAILED);
    assert_string_equal(ji->error, "boom: the demo failed");
    assert_int_equal(ji->attempt, 2);
    tr_msg_free(reply);

    step("fail without a text: the error's words");
    plugin_job(&spec, &pt, "demo.fail", NULL, 0);
    assert_int_equal(submit(c, &spec, &id), TR_OK);
    ji = wait_final(c, id, &reply);
    assert_int_equal(ji->state, TROUPE__V1__JOB_STATE__JOB_STATE_FAILED);
    assert_non_null(strstr(ji->error, "TR_EIO"));
    tr_msg_free(reply);

    step("arguments the kind's init refuses: FAILED at the start");
    plugin_job(&spec, &pt, "demo.wait", "soon", 4);
    assert_int_equal(submit(c, &spec, &id), TR_OK);
    ji = wait_final(c, id, &reply);
    assert_int_equal(ji->state, TROUPE__V1__JOB_STATE__JOB_STATE_FAILED);
    assert_non_null(strstr(ji->error, "plugin kind 'demo.wait': its task did not start"));
    assert_non_null(strstr(ji->error, "TR_EINVAL"));
    tr_msg_free(reply);
    tr_client_close(c);
}

static void
test_plugins_cancel(void **unused)
{
    (void)unused;
    tr_client *c;
    assert_int_equal(tr_client_connect(g_d.url, &c), TR_OK);
    step("cancel: subscribe to events");
    char url[512];
    nng_socket sub = events_subscribe(c, url, sizeof url);
    step("cancel: a wait job that runs, and its dependant");
    Troupe__V1__JobSpec spec;
    Troupe__V1__PluginTask pt;
    plugin_job(&spec, &pt, "demo.wait", NULL, 0);
    uint64_t id;
    assert_int_equal(submit(c, &spec, &id), TR_OK);
    wait_running(sub, id);
    Troupe__V1__NoopTask noop = TROUPE__V1__NOOP_TASK__INIT;
    Troupe__V1__JobSpec dep = TROUPE__V1__JOB_SPEC__INIT;
    dep.task_case = TROUPE__V1__JOB_SPEC__TASK_NOOP;
    dep.noop = &noop;
    dep.after_ids = &id;
    dep.n_after_ids = 1;
    uint64_t dep_id;
    assert_int_equal(submit(c, &dep, &dep_id), TR_OK);
    assert_int_equal(tr_client_cancel(c, &id, 1), TR_OK);
    tr_msg *reply;
    const Troupe__V1__JobInfo *ji = wait_final(c, id, &reply);
    assert_int_equal(ji->state, TROUPE__V1__JOB_STATE__JOB_STATE_CANCELLED);
    assert_string_equal(ji->error, "cancelled");
    assert_int_equal(ji->attempt, 1); // it had started
    tr_msg_free(reply);
    ji = wait_final(c, dep_id, &reply);
    assert_int_equal(ji->state, TROUPE__V1__JOB_STATE__JOB_STATE_FAILED);
    tr_msg_free(reply);
    nng_close(sub);

    step("timeout: the task is cancelled, the job TIMED_OUT");
    plugin_job(&spec, &pt, "demo.wait", NULL, 0);
    spec.timeout_ms = 200;
    assert_int_equal(submit(c, &spec, &id), TR_OK);
    ji = wait_final(c, id, &reply);
    assert_int_equal(ji->state, TROUPE__V1__JOB_STATE__JOB_STATE_TIMED_OUT);
    assert_string_equal(ji->error, "timed out after 200 ms");
    assert_true(ji->ended_ms - ji->started_ms >= 200);
    tr_msg_free(reply);
    tr_client_close(c);
}

static void
test_plugins_refused_at_submit(void **unused)
{
    (void)unused;
    tr_client *c;
    assert_int_equal(tr_client_connect(g_d.url, &c), TR_OK);
    step("submit: a kind no plugin registered");
    Troupe__V1__JobSpec spec;
    Troupe__V1__PluginTask pt;
    plugin_job(&spec, &pt, "demo.nope", NULL, 0);
    uint64_t id;
    assert_int_equal(submit(c, &spec, &id), TR_ENOTFOUND);
    assert_non_null(strstr(tr_client_error(),
                           "submit: job 0: no plugin of this trouped registered the task kind "
                           "'demo.nope'"));
    step("submit: a kind of trouped's own, and a name that is no kind name");
    plugin_job(&spec, &pt, "exec", NULL, 0);
    assert_int_equal(submit(c, &spec, &id), TR_ENOTFOUND);
    plugin_job(&spec, &pt, "demo echo", NULL, 0);
    assert_int_equal(submit(c, &spec, &id), TR_EINVAL);
    assert_non_null(strstr(tr_client_error(), "is not a kind name"));
    tr_client_close(c);
}

static void
test_plugins_cli(void **unused)
{
    (void)unused;
    step("troupe submit --plugin --args --wait");
    cli_out o;
    cli_argv(
        g_d.url,
        (char *[]){"submit", "--plugin", "demo.echo", "--args", "from the cli", "--wait", NULL},
        30000, &o);
    if (o.rc != 0) {
        fprintf(stderr, "troupe: exit %d: %s%s", o.rc, o.out, o.err);
    }
    assert_int_equal(o.rc, 0);
    char id[32];
    assert_int_equal(sscanf(o.out, "%31s", id), 1);
    cli_free(&o);
    cli_argv(g_d.url, (char *[]){"logs", id, NULL}, 30000, &o);
    assert_int_equal(o.rc, 0);
    assert_string_equal(o.out, "from the cli");
    cli_free(&o);
    step("troupe submit --plugin: refused kinds and usage");
    cli_argv(g_d.url, (char *[]){"submit", "--plugin", "demo.nope", NULL}, 30000, &o);
    assert_int_equal(o.rc, 3);
    assert_non_null(strstr(o.err, "demo.nope"));
    cli_free(&o);
    cli_argv(g_d.url, (char *[]){"submit", "--plugin", "demo.echo", "ls", NULL}, 30000, &o);
    assert_int_equal(o.rc, 2);
    cli_free(&o);
    cli_argv(g_d.url, (char *[]){"submit", "--args", "x", "ls", NULL}, 30000, &o);
    assert_int_equal(o.rc, 2);
    cli_free(&o);
    cli_argv(g_d.url, (char *[]){"submit", "--plugin", "no good", NULL}, 30000, &o);
    assert_int_equal(o.rc, 2);
    cli_free(&o);
}

// A plugin directory others may write stops trouped's start (exit 1,
// never ready), with a message naming it.
static void
test_plugins_bad_dir_refused(void **unused)
{
    (void)unused;
    step("a group-writable plugin directory");
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/troupe-test-plugins-XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chmod(dir, 0775), 0);
    daemon_proc p;
    plugins_daemon(&p, "bad", dir, true);
    daemon_refused(&p);
    buf err = {0};
    read_all(p.errfd, 20000, 65536, &err);
    close(p.errfd);
    char want[128];
    snprintf(want, sizeof want, "trouped: plugin directory %s: mode 0775 is group-writable", dir);
    if (strstr(err.b, want) == NULL) {
        fprintf(stderr, "stderr: %s\nlacks: %s\n", err.b, want);
    }
    assert_non_null(strstr(err.b, want));
    free(err.b);
    rmdir(dir);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    start_daemon();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plugins_echo),   cmocka_unit_test(test_plugins_fail),
        cmocka_unit_test(test_plugins_cancel), cmocka_unit_test(test_plugins_refused_at_submit),
        cmocka_unit_test(test_plugins_cli),    cmocka_unit_test(test_plugins_bad_dir_refused),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    stop_daemon();
    step("nng_fini");
    nng_fini();
    alarm(0);
    return rc;
}
