// Tests for trouped's plugin loader (daemon/plugin.h) with the test plugin
// (plugins/demo_plugin.c) and its bad builds: what the loader refuses, each
// with a message naming the directory or the file (a group-writable
// directory, a world-writable plugin, one owned by another user, a
// symbolic link, no ABI symbol or no register function, another ABI, a
// register function that fails, a reserved kind name, a kind marked
// remote, a kind two plugins register), and what it loads: the demo
// plugin's kinds run through tr_kind_spawn and trd_plugin_spawn, their
// results encoded as trouped encodes them, demo.wait pending until
// cancelled. Every case has a fresh directory (copies of the built
// plugins, modes set here) and a fresh runtime, freed with no task left.
#define _GNU_SOURCE
#include "runtime/test_util.h"

#include "fs_util.h"

#include "plugin.h"

#ifndef DEMO_PLUGIN_DIR
#error "DEMO_PLUGIN_DIR: where the test plugins are built"
#endif

// The loader logs through trouped's trd_log; here the lines are kept.
static char g_log[8192];

void trd_log(const char *event, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void
trd_log(const char *event, const char *fmt, ...)
{
    size_t n = strlen(g_log);
    n += (size_t)snprintf(g_log + n, sizeof g_log - n, "event=%s ", event);
    if (n >= sizeof g_log) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    n += (size_t)vsnprintf(g_log + n, sizeof g_log - n, fmt, ap);
    va_end(ap);
    if (n + 1 < sizeof g_log) {
        g_log[n] = '\n';
        g_log[n + 1] = '\0';
    }
}

// ---------------------------------------------------------------------------
// Fixtures.

// A runtime kept running by a host thread inside tr_rt_run (a root task
// that waits for the case to end), as trouped's runtime thread runs its
// own, so that the tasks the test thread spawns and joins run whatever
// the worker count and scheduler.
typedef struct host_root {
    tu_event *stop;
} host_root;

static tr_poll
host_root_poll(void *arg, tr_cx *cx)
{
    return tu_event_poll(((host_root *)arg)->stop, cx);
}

static const tr_task_spec host_root_spec = {
    .name = "host.root", .poll = host_root_poll, .size = sizeof(host_root)};

typedef struct fixture {
    char dir[64];
    tr_rt *rt;
    tu_event stop;
    pthread_t thr;
    char err[1024];
} fixture;

static void *
host_main(void *arg)
{
    fixture *f = arg;
    tr_rt_run(f->rt, &host_root_spec, NULL, &(host_root){.stop = &f->stop}, NULL);
    return NULL;
}

static int
fixture_setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/trd-plugins-XXXXXX");
    assert_non_null(mkdtemp(f->dir)); // 0700, ours
    f->rt = tu_rt_new();
    tu_event_init(&f->stop);
    tu_thread_start(&f->thr, host_main, f);
    g_log[0] = '\0';
    *state = f;
    return 0;
}

static int
fixture_teardown(void **state)
{
    fixture *f = *state;
    tu_event_set(&f->stop);
    tu_thread_join(f->thr);
    tu_event_destroy(&f->stop);
    tu_rt_free_clean(f->rt);
    fs_rm_tree(f->dir);
    free(f);
    return 0;
}

// put copies the built plugin src (DEMO_PLUGIN_DIR/src) to dir/dst with
// mode.
static void
put(const fixture *f, const char *src, const char *dst, mode_t mode)
{
    char from[512], to[512];
    snprintf(from, sizeof from, "%s/%s", DEMO_PLUGIN_DIR, src);
    snprintf(to, sizeof to, "%s/%s", f->dir, dst);
    fs_copy(from, to, mode);
}

// load_fails loads f's directory, which must fail with rv and a message
// holding each of the NULL-terminated texts (each "%s" in them, at most
// two, is the directory's path).
static void
load_fails(fixture *f, tr_err rv, const char *const *texts)
{
    tr_err got = trd_plugins_load(f->rt, f->dir, f->err, sizeof f->err);
    if (got != rv) {
        print_error("want %s, got %s: %s\n", tr_err_name(rv), tr_err_name(got), f->err);
    }
    assert_int_equal(got, rv);
    for (size_t i = 0; texts[i] != NULL; i++) {
        char want[512];
        snprintf(want, sizeof want, texts[i], f->dir, f->dir);
        if (strstr(f->err, want) == NULL) {
            print_error("message: %s\nlacks: %s\n", f->err, want);
        }
        assert_non_null(strstr(f->err, want));
    }
}

static tr_outcome
join(tr_join *j)
{
    tr_outcome out;
    assert_int_equal(tr_join_wait_timeout(j, &out, (uint64_t)TU_WAIT_MS * TR_NS_PER_MS), TR_OK);
    return out;
}

// ---------------------------------------------------------------------------
// What loads.

static void
test_plugins_none(void **state)
{
    fixture *f = *state;
    assert_int_equal(trd_plugins_load(f->rt, NULL, f->err, sizeof f->err), TR_OK);
    assert_false(trd_plugin_kind_known(f->rt, "demo.echo"));
    // An empty directory, and one with nothing that is a plugin: no .so,
    // a hidden one, and ".so" itself.
    put(f, "demo.so", "README", 0644);
    put(f, "demo.so", ".hidden.so", 0644);
    put(f, "demo.so", ".so", 0644);
    assert_int_equal(trd_plugins_load(f->rt, f->dir, f->err, sizeof f->err), TR_OK);
    assert_false(trd_plugin_kind_known(f->rt, "demo.echo"));
    assert_non_null(strstr(g_log, "event=plugins"));
    assert_non_null(strstr(g_log, "loaded=0"));
}

static void
test_plugins_load_demo(void **state)
{
    fixture *f = *state;
    put(f, "demo.so", "demo.so", 0755);
    assert_int_equal(trd_plugins_load(f->rt, f->dir, f->err, sizeof f->err), TR_OK);
    char want[256];
    snprintf(want, sizeof want,
             "event=plugin_loaded file=\"%s/demo.so\" kinds=demo.echo,demo.fail,demo.wait\n",
             f->dir);
    assert_non_null(strstr(g_log, want));
    assert_non_null(strstr(g_log, "loaded=1"));
    assert_true(trd_plugin_kind_known(f->rt, "demo.echo"));
    assert_true(trd_plugin_kind_known(f->rt, "demo.fail"));
    assert_true(trd_plugin_kind_known(f->rt, "demo.wait"));
    assert_false(trd_plugin_kind_known(f->rt, "demo.nope"));
    // trouped never marks a plugin kind remote.
    assert_false(tr_kind_is_remote(f->rt, "demo.echo"));

    // The runtime's registry has them: tr_kind_spawn starts one.
    tr_join j;
    assert_int_equal(tr_kind_spawn(f->rt, "demo.echo", "hi", 2, &j), TR_OK);
    tr_outcome out = join(&j);
    assert_int_equal(out.err, TR_OK);
    assert_non_null(out.value.ptr);
    tr_outcome_fini(&out);

    // trd_plugin_spawn: the same, with the kind's encoder, as the runner
    // uses them.
    tr_kind_encode_fn enc = NULL;
    assert_int_equal(trd_plugin_spawn(f->rt, "demo.echo", "hello", 5, &j, &enc), TR_OK);
    assert_non_null(enc);
    out = join(&j);
    void *data = NULL;
    size_t len = 0;
    assert_int_equal(enc(&out, &data, &len), TR_OK);
    assert_int_equal(len, 5);
    assert_memory_equal(data, "hello", 5);
    free(data);
    tr_outcome_fini(&out);

    // No arguments: no bytes.
    assert_int_equal(trd_plugin_spawn(f->rt, "demo.echo", NULL, 0, &j, &enc), TR_OK);
    out = join(&j);
    assert_int_equal(enc(&out, &data, &len), TR_OK);
    assert_null(data);
    assert_int_equal(len, 0);
    tr_outcome_fini(&out);

    // demo.fail: the encoder's error, with its text.
    assert_int_equal(trd_plugin_spawn(f->rt, "demo.fail", "boom", 4, &j, &enc), TR_OK);
    out = join(&j);
    assert_int_equal(enc(&out, &data, &len), TR_EIO);
    assert_int_equal(len, 4);
    assert_memory_equal(data, "boom", 4);
    free(data);
    tr_outcome_fini(&out);

    // demo.wait "3": a timer, then its result.
    assert_int_equal(trd_plugin_spawn(f->rt, "demo.wait", "3", 1, &j, &enc), TR_OK);
    out = join(&j);
    assert_int_equal(out.err, TR_OK);
    assert_int_equal(enc(&out, &data, &len), TR_OK);
    assert_int_equal(len, strlen("waited 3 ms"));
    assert_memory_equal(data, "waited 3 ms", len);
    free(data);
    tr_outcome_fini(&out);

    // demo.wait without arguments: pending until cancelled.
    assert_int_equal(trd_plugin_spawn(f->rt, "demo.wait", NULL, 0, &j, &enc), TR_OK);
    assert_int_equal(tr_join_wait_timeout(&j, &out, 20 * TR_NS_PER_MS), TR_ETIMEDOUT);
    assert_false(tr_join_is_finished(&j));
    assert_int_equal(tr_task_cancel(f->rt, tr_join_id(&j)), TR_OK);
    out = join(&j);
    assert_int_equal(out.err, TR_ECANCELED);

    // Arguments the kind's init refuses: the spawn fails.
    assert_int_equal(trd_plugin_spawn(f->rt, "demo.wait", "x", 1, &j, &enc), TR_EINVAL);
    assert_int_equal(tr_join_id(&j).id, 0);
}

// A kind registered with tr_kind_register directly is the runtime's, not a
// plugin's: no job may name it.
static tr_poll
nothing_poll(void *state, tr_cx *cx)
{
    (void)state;
    (void)cx;
    return TR_READY;
}

static const tr_task_spec nothing_spec = {.name = "nothing", .poll = nothing_poll, .size = 8};

static void
test_plugins_runtime_kind_is_not_a_plugin_kind(void **state)
{
    fixture *f = *state;
    assert_int_equal(tr_kind_register(f->rt, "rt.own", &nothing_spec, NULL, NULL), TR_OK);
    assert_false(trd_plugin_kind_known(f->rt, "rt.own"));
    tr_join j;
    tr_kind_encode_fn enc = NULL;
    assert_int_equal(trd_plugin_spawn(f->rt, "rt.own", NULL, 0, &j, &enc), TR_ENOTFOUND);
    assert_int_equal(tr_join_id(&j).id, 0);
}

// ---------------------------------------------------------------------------
// What is refused: the directory.

static void
test_plugins_dir_group_writable(void **state)
{
    fixture *f = *state;
    put(f, "demo.so", "demo.so", 0644);
    assert_int_equal(chmod(f->dir, 0770), 0);
    load_fails(f, TR_EPERM,
               (const char *const[]){"plugin directory %s: mode 0770 is group-writable",
                                     "chmod go-w", NULL});
    assert_false(trd_plugin_kind_known(f->rt, "demo.echo"));
}

static void
test_plugins_dir_world_writable(void **state)
{
    fixture *f = *state;
    assert_int_equal(chmod(f->dir, 01777), 0);
    load_fails(f, TR_EPERM,
               (const char *const[]){"plugin directory %s: mode 1777 is world-writable", NULL});
}

static void
test_plugins_dir_symlink(void **state)
{
    fixture *f = *state;
    char link[128];
    snprintf(link, sizeof link, "%s/real", f->dir);
    assert_int_equal(mkdir(link, 0700), 0);
    snprintf(link, sizeof link, "%s/link", f->dir);
    assert_int_equal(symlink("real", link), 0);
    assert_int_equal(trd_plugins_load(f->rt, link, f->err, sizeof f->err), TR_EINVAL);
    assert_non_null(strstr(f->err, "link: a symbolic link"));
    snprintf(link, sizeof link, "%s/none", f->dir);
    assert_int_equal(trd_plugins_load(f->rt, link, f->err, sizeof f->err), TR_ENOENT);
    assert_non_null(strstr(f->err, "none: No such file or directory"));
}

// ---------------------------------------------------------------------------
// What is refused: a plugin's file.

static void
test_plugins_file_world_writable(void **state)
{
    fixture *f = *state;
    put(f, "demo.so", "demo.so", 0646);
    load_fails(f, TR_EPERM,
               (const char *const[]){"plugin %s/demo.so: mode 0646 is world-writable", NULL});
}

static void
test_plugins_file_group_writable(void **state)
{
    fixture *f = *state;
    put(f, "demo.so", "demo.so", 0664);
    load_fails(f, TR_EPERM,
               (const char *const[]){"plugin %s/demo.so: mode 0664 is group-writable", NULL});
}

// Another user's plugin (or directory): only root can make one here.
static void
test_plugins_owner_other_user(void **state)
{
    fixture *f = *state;
    put(f, "demo.so", "demo.so", 0644);
    char path[128];
    snprintf(path, sizeof path, "%s/demo.so", f->dir);
    if (chown(path, 65534, 65534) != 0) {
        tu_skip("chown to another user needs root: the owner check is not exercised");
    }
    load_fails(f, TR_EPERM,
               (const char *const[]){"plugin %s/demo.so: owned by uid 65534, not by trouped's user",
                                     NULL});
    assert_int_equal(chown(path, geteuid(), getegid()), 0);
    assert_int_equal(chown(f->dir, 65534, 65534), 0);
    load_fails(f, TR_EPERM, (const char *const[]){"plugin directory %s: owned by uid 65534", NULL});
}

static void
test_plugins_file_symlink(void **state)
{
    fixture *f = *state;
    put(f, "demo.so", "real", 0644);
    char link[128];
    snprintf(link, sizeof link, "%s/demo.so", f->dir);
    assert_int_equal(symlink("real", link), 0);
    load_fails(f, TR_EINVAL, (const char *const[]){"plugin %s/demo.so: a symbolic link", NULL});
}

static void
test_plugins_file_not_regular(void **state)
{
    fixture *f = *state;
    char path[128];
    snprintf(path, sizeof path, "%s/sub.so", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    load_fails(f, TR_EINVAL, (const char *const[]){"plugin %s/sub.so: not a regular file", NULL});
    assert_int_equal(rmdir(path), 0);
    assert_int_equal(mkfifo(path, 0600), 0); // opened without blocking, then refused
    load_fails(f, TR_EINVAL, (const char *const[]){"plugin %s/sub.so: not a regular file", NULL});
}

static void
test_plugins_not_a_shared_object(void **state)
{
    fixture *f = *state;
    char path[128];
    snprintf(path, sizeof path, "%s/text.so", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("not ELF\n", fp);
    fclose(fp);
    load_fails(f, TR_EINVAL, (const char *const[]){"plugin %s/text.so: dlopen: ", NULL});
}

// ---------------------------------------------------------------------------
// What is refused: the plugin itself.

static void
test_plugins_missing_symbols(void **state)
{
    fixture *f = *state;
    put(f, "noabi.so", "noabi.so", 0644);
    load_fails(
        f, TR_EINVAL,
        (const char *const[]){"plugin %s/noabi.so: no symbol troupe_plugin_abi: not a troupe "
                              "plugin",
                              NULL});
    char path[128];
    snprintf(path, sizeof path, "%s/noabi.so", f->dir);
    assert_int_equal(unlink(path), 0);
    put(f, "noreg.so", "noreg.so", 0644);
    load_fails(f, TR_EINVAL,
               (const char *const[]){"plugin %s/noreg.so: no symbol troupe_plugin_register", NULL});
}

static void
test_plugins_wrong_abi(void **state)
{
    fixture *f = *state;
    put(f, "badabi.so", "badabi.so", 0644);
    load_fails(f, TR_EINVAL,
               (const char *const[]){"plugin %s/badabi.so: built for plugin ABI 99.0, and this "
                                     "trouped speaks 1.0",
                                     NULL});
}

static void
test_plugins_register_fails(void **state)
{
    fixture *f = *state;
    put(f, "failreg.so", "failreg.so", 0644);
    load_fails(
        f, TR_EIO,
        (const char *const[]){"plugin %s/failreg.so: troupe_plugin_register failed: TR_EIO", NULL});
}

static void
test_plugins_reserved_kind(void **state)
{
    fixture *f = *state;
    put(f, "reserved.so", "reserved.so", 0644);
    load_fails(
        f, TR_EPERM,
        (const char *const[]){"plugin %s/reserved.so: troupe_plugin_register: kind_register: "
                              "'exec' is reserved",
                              NULL});
    assert_false(trd_plugin_kind_known(f->rt, "exec"));
}

static void
test_plugins_remote_refused(void **state)
{
    fixture *f = *state;
    put(f, "remote.so", "remote.so", 0644);
    load_fails(
        f, TR_EINVAL,
        (const char *const[]){"plugin %s/remote.so: marked kind 'demo.remote' remote", NULL});
}

// Two plugins with one kind: the second (in name order) is refused, and
// the message names the first.
static void
test_plugins_duplicate_kind(void **state)
{
    fixture *f = *state;
    put(f, "demo.so", "a.so", 0644);
    put(f, "dup.so", "b.so", 0644);
    load_fails(f, TR_EEXIST,
               (const char *const[]){"plugin %s/b.so: troupe_plugin_register: kind_register: kind "
                                     "'demo.echo' is registered already by %s/a.so",
                                     NULL});
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)
        T(test_plugins_none),
        T(test_plugins_load_demo),
        T(test_plugins_runtime_kind_is_not_a_plugin_kind),
        T(test_plugins_dir_group_writable),
        T(test_plugins_dir_world_writable),
        T(test_plugins_dir_symlink),
        T(test_plugins_file_world_writable),
        T(test_plugins_file_group_writable),
        T(test_plugins_owner_other_user),
        T(test_plugins_file_symlink),
        T(test_plugins_file_not_regular),
        T(test_plugins_not_a_shared_object),
        T(test_plugins_missing_symbols),
        T(test_plugins_wrong_abi),
        T(test_plugins_register_fails),
        T(test_plugins_reserved_kind),
        T(test_plugins_remote_refused),
        T(test_plugins_duplicate_kind),
#undef T
    };
    return tu_run(tests);
}
