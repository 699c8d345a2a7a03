// Tests for the workload file parser (daemon/workload.h): the examples of
// deploy/examples parse, YAML and JSON give the same packed batch, every
// field lands in its JobSpec, defaults, replicas, durations, and every
// error with its exact message and line:column, the limits (100,000 jobs,
// nesting, amplification by replicas) and hostile input (aliases, a
// 100,000-job cycle checked without recursion).
// The socket address of troupe/net.h (which the harness's troupe.h brings)
// and the actor address of troupe/actor.h are both called tr_actor_addr: the
// harness gets the socket one under another name until one is renamed.
#define tr_actor_addr tr_net_addr
#include "runtime/test_util.h"
#undef tr_actor_addr

#include "workload.h"

// ---------------------------------------------------------------------------
// Helpers.

static Troupe__V1__SubmitBatch *
body(tr_msg *m)
{
    assert_true(tr_msg_is(m, &troupe__v1__submit_batch__descriptor));
    return tr_msg_body(m);
}

static tr_msg *
parse_ok_n(const char *text, size_t len)
{
    tr_msg *m = NULL;
    trd_diag d;
    tr_err rv = trd_workload_parse(text, len, &m, &d);
    if (rv != TR_OK) {
        print_error("unexpected error %s at %u:%u: %s\n", tr_strerror(rv), d.line, d.column, d.msg);
    }
    assert_int_equal(rv, TR_OK);
    assert_non_null(m);
    assert_int_equal(d.line, 0);
    Troupe__V1__SubmitBatch *b = body(m);
    assert_int_equal(b->job_count, b->n_jobs);
    return m;
}

static tr_msg *
parse_ok(const char *text)
{
    return parse_ok_n(text, strlen(text));
}

// check_err parses text, which must fail with rv, at line:col, with
// exactly msg; if not, it says what came instead and returns false.
static bool
check_err(const char *text, size_t len, tr_err rv, unsigned line, unsigned col, const char *msg)
{
    tr_msg *m = (tr_msg *)1;
    trd_diag d;
    tr_err got = trd_workload_parse(text, len, &m, &d);
    if (got != rv || d.line != line || d.column != col || strcmp(d.msg, msg) != 0) {
        print_error("input:\n%.*s\nwant %s at %u:%u: %s\ngot  %s at %u:%u: %s\n",
                    (int)(len > 400 ? 400 : len), text, tr_strerror(rv), line, col, msg,
                    tr_strerror(got), d.line, d.column, d.msg);
        return false;
    }
    assert_null(m);
    return true;
}

static void
expect_err_n(const char *text, size_t len, tr_err rv, unsigned line, unsigned col, const char *msg)
{
    assert_true(check_err(text, len, rv, line, col, msg));
}

static void
expect_err(const char *text, tr_err rv, unsigned line, unsigned col, const char *msg)
{
    expect_err_n(text, strlen(text), rv, line, col, msg);
}

static char *
read_file(const char *name, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", TR_EXAMPLES_DIR, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = malloc(TRD_WL_MAX_FILE);
    assert_non_null(buf);
    *len = fread(buf, 1, TRD_WL_MAX_FILE, f);
    fclose(f);
    return buf;
}

static uint8_t *
pack(tr_msg *m, size_t *len)
{
    Troupe__V1__SubmitBatch *b = body(m);
    *len = troupe__v1__submit_batch__get_packed_size(b);
    uint8_t *buf = malloc(*len + 1);
    assert_non_null(buf);
    assert_int_equal(troupe__v1__submit_batch__pack(b, buf), *len);
    return buf;
}

static void
assert_same_batch(tr_msg *a, tr_msg *b)
{
    size_t na, nb;
    uint8_t *pa = pack(a, &na), *pb = pack(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(pa, pb, na);
    free(pa);
    free(pb);
}

static const char *
env_get(const Troupe__V1__JobSpec *j, const char *name)
{
    for (size_t i = 0; i < j->n_env; i++) {
        if (strcmp(j->env[i]->name, name) == 0) {
            return j->env[i]->value;
        }
    }
    return NULL;
}

// A growable string for generated inputs.
typedef struct sbuf {
    char *s;
    size_t n, cap;
} sbuf;

static void __attribute__((format(printf, 2, 3))) sb_printf(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (m >= 0 && (size_t)m < b->cap - b->n) {
            b->n += (size_t)m;
            return;
        }
        b->cap = b->cap == 0 ? 4096 : b->cap * 2;
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
        if (b->n == 0) {
            b->s[0] = '\0';
        }
    }
}

// ---------------------------------------------------------------------------
// The examples.

static void
test_workload_examples_parse(void **state)
{
    static const struct {
        const char *file;
        size_t jobs;
    } ex[] = {{"pipeline.yaml", 6}, {"pipeline.json", 6}, {"mapreduce.yaml", 6}, {"flaky.yaml", 3}};
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        size_t len;
        char *text = read_file(ex[i].file, &len);
        tr_msg *m = parse_ok_n(text, len);
        Troupe__V1__SubmitBatch *b = body(m);
        assert_int_equal(b->n_jobs, ex[i].jobs);
        for (size_t j = 0; j < b->n_jobs; j++) {
            assert_int_equal(b->jobs[j]->task_case, TROUPE__V1__JOB_SPEC__TASK_SHELL);
        }
        tr_msg_free(m);
        free(text);
    }
}

static void
test_workload_example_json_equals_yaml(void **state)
{
    size_t ny, nj;
    char *y = read_file("pipeline.yaml", &ny), *j = read_file("pipeline.json", &nj);
    tr_msg *my = parse_ok_n(y, ny), *mj = parse_ok_n(j, nj);
    Troupe__V1__SubmitBatch *b = body(my);
    assert_int_equal(b->n_groups, 1);
    assert_string_equal(b->groups[0]->name, "build");
    assert_int_equal(b->groups[0]->parallel, 2);
    assert_string_equal(b->jobs[4]->name, "test");
    assert_int_equal(b->jobs[4]->n_after_names, 2);
    assert_int_equal(b->jobs[4]->timeout_ms, 60000);
    assert_int_equal(b->jobs[5]->timeout_ms, 10000);
    assert_same_batch(my, mj);
    tr_msg_free(my);
    tr_msg_free(mj);
    free(y);
    free(j);
}

// ---------------------------------------------------------------------------
// Fields.

static const char every_field_yaml[] =
    "version: 1\n"
    "groups:\n"
    "  g1: {parallel: 3}\n"
    "  g2: {}\n"
    "jobs:\n"
    "  - name: a\n"
    "    exec: [cc, -o, x, x.c]\n"
    "    group: g1\n"
    "    on_dep_failure: skip\n"
    "    retries: 3\n"
    "    backoff: 1s\n"
    "    backoff_max: 30s\n"
    "    timeout: 2m\n"
    "    kill_grace: 5s\n"
    "    env: {K: v, N: 010, B: true}\n"
    "    cwd: /tmp\n"
    "    stdin: \"in\\0put\"\n"
    "    priority: -5\n"
    "    slots: 2\n"
    "    labels: {team: infra}\n"
    "    rlimits: {nofile: 1024, core: {soft: 0, hard: 10}, stack: unlimited}\n"
    "  - name: b\n"
    "    sleep: 250ms\n"
    "    after: a\n"
    "  - noop: true\n"
    "    after: [a, b]\n";

static const char every_field_json[] =
    "{\"version\": 1, \"groups\": {\"g1\": {\"parallel\": 3}, \"g2\": {}},\n"
    " \"jobs\": [\n"
    "  {\"name\": \"a\", \"exec\": [\"cc\", \"-o\", \"x\", \"x.c\"], \"group\": \"g1\",\n"
    "   \"on_dep_failure\": \"skip\", \"retries\": 3, \"backoff\": \"1s\",\n"
    "   \"backoff_max\": \"30s\", \"timeout\": \"2m\", \"kill_grace\": 5000,\n"
    "   \"env\": {\"K\": \"v\", \"N\": \"010\", \"B\": \"true\"}, \"cwd\": \"/tmp\",\n"
    "   \"stdin\": \"in\\u0000put\", \"priority\": -5, \"slots\": 2,\n"
    "   \"labels\": {\"team\": \"infra\"},\n"
    "   \"rlimits\": {\"nofile\": 1024, \"core\": {\"soft\": 0, \"hard\": 10},\n"
    "                \"stack\": \"unlimited\"}},\n"
    "  {\"name\": \"b\", \"sleep\": \"250ms\", \"after\": \"a\"},\n"
    "  {\"noop\": true, \"after\": [\"a\", \"b\"]}]}\n";

static void
test_workload_every_field(void **state)
{
    tr_msg *m = parse_ok(every_field_yaml);
    Troupe__V1__SubmitBatch *b = body(m);
    assert_int_equal(b->n_groups, 2);
    assert_string_equal(b->groups[1]->name, "g2");
    assert_int_equal(b->groups[1]->parallel, 0);
    assert_int_equal(b->n_jobs, 3);
    Troupe__V1__JobSpec *a = b->jobs[0];
    assert_string_equal(a->name, "a");
    assert_int_equal(a->task_case, TROUPE__V1__JOB_SPEC__TASK_EXEC);
    assert_int_equal(a->exec->n_argv, 4);
    assert_string_equal(a->exec->argv[3], "x.c");
    assert_string_equal(a->group, "g1");
    assert_int_equal(a->on_dep_failure, TROUPE__V1__DEP_FAILURE__DEP_FAILURE_SKIP);
    assert_int_equal(a->retries, 3);
    assert_int_equal(a->backoff_ms, 1000);
    assert_int_equal(a->backoff_max_ms, 30000);
    assert_int_equal(a->timeout_ms, 120000);
    assert_int_equal(a->kill_grace_ms, 5000);
    assert_int_equal(a->n_env, 3);
    assert_string_equal(env_get(a, "N"), "010");
    assert_string_equal(env_get(a, "B"), "true");
    assert_string_equal(a->cwd, "/tmp");
    assert_int_equal(a->stdin.len, 6);
    assert_memory_equal(a->stdin.data, "in\0put", 6);
    assert_int_equal(a->priority, -5);
    assert_int_equal(a->slots, 2);
    assert_int_equal(a->n_labels, 1);
    assert_string_equal(a->labels[0]->key, "team");
    assert_string_equal(a->labels[0]->value, "infra");
    assert_int_equal(a->n_rlimits, 3);
    assert_int_equal(a->rlimits[0]->resource, 7);
    assert_int_equal(a->rlimits[0]->soft, 1024);
    assert_int_equal(a->rlimits[0]->hard, 1024);
    assert_int_equal(a->rlimits[1]->resource, 4);
    assert_int_equal(a->rlimits[1]->soft, 0);
    assert_int_equal(a->rlimits[1]->hard, 10);
    assert_int_equal(a->rlimits[2]->resource, 3);
    assert_true(a->rlimits[2]->soft == UINT64_MAX && a->rlimits[2]->hard == UINT64_MAX);
    Troupe__V1__JobSpec *bj = b->jobs[1];
    assert_int_equal(bj->task_case, TROUPE__V1__JOB_SPEC__TASK_SLEEP);
    assert_int_equal(bj->sleep->ms, 250);
    assert_int_equal(bj->n_after_names, 1);
    assert_string_equal(bj->after_names[0], "a");
    Troupe__V1__JobSpec *c = b->jobs[2];
    assert_string_equal(c->name, "");
    assert_int_equal(c->task_case, TROUPE__V1__JOB_SPEC__TASK_NOOP);
    assert_int_equal(c->n_after_names, 2);
    assert_string_equal(c->after_names[1], "b");

    tr_msg *mj = parse_ok(every_field_json);
    assert_same_batch(m, mj);
    tr_msg_free(mj);
    tr_msg_free(m);
}

static void
test_workload_not_nul_terminated(void **state)
{
    // The parser reads len bytes and not one more.
    const char text[] = "jobs: [{noop: true}]";
    size_t n = sizeof text - 1;
    char *copy = malloc(n);
    memcpy(copy, text, n);
    tr_msg *m = parse_ok_n(copy, n);
    assert_int_equal(body(m)->n_jobs, 1);
    tr_msg_free(m);
    free(copy);
}

// ---------------------------------------------------------------------------
// Defaults and replicas.

// A plugin task: its kind and its args as the string's bytes (NUL
// included, none: empty), from a job or from the defaults, the same from
// JSON (its mistakes are in test_workload_errors_have_positions).
static void
test_workload_plugin_task(void **state)
{
    static const char yaml[] = "defaults:\n"
                               "  plugin: {kind: demo.wait}\n"
                               "jobs:\n"
                               "  - name: e\n"
                               "    plugin:\n"
                               "      kind: demo.echo\n"
                               "      args: \"hi\\0there\"\n"
                               "  - name: d\n"
                               "  - plugin: {kind: 'acme:x-1_y', args: ''}\n";
    static const char json[] =
        "{\"defaults\": {\"plugin\": {\"kind\": \"demo.wait\"}}, \"jobs\": [\n"
        "  {\"name\": \"e\", \"plugin\": {\"kind\": \"demo.echo\", \"args\": "
        "\"hi\\u0000there\"}},\n"
        "  {\"name\": \"d\"},\n"
        "  {\"plugin\": {\"kind\": \"acme:x-1_y\", \"args\": \"\"}}]}\n";
    tr_msg *m = parse_ok(yaml);
    Troupe__V1__SubmitBatch *b = body(m);
    assert_int_equal(b->n_jobs, 3);
    const Troupe__V1__JobSpec *e = b->jobs[0], *d = b->jobs[1], *x = b->jobs[2];
    assert_int_equal(e->task_case, TROUPE__V1__JOB_SPEC__TASK_PLUGIN);
    assert_string_equal(e->plugin->kind, "demo.echo");
    assert_int_equal(e->plugin->args.len, 8);
    assert_memory_equal(e->plugin->args.data, "hi\0there", 8);
    assert_int_equal(d->task_case, TROUPE__V1__JOB_SPEC__TASK_PLUGIN); // the defaults'
    assert_string_equal(d->plugin->kind, "demo.wait");
    assert_int_equal(d->plugin->args.len, 0);
    assert_int_equal(x->task_case, TROUPE__V1__JOB_SPEC__TASK_PLUGIN);
    assert_string_equal(x->plugin->kind, "acme:x-1_y");
    assert_int_equal(x->plugin->args.len, 0);
    tr_msg *mj = parse_ok(json);
    assert_same_batch(m, mj);
    tr_msg_free(mj);
    tr_msg_free(m);
}

static void
test_workload_defaults_apply_where_unset(void **state)
{
    tr_msg *m = parse_ok("defaults:\n"
                         "  group: build\n"
                         "  timeout: 10m\n"
                         "  run: make\n"
                         "  env: {A: '1'}\n"
                         "jobs:\n"
                         "  - name: x\n"
                         "  - name: y\n"
                         "    timeout: 1s\n"
                         "    env: {B: '2'}\n"
                         "    exec: [ls]\n");
    Troupe__V1__SubmitBatch *b = body(m);
    Troupe__V1__JobSpec *x = b->jobs[0], *y = b->jobs[1];
    assert_string_equal(x->group, "build");
    assert_int_equal(x->timeout_ms, 600000);
    assert_int_equal(x->task_case, TROUPE__V1__JOB_SPEC__TASK_SHELL);
    assert_string_equal(x->shell->script, "make");
    assert_string_equal(env_get(x, "A"), "1");
    assert_string_equal(y->group, "build");
    assert_int_equal(y->timeout_ms, 1000);
    // A job's env replaces the defaults' whole; its task replaces theirs.
    assert_int_equal(y->n_env, 1);
    assert_string_equal(env_get(y, "B"), "2");
    assert_int_equal(y->task_case, TROUPE__V1__JOB_SPEC__TASK_EXEC);
    tr_msg_free(m);
}

static void
test_workload_replicas_expand(void **state)
{
    tr_msg *m = parse_ok("defaults: {env: {A: a}}\n"
                         "jobs:\n"
                         "  - name: gather\n"
                         "    after: compile\n"
                         "    noop: true\n"
                         "  - name: compile\n"
                         "    run: cc\n"
                         "    replicas: 3\n"
                         "  - run: anon\n"
                         "    replicas: 2\n"
                         "    after: [compile]\n");
    Troupe__V1__SubmitBatch *b = body(m);
    assert_int_equal(b->n_jobs, 6);
    assert_int_equal(b->job_count, 6);
    assert_string_equal(b->jobs[0]->name, "gather");
    assert_int_equal(b->jobs[0]->n_after_names, 3);
    for (unsigned i = 0; i < 3; i++) {
        char want[32];
        snprintf(want, sizeof want, "compile[%u]", i);
        Troupe__V1__JobSpec *r = b->jobs[1 + i];
        assert_string_equal(r->name, want);
        assert_string_equal(b->jobs[0]->after_names[i], want);
        assert_string_equal(r->shell->script, "cc");
        assert_int_equal(r->n_env, 3);
        assert_string_equal(env_get(r, "A"), "a");
        snprintf(want, sizeof want, "%u", i);
        assert_string_equal(env_get(r, "TROUPE_INDEX"), want);
        assert_string_equal(env_get(r, "TROUPE_REPLICAS"), "3");
    }
    for (unsigned i = 0; i < 2; i++) {
        Troupe__V1__JobSpec *r = b->jobs[4 + i];
        assert_string_equal(r->name, "");
        assert_int_equal(r->n_after_names, 3);
        assert_string_equal(r->after_names[2], "compile[2]");
        assert_string_equal(env_get(r, "TROUPE_INDEX"), i == 0 ? "0" : "1");
        assert_string_equal(env_get(r, "TROUPE_REPLICAS"), "2");
    }
    tr_msg_free(m);
}

// ---------------------------------------------------------------------------
// Durations.

static void
test_workload_durations_good(void **state)
{
    static const struct {
        const char *text;
        uint64_t ms;
    } cases[] = {
        {"0", 0},       {"250", 250},     {"250ms", 250},     {"2s", 2000},
        {"1.5s", 1500}, {"10m", 600000},  {"1h", 3600000},    {"1h30m", 5400000},
        {"0.001s", 1},  {"'2s'", 2000},   {"\"3m\"", 180000}, {"18446744073709", 18446744073709ull},
        {"+5", 5},      {"1.25m", 75000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "jobs:\n  - sleep: %s\n", cases[i].text);
        tr_msg *m = parse_ok(text);
        if (body(m)->jobs[0]->sleep->ms != cases[i].ms) {
            print_error("%s: %llu ms\n", cases[i].text,
                        (unsigned long long)body(m)->jobs[0]->sleep->ms);
            fail();
        }
        tr_msg_free(m);
    }
}

static void
test_workload_durations_bad(void **state)
{
    static const struct {
        const char *text, *msg;
    } cases[] = {
        {"-1", "timeout: a duration may not be negative"},
        {"-2s", "timeout: a duration may not be negative"},
        {"''", "timeout: an empty duration"},
        {"~", "timeout: expected a string, not null"},
        {"5d", "timeout: a duration with an unknown unit (ms, s, m or h)"},
        {"'250'", "timeout: a duration needs a unit (ms, s, m or h)"},
        {"1.5", "timeout: a duration needs a unit (ms, s, m or h)"},
        {"1.5ms", "timeout: a duration must be a whole number of milliseconds"},
        {"s", "timeout: a duration must start with a number"},
        {"1.s", "timeout: a duration with no digits after its '.'"},
        {"'1 s'", "timeout: a duration holds something other than numbers and units"},
        {"18446744073710", "timeout: a duration too long"},
        {"99999999999999999999999", "timeout: a duration too long"},
        {"5124096h", "timeout: a duration too long"},
        {"0.1234567891s", "timeout: a duration with more than 9 decimals"},
        {"[1]", "timeout: expected a string, not a sequence"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "jobs:\n  - noop: true\n    timeout: %s\n", cases[i].text);
        expect_err(text, TR_EINVAL, 3, 14, cases[i].msg);
    }
}

// ---------------------------------------------------------------------------
// Errors, each with its message and position.

static void
test_workload_errors_have_positions(void **state)
{
    static const struct {
        const char *text;
        unsigned line, col;
        const char *msg;
    } cases[] = {
        // Syntax.
        {"jobs: [\n", 2, 1,
         "did not find expected node content (while parsing a flow node at 2:1)"},
        {"jobs:\n  - a: b\n   c: d\n", 3, 4,
         "did not find expected '-' indicator (while parsing a block collection at 2:3)"},
        {"jobs: a: b\n", 1, 8, "mapping values are not allowed in this context"},
        {"jobs: [{noop: true}]\n\xff\n", 2, 1, "invalid leading UTF-8 octet"},
        {"", 1, 1, "the file is empty (it needs a jobs list)"},
        {"# nothing\n", 1, 1, "the file is empty (it needs a jobs list)"},
        {"[1, 2]\n", 1, 1,
         "a workload is a mapping (version, groups, defaults, jobs), not a sequence"},
        {"jobs: [{noop: true}]\n---\njobs: []\n", 2, 1, "a workload file holds one YAML document"},
        // YAML features refused.
        {"jobs:\n  - &j {noop: true}\n", 2, 5, "YAML anchors are not allowed (&j)"},
        {"x: &a 1\njobs: [*a]\n", 1, 4, "YAML anchors are not allowed (&a)"},
        {"jobs: [*a]\n", 1, 8, "YAML aliases are not allowed (*a)"},
        {"jobs:\n  - !job {noop: true}\n", 2, 5,
         "tag \"!job\" is not allowed (only the standard ones)"},
        {"jobs:\n  - noop: !!python/bool true\n", 2, 11,
         "tag \"tag:yaml.org,2002:python/bool\" is not allowed (only the standard ones)"},
        {"jobs:\n  - !!seq {noop: true}\n", 2, 5,
         "tag \"tag:yaml.org,2002:seq\" is not allowed (only the standard ones)"},
        {"jobs:\n  - ? [a]\n    : b\n", 2, 7, "a mapping key must be a scalar"},
        {"jobs: []\njobs: []\n", 2, 1, "duplicate key \"jobs\" (first at 1:1)"},
        {"jobs:\n  - noop: true\n    env: {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, "
         "c: 0}\n",
         3, 65, "duplicate key \"c\" (first at 3:23)"},
        // The file.
        {"jobs: [{noop: true}]\nextra: 1\n", 2, 1,
         "unknown key \"extra\" (version, groups, defaults, jobs)"},
        {"version: 2\njobs: [{noop: true}]\n", 1, 10,
         "version 2 is not supported (this troupe reads version 1)"},
        {"version: one\njobs: [{noop: true}]\n", 1, 10, "version: expected a number"},
        {"version: 1\n", 1, 1, "no jobs: a workload needs a `jobs` sequence"},
        {"jobs: []\n", 1, 7, "jobs: expected at least one job"},
        {"jobs: {a: 1}\n", 1, 7, "jobs: expected a sequence, not a mapping"},
        {"jobs:\n  - run\n", 2, 5, "a job: expected a mapping, not a scalar"},
        // A scalar for defaults: refused before its (nonexistent) keys are read.
        {"defaults: gpou\njobs:\n  - noop: true\n", 1, 11,
         "defaults: expected a mapping, not a scalar"},
        {"jobs:\n  - noop: true\n    after: {a: b}\n", 3, 12,
         "after: expected a sequence, not a mapping"},
        {"groups: {g: {parallel: -1}}\njobs: [{noop: true}]\n", 1, 24,
         "parallel: out of range (0..4294967295)"},
        {"groups: {g: {size: 1}}\njobs: [{noop: true}]\n", 1, 14,
         "unknown key \"size\" in a group (parallel)"},
        {"groups: {g: 1}\njobs: [{noop: true}]\n", 1, 13,
         "a group: expected a mapping, not a scalar"},
        // A job's fields.
        {"jobs:\n  - noop: true\n    colour: red\n", 3, 5, "unknown key \"colour\" in a job"},
        {"jobs:\n  - run: a\n    exec: [b]\n", 3, 5,
         "a job has exactly one of run, exec, sleep, noop and plugin: run and exec both given"},
        {"jobs:\n  - name: x\n", 2, 5, "a job needs one of run, exec, sleep, noop and plugin"},
        {"jobs:\n  - noop: false\n", 2, 11, "noop: only `noop: true` makes sense"},
        {"jobs:\n  - noop: yes\n", 2, 11, "noop: expected true or false"},
        {"jobs:\n  - exec: []\n", 2, 11, "exec: expected a non-empty sequence (the argv)"},
        {"jobs:\n  - exec: ls\n", 2, 11, "exec: expected a sequence, not a scalar"},
        {"jobs:\n  - exec: [ls, {a: b}]\n", 2, 16, "exec: expected a string, not a mapping"},
        {"jobs:\n  - run: [a]\n", 2, 10, "run: expected a string, not a sequence"},
        {"jobs:\n  - run:\n", 2, 9, "run: expected a string, not null"},
        {"jobs:\n  - run: \"a\\0b\"\n", 2, 10, "run: a NUL byte in a string"},
        {"jobs:\n  - plugin: demo.echo\n", 2, 13, "plugin: expected a mapping, not a scalar"},
        {"jobs:\n  - plugin: {args: x}\n", 2, 13,
         "plugin: needs a kind (the task kind a plugin of the daemon registered)"},
        {"jobs:\n  - plugin: {kind: 'demo echo'}\n", 2, 20,
         "plugin: kind \"demo echo\" is not a kind name (1 to 64 bytes of [A-Za-z0-9_.:-])"},
        {"jobs:\n  - plugin: {kind: ''}\n", 2, 20,
         "plugin: kind \"\" is not a kind name (1 to 64 bytes of [A-Za-z0-9_.:-])"},
        {"jobs:\n  - plugin: {kind: ~}\n", 2, 20, "plugin: kind: expected a string, not null"},
        {"jobs:\n  - plugin: {kind: a, args: [1]}\n", 2, 29,
         "plugin: args: expected a string, not a sequence"},
        {"jobs:\n  - plugin: {kind: a, argv: x}\n", 2, 23,
         "unknown key \"argv\" in plugin (kind, args)"},
        {"jobs:\n  - plugin: {kind: a}\n    noop: true\n", 3, 5,
         "a job has exactly one of run, exec, sleep, noop and plugin: plugin and noop both given"},
        {"jobs:\n  - noop: true\n    name: ''\n", 3, 11, "name: a job name may not be empty"},
        {"jobs:\n  - noop: true\n    priority: '5'\n", 3, 15, "priority: expected an integer"},
        {"jobs:\n  - noop: true\n    priority: 2147483648\n", 3, 15,
         "priority: out of range (-2147483648..2147483647)"},
        {"jobs:\n  - noop: true\n    retries: 1.5\n", 3, 14, "retries: expected an integer"},
        {"jobs:\n  - noop: true\n    slots: 0\n", 3, 12, "slots: out of range (1..4294967295)"},
        {"jobs:\n  - noop: true\n    replicas: 0\n", 3, 15, "replicas: out of range (1..10000)"},
        {"jobs:\n  - noop: true\n    replicas: 10001\n", 3, 15,
         "replicas: out of range (1..10000)"},
        {"jobs:\n  - noop: true\n    on_dep_failure: ignore\n", 3, 21,
         "on_dep_failure: expected fail or skip"},
        {"jobs:\n  - noop: true\n    env: {A=B: c}\n", 3, 11,
         "env: \"A=B\" is not a variable name (empty, or with '=' or NUL)"},
        {"jobs:\n  - noop: true\n    env: {TROUPE_INDEX: 1}\n", 3, 11,
         "env: \"TROUPE_INDEX\" is reserved (replicas set it)"},
        {"jobs:\n  - noop: true\n    env: {A: [1]}\n", 3, 14,
         "env: expected a string, not a sequence"},
        {"jobs:\n  - noop: true\n    env: [A]\n", 3, 10, "env: expected a mapping, not a sequence"},
        {"jobs:\n  - noop: true\n    labels: {k: ~}\n", 3, 17,
         "labels: expected a string, not null"},
        {"jobs:\n  - noop: true\n    rlimits: {files: 1}\n", 3, 15,
         "rlimits: unknown limit \"files\" (as, core, cpu, data, fsize, memlock, nofile, nproc, "
         "rss, "
         "stack)"},
        {"jobs:\n  - noop: true\n    rlimits: {core: -1}\n", 3, 21,
         "rlimits: expected a non-negative integer"},
        {"jobs:\n  - noop: true\n    rlimits: {core: 18446744073709551616}\n", 3, 21,
         "rlimits: out of range (64 bits)"},
        {"jobs:\n  - noop: true\n    rlimits: {core: {soft: 1}}\n", 3, 21,
         "rlimits: \"core\" needs both soft and hard"},
        {"jobs:\n  - noop: true\n    rlimits: {core: {soft: 2, hard: 1}}\n", 3, 28,
         "rlimits: the soft limit of \"core\" is above its hard one"},
        {"jobs:\n  - noop: true\n    rlimits: {core: {max: 1}}\n", 3, 22,
         "rlimits: unknown key \"max\" (soft, hard)"},
        {"defaults: {name: x}\njobs: [{noop: true}]\n", 1, 12,
         "name is not allowed in defaults (only in a job)"},
        {"defaults: {after: x}\njobs: [{noop: true}]\n", 1, 12,
         "after is not allowed in defaults (only in a job)"},
        {"defaults: {replicas: 2}\njobs: [{noop: true}]\n", 1, 12,
         "replicas is not allowed in defaults (only in a job)"},
        {"defaults: {run: a, sleep: 1s}\njobs: [{noop: true}]\n", 1, 20,
         "defaults has exactly one of run, exec, sleep, noop and plugin: run and sleep both given"},
        {"defaults: {color: red}\njobs: [{noop: true}]\n", 1, 12,
         "unknown key \"color\" in defaults"},
        // Names and references.
        {"jobs:\n  - {name: a, noop: true}\n  - {name: a, noop: true}\n", 3, 12,
         "duplicate job name \"a\" (first at 2:12)"},
        {"jobs:\n  - {name: a, noop: true, after: [b]}\n", 2, 35, "after: no job is named \"b\""},
        {"jobs:\n  - {name: a, noop: true, after: a}\n", 2, 34,
         "after: a job cannot run after itself"},
        {"jobs:\n  - {name: a, noop: true}\n  - {noop: true, after: [a, a]}\n", 3, 29,
         "after: \"a\" named twice"},
        {"jobs:\n  - {noop: true, after: {a: 1}}\n", 2, 25,
         "after: expected a sequence, not a mapping"},
        {"jobs:\n  - {name: 'x[1]', noop: true}\n  - {name: x, noop: true, replicas: 2}\n", 2, 12,
         "job name \"x[1]\" is also the name of a replica of \"x\""},
    };
    size_t bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bad += !check_err(cases[i].text, strlen(cases[i].text), TR_EINVAL, cases[i].line,
                          cases[i].col, cases[i].msg);
    }
    assert_int_equal(bad, 0);
}

static void
test_workload_cycle_spelt_out(void **state)
{
    expect_err("jobs:\n"
               "  - {name: a, noop: true, after: b}\n"
               "  - {name: b, noop: true, after: a}\n",
               TR_EINVAL, 2, 12, "dependency cycle: a -> b -> a");
    expect_err("jobs:\n"
               "  - {name: top, noop: true}\n"
               "  - {name: x, noop: true, after: [top, y]}\n"
               "  - {name: y, noop: true, after: z}\n"
               "  - {name: z, noop: true, after: [top, x]}\n",
               TR_EINVAL, 3, 12, "dependency cycle: x -> y -> z -> x");
    // Through replicas: still a cycle of the jobs as written.
    expect_err("jobs:\n"
               "  - {name: m, noop: true, replicas: 4, after: r}\n"
               "  - {name: r, noop: true, after: m}\n",
               TR_EINVAL, 2, 12, "dependency cycle: m -> r -> m");
}

static void
test_workload_long_cycle_no_recursion(void **state)
{
    // 100,000 jobs in one ring: the search keeps its own stack, so this
    // neither recurses 100,000 deep nor takes quadratic time. The message
    // is cut at the diag's size.
    sbuf b = {0};
    sb_printf(&b, "jobs:\n");
    for (unsigned i = 0; i < TRD_WL_MAX_JOBS; i++) {
        sb_printf(&b, "- {name: j%u, noop: true, after: j%u}\n", i, (i + 1) % TRD_WL_MAX_JOBS);
    }
    tr_msg *m = (tr_msg *)1;
    trd_diag d;
    assert_int_equal(trd_workload_parse(b.s, b.n, &m, &d), TR_EINVAL);
    assert_null(m);
    assert_int_equal(d.line, 2);
    assert_int_equal(d.column, 10);
    assert_true(strncmp(d.msg, "dependency cycle: j0 -> j1 -> j2 -> ", 36) == 0);
    assert_string_equal(d.msg + strlen(d.msg) - 3, "...");
    free(b.s);
}

// ---------------------------------------------------------------------------
// Limits.

static void
test_workload_max_jobs(void **state)
{
    sbuf b = {0};
    sb_printf(&b, "jobs:\n");
    for (unsigned i = 0; i < TRD_WL_MAX_JOBS; i++) {
        sb_printf(&b, "- {name: j%u, run: 'echo %u'%s}\n", i, i, i > 0 ? ", after: j0" : "");
    }
    tr_msg *m = parse_ok_n(b.s, b.n);
    Troupe__V1__SubmitBatch *bt = body(m);
    assert_int_equal(bt->n_jobs, TRD_WL_MAX_JOBS);
    assert_string_equal(bt->jobs[TRD_WL_MAX_JOBS - 1]->name, "j99999");
    assert_string_equal(bt->jobs[TRD_WL_MAX_JOBS - 1]->after_names[0], "j0");
    tr_msg_free(m);
    // One more is too many.
    sb_printf(&b, "- {noop: true}\n");
    expect_err_n(b.s, b.n, TR_ETOOBIG, TRD_WL_MAX_JOBS + 2, 3,
                 "more than 100000 jobs (after replicas)");
    free(b.s);
    // Replicas count.
    expect_err("jobs:\n"
               "  - {noop: true, replicas: 10000}\n"
               "  - {noop: true, replicas: 10000}\n"
               "  - {noop: true, replicas: 10000}\n"
               "  - {noop: true, replicas: 10000}\n"
               "  - {noop: true, replicas: 10000}\n"
               "  - {noop: true, replicas: 10000}\n"
               "  - {noop: true, replicas: 10000}\n"
               "  - {noop: true, replicas: 10000}\n"
               "  - {noop: true, replicas: 10000}\n"
               "  - {noop: true, replicas: 10000}\n"
               "  - {noop: true, replicas: 1}\n",
               TR_ETOOBIG, 12, 28, "more than 100000 jobs (after replicas)");
}

static void
test_workload_deep_nesting_refused(void **state)
{
    // A megabyte of '[': refused at the 33rd, not a crash.
    size_t n = 1u << 20;
    char *s = malloc(n);
    memcpy(s, "jobs: ", 6);
    memset(s + 6, '[', n - 6);
    expect_err_n(s, n, TR_ETOOBIG, 1, 38, "nested deeper than 32 levels");
    free(s);
    // Block style too.
    expect_err("a:\n b:\n  c:\n   d:\n    e:\n     f:\n      g:\n       h:\n        i:\n"
               "         j:\n          k:\n           l:\n            m:\n             n:\n"
               "              o:\n               p:\n                q:\n                 r:\n"
               "                  s:\n                   t:\n                    u:\n"
               "                     v:\n                      w:\n                       x:\n"
               "                        y:\n                         z:\n"
               "                          A:\n                           B:\n"
               "                            C:\n                             D:\n"
               "                              E:\n                               F:\n"
               "                                G: 1\n",
               TR_ETOOBIG, 33, 33, "nested deeper than 32 levels");
}

static void
test_workload_scalar_and_file_limits(void **state)
{
    size_t n = TRD_WL_MAX_SCALAR + 64;
    char *s = malloc(n);
    int h = snprintf(s, n, "jobs:\n  - run: ");
    memset(s + h, 'x', n - (size_t)h);
    expect_err_n(s, n, TR_ETOOBIG, 2, 10, "a scalar longer than 1048576 bytes");
    free(s);
    expect_err_n("", (size_t)TRD_WL_MAX_FILE + 1, TR_ETOOBIG, 1, 1,
                 "a workload file larger than 16 MiB");
}

static void
test_workload_replica_amplification_refused(void **state)
{
    // 10,000 replicas of a 100 KB stdin would pack to about 1 GB.
    size_t n = 100 * 1000 + 128;
    char *s = malloc(n);
    int h = snprintf(s, n, "jobs:\n  - noop: true\n    replicas: 10000\n    stdin: ");
    memset(s + h, 'x', n - (size_t)h);
    expect_err_n(s, n, TR_ETOOBIG, 2, 5, "the batch would take more than 256 MiB (after replicas)");
    free(s);
    // Replicas after replicas: 10,000 x 9,000 expanded names.
    expect_err("jobs:\n"
               "  - {name: a, noop: true, replicas: 9000}\n"
               "  - {name: b, noop: true, replicas: 10000, after: a}\n",
               TR_ETOOBIG, 3, 5, "the batch would take more than 256 MiB (after replicas)");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workload_examples_parse),
        cmocka_unit_test(test_workload_example_json_equals_yaml),
        cmocka_unit_test(test_workload_every_field),
        cmocka_unit_test(test_workload_not_nul_terminated),
        cmocka_unit_test(test_workload_plugin_task),
        cmocka_unit_test(test_workload_defaults_apply_where_unset),
        cmocka_unit_test(test_workload_replicas_expand),
        cmocka_unit_test(test_workload_durations_good),
        cmocka_unit_test(test_workload_durations_bad),
        cmocka_unit_test(test_workload_errors_have_positions),
        cmocka_unit_test(test_workload_cycle_spelt_out),
        cmocka_unit_test(test_workload_long_cycle_no_recursion),
        cmocka_unit_test(test_workload_max_jobs),
        cmocka_unit_test(test_workload_deep_nesting_refused),
        cmocka_unit_test(test_workload_scalar_and_file_limits),
        cmocka_unit_test(test_workload_replica_amplification_refused),
    };
    return tu_run(tests);
}
