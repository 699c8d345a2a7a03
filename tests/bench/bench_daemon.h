// bench_daemon.h: what the daemon's benchmarks (bench_daemon_*) share: a
// real trouped in a child process, the control calls they make beyond
// troupe/client.h (ListJobs, Logs: raw ControlRequests through
// tr_client_call), a watchdog, the daemon's CPU from /proc, JSON lines
// that can carry a reason, and task-spooler, the peer of two of them.
//
// The daemon: a fresh directory under $TMPDIR (/tmp when unset) holds its state
// directory (state/), its ipc socket (trouped.sock: the path stays well
// under sun_path's 108 bytes) and its log (trouped.log: trouped's stderr,
// kept for the benchmark to read and for a post-mortem). bench_daemon_start
// waits for "TROUPED READY <url>" with a deadline; bench_daemon_stop sends
// SIGTERM and reaps it with wait4 within a deadline (then SIGKILL), which
// gives its rusage; bench_daemon_free removes the directory.
//
// Which trouped: the build tree's (TROUPED_BIN, compiled in), or the one
// TROUPE_BENCH_TROUPED names, so that one benchmark build can measure two
// daemon builds (tests/bench/abab.sh style).
//
// --workers and --sched: trouped has no such flags, but it makes its
// runtime from the defaults and TROUPE_WORKERS / TROUPE_SCHED, as any
// troupe program does. So the flags go to the child as those variables,
// unless the environment already sets them (then the environment wins, as
// bench.h says). What the daemon's runtime uses is resolved the same way
// in this process (a runtime made and freed at once), so the JSON lines
// report what was measured.
//
// CPU: wait4's rusage holds the child and every descendant it reaped (the
// jobs), so the daemon's own CPU is read apart from its children's from
// /proc/<pid>/stat (utime, stime, cutime, cstime) while it runs.
//
// The watchdog: one thread; bench_dwatch_arm gives a phase --timeout
// seconds. When a phase outlives it, the watchdog names the phase, kills
// the children it was told about (trouped, task-spooler's server) and
// removes their directories, and ends the process with exit code 3, so a
// hang fails instead of blocking forever. The same cleanup runs at exit(),
// and a fatal signal (a sanitizer's abort, ^C) SIGKILLs the children, so
// that no trouped outlives the benchmark.
#ifndef TR_BENCH_DAEMON_H
#define TR_BENCH_DAEMON_H

#include "bench.h"

#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <troupe/client.h>
#include <troupe/envelope.h>

#ifndef TROUPED_BIN
#error "TROUPED_BIN: the path of trouped"
#endif

extern char **environ;

// ---------------------------------------------------------------------------
// The watchdog.

#define BENCH_DWATCH_PIDS 8
#define BENCH_DWATCH_DIRS 4

typedef struct bench_dwatch {
    pthread_mutex_t dw_mu;
    pthread_cond_t dw_cv;
    bool dw_started;
    bool dw_armed;          // under dw_mu
    struct timespec dw_due; // CLOCK_MONOTONIC, under dw_mu
    char dw_what[128];      // the phase, under dw_mu
    const char *dw_name;
    unsigned dw_timeout_s;
    pid_t dw_pids[BENCH_DWATCH_PIDS];     // killed on expiry (0: free), under dw_mu
    char dw_dirs[BENCH_DWATCH_DIRS][128]; // removed on expiry ("": free), under dw_mu
    // Runs on expiry before the directories go (task-spooler's server is
    // a daemon of its own, with no pid of ours to kill): under dw_mu.
    void (*dw_hook)(void *arg);
    void *dw_hook_arg;
} bench_dwatch;

static bench_dwatch bench__dw = {.dw_mu = PTHREAD_MUTEX_INITIALIZER,
                                 .dw_cv = PTHREAD_COND_INITIALIZER};

// bench__rm_one removes one entry and goes on whatever happens: nftw
// stops at the first callback that returns non-zero, and an entry may
// vanish under it (task-spooler's server cleans up as it dies).
static inline int
bench__rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

// bench_rm_rf removes dir and everything below it (a few passes, in case
// something was still writing in it).
static inline void
bench_rm_rf(const char *dir)
{
    for (int pass = 0; dir[0] != '\0' && pass < 20; pass++) {
        nftw(dir, bench__rm_one, 16, FTW_DEPTH | FTW_PHYS);
        if (access(dir, F_OK) != 0) {
            return;
        }
        usleep(50000);
    }
}

static inline bool
bench__ts_passed(const struct timespec *due)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > due->tv_sec || (now.tv_sec == due->tv_sec && now.tv_nsec >= due->tv_nsec);
}

// bench__dwatch_cleanup kills and reaps the children it was told about,
// runs the hook and removes the directories, and forgets them. Under
// dw_mu.
static inline void
bench__dwatch_cleanup(void)
{
    for (int i = 0; i < BENCH_DWATCH_PIDS; i++) {
        if (bench__dw.dw_pids[i] > 0) {
            kill(bench__dw.dw_pids[i], SIGKILL);
            waitpid(bench__dw.dw_pids[i], NULL, 0);
            bench__dw.dw_pids[i] = 0;
        }
    }
    if (bench__dw.dw_hook != NULL) {
        bench__dw.dw_hook(bench__dw.dw_hook_arg);
        bench__dw.dw_hook = NULL;
    }
    for (int i = 0; i < BENCH_DWATCH_DIRS; i++) {
        bench_rm_rf(bench__dw.dw_dirs[i]);
        bench__dw.dw_dirs[i][0] = '\0';
    }
}

// At exit (exit() on an error path with a daemon still up), the same.
static inline void
bench__dwatch_atexit(void)
{
    pthread_mutex_lock(&bench__dw.dw_mu);
    bench__dwatch_cleanup();
    pthread_mutex_unlock(&bench__dw.dw_mu);
}

// On a fatal signal (abort from a sanitizer, a crash, ^C) only what is
// async-signal-safe: SIGKILL to the children, so that no trouped outlives
// us; their directories stay. Then the signal's default action.
static inline void
bench__dwatch_signal(int sig)
{
    for (int i = 0; i < BENCH_DWATCH_PIDS; i++) {
        pid_t pid = bench__dw.dw_pids[i];
        if (pid > 0) {
            kill(pid, SIGKILL);
        }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static inline void
bench__dwatch_install(void)
{
    static bool done; // under dw_mu
    if (done) {
        return;
    }
    done = true;
    atexit(bench__dwatch_atexit);
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGABRT, SIGSEGV, SIGBUS, SIGFPE};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = bench__dwatch_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

static inline void *
bench__dwatch_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&bench__dw.dw_mu);
    for (;;) {
        if (!bench__dw.dw_armed) {
            pthread_cond_wait(&bench__dw.dw_cv, &bench__dw.dw_mu);
            continue;
        }
        pthread_cond_timedwait(&bench__dw.dw_cv, &bench__dw.dw_mu, &bench__dw.dw_due);
        if (bench__dw.dw_armed && bench__ts_passed(&bench__dw.dw_due)) {
            fprintf(stderr, "bench_%s: %s took longer than %u s: killing its processes\n",
                    bench__dw.dw_name, bench__dw.dw_what, bench__dw.dw_timeout_s);
            bench__dwatch_cleanup();
            fflush(stdout);
            _exit(3);
        }
    }
    return NULL;
}

// bench_dwatch_arm gives the phase what a->timeout_s seconds from now (0:
// no limit). Any thread.
static inline void
bench_dwatch_arm(const bench_args *a, const char *what)
{
    if (a->timeout_s == 0) {
        return;
    }
    pthread_mutex_lock(&bench__dw.dw_mu);
    if (!bench__dw.dw_started) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_destroy(&bench__dw.dw_cv);
        pthread_cond_init(&bench__dw.dw_cv, &ca);
        pthread_condattr_destroy(&ca);
        pthread_t t;
        if (pthread_create(&t, NULL, bench__dwatch_main, NULL) != 0) {
            fprintf(stderr, "bench_%s: cannot start the watchdog\n", a->name);
            exit(1);
        }
        pthread_detach(t);
        bench__dw.dw_started = true;
    }
    bench__dw.dw_name = a->name;
    bench__dw.dw_timeout_s = a->timeout_s;
    snprintf(bench__dw.dw_what, sizeof bench__dw.dw_what, "%s", what);
    clock_gettime(CLOCK_MONOTONIC, &bench__dw.dw_due);
    bench__dw.dw_due.tv_sec += (time_t)a->timeout_s;
    bench__dw.dw_armed = true;
    pthread_cond_signal(&bench__dw.dw_cv);
    pthread_mutex_unlock(&bench__dw.dw_mu);
}

static inline void
bench_dwatch_disarm(void)
{
    pthread_mutex_lock(&bench__dw.dw_mu);
    bench__dw.dw_armed = false;
    pthread_cond_signal(&bench__dw.dw_cv);
    pthread_mutex_unlock(&bench__dw.dw_mu);
}

// bench_dwatch_own tells the watchdog about a child (pid > 0) and its
// directory (may be NULL) to clean up on expiry; bench_dwatch_drop forgets
// them once they are reaped and removed.
static inline void
bench_dwatch_own(pid_t pid, const char *dir)
{
    pthread_mutex_lock(&bench__dw.dw_mu);
    bench__dwatch_install();
    for (int i = 0; pid > 0 && i < BENCH_DWATCH_PIDS; i++) {
        if (bench__dw.dw_pids[i] == 0) {
            bench__dw.dw_pids[i] = pid;
            break;
        }
    }
    for (int i = 0; dir != NULL && i < BENCH_DWATCH_DIRS; i++) {
        if (bench__dw.dw_dirs[i][0] == '\0') {
            snprintf(bench__dw.dw_dirs[i], sizeof bench__dw.dw_dirs[i], "%s", dir);
            break;
        }
    }
    pthread_mutex_unlock(&bench__dw.dw_mu);
}

static inline void
bench_dwatch_drop(pid_t pid, const char *dir)
{
    pthread_mutex_lock(&bench__dw.dw_mu);
    for (int i = 0; i < BENCH_DWATCH_PIDS; i++) {
        if (pid > 0 && bench__dw.dw_pids[i] == pid) {
            bench__dw.dw_pids[i] = 0;
        }
    }
    for (int i = 0; i < BENCH_DWATCH_DIRS; i++) {
        if (dir != NULL && strcmp(bench__dw.dw_dirs[i], dir) == 0) {
            bench__dw.dw_dirs[i][0] = '\0';
        }
    }
    pthread_mutex_unlock(&bench__dw.dw_mu);
}

// ---------------------------------------------------------------------------
// JSON lines.

// bench_dfield appends ,"key":"text" (text escaped) to buf (len bytes,
// always terminated); text NULL appends nothing.
static inline void
bench_dfield(char *buf, size_t len, const char *key, const char *text)
{
    size_t n = strlen(buf);
    if (text == NULL || n + 8 + strlen(key) >= len) {
        return;
    }
    n += (size_t)snprintf(buf + n, len - n, ",\"%s\":\"", key);
    for (const char *p = text; *p != '\0' && n + 8 < len; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)ch;
        } else if (ch < 0x20) {
            n += (size_t)snprintf(buf + n, len - n, "\\u%04x", ch);
        } else {
            buf[n++] = (char)ch;
        }
    }
    snprintf(buf + n, len - n, "\"");
}

// bench_dline prints one figure as bench_line does, with extra (fields
// made with bench_dfield, or NULL) at the end. A value that was not
// measured (NAN) prints as null: such a line always has ok false and a
// reason.
static inline void
bench_dline(const bench_args *a, const char *metric, double value, const char *unit, bool ok,
            const char *extra)
{
    char v[64];
    if (isnan(value)) {
        snprintf(v, sizeof v, "null");
    } else {
        snprintf(v, sizeof v, "%.6g", value);
    }
    printf("{\"bench\":\"%s\",\"sched\":\"%s\",\"workers\":%u,\"metric\":\"%s\","
           "\"value\":%s,\"unit\":\"%s\",\"ok\":%s%s}\n",
           a->name, tr_sched_name(a->used_sched), a->used_workers, metric, v, unit,
           ok ? "true" : "false", extra != NULL ? extra : "");
    fflush(stdout);
}

// bench_quantile returns the q-quantile of v[0..n) (sorts v); NAN when n 0.
static inline double
bench_quantile(double *v, size_t n, double q)
{
    if (n == 0) {
        return NAN;
    }
    qsort(v, n, sizeof *v, bench_cmp_double);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

// bench_explicit_runs returns --runs as given, or 1 when argv has none
// (bench.h's default of 5 is for microbenchmarks: each run here starts a
// daemon).
static inline unsigned
bench_explicit_runs(int argc, char **argv, const bench_args *a)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--runs") == 0) {
            return a->runs;
        }
    }
    return 1;
}

// ---------------------------------------------------------------------------
// The daemon.

// bench_tmpdir makes a fresh directory $TMPDIR/<prefix>-XXXXXX (/tmp when
// TMPDIR is unset) into buf, or exits: the state and the sockets of the
// benchmarks live there, so TMPDIR picks the filesystem they measure. Its
// path must leave room for an ipc socket's name (sun_path is 108 bytes).
static inline void
bench_tmpdir(char *buf, size_t len, const char *prefix)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    int n = snprintf(buf, len, "%s/%s-XXXXXX", base, prefix);
    if (strlen(base) > 48 || n < 0 || (size_t)n >= len) {
        fprintf(stderr, "bench: TMPDIR=%s is too long for an ipc socket path below it\n", base);
        exit(1);
    }
    if (mkdtemp(buf) == NULL) {
        fprintf(stderr, "bench: mkdtemp %s: %s\n", buf, strerror(errno));
        exit(1);
    }
}

// bench_create_probe times creating (and closing) n empty files in dir,
// as trouped creates its jobs' output files, and removes them: the p50
// in µs, NAN if it could not. On ext4 without a journal, allocating an
// inode skips those freed in the last minutes, and checking them is the
// cost: right after many deletions it grows from ~10 µs to ~400 µs here.
static inline double
bench_create_probe(const char *dir, unsigned n)
{
    double *lat = calloc(n, sizeof *lat);
    unsigned got = 0;
    char path[256];
    for (unsigned i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/bench-create-%u", dir, i);
        double t = bench_now();
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
            break;
        }
        close(fd);
        lat[got++] = bench_now() - t;
    }
    for (unsigned i = 0; i < got; i++) {
        snprintf(path, sizeof path, "%s/bench-create-%u", dir, i);
        unlink(path);
    }
    double p50 = bench_quantile(lat, got, 0.5) * 1e6;
    free(lat);
    return p50;
}

typedef struct bench_daemon {
    pid_t bd_pid;
    int bd_out;          // read end of its stdout
    char bd_dir[80];     // $TMPDIR/troupe-bench-XXXXXX
    char bd_state[96];   // bd_dir/state
    char bd_url[112];    // ipc://bd_dir/trouped.sock
    char bd_log[96];     // bd_dir/trouped.log: its stderr
    struct rusage bd_ru; // from wait4 (itself and its reaped children)
    int bd_status;       // from wait4
    double bd_stop_s;    // SIGTERM to reaped
    bool bd_stopped_ok;  // exited 0 within the deadline
} bench_daemon;

// bench_daemon_env passes --workers/--sched to trouped as TROUPE_WORKERS /
// TROUPE_SCHED (unless the environment sets them) and records in a->used_*
// what its runtime will use. Once, before the first bench_daemon_start.
static inline void
bench_daemon_env(bench_args *a)
{
    char v[16];
    snprintf(v, sizeof v, "%u", a->workers);
    setenv("TROUPE_WORKERS", v, 0);
    setenv("TROUPE_SCHED", tr_sched_name(a->sched), 0);
    // The same inputs, resolved by the same code (then freed): the
    // defaults trouped passes (tr_rt_new(NULL)) plus the environment.
    tr_rt *rt;
    tr_err e = tr_rt_new(NULL, &rt);
    if (e != TR_OK) {
        fprintf(stderr, "bench_%s: the runtime trouped would make: %s: %s\n", a->name,
                tr_strerror(e), tr_error_detail());
        exit(1);
    }
    tr_rt_stats st;
    tr_rt_get_stats(rt, &st);
    a->used_workers = st.workers;
    a->used_sched = st.sched;
    tr_rt_free(rt);
}

static inline void
bench__daemon_fail(bench_daemon *d, const char *why)
{
    fprintf(stderr, "bench: trouped: %s; its log (%s):\n", why, d->bd_log);
    FILE *f = fopen(d->bd_log, "r");
    if (f != NULL) {
        char line[1024];
        while (fgets(line, sizeof line, f) != NULL) {
            fputs(line, stderr);
        }
        fclose(f);
    }
    if (d->bd_pid > 0) {
        kill(d->bd_pid, SIGKILL);
        waitpid(d->bd_pid, NULL, 0);
    }
    bench_rm_rf(d->bd_dir);
    exit(1);
}

// bench_daemon_start starts trouped --state-dir DIR/state --listen
// ipc://DIR/trouped.sock and extra (NULL-terminated, may be NULL) and
// waits up to 10 s for its READY line. Exits the process on failure.
static inline void
bench_daemon_start(bench_daemon *d, char *const *extra)
{
    memset(d, 0, sizeof *d);
    d->bd_out = -1;
    bench_tmpdir(d->bd_dir, sizeof d->bd_dir, "troupe-bench");
    snprintf(d->bd_state, sizeof d->bd_state, "%s/state", d->bd_dir);
    snprintf(d->bd_url, sizeof d->bd_url, "ipc://%s/trouped.sock", d->bd_dir);
    snprintf(d->bd_log, sizeof d->bd_log, "%s/trouped.log", d->bd_dir);
    int logfd = open(d->bd_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int pout[2];
    if (logfd < 0 || pipe2(pout, O_CLOEXEC) != 0) {
        perror("bench: trouped's log or pipe");
        exit(1);
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    posix_spawn_file_actions_adddup2(&fa, logfd, 2);
    char *bin = getenv("TROUPE_BENCH_TROUPED");
    if (bin == NULL || bin[0] == '\0') {
        bin = TROUPED_BIN;
    }
    char *argv[24] = {bin, "--state-dir", d->bd_state, "--listen", d->bd_url};
    size_t n = 5;
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n < 23; i++) {
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    int rv = posix_spawn(&d->bd_pid, bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pout[1]);
    close(logfd);
    if (rv != 0) {
        fprintf(stderr, "bench: posix_spawn %s: %s\n", bin, strerror(rv));
        bench_rm_rf(d->bd_dir);
        exit(1);
    }
    d->bd_out = pout[0];
    bench_dwatch_own(d->bd_pid, d->bd_dir);
    // The READY line, read a byte at a time (it is short) under a deadline.
    char line[256];
    size_t len = 0;
    double due = bench_now() + 10.0;
    for (;;) {
        int left_ms = (int)((due - bench_now()) * 1000.0);
        if (left_ms <= 0) {
            bench__daemon_fail(d, "no READY line within 10 s");
        }
        struct pollfd pfd = {.fd = d->bd_out, .events = POLLIN};
        if (poll(&pfd, 1, left_ms) <= 0) {
            continue;
        }
        char ch;
        ssize_t r = read(d->bd_out, &ch, 1);
        if (r <= 0) {
            bench__daemon_fail(d, "exited before it was ready");
        }
        if (ch == '\n' || len == sizeof line - 1) {
            line[len] = '\0';
            break;
        }
        line[len++] = ch;
    }
    char want[160];
    snprintf(want, sizeof want, "TROUPED READY %s", d->bd_url);
    if (strcmp(line, want) != 0) {
        bench__daemon_fail(d, "an unexpected first line");
    }
}

// bench_daemon_connect opens a client on d and checks it answers a Ping.
static inline tr_client *
bench_daemon_connect(bench_daemon *d)
{
    tr_client *c;
    char ver[32];
    if (tr_client_connect(d->bd_url, &c) != TR_OK) {
        bench__daemon_fail(d, "cannot connect");
    }
    if (tr_client_ping(c, ver, sizeof ver) != TR_OK) {
        bench__daemon_fail(d, "no answer to Ping");
    }
    return c;
}

// The daemon's CPU so far, in seconds: its own (all threads) and that of
// its children it has reaped (the jobs).
typedef struct bench_cpu {
    double cpu_self;
    double cpu_children;
} bench_cpu;

// bench_daemon_cpu reads /proc/<pid>/stat fields 14-17 (utime, stime,
// cutime, cstime). False if it cannot.
static inline bool
bench_daemon_cpu(const bench_daemon *d, bench_cpu *out)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)d->bd_pid);
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
    // Field 2 (comm) is in parentheses and may hold spaces: count from the
    // last ')', which ends field 2; field 3 follows.
    char *p = strrchr(buf, ')');
    if (p == NULL) {
        return false;
    }
    p++;
    unsigned long long f[18] = {0};
    int field = 2;
    char *save = NULL;
    for (char *tok = strtok_r(p, " ", &save); tok != NULL && field < 17;
         tok = strtok_r(NULL, " ", &save)) {
        field++;
        f[field] = strtoull(tok, NULL, 10);
    }
    if (field < 17) {
        return false;
    }
    double hz = (double)sysconf(_SC_CLK_TCK);
    out->cpu_self = (double)(f[14] + f[15]) / hz;
    out->cpu_children = (double)(f[16] + f[17]) / hz;
    return true;
}

// bench_daemon_stop sends SIGTERM and reaps trouped within deadline_ms
// (then SIGKILL): bd_stop_s, bd_status, bd_ru, and bd_stopped_ok (it
// exited with status 0 in time), which it also returns.
static inline bool
bench_daemon_stop(bench_daemon *d, unsigned deadline_ms)
{
    if (d->bd_out >= 0) {
        close(d->bd_out);
        d->bd_out = -1;
    }
    int pfd = pidfd_open(d->bd_pid, 0);
    double t0 = bench_now();
    kill(d->bd_pid, SIGTERM);
    bool in_time = false;
    if (pfd >= 0) {
        struct pollfd p = {.fd = pfd, .events = POLLIN};
        in_time = poll(&p, 1, (int)deadline_ms) == 1;
        close(pfd);
    } else {
        // No pidfd (valgrind): look for the exit every millisecond.
        while (bench_now() - t0 < deadline_ms / 1000.0) {
            siginfo_t si = {0};
            if (waitid(P_PID, (id_t)d->bd_pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == d->bd_pid) {
                in_time = true;
                break;
            }
            usleep(1000);
        }
    }
    if (!in_time) {
        fprintf(stderr, "bench: trouped did not exit within %u ms of SIGTERM: SIGKILL\n",
                deadline_ms);
        kill(d->bd_pid, SIGKILL);
    }
    wait4(d->bd_pid, &d->bd_status, 0, &d->bd_ru);
    d->bd_stop_s = bench_now() - t0;
    bench_dwatch_drop(d->bd_pid, NULL);
    d->bd_stopped_ok = in_time && WIFEXITED(d->bd_status) && WEXITSTATUS(d->bd_status) == 0;
    return d->bd_stopped_ok;
}

// bench_daemon_free removes the daemon's directory (after bench_daemon_stop).
static inline void
bench_daemon_free(bench_daemon *d)
{
    bench_dwatch_drop(0, d->bd_dir);
    bench_rm_rf(d->bd_dir);
}

// bench_ru_cpu is the user + system seconds of an rusage.
static inline double
bench_ru_cpu(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec * 1e-6 +
           (double)ru->ru_stime.tv_sec + (double)ru->ru_stime.tv_usec * 1e-6;
}

// ---------------------------------------------------------------------------
// Control calls troupe/client.h has no function for.

static inline tr_msg *
bench_request_new(Troupe__V1__ControlRequest **req)
{
    tr_msg *m = tr_msg_new(&troupe__v1__control_request__descriptor, 128, (void **)req);
    (*req)->version = TROUPE__V1__CONTROL_VERSION__CONTROL_VERSION_1;
    return m;
}

// bench_list sends ListJobs (states: a mask of 1 << JobState, 0: all;
// after_id, limit): TR_OK and *reply (a ControlReply with a JobList; the
// caller frees it), or tr_client_call's error.
static inline tr_err
bench_list(tr_client *c, uint32_t states, uint64_t after_id, uint32_t limit, tr_msg **reply)
{
    Troupe__V1__ControlRequest *req;
    tr_msg *m = bench_request_new(&req);
    Troupe__V1__ListJobs *l = tr_msg_arena(m, sizeof *l);
    troupe__v1__list_jobs__init(l);
    Troupe__V1__JobState *st = tr_msg_arena(m, 8 * sizeof *st);
    for (int s = 0; s < 8; s++) {
        if (states & (1u << s)) {
            st[l->n_states++] = (Troupe__V1__JobState)s;
        }
    }
    l->states = l->n_states > 0 ? st : NULL;
    l->after_id = after_id;
    l->limit = limit;
    req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_LIST;
    req->list = l;
    tr_err rv = tr_client_call(c, m, 0, reply);
    if (rv == TR_OK && tr_client_reply_jobs(*reply) == NULL) {
        tr_msg_free(*reply);
        *reply = NULL;
        return TR_EINVAL;
    }
    return rv;
}

#define BENCH_UNFINISHED                               \
    ((1u << TROUPE__V1__JOB_STATE__JOB_STATE_QUEUED) | \
     (1u << TROUPE__V1__JOB_STATE__JOB_STATE_RUNNING))

// bench_wait_all returns once no job of the daemon is queued or running
// (ListJobs of those states comes back empty: the store's committed state,
// so every final state is durable), up to timeout_ms in all: TR_OK,
// TR_ETIMEDOUT, or a call's error. It first waits (WaitJobs) for last, the
// highest id submitted (0: none), which usually ends last, then waits on
// what ListJobs still shows. It never waits on many ids at once: trouped's
// runner checks a waiter's ids on each job's end, reading the store for
// each id it no longer holds, so a wait on 1,000 ids slows every job's
// end (2.3 s instead of tens of ms for 1,600 noop jobs, measured).
static inline tr_err
bench_wait_all(tr_client *c, uint64_t last, uint64_t timeout_ms)
{
    double due = bench_now() + (double)timeout_ms / 1000.0;
    uint64_t ids[16];
    size_t n = 0;
    if (last != 0) {
        ids[n++] = last;
    }
    for (;;) {
        tr_msg *reply;
        tr_err rv;
        if (n > 0) {
            double left = due - bench_now();
            if (left <= 0) {
                return TR_ETIMEDOUT;
            }
            bool timed_out = false;
            rv = tr_client_wait(c, ids, n, (uint64_t)(left * 1000.0) + 1, &reply, &timed_out);
            if (rv != TR_OK) {
                return rv;
            }
            tr_msg_free(reply);
            if (timed_out) {
                return TR_ETIMEDOUT;
            }
        }
        if ((rv = bench_list(c, BENCH_UNFINISHED, 0, 16, &reply)) != TR_OK) {
            return rv;
        }
        const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
        n = jl->n_jobs < 16 ? jl->n_jobs : 16;
        for (size_t i = 0; i < n; i++) {
            ids[i] = jl->jobs[i]->id;
        }
        tr_msg_free(reply);
        if (n == 0) {
            return TR_OK;
        }
    }
}

// bench_count_state counts the daemon's jobs in state st (ListJobs pages
// of 1000): TR_OK and *n, or a call's error.
static inline tr_err
bench_count_state(tr_client *c, Troupe__V1__JobState st, uint64_t *n)
{
    *n = 0;
    uint64_t after = 0;
    for (;;) {
        tr_msg *reply;
        tr_err rv = bench_list(c, 1u << st, after, 1000, &reply);
        if (rv != TR_OK) {
            return rv;
        }
        const Troupe__V1__JobList *jl = tr_client_reply_jobs(reply);
        *n += jl->n_jobs;
        after = jl->next_cursor;
        tr_msg_free(reply);
        if (after == 0) {
            return TR_OK;
        }
    }
}

// bench_logs sends Logs for job id's stream (1 stdout, 2 stderr) from
// offset: TR_OK and *reply (a ControlReply holding a LogChunk: the caller
// frees it), or tr_client_call's error: TR_ENOTSUP while trouped does not
// serve Logs. TR_EINVAL if the reply holds no LogChunk.
static inline tr_err
bench_logs(tr_client *c, uint64_t id, uint32_t stream, uint64_t offset, bool follow, tr_msg **reply)
{
    Troupe__V1__ControlRequest *req;
    tr_msg *m = bench_request_new(&req);
    Troupe__V1__Logs *l = tr_msg_arena(m, sizeof *l);
    troupe__v1__logs__init(l);
    l->id = id;
    l->stream = stream;
    l->offset = offset;
    l->follow = follow;
    req->request_case = TROUPE__V1__CONTROL_REQUEST__REQUEST_LOGS;
    req->logs = l;
    tr_err rv = tr_client_call(c, m, follow ? TR_CLIENT_TIMEOUT_MS + 30000u : 0, reply);
    if (rv == TR_OK) {
        const Troupe__V1__ControlReply *rep = tr_msg_body(*reply);
        if (rep->reply_case != TROUPE__V1__CONTROL_REPLY__REPLY_LOG) {
            tr_msg_free(*reply);
            *reply = NULL;
            return TR_EINVAL;
        }
    }
    return rv;
}

// bench_log_chunk returns the LogChunk of a bench_logs reply.
static inline const Troupe__V1__LogChunk *
bench_log_chunk(const tr_msg *reply)
{
    return ((const Troupe__V1__ControlReply *)tr_msg_body(reply))->log;
}

// ---------------------------------------------------------------------------
// Processes: a program run to its end, its stdout read (task-spooler's
// client, the bare baselines).

// bench_run_capture runs argv (argv[0] a path) with envp, stdin and stderr
// on /dev/null, reads its stdout into out (len bytes, terminated; may be
// NULL to discard it) and reaps it: its wait status, or -1 if it could not
// start.
static inline int
bench_run_capture(char *const *argv, char *const *envp, char *out, size_t len)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rv = posix_spawn(&pid, argv[0], &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (rv != 0) {
        close(p[0]);
        return -1;
    }
    size_t got = 0;
    char sink[512];
    for (;;) {
        char *dst = out != NULL && got + 1 < len ? out + got : sink;
        size_t room = out != NULL && got + 1 < len ? len - 1 - got : sizeof sink;
        ssize_t n = read(p[0], dst, room);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        if (dst != sink) {
            got += (size_t)n;
        }
    }
    if (out != NULL && len > 0) {
        out[got] = '\0';
    }
    close(p[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return st;
}

// Task-spooler (Debian's binary name tsp), isolated: its own TMPDIR (where
// it keeps each job's output), TS_SOCKET and slots, and TS_MAXFINISHED
// raised so that the list still shows every job at the end.
typedef struct bench_tsp {
    char ts_dir[80];
    char *ts_env[8];
    char ts_vars[6][160];
    char ts_bin[64];
} bench_tsp;

static inline int bench_tsp_run(bench_tsp *t, char *const *args, char *out, size_t len);

static inline void
bench__tsp_kill(void *arg)
{
    bench_tsp *t = arg;
    if (t->ts_bin[0] != '\0' && t->ts_dir[0] != '\0') {
        char *args[] = {"-K", NULL};
        bench_tsp_run(t, args, NULL, 0);
    }
}

// bench_tsp_start starts task-spooler's server with slots slots (tsp -S).
// False (with why) when tsp is not installed or does not start.
static inline bool
bench_tsp_start(bench_tsp *t, unsigned slots, uint64_t maxfinished, char *why, size_t whylen)
{
    memset(t, 0, sizeof *t);
    const char *cands[] = {"/usr/bin/tsp", "/usr/bin/ts", "/usr/local/bin/tsp"};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        if (access(cands[i], X_OK) == 0) {
            snprintf(t->ts_bin, sizeof t->ts_bin, "%s", cands[i]);
            break;
        }
    }
    if (t->ts_bin[0] == '\0') {
        snprintf(why, whylen, "task-spooler (tsp) is not installed (apt-get install task-spooler)");
        return false;
    }
    bench_tmpdir(t->ts_dir, sizeof t->ts_dir, "troupe-bench-ts");
    snprintf(t->ts_vars[0], sizeof t->ts_vars[0], "TMPDIR=%s", t->ts_dir);
    snprintf(t->ts_vars[1], sizeof t->ts_vars[1], "TS_SOCKET=%s/ts.sock", t->ts_dir);
    snprintf(t->ts_vars[2], sizeof t->ts_vars[2], "TS_SLOTS=%u", slots);
    snprintf(t->ts_vars[3], sizeof t->ts_vars[3], "TS_MAXFINISHED=%llu",
             (unsigned long long)maxfinished);
    snprintf(t->ts_vars[4], sizeof t->ts_vars[4], "PATH=/usr/bin:/bin");
    snprintf(t->ts_vars[5], sizeof t->ts_vars[5], "HOME=%s", t->ts_dir);
    for (int i = 0; i < 6; i++) {
        t->ts_env[i] = t->ts_vars[i];
    }
    t->ts_env[6] = NULL;
    bench_dwatch_own(0, t->ts_dir);
    pthread_mutex_lock(&bench__dw.dw_mu);
    bench__dw.dw_hook = bench__tsp_kill;
    bench__dw.dw_hook_arg = t;
    pthread_mutex_unlock(&bench__dw.dw_mu);
    char n[16];
    snprintf(n, sizeof n, "%u", slots);
    char *argv[] = {t->ts_bin, "-S", n, NULL};
    int st = bench_run_capture(argv, t->ts_env, NULL, 0);
    if (st != 0) {
        snprintf(why, whylen, "%s -S %u failed (status %d)", t->ts_bin, slots, st);
        return false;
    }
    return true;
}

// bench_tsp_run runs tsp with args (NULL-terminated) in t's environment,
// capturing its stdout: tsp's wait status.
static inline int
bench_tsp_run(bench_tsp *t, char *const *args, char *out, size_t len)
{
    char *argv[16] = {t->ts_bin};
    size_t n = 1;
    for (size_t i = 0; args[i] != NULL && n < 15; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    return bench_run_capture(argv, t->ts_env, out, len);
}

// bench_tsp_stop kills task-spooler's server (tsp -K) and removes its
// directory.
static inline void
bench_tsp_stop(bench_tsp *t)
{
    pthread_mutex_lock(&bench__dw.dw_mu);
    bench__dw.dw_hook = NULL;
    pthread_mutex_unlock(&bench__dw.dw_mu);
    bench__tsp_kill(t);
    bench_dwatch_drop(0, t->ts_dir);
    bench_rm_rf(t->ts_dir);
}

#endif
