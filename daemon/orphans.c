// Design notes.
//
// One pass over /proc finds the marked processes (our uid, the marker in
// /proc/PID/environ: the environment the process was started with); the
// recorded leaders are checked by their start time. Each target gets a
// pidfd before any signal, so that the wait is for that process and not
// for one that reused its pid; then each distinct process group gets one
// SIGKILL (never our own group), and poll(2) on the pidfds waits for the
// exits until the deadline. A process that is gone releases its file
// locks and pipes at exit, before its pidfd turns readable: what a retry
// could collide with is gone when this returns.
#define _GNU_SOURCE
#include "orphans.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct target {
    pid_t t_pid;
    pid_t t_pgid;
    int t_fd; // pidfd, -1 once it exited
} target;

// proc_stat reads pid's process group and start time (fields 5 and 22 of
// /proc/PID/stat; the name in field 2 may hold spaces and parentheses, so
// the fields after it are counted from its last ')').
static bool
proc_stat(pid_t pid, pid_t *pgid, uint64_t *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) {
        return false;
    }
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL) {
        return false;
    }
    // p + 2 is field 3 (state); field k is k - 3 spaces further.
    p += 2;
    long long pg = 0;
    unsigned long long st = 0;
    for (int field = 3; field <= 22 && *p != '\0'; field++) {
        if (field == 5) {
            pg = strtoll(p, NULL, 10);
        } else if (field == 22) {
            st = strtoull(p, NULL, 10);
        }
        p = strchr(p, ' ');
        if (p == NULL) {
            break;
        }
        p++;
    }
    *pgid = (pid_t)pg;
    *start = st;
    return true;
}

// has_marker says whether pid's initial environment holds marker (a
// "NAME=value" entry, exactly).
static bool
has_marker(pid_t pid, const char *marker, size_t mlen)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    // Entries are NUL-terminated; one may straddle two reads.
    // Called from one thread, at start-up.
    static char buf[64 * 1024];
    size_t have = 0;
    bool found = false, eof = false;
    while (!found && !eof) {
        ssize_t n = read(fd, buf + have, sizeof buf - have);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            eof = true;
        } else {
            have += (size_t)n;
        }
        size_t start = 0;
        for (size_t i = 0; i < have && !found; i++) {
            if (buf[i] == '\0') {
                found = i - start == mlen && memcmp(buf + start, marker, mlen) == 0;
                start = i + 1;
            }
        }
        if (start == 0 && have == sizeof buf) {
            have = 0; // one entry longer than the buffer: not ours
        } else {
            memmove(buf, buf + start, have - start);
            have -= start;
        }
    }
    close(fd);
    return found;
}

static void
add_target(target **ts, size_t *n, size_t *cap, pid_t pid, pid_t pgid)
{
    for (size_t i = 0; i < *n; i++) {
        if ((*ts)[i].t_pid == pid) {
            return;
        }
    }
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) {
        return; // gone already
    }
    if (*n == *cap) {
        *cap = *cap != 0 ? *cap * 2 : 16;
        *ts = realloc(*ts, *cap * sizeof **ts);
        if (*ts == NULL) {
            abort();
        }
    }
    (*ts)[(*n)++] = (target){.t_pid = pid, .t_pgid = pgid, .t_fd = fd};
}

static int64_t
now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void
trd_orphans_kill(const char *state_dir, const trd_leader *leaders, size_t n, int timeout_ms,
                 trd_orphan_stats *st)
{
    trd_orphan_stats s = {0};
    target *ts = NULL;
    size_t nt = 0, cap = 0;
    pid_t me = getpid(), my_pgid = getpgrp();
    uid_t uid = geteuid();
    for (size_t i = 0; i < n; i++) {
        pid_t pg;
        uint64_t start;
        if (leaders[i].l_pid > 1 && leaders[i].l_pid != me && leaders[i].l_start != 0 &&
            proc_stat(leaders[i].l_pid, &pg, &start) && start == leaders[i].l_start) {
            add_target(&ts, &nt, &cap, leaders[i].l_pid, pg);
        }
    }
    char marker[4200];
    int ml = snprintf(marker, sizeof marker, "%s=%s", TRD_ENV_STATE_DIR, state_dir);
    DIR *dir = opendir("/proc");
    if (dir != NULL && ml > 0 && (size_t)ml < sizeof marker) {
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            if (!isdigit((unsigned char)e->d_name[0])) {
                continue;
            }
            pid_t pid = (pid_t)strtol(e->d_name, NULL, 10);
            struct stat sb;
            char path[64];
            snprintf(path, sizeof path, "/proc/%d", (int)pid);
            if (pid == me || stat(path, &sb) != 0 || sb.st_uid != uid) {
                continue;
            }
            pid_t pg;
            uint64_t start;
            if (has_marker(pid, marker, (size_t)ml) && proc_stat(pid, &pg, &start)) {
                add_target(&ts, &nt, &cap, pid, pg);
            }
        }
    }
    if (dir != NULL) {
        closedir(dir);
    }
    for (size_t i = 0; i < nt; i++) {
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++) {
            seen = ts[k].t_pgid == ts[i].t_pgid;
        }
        if (ts[i].t_pgid > 1 && ts[i].t_pgid != my_pgid) {
            if (!seen) {
                kill(-ts[i].t_pgid, SIGKILL);
                s.o_groups++;
            }
        } else {
            kill(ts[i].t_pid, SIGKILL); // never our own group
        }
    }
    s.o_procs = nt;
    struct pollfd *pf = calloc(nt != 0 ? nt : 1, sizeof *pf);
    if (pf == NULL) {
        abort();
    }
    int64_t deadline = now_ms() + timeout_ms;
    size_t left = nt;
    while (left > 0) {
        size_t k = 0;
        for (size_t i = 0; i < nt; i++) {
            if (ts[i].t_fd >= 0) {
                pf[k++] = (struct pollfd){.fd = ts[i].t_fd, .events = POLLIN};
            }
        }
        int64_t wait = deadline - now_ms();
        if (wait <= 0) {
            break;
        }
        int r = poll(pf, k, (int)wait);
        if (r < 0 && errno != EINTR) {
            break;
        }
        for (size_t j = 0; j < k && r > 0; j++) {
            if (pf[j].revents == 0) {
                continue;
            }
            for (size_t i = 0; i < nt; i++) {
                if (ts[i].t_fd == pf[j].fd) {
                    close(ts[i].t_fd);
                    ts[i].t_fd = -1;
                    left--;
                }
            }
        }
    }
    for (size_t i = 0; i < nt; i++) {
        if (ts[i].t_fd >= 0) {
            close(ts[i].t_fd);
        }
    }
    s.o_left = left;
    free(pf);
    free(ts);
    if (st != NULL) {
        *st = s;
    }
}
