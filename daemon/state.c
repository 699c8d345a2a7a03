// state.c: the state directory's lock (state.h).
//
// Design notes.
//
// flock, not fcntl locks: an fcntl lock belongs to the process and is
// dropped when any descriptor of the file is closed (a library that opens
// and closes the lock file would release it by accident), and it is not
// taken per open file description. A flock lock lives as long as the
// descriptor, and the kernel drops it when the process dies however it
// dies, so a kill -9 leaves no stale lock: the pid in the file is for the
// error text only, never trusted to decide who holds the lock.
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

// holder_pid reads the pid the holder wrote into the lock file, or 0.
static long
holder_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) {
        return 0;
    }
    buf[n] = '\0';
    char *end = NULL;
    long pid = strtol(buf, &end, 10);
    return end != buf && pid > 0 ? pid : 0;
}

// holder_gone says whether the trouped the lock file names has exited
// (or none is named): then whoever holds the lock is not a trouped but a
// child of a dead one caught between its fork and its exec (posix_spawn's
// child has a copy of every descriptor until the exec closes the
// close-on-exec ones), which lets go within moments.
static bool
holder_gone(int fd)
{
    long pid = holder_pid(fd);
    return pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH);
}

static void
on_alarm(int sig)
{
    (void)sig; // only interrupts the flock below
}

// lock_wait waits for the lock, at most TRD_STATE_LOCK_WAIT_MS (a timer
// signal interrupts the blocking flock: no polling). 0, or -1 and errno
// (EWOULDBLOCK when the time ran out).
static int
lock_wait(int fd)
{
    struct sigaction sa = {.sa_handler = on_alarm}, old;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, &old);
    struct itimerval it = {.it_value = {.tv_sec = TRD_STATE_LOCK_WAIT_MS / 1000,
                                        .tv_usec = (TRD_STATE_LOCK_WAIT_MS % 1000) * 1000}};
    struct itimerval off = {0};
    setitimer(ITIMER_REAL, &it, NULL);
    int rc = flock(fd, LOCK_EX);
    int e = errno;
    setitimer(ITIMER_REAL, &off, NULL);
    sigaction(SIGALRM, &old, NULL);
    if (rc != 0) {
        errno = e == EINTR ? EWOULDBLOCK : e;
    }
    return rc;
}

tr_err
trd_state_lock(const char *state_dir, int *fd_out, char *err, size_t errlen)
{
    *fd_out = -1;
    if (errlen > 0) {
        err[0] = '\0';
    }
    if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
        int e = errno;
        snprintf(err, errlen, "state directory %s: cannot create it: %s", state_dir, strerror(e));
        return tr_err_from_errno(e);
    }
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/lock", state_dir) >= sizeof path) {
        snprintf(err, errlen, "state directory %s: path too long", state_dir);
        return TR_EINVAL;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
        return tr_err_from_errno(e);
    }
    int rc;
    do {
        rc = flock(fd, LOCK_EX | LOCK_NB);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0 && errno == EWOULDBLOCK && holder_gone(fd)) {
        rc = lock_wait(fd);
    }
    if (rc != 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            long pid = holder_pid(fd);
            if (pid > 0) {
                snprintf(err, errlen,
                         "state directory %s is in use by another trouped (pid %ld holds %s)",
                         state_dir, pid, path);
            } else {
                snprintf(err, errlen, "state directory %s is in use by another trouped (%s)",
                         state_dir, path);
            }
            close(fd);
            return TR_EBUSY;
        }
        snprintf(err, errlen, "%s: flock: %s", path, strerror(e));
        close(fd);
        return tr_err_from_errno(e);
    }
    // Ours now: say who holds it. A failure here costs only the pid in a
    // later contender's error text, not the lock, so it is not an error.
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) == 0) {
        (void)!pwrite(fd, pid, (size_t)n, 0);
    }
    *fd_out = fd;
    return TR_OK;
}
