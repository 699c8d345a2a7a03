// Design notes.
//
// troupe, the command-line client: one subcommand per control request,
// built on troupe/client.h only. Global flags come before the command
// (--url, --json, --token-file; --json is also taken after it); each
// command parses its own flags with getopt_long ("+": the first operand
// ends them, so `submit -- CMD --flag` runs CMD with its flag).
//
// Output: human tables by default (aligned columns; the state coloured
// only when stdout is a tty and NO_COLOR is unset), or with --json one
// JSON document per command, written with jansson, whose field names are
// the proto field names (JobInfo, JobList, Submitted, Pong, LogChunk);
// enum values are their short names ("succeeded"), bytes are base64, as
// in proto3's JSON. `logs -f --json` is the one stream: a LogChunk per
// line as the output comes.
//
// Nothing here polls on a timer. `logs -f` is tr_client_follow (events,
// Wait, Logs); `run` follows a workload with tr_client_watch (the PUB
// socket's state events, a Wait outstanding meanwhile), and without
// events with Waits on the lowest unfinished id, each of which returns
// when that job ends.
//
// Exit codes (stable, in --help): 0 success (every job succeeded, for
// wait, run and submit --wait), 1 a job did not succeed, 2 bad usage or
// input, 3 the daemon could not be reached or refused the request.
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <troupe/client.h>

#include "request.h"
#include "workload.h"

enum { EXIT_JOBFAIL = 1, EXIT_USAGE = 2, EXIT_DAEMON = 3 };

static bool g_json;  // --json
static bool g_color; // stdout is a tty and NO_COLOR is unset
static const char *g_url;
static char *g_token;       // --token-file's token, or NULL
static tr_client *g_client; // connected by conn()

// ---------------------------------------------------------------------------
// States, messages, parsing.

static const char *const state_names[] = {"queued",    "running",   "succeeded", "failed",
                                          "cancelled", "timed_out", "skipped"};
enum { N_STATES = sizeof state_names / sizeof state_names[0] };

static const char *
state_name(int st)
{
    return st >= 0 && st < N_STATES ? state_names[st] : "?";
}

static bool
final(int st)
{
    return st >= TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED;
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: troupe [--url URL] [--json] [--token-file FILE] COMMAND [ARGS...]\n"
               "       troupe --help | --version\n"
               "Commands:\n"
               "  ping                       the daemon's version, uptime and event socket\n"
               "  submit [OPTIONS] [--] CMD [ARGS...]\n"
               "                             run a program as a job; prints its id\n"
               "  submit [OPTIONS] --plugin KIND [--args STRING]\n"
               "                             run a task kind of a plugin of the daemon, with\n"
               "                             STRING's bytes as its arguments\n"
               "      --name N  --group G  --priority N  --slots N  --retries N\n"
               "      --timeout D            D: milliseconds, or 500ms, 2s, 1.5m, 1h30m\n"
               "      --after ID             after that job succeeded (repeatable)\n"
               "      --env K=V  --label K=V (repeatable)  --cwd DIR\n"
               "      --output-cap BYTES     stdout and stderr kept, each (default: the daemon's)\n"
               "      --shell                run CMD ARGS... joined by spaces with sh -c\n"
               "      --wait                 wait for the job; the exit status says how it ended\n"
               "  cancel ID... [--wait]      cancel jobs (--wait: until they have ended)\n"
               "  status ID...               a table of the jobs\n"
               "  list [--state S]... [--group G] [--label K=V] [--name PREFIX]\n"
               "       [--limit N] [--after ID] [--all]\n"
               "                             jobs in id order, a page (--limit, default 100)\n"
               "                             at a time; --all pages through every one\n"
               "  wait ID...                 until every job has ended\n"
               "  logs ID [--stderr] [-f]    a job's stdout (or stderr), bytes unchanged;\n"
               "                             -f follows it until the job has ended\n"
               "  pause GROUP, resume GROUP  stop or restart starting jobs of a group\n"
               "                             ('' is the default group)\n"
               "  shutdown [--immediate] [--deadline D]\n"
               "                             stop the daemon: running jobs finish (killed after\n"
               "                             D), or with --immediate are killed now\n"
               "  run FILE                   submit a workload file (YAML or JSON) and follow it\n"
               "States: queued running succeeded failed cancelled timed_out skipped.\n"
               "--json: one JSON document per command (logs -f: one per chunk), with the\n"
               "field names of proto/troupe/v1/control.proto.\n"
               "URL: --url, else $TROUPE_URL, else the daemon's default socket. Token:\n"
               "--token-file, else $TROUPE_TOKEN_FILE (for tls+tcp).\n"
               "Exit status: 0 ok (for wait, run and submit --wait: every job succeeded),\n"
               "1 a job did not succeed, 2 bad usage or input, 3 the daemon could not be\n"
               "reached or refused the request.\n");
}

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
bad_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("troupe: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (troupe --help)\n", stderr);
    return EXIT_USAGE;
}

static int
fail(const char *what, tr_err rv)
{
    const char *d = tr_client_error();
    fprintf(stderr, "troupe: %s: %s%s%s\n", what, tr_err_name(rv), d[0] != '\0' ? ": " : "", d);
    return EXIT_DAEMON;
}

static bool
parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || errno != 0 || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

static bool
parse_u32(const char *s, uint32_t *out)
{
    uint64_t v;
    if (!parse_u64(s, &v) || v > UINT32_MAX) {
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

static bool
parse_i32(const char *s, int32_t *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (s[0] == '\0' || errno != 0 || *end != '\0' || v < INT32_MIN || v > INT32_MAX) {
        return false;
    }
    *out = (int32_t)v;
    return true;
}

// parse_ms parses a duration: a bare number of milliseconds, or what
// workload files take (500ms, 2s, 1.5m, 1h30m).
static bool
parse_ms(const char *s, uint64_t *out)
{
    return parse_u64(s, out) || trd_parse_duration(s, strlen(s), out) == NULL;
}

static bool
parse_ids(int argc, char **argv, uint64_t **ids, size_t *n)
{
    *ids = calloc((size_t)argc + 1, sizeof **ids);
    *n = 0;
    if (argc == 0) {
        bad_usage("no job id given");
        return false;
    }
    for (int i = 0; i < argc; i++) {
        uint64_t v;
        if (!parse_u64(argv[i], &v) || v == 0) {
            bad_usage("%s: not a job id", argv[i]);
            return false;
        }
        (*ids)[(*n)++] = v;
    }
    return true;
}

// split_kv splits "K=V" at its first '=' (K not empty): false otherwise.
static bool
split_kv(char *s, char **k, char **v)
{
    char *eq = strchr(s, '=');
    if (eq == NULL || eq == s) {
        return false;
    }
    *eq = '\0';
    *k = s;
    *v = eq + 1;
    return true;
}

// A growable array of pointers (the flags that repeat).
typedef struct vec {
    void **v_items;
    size_t v_n, v_cap;
} vec;

static void
vec_push(vec *v, void *p)
{
    if (v->v_n == v->v_cap) {
        v->v_cap = v->v_cap != 0 ? v->v_cap * 2 : 8;
        v->v_items = realloc(v->v_items, v->v_cap * sizeof *v->v_items);
        if (v->v_items == NULL) {
            abort();
        }
    }
    v->v_items[v->v_n++] = p;
}

// ---------------------------------------------------------------------------
// JSON.

// jstr makes a JSON string of s; bytes that are not UTF-8 become '?'
// (protobuf-c does not check strings).
static json_t *
jstr(const char *s)
{
    json_t *j = json_string(s != NULL ? s : "");
    if (j == NULL) {
        char *t = strdup(s);
        for (char *p = t; *p != '\0'; p++) {
            if ((unsigned char)*p >= 0x80) {
                *p = '?';
            }
        }
        j = json_string(t);
        free(t);
    }
    return j;
}

static json_t *
jbase64(const uint8_t *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        v |= i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0;
        v |= i + 2 < n ? p[i + 2] : 0;
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    json_t *j = json_stringn(out, o);
    free(out);
    return j;
}

static json_t *
json_job(const Troupe__V1__JobInfo *j)
{
    json_t *labels = json_array();
    for (size_t i = 0; i < j->n_labels; i++) {
        json_array_append_new(labels, json_pack("{s:o,s:o}", "key", jstr(j->labels[i]->key),
                                                "value", jstr(j->labels[i]->value)));
    }
    return json_pack("{s:I,s:o,s:o,s:s,s:i,s:I,s:I,s:I,s:i,s:i,s:o,s:I,s:I,s:b,s:o,s:i}", "id",
                     (json_int_t)j->id, "name", jstr(j->name), "group", jstr(j->group), "state",
                     state_name(j->state), "attempt", (int)j->attempt, "created_ms",
                     (json_int_t)j->created_ms, "started_ms", (json_int_t)j->started_ms, "ended_ms",
                     (json_int_t)j->ended_ms, "exit_code", j->exit_code, "signal", j->signal,
                     "error", jstr(j->error), "stdout_bytes", (json_int_t)j->stdout_bytes,
                     "stderr_bytes", (json_int_t)j->stderr_bytes, "truncated", (int)j->truncated,
                     "labels", labels, "priority", j->priority);
}

static json_t *
json_jobs(const Troupe__V1__JobInfo *const *jobs, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(a, json_job(jobs[i]));
    }
    return a;
}

// emit writes j (taking it) to stdout: indented, or compact (a stream).
static void
emit(json_t *j, bool compact)
{
    json_dumpf(j, stdout, compact ? JSON_COMPACT : JSON_INDENT(2));
    fputc('\n', stdout);
    fflush(stdout);
    json_decref(j);
}

// ---------------------------------------------------------------------------
// Tables.

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
fmt_duration(char *buf, size_t n, int64_t ms)
{
    if (ms < 0) {
        ms = 0;
    }
    if (ms < 1000) {
        snprintf(buf, n, "%dms", (int)ms);
    } else if (ms < 60000) {
        snprintf(buf, n, "%.1fs", (double)ms / 1000);
    } else if (ms < 3600000) {
        snprintf(buf, n, "%dm%02ds", (int)(ms / 60000), (int)(ms / 1000 % 60));
    } else {
        snprintf(buf, n, "%dh%02dm", (int)(ms / 3600000), (int)(ms / 60000 % 60));
    }
}

static const char *
state_color(int st)
{
    switch (st) {
    case TROUPE__V1__JOB_STATE__JOB_STATE_RUNNING:
        return "\033[36m";
    case TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED:
        return "\033[32m";
    case TROUPE__V1__JOB_STATE__JOB_STATE_FAILED:
    case TROUPE__V1__JOB_STATE__JOB_STATE_TIMED_OUT:
        return "\033[31m";
    case TROUPE__V1__JOB_STATE__JOB_STATE_CANCELLED:
    case TROUPE__V1__JOB_STATE__JOB_STATE_SKIPPED:
        return "\033[33m";
    default:
        return "";
    }
}

enum { COLS = 9, CELL = 96, STATE_COL = 3 };
static const char *const heads[COLS] = {"ID",   "NAME",   "GROUP",  "STATE", "EXIT",
                                        "TIME", "STDOUT", "STDERR", "ERROR"};

static void
job_cells(const Troupe__V1__JobInfo *j, char cell[COLS][CELL])
{
    snprintf(cell[0], CELL, "%" PRIu64, j->id);
    snprintf(cell[1], CELL, "%s", j->name[0] != '\0' ? j->name : "-");
    snprintf(cell[2], CELL, "%s", j->group[0] != '\0' ? j->group : "-");
    snprintf(cell[3], CELL, "%s", state_name(j->state));
    if (j->signal != 0) {
        snprintf(cell[4], CELL, "sig %d", j->signal);
    } else if (final(j->state) && j->started_ms != 0) {
        snprintf(cell[4], CELL, "%d", j->exit_code);
    } else {
        snprintf(cell[4], CELL, "-");
    }
    if (j->started_ms != 0) {
        fmt_duration(cell[5], CELL,
                     (j->ended_ms != 0 ? j->ended_ms : now_ms()) - (int64_t)j->started_ms);
    } else {
        snprintf(cell[5], CELL, "-");
    }
    snprintf(cell[6], CELL, "%" PRIu64 "%s", j->stdout_bytes, j->truncated ? "+" : "");
    snprintf(cell[7], CELL, "%" PRIu64, j->stderr_bytes);
    snprintf(cell[8], CELL, "%s", j->error);
}

// print_table prints jobs as aligned columns under a header (the last
// column, the error text, unpadded).
static void
print_table(const Troupe__V1__JobInfo *const *jobs, size_t n)
{
    char(*cells)[COLS][CELL] = calloc(n + 1, sizeof *cells);
    size_t w[COLS];
    for (int k = 0; k < COLS; k++) {
        snprintf(cells[0][k], CELL, "%s", heads[k]);
        w[k] = strlen(heads[k]);
    }
    for (size_t i = 0; i < n; i++) {
        job_cells(jobs[i], cells[i + 1]);
        for (int k = 0; k < COLS; k++) {
            size_t l = strlen(cells[i + 1][k]);
            w[k] = l > w[k] ? l : w[k];
        }
    }
    for (size_t i = 0; i <= n; i++) {
        const char *on = "", *off = "";
        if (g_color) {
            on = i == 0 ? "\033[1m" : state_color(jobs[i - 1]->state);
            off = on[0] != '\0' ? "\033[0m" : "";
        }
        // Padded up to the last cell that holds something: no trailing
        // blanks.
        int last = COLS - 1;
        while (last > 0 && cells[i][last][0] == '\0') {
            last--;
        }
        for (int k = 0; k <= last; k++) {
            bool colored = i == 0 || k == STATE_COL;
            int width = k == last ? 0 : (int)w[k];
            printf("%s%s%-*s%s", k > 0 ? "  " : "", colored ? on : "", width, cells[i][k],
                   colored ? off : "");
        }
        printf("\n");
    }
    fflush(stdout);
    free(cells);
}

// show_jobs prints a JobList: a table, or JSON ({"jobs": [...],
// "next_cursor": N}).
static void
show_jobs(const Troupe__V1__JobList *jl)
{
    if (g_json) {
        emit(json_pack("{s:o,s:I}", "jobs",
                       json_jobs((const Troupe__V1__JobInfo *const *)jl->jobs, jl->n_jobs),
                       "next_cursor", (json_int_t)jl->next_cursor),
             false);
    } else {
        print_table((const Troupe__V1__JobInfo *const *)jl->jobs, jl->n_jobs);
    }
}

// jobs_exit: 0 when every job succeeded, else EXIT_JOBFAIL.
static int
jobs_exit(const Troupe__V1__JobList *jl)
{
    for (size_t i = 0; i < jl->n_jobs; i++) {
        if (jl->jobs[i]->state != TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED) {
            return EXIT_JOBFAIL;
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------
// Flags of each command.

// The flags every command takes besides its own.
enum { O_JSON = 256, O_HELP };
#define COMMON_OPTS                       \
    {"json", no_argument, NULL, O_JSON},  \
    {                                     \
        "help", no_argument, NULL, O_HELP \
    }

// next_opt is getopt_long for a command: stops at the first operand, and
// takes --json and --help itself. -1 at the end; '?' after it has said
// what was wrong; 'h' for --help.
static int
next_opt(int argc, char **argv, const struct option *opts, const char *shortopts)
{
    char spec[32];
    snprintf(spec, sizeof spec, "+:%s", shortopts);
    for (;;) {
        int o = getopt_long(argc, argv, spec, opts, NULL);
        switch (o) {
        case O_JSON:
            g_json = true;
            continue;
        case O_HELP:
            return 'h';
        case ':':
            bad_usage("%s needs a value", argv[optind - 1]);
            return '?';
        case '?':
            if (optopt != 0) {
                bad_usage("unknown flag -%c", optopt);
            } else {
                bad_usage("unknown flag %s", argv[optind - 1]);
            }
            return '?';
        default:
            return o;
        }
    }
}

// no_flags parses a command that has no flags of its own; the operands
// start at optind.
static int
no_flags(int argc, char **argv)
{
    static const struct option opts[] = {COMMON_OPTS, {NULL, 0, NULL, 0}};
    int o = next_opt(argc, argv, opts, "");
    if (o == 'h') {
        usage(stdout);
        return -1;
    }
    return o == -1 ? 0 : EXIT_USAGE;
}

// ---------------------------------------------------------------------------
// Commands. Each parses its flags first (bad usage exits 2 whether or not
// a daemon runs), then connects.

// conn connects to g_url once, with a dial that fails at once when nothing
// listens: exits EXIT_DAEMON then.
static tr_client *
conn(void)
{
    if (g_client == NULL) {
        tr_err rv = tr_client_connect_now(g_url, &g_client);
        if (rv != TR_OK) {
            fprintf(stderr, "troupe: cannot reach trouped at %s: %s (is it running?)\n", g_url,
                    tr_strerror(rv));
            exit(EXIT_DAEMON);
        }
        tr_client_set_token(g_client, g_token);
    }
    return g_client;
}

// wait_ids waits for ids and shows them: 0, EXIT_JOBFAIL when not all
// succeeded (all_final: when all ended, whatever the state), EXIT_DAEMON.
static int
wait_ids(tr_client *c, const uint64_t *ids, size_t n, bool all_final)
{
    tr_msg *reply;
    tr_err rv = tr_client_wait(c, ids, n, 0, &reply, NULL);
    if (rv != TR_OK) {
        return fail("wait", rv);
    }
    const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
    show_jobs(jl);
    int code = all_final ? 0 : jobs_exit(jl);
    tr_msg_free(reply);
    return code;
}

static int
cmd_submit(int argc, char **argv)
{
    enum {
        O_NAME = 1,
        O_GROUP,
        O_PRIO,
        O_TIMEOUT,
        O_RETRIES,
        O_ENV,
        O_CWD,
        O_LABEL,
        O_SLOTS,
        O_AFTER,
        O_WAIT,
        O_SHELL,
        O_CAP,
        O_PLUGIN,
        O_ARGS
    };
    static const struct option opts[] = {
        {"name", required_argument, NULL, O_NAME},
        {"group", required_argument, NULL, O_GROUP},
        {"priority", required_argument, NULL, O_PRIO},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"retries", required_argument, NULL, O_RETRIES},
        {"env", required_argument, NULL, O_ENV},
        {"cwd", required_argument, NULL, O_CWD},
        {"label", required_argument, NULL, O_LABEL},
        {"slots", required_argument, NULL, O_SLOTS},
        {"after", required_argument, NULL, O_AFTER},
        {"wait", no_argument, NULL, O_WAIT},
        {"shell", no_argument, NULL, O_SHELL},
        {"output-cap", required_argument, NULL, O_CAP},
        {"plugin", required_argument, NULL, O_PLUGIN},
        {"args", required_argument, NULL, O_ARGS},
        COMMON_OPTS,
        {NULL, 0, NULL, 0},
    };
    Troupe__V1__JobSpec js = TROUPE__V1__JOB_SPEC__INIT;
    bool wait = false, shell = false;
    const char *plugin = NULL, *plugin_args = NULL;
    vec env = {0}, labels = {0};
    uint64_t *after = calloc((size_t)argc + 1, sizeof *after);
    size_t nafter = 0;
    int code = 0, o;
    while (code == 0 && (o = next_opt(argc, argv, opts, "")) != -1) {
        char *k, *v;
        switch (o) {
        case O_NAME:
            js.name = optarg;
            break;
        case O_GROUP:
            js.group = optarg;
            break;
        case O_PRIO:
            code = parse_i32(optarg, &js.priority)
                       ? 0
                       : bad_usage("--priority %s: not an integer", optarg);
            break;
        case O_TIMEOUT:
            code =
                parse_ms(optarg, &js.timeout_ms)
                    ? 0
                    : bad_usage("--timeout %s: not a duration (ms, or 500ms, 2s, 1m, 1h)", optarg);
            break;
        case O_RETRIES:
            code =
                parse_u32(optarg, &js.retries) ? 0 : bad_usage("--retries %s: not a count", optarg);
            break;
        case O_SLOTS:
            code = parse_u32(optarg, &js.slots) ? 0 : bad_usage("--slots %s: not a count", optarg);
            break;
        case O_CWD:
            js.cwd = optarg;
            break;
        case O_CAP:
            code = parse_u64(optarg, &js.output_cap)
                       ? 0
                       : bad_usage("--output-cap %s: not a count of bytes", optarg);
            break;
        case O_AFTER:
            code = parse_u64(optarg, &after[nafter]) && after[nafter] != 0
                       ? (nafter++, 0)
                       : bad_usage("--after %s: not a job id", optarg);
            break;
        case O_ENV:
        case O_LABEL:
            if (!split_kv(optarg, &k, &v)) {
                code = bad_usage("%s %s: expected KEY=VALUE", o == O_ENV ? "--env" : "--label",
                                 optarg);
            } else if (o == O_ENV) {
                Troupe__V1__EnvVar *e = calloc(1, sizeof *e);
                troupe__v1__env_var__init(e);
                e->name = k;
                e->value = v;
                vec_push(&env, e);
            } else {
                Troupe__V1__Label *l = calloc(1, sizeof *l);
                troupe__v1__label__init(l);
                l->key = k;
                l->value = v;
                vec_push(&labels, l);
            }
            break;
        case O_WAIT:
            wait = true;
            break;
        case O_SHELL:
            shell = true;
            break;
        case O_PLUGIN:
            plugin = optarg;
            code = trd_kind_name_ok(optarg)
                       ? 0
                       : bad_usage("--plugin %s: not a kind name (1 to %d of [A-Za-z0-9_.:-])",
                                   optarg, TR_KIND_NAME_MAX);
            break;
        case O_ARGS:
            plugin_args = optarg;
            break;
        case 'h':
            usage(stdout);
            code = -1;
            break;
        default:
            code = EXIT_USAGE;
            break;
        }
    }
    if (code == 0 && plugin == NULL && plugin_args != NULL) {
        code = bad_usage("submit: --args goes with --plugin");
    } else if (code == 0 && plugin != NULL && (shell || optind < argc)) {
        code = bad_usage("submit: --plugin runs a task kind, not a command (no %s)",
                         shell ? "--shell" : "CMD");
    } else if (code == 0 && plugin == NULL && optind >= argc) {
        code = bad_usage("submit: no command given");
    }
    char *script = NULL;
    Troupe__V1__ExecTask ex = TROUPE__V1__EXEC_TASK__INIT;
    Troupe__V1__ShellTask sh = TROUPE__V1__SHELL_TASK__INIT;
    Troupe__V1__PluginTask pt = TROUPE__V1__PLUGIN_TASK__INIT;
    if (code == 0) {
        if (plugin != NULL) {
            pt.kind = (char *)plugin;
            if (plugin_args != NULL) {
                pt.args.data = (uint8_t *)plugin_args;
                pt.args.len = strlen(plugin_args);
            }
            js.task_case = TROUPE__V1__JOB_SPEC__TASK_PLUGIN;
            js.plugin = &pt;
        } else if (shell) {
            size_t len = 1;
            for (int i = optind; i < argc; i++) {
                len += strlen(argv[i]) + 1;
            }
            script = calloc(1, len);
            for (int i = optind; i < argc; i++) {
                strcat(script, argv[i]);
                if (i + 1 < argc) {
                    strcat(script, " ");
                }
            }
            sh.script = script;
            js.task_case = TROUPE__V1__JOB_SPEC__TASK_SHELL;
            js.shell = &sh;
        } else {
            ex.argv = argv + optind;
            ex.n_argv = (size_t)(argc - optind);
            js.task_case = TROUPE__V1__JOB_SPEC__TASK_EXEC;
            js.exec = &ex;
        }
        js.env = (Troupe__V1__EnvVar **)env.v_items;
        js.n_env = env.v_n;
        js.labels = (Troupe__V1__Label **)labels.v_items;
        js.n_labels = labels.v_n;
        js.after_ids = after;
        js.n_after_ids = nafter;
        Troupe__V1__JobSpec *jobs[] = {&js};
        Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
        b.jobs = jobs;
        b.n_jobs = 1;
        b.job_count = 1;
        uint64_t first;
        uint32_t count;
        tr_client *c = conn();
        tr_err rv = tr_client_submit(c, &b, &first, &count);
        if (rv != TR_OK) {
            code = fail("submit", rv);
        } else if (!wait) {
            if (g_json) {
                emit(json_pack("{s:I,s:i}", "first_id", (json_int_t)first, "count", (int)count),
                     false);
            } else {
                printf("%" PRIu64 "\n", first);
            }
        } else {
            tr_msg *reply;
            if ((rv = tr_client_wait(c, &first, 1, 0, &reply, NULL)) != TR_OK) {
                code = fail("wait", rv);
            } else {
                const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
                if (g_json) {
                    emit(json_pack(
                             "{s:I,s:i,s:o}", "first_id", (json_int_t)first, "count", (int)count,
                             "jobs",
                             json_jobs((const Troupe__V1__JobInfo *const *)jl->jobs, jl->n_jobs)),
                         false);
                } else {
                    printf("%" PRIu64 "\n", first);
                    print_table((const Troupe__V1__JobInfo *const *)jl->jobs, jl->n_jobs);
                }
                code = jobs_exit(jl);
                tr_msg_free(reply);
            }
        }
    }
    for (size_t i = 0; i < env.v_n; i++) {
        free(env.v_items[i]);
    }
    for (size_t i = 0; i < labels.v_n; i++) {
        free(labels.v_items[i]);
    }
    free(env.v_items);
    free(labels.v_items);
    free(after);
    free(script);
    return code < 0 ? 0 : code;
}

static int
cmd_cancel(int argc, char **argv)
{
    static const struct option opts[] = {
        {"wait", no_argument, NULL, 'w'}, COMMON_OPTS, {NULL, 0, NULL, 0}};
    bool wait = false;
    uint64_t *ids = NULL;
    size_t n;
    // IDs and --wait in any order: permute (no "+").
    int o;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (o == 'w') {
            wait = true;
        } else if (o == O_JSON) {
            g_json = true;
        } else if (o == O_HELP) {
            usage(stdout);
            return 0;
        } else {
            return bad_usage("cancel: unknown flag %s", argv[optind - 1]);
        }
    }
    if (!parse_ids(argc - optind, argv + optind, &ids, &n)) {
        free(ids);
        return EXIT_USAGE;
    }
    int code = 0;
    tr_client *c = conn();
    tr_err rv = tr_client_cancel(c, ids, n);
    if (rv != TR_OK) {
        code = fail("cancel", rv);
    } else if (wait) {
        code = wait_ids(c, ids, n, true);
    } else if (g_json) {
        emit(json_object(), false);
    } else {
        printf("cancel requested for %zu job%s\n", n, n == 1 ? "" : "s");
    }
    free(ids);
    return code;
}

// with_ids parses the ids of status and wait and runs fn on them.
static int
with_ids(int argc, char **argv, int (*fn)(tr_client *, const uint64_t *, size_t))
{
    int code = no_flags(argc, argv);
    if (code != 0) {
        return code < 0 ? 0 : code;
    }
    uint64_t *ids;
    size_t n;
    code = parse_ids(argc - optind, argv + optind, &ids, &n) ? fn(conn(), ids, n) : EXIT_USAGE;
    free(ids);
    return code;
}

static int
status_ids(tr_client *c, const uint64_t *ids, size_t n)
{
    tr_msg *reply;
    tr_err rv = tr_client_status(c, ids, n, &reply);
    if (rv != TR_OK) {
        return fail("status", rv);
    }
    show_jobs(tr_client_reply_jobs(reply));
    tr_msg_free(reply);
    return 0;
}

static int
wait_all(tr_client *c, const uint64_t *ids, size_t n)
{
    return wait_ids(c, ids, n, false);
}

static int
cmd_status(int argc, char **argv)
{
    return with_ids(argc, argv, status_ids);
}

static int
cmd_wait(int argc, char **argv)
{
    return with_ids(argc, argv, wait_all);
}

static int
state_by_name(const char *s)
{
    for (int i = 0; i < N_STATES; i++) {
        if (strcmp(s, state_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

static int
cmd_list(int argc, char **argv)
{
    enum { O_STATE = 1, O_GROUP, O_LABEL, O_NAME, O_LIMIT, O_AFTER, O_ALL };
    static const struct option opts[] = {
        {"state", required_argument, NULL, O_STATE},
        {"group", required_argument, NULL, O_GROUP},
        {"label", required_argument, NULL, O_LABEL},
        {"name", required_argument, NULL, O_NAME},
        {"limit", required_argument, NULL, O_LIMIT},
        {"after", required_argument, NULL, O_AFTER},
        {"all", no_argument, NULL, O_ALL},
        COMMON_OPTS,
        {NULL, 0, NULL, 0},
    };
    Troupe__V1__ListJobs q = TROUPE__V1__LIST_JOBS__INIT;
    Troupe__V1__JobState states[N_STATES];
    bool all = false;
    int o;
    while ((o = next_opt(argc, argv, opts, "")) != -1) {
        char *k, *v;
        switch (o) {
        case O_STATE:
            // Repeatable, and a comma list: --state failed,timed_out.
            for (char *tok = strtok(optarg, ","); tok != NULL; tok = strtok(NULL, ",")) {
                int st = state_by_name(tok);
                if (st < 0) {
                    return bad_usage("--state %s: not a state (queued, running, succeeded, "
                                     "failed, cancelled, timed_out, skipped)",
                                     tok);
                }
                if (q.n_states < N_STATES) {
                    states[q.n_states++] = (Troupe__V1__JobState)st;
                }
            }
            break;
        case O_GROUP:
            q.group = optarg;
            break;
        case O_LABEL:
            if (!split_kv(optarg, &k, &v)) {
                return bad_usage("--label %s: expected KEY=VALUE", optarg);
            }
            q.label_key = k;
            q.label_value = v;
            break;
        case O_NAME:
            q.name_prefix = optarg;
            break;
        case O_LIMIT:
            if (!parse_u32(optarg, &q.limit) || q.limit == 0 || q.limit > 1000) {
                return bad_usage("--limit %s: a count from 1 to 1000", optarg);
            }
            break;
        case O_AFTER:
            if (!parse_u64(optarg, &q.after_id)) {
                return bad_usage("--after %s: not a job id", optarg);
            }
            break;
        case O_ALL:
            all = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        return bad_usage("list: unexpected argument %s", argv[optind]);
    }
    q.states = states;
    if (all && q.limit == 0) {
        q.limit = 1000;
    }
    tr_client *c = conn();
    tr_msg **pages = NULL;
    size_t npages = 0, njobs = 0;
    uint64_t next = 0;
    int code = 0;
    do {
        tr_msg *reply;
        tr_err rv = tr_client_list(c, &q, &reply);
        if (rv != TR_OK) {
            code = fail("list", rv);
            break;
        }
        pages = realloc(pages, (npages + 1) * sizeof *pages);
        pages[npages++] = reply;
        const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
        njobs += jl->n_jobs;
        next = jl->next_cursor;
        q.after_id = next;
    } while (all && next != 0);
    if (code == 0) {
        // One table (or document) over every page.
        Troupe__V1__JobInfo **jobs = calloc(njobs + 1, sizeof *jobs);
        size_t k = 0;
        for (size_t p = 0; p < npages; p++) {
            const Troupe__V1__JobList *jl = tr_client_reply_jobs(pages[p]);
            if (jl->n_jobs > 0) { // an empty page's jobs may be NULL
                memcpy(jobs + k, jl->jobs, jl->n_jobs * sizeof *jobs);
            }
            k += jl->n_jobs;
        }
        Troupe__V1__JobList all_jl = TROUPE__V1__JOB_LIST__INIT;
        all_jl.jobs = jobs;
        all_jl.n_jobs = njobs;
        all_jl.next_cursor = next;
        show_jobs(&all_jl);
        if (!g_json && next != 0) {
            fprintf(stderr, "troupe: more jobs: list --after %" PRIu64 " (or --all)\n", next);
        }
        free(jobs);
    }
    for (size_t p = 0; p < npages; p++) {
        tr_msg_free(pages[p]);
    }
    free(pages);
    return code;
}

static void
write_all(const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(1, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            fprintf(stderr, "troupe: write to stdout: %s\n", strerror(errno));
            exit(EXIT_USAGE);
        }
        p += w;
        n -= (size_t)w;
    }
}

static void
on_output(void *arg, uint32_t stream, uint64_t offset, const uint8_t *data, size_t len)
{
    (void)arg;
    if (g_json) {
        emit(json_pack("{s:i,s:I,s:o}", "stream", (int)stream, "offset", (json_int_t)offset, "data",
                       jbase64(data, len)),
             true);
    } else {
        write_all(data, len);
    }
}

static int
cmd_logs(int argc, char **argv)
{
    enum { O_STDERR = 1 };
    static const struct option opts[] = {{"stderr", no_argument, NULL, O_STDERR},
                                         {"follow", no_argument, NULL, 'f'},
                                         COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    uint32_t stream = 1;
    bool follow = false;
    int o;
    // The id and the flags in any order: permute.
    while ((o = getopt_long(argc, argv, ":f", opts, NULL)) != -1) {
        if (o == O_STDERR) {
            stream = 2;
        } else if (o == 'f') {
            follow = true;
        } else if (o == O_JSON) {
            g_json = true;
        } else if (o == O_HELP) {
            usage(stdout);
            return 0;
        } else {
            return bad_usage("logs: unknown flag %s", argv[optind - 1]);
        }
    }
    uint64_t id;
    if (optind + 1 != argc) {
        return bad_usage("logs: give one job id");
    }
    if (!parse_u64(argv[optind], &id) || id == 0) {
        return bad_usage("%s: not a job id", argv[optind]);
    }
    tr_client *c = conn();
    if (follow) {
        tr_msg *final_reply;
        tr_err rv = tr_client_follow(c, id, stream, on_output, NULL, &final_reply);
        if (rv != TR_OK) {
            return fail("logs", rv);
        }
        tr_msg_free(final_reply);
        return 0;
    }
    // What there is now, to the end (or eof).
    uint8_t *all = NULL;
    size_t nall = 0;
    uint64_t off = 0;
    bool eof = false, truncated = false;
    for (;;) {
        tr_msg *reply;
        tr_err rv = tr_client_logs(c, id, stream, off, 1u << 20, false, &reply);
        if (rv != TR_OK) {
            free(all);
            return fail("logs", rv);
        }
        const Troupe__V1__LogChunk *ch = tr_client_reply_log(reply);
        size_t len = ch->data.len;
        if (g_json && len > 0) {
            all = realloc(all, nall + len + 1);
            memcpy(all + nall, ch->data.data, len);
            nall += len;
        } else if (!g_json) {
            write_all(ch->data.data, len);
        }
        off = ch->offset + len;
        eof = ch->eof;
        truncated = ch->truncated;
        tr_msg_free(reply);
        if (eof || len == 0) {
            break;
        }
    }
    if (g_json) {
        emit(json_pack("{s:I,s:i,s:i,s:o,s:b,s:b}", "id", (json_int_t)id, "stream", (int)stream,
                       "offset", 0, "data", jbase64(all, nall), "eof", (int)eof, "truncated",
                       (int)truncated),
             false);
    }
    free(all);
    return 0;
}

// group_cmd: pause and resume.
static int
group_cmd(int argc, char **argv, bool pause)
{
    int code = no_flags(argc, argv);
    if (code != 0) {
        return code < 0 ? 0 : code;
    }
    if (optind + 1 != argc) {
        return bad_usage("%s: give one group name ('' for the default group)",
                         pause ? "pause" : "resume");
    }
    const char *g = argv[optind];
    tr_client *c = conn();
    tr_err rv = tr_client_group(c, g, pause);
    if (rv != TR_OK) {
        return fail(pause ? "pause" : "resume", rv);
    }
    if (g_json) {
        emit(json_object(), false);
    } else {
        printf("group %s %s\n", g[0] != '\0' ? g : "(default)", pause ? "paused" : "resumed");
    }
    return 0;
}

static int
cmd_pause(int argc, char **argv)
{
    return group_cmd(argc, argv, true);
}

static int
cmd_resume(int argc, char **argv)
{
    return group_cmd(argc, argv, false);
}

static int
cmd_shutdown(int argc, char **argv)
{
    enum { O_IMM = 1, O_DEADLINE };
    static const struct option opts[] = {{"immediate", no_argument, NULL, O_IMM},
                                         {"deadline", required_argument, NULL, O_DEADLINE},
                                         COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    bool imm = false;
    uint64_t deadline = 0;
    int o;
    while ((o = next_opt(argc, argv, opts, "")) != -1) {
        if (o == O_IMM) {
            imm = true;
        } else if (o == O_DEADLINE) {
            if (!parse_ms(optarg, &deadline)) {
                return bad_usage("--deadline %s: not a duration", optarg);
            }
        } else if (o == 'h') {
            usage(stdout);
            return 0;
        } else {
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        return bad_usage("shutdown: unexpected argument %s", argv[optind]);
    }
    tr_client *c = conn();
    tr_err rv = tr_client_shutdown(c, imm, deadline);
    if (rv != TR_OK) {
        return fail("shutdown", rv);
    }
    if (g_json) {
        emit(json_object(), false);
    } else {
        printf("trouped is stopping%s\n", imm ? " (immediately)" : "");
    }
    return 0;
}

static int
cmd_ping(int argc, char **argv)
{
    int code = no_flags(argc, argv);
    if (code != 0) {
        return code < 0 ? 0 : code;
    }
    if (optind != argc) {
        return bad_usage("ping: unexpected argument %s", argv[optind]);
    }
    tr_msg *reply;
    tr_err rv = tr_client_pong(conn(), &reply);
    if (rv != TR_OK) {
        return fail("ping", rv);
    }
    const Troupe__V1__Pong *p = tr_client_reply_pong(reply);
    if (g_json) {
        emit(json_pack("{s:o,s:i,s:I,s:o,s:I,s:I,s:I}", "version", jstr(p->version), "protocol",
                       (int)p->protocol, "uptime_ms", (json_int_t)p->uptime_ms, "events_url",
                       jstr(p->events_url), "pipes", (json_int_t)p->pipes, "pipes_refused",
                       (json_int_t)p->pipes_refused, "pipes_dropped", (json_int_t)p->pipes_dropped),
             false);
    } else {
        char up[32];
        fmt_duration(up, sizeof up, (int64_t)p->uptime_ms);
        printf("trouped %s at %s: protocol %u, up %s, events %s\n", p->version, g_url, p->protocol,
               up, p->events_url[0] != '\0' ? p->events_url : "(none)");
        printf("connections: %llu open, %llu refused (cap), %llu dropped (oversized or bad)\n",
               (unsigned long long)p->pipes, (unsigned long long)p->pipes_refused,
               (unsigned long long)p->pipes_dropped);
    }
    tr_msg_free(reply);
    return 0;
}

// ---------------------------------------------------------------------------
// run FILE.

static char *
read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "troupe: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n > TRD_WL_MAX_FILE) {
            fprintf(stderr, "troupe: %s: larger than %u bytes\n", path, TRD_WL_MAX_FILE);
            free(buf);
            buf = NULL;
            break;
        }
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
            }
            buf = nb;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

// What `run` follows: the jobs first .. first + count - 1.
typedef struct run {
    tr_client *r_c;
    uint64_t r_first;
    uint32_t r_count;
    uint8_t *r_state;       // per job, as last seen
    bool *r_reported;       // its end printed
    uint32_t r_n[N_STATES]; // jobs per state
    bool r_tty;             // a live progress line
    int r_code;
    tr_err r_err; // a Status that failed in the event callback
} run;

static void
run_progress(run *r)
{
    if (!r->r_tty || g_json) {
        return;
    }
    uint32_t done = 0;
    for (int s = TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED; s < N_STATES; s++) {
        done += r->r_n[s];
    }
    uint32_t bad = done - r->r_n[TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED];
    printf("\r\033[K[%u/%u] %u running, %u queued%s", done, r->r_count,
           r->r_n[TROUPE__V1__JOB_STATE__JOB_STATE_RUNNING],
           r->r_n[TROUPE__V1__JOB_STATE__JOB_STATE_QUEUED], bad > 0 ? "," : "");
    if (bad > 0) {
        printf(" %s%u not succeeded%s", g_color ? "\033[31m" : "", bad, g_color ? "\033[0m" : "");
    }
    fflush(stdout);
}

static void
run_set_state(run *r, uint64_t id, int st)
{
    size_t i = (size_t)(id - r->r_first);
    if (st < 0 || st >= N_STATES || r->r_state[i] == st || final(r->r_state[i])) {
        return;
    }
    r->r_n[r->r_state[i]]--;
    r->r_n[st]++;
    r->r_state[i] = (uint8_t)st;
}

// run_report prints the line of a job that ended (once).
static void
run_report(run *r, const Troupe__V1__JobInfo *j)
{
    size_t i = (size_t)(j->id - r->r_first);
    run_set_state(r, j->id, j->state);
    if (!final(j->state) || r->r_reported[i]) {
        return;
    }
    r->r_reported[i] = true;
    if (j->state != TROUPE__V1__JOB_STATE__JOB_STATE_SUCCEEDED) {
        r->r_code = EXIT_JOBFAIL;
    }
    if (g_json) {
        return;
    }
    if (r->r_tty) {
        printf("\r\033[K");
    }
    const char *on = g_color ? state_color(j->state) : "", *off = on[0] != '\0' ? "\033[0m" : "";
    printf("%" PRIu64 "\t%s\t%s%s%s", j->id, j->name[0] != '\0' ? j->name : "-", on,
           state_name(j->state), off);
    if (j->signal != 0) {
        printf("\tsignal=%d", j->signal);
    } else {
        printf("\texit=%d", j->exit_code);
    }
    if (j->error[0] != '\0') {
        printf("\terror=%s", j->error);
    }
    printf("\n");
    run_progress(r);
}

// run_status reads ids (at most 1000) and reports those that ended.
static tr_err
run_status(run *r, const uint64_t *ids, size_t n)
{
    tr_msg *reply;
    tr_err rv = tr_client_status(r->r_c, ids, n, &reply);
    if (rv != TR_OK) {
        return rv;
    }
    const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
    for (size_t i = 0; i < jl->n_jobs; i++) {
        run_report(r, jl->jobs[i]);
    }
    tr_msg_free(reply);
    return TR_OK;
}

static void
run_event(void *arg, const Troupe__V1__JobEvent *ev)
{
    run *r = arg;
    if (ev->stream != 0 || r->r_err != TR_OK) {
        return;
    }
    if (final(ev->state)) {
        // The line needs the name and the exit code: read the job.
        tr_err rv = run_status(r, &ev->id, 1);
        if (rv != TR_OK) {
            r->r_err = rv;
        }
    } else {
        run_set_state(r, ev->id, ev->state);
        run_progress(r);
    }
}

// run_follow follows the jobs to their ends: with events, or (the daemon
// has none) a Wait on the lowest unfinished id at a time and a Status of
// the rest after each, so lines come as jobs end, never on a timer.
static tr_err
run_follow(run *r, uint64_t *ids)
{
    tr_err rv = tr_client_watch(r->r_c, ids, r->r_count, run_event, r);
    if (rv == TR_OK && r->r_err != TR_OK) {
        return r->r_err;
    }
    if (rv != TR_ENOTSUP) {
        return rv;
    }
    size_t left = r->r_count;
    while (left > 0) {
        tr_msg *reply;
        if ((rv = tr_client_wait(r->r_c, ids, 1, 0, &reply, NULL)) != TR_OK) {
            return rv;
        }
        tr_msg_free(reply);
        size_t n = left < 1000 ? left : 1000;
        if ((rv = run_status(r, ids, n)) != TR_OK) {
            return rv;
        }
        size_t k = 0;
        for (size_t i = 0; i < left; i++) {
            if (!r->r_reported[ids[i] - r->r_first]) {
                ids[k++] = ids[i];
            }
        }
        left = k;
    }
    return TR_OK;
}

static int
cmd_run(int argc, char **argv)
{
    int code = no_flags(argc, argv);
    if (code != 0) {
        return code < 0 ? 0 : code;
    }
    if (optind + 1 != argc) {
        return bad_usage("run: give one workload file");
    }
    const char *path = argv[optind];
    size_t len;
    char *text = read_file(path, &len);
    if (text == NULL) {
        return EXIT_USAGE;
    }
    tr_msg *bm;
    trd_diag diag;
    tr_err rv = trd_workload_parse(text, len, &bm, &diag);
    free(text);
    if (rv != TR_OK) {
        fprintf(stderr, "%s:%u:%u: %s\n", path, diag.line, diag.column, diag.msg);
        return EXIT_USAGE;
    }
    uint64_t first;
    uint32_t count;
    tr_client *c = conn();
    rv = tr_client_submit(c, tr_msg_body(bm), &first, &count);
    tr_msg_free(bm);
    if (rv != TR_OK) {
        return fail("submit", rv);
    }
    if (!g_json) {
        printf("submitted %u jobs: %" PRIu64 "..%" PRIu64 "\n", count, first, first + count - 1);
        fflush(stdout);
    }
    run r = {.r_c = c, .r_first = first, .r_count = count, .r_tty = isatty(1) == 1};
    r.r_state = calloc(count + 1, 1);
    r.r_reported = calloc(count + 1, sizeof *r.r_reported);
    r.r_n[TROUPE__V1__JOB_STATE__JOB_STATE_QUEUED] = count;
    uint64_t *ids = calloc(count + 1, sizeof *ids);
    for (uint32_t i = 0; i < count; i++) {
        ids[i] = first + i;
    }
    run_progress(&r);
    rv = run_follow(&r, ids);
    // Every job once more, in slices of the daemon's limit: the ends that
    // no event showed, and with --json the document.
    json_t *jobs = g_json ? json_array() : NULL;
    for (uint32_t i = 0; rv == TR_OK && i < count; i += 1000) {
        uint32_t n = count - i < 1000 ? count - i : 1000;
        for (uint32_t k = 0; k < n; k++) {
            ids[k] = first + i + k;
        }
        tr_msg *reply;
        if ((rv = tr_client_status(c, ids, n, &reply)) == TR_OK) {
            const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
            for (size_t k = 0; k < jl->n_jobs; k++) {
                run_report(&r, jl->jobs[k]);
            }
            if (jobs != NULL) {
                json_t *page = json_jobs((const Troupe__V1__JobInfo *const *)jl->jobs, jl->n_jobs);
                json_array_extend(jobs, page);
                json_decref(page);
            }
            tr_msg_free(reply);
        }
    }
    if (rv != TR_OK) {
        json_decref(jobs);
        code = fail("run", rv);
    } else if (g_json) {
        emit(json_pack("{s:I,s:i,s:o}", "first_id", (json_int_t)first, "count", (int)count, "jobs",
                       jobs),
             false);
        code = r.r_code;
    } else {
        if (r.r_tty) {
            printf("\r\033[K");
        }
        printf("%s\n", r.r_code == 0 ? "all jobs succeeded" : "some jobs did not succeed");
        code = r.r_code;
    }
    free(ids);
    free(r.r_state);
    free(r.r_reported);
    return code;
}

// ---------------------------------------------------------------------------
// main.

static void
default_url(char *buf, size_t n)
{
    const char *xr = getenv("XDG_RUNTIME_DIR");
    if (geteuid() == 0) {
        snprintf(buf, n, "ipc:///run/troupe/trouped.sock");
    } else if (xr != NULL && xr[0] == '/') {
        snprintf(buf, n, "ipc://%.3000s/troupe/trouped.sock", xr);
    } else {
        snprintf(buf, n, "ipc:///tmp/troupe-%d/trouped.sock", (int)geteuid());
    }
}

// read_token reads a token file: its first line, without trailing white
// space. NULL (said why) when it cannot be read or is empty.
static char *
read_token(const char *path)
{
    size_t len;
    char *t = read_file(path, &len);
    if (t == NULL) {
        return NULL;
    }
    char *nl = memchr(t, '\n', len);
    size_t n = nl != NULL ? (size_t)(nl - t) : len;
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t' || t[n - 1] == '\r')) {
        n--;
    }
    t[n] = '\0';
    if (n == 0 || memchr(t, '\0', n) != NULL) {
        fprintf(stderr, "troupe: %s: no token in it\n", path);
        free(t);
        return NULL;
    }
    return t;
}

static const struct {
    const char *name;
    int (*fn)(int, char **);
} commands[] = {
    {"ping", cmd_ping},         {"submit", cmd_submit}, {"cancel", cmd_cancel},
    {"status", cmd_status},     {"list", cmd_list},     {"wait", cmd_wait},
    {"logs", cmd_logs},         {"pause", cmd_pause},   {"resume", cmd_resume},
    {"shutdown", cmd_shutdown}, {"run", cmd_run},
};

int
main(int argc, char **argv)
{
    const char *url = getenv("TROUPE_URL"), *token_file = getenv("TROUPE_TOKEN_FILE");
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--url") == 0 || strcmp(a, "--token-file") == 0) {
            if (i + 1 >= argc) {
                return bad_usage("%s needs a value", a);
            }
            *(a[2] == 'u' ? &url : &token_file) = argv[++i];
        } else if (strncmp(a, "--url=", 6) == 0) {
            url = a + 6;
        } else if (strncmp(a, "--token-file=", 13) == 0) {
            token_file = a + 13;
        } else if (strcmp(a, "--json") == 0) {
            g_json = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("troupe %s\n", TROUPE_VERSION);
            return 0;
        } else {
            return bad_usage("unknown flag %s", a);
        }
    }
    if (i >= argc) {
        return bad_usage("no command given");
    }
    const char *cmd = argv[i];
    int (*fn)(int, char **) = NULL;
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++) {
        if (strcmp(cmd, commands[k].name) == 0) {
            fn = commands[k].fn;
        }
    }
    if (fn == NULL) {
        return bad_usage("unknown command %s", cmd);
    }
    const char *nc = getenv("NO_COLOR");
    g_color = isatty(1) == 1 && (nc == NULL || nc[0] == '\0');
    char *token = NULL;
    if (token_file != NULL && token_file[0] != '\0' && (token = read_token(token_file)) == NULL) {
        return EXIT_USAGE;
    }
    char ubuf[4096];
    if (url == NULL || url[0] == '\0') {
        default_url(ubuf, sizeof ubuf);
        url = ubuf;
    }
    g_url = url;
    g_token = token;
    // The command's own flags: getopt_long over argv[i..], its name as
    // argv[0].
    optind = 1;
    int code = fn(argc - i, argv + i);
    tr_client_close(g_client);
    free(token);
    return code;
}
