#define _GNU_SOURCE
// test_cli.c: the troupe CLI against a real trouped in a child process
// (--ephemeral, a fresh ipc socket): each case runs the built troupe
// binary and checks its output and exit code (--json parsed back with
// jansson), and the client library where the CLI does not show it
// (follow of both streams, watch, accessors, the dial that fails at
// once). Nothing sleeps to wait for something: a child's output is read
// with poll and its exit with a pidfd, each with a deadline; the daemon's
// ready line is a blocking read.
//
// Cases that need the daemon's side of Cancel, Logs, Group, Shutdown and
// the event socket fail until trouped serves them (it answers TR_ENOTSUP
// now): cancel, logs, logs -f, pause/resume, shutdown, follow, watch.
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child_util.h"
#include "cli_util.h"

#include <jansson.h>
#include <nng/nng.h>
#include <troupe/client.h>

#ifndef TROUPED_BIN
#error "TROUPED_BIN: the path of trouped"
#endif

// ---------------------------------------------------------------------------
// Children.

typedef struct daemon_proc {
    pid_t pid;
    FILE *out;
    char url[256];
} daemon_proc;

static daemon_proc g_d;

// daemon_start starts trouped (--ephemeral) on a socket named by tag and
// reads its ready line.
static void
daemon_start(daemon_proc *p, const char *tag)
{
    snprintf(p->url, sizeof p->url, "ipc:///tmp/troupe-test-cli-%d-%s.sock", (int)getpid(), tag);
    int pout[2];
    assert_int_equal(pipe2(pout, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    char *argv[] = {TROUPED_BIN,    "--ephemeral", "--listen", p->url,
                    "--durability", "process",     NULL};
    assert_int_equal(posix_spawn(&p->pid, TROUPED_BIN, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(pout[1]);
    p->out = fdopen(pout[0], "r");
    assert_non_null(p->out);
    char line[512], url[256];
    assert_non_null(fgets(line, sizeof line, p->out));
    assert_int_equal(sscanf(line, "TROUPED READY %255s", url), 1);
    assert_string_equal(url, p->url);
}

static void
cli_va(cli_out *o, va_list ap)
{
    char *args[60];
    size_t n = 0;
    for (char *a; n < 59 && (a = va_arg(ap, char *)) != NULL;) {
        args[n++] = a;
    }
    args[n] = NULL;
    cli_argv(g_d.url, args, 30000, o);
}

// cli runs troupe --url <the daemon> ARGS... (NULL-terminated), 30 s at
// most.
static void
cli(cli_out *o, ...)
{
    va_list ap;
    va_start(ap, o);
    cli_va(o, ap);
    va_end(ap);
}

// cli_check checks a run's exit code, showing its output when it is wrong.
static void
cli_check(const cli_out *o, int rc)
{
    if (o->rc != rc) {
        fprintf(stderr, "exit %d, not %d: %s%s", o->rc, rc, o->out, o->err);
    }
    assert_int_equal(o->rc, rc);
}

// cli_rc runs troupe as cli does and checks its exit code.
static void
cli_rc(int rc, ...)
{
    cli_out o;
    va_list ap;
    va_start(ap, rc);
    cli_va(&o, ap);
    va_end(ap);
    cli_check(&o, rc);
    cli_free(&o);
}

// json_of parses a run's stdout as one JSON document.
static json_t *
json_of(const cli_out *o)
{
    json_error_t e;
    json_t *j = json_loadb(o->out, o->outlen, 0, &e);
    if (j == NULL) {
        fprintf(stderr, "not JSON (%s at %d:%d): %s\n", e.text, e.line, e.column, o->out);
    }
    assert_non_null(j);
    return j;
}

// cli_json runs troupe as cli does, checks its exit code and returns its
// stdout parsed (the caller json_decref's it).
static json_t *
cli_json(int rc, ...)
{
    cli_out o;
    va_list ap;
    va_start(ap, rc);
    cli_va(&o, ap);
    va_end(ap);
    cli_check(&o, rc);
    json_t *j = json_of(&o);
    cli_free(&o);
    return j;
}

// submit_id submits ARGS... (after "submit") and returns the job's id.
static uint64_t
submit_id(char *const *args)
{
    char *a[40] = {"submit"};
    size_t n = 1;
    for (size_t i = 0; args[i] != NULL && n < 39; i++) {
        a[n++] = args[i];
    }
    a[n] = NULL;
    cli_out o;
    cli_argv(g_d.url, a, 30000, &o);
    assert_int_equal(o.rc, 0);
    uint64_t id = strtoull(o.out, NULL, 10);
    assert_true(id > 0);
    cli_free(&o);
    return id;
}

// job_state returns job id's state as --json status says it.
static char *
job_state(uint64_t id)
{
    char ids[32];
    snprintf(ids, sizeof ids, "%llu", (unsigned long long)id);
    json_t *j = cli_json(0, "--json", "status", ids, NULL);
    json_t *jobs = json_object_get(j, "jobs");
    assert_int_equal(json_array_size(jobs), 1);
    char *st = strdup(json_string_value(json_object_get(json_array_get(jobs, 0), "state")));
    json_decref(j);
    return st;
}

static void
assert_state(uint64_t id, const char *want)
{
    char *st = job_state(id);
    assert_string_equal(st, want);
    free(st);
}

// ---------------------------------------------------------------------------
// Cases the daemon serves today.

static void
test_cli_ping(void **unused)
{
    (void)unused;
    step("ping");
    cli_out o;
    cli(&o, "ping", NULL);
    assert_int_equal(o.rc, 0);
    assert_non_null(strstr(o.out, "trouped 0.1.0"));
    cli_free(&o);
    step("ping --json");
    json_t *j = cli_json(0, "--json", "ping", NULL);
    assert_string_equal(json_string_value(json_object_get(j, "version")), "0.1.0");
    assert_int_equal(json_integer_value(json_object_get(j, "protocol")), 1);
    assert_true(json_is_integer(json_object_get(j, "uptime_ms")));
    assert_true(json_is_string(json_object_get(j, "events_url")));
    assert_true(json_is_integer(json_object_get(j, "pipes_dropped")));
    assert_true(json_integer_value(json_object_get(j, "pipes")) >= 1);
    json_decref(j);
}

static void
test_cli_submit_wait_exit_codes(void **unused)
{
    (void)unused;
    cli_out o;
    step("submit --wait true");
    cli(&o, "submit", "--wait", "--", "true", NULL);
    assert_int_equal(o.rc, 0);
    assert_non_null(strstr(o.out, "succeeded"));
    cli_free(&o);
    step("submit --wait false");
    cli(&o, "submit", "--wait", "--", "false", NULL);
    assert_int_equal(o.rc, 1);
    assert_non_null(strstr(o.out, "failed"));
    cli_free(&o);
    step("submit --wait --shell exit 3");
    json_t *j = cli_json(1, "--json", "submit", "--wait", "--shell", "exit", "3", NULL);
    json_t *job = json_array_get(json_object_get(j, "jobs"), 0);
    assert_string_equal(json_string_value(json_object_get(job, "state")), "failed");
    assert_int_equal(json_integer_value(json_object_get(job, "exit_code")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "count")), 1);
    json_decref(j);
    step("wait's exit code");
    uint64_t ok = submit_id((char *[]){"--", "true", NULL});
    uint64_t bad = submit_id((char *[]){"--", "false", NULL});
    char a[32], b[32];
    snprintf(a, sizeof a, "%llu", (unsigned long long)ok);
    snprintf(b, sizeof b, "%llu", (unsigned long long)bad);
    cli_rc(0, "wait", a, NULL);
    cli_rc(1, "wait", a, b, NULL);
}

static void
test_cli_status_list_json(void **unused)
{
    (void)unused;
    step("submit with flags");
    cli_out o;
    cli(&o, "--json", "submit", "--wait", "--name", "tbl-one", "--group", "tblg", "--priority",
        "-2", "--timeout", "1m", "--retries", "0", "--env", "TBL=xyz", "--label", "k=v", "--shell",
        "--", "printf", "%s", "$TBL", NULL);
    assert_int_equal(o.rc, 0);
    json_t *j = json_of(&o);
    json_t *job = json_array_get(json_object_get(j, "jobs"), 0);
    uint64_t id = (uint64_t)json_integer_value(json_object_get(job, "id"));
    assert_string_equal(json_string_value(json_object_get(job, "name")), "tbl-one");
    assert_string_equal(json_string_value(json_object_get(job, "group")), "tblg");
    assert_int_equal(json_integer_value(json_object_get(job, "priority")), -2);
    assert_int_equal(json_integer_value(json_object_get(job, "stdout_bytes")), 3); // "xyz"
    json_decref(j);
    cli_free(&o);

    step("status table");
    char ids[32];
    snprintf(ids, sizeof ids, "%llu", (unsigned long long)id);
    cli(&o, "status", ids, NULL);
    assert_int_equal(o.rc, 0);
    // A header, then one row whose columns line up under it.
    char *nl = strchr(o.out, '\n');
    assert_non_null(nl);
    assert_true(strncmp(o.out, "ID", 2) == 0);
    char *row = nl + 1;
    assert_non_null(strstr(row, "tbl-one"));
    assert_non_null(strstr(row, "succeeded"));
    size_t head_state = (size_t)(strstr(o.out, "STATE") - o.out);
    size_t row_state = (size_t)(strstr(row, "succeeded") - row);
    assert_int_equal(head_state, row_state);
    // Not a tty: no colour.
    assert_null(memchr(o.out, '\033', o.outlen));
    cli_free(&o);

    step("list --json by name and by group");
    j = cli_json(0, "list", "--json", "--name", "tbl-", NULL);
    assert_int_equal(json_array_size(json_object_get(j, "jobs")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "next_cursor")), 0);
    json_decref(j);
    j = cli_json(0, "--json", "list", "--group", "tblg", "--state", "succeeded", NULL);
    assert_int_equal(json_array_size(json_object_get(j, "jobs")), 1);
    json_decref(j);
    j = cli_json(0, "--json", "list", "--group", "tblg", "--state", "failed,queued", NULL);
    assert_int_equal(json_array_size(json_object_get(j, "jobs")), 0);
    json_decref(j);

    step("list table");
    cli(&o, "list", "--name", "tbl-", NULL);
    assert_int_equal(o.rc, 0);
    assert_non_null(strstr(o.out, "tbl-one"));
    cli_free(&o);

    step("status of an unknown id");
    cli(&o, "status", "999999", NULL);
    assert_int_equal(o.rc, 3);
    assert_non_null(strstr(o.err, "no such job"));
    cli_free(&o);
}

static void
test_cli_list_paging(void **unused)
{
    (void)unused;
    step("five jobs");
    uint64_t ids[5];
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "page-%d", i);
        ids[i] = submit_id((char *[]){"--name", name, "--", "true", NULL});
    }
    step("pages of 2 by cursor");
    uint64_t seen[8];
    size_t nseen = 0, pages = 0;
    char after[32] = "0";
    for (;;) {
        cli_out o;
        cli(&o, "--json", "list", "--name", "page-", "--limit", "2", "--after", after, NULL);
        assert_int_equal(o.rc, 0);
        json_t *j = json_of(&o);
        json_t *jobs = json_object_get(j, "jobs");
        assert_true(json_array_size(jobs) <= 2);
        for (size_t k = 0; k < json_array_size(jobs) && nseen < 8; k++) {
            seen[nseen++] =
                (uint64_t)json_integer_value(json_object_get(json_array_get(jobs, k), "id"));
        }
        uint64_t next = (uint64_t)json_integer_value(json_object_get(j, "next_cursor"));
        json_decref(j);
        cli_free(&o);
        pages++;
        assert_true(pages <= 4);
        if (next == 0) {
            break;
        }
        snprintf(after, sizeof after, "%llu", (unsigned long long)next);
    }
    assert_int_equal(nseen, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(seen[i], ids[i]);
    }
    step("the table says there is more");
    cli_out o;
    cli(&o, "list", "--name", "page-", "--limit", "2", NULL);
    assert_int_equal(o.rc, 0);
    assert_non_null(strstr(o.err, "more jobs"));
    cli_free(&o);
    step("--all");
    json_t *j = cli_json(0, "--json", "list", "--name", "page-", "--limit", "2", "--all", NULL);
    assert_int_equal(json_array_size(json_object_get(j, "jobs")), 5);
    assert_int_equal(json_integer_value(json_object_get(j, "next_cursor")), 0);
    json_decref(j);
}

static void
test_cli_usage_errors(void **unused)
{
    (void)unused;
    // Each exits 2, whether or not a daemon listens (the second URL has
    // none): flags are checked before the dial.
    char none[128];
    snprintf(none, sizeof none, "ipc:///tmp/troupe-test-cli-%d-none.sock", (int)getpid());
    const char *urls[] = {g_d.url, none};
    char *cases[][8] = {
        {NULL},
        {"frobnicate", NULL},
        {"ping", "extra", NULL},
        {"submit", NULL},
        {"submit", "--wait", NULL},
        {"submit", "--timeout", "1x", "--", "true", NULL},
        {"submit", "--priority", "high", "--", "true", NULL},
        {"submit", "--env", "NOEQUALS", "--", "true", NULL},
        {"submit", "--after", "abc", "--", "true", NULL},
        {"submit", "--bogus", "--", "true", NULL},
        {"status", NULL},
        {"status", "abc", NULL},
        {"wait", "0", NULL},
        {"cancel", NULL},
        {"list", "--state", "nope", NULL},
        {"list", "--limit", "0", NULL},
        {"list", "extra", NULL},
        {"logs", NULL},
        {"logs", "1", "2", NULL},
        {"pause", NULL},
        {"shutdown", "--deadline", "soon", NULL},
        {"run", NULL},
        {"run", "/nonexistent/workload.yaml", NULL},
        {"--token-file", "/nonexistent/token", "ping", NULL},
        {"--url", NULL},
        {"--frob", "ping", NULL},
    };
    for (size_t u = 0; u < 2; u++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            step(cases[i][0] != NULL ? cases[i][0] : "(no command)");
            cli_out o;
            // An empty args list: troupe --url URL and nothing else.
            char *const noargs[] = {NULL};
            cli_argv(urls[u], cases[i][0] != NULL ? cases[i] : noargs, 30000, &o);
            if (o.rc != 2) {
                fprintf(stderr, "case %zu (%s): rc %d: %s\n", i, cases[i][0], o.rc, o.err);
            }
            assert_int_equal(o.rc, 2);
            assert_true(o.errlen > 0); // said why
            cli_free(&o);
        }
    }
    step("--help");
    cli_out o;
    cli(&o, "--help", NULL);
    assert_int_equal(o.rc, 0);
    assert_non_null(strstr(o.out, "Exit status"));
    assert_non_null(strstr(o.out, "--json"));
    cli_free(&o);
}

static void
test_cli_unreachable(void **unused)
{
    (void)unused;
    step("ping with no daemon");
    char none[128];
    snprintf(none, sizeof none, "ipc:///tmp/troupe-test-cli-%d-none.sock", (int)getpid());
    uint64_t t0 = mono_ms();
    cli_out o;
    cli_argv(none, (char *[]){"ping", NULL}, 5000, &o);
    assert_int_equal(o.rc, 3);
    assert_non_null(strstr(o.err, "cannot reach trouped"));
    cli_free(&o);
    // At once, not after the call timeout (10 s).
    assert_true(mono_ms() - t0 < 5000);
    step("TROUPE_URL");
    setenv("TROUPE_URL", none, 1);
    cli_argv(NULL, (char *[]){"status", "1", NULL}, 5000, &o);
    assert_int_equal(o.rc, 3);
    cli_free(&o);
    setenv("TROUPE_URL", g_d.url, 1);
    cli_argv(NULL, (char *[]){"ping", NULL}, 5000, &o);
    assert_int_equal(o.rc, 0);
    cli_free(&o);
    unsetenv("TROUPE_URL");
}

static void
test_cli_token_file(void **unused)
{
    (void)unused;
    char path[128];
    snprintf(path, sizeof path, "/tmp/troupe-test-cli-%d.token", (int)getpid());
    step("a token file");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("s3cret\n", f);
    fclose(f);
    cli_out o;
    cli(&o, "--token-file", path, "ping", NULL);
    assert_int_equal(o.rc, 0); // ipc: the daemon does not ask for it
    cli_free(&o);
    step("an empty token file");
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    setenv("TROUPE_TOKEN_FILE", path, 1);
    cli(&o, "ping", NULL);
    assert_int_equal(o.rc, 2);
    assert_non_null(strstr(o.err, "no token"));
    cli_free(&o);
    unsetenv("TROUPE_TOKEN_FILE");
    unlink(path);
}

static void
test_cli_run_workload(void **unused)
{
    (void)unused;
    char path[128];
    snprintf(path, sizeof path, "/tmp/troupe-test-cli-%d.yaml", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("jobs:\n"
          "  - name: a\n"
          "    run: echo a\n"
          "  - name: b\n"
          "    run: echo b\n"
          "    after: [a]\n"
          "  - name: c\n"
          "    sleep: 50ms\n",
          f);
    fclose(f);
    step("run: plain lines when not a tty");
    cli_out o;
    cli(&o, "run", path, NULL);
    assert_int_equal(o.rc, 0);
    assert_non_null(strstr(o.out, "submitted 3 jobs"));
    assert_non_null(strstr(o.out, "\ta\tsucceeded"));
    assert_non_null(strstr(o.out, "\tb\tsucceeded"));
    assert_non_null(strstr(o.out, "all jobs succeeded"));
    assert_null(memchr(o.out, '\r', o.outlen));
    assert_null(memchr(o.out, '\033', o.outlen));
    cli_free(&o);
    step("run --json, a failing job");
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("jobs:\n  - name: x\n    run: exit 4\n  - name: y\n    noop: true\n", f);
    fclose(f);
    json_t *j = cli_json(1, "--json", "run", path, NULL);
    json_t *jobs = json_object_get(j, "jobs");
    assert_int_equal(json_array_size(jobs), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(jobs, 0), "state")),
                        "failed");
    json_decref(j);
    step("run: a bad file");
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("jobs: [\n", f);
    fclose(f);
    cli(&o, "run", path, NULL);
    assert_int_equal(o.rc, 2);
    assert_non_null(strstr(o.err, path));
    cli_free(&o);
    unlink(path);
}

// tty_run runs troupe ARGS... with its stdout (and stderr) on a pty, as
// on a terminal, NO_COLOR set or not: what it wrote, and its exit code.
static void
tty_run(char *const *args, bool no_color, buf *out, int *rc)
{
    int master, slave;
    assert_int_equal(openpty(&master, &slave, NULL, NULL, NULL), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, slave, 1);
    posix_spawn_file_actions_adddup2(&fa, slave, 2);
    posix_spawn_file_actions_addclose(&fa, master);
    char *argv[16] = {TROUPE_BIN, "--url", g_d.url};
    size_t n = 3;
    for (size_t i = 0; args[i] != NULL && n < 15; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    if (no_color) {
        setenv("NO_COLOR", "1", 1);
    } else {
        unsetenv("NO_COLOR");
    }
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, TROUPE_BIN, &fa, NULL, argv, environ), 0);
    unsetenv("NO_COLOR");
    posix_spawn_file_actions_destroy(&fa);
    close(slave);
    read_all(master, 30000, 4096, out);
    close(master);
    int st;
    assert_true(wait_exit(pid, 30000, &st));
    assert_true(WIFEXITED(st));
    *rc = WEXITSTATUS(st);
}

static void
test_cli_run_tty_progress(void **unused)
{
    (void)unused;
    char path[128];
    snprintf(path, sizeof path, "/tmp/troupe-test-cli-%d-tty.yaml", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("jobs:\n  - name: t1\n    run: echo one\n  - name: t2\n    noop: true\n"
          "    after: [t1]\n",
          f);
    fclose(f);
    step("run on a tty: a live progress line, colour");
    buf out = {0};
    int rc;
    tty_run((char *[]){"run", path, NULL}, false, &out, &rc);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out.b, "\r\033[K["));         // the progress line, redrawn
    assert_non_null(strstr(out.b, "[2/2]"));             // at the end, all done
    assert_non_null(strstr(out.b, "\033[32msucceeded")); // green
    assert_non_null(strstr(out.b, "all jobs succeeded"));
    free(out.b);
    step("NO_COLOR: the progress line, no colour");
    out = (buf){0};
    tty_run((char *[]){"run", path, NULL}, true, &out, &rc);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out.b, "\r\033[K["));
    assert_null(strstr(out.b, "\033[32m"));
    free(out.b);
    step("status on a tty: the state coloured");
    out = (buf){0};
    tty_run((char *[]){"status", "1", NULL}, false, &out, &rc);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out.b, "\033[1m")); // the header, bold
    free(out.b);
    unlink(path);
}

static void
test_client_accessors_and_dial(void **unused)
{
    (void)unused;
    step("connect_now: nothing listens");
    char none[128];
    snprintf(none, sizeof none, "ipc:///tmp/troupe-test-cli-%d-none.sock", (int)getpid());
    tr_client *c = NULL;
    uint64_t t0 = mono_ms();
    assert_int_not_equal(tr_client_connect_now(none, &c), TR_OK);
    assert_true(mono_ms() - t0 < 5000);
    assert_true(tr_client_error()[0] != '\0');

    step("pong and the accessors");
    assert_int_equal(tr_client_connect_now(g_d.url, &c), TR_OK);
    tr_client_set_token(c, "a-token");
    tr_msg *reply;
    assert_int_equal(tr_client_pong(c, &reply), TR_OK);
    const Troupe__V1__Pong *p = tr_client_reply_pong(reply);
    assert_non_null(p);
    assert_string_equal(p->version, "0.1.0");
    assert_non_null(p->events_url);
    assert_null(tr_client_reply_jobs(reply));
    assert_null(tr_client_reply_log(reply));
    tr_msg_free(reply);
    tr_client_set_token(c, NULL);

    step("list with no query");
    assert_int_equal(tr_client_list(c, NULL, &reply), TR_OK);
    const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
    assert_non_null(jl);
    assert_null(tr_client_reply_pong(reply));
    tr_msg_free(reply);
    tr_client_close(c);
}

// ---------------------------------------------------------------------------
// Cases that need the daemon's Cancel, Logs, Group, Shutdown and events.

static void
test_cli_cancel_running(void **unused)
{
    (void)unused;
    step("submit a job that says it runs, then sleeps 30 s");
    uint64_t id = submit_id((char *[]){"--shell", "--", "echo up; exec sleep 30", NULL});
    char ids[32];
    snprintf(ids, sizeof ids, "%llu", (unsigned long long)id);
    step("logs -f until it says up: it runs");
    int fo, fe;
    pid_t follower = cli_spawn(g_d.url, (char *[]){"logs", "-f", ids, NULL}, &fo, &fe);
    buf up = {0};
    read_upto(fo, 15000, 3, 3, &up);
    assert_int_equal(up.n, 3); // the follower must not end before the job
    assert_string_equal(up.b, "up\n");
    free(up.b);
    step("cancel --wait");
    // SIGTERM to its session ends the sleep at once: well within the
    // deadline, far from its 30 s.
    uint64_t t0 = mono_ms();
    cli_out o;
    cli_argv(g_d.url, (char *[]){"--json", "cancel", "--wait", ids, NULL}, 15000, &o);
    assert_int_equal(o.rc, 0);
    assert_true(mono_ms() - t0 < 15000);
    json_t *j = json_of(&o);
    json_t *job = json_array_get(json_object_get(j, "jobs"), 0);
    assert_string_equal(json_string_value(json_object_get(job, "state")), "cancelled");
    json_decref(j);
    cli_free(&o);
    step("the follower ends with the job");
    buf rest = {0};
    read_all(fo, 15000, 4096, &rest);
    assert_int_equal(rest.n, 0); // nothing after "up"
    free(rest.b);
    close(fo);
    close(fe);
    int st;
    assert_true(wait_exit(follower, 15000, &st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    step("wait says it did not succeed");
    cli_rc(1, "wait", ids, NULL);
    step("cancel again: harmless");
    cli_rc(0, "cancel", ids, NULL);
    step("cancel an unknown id");
    cli_rc(3, "cancel", "999999", NULL);
}

static void
test_cli_logs_bytes(void **unused)
{
    (void)unused;
    step("a job that prints known bytes");
    uint64_t id = submit_id((char *[]){"--shell", "--", "printf",
                                       "'a\\000b\\nline two\\n\\377'; printf err >&2", NULL});
    char ids[32];
    snprintf(ids, sizeof ids, "%llu", (unsigned long long)id);
    cli_out o;
    cli_rc(0, "wait", ids, NULL);
    step("logs");
    static const char want[] = "a\0b\nline two\n\377";
    cli(&o, "logs", ids, NULL);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.outlen, sizeof want - 1);
    assert_memory_equal(o.out, want, sizeof want - 1);
    cli_free(&o);
    step("logs --stderr");
    cli(&o, "logs", "--stderr", ids, NULL);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.outlen, 3);
    assert_memory_equal(o.out, "err", 3);
    cli_free(&o);
    step("logs --json");
    json_t *j = cli_json(0, "--json", "logs", ids, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "data")), "YQBiCmxpbmUgdHdvCv8=");
    assert_true(json_is_true(json_object_get(j, "eof")));
    json_decref(j);
    step("logs of an unknown id");
    cli_rc(3, "logs", "999999", NULL);
}

static void
test_cli_logs_follow_slow_reader(void **unused)
{
    (void)unused;
    // About 0.94 MB: the numbers 1..150000, one a line, in 100 slices a
    // little apart, so that the follow starts before the end.
    step("a job printing 1 MB slowly");
    uint64_t id = submit_id(
        (char *[]){"--output-cap", "16777216", "--shell", "--",
                   "i=0; while [ $i -lt 100 ]; do seq $((i*1500+1)) $((i*1500+1500)); sleep 0.01; "
                   "i=$((i+1)); done",
                   NULL});
    buf want = {0};
    for (int k = 1; k <= 150000; k++) {
        char line[16];
        int n = snprintf(line, sizeof line, "%d\n", k);
        buf_add(&want, line, (size_t)n);
    }
    char ids[32];
    snprintf(ids, sizeof ids, "%llu", (unsigned long long)id);
    step("logs -f through a slow pipe");
    int fo, fe;
    pid_t pid = cli_spawn(g_d.url, (char *[]){"logs", "-f", ids, NULL}, &fo, &fe);
    // The smallest pipe, so that troupe blocks on its writes while the
    // job goes on and the daemon's events pile up (and are dropped).
    (void)fcntl(fo, F_SETPIPE_SZ, 4096);
    buf got = {0};
    // The slow reader: it takes the first bytes (the follow runs), then
    // reads nothing until the job has ended, so troupe sits blocked on the
    // full pipe while the daemon publishes the rest (its events pile up
    // and are dropped: gaps to fill with Logs); then it drains the pipe.
    read_upto(fo, 30000, 1024, 1024, &got);
    cli_out w;
    cli(&w, "wait", ids, NULL);
    assert_int_equal(w.rc, 0);
    cli_free(&w);
    read_all(fo, 60000, 4096, &got);
    close(fo);
    int st;
    assert_true(wait_exit(pid, 30000, &st));
    char errtxt[512] = "";
    ssize_t en = read(fe, errtxt, sizeof errtxt - 1);
    close(fe);
    if (en > 0) {
        errtxt[en] = '\0';
        fprintf(stderr, "logs -f said: %s\n", errtxt);
    }
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    step("equals logs after the end, and the job's bytes");
    cli_out o;
    cli(&o, "logs", ids, NULL);
    assert_int_equal(o.rc, 0);
    assert_int_equal(got.n, o.outlen);
    assert_memory_equal(got.b, o.out, o.outlen);
    assert_int_equal(got.n, want.n);
    assert_memory_equal(got.b, want.b, want.n);
    cli_free(&o);
    free(got.b);
    free(want.b);
}

static void
test_cli_pause_resume(void **unused)
{
    (void)unused;
    cli_out o;
    step("pause");
    cli_rc(0, "pause", "held", NULL);
    step("a job of the paused group stays queued");
    uint64_t held = submit_id((char *[]){"--group", "held", "--", "true", NULL});
    // A job of another group starts and ends meanwhile: the runner has
    // scheduled since the held one came.
    cli_rc(0, "submit", "--wait", "--", "true", NULL);
    assert_state(held, "queued");
    step("resume: it runs");
    json_t *j = cli_json(0, "--json", "resume", "held", NULL);
    assert_true(json_is_object(j));
    json_decref(j);
    char ids[32];
    snprintf(ids, sizeof ids, "%llu", (unsigned long long)held);
    cli_argv(g_d.url, (char *[]){"wait", ids, NULL}, 15000, &o);
    assert_int_equal(o.rc, 0);
    cli_free(&o);
    assert_state(held, "succeeded");
}

// Collects what a follow delivers, per stream, checking the order.
typedef struct collect {
    buf c_b[3];
} collect;

static void
collect_out(void *arg, uint32_t stream, uint64_t offset, const uint8_t *data, size_t len)
{
    collect *cl = arg;
    assert_true(stream == 1 || stream == 2);
    assert_int_equal(offset, cl->c_b[stream].n); // in order, each byte once
    buf_add(&cl->c_b[stream], data, len);
}

static void
test_client_follow_both_streams(void **unused)
{
    (void)unused;
    tr_client *c;
    assert_int_equal(tr_client_connect_now(g_d.url, &c), TR_OK);
    step("a job writing to both streams");
    char *argv[] = {"/bin/sh", "-c",
                    "i=0; while [ $i -lt 200 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done"};
    Troupe__V1__ExecTask ex = TROUPE__V1__EXEC_TASK__INIT;
    ex.argv = argv;
    ex.n_argv = 3;
    Troupe__V1__JobSpec js = TROUPE__V1__JOB_SPEC__INIT;
    js.task_case = TROUPE__V1__JOB_SPEC__TASK_EXEC;
    js.exec = &ex;
    Troupe__V1__JobSpec *jobs[] = {&js};
    Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
    b.jobs = jobs;
    b.n_jobs = 1;
    uint64_t id;
    uint32_t n;
    assert_int_equal(tr_client_submit(c, &b, &id, &n), TR_OK);
    step("follow both");
    collect cl = {0};
    tr_msg *final_reply = NULL;
    tr_err rv = tr_client_follow(c, id, TR_CLIENT_STDOUT | TR_CLIENT_STDERR, collect_out, &cl,
                                 &final_reply);
    if (rv != TR_OK) {
        fprintf(stderr, "follow: %s: %s\n", tr_err_name(rv), tr_client_error());
    }
    assert_int_equal(rv, TR_OK);
    const Troupe__V1__JobList *jl = tr_client_reply_jobs(final_reply);
    assert_non_null(jl);
    assert_int_equal(jl->jobs[0]->state, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    assert_int_equal(cl.c_b[1].n, jl->jobs[0]->stdout_bytes);
    assert_int_equal(cl.c_b[2].n, jl->jobs[0]->stderr_bytes);
    tr_msg_free(final_reply);
    step("equals Logs");
    for (uint32_t st = 1; st <= 2; st++) {
        tr_msg *reply;
        assert_int_equal(tr_client_logs(c, id, st, 0, 0, false, &reply), TR_OK);
        const Troupe__V1__LogChunk *ch = tr_client_reply_log(reply);
        assert_non_null(ch);
        assert_int_equal(ch->data.len, cl.c_b[st].n);
        assert_memory_equal(ch->data.data, cl.c_b[st].b, ch->data.len);
        assert_true(ch->eof);
        tr_msg_free(reply);
        free(cl.c_b[st].b);
    }
    step("a bad stream");
    tr_msg *reply;
    assert_int_equal(tr_client_logs(c, id, 3, 0, 0, false, &reply), TR_EINVAL);
    tr_client_close(c);
}

typedef struct seen {
    uint64_t s_first;
    unsigned s_final[4];
    uint64_t s_last_seq[4];
} seen;

static void
watch_event(void *arg, const Troupe__V1__JobEvent *ev)
{
    seen *s = arg;
    size_t i = (size_t)(ev->id - s->s_first);
    assert_true(i < 3);
    assert_true(ev->seq > s->s_last_seq[i]); // seq counts up per job
    s->s_last_seq[i] = ev->seq;
    if (ev->stream == 0 && ev->state >= TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED) {
        s->s_final[i]++;
    }
}

static void
test_client_watch(void **unused)
{
    (void)unused;
    tr_client *c;
    assert_int_equal(tr_client_connect_now(g_d.url, &c), TR_OK);
    step("three jobs");
    char *argv[] = {"/bin/sh", "-c", "echo x"};
    Troupe__V1__ExecTask ex = TROUPE__V1__EXEC_TASK__INIT;
    ex.argv = argv;
    ex.n_argv = 3;
    Troupe__V1__JobSpec js = TROUPE__V1__JOB_SPEC__INIT;
    js.task_case = TROUPE__V1__JOB_SPEC__TASK_EXEC;
    js.exec = &ex;
    Troupe__V1__JobSpec *jobs[] = {&js, &js, &js};
    Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
    b.jobs = jobs;
    b.n_jobs = 3;
    uint64_t first;
    uint32_t n;
    assert_int_equal(tr_client_submit(c, &b, &first, &n), TR_OK);
    step("watch until all are final");
    uint64_t ids[] = {first, first + 1, first + 2};
    seen s = {.s_first = first};
    tr_err rv = tr_client_watch(c, ids, 3, watch_event, &s);
    if (rv != TR_OK) {
        fprintf(stderr, "watch: %s: %s\n", tr_err_name(rv), tr_client_error());
    }
    assert_int_equal(rv, TR_OK);
    for (int i = 0; i < 3; i++) {
        assert_true(s.s_final[i] <= 1); // a final state once, if not dropped
    }
    tr_msg *reply;
    assert_int_equal(tr_client_status(c, ids, 3, &reply), TR_OK);
    const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(jl->jobs[i]->state, TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED);
    }
    tr_msg_free(reply);
    tr_client_close(c);
}

static void
test_cli_shutdown(void **unused)
{
    (void)unused;
    step("a second trouped");
    daemon_proc d2;
    daemon_start(&d2, "shutdown");
    step("shutdown");
    cli_out o;
    cli_argv(d2.url, (char *[]){"shutdown", "--deadline", "5s", NULL}, 15000, &o);
    if (o.rc != 0) {
        kill(d2.pid, SIGTERM);
    }
    assert_int_equal(o.rc, 0);
    cli_free(&o);
    step("trouped exits 0");
    int st;
    assert_true(wait_exit(d2.pid, 20000, &st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    fclose(d2.out);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    unsetenv("TROUPE_URL");
    unsetenv("TROUPE_TOKEN_FILE");
    step("start trouped");
    daemon_start(&g_d, "main");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_ping),
        cmocka_unit_test(test_cli_submit_wait_exit_codes),
        cmocka_unit_test(test_cli_status_list_json),
        cmocka_unit_test(test_cli_list_paging),
        cmocka_unit_test(test_cli_usage_errors),
        cmocka_unit_test(test_cli_unreachable),
        cmocka_unit_test(test_cli_token_file),
        cmocka_unit_test(test_cli_run_workload),
        cmocka_unit_test(test_cli_run_tty_progress),
        cmocka_unit_test(test_client_accessors_and_dial),
        cmocka_unit_test(test_cli_cancel_running),
        cmocka_unit_test(test_cli_logs_bytes),
        cmocka_unit_test(test_cli_logs_follow_slow_reader),
        cmocka_unit_test(test_cli_pause_resume),
        cmocka_unit_test(test_client_follow_both_streams),
        cmocka_unit_test(test_client_watch),
        cmocka_unit_test(test_cli_shutdown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    step("stop trouped");
    kill(g_d.pid, SIGTERM);
    int st;
    bool exited = wait_exit(g_d.pid, 20000, &st);
    fclose(g_d.out);
    step("nng_fini");
    nng_fini();
    alarm(0);
    return rc != 0 ? rc : (exited && WIFEXITED(st) && WEXITSTATUS(st) == 0) ? 0 : 1;
}
