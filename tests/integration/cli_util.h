// cli_util.h: running the built troupe CLI from a test: spawn it with
// its stdout and stderr on pipes, read both with poll and wait for its
// exit with a deadline (no sleeps), and keep what it wrote. Static
// functions of one test executable each; include after cmocka and
// child_util.h, with TROUPE_BIN (the binary's path) defined.
#ifndef TR_CLI_UTIL_H
#define TR_CLI_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef TROUPE_BIN
#error "TROUPE_BIN: the path of the troupe CLI"
#endif

extern char **environ;

static uint64_t __attribute__((unused)) mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

// A finished troupe run: its exit code and what it wrote.
typedef struct cli_out {
    int rc;
    char *out; // NUL-terminated (also holds NUL bytes: use outlen)
    size_t outlen;
    char *err;
    size_t errlen;
} cli_out;

static void __attribute__((unused)) cli_free(cli_out *o)
{
    free(o->out);
    free(o->err);
    *o = (cli_out){0};
}

typedef struct buf {
    char *b;
    size_t n, cap;
} buf;

static void __attribute__((unused)) buf_add(buf *b, const void *p, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->b = realloc(b->b, b->cap);
        assert_non_null(b->b);
    }
    memcpy(b->b + b->n, p, n);
    b->n += n;
    b->b[b->n] = '\0';
}

// read_upto reads fd into out until it holds want bytes or fd ends (or
// EIO, a pty's end), within ms, chunk bytes at most a read. It never
// reads past want.
static void __attribute__((unused)) read_upto(int fd, int ms, size_t want, size_t chunk, buf *out)
{
    buf_add(out, "", 0);
    uint64_t deadline = mono_ms() + (uint64_t)ms;
    char tmp[65536];
    if (chunk > sizeof tmp) {
        chunk = sizeof tmp;
    }
    while (out->n < want) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        uint64_t now = mono_ms();
        assert_true(now < deadline);
        int r = poll(&pf, 1, (int)(deadline - now));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        assert_true(r > 0);
        ssize_t got = read(fd, tmp, want - out->n < chunk ? want - out->n : chunk);
        if (got <= 0) {
            break;
        }
        buf_add(out, tmp, (size_t)got);
    }
}

// read_all reads fd to its end (read_upto with no limit).
static void __attribute__((unused)) read_all(int fd, int ms, size_t chunk, buf *out)
{
    read_upto(fd, ms, SIZE_MAX, chunk, out);
}

// cli_spawn starts troupe with args (NULL-terminated; "--url URL" first
// when url is not NULL), its stdout and stderr on pipes (*out, *err).
static pid_t __attribute__((unused))
cli_spawn(const char *url, char *const *args, int *out, int *err)
{
    int po[2], pe[2];
    assert_int_equal(pipe2(po, O_CLOEXEC), 0);
    assert_int_equal(pipe2(pe, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    char *argv[64] = {TROUPE_BIN};
    size_t n = 1;
    if (url != NULL) {
        argv[n++] = "--url";
        argv[n++] = (char *)url;
    }
    for (size_t i = 0; args[i] != NULL && n < 63; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, TROUPE_BIN, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    *out = po[0];
    *err = pe[0];
    return pid;
}

// cli_argv runs troupe to its end, within ms: its output and exit code.
static void __attribute__((unused)) cli_argv(const char *url, char *const *args, int ms, cli_out *o)
{
    int fo, fe;
    pid_t pid = cli_spawn(url, args, &fo, &fe);
    buf bo = {0}, be = {0};
    buf_add(&bo, "", 0);
    buf_add(&be, "", 0);
    uint64_t deadline = mono_ms() + (uint64_t)ms;
    struct pollfd pf[2] = {{.fd = fo, .events = POLLIN}, {.fd = fe, .events = POLLIN}};
    while (pf[0].fd >= 0 || pf[1].fd >= 0) {
        uint64_t now = mono_ms();
        if (now >= deadline) {
            fprintf(stderr, "troupe %s did not end within %d ms\n", args[0], ms);
            kill(pid, SIGKILL);
            fail();
        }
        int r = poll(pf, 2, (int)(deadline - now));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        assert_true(r >= 0);
        for (int k = 0; k < 2; k++) {
            if (pf[k].fd >= 0 && pf[k].revents != 0) {
                char tmp[65536];
                ssize_t got = read(pf[k].fd, tmp, sizeof tmp);
                if (got <= 0) {
                    close(pf[k].fd);
                    pf[k].fd = -1;
                } else {
                    buf_add(k == 0 ? &bo : &be, tmp, (size_t)got);
                }
            }
        }
    }
    int left = (int)(deadline > mono_ms() ? deadline - mono_ms() : 1);
    int st;
    assert_true(wait_exit(pid, left, &st));
    assert_true(WIFEXITED(st));
    *o = (cli_out){.rc = WEXITSTATUS(st), .out = bo.b, .outlen = bo.n, .err = be.b, .errlen = be.n};
    if (getenv("TEST_CLI_VERBOSE") != NULL) {
        fprintf(stderr, "troupe %s -> %d\n%s%s", args[0], o->rc, o->out, o->err);
    }
}

#endif
