// Tests for trouped's settings (daemon/config.h): every key from each
// source, the precedence (flag > environment > file > default) key by key,
// the file's syntax (comments, quotes, blank lines, CRLF), each error with
// its file:line, bad values refused whatever the source, ephemeral against
// state-dir, the file size cap and a missing file.
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static bool
parse(trd_config *c, const char *text, char *err, size_t errlen)
{
    return trd_config_parse(c, text, strlen(text), "t.conf", err, errlen);
}

static void
expect_error(const char *text, const char *want)
{
    trd_config c;
    trd_config_init(&c);
    char err[512] = "";
    bool ok = parse(&c, text, err, sizeof err);
    if (ok || strcmp(err, want) != 0) {
        print_error("text %s\n  got %s: \"%s\"\n want \"%s\"\n", text, ok ? "ok" : "error", err,
                    want);
    }
    assert_false(ok);
    assert_string_equal(err, want);
    trd_config_free(&c);
}

static void
test_defaults(void **st)
{
    (void)st;
    trd_config c;
    trd_config_init(&c);
    assert_null(c.state_dir);
    assert_false(c.ephemeral);
    assert_null(c.listen);
    assert_int_equal(c.max_queued, TRD_MAX_QUEUED_DEFAULT);
    assert_int_equal(c.max_running, 0);
    assert_int_equal(c.output_cap, TRD_OUTPUT_CAP_DEFAULT);
    assert_true(c.durability_full);
    assert_null(c.cgroup);
    assert_null(c.plugin_dir);
    for (unsigned k = 0; k < TRD_K_COUNT; k++) {
        assert_int_equal(c.src[k], TRD_SRC_DEFAULT);
        trd_key back;
        assert_true(trd_key_lookup(trd_key_name((trd_key)k), &back));
        assert_int_equal(back, k);
    }
    assert_null(trd_key_name(TRD_K_COUNT));
    trd_key k;
    assert_false(trd_key_lookup("max_queued", &k));
    assert_false(trd_key_lookup("", &k));
    char err[64];
    assert_true(trd_config_finish(&c, err, sizeof err));
    trd_config_free(&c);
}

static void
test_file_every_key(void **st)
{
    (void)st;
    trd_config c;
    trd_config_init(&c);
    char err[512] = "";
    const char *text = "# trouped.conf\n"
                       "\n"
                       "state-dir = /var/lib/t\n"
                       "listen=ipc:///run/t.sock\r\n"
                       "  events   =   none  \n"
                       "tcp = \"tls+tcp://0.0.0.0:7000\"\n"
                       "tls-cert-key = /etc/t/cert.pem\n"
                       "token-file = /etc/t/token\n"
                       "insecure-tcp = no\n"
                       "max-queued = 0\n"
                       "max-running = 4294967295\n"
                       "output-cap = 1024\n"
                       "durability = process\n"
                       "cgroup = \"none\"\n"
                       "plugin-dir = /usr/lib/troupe/plugins\n"
                       "workers = 255\n"
                       "\t# an indented comment\n"
                       "ephemeral = off";
    assert_true(parse(&c, text, err, sizeof err));
    assert_string_equal(c.state_dir, "/var/lib/t");
    assert_string_equal(c.listen, "ipc:///run/t.sock");
    assert_string_equal(c.events, "none");
    assert_string_equal(c.tcp, "tls+tcp://0.0.0.0:7000");
    assert_string_equal(c.tls_cert_key, "/etc/t/cert.pem");
    assert_string_equal(c.token_file, "/etc/t/token");
    assert_false(c.insecure_tcp);
    assert_int_equal(c.max_queued, 0);
    assert_int_equal(c.max_running, UINT32_MAX);
    assert_int_equal(c.output_cap, 1024);
    assert_false(c.durability_full);
    assert_string_equal(c.cgroup, "none");
    assert_string_equal(c.plugin_dir, "/usr/lib/troupe/plugins");
    assert_int_equal(c.workers, 255);
    assert_false(c.ephemeral);
    for (unsigned k = 0; k < TRD_K_COUNT; k++) {
        assert_int_equal(c.src[k], TRD_SRC_FILE);
    }
    assert_true(trd_config_finish(&c, err, sizeof err));
    trd_config_free(&c);
    assert_null(c.state_dir);
}

static void
test_file_errors(void **st)
{
    (void)st;
    expect_error("max-queued = 1\nnonsense\n", "t.conf:2: not `key = value`");
    expect_error("\n\n = 3\n", "t.conf:3: no key before `=`");
    expect_error("max_queued = 3\n",
                 "t.conf:1: unknown key \"max_queued\" (trouped --help lists them)");
    expect_error("max-queued = 3\nmax-queued = 4\n", "t.conf:2: max-queued is set twice");
    expect_error("max-queued = -1\n", "t.conf:1: max-queued: \"-1\" is not a number (0: no cap)");
    expect_error("max-queued = 18446744073709551616\n",
                 "t.conf:1: max-queued: \"18446744073709551616\" is not a number (0: no cap)");
    expect_error("max-queued = 12k\n", "t.conf:1: max-queued: \"12k\" is not a number (0: no cap)");
    expect_error("max-running = 4294967296\n", "t.conf:1: max-running: \"4294967296\" is not a "
                                               "number up to 4294967295 (0: no cap)");
    expect_error("workers = 256\n",
                 "t.conf:1: workers: \"256\" is not a number up to 255 (0: one per core)");
    expect_error("output-cap = 0\n",
                 "t.conf:1: output-cap: \"0\" is not a positive number of bytes");
    expect_error("durability = fast\n", "t.conf:1: durability: \"fast\": full or process");
    expect_error("ephemeral = maybe\n",
                 "t.conf:1: ephemeral: \"maybe\" is not a boolean (true or false)");
    expect_error("ephemeral =\n", "t.conf:1: ephemeral: \"\" is not a boolean (true or false)");
    expect_error("state-dir =\n", "t.conf:1: state-dir: an empty value");
    expect_error("state-dir = \"\"\n", "t.conf:1: state-dir: an empty value");
    expect_error("state-dir = \"/x\n", "t.conf:1: a quoted value without its closing quote");
    expect_error("state-dir = \"\n", "t.conf:1: a quoted value without its closing quote");
    char nul[] = "state-dir = /a\0b\n";
    trd_config c;
    trd_config_init(&c);
    char err[256];
    assert_false(trd_config_parse(&c, nul, sizeof nul - 1, "n.conf", err, sizeof err));
    assert_string_equal(err, "n.conf:1: a NUL byte");
    trd_config_free(&c);
    // A line too long for the parser's buffer.
    size_t n = 5000;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = '\0';
    memcpy(big, "listen = ", 9);
    expect_error(big, "t.conf:1: a line over 4095 bytes");
    free(big);
}

static int warned;
static char warned_last[96];

static void
warn(const char *name)
{
    warned++;
    snprintf(warned_last, sizeof warned_last, "%s", name);
}

static void
test_precedence(void **st)
{
    (void)st;
    trd_config c;
    trd_config_init(&c);
    char err[256] = "";
    // trouped's order: the flags first, then the environment, then the
    // file; each key keeps its highest source.
    assert_true(trd_config_set(&c, TRD_SRC_FLAG, TRD_K_MAX_QUEUED, "10", err, sizeof err));
    assert_true(trd_config_set(&c, TRD_SRC_FLAG, TRD_K_INSECURE_TCP, NULL, err, sizeof err));
    char *envp[] = {
        "HOME=/root",
        "TROUPED_MAX_QUEUED=20",
        "TROUPED_MAX_RUNNING=3",
        "TROUPED_CONFIG=/ignored/here",
        "TROUPED_NO_SUCH_THING=1",
        "TROUPED_lower=1",
        "TROUPED_=x",
        "TROUPED_CGROUP=none",
        "TROUPE_JOB_STATE_DIR=/not/ours",
        "TROUPED_TCP=tcp://127.0.0.1:0",
        NULL,
    };
    warned = 0;
    assert_true(trd_config_env(&c, envp, warn, err, sizeof err));
    assert_int_equal(warned, 3); // NO_SUCH_THING, lower, the empty name
    assert_string_equal(warned_last, "TROUPED_");
    assert_true(parse(&c,
                      "max-queued = 30\nmax-running = 4\noutput-cap = 99\ncgroup = auto\n"
                      "insecure-tcp = false\n",
                      err, sizeof err));
    assert_int_equal(c.max_queued, 10);
    assert_int_equal(c.src[TRD_K_MAX_QUEUED], TRD_SRC_FLAG);
    assert_int_equal(c.max_running, 3);
    assert_int_equal(c.src[TRD_K_MAX_RUNNING], TRD_SRC_ENV);
    assert_int_equal(c.output_cap, 99);
    assert_int_equal(c.src[TRD_K_OUTPUT_CAP], TRD_SRC_FILE);
    assert_string_equal(c.cgroup, "none");
    assert_true(c.insecure_tcp);
    assert_int_equal(c.src[TRD_K_DURABILITY], TRD_SRC_DEFAULT);
    assert_true(trd_config_finish(&c, err, sizeof err));
    trd_config_free(&c);

    // A bad value is an error even where a higher source overrides it.
    trd_config_init(&c);
    assert_true(trd_config_set(&c, TRD_SRC_FLAG, TRD_K_MAX_QUEUED, "10", err, sizeof err));
    assert_false(parse(&c, "max-queued = ten\n", err, sizeof err));
    char *bad[] = {"TROUPED_OUTPUT_CAP=0", NULL};
    assert_false(trd_config_env(&c, bad, NULL, err, sizeof err));
    assert_string_equal(err, "TROUPED_OUTPUT_CAP: \"0\" is not a positive number of bytes");
    trd_config_free(&c);
}

static void
test_ephemeral_state_dir(void **st)
{
    (void)st;
    char err[256] = "";
    trd_config c;
    // One source with both: an error.
    trd_config_init(&c);
    assert_true(trd_config_set(&c, TRD_SRC_FLAG, TRD_K_EPHEMERAL, NULL, err, sizeof err));
    assert_true(trd_config_set(&c, TRD_SRC_FLAG, TRD_K_STATE_DIR, "/s", err, sizeof err));
    assert_false(trd_config_finish(&c, err, sizeof err));
    assert_string_equal(err, "ephemeral and state-dir exclude each other");
    trd_config_free(&c);
    // --ephemeral over a file's state-dir: ephemeral.
    trd_config_init(&c);
    assert_true(trd_config_set(&c, TRD_SRC_FLAG, TRD_K_EPHEMERAL, NULL, err, sizeof err));
    assert_true(parse(&c, "state-dir = /s\n", err, sizeof err));
    assert_true(trd_config_finish(&c, err, sizeof err));
    assert_true(c.ephemeral);
    assert_null(c.state_dir);
    trd_config_free(&c);
    // --state-dir over a file's ephemeral: that directory.
    trd_config_init(&c);
    assert_true(trd_config_set(&c, TRD_SRC_FLAG, TRD_K_STATE_DIR, "/s", err, sizeof err));
    assert_true(parse(&c, "ephemeral = yes\n", err, sizeof err));
    assert_true(trd_config_finish(&c, err, sizeof err));
    assert_false(c.ephemeral);
    assert_string_equal(c.state_dir, "/s");
    trd_config_free(&c);
    // insecure-tcp means nothing without tcp.
    trd_config_init(&c);
    assert_true(parse(&c, "insecure-tcp = 1\n", err, sizeof err));
    assert_false(trd_config_finish(&c, err, sizeof err));
    assert_string_equal(err, "insecure-tcp without tcp");
    trd_config_free(&c);
}

static void
test_load_file(void **st)
{
    (void)st;
    char dir[] = "/tmp/test_config_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], err[512] = "";
    snprintf(path, sizeof path, "%s/trouped.conf", dir);
    trd_config c;
    trd_config_init(&c);
    // Missing: fine only when it need not exist.
    assert_true(trd_config_load_file(&c, path, false, err, sizeof err));
    assert_false(trd_config_load_file(&c, path, true, err, sizeof err));
    char want[512];
    snprintf(want, sizeof want, "config file %s: %s", path, strerror(ENOENT));
    assert_string_equal(err, want);
    // A directory is not a config file.
    assert_false(trd_config_load_file(&c, dir, true, err, sizeof err));
    snprintf(want, sizeof want, "config file %s: not a regular file", dir);
    assert_string_equal(err, want);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("max-running = 7\nbogus = 1\n", f);
    fclose(f);
    assert_false(trd_config_load_file(&c, path, true, err, sizeof err));
    snprintf(want, sizeof want, "%s:2: unknown key \"bogus\" (trouped --help lists them)", path);
    assert_string_equal(err, want);
    trd_config_free(&c);
    trd_config_init(&c);
    f = fopen(path, "w");
    fputs("max-running = 7\n", f);
    fclose(f);
    assert_true(trd_config_load_file(&c, path, true, err, sizeof err));
    assert_int_equal(c.max_running, 7);
    // Over the cap: refused before it is read.
    assert_int_equal(truncate(path, (off_t)TRD_CONFIG_FILE_MAX + 1), 0);
    assert_false(trd_config_load_file(&c, path, true, err, sizeof err));
    snprintf(want, sizeof want, "config file %s: over %zu bytes", path, TRD_CONFIG_FILE_MAX);
    assert_string_equal(err, want);
    trd_config_free(&c);
    unlink(path);
    rmdir(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_file_every_key),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_ephemeral_state_dir),
        cmocka_unit_test(test_load_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
