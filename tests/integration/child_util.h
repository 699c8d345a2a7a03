// child_util.h: what the multi-process integration tests share: a watchdog
// that names the step that hangs, and waiting for a child with a deadline
// (pidfd_open + poll, no sleeps). Static functions of one test executable
// each; include after cmocka.
#ifndef TR_CHILD_UTIL_H
#define TR_CHILD_UTIL_H

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// The watchdog: every step of a test names itself and re-arms an alarm, so
// a step that never ends (a bug here or in nng) fails with its name instead
// of hanging until ctest's timeout kills the run without a word. The bound
// is far above any step's time under TSan on a loaded machine.
static const char *volatile g_step = "start";
enum { STEP_MAX_S = 120 };

static void __attribute__((unused)) on_alarm(int sig)
{
    (void)sig;
    static const char pre[] = "\nintegration test: a step took over 120 s: ";
    const char *s = g_step;
    (void)!write(2, pre, sizeof pre - 1);
    (void)!write(2, s, strlen(s));
    (void)!write(2, "\n", 1);
    abort();
}

static void __attribute__((unused)) step(const char *name)
{
    g_step = name;
    alarm(STEP_MAX_S);
}

// wait_exit waits up to ms for the child pid to exit, then reaps it: true
// and *st its wait status; false (killed, reaped) when it did not exit.
static bool __attribute__((unused)) wait_exit(pid_t pid, int ms, int *st)
{
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    assert_true(pfd >= 0);
    struct pollfd pf = {.fd = pfd, .events = POLLIN};
    int ready;
    do {
        ready = poll(&pf, 1, ms);
    } while (ready < 0 && errno == EINTR);
    close(pfd);
    if (ready == 0) {
        kill(pid, SIGKILL);
    }
    *st = 0;
    waitpid(pid, st, 0);
    return ready != 0;
}

// make_cert makes a self-signed certificate (CN localhost, SAN localhost
// and 127.0.0.1) in dir: cert (the certificate, what a client trusts as its
// CA) and both (certificate and key in one PEM, what a server presents).
// False when openssl failed (deploy/debian-deps.sh installs it).
static bool __attribute__((unused)) make_cert(const char *dir, const char *cert, const char *both)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
             "-nodes -keyout %s/key.pem -out %s -days 2 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null && "
             "cat %s %s/key.pem > %s",
             dir, dir, cert, cert, dir, both);
    return system(cmd) == 0;
}

#endif
