// Design notes.
//
// A process actor is an actor plus up to five tasks around one shared
// record (`run`, reference-counted: the actor and each task hold one):
//   - the waiter awaits the leader's exit (tr_process_wait, through a pidfd
//     the reactor watches) under the timeout; on a timeout, a ProcessKill
//     with no signal or a stop of the actor it sends SIGTERM to the process
//     group, then SIGKILL once the grace period has passed (and writes the
//     cgroup's cgroup.kill, when there is one);
//   - two readers drain stdout and stderr into the record, up to the cap
//     (past it they keep reading and throw the bytes away, so the program
//     never blocks on a full pipe);
//   - a writer feeds the stdin bytes and closes stdin;
//   - the courier is the only one that sends to the owner, so what the
//     owner gets is in one order: ProcessStarted, the ProcessOutput chunks
//     (streaming), ProcessExit. The others mark what is due in the record
//     and wake it; it builds each message under the record's lock from what
//     is due and sends it with tr_actor_send_wait, which waits for room in
//     a bounded mailbox. Meanwhile the readers go on draining into the
//     record: the bytes the owner has not taken yet wait there (at most the
//     cap per stream, the same memory as without streaming), so a slow or
//     full owner delays its own messages and never the program. Streamed
//     chunks are cut from the record (r_sent: what the courier took), up
//     to OUT_CHUNK each, so a burst of small reads costs few messages.
// The exit is the leader's: once it is reaped (and its cgroup, if any, is
// empty and gone), the waiter gives the readers a short drain (DRAIN_MS,
// for what the program wrote just before it exited), then closes the
// record (r_closed: the counts are final, readers keep nothing more),
// marks ProcessExit due, cancels the readers and the writer, and stops the
// actor. A program that cannot be started is reported the same way, at
// once, with the error.
//
// posix_spawn runs on the thread that calls tr_proc_actor_start (about 0.1
// ms until exec): a caller on a worker blocks that worker for it. The
// daemon, which starts jobs in bursts, is expected to call from its own
// thread (or the blocking pool); moving the spawn onto the blocking pool
// here would make the start asynchronous, which the API does not need yet.
// The cgroup's mkdir runs there before the spawn, which starts the
// program inside it (the runtime's clone3(CLONE_INTO_CGROUP)); the
// prlimits run right after the spawn; only then do the writer (stdin) and
// the readers start. Between the exec and the prlimits the program runs
// without its limits (a few microseconds): neither posix_spawn nor clone3
// has an rlimit attribute.
//
// The session: the runtime's TR_PROCESS_NEW_SESSION (setsid; the leader's
// pid is its session and group id, and it has no controlling terminal), so
// kill(-pid) reaches the program's children too, unless one of them made a
// session or group of its own: the cgroup catches those. A group signal is
// sent only while the leader has not been reaped (r_reaped): after that its
// pid, and so the group id, may name another process's group. A cgroup is
// emptied when the leader has exited: cgroup.kill, then the waiter waits
// for "populated 0" through inotify on cgroup.events (the kernel notifies
// a modification there), bounded by the grace period, and rmdirs it; past
// the bound the report goes first and the rmdir follows the event.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <troupe/io.h>
#include <troupe/process.h>
#include <troupe/proc_actor.h>
#include <troupe/time.h>

#include "actor_int.h"

#define DRAIN_MS 100
#define READ_CHUNK 16384
#define OUT_CHUNK 65536

typedef struct run {
    _Atomic int r_refs;
    pthread_mutex_t r_lock; // the fields below up to r_courier
    tr_rt *r_rt;
    tr_process *r_proc;
    pid_t r_pid;
    tr_actor_addr r_owner, r_self;
    unsigned char *r_out[2];        // kept output, r_len of r_alloc bytes
    size_t r_len[2], r_alloc[2];    // (at most r_cap)
    size_t r_sent[2];               // streamed: bytes the courier took
    size_t r_total[2], r_cap;       // all bytes read
    bool r_stream;                  // stream_output
    bool r_truncated;               // a stream passed the cap
    bool r_done[2];                 // a reader reached end of file (or stopped)
    bool r_closed;                  // the counts are final: readers keep nothing more
    bool r_term;                    // SIGTERM the group, then SIGKILL (a kill request or a stop)
    bool r_killed;                  // killed on request
    bool r_reaped;                  // the leader is reaped: no group signals
    bool r_started_due;             // ProcessStarted is to be sent
    bool r_exit_due;                // ProcessExit is to be sent
    bool r_exit_queued;             // ... and has been marked due once
    bool r_have_st, r_timed_out;    // the exit's status
    tr_exit_status r_st;            //
    tr_err r_start_err;             // why it did not run as asked
    char *r_start_text;             // and in words (NULL: tr_strerror)
    tr_waker r_waiter;              // the waiter's, to wake it on a request
    tr_waker r_courier;             // the courier's, to wake it when something is due
    bool r_no_courier;              // it could not start: send directly
    tr_join r_readers[2], r_writer; // the waiter's (set before it starts)
    unsigned char *r_stdin;         // immutable from here on
    size_t r_stdin_len;
    uint64_t r_timeout_ms, r_grace_ms;
    uint64_t r_start_time; // the leader's, in clock ticks since boot
    char *r_cg;            // the cgroup directory, NULL: none (immutable once set)
    bool r_cg_gone;        // it was removed or kept (the waiter's, or the start's before it)
    bool r_cg_reuse;       // kept for the next program when found empty (cgroup_reuse)
    bool r_cg_killed;      // cgroup.kill was written: never kept (see cg_remove)
} run;

static void
run_unref(run *r)
{
    if (atomic_fetch_sub_explicit(&r->r_refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    if (r->r_proc != NULL) {
        tr_process_free(r->r_proc); // reaped already, or troupe reaps it later
    }
    free(r->r_out[0]);
    free(r->r_out[1]);
    free(r->r_stdin);
    free(r->r_start_text);
    free(r->r_cg);
    pthread_mutex_destroy(&r->r_lock);
    free(r);
}

// killpg_safe signals the group while its leader is not reaped.
static void
killpg_safe(run *r, int sig)
{
    pthread_mutex_lock(&r->r_lock);
    if (r->r_pid > 0 && !r->r_reaped) {
        kill(-r->r_pid, sig);
    }
    pthread_mutex_unlock(&r->r_lock);
}

// cg_procs opens r's cgroup.procs (its pids, one per line), or NULL (no
// cgroup, gone, or unreadable).
static FILE *
cg_procs(const run *r)
{
    if (r->r_cg == NULL || r->r_cg_gone) {
        return NULL;
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/cgroup.procs", r->r_cg);
    return fopen(path, "re");
}

// in_cgroup reports whether process pid's cgroup (v2, /proc/PID/cgroup's
// "0::" line, relative to the mount) is the last part of path.
static bool
in_cgroup(pid_t pid, const char *path)
{
    char proc[64], line[PATH_MAX + 8];
    snprintf(proc, sizeof proc, "/proc/%d/cgroup", (int)pid);
    FILE *f = fopen(proc, "re");
    if (f == NULL) {
        return false;
    }
    bool in = false;
    while (!in && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "0::", 3) != 0) {
            continue;
        }
        char *rel = line + 3;
        rel[strcspn(rel, "\n")] = '\0';
        size_t pl = strlen(path), rl = strlen(rel);
        in = rl > 1 && rl <= pl && strcmp(path + pl - rl, rel) == 0;
    }
    fclose(f);
    return in;
}

// cg_signal sends sig to every process of r's cgroup outside the leader's
// group (which killpg_safe reached): a descendant that made a session or
// group of its own. Each pid read from cgroup.procs is pinned with a pidfd
// and then checked to be in the cgroup still, so a pid reused since the
// read is never signalled. Blocks (a few small files per process).
static void
cg_signal(run *r, int sig)
{
    FILE *f = cg_procs(r);
    if (f == NULL) {
        return;
    }
    pthread_mutex_lock(&r->r_lock);
    pid_t leader = r->r_reaped ? 0 : r->r_pid;
    pthread_mutex_unlock(&r->r_lock);
    int pid;
    while (fscanf(f, "%d", &pid) == 1) {
        if (pid <= 0) {
            continue;
        }
        int fd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (fd < 0) {
            continue; // gone already
        }
        if ((leader == 0 || getpgid(pid) != leader) && in_cgroup(pid, r->r_cg)) {
            (void)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
        }
        close(fd);
    }
    fclose(f);
}

// set_error records why the program did not run as asked (the first
// reason wins), with a text for the report.
static void set_error(run *r, tr_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_error(run *r, tr_err err, const char *fmt, ...)
{
    if (r->r_start_err != TR_OK) {
        return;
    }
    r->r_start_err = err;
    if (fmt != NULL) {
        char text[PATH_MAX + 128];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        r->r_start_text = tra_strdup(text);
    }
}

// ---------------------------------------------------------------------------
// /proc/PID/stat.

// parse_start_time reads field 22 (starttime) of a /proc/PID/stat line.
// Field 2 (comm) is in parentheses and may itself hold spaces and ')', so
// the fields are counted from the last ')'.
static bool
parse_start_time(const char *buf, size_t len, uint64_t *out)
{
    const char *p = memrchr(buf, ')', len);
    if (p == NULL) {
        return false;
    }
    const char *end = buf + len;
    int field = 2;
    for (p++; p < end && field < 22; p++) {
        if (*p == ' ') {
            field++;
        }
    }
    uint64_t v = 0;
    const char *digits = p;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10) {
            return false;
        }
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (field != 22 || p == digits || (p < end && *p != ' ' && *p != '\n')) {
        return false;
    }
    *out = v;
    return true;
}

tr_err
tr_proc_start_time(pid_t pid, uint64_t *out)
{
    if (pid <= 0 || out == NULL) {
        return TR_EINVAL;
    }
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT || errno == ESRCH ? TR_ENOTFOUND : TR_EIO;
    }
    ssize_t n;
    do {
        n = read(fd, buf, sizeof buf); // one read: the kernel makes the line at once
    } while (n < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    if (n < 0) {
        return e == ESRCH ? TR_ENOTFOUND : TR_EIO;
    }
    return parse_start_time(buf, (size_t)n, out) ? TR_OK : TR_EIO;
}

// ---------------------------------------------------------------------------
// The cgroup. Small reads and writes of cgroupfs files: they do not block.

static _Atomic uint64_t g_cg_seq; // names: one sequence per process

static int
cg_write(const run *r, const char *file, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", r->r_cg, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno;
    }
    int e = write(fd, text, strlen(text)) < 0 ? errno : 0;
    close(fd);
    return e;
}

// Cgroups kept for reuse (cgroup_reuse): full paths, below any parent;
// the last kept is the first taken.
enum { CG_KEEP_MAX = 64 };
static pthread_mutex_t g_keep_mu = PTHREAD_MUTEX_INITIALIZER;
static char *g_keep[CG_KEEP_MAX];
static size_t g_nkeep;

// below reports whether path is a direct child of parent.
static bool
below(const char *path, const char *parent)
{
    size_t n = strlen(parent);
    return strncmp(path, parent, n) == 0 && path[n] == '/' && strchr(path + n + 1, '/') == NULL;
}

// keep_take takes a kept cgroup below parent, or returns NULL.
static char *
keep_take(const char *parent)
{
    char *p = NULL;
    pthread_mutex_lock(&g_keep_mu);
    for (size_t i = g_nkeep; i-- > 0;) {
        if (below(g_keep[i], parent)) {
            p = g_keep[i];
            g_keep[i] = g_keep[--g_nkeep];
            break;
        }
    }
    pthread_mutex_unlock(&g_keep_mu);
    return p;
}

// keep_put keeps path (a copy) for reuse: false when the pool is full.
static bool
keep_put(const char *path)
{
    pthread_mutex_lock(&g_keep_mu);
    bool ok = g_nkeep < CG_KEEP_MAX;
    if (ok) {
        g_keep[g_nkeep++] = tra_strdup(path);
    }
    pthread_mutex_unlock(&g_keep_mu);
    return ok;
}

void
tr_proc_cgroup_release(const char *parent)
{
    pthread_mutex_lock(&g_keep_mu);
    for (size_t i = g_nkeep; i-- > 0;) {
        if (parent == NULL || below(g_keep[i], parent)) {
            rmdir(g_keep[i]);
            free(g_keep[i]);
            g_keep[i] = g_keep[--g_nkeep];
        }
    }
    pthread_mutex_unlock(&g_keep_mu);
}

// cg_make makes the program's cgroup below parent, or takes a kept one.
static tr_err
cg_make(run *r, const char *parent)
{
    char *kept;
    while (r->r_cg_reuse && (kept = keep_take(parent)) != NULL) {
        // Still there (EEXIST; made again if someone removed it): the
        // lookup costs far less than a new cgroup.
        if (mkdir(kept, 0755) == 0 || errno == EEXIST) {
            r->r_cg = kept;
            return TR_OK;
        }
        free(kept);
    }
    char path[PATH_MAX];
    for (int tries = 0; tries < 16; tries++) {
        uint64_t n = atomic_fetch_add_explicit(&g_cg_seq, 1, memory_order_relaxed) + 1;
        int len = snprintf(path, sizeof path, "%s/troupe-%d-%llu", parent, (int)getpid(),
                           (unsigned long long)n);
        if (len < 0 || (size_t)len >= sizeof path) {
            set_error(r, TR_EINVAL, "cgroup: %s: name too long", parent);
            return TR_EINVAL;
        }
        if (mkdir(path, 0755) == 0) {
            r->r_cg = tra_strdup(path);
            return TR_OK;
        }
        if (errno != EEXIST) { // EEXIST: left behind by an earlier process of our pid
            int e = errno;
            set_error(r, tr_err_from_errno(e), "cgroup: mkdir %s: %s", path, strerror(e));
            return r->r_start_err;
        }
    }
    set_error(r, TR_EEXIST, "cgroup: no free name below %s", parent);
    return TR_EEXIST;
}

// cg_kill kills everything in the cgroup: cgroup.kill (Linux 5.14), else
// SIGKILL to each pid cgroup.procs lists (a fork racing with it is caught
// at the next cgroup.events notification, which re-kills).
static void
cg_kill(run *r)
{
    if (r->r_cg == NULL || r->r_cg_gone) {
        return;
    }
    r->r_cg_killed = true;
    if (cg_write(r, "cgroup.kill", "1") != ENOENT) {
        return;
    }
    FILE *f = cg_procs(r);
    if (f == NULL) {
        return;
    }
    int pid;
    while (fscanf(f, "%d", &pid) == 1) {
        if (pid > 0) {
            kill(pid, SIGKILL);
        }
    }
    fclose(f);
}

// cg_populated reports whether a process is left in the cgroup (false once
// the directory is gone).
static bool
cg_populated(const run *r)
{
    char path[PATH_MAX], buf[256];
    snprintf(path, sizeof path, "%s/cgroup.events", r->r_cg);
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
    return strstr(buf, "populated 1") != NULL;
}

// cg_remove removes the cgroup, or keeps it for reuse when it was just
// seen empty (empty), reuse was asked for, and it was never killed: on
// Linux 6.18 a process cloned into a cgroup (CLONE_INTO_CGROUP) whose
// cgroup.kill was ever written is killed at once (the kill count is
// compared with the forking process's cgroup's), so such a cgroup is not
// used again.
static void
cg_remove(run *r, bool empty)
{
    if (r->r_cg == NULL || r->r_cg_gone) {
        return;
    }
    bool keep = empty && r->r_cg_reuse && !r->r_cg_killed;
    if ((keep && keep_put(r->r_cg)) || rmdir(r->r_cg) == 0 || errno == ENOENT) {
        r->r_cg_gone = true;
    }
}

// ---------------------------------------------------------------------------
// The courier: the owner's messages, in order (see the design notes).

// next_msg builds the next message that is due, or returns NULL; *last
// says it is the ProcessExit. Under r_lock.
static tr_msg *
next_msg(run *r, bool *last)
{
    tr_msg *m;
    if (r->r_started_due) {
        r->r_started_due = false;
        Troupe__V1__ProcessStarted *s;
        m = tr_msg_new(&troupe__v1__process_started__descriptor,
                       64 + (r->r_cg != NULL ? strlen(r->r_cg) + 1 : 0), (void **)&s);
        s->pid = (int32_t)r->r_pid;
        s->start_time = r->r_start_time;
        s->cgroup = r->r_cg != NULL ? tr_msg_strdup(m, r->r_cg) : "";
        return m;
    }
    for (size_t i = 0; r->r_stream && i < 2; i++) {
        size_t n = r->r_len[i] - r->r_sent[i];
        if (n == 0) {
            continue;
        }
        n = n < OUT_CHUNK ? n : OUT_CHUNK;
        Troupe__V1__ProcessOutput *o;
        m = tr_msg_new(&troupe__v1__process_output__descriptor, n + 64, (void **)&o);
        o->stream = (int32_t)i + 1;
        o->offset = r->r_sent[i];
        o->data.data = tr_msg_memdup(m, r->r_out[i] + r->r_sent[i], n);
        o->data.len = n;
        r->r_sent[i] += n;
        return m;
    }
    if (!r->r_exit_due) {
        return NULL;
    }
    r->r_exit_due = false;
    *last = true;
    Troupe__V1__ProcessExit *x;
    bool bytes = !r->r_stream;
    m = tr_msg_new(&troupe__v1__process_exit__descriptor,
                   (bytes ? r->r_len[0] + r->r_len[1] : 0) + 256, (void **)&x);
    x->pid = (int32_t)r->r_pid;
    if (r->r_have_st) {
        x->exited = r->r_st.code >= 0;
        x->code = r->r_st.code;
        x->signal = r->r_st.signal;
    }
    x->timed_out = r->r_timed_out;
    x->killed = r->r_killed;
    if (bytes) {
        x->stdout.data = tr_msg_memdup(m, r->r_out[0], r->r_len[0]);
        x->stdout.len = r->r_len[0];
        x->stderr.data = tr_msg_memdup(m, r->r_out[1], r->r_len[1]);
        x->stderr.len = r->r_len[1];
    }
    x->stdout_bytes = r->r_total[0];
    x->stderr_bytes = r->r_total[1];
    x->truncated = r->r_truncated;
    if (r->r_start_err != TR_OK) {
        Troupe__V1__Reason *why = tr_msg_arena(m, sizeof *why);
        troupe__v1__reason__init(why);
        why->code = (int32_t)r->r_start_err;
        why->text = tr_msg_strdup(m, r->r_start_text != NULL ? r->r_start_text
                                                             : tr_strerror(r->r_start_err));
        x->error = why;
    }
    return m;
}

// post tells the courier something is due. Without a courier (a shutdown
// refused it) the messages go at once, best effort: nothing waits for room.
// Called with r_lock held, which it releases.
static void
post_unlock(run *r)
{
    if (!r->r_no_courier) {
        tr_waker w = r->r_courier;
        pthread_mutex_unlock(&r->r_lock);
        tr_wake(w);
        return;
    }
    bool last = false;
    tr_msg *m;
    while ((m = next_msg(r, &last)) != NULL) {
        tr_msg_set_reply_to(m, r->r_self);
        if (tr_actor_send(NULL, r->r_owner, m) != TR_OK) {
            tr_msg_free(m);
        }
    }
    pthread_mutex_unlock(&r->r_lock);
}

typedef struct courier {
    run *c_run;
    tr_msg *c_msg; // being sent (owned until the send takes it)
    bool c_last;   // c_msg is the ProcessExit
    tr_actor_op c_op;
} courier;

static tr_poll
courier_poll(void *st, tr_cx *cx)
{
    courier *c = st;
    run *r = c->c_run;
    for (;;) {
        if (c->c_msg == NULL) {
            pthread_mutex_lock(&r->r_lock);
            r->r_courier = tr_cx_waker(cx);
            c->c_msg = next_msg(r, &c->c_last);
            pthread_mutex_unlock(&r->r_lock);
            if (c->c_msg == NULL) {
                return TR_PENDING;
            }
            tr_msg_set_reply_to(c->c_msg, r->r_self);
        }
        tr_err err;
        if (tr_actor_send_wait(r->r_owner, cx, &c->c_op, c->c_msg, &err) == TR_PENDING) {
            return TR_PENDING;
        }
        if (err != TR_OK) {
            tr_msg_free(c->c_msg); // the owner is gone
        }
        c->c_msg = NULL;
        if (c->c_last) {
            return TR_READY;
        }
    }
}

static void
courier_drop(void *st)
{
    courier *c = st;
    if (c->c_msg != NULL) { // cancelled (a shutdown) while waiting for room
        tr_actor_op_abandon(&c->c_op);
        tr_msg_free(c->c_msg);
    }
    run_unref(c->c_run);
}

static const tr_task_spec courier_spec = {"tr.proc.courier", courier_poll, courier_drop,
                                          sizeof(courier)};

// ---------------------------------------------------------------------------
// Readers and the writer.

// keep_output appends what a reader read, up to the cap. Under r_lock.
static void
keep_output(run *r, size_t i, const unsigned char *p, size_t n)
{
    r->r_total[i] += n;
    size_t room = r->r_cap - r->r_len[i];
    size_t keep = n < room ? n : room;
    if (keep < n) {
        r->r_truncated = true; // drained, not kept
    }
    if (keep == 0) {
        return;
    }
    if (r->r_len[i] + keep > r->r_alloc[i]) {
        // Doubling, from 4 KiB, up to the cap: most programs write little.
        size_t want = r->r_alloc[i] * 2;
        want = want > r->r_len[i] + keep ? want : r->r_len[i] + keep;
        want = want > 4096 ? want : 4096;
        want = want < r->r_cap ? want : r->r_cap;
        unsigned char *out = realloc(r->r_out[i], want);
        if (out == NULL) {
            tra_panic("proc_actor: out of memory (%zu bytes of output)", want);
        }
        r->r_out[i] = out;
        r->r_alloc[i] = want;
    }
    memcpy(r->r_out[i] + r->r_len[i], p, keep);
    r->r_len[i] += keep;
}

typedef struct reader {
    run *rd_run;
    tr_io *rd_io;
    int rd_fd; // 0: stdout, 1: stderr (index into the record)
    unsigned char rd_buf[READ_CHUNK];
} reader;

static tr_poll
reader_poll(void *st, tr_cx *cx)
{
    reader *rd = st;
    run *r = rd->rd_run;
    size_t i = (size_t)rd->rd_fd;
    for (;;) {
        size_t n = 0;
        tr_err err = TR_OK;
        if (tr_read(rd->rd_io, cx, rd->rd_buf, sizeof rd->rd_buf, &n, &err) == TR_PENDING) {
            return TR_PENDING;
        }
        pthread_mutex_lock(&r->r_lock);
        if (err != TR_OK || n == 0 || r->r_closed) {
            r->r_done[i] = true;
            tr_waker w = r->r_waiter;
            pthread_mutex_unlock(&r->r_lock);
            tr_wake(w);
            return TR_READY;
        }
        keep_output(r, i, rd->rd_buf, n);
        if (r->r_stream) {
            post_unlock(r);
        } else {
            pthread_mutex_unlock(&r->r_lock);
        }
    }
}

static void
reader_drop(void *st)
{
    reader *rd = st;
    tr_io_close(rd->rd_io);
    run_unref(rd->rd_run);
}

static const tr_task_spec reader_spec = {"tr.proc.reader", reader_poll, reader_drop,
                                         sizeof(reader)};

typedef struct writer {
    run *wr_run;
    tr_io *wr_io;
    tr_io_op wr_op;
} writer;

static tr_poll
writer_poll(void *st, tr_cx *cx)
{
    writer *wr = st;
    run *r = wr->wr_run;
    size_t n;
    tr_err err;
    if (tr_write_all(wr->wr_io, cx, &wr->wr_op, r->r_stdin, r->r_stdin_len, &n, &err) ==
        TR_PENDING) {
        return TR_PENDING;
    }
    return TR_READY; // a program that closed its stdin early: EPIPE, nothing to do
}

static void
writer_drop(void *st)
{
    writer *wr = st;
    tr_io_close(wr->wr_io); // the program sees end of file
    run_unref(wr->wr_run);
}

static const tr_task_spec writer_spec = {"tr.proc.writer", writer_poll, writer_drop,
                                         sizeof(writer)};

// ---------------------------------------------------------------------------
// The waiter.

enum { PH_RUN, PH_GRACE, PH_KILLED, PH_REAPED, PH_CGROUP, PH_DRAIN, PH_LATE, PH_DONE };

typedef struct waiter {
    run *w_run;
    int w_phase;
    bool w_timed_out;
    bool w_late;  // the cgroup was not empty in time: rmdir after the report
    tr_err w_err; // the wait's
    tr_timeout w_to;
    tr_timer w_drain;
    tr_exit_status w_st;
    tr_io *w_ino;        // inotify on cgroup.events
    uint64_t w_deadline; // for the cgroup to empty
    char w_ev[sizeof(struct inotify_event) + NAME_MAX + 1]
        __attribute__((aligned(__alignof__(struct inotify_event))));
} waiter;

// hard_kill is the end of the grace period: SIGKILL to the group and to
// all of the cgroup.
static void
hard_kill(run *r)
{
    killpg_safe(r, SIGKILL);
    cg_kill(r);
}

// watch_cgroup opens an inotify watch of cgroup.events (before the first
// look at it, so no change is missed).
static bool
watch_cgroup(waiter *w)
{
    run *r = w->w_run;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/cgroup.events", r->r_cg);
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    if (inotify_add_watch(fd, path, IN_MODIFY) < 0 ||
        tr_io_open(r->r_rt, fd, 0, &w->w_ino) != TR_OK) {
        close(fd);
        return false;
    }
    return true;
}

// await_empty waits until the cgroup is empty, then removes it: TR_READY
// (also when the deadline, if any, passed: *late then).
static tr_poll
await_empty(waiter *w, tr_cx *cx, bool deadline, bool *late)
{
    run *r = w->w_run;
    *late = false;
    while (cg_populated(r)) {
        size_t n = 0;
        tr_err e = TR_OK;
        bool expired = false;
        tr_poll p = tr_read(w->w_ino, cx, w->w_ev, sizeof w->w_ev, &n, &e);
        if (deadline) {
            p = tr_timeout_poll_until(&w->w_to, cx, w->w_deadline, p, &expired);
        }
        if (p == TR_PENDING) {
            return TR_PENDING;
        }
        if (expired || e != TR_OK) {
            *late = expired;
            return TR_READY; // past the bound, or the watch broke: rmdir may fail
        }
        cg_kill(r); // without cgroup.kill: a pid forked meanwhile
    }
    cg_remove(r, true);
    return TR_READY;
}

// finish closes the record and marks ProcessExit due.
static void
finish(waiter *w)
{
    run *r = w->w_run;
    pthread_mutex_lock(&r->r_lock);
    r->r_closed = true;
    r->r_have_st = true;
    r->r_st = w->w_err == TR_OK ? w->w_st : (tr_exit_status){-1, 0, false};
    r->r_timed_out = w->w_timed_out;
    r->r_exit_due = true;
    r->r_exit_queued = true;
    post_unlock(r);
    for (int i = 0; i < 2; i++) {
        if (r->r_readers[i].j_key != 0) {
            tr_task_abort(&r->r_readers[i]);
            tr_join_release(&r->r_readers[i]);
        }
    }
    if (r->r_writer.j_key != 0) {
        tr_task_abort(&r->r_writer);
        tr_join_release(&r->r_writer);
    }
    tr_actor_stop_other(r->r_self, TR_OK, NULL);
}

static tr_poll
waiter_poll(void *st, tr_cx *cx)
{
    waiter *w = st;
    run *r = w->w_run;
    pthread_mutex_lock(&r->r_lock);
    r->r_waiter = tr_cx_waker(cx);
    bool term = r->r_term;
    pthread_mutex_unlock(&r->r_lock);
    bool expired = false;
    for (;;) {
        switch (w->w_phase) {
        case PH_RUN:
            if (term) {
                tr_timeout_abandon(&w->w_to);
                killpg_safe(r, SIGTERM);
                w->w_phase = PH_GRACE;
                continue;
            }
            if (r->r_timeout_ms == 0) {
                if (tr_process_wait(r->r_proc, cx, &w->w_st, &w->w_err) == TR_PENDING) {
                    return TR_PENDING;
                }
            } else if (tr_timeout_poll(&w->w_to, cx, r->r_timeout_ms * TR_NS_PER_MS,
                                       tr_process_wait(r->r_proc, cx, &w->w_st, &w->w_err),
                                       &expired) == TR_PENDING) {
                return TR_PENDING;
            }
            if (expired) {
                w->w_timed_out = true;
                killpg_safe(r, SIGTERM);
                w->w_phase = PH_GRACE;
                continue;
            }
            w->w_phase = PH_REAPED;
            continue;
        case PH_GRACE:
            if (tr_timeout_poll(&w->w_to, cx, r->r_grace_ms * TR_NS_PER_MS,
                                tr_process_wait(r->r_proc, cx, &w->w_st, &w->w_err),
                                &expired) == TR_PENDING) {
                return TR_PENDING;
            }
            if (expired) {
                hard_kill(r);
                w->w_phase = PH_KILLED;
                continue;
            }
            w->w_phase = PH_REAPED;
            continue;
        case PH_KILLED:
            if (tr_process_wait(r->r_proc, cx, &w->w_st, &w->w_err) == TR_PENDING) {
                return TR_PENDING;
            }
            w->w_phase = PH_REAPED;
            continue;
        case PH_REAPED:
            pthread_mutex_lock(&r->r_lock);
            r->r_reaped = true;
            pthread_mutex_unlock(&r->r_lock);
            w->w_phase = PH_DRAIN;
            if (r->r_cg != NULL) {
                // The job ends with its leader: what is left in its cgroup
                // (a grandchild that made a session of its own) goes too.
                // Empty already (the common case: nothing outlived the
                // leader): no kill (which would spoil it for reuse, see
                // cg_remove) and no watch. Closing an inotify instance
                // waits for an SRCU grace period in the kernel,
                // milliseconds on a worker, so it is made only for a
                // cgroup that still has processes dying in it.
                bool left = cg_populated(r);
                if (left) {
                    cg_kill(r);
                    left = cg_populated(r);
                }
                if (!left) {
                    cg_remove(r, true);
                } else if (watch_cgroup(w)) {
                    w->w_deadline = tr_now(r->r_rt) + r->r_grace_ms * TR_NS_PER_MS;
                    w->w_phase = PH_CGROUP;
                } else {
                    cg_remove(r, false); // no inotify: one try, which fails while they die
                }
            }
            continue;
        case PH_CGROUP:
            if (await_empty(w, cx, true, &w->w_late) == TR_PENDING) {
                return TR_PENDING;
            }
            w->w_phase = PH_DRAIN;
            continue;
        case PH_DRAIN: {
            // The leader is gone: what is already in the pipes is read,
            // for at most DRAIN_MS (a grandchild may hold them for long).
            pthread_mutex_lock(&r->r_lock);
            bool drained = r->r_done[0] && r->r_done[1];
            pthread_mutex_unlock(&r->r_lock);
            if (!drained && tr_sleep(&w->w_drain, cx, DRAIN_MS * TR_NS_PER_MS) == TR_PENDING) {
                return TR_PENDING;
            }
            tr_timer_abandon(&w->w_drain);
            finish(w);
            w->w_phase = w->w_late ? PH_LATE : PH_DONE;
            continue;
        }
        case PH_LATE: {
            bool late;
            if (await_empty(w, cx, false, &late) == TR_PENDING) {
                return TR_PENDING;
            }
            w->w_phase = PH_DONE;
            continue;
        }
        default:
            return TR_READY;
        }
    }
}

static void
waiter_drop(void *st)
{
    waiter *w = st;
    run *r = w->w_run;
    tr_timeout_abandon(&w->w_to);
    tr_timer_abandon(&w->w_drain);
    if (w->w_phase != PH_DONE) {
        // Cancelled (a shutdown) before the end: nothing may outlive the
        // runtime. The cgroup's rmdir fails while its processes die.
        hard_kill(r);
        cg_remove(r, false);
        for (int i = 0; i < 2; i++) {
            tr_join_release(&r->r_readers[i]);
        }
        tr_join_release(&r->r_writer);
    }
    if (w->w_ino != NULL) {
        tr_io_close(w->w_ino);
    }
    run_unref(r);
}

static const tr_task_spec waiter_spec = {"tr.proc.waiter", waiter_poll, waiter_drop,
                                         sizeof(waiter)};

// ---------------------------------------------------------------------------
// The actor.

typedef struct proc_state {
    run *p_run;
} proc_state;

static void
request_term(run *r, bool killed)
{
    pthread_mutex_lock(&r->r_lock);
    r->r_term = true;
    r->r_killed = r->r_killed || killed;
    tr_waker w = r->r_waiter;
    pthread_mutex_unlock(&r->r_lock);
    tr_wake(w);
}

static tr_err
proc_init(tr_actor *self, void *state, void *arg)
{
    run *r = arg;
    ((proc_state *)state)->p_run = r;
    r->r_self = tr_actor_self(self);
    return TR_OK;
}

static void
proc_receive(tr_actor *self, void *state, tr_msg *m)
{
    (void)self;
    run *r = ((proc_state *)state)->p_run;
    if (tr_msg_is(m, &troupe__v1__process_kill__descriptor)) {
        int sig = ((Troupe__V1__ProcessKill *)tr_msg_body(m))->signal;
        if (sig == 0) {
            request_term(r, true);
        } else if (sig > 0 && sig < 65) {
            killpg_safe(r, sig);
            cg_signal(r, sig);
        }
    }
}

static void
proc_stopped(tr_actor *self, void *state, tr_err reason)
{
    (void)self;
    (void)reason;
    run *r = ((proc_state *)state)->p_run;
    pthread_mutex_lock(&r->r_lock);
    bool reported = r->r_exit_queued;
    pthread_mutex_unlock(&r->r_lock);
    if (!reported) {
        request_term(r, true); // stopped from outside: the group goes too
    }
    run_unref(r);
}

static const tr_actor_spec proc_spec = {
    .name = "tr.process",
    .size = sizeof(proc_state),
    .init = proc_init,
    .receive = proc_receive,
    .stopped = proc_stopped,
};

// start_task starts one of the program's tasks. Local (tr_spawn_local):
// they are short, and the first thing each does is wait for the program,
// so waking an idle worker to take one is only a cross-CPU wake per task
// (measured: 1.6 of trouped's 4.6 wakes of another thread per job).
static tr_err
start_task(run *r, const tr_task_spec *spec, void *init, tr_join *j)
{
    atomic_fetch_add_explicit(&r->r_refs, 1, memory_order_relaxed);
    tr_err err = tr_spawn_local(r->r_rt, spec, NULL, init, j);
    if (err == TR_EINVAL || err == TR_EEXHAUSTED || err == TR_ESHUTDOWN) {
        run_unref(r); // init never ran: the task holds nothing
    }
    return err;
}

// check_rlimits refuses a request the kernel would refuse for anyone.
static tr_err
check_rlimits(run *r, const tr_proc_opts *o)
{
    for (size_t i = 0; i < o->nrlimits; i++) {
        const tr_proc_rlimit *l = &o->rlimits[i];
        if (l->resource < 0 || l->resource >= RLIMIT_NLIMITS) {
            set_error(r, TR_EINVAL, "rlimit: no resource %d", l->resource);
            return TR_EINVAL;
        }
        if (l->soft > l->hard) {
            set_error(r, TR_EINVAL, "rlimit %d: soft limit above the hard limit", l->resource);
            return TR_EINVAL;
        }
    }
    return TR_OK;
}

// configure puts the spawned leader under its limits.
static tr_err
configure(run *r, const tr_proc_opts *o)
{
    // The cgroup: the spawn started it there (tr_process_opts.cgroup).
    for (size_t i = 0; i < o->nrlimits; i++) {
        const tr_proc_rlimit *l = &o->rlimits[i];
        struct rlimit rl = {.rlim_cur = (rlim_t)l->soft, .rlim_max = (rlim_t)l->hard};
        if (prlimit(r->r_pid, (__rlimit_resource_t)l->resource, &rl, NULL) != 0) {
            int e = errno;
            set_error(r, tr_err_from_errno(e), "prlimit %d: %s", l->resource, strerror(e));
            return r->r_start_err;
        }
    }
    return TR_OK;
}

// start_io starts the readers and, with stdin bytes, the writer.
static void
start_io(run *r)
{
    for (int i = 0; i < 2; i++) {
        reader rd = {.rd_run = r, .rd_io = tr_process_take_stdio(r->r_proc, i + 1), .rd_fd = i};
        tr_err e = start_task(r, &reader_spec, &rd, &r->r_readers[i]);
        if (e != TR_OK) {
            r->r_done[i] = true;
            if (e != TR_ECANCELED) {
                tr_io_close(rd.rd_io); // its drop never ran
            }
        }
    }
    if (r->r_stdin_len > 0) {
        writer wr = {.wr_run = r, .wr_io = tr_process_take_stdio(r->r_proc, 0)};
        tr_err e = start_task(r, &writer_spec, &wr, &r->r_writer);
        if (e != TR_OK && e != TR_ECANCELED) {
            tr_io_close(wr.wr_io);
        }
    }
}

tr_err
tr_proc_actor_start(tr_rt *rt, const tr_proc_opts *o, tr_actor_addr owner, tr_actor_addr *addr)
{
    if (rt == NULL || o == NULL || o->argv == NULL || o->argv[0] == NULL ||
        o->nrlimits > TR_PROC_RLIMITS_MAX || (o->nrlimits > 0 && o->rlimits == NULL)) {
        return TR_EINVAL;
    }
    run *r = tra_zalloc(sizeof *r);
    atomic_init(&r->r_refs, 2); // the actor's, and this call's until it returns
    pthread_mutex_init(&r->r_lock, NULL);
    r->r_rt = rt;
    r->r_owner = owner;
    r->r_cap = o->output_cap != 0 ? o->output_cap : TR_PROC_OUTPUT_CAP_DEFAULT;
    r->r_stream = o->stream_output;
    r->r_timeout_ms = o->timeout_ms;
    r->r_grace_ms = o->kill_grace_ms != 0 ? o->kill_grace_ms : 2000;
    if (o->stdin_len > 0) {
        r->r_stdin = tra_zalloc(o->stdin_len);
        memcpy(r->r_stdin, o->stdin_data, o->stdin_len);
        r->r_stdin_len = o->stdin_len;
    }
    tr_actor_addr me;
    // Local: the owner messages it, and it mostly waits for its program.
    tr_actor_opts ao = {.flags = TR_ACTOR_LOCAL};
    tr_err err = tr_actor_spawn(rt, &proc_spec, r, &ao, &me);
    if (err != TR_OK) {
        run_unref(r);
        run_unref(r);
        return err;
    }
    courier c = {.c_run = r};
    r->r_no_courier = start_task(r, &courier_spec, &c, NULL) != TR_OK;
    r->r_cg_reuse = o->cgroup_reuse;
    if (check_rlimits(r, o) == TR_OK && o->cgroup_parent != NULL) {
        cg_make(r, o->cgroup_parent);
    }
    if (r->r_start_err == TR_OK) {
        tr_process_opts po = {
            .argv = o->argv,
            .envp = o->envp,
            .cwd = o->cwd,
            .stdio = {o->stdin_len > 0 ? TR_STDIO_PIPE : TR_STDIO_NULL, TR_STDIO_PIPE,
                      TR_STDIO_PIPE},
            .flags = TR_PROCESS_NEW_SESSION | (o->search_path ? TR_PROCESS_SEARCH_PATH : 0u),
            .cgroup = r->r_cg,
        };
        err = tr_process_spawn(rt, &po, &r->r_proc);
        if (err != TR_OK) {
            r->r_proc = NULL;
            set_error(r, err, NULL);
        }
    }
    if (r->r_proc == NULL) {
        cg_remove(r, !cg_populated(r)); // nothing ran in it, unless a failed exec's child
        pthread_mutex_lock(&r->r_lock);
        r->r_closed = r->r_done[0] = r->r_done[1] = true;
        r->r_exit_due = r->r_exit_queued = true; // exactly one ProcessExit, with the error
        post_unlock(r);
        tr_actor_stop_other(me, TR_OK, NULL);
    } else {
        r->r_pid = tr_process_pid(r->r_proc);
        if (tr_proc_start_time(r->r_pid, &r->r_start_time) != TR_OK) {
            r->r_start_time = 0; // no /proc: the report says 0
        }
        waiter w = {.w_run = r};
        if (configure(r, o) != TR_OK) {
            // Nothing runs half-configured: the group goes, unread.
            hard_kill(r);
            r->r_done[0] = r->r_done[1] = true;
            w.w_phase = PH_KILLED;
        } else {
            pthread_mutex_lock(&r->r_lock);
            r->r_started_due = true;
            post_unlock(r);
            start_io(r);
        }
        if (start_task(r, &waiter_spec, &w, NULL) != TR_OK) {
            hard_kill(r); // a shutdown began: nothing waits for it
        }
    }
    if (addr != NULL) {
        *addr = me;
    }
    run_unref(r);
    return TR_OK;
}
