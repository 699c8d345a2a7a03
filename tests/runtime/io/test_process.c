// Tests for child processes (troupe/process.h): output and exit status
// through pipes, stdin from a pipe (cat), kill, what the child inherits
// (descriptors, signal mask and dispositions), environment and working
// directory, spawn errors, blocking waits, cancellation, many children on
// two workers, the reaping of freed (orphaned) children, and new sessions.
//
// Every test that waits for a child runs twice: through a pidfd ("_pidfd",
// the fallback anyway where pidfd_open is missing, e.g. under valgrind) and
// through the SIGCHLD fallback ("_fallback", forced). Nothing sleeps to wait
// for a child: tasks await its pipes or its exit; only the orphan tests,
// which have nothing to await (troupe reaps orphans on its own), poll a
// counter between 1 ms timer sleeps, bounded by TU_WAIT_MS.
#include "io/io.h"
#include "../test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <troupe/process.h>
#include <troupe/signal.h>

// Internal hooks (io/process.c).

// The mode the running test asked for, and whether the system has pidfd.
static bool g_fallback;
static bool g_have_pidfd;

static int
setup_pidfd(void **state)
{
    (void)state;
    g_fallback = false;
    tr__process_force_fallback(false);
    return 0;
}

static int
setup_fallback(void **state)
{
    (void)state;
    g_fallback = true;
    tr__process_force_fallback(true);
    return 0;
}

static int
teardown_mode(void **state)
{
    (void)state;
    tr__process_force_fallback(false);
    return 0;
}

// expect_mode checks that p waits the way the test asked.
static bool
expect_mode(const tr_process *p)
{
    bool want = !g_fallback && g_have_pidfd;
    return tr__process_has_pidfd(p) == want;
}

static tr_rt *
rt_workers(unsigned n)
{
    tr_rt_config cfg;
    tu_config_init(&cfg);
    cfg.workers = n;
    cfg.sched = TR_SCHED_WS;
    return tu_rt_new_cfg(&cfg);
}

static tr_err
spawn_sh(tr_rt *rt, const char *script, tr_stdio in, tr_stdio out, tr_stdio err, tr_process **p)
{
    char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
    tr_process_opts o;
    memset(&o, 0, sizeof o);
    o.argv = argv;
    o.stdio[0] = in;
    o.stdio[1] = out;
    o.stdio[2] = err;
    return tr_process_spawn(rt, &o, p);
}

// ---------------------------------------------------------------------------
// A child writes 10000 numbered lines (more than a pipe holds, so it blocks
// until we read) and exits with status 3; the parent reads everything, then
// gets the status.

#define N_LINES 10000

typedef struct out_task {
    int tr_pc;
    tr_process *p;
    tr_io *out;
    char buf[4096];
    size_t n;
    tr_err ioerr;
    char line[32];
    size_t line_len;
    uint32_t next; // the number the next complete line must carry
    bool bad;
    size_t total;
    tr_exit_status st;
    tr_err err;
} out_task;

static void
out_feed(out_task *st, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b[i] != '\n') {
            if (st->line_len + 1 < sizeof st->line) {
                st->line[st->line_len++] = b[i];
            }
            continue;
        }
        st->line[st->line_len] = '\0';
        char want[32];
        snprintf(want, sizeof want, "line%u", st->next);
        if (strcmp(want, st->line) != 0) {
            st->bad = true;
        }
        st->next++;
        st->line_len = 0;
    }
}

static tr_poll
out_poll(void *arg, tr_cx *cx)
{
    out_task *st = arg;
    TR_BEGIN(st);
    if (spawn_sh(tr_cx_rt(cx),
                 "i=0; while [ $i -lt 10000 ]; do echo line$i; i=$((i+1)); done; exit 3",
                 TR_STDIO_NULL, TR_STDIO_PIPE, TR_STDIO_INHERIT, &st->p) != TR_OK) {
        TU_CHECK(!"spawn");
        TR_RETURN(st);
    }
    TU_CHECK(expect_mode(st->p));
    st->out = tr_process_take_stdio(st->p, 1);
    TU_CHECK(st->out != NULL);
    TU_CHECK(tr_process_take_stdio(st->p, 1) == NULL); // taken already
    TU_CHECK(tr_process_take_stdio(st->p, 0) == NULL); // not a pipe
    for (;;) {
        TR_AWAIT(st, tr_read(st->out, cx, st->buf, sizeof st->buf, &st->n, &st->ioerr));
        if (st->ioerr != TR_OK || st->n == 0) {
            break;
        }
        st->total += st->n;
        out_feed(st, st->buf, st->n);
    }
    TU_CHECK(st->ioerr == TR_OK && st->n == 0);
    TU_CHECK(!st->bad);
    TU_CHECK(st->next == N_LINES);
    TU_CHECK(st->line_len == 0);
    TR_AWAIT(st, tr_process_wait(st->p, cx, &st->st, &st->err));
    TU_CHECK(st->err == TR_OK);
    TU_CHECK(st->st.code == 3);
    TU_CHECK(st->st.signal == 0);
    // A second wait returns the same status at once; so does try_wait.
    memset(&st->st, 0, sizeof st->st);
    TR_AWAIT(st, tr_process_wait(st->p, cx, &st->st, &st->err));
    TU_CHECK(st->err == TR_OK && st->st.code == 3);
    TU_CHECK(tr_process_try_wait(st->p, &st->st) == TR_OK && st->st.code == 3);
    // Reaped: no signal may reach a process that reused its pid.
    TU_CHECK(tr_process_kill(st->p, SIGTERM) == TR_ECHILD);
    tr_io_release(st->out);
    tr_process_free(st->p);
    TR_END(st);
}

static const tr_task_spec out_spec = {.name = "out", .poll = out_poll, .size = sizeof(out_task)};

static void
test_process_stdout_and_status(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tu_run_root(rt, &out_spec, NULL);
    assert_int_equal(tr__process_orphans(), 0);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// cat: a writer task feeds 256 KiB into the child's stdin and closes it;
// the reader (root) checks that the same bytes come back, then exit 0.

#define CAT_BYTES (256u * 1024u)

static unsigned char
cat_byte(size_t i)
{
    return (unsigned char)((i * 131u + (i >> 9)) & 0xff);
}

typedef struct cat_writer {
    int tr_pc;
    tr_io *in;
    unsigned char *data;
    tr_io_op op;
    size_t n;
    tr_err err;
} cat_writer;

static tr_poll
cat_writer_poll(void *arg, tr_cx *cx)
{
    cat_writer *st = arg;
    TR_BEGIN(st);
    TR_AWAIT(st, tr_write_all(st->in, cx, &st->op, st->data, CAT_BYTES, &st->n, &st->err));
    TU_CHECK(st->err == TR_OK);
    TU_CHECK(st->n == CAT_BYTES);
    TR_END(st);
}

static void
cat_writer_drop(void *arg)
{
    cat_writer *st = arg;
    tr_io_close(st->in); // end of file for cat
}

static const tr_task_spec cat_writer_spec = {.name = "cat_writer",
                                             .poll = cat_writer_poll,
                                             .drop = cat_writer_drop,
                                             .size = sizeof(cat_writer)};

typedef struct cat_task {
    int tr_pc;
    tr_process *p;
    tr_io *out;
    unsigned char *data;
    unsigned char buf[8192];
    size_t n;
    tr_err ioerr;
    size_t got;
    bool bad;
    tr_join writer;
    tr_outcome wout;
    tr_exit_status st;
    tr_err err;
} cat_task;

static tr_poll
cat_poll(void *arg, tr_cx *cx)
{
    cat_task *st = arg;
    TR_BEGIN(st);
    {
        char *argv[] = {"cat", NULL};
        tr_process_opts o;
        memset(&o, 0, sizeof o);
        o.file = "/bin/cat";
        o.argv = argv;
        o.stdio[0] = TR_STDIO_PIPE;
        o.stdio[1] = TR_STDIO_PIPE;
        if (tr_process_spawn(tr_cx_rt(cx), &o, &st->p) != TR_OK) {
            TU_CHECK(!"spawn");
            TR_RETURN(st);
        }
        TU_CHECK(expect_mode(st->p));
        st->data = malloc(CAT_BYTES);
        for (size_t i = 0; i < CAT_BYTES; i++) {
            st->data[i] = cat_byte(i);
        }
        cat_writer w = {.in = tr_process_take_stdio(st->p, 0), .data = st->data};
        TU_CHECK(w.in != NULL);
        TU_CHECK(tr_spawn(tr_cx_rt(cx), &cat_writer_spec, NULL, &w, &st->writer) == TR_OK);
        st->out = tr_process_take_stdio(st->p, 1);
    }
    for (;;) {
        TR_AWAIT(st, tr_read(st->out, cx, st->buf, sizeof st->buf, &st->n, &st->ioerr));
        if (st->ioerr != TR_OK || st->n == 0) {
            break;
        }
        for (size_t i = 0; i < st->n; i++) {
            if (st->got + (size_t)i >= CAT_BYTES || st->buf[i] != cat_byte(st->got + (size_t)i)) {
                st->bad = true;
            }
        }
        st->got += st->n;
    }
    TU_CHECK(st->ioerr == TR_OK && st->n == 0);
    TU_CHECK(!st->bad);
    TU_CHECK(st->got == CAT_BYTES);
    TR_AWAIT(st, tr_join_poll(&st->writer, cx, &st->wout));
    TU_CHECK(st->wout.err == TR_OK);
    TR_AWAIT(st, tr_process_wait(st->p, cx, &st->st, &st->err));
    TU_CHECK(st->err == TR_OK);
    TU_CHECK(st->st.code == 0 && st->st.signal == 0);
    tr_io_release(st->out);
    tr_process_free(st->p);
    free(st->data);
    TR_END(st);
}

static const tr_task_spec cat_spec = {.name = "cat", .poll = cat_poll, .size = sizeof(cat_task)};

static void
test_process_cat_echo(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tu_run_root(rt, &cat_spec, NULL);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// stdin from /dev/null and a stderr pipe: the child reads end of file at
// once and writes to both streams.

typedef struct err_task {
    int tr_pc;
    tr_process *p;
    tr_io *out;
    tr_io *err_io;
    char obuf[64];
    char ebuf[64];
    size_t olen;
    size_t elen;
    size_t n;
    tr_err ioerr;
    tr_exit_status st;
    tr_err err;
} err_task;

static tr_poll
err_poll(void *arg, tr_cx *cx)
{
    err_task *st = arg;
    TR_BEGIN(st);
    if (spawn_sh(tr_cx_rt(cx), "echo oops >&2; if read x; then echo got; else echo eof; fi; exit 7",
                 TR_STDIO_NULL, TR_STDIO_PIPE, TR_STDIO_PIPE, &st->p) != TR_OK) {
        TU_CHECK(!"spawn");
        TR_RETURN(st);
    }
    st->out = tr_process_take_stdio(st->p, 1);
    st->err_io = tr_process_take_stdio(st->p, 2);
    for (;;) {
        TR_AWAIT(st, tr_read(st->out, cx, st->obuf + st->olen, sizeof st->obuf - 1 - st->olen,
                             &st->n, &st->ioerr));
        if (st->ioerr != TR_OK || st->n == 0) {
            break;
        }
        st->olen += st->n;
    }
    for (;;) {
        TR_AWAIT(st, tr_read(st->err_io, cx, st->ebuf + st->elen, sizeof st->ebuf - 1 - st->elen,
                             &st->n, &st->ioerr));
        if (st->ioerr != TR_OK || st->n == 0) {
            break;
        }
        st->elen += st->n;
    }
    st->obuf[st->olen] = '\0';
    st->ebuf[st->elen] = '\0';
    TU_CHECK(strcmp(st->obuf, "eof\n") == 0);
    TU_CHECK(strcmp(st->ebuf, "oops\n") == 0);
    TR_AWAIT(st, tr_process_wait(st->p, cx, &st->st, &st->err));
    TU_CHECK(st->err == TR_OK && st->st.code == 7);
    tr_io_release(st->out);
    tr_io_release(st->err_io);
    tr_process_free(st->p);
    TR_END(st);
}

static const tr_task_spec err_spec = {.name = "err", .poll = err_poll, .size = sizeof(err_task)};

static void
test_process_stderr_and_null(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tu_run_root(rt, &err_spec, NULL);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Kill a sleeping child: the status names the signal.

typedef struct kill_task {
    int tr_pc;
    tr_process *p;
    int sig;
    tr_exit_status st;
    tr_err err;
} kill_task;

static tr_poll
kill_poll(void *arg, tr_cx *cx)
{
    kill_task *st = arg;
    TR_BEGIN(st);
    {
        char *argv[] = {"/bin/sleep", "1000", NULL};
        tr_process_opts o;
        memset(&o, 0, sizeof o);
        o.argv = argv;
        o.stdio[0] = TR_STDIO_NULL;
        if (tr_process_spawn(tr_cx_rt(cx), &o, &st->p) != TR_OK) {
            TU_CHECK(!"spawn");
            TR_RETURN(st);
        }
        TU_CHECK(expect_mode(st->p));
        TU_CHECK(tr_process_pid(st->p) > 0);
        TU_CHECK(tr_process_try_wait(st->p, &st->st) == TR_EAGAIN);
        TU_CHECK(tr_process_kill(st->p, st->sig) == TR_OK);
    }
    TR_AWAIT(st, tr_process_wait(st->p, cx, &st->st, &st->err));
    TU_CHECK(st->err == TR_OK);
    TU_CHECK(st->st.signal == st->sig);
    TU_CHECK(st->st.code == -1);
    TU_CHECK(!st->st.core);
    TU_CHECK(tr_process_kill(st->p, SIGKILL) == TR_ECHILD);
    tr_process_free(st->p);
    TR_END(st);
}

static const tr_task_spec kill_spec = {
    .name = "kill", .poll = kill_poll, .size = sizeof(kill_task)};

static void
test_process_kill(void **state)
{
    (void)state;
    int sigs[] = {SIGTERM, SIGKILL};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        tr_rt *rt = tu_rt_new();
        tu_run_root(rt, &kill_spec, &(kill_task){.sig = sigs[i]});
        tu_rt_free_clean(rt);
    }
}

// ---------------------------------------------------------------------------
// What the child inherits: none of our descriptors (a pipe the test opened
// without close-on-exec, and the parent's ends of the child's own pipes),
// an empty signal mask although the spawning thread blocks SIGUSR2, and the
// default disposition of SIGPIPE although the parent ignores it.

typedef struct inherit_task {
    int tr_pc;
    int leak[2]; // the test's pipe, without close-on-exec
    tr_process *p;
    tr_io *in;
    tr_io *out;
    char buf[4096];
    size_t len;
    size_t n;
    tr_err ioerr;
    tr_exit_status st;
    tr_err err;
} inherit_task;

// check_inherit checks the child's report (see inherit_poll).
static void
check_inherit(const char *report)
{
    TU_CHECK(strstr(report, "open ") == NULL);
    const char *blk = strstr(report, "SigBlk: ");
    const char *ign = strstr(report, "SigIgn: ");
    TU_CHECK(blk != NULL && ign != NULL);
    if (blk == NULL || ign == NULL) {
        return;
    }
    TU_CHECK(strtoull(blk + 8, NULL, 16) == 0);
    unsigned long long ignored = strtoull(ign + 8, NULL, 16);
    TU_CHECK((ignored & (1ull << (SIGPIPE - 1))) == 0);
}

static tr_poll
inherit_poll(void *arg, tr_cx *cx)
{
    inherit_task *st = arg;
    TR_BEGIN(st);
    {
        // The child reads four descriptor numbers from stdin and reports
        // which are open in it, then its blocked and ignored signal sets
        // from /proc (shell built-ins only, so /proc/self is the child).
        char *argv[] = {"/bin/sh", "-c",
                        "read a b c d; for fd in $a $b $c $d; do "
                        "if [ -e /proc/self/fd/$fd ]; then echo open $fd; fi; done; "
                        "while read -r k v; do case $k in SigBlk:|SigIgn:) echo $k $v;; esac; "
                        "done < /proc/self/status",
                        NULL};
        tr_process_opts o;
        memset(&o, 0, sizeof o);
        o.argv = argv;
        o.stdio[0] = TR_STDIO_PIPE;
        o.stdio[1] = TR_STDIO_PIPE;
        // The spawning thread blocks SIGUSR2: the child must not.
        sigset_t usr2, old;
        sigemptyset(&usr2);
        sigaddset(&usr2, SIGUSR2);
        pthread_sigmask(SIG_BLOCK, &usr2, &old);
        tr_err e = tr_process_spawn(tr_cx_rt(cx), &o, &st->p);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e != TR_OK) {
            TU_CHECK(!"spawn");
            TR_RETURN(st);
        }
        st->in = tr_process_take_stdio(st->p, 0);
        st->out = tr_process_take_stdio(st->p, 1);
        st->len = (size_t)snprintf(st->buf, sizeof st->buf, "%d %d %d %d\n", st->leak[0],
                                   st->leak[1], tr_io_fd(st->in), tr_io_fd(st->out));
    }
    // One short line: a pipe takes it whole.
    TR_AWAIT(st, tr_write(st->in, cx, st->buf, st->len, &st->n, &st->ioerr));
    TU_CHECK(st->n == (size_t)st->len);
    tr_io_close(st->in);
    st->len = 0;
    for (;;) {
        TR_AWAIT(st, tr_read(st->out, cx, st->buf + st->len, sizeof st->buf - 1 - st->len, &st->n,
                             &st->ioerr));
        if (st->ioerr != TR_OK || st->n == 0) {
            break;
        }
        st->len += st->n;
    }
    st->buf[st->len] = '\0';
    check_inherit(st->buf);
    TR_AWAIT(st, tr_process_wait(st->p, cx, &st->st, &st->err));
    TU_CHECK(st->err == TR_OK && st->st.code == 0);
    tr_io_release(st->out);
    tr_process_free(st->p);
    TR_END(st);
}

static const tr_task_spec inherit_spec = {
    .name = "inherit", .poll = inherit_poll, .size = sizeof(inherit_task)};

static void
test_process_inherits_nothing(void **state)
{
    (void)state;
    struct sigaction ign, old_pipe;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    assert_int_equal(sigaction(SIGPIPE, &ign, &old_pipe), 0);
    int leak[2];
    assert_int_equal(pipe(leak), 0); // no O_CLOEXEC on purpose

    tr_rt *rt = tu_rt_new();
    tu_run_root(rt, &inherit_spec, &(inherit_task){.leak = {leak[0], leak[1]}});
    tu_rt_free_clean(rt);
    close(leak[0]);
    close(leak[1]);
    sigaction(SIGPIPE, &old_pipe, NULL);
}

// ---------------------------------------------------------------------------
// Environment and working directory.

typedef struct env_task {
    int tr_pc;
    tr_process *p;
    tr_io *out;
    char buf[256];
    size_t len;
    size_t n;
    tr_err ioerr;
    tr_exit_status st;
    tr_err err;
} env_task;

static tr_poll
env_poll(void *arg, tr_cx *cx)
{
    env_task *st = arg;
    TR_BEGIN(st);
    {
        char *argv[] = {"sh", "-c", "echo \"$FOO:$(pwd)\"", NULL};
        char *envp[] = {"FOO=bar", "PATH=/bin:/usr/bin", NULL};
        tr_process_opts o;
        memset(&o, 0, sizeof o);
        o.file = "sh";
        o.argv = argv;
        o.envp = envp;
        o.cwd = "/";
        o.flags = TR_PROCESS_SEARCH_PATH | TR_PROCESS_NEW_PGROUP;
        o.stdio[1] = TR_STDIO_PIPE;
        if (tr_process_spawn(tr_cx_rt(cx), &o, &st->p) != TR_OK) {
            TU_CHECK(!"spawn");
            TR_RETURN(st);
        }
        st->out = tr_process_take_stdio(st->p, 1);
    }
    for (;;) {
        TR_AWAIT(st, tr_read(st->out, cx, st->buf + st->len, sizeof st->buf - 1 - st->len, &st->n,
                             &st->ioerr));
        if (st->ioerr != TR_OK || st->n == 0) {
            break;
        }
        st->len += st->n;
    }
    st->buf[st->len] = '\0';
    TU_CHECK(strcmp(st->buf, "bar:/\n") == 0);
    TR_AWAIT(st, tr_process_wait(st->p, cx, &st->st, &st->err));
    TU_CHECK(st->err == TR_OK && st->st.code == 0);
    tr_io_release(st->out);
    tr_process_free(st->p);
    TR_END(st);
}

static const tr_task_spec env_spec = {.name = "env", .poll = env_poll, .size = sizeof(env_task)};

static void
test_process_env_and_cwd(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tu_run_root(rt, &env_spec, NULL);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Spawn errors leave nothing behind.

// expect_exec_failure: a spawn that cannot exec fails with TR_ENOENT; under
// valgrind, whose fork emulation hides the exec error from posix_spawn,
// the spawn succeeds and the child exits with a non-zero status (127, or
// valgrind's error exit code when its leak check runs in the child).
static void
expect_exec_failure(tr_rt *rt, const tr_process_opts *o)
{
    tr_process *p = NULL;
    tr_err e = tr_process_spawn(rt, o, &p);
    if (e == TR_OK) {
        tr_exit_status st;
        assert_int_equal(tr_process_wait_blocking(p, &st), TR_OK);
        assert_true(st.code > 0);
        for (int i = 0; i < 3; i++) {
            tr_io *io = tr_process_take_stdio(p, i);
            if (io != NULL) {
                tr_io_release(io);
            }
        }
        tr_process_free(p);
        return;
    }
    assert_int_equal(e, TR_ENOENT);
    assert_null(p);
}

static void
test_process_spawn_errors(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_process *p = NULL;
    char *argv[] = {"/nonexistent/program", NULL};
    tr_process_opts o;
    memset(&o, 0, sizeof o);
    o.argv = argv;
    o.stdio[0] = TR_STDIO_PIPE;
    o.stdio[1] = TR_STDIO_PIPE;
    o.stdio[2] = TR_STDIO_NULL;
    expect_exec_failure(rt, &o);

    char *sh[] = {"/bin/sh", "-c", "exit 0", NULL};
    o.argv = sh;
    o.cwd = "/nonexistent/dir";
    expect_exec_failure(rt, &o);
    o.cwd = NULL;

    o.argv = NULL;
    assert_int_equal(tr_process_spawn(rt, &o, &p), TR_EINVAL);
    o.argv = sh;
    o.stdio[1] = (tr_stdio)7;
    assert_int_equal(tr_process_spawn(rt, &o, &p), TR_EINVAL);
    o.stdio[1] = TR_STDIO_INHERIT;
    o.flags = 1u << 20;
    assert_int_equal(tr_process_spawn(rt, &o, &p), TR_EINVAL);
    assert_int_equal(tr_process_spawn(NULL, &o, &p), TR_EINVAL);
    assert_int_equal(tr__process_orphans(), 0);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Blocking waits: fine on a plain thread, a deadlock error on a worker.

typedef struct deadlock_task {
    int tr_pc;
    tr_process *p;
} deadlock_task;

static tr_poll
deadlock_poll(void *arg, tr_cx *cx)
{
    deadlock_task *st = arg;
    tr_exit_status es;
    (void)cx;
    TU_CHECK(tr_process_wait_blocking(st->p, &es) == TR_EDEADLOCK);
    return TR_READY;
}

static const tr_task_spec deadlock_spec = {
    .name = "deadlock", .poll = deadlock_poll, .size = sizeof(deadlock_task)};

static void
test_process_wait_blocking(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_process *p = NULL;
    assert_int_equal(spawn_sh(rt, "exit 5", TR_STDIO_NULL, TR_STDIO_NULL, TR_STDIO_NULL, &p),
                     TR_OK);
    assert_true(expect_mode(p));
    tu_run_root(rt, &deadlock_spec, &(deadlock_task){.p = p});
    tr_exit_status st;
    assert_int_equal(tr_process_wait_blocking(p, &st), TR_OK);
    assert_int_equal(st.code, 5);
    assert_int_equal(st.signal, 0);
    assert_int_equal(tr_process_wait_blocking(p, &st), TR_OK); // cached
    assert_int_equal(st.code, 5);
    tr_process_free(p);

    // A blocking wait for a child that is still running.
    assert_int_equal(
        spawn_sh(rt, "read x; exit 9", TR_STDIO_PIPE, TR_STDIO_NULL, TR_STDIO_NULL, &p), TR_OK);
    assert_int_equal(tr_process_try_wait(p, &st), TR_EAGAIN);
    tr_io *in = tr_process_take_stdio(p, 0);
    tr_io_close(in); // the child's read sees end of file
    assert_int_equal(tr_process_wait_blocking(p, &st), TR_OK);
    assert_int_equal(st.code, 9);
    tr_process_free(p);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// A task waiting for a child is cancelled; its drop kills and frees the
// child, which then becomes an orphan that troupe reaps.

typedef struct victim {
    int tr_pc;
    tr_process *p;
    tu_event *waiting;
    tr_exit_status st;
    tr_err err;
} victim;

static tr_poll
victim_poll(void *arg, tr_cx *cx)
{
    victim *st = arg;
    TR_BEGIN(st);
    {
        char *argv[] = {"/bin/sleep", "1000", NULL};
        tr_process_opts o;
        memset(&o, 0, sizeof o);
        o.argv = argv;
        if (tr_process_spawn(tr_cx_rt(cx), &o, &st->p) != TR_OK) {
            TU_CHECK(!"spawn");
            TR_RETURN(st);
        }
    }
    tu_event_set(st->waiting);
    TR_AWAIT(st, tr_process_wait(st->p, cx, &st->st, &st->err));
    TU_CHECK(!"the sleeping child exited");
    TR_END(st);
}

static void
victim_drop(void *arg)
{
    victim *st = arg;
    if (st->p != NULL) {
        TU_CHECK(tr_process_kill(st->p, SIGKILL) == TR_OK);
        tr_process_free(st->p);
    }
}

static const tr_task_spec victim_spec = {
    .name = "victim", .poll = victim_poll, .drop = victim_drop, .size = sizeof(victim)};

// orphans_gone waits (1 ms timer sleeps, at most TU_WAIT_MS) until troupe
// has reaped every orphan.
typedef struct orphan_wait {
    int tr_pc;
    tr_timer t;
    unsigned i;
} orphan_wait;

#define ORPHAN_WAIT(st, cx)                                                         \
    do {                                                                            \
        for ((st)->ow.i = 0; tr__process_orphans() != 0 && (st)->ow.i < TU_WAIT_MS; \
             (st)->ow.i++) {                                                        \
            TR_AWAIT(st, tr_sleep(&(st)->ow.t, cx, TR_NS_PER_MS));                  \
        }                                                                           \
        TU_CHECK(tr__process_orphans() == 0);                                       \
    } while (0)

typedef struct cancel_root {
    int tr_pc;
    tu_event *waiting; // set by the victim once its child runs
    tr_join j;
    tr_outcome out;
    orphan_wait ow;
} cancel_root;

static tr_poll
cancel_root_poll(void *arg, tr_cx *cx)
{
    cancel_root *st = arg;
    TR_BEGIN(st);
    TU_CHECK(tr_spawn(tr_cx_rt(cx), &victim_spec, NULL, &(victim){.waiting = st->waiting},
                      &st->j) == TR_OK);
    TR_AWAIT(st, tu_event_poll(st->waiting, cx));
    TR_YIELD(st, cx); // on one worker, the victim is parked in its wait now
    TU_CHECK(tr_task_abort(&st->j) == TR_OK);
    TR_AWAIT(st, tr_join_poll(&st->j, cx, &st->out));
    TU_CHECK(st->out.err == TR_ECANCELED);
    ORPHAN_WAIT(st, cx);
    TR_END(st);
}

static void
cancel_root_drop(void *arg)
{
    cancel_root *st = arg;
    tr_join_release(&st->j);
    tr_timer_abandon(&st->ow.t);
}

static const tr_task_spec cancel_root_spec = {.name = "cancel_root",
                                              .poll = cancel_root_poll,
                                              .drop = cancel_root_drop,
                                              .size = sizeof(cancel_root)};

static void
test_process_wait_cancelled(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tu_event ev;
    tu_event_init(&ev);
    tu_run_root(rt, &cancel_root_spec, &(cancel_root){.waiting = &ev});
    assert_int_equal(tr__process_orphans(), 0);
    tu_rt_free_clean(rt);
    tu_event_destroy(&ev);
}

// ---------------------------------------------------------------------------
// Orphans: a handle freed before its child exited; and one whose runtime
// is freed while the child still runs.

typedef struct orphan_root {
    int tr_pc;
    orphan_wait ow;
} orphan_root;

static tr_poll
orphan_root_poll(void *arg, tr_cx *cx)
{
    orphan_root *st = arg;
    TR_BEGIN(st);
    ORPHAN_WAIT(st, cx);
    TR_END(st);
}

static void
orphan_root_drop(void *arg)
{
    orphan_root *st = arg;
    tr_timer_abandon(&st->ow.t);
}

static const tr_task_spec orphan_root_spec = {.name = "orphan_root",
                                              .poll = orphan_root_poll,
                                              .drop = orphan_root_drop,
                                              .size = sizeof(orphan_root)};

// is_zombie reports whether pid is a zombie (false once reaped and gone).
static bool
is_zombie(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp != NULL && rp[1] == ' ' && rp[2] == 'Z';
}

static void
test_process_orphan_reaped(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_process *a = NULL, *b = NULL;
    // a exits on its own; b is killed just before its handle goes.
    assert_int_equal(spawn_sh(rt, "exit 0", TR_STDIO_NULL, TR_STDIO_NULL, TR_STDIO_NULL, &a),
                     TR_OK);
    char *argv[] = {"/bin/sleep", "1000", NULL};
    tr_process_opts o;
    memset(&o, 0, sizeof o);
    o.argv = argv;
    o.stdio[1] = TR_STDIO_PIPE; // a pipe end the free must close
    assert_int_equal(tr_process_spawn(rt, &o, &b), TR_OK);
    pid_t pa = tr_process_pid(a), pb = tr_process_pid(b);
    tr_process_free(a);
    assert_int_equal(tr_process_kill(b, SIGKILL), TR_OK);
    tr_process_free(b);
    tu_run_root(rt, &orphan_root_spec, NULL);
    assert_int_equal(tr__process_orphans(), 0);
    assert_false(is_zombie(pa));
    assert_false(is_zombie(pb));
    tu_rt_free_clean(rt);
}

static void
test_process_orphan_outlives_runtime(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_process *p = NULL;
    char *argv[] = {"/bin/sleep", "1000", NULL};
    tr_process_opts o;
    memset(&o, 0, sizeof o);
    o.argv = argv;
    assert_int_equal(tr_process_spawn(rt, &o, &p), TR_OK);
    pid_t pid = tr_process_pid(p);
    tr_process_free(p);
    assert_int_equal(tr__process_orphans(), 1);
    tu_rt_free_clean(rt); // the orphan stays, as a bare pid
    assert_int_equal(tr__process_orphans(), 1);

    // Kill it and wait for its exit without reaping it (WNOWAIT).
    assert_int_equal(kill(pid, SIGKILL), 0);
    siginfo_t si;
    assert_int_equal(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
    assert_true(is_zombie(pid));

    // The next spawn, in another runtime, sweeps it.
    rt = tu_rt_new();
    assert_int_equal(spawn_sh(rt, "exit 0", TR_STDIO_NULL, TR_STDIO_NULL, TR_STDIO_NULL, &p),
                     TR_OK);
    assert_int_equal(tr__process_orphans(), 0);
    assert_false(is_zombie(pid));
    tr_exit_status st;
    assert_int_equal(tr_process_wait_blocking(p, &st), TR_OK);
    assert_int_equal(st.code, 0);
    tr_process_free(p);
    tu_rt_free_clean(rt);
}

// ---------------------------------------------------------------------------
// Many children at once on two workers: each task spawns a child that
// exits with its own code, reads its stdout, and waits for it.

#define MANY 16

typedef struct many_child {
    int tr_pc;
    unsigned i;
    tr_process *p;
    tr_io *out;
    char buf[64];
    size_t len;
    size_t n;
    tr_err ioerr;
    tr_exit_status st;
    tr_err err;
    atomic_int *ok;
} many_child;

static tr_poll
many_child_poll(void *arg, tr_cx *cx)
{
    many_child *st = arg;
    TR_BEGIN(st);
    {
        char script[64];
        snprintf(script, sizeof script, "echo child%u; exit %u", st->i, st->i + 10);
        if (spawn_sh(tr_cx_rt(cx), script, TR_STDIO_NULL, TR_STDIO_PIPE, TR_STDIO_INHERIT,
                     &st->p) != TR_OK) {
            TU_CHECK(!"spawn");
            TR_RETURN(st);
        }
        TU_CHECK(expect_mode(st->p));
        st->out = tr_process_take_stdio(st->p, 1);
    }
    for (;;) {
        TR_AWAIT(st, tr_read(st->out, cx, st->buf + st->len, sizeof st->buf - 1 - st->len, &st->n,
                             &st->ioerr));
        if (st->ioerr != TR_OK || st->n == 0) {
            break;
        }
        st->len += st->n;
    }
    st->buf[st->len] = '\0';
    TR_AWAIT(st, tr_process_wait(st->p, cx, &st->st, &st->err));
    {
        char want[32];
        snprintf(want, sizeof want, "child%u\n", st->i);
        TU_CHECK(strcmp(st->buf, want) == 0);
    }
    TU_CHECK(st->err == TR_OK);
    TU_CHECK(st->st.code == (int)st->i + 10);
    if (st->err == TR_OK && st->st.code == (int)st->i + 10) {
        atomic_fetch_add(st->ok, 1);
    }
    tr_io_release(st->out);
    tr_process_free(st->p);
    st->p = NULL;
    TR_END(st);
}

static const tr_task_spec many_child_spec = {
    .name = "many_child", .poll = many_child_poll, .size = sizeof(many_child)};

typedef struct many_root {
    int tr_pc;
    tr_join j[MANY];
    unsigned k;
    tr_outcome out;
    atomic_int ok;
} many_root;

static tr_poll
many_root_poll(void *arg, tr_cx *cx)
{
    many_root *st = arg;
    TR_BEGIN(st);
    for (unsigned i = 0; i < MANY; i++) {
        TU_CHECK(tr_spawn(tr_cx_rt(cx), &many_child_spec, NULL,
                          &(many_child){.i = i, .ok = &st->ok}, &st->j[i]) == TR_OK);
    }
    for (st->k = 0; st->k < MANY; st->k++) {
        TR_AWAIT(st, tr_join_poll(&st->j[st->k], cx, &st->out));
        TU_CHECK(st->out.err == TR_OK);
    }
    TU_CHECK(atomic_load(&st->ok) == MANY);
    TR_END(st);
}

static const tr_task_spec many_root_spec = {
    .name = "many_root", .poll = many_root_poll, .size = sizeof(many_root)};

// A thread outside the runtime that takes SIGCHLD while the runtime's
// threads block it. Under ThreadSanitizer a SIGCHLD that interrupts a
// worker parked on its futex (a raw system call TSan does not intercept)
// is held back by TSan until that thread enters an intercepted call, which
// may be never; and the kernel prefers the main thread, which with two
// workers is often the one parked so. The sink waits in an intercepted call
// (a condition variable), where TSan runs handlers at once.
typedef struct sink {
    tu_event stop;
    pthread_t thr;
    sigset_t old;
} sink;

static void *
sink_main(void *arg)
{
    sink *s = arg;
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGCHLD);
    pthread_sigmask(SIG_UNBLOCK, &m, NULL);
    while (!tu_event_wait(&s->stop, TU_WAIT_MS)) {
    }
    return NULL;
}

static void
sink_start(sink *s)
{
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGCHLD);
    assert_int_equal(pthread_sigmask(SIG_BLOCK, &m, &s->old), 0);
    tu_event_init(&s->stop);
    tu_thread_start(&s->thr, sink_main, s);
}

static void
sink_stop(sink *s)
{
    tu_event_set(&s->stop);
    tu_thread_join(s->thr);
    tu_event_destroy(&s->stop);
    pthread_sigmask(SIG_SETMASK, &s->old, NULL);
}

static void
test_process_many_two_workers(void **state)
{
    (void)state;
    sink s;
    sink_start(&s); // before the workers start: they inherit the mask
    tr_rt *rt = rt_workers(2);
    tu_run_root(rt, &many_root_spec, NULL);
    tu_rt_free_clean(rt);
    sink_stop(&s);
}

// ---------------------------------------------------------------------------
// TROUPE_PROCESS_NO_PIDFD forces the fallback too. (setenv while no other
// thread of ours runs: no runtime is alive.)

static void
test_process_env_forces_fallback(void **state)
{
    (void)state;
    assert_int_equal(setenv("TROUPE_PROCESS_NO_PIDFD", "1", 1), 0);
    tr_rt *rt = tu_rt_new();
    tr_process *p = NULL;
    assert_int_equal(spawn_sh(rt, "exit 4", TR_STDIO_NULL, TR_STDIO_NULL, TR_STDIO_NULL, &p),
                     TR_OK);
    assert_false(tr__process_has_pidfd(p));
    tr_exit_status st;
    assert_int_equal(tr_process_wait_blocking(p, &st), TR_OK);
    assert_int_equal(st.code, 4);
    tr_process_free(p);
    tu_rt_free_clean(rt);
    assert_int_equal(unsetenv("TROUPE_PROCESS_NO_PIDFD"), 0);
    // The fallback's SIGCHLD handler is gone with its last listener.
    struct sigaction sa;
    assert_int_equal(sigaction(SIGCHLD, NULL, &sa), 0);
    assert_true(sa.sa_handler == SIG_DFL);
}

// ---------------------------------------------------------------------------

#define BOTH(f)                                                \
    {#f "_pidfd", f, setup_pidfd, teardown_mode, NULL},        \
    {                                                          \
#f "_fallback", f, setup_fallback, teardown_mode, NULL \
    }

// The one would-block code: tr_process_try_wait on a running child says
// TR_EAGAIN (and reaps nothing); once the child is reaped it says TR_OK
// with the same status every time.
static void
test_process_try_wait_would_block_is_eagain(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    tr_process *p = NULL;
    tr_exit_status st;
    assert_int_equal(
        spawn_sh(rt, "read x; exit 3", TR_STDIO_PIPE, TR_STDIO_NULL, TR_STDIO_NULL, &p), TR_OK);
    assert_true(expect_mode(p));
    assert_int_equal(tr_process_try_wait(p, &st), TR_EAGAIN);
    tr_io_close(tr_process_take_stdio(p, 0)); // end of file: the child exits
    assert_int_equal(tr_process_wait_blocking(p, &st), TR_OK);
    assert_int_equal(tr_process_try_wait(p, &st), TR_OK);
    assert_int_equal(st.code, 3);
    tr_process_free(p);
    tu_rt_free_clean(rt);
}

// TR_PROCESS_NEW_SESSION: the child leads a session and a group of its
// own (both ids are its pid); with TR_PROCESS_NEW_PGROUP it is refused.
static void
test_process_new_session(void **state)
{
    (void)state;
    tr_rt *rt = tu_rt_new();
    char *argv[] = {"/bin/sh", "-c", "read x; exit 5", NULL};
    tr_process_opts o;
    memset(&o, 0, sizeof o);
    o.argv = argv;
    o.stdio[0] = TR_STDIO_PIPE;
    o.flags = TR_PROCESS_NEW_SESSION | TR_PROCESS_NEW_PGROUP;
    tr_process *p = NULL;
    assert_int_equal(tr_process_spawn(rt, &o, &p), TR_EINVAL);
    o.flags = TR_PROCESS_NEW_SESSION;
    assert_int_equal(tr_process_spawn(rt, &o, &p), TR_OK);
    pid_t pid = tr_process_pid(p);
    // It blocks reading stdin until we close it, so it runs meanwhile.
    assert_int_equal(tu_proc_stat_field(pid, 6), pid); // session
    assert_int_equal(tu_proc_stat_field(pid, 5), pid); // process group
    assert_true(tu_proc_stat_field(getpid(), 6) != pid);
    tr_io_close(tr_process_take_stdio(p, 0));
    tr_exit_status st;
    assert_int_equal(tr_process_wait_blocking(p, &st), TR_OK);
    assert_int_equal(st.code, 5);
    tr_process_free(p);
    tu_rt_free_clean(rt);
}

// cg_dir makes a cgroup v2 directory for a test below the cgroup2 mount:
// false when there is none we may use.
static bool
cg_dir(char *out, size_t cap)
{
    FILE *f = fopen("/proc/self/mounts", "re");
    if (f == NULL) {
        return false;
    }
    char dev[256], mnt[512], type[64];
    bool ok = false;
    while (!ok && fscanf(f, "%255s %511s %63s %*[^\n]", dev, mnt, type) == 3) {
        if (strcmp(type, "cgroup2") != 0) {
            continue;
        }
        snprintf(out, cap, "%s/troupe-ptest-%d", mnt, (int)getpid());
        char procs[700];
        snprintf(procs, sizeof procs, "%s/cgroup.procs", out);
        ok = mkdir(out, 0755) == 0;
        if (ok && access(procs, W_OK) != 0) {
            rmdir(out);
            ok = false;
        }
    }
    fclose(f);
    return ok;
}

// opts.cgroup: the child starts in it, and so does what it forks at once
// (clone3 CLONE_INTO_CGROUP: no window outside); a cgroup that does not
// exist fails the spawn and runs nothing.
static void
test_process_into_cgroup(void **state)
{
    (void)state;
    char dir[600];
    if (!cg_dir(dir, sizeof dir)) {
        tu_skip("no writable cgroup v2 here");
    }
    tr_rt *rt = tu_rt_new();
    char file[128], script[512];
    snprintf(file, sizeof file, "/tmp/troupe-ptest-%d.cg", (int)getpid());
    snprintf(script, sizeof script,
             "sleep 5 & c=$!; cat /proc/self/cgroup > %s; cat /proc/$c/cgroup >> %s; kill $c", file,
             file);
    char *argv[] = {"/bin/sh", "-c", script, NULL};
    tr_process_opts o;
    memset(&o, 0, sizeof o);
    o.argv = argv;
    o.flags = TR_PROCESS_NEW_SESSION;
    o.cgroup = dir;
    tr_process *p = NULL;
    assert_int_equal(tr_process_spawn(rt, &o, &p), TR_OK);
    tr_exit_status st;
    assert_int_equal(tr_process_wait_blocking(p, &st), TR_OK);
    assert_int_equal(st.code, 0);
    tr_process_free(p);
    FILE *f = fopen(file, "r");
    assert_non_null(f);
    // With clone3 both the shell and the child it forked first report the
    // cgroup. Without it (valgrind has no clone3) the spawn falls back to
    // writing cgroup.procs after the exec, which those early forks may
    // beat: nothing about them can be asserted then.
    errno = 0;
    bool clone3 = syscall(SYS_clone3, NULL, 0) < 0 && errno != ENOSYS;
    char line[700];
    const char *rel = strrchr(dir, '/'); // "/troupe-ptest-PID"
    int seen = 0, in = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "0::", 3) == 0) {
            seen++;
            in += strstr(line, rel) != NULL;
        }
    }
    fclose(f);
    unlink(file);
    assert_int_equal(seen, 2);
    if (clone3) {
        assert_int_equal(in, 2);
    }
    rmdir(dir);

    o.cgroup = "/nonexistent/cgroup";
    p = NULL;
    assert_int_equal(tr_process_spawn(rt, &o, &p), TR_ENOENT);
    assert_null(p);
    tu_rt_free_clean(rt);
}

int
main(void)
{
    // Does this system (or valgrind) have pidfd_open?
    int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    g_have_pidfd = fd >= 0;
    if (fd >= 0) {
        close(fd);
    }
    const struct CMUnitTest tests[] = {
        BOTH(test_process_stdout_and_status),
        BOTH(test_process_cat_echo),
        BOTH(test_process_stderr_and_null),
        BOTH(test_process_kill),
        BOTH(test_process_inherits_nothing),
        BOTH(test_process_env_and_cwd),
        BOTH(test_process_spawn_errors),
        BOTH(test_process_wait_blocking),
        BOTH(test_process_try_wait_would_block_is_eagain),
        BOTH(test_process_wait_cancelled),
        BOTH(test_process_orphan_reaped),
        BOTH(test_process_orphan_outlives_runtime),
        BOTH(test_process_many_two_workers),
        cmocka_unit_test(test_process_env_forces_fallback),
        cmocka_unit_test(test_process_new_session),
        cmocka_unit_test(test_process_into_cgroup),
    };
    return tu_run(tests);
}
