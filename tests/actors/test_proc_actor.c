// test_proc_actor.c: external programs as actors (troupe/proc_actor.h):
// exit codes, captured output, stdin, the cap, timeouts that kill the whole
// group, a program that cannot start, an exit while a grandchild holds the
// pipes, a stop of the actor, the leader's own session, ProcessStarted and
// start times, rlimits, streamed output, a slow owner, and cgroups.
#include "actors/actor_util.h"

#include <mntent.h>
#include <poll.h>
#include <signal.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <troupe/proc_actor.h>

// The owner: keeps a copy of what it gets: the one ProcessExit it
// expects, ProcessStarted, and the streamed chunks (concatenated per
// stream), checking their order (Started first, Exit last) and offsets.
typedef struct outcome {
    tu_event ev;      // ProcessExit arrived
    tu_event started; // ProcessStarted arrived
    unsigned exits, starts;
    bool bad_order;            // a message before ProcessStarted or after ProcessExit
    bool bad_offset;           // a chunk whose offset is not what came before it
    Troupe__V1__ProcessExit x; // scalars
    char out[4096], err[4096];
    size_t out_len, err_len;
    tr_err error;
    int s_pid; // ProcessStarted
    uint64_t s_start;
    char s_cgroup[512];
    unsigned char *st[2]; // streamed stdout and stderr
    size_t st_len[2], st_cap[2];
    unsigned chunks[2];
    tu_event *gate; // when not NULL: ProcessStarted's receive waits for it (a slow owner)
} outcome;

static tr_err
owner_init(tr_actor *self, void *state, void *arg)
{
    (void)self;
    *(outcome **)state = arg;
    return TR_OK;
}

static void
copy_bytes(char *dst, size_t cap, size_t *len, ProtobufCBinaryData b)
{
    *len = b.len < cap ? b.len : cap - 1;
    if (*len > 0) {
        memcpy(dst, b.data, *len);
    }
    dst[*len] = '\0';
}

static void
owner_chunk(outcome *o, const Troupe__V1__ProcessOutput *c)
{
    if (c->stream != 1 && c->stream != 2) {
        o->bad_offset = true;
        return;
    }
    size_t i = (size_t)c->stream - 1;
    o->bad_offset |= c->offset != o->st_len[i] || c->data.len == 0;
    if (o->st_len[i] + c->data.len > o->st_cap[i]) {
        o->st_cap[i] = (o->st_len[i] + c->data.len) * 2;
        o->st[i] = realloc(o->st[i], o->st_cap[i]);
    }
    memcpy(o->st[i] + o->st_len[i], c->data.data, c->data.len);
    o->st_len[i] += c->data.len;
    o->chunks[i]++;
}

static void
owner_receive(tr_actor *self, void *state, tr_msg *m)
{
    (void)self;
    outcome *o = *(outcome **)state;
    o->bad_order |= o->exits > 0;
    if (tr_msg_is(m, &troupe__v1__process_started__descriptor)) {
        const Troupe__V1__ProcessStarted *s = tr_msg_body(m);
        o->bad_order |= o->starts > 0;
        o->s_pid = s->pid;
        o->s_start = s->start_time;
        snprintf(o->s_cgroup, sizeof o->s_cgroup, "%s", s->cgroup);
        o->starts++;
        tu_event_set(&o->started);
        if (o->gate != NULL) { // a slow owner: it blocks a worker (a test only)
            TU_CHECK(tu_event_wait(o->gate, TU_WAIT_MS));
        }
        return;
    }
    o->bad_order |= o->starts == 0 && !tr_msg_is(m, &troupe__v1__process_exit__descriptor);
    if (tr_msg_is(m, &troupe__v1__process_output__descriptor)) {
        owner_chunk(o, tr_msg_body(m));
        return;
    }
    if (!tr_msg_is(m, &troupe__v1__process_exit__descriptor)) {
        return;
    }
    const Troupe__V1__ProcessExit *x = tr_msg_body(m);
    o->x = *x;
    copy_bytes(o->out, sizeof o->out, &o->out_len, x->stdout);
    copy_bytes(o->err, sizeof o->err, &o->err_len, x->stderr);
    o->error = tr_msg_reason_err(x->error);
    o->exits++;
    tu_event_set(&o->ev);
}

static const tr_actor_spec owner_spec = {
    .name = "owner", .size = sizeof(outcome *), .init = owner_init, .receive = owner_receive};

static void
outcome_init(outcome *o)
{
    memset(o, 0, sizeof *o);
    tu_event_init(&o->ev);
    tu_event_init(&o->started);
}

static void
outcome_fini(outcome *o)
{
    tu_event_destroy(&o->ev);
    tu_event_destroy(&o->started);
    free(o->st[0]);
    free(o->st[1]);
}

// run_prog_bounded starts po for an owner whose mailbox holds bound
// messages (0: unbounded); o must be initialised (outcome_init).
static tr_actor_addr
run_prog_bounded(bg *b, outcome *o, const tr_proc_opts *po, uint32_t bound)
{
    tr_actor_addr owner, p = TR_ACTOR_NONE;
    tr_actor_opts ao = {.bound = bound};
    assert_int_equal(tr_actor_spawn(b->rt, &owner_spec, o, &ao, &owner), TR_OK);
    assert_int_equal(tr_proc_actor_start(b->rt, po, owner, &p), TR_OK);
    return p;
}

static tr_actor_addr
run_prog(bg *b, outcome *o, const tr_proc_opts *po)
{
    outcome_init(o);
    return run_prog_bounded(b, o, po, 0);
}

static void
wait_exit(outcome *o)
{
    assert_true(tu_event_wait(&o->ev, TU_WAIT_MS));
    assert_int_equal(o->exits, 1);
    assert_false(o->bad_order);
    assert_false(o->bad_offset);
}

static void
test_proc_actor_exit_codes_and_output(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    outcome o;
    char *t[] = {"/bin/true", NULL};
    run_prog(&b, &o, &(tr_proc_opts){.argv = t});
    wait_exit(&o);
    assert_true(o.x.exited);
    assert_int_equal(o.x.code, 0);
    assert_int_equal(o.error, TR_OK);
    outcome_fini(&o);

    char *sh[] = {"/bin/sh", "-c", "echo out; echo err >&2; exit 7", NULL};
    run_prog(&b, &o, &(tr_proc_opts){.argv = sh});
    wait_exit(&o);
    assert_int_equal(o.x.code, 7);
    assert_string_equal(o.out, "out\n");
    assert_string_equal(o.err, "err\n");
    assert_int_equal(o.x.stdout_bytes, 4);
    assert_false(o.x.truncated);
    outcome_fini(&o);

    // stdin bytes reach the program, which then sees end of file.
    char *cat[] = {"cat", NULL};
    run_prog(
        &b, &o,
        &(tr_proc_opts){.argv = cat, .search_path = true, .stdin_data = "hello", .stdin_len = 5});
    wait_exit(&o);
    assert_int_equal(o.x.code, 0);
    assert_string_equal(o.out, "hello");
    outcome_fini(&o);
    bg_stop(&b);
}

static void
test_proc_actor_cap_and_missing_program(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    outcome o;
    // 3 MB through a 1000-byte cap: drained, never blocked, truncated.
    char *big[] = {"/bin/sh", "-c", "head -c 3000000 /dev/zero", NULL};
    run_prog(&b, &o, &(tr_proc_opts){.argv = big, .output_cap = 1000});
    wait_exit(&o);
    assert_int_equal(o.x.code, 0);
    assert_true(o.x.truncated);
    assert_int_equal(o.x.stdout.len, 1000);
    assert_true(o.x.stdout_bytes > 1000);
    outcome_fini(&o);

    char *none[] = {"/nonexistent/program", NULL};
    run_prog(&b, &o, &(tr_proc_opts){.argv = none});
    wait_exit(&o);
    assert_int_equal(o.error, TR_ENOENT);
    assert_int_equal(o.x.pid, 0);
    outcome_fini(&o);
    bg_stop(&b);
}

// gone_within waits until process pid (not necessarily our child) has
// exited: pidfd_open and poll, bounded by ms; true when it is gone.
static bool
gone_within(pid_t pid, unsigned ms)
{
    int fd = pidfd_open(pid, 0);
    if (fd < 0) {
        return errno == ESRCH;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int n;
    do {
        n = poll(&pfd, 1, (int)ms);
    } while (n < 0 && errno == EINTR);
    close(fd);
    return n == 1;
}

static void
test_proc_actor_timeout_kills_the_group(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    outcome o;
    // The shell's child (a grandchild of ours, printed) sleeps too: the
    // whole group goes.
    char *sh[] = {"/bin/sh", "-c", "sleep 1000 & echo $!; wait", NULL};
    run_prog(&b, &o, &(tr_proc_opts){.argv = sh, .timeout_ms = 300, .kill_grace_ms = 200});
    wait_exit(&o);
    assert_true(o.x.timed_out);
    assert_false(o.x.exited);
    assert_true(o.x.signal == SIGTERM || o.x.signal == SIGKILL);
    pid_t pgid = o.x.pid;
    assert_true(TU_SPIN_UNTIL(kill(-pgid, 0) == -1 && errno == ESRCH, TU_WAIT_MS));
    pid_t g = (pid_t)atoi(o.out);
    assert_true(g > 0 && g != pgid);
    assert_true(gone_within(g, TU_WAIT_MS));
    outcome_fini(&o);
    bg_stop(&b);
}

static void
test_proc_actor_exit_is_the_leaders(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    outcome o;
    // A grandchild keeps stdout open for 30 s; the report comes at the
    // leader's exit (the wait's deadline is well under 30 s).
    char *sh[] = {"/bin/sh", "-c", "(sleep 30; echo late) & echo early; exit 3", NULL};
    tr_actor_addr p = run_prog(&b, &o, &(tr_proc_opts){.argv = sh});
    wait_exit(&o);
    assert_int_equal(o.x.code, 3);
    assert_string_equal(o.out, "early\n");
    (void)p;
    kill(-o.x.pid, SIGKILL); // the grandchild, still in the group
    outcome_fini(&o);
    bg_stop(&b);
}

static void
test_proc_actor_kill_and_stop(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    outcome o;
    char *sl[] = {"/bin/sleep", "100", NULL};
    tr_actor_addr p = run_prog(&b, &o, &(tr_proc_opts){.argv = sl, .kill_grace_ms = 200});
    Troupe__V1__ProcessKill *k;
    tr_msg *m = tr_msg_new(&troupe__v1__process_kill__descriptor, 0, (void **)&k);
    k->signal = SIGINT;
    assert_int_equal(tr_actor_send(NULL, p, m), TR_OK);
    wait_exit(&o);
    assert_int_equal(o.x.signal, SIGINT);
    outcome_fini(&o);

    // Stopping the actor kills its program, and the owner still hears.
    p = run_prog(&b, &o, &(tr_proc_opts){.argv = sl, .kill_grace_ms = 200});
    assert_int_equal(tr_actor_stop_other(p, TR_OK, NULL), TR_OK);
    wait_exit(&o);
    assert_true(o.x.killed);
    assert_int_equal(o.x.signal, SIGTERM);
    outcome_fini(&o);
    bg_stop(&b);
}

// The leader leads a session of its own, and its group: the shell prints
// its pid, session (field 6) and group (5) from /proc/$$/stat (comm "sh"
// has no spaces, so read splits the fields right).
static void
test_proc_actor_session_leader(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    outcome o;
    char *sh[] = {"/bin/sh", "-c", "read -r p c s pp g sid r </proc/$$/stat; echo $$ $sid $g",
                  NULL};
    run_prog(&b, &o, &(tr_proc_opts){.argv = sh});
    wait_exit(&o);
    assert_int_equal(o.x.code, 0);
    char want[64];
    snprintf(want, sizeof want, "%d %d %d\n", o.x.pid, o.x.pid, o.x.pid);
    assert_string_equal(o.out, want);
    assert_true(tu_proc_stat_field(getpid(), 6) != o.x.pid);
    outcome_fini(&o);
    bg_stop(&b);
}

// ProcessStarted comes first, with the leader's start time, which
// tr_proc_start_time reads back while it runs, also for a program whose
// name (comm) holds spaces and ')' (a symlink so named); a gone pid is
// TR_ENOTFOUND.
static void
test_proc_actor_started_and_start_time(void **state)
{
    (void)state;
    char dir[] = "/tmp/troupe-comm-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char link[128];
    snprintf(link, sizeof link, "%s/a) b (c", dir);
    assert_int_equal(symlink("/bin/sleep", link), 0);
    bg b;
    bg_start(&b, 2);
    outcome o;
    char *sl[] = {link, "1000", NULL};
    tr_actor_addr p = run_prog(&b, &o, &(tr_proc_opts){.argv = sl, .kill_grace_ms = 200});
    assert_true(tu_event_wait(&o.started, TU_WAIT_MS));
    pid_t pid = o.s_pid;
    assert_true(pid > 0);
    assert_string_equal(o.s_cgroup, "");
    char path[64], comm[64] = "";
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(comm, sizeof comm, f));
    fclose(f);
    assert_string_equal(comm, "a) b (c\n");
    uint64_t t = 0;
    assert_int_equal(tr_proc_start_time(pid, &t), TR_OK);
    assert_true(t == o.s_start);
    // A field miscounted from the first ')' would not be a start time
    // between ours and now.
    assert_true((long long)t >= tu_proc_stat_field(getpid(), 22));
    assert_int_equal(tu_proc_stat_field(pid, 6), pid); // its own session
    Troupe__V1__ProcessKill *k;
    tr_msg *m = tr_msg_new(&troupe__v1__process_kill__descriptor, 0, (void **)&k);
    assert_int_equal(tr_actor_send(NULL, p, m), TR_OK);
    wait_exit(&o);
    assert_int_equal(o.starts, 1);
    assert_int_equal(o.x.pid, pid);
    assert_true(o.x.killed);
    assert_int_equal(tr_proc_start_time(pid, &t), TR_ENOTFOUND); // reaped
    assert_int_equal(tr_proc_start_time(0, &t), TR_EINVAL);
    outcome_fini(&o);
    bg_stop(&b);
    unlink(link);
    rmdir(dir);
}

// rlimits apply before stdin is written: the shell that reads its stdin
// first sees them. A bad request runs nothing; one the kernel refuses
// after the spawn (a hard limit above fs.nr_open, refused even to root)
// kills the spawned group before it reads its stdin.
static void
test_proc_actor_rlimits(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    outcome o;
    char *sh[] = {"/bin/sh", "-c", "read x; ulimit -n; echo ran", NULL};
    tr_proc_rlimit nofile = {RLIMIT_NOFILE, 64, 64};
    tr_proc_opts po = {
        .argv = sh, .stdin_data = "go\n", .stdin_len = 3, .rlimits = &nofile, .nrlimits = 1};
    run_prog(&b, &o, &po);
    wait_exit(&o);
    assert_int_equal(o.error, TR_OK);
    assert_int_equal(o.x.code, 0);
    assert_string_equal(o.out, "64\nran\n");
    assert_int_equal(o.starts, 1);
    outcome_fini(&o);

    tr_proc_rlimit inverted = {RLIMIT_NOFILE, 128, 64};
    po.rlimits = &inverted;
    run_prog(&b, &o, &po);
    wait_exit(&o);
    assert_int_equal(o.error, TR_EINVAL);
    assert_int_equal(o.x.pid, 0);
    assert_int_equal(o.starts, 0);
    outcome_fini(&o);

    FILE *f = fopen("/proc/sys/fs/nr_open", "r");
    assert_non_null(f);
    unsigned long long nr_open = 0;
    assert_int_equal(fscanf(f, "%llu", &nr_open), 1);
    fclose(f);
    tr_proc_rlimit above = {RLIMIT_NOFILE, 64, nr_open + 1};
    po.rlimits = &above;
    run_prog(&b, &o, &po);
    wait_exit(&o);
    assert_int_equal(o.error, TR_EPERM);
    assert_true(o.x.pid > 0);
    assert_int_equal(o.x.signal, SIGKILL);
    assert_string_equal(o.out, ""); // it never read its stdin
    assert_int_equal(o.starts, 0);
    outcome_fini(&o);

    tr_proc_rlimit nine[TR_PROC_RLIMITS_MAX + 1] = {{0}};
    po.rlimits = nine;
    po.nrlimits = TR_PROC_RLIMITS_MAX + 1;
    assert_int_equal(tr_proc_actor_start(b.rt, &po, TR_ACTOR_NONE, NULL), TR_EINVAL);
    bg_stop(&b);
}

// seq_text is what `seq 1 n` prints (malloc'ed, *len bytes).
static char *
seq_text(unsigned n, size_t *len)
{
    size_t cap = (size_t)n * 8 + 1, at = 0;
    char *t = malloc(cap);
    for (unsigned i = 1; i <= n; i++) {
        at += (size_t)snprintf(t + at, cap - at, "%u\n", i);
    }
    *len = at;
    return t;
}

// Streaming: the chunks of each stream, concatenated, are what the
// program wrote, with contiguous offsets, after ProcessStarted and before
// ProcessExit (which carries only the counts); past the cap, what was
// delivered is the first cap bytes and ProcessExit says truncated.
static void
test_proc_actor_streaming(void **state)
{
    (void)state;
    size_t len;
    char *want = seq_text(60000, &len); // about 350 KB: many reads
    bg b;
    bg_start(&b, 2);
    outcome o;
    char *sh[] = {"/bin/sh", "-c", "seq 1 60000; echo err >&2", NULL};
    run_prog(&b, &o, &(tr_proc_opts){.argv = sh, .stream_output = true});
    wait_exit(&o);
    assert_int_equal(o.x.code, 0);
    assert_int_equal(o.starts, 1);
    assert_true(o.chunks[0] > 1);
    assert_int_equal(o.st_len[0], len);
    assert_memory_equal(o.st[0], want, len);
    assert_int_equal(o.st_len[1], 4);
    assert_memory_equal(o.st[1], "err\n", 4);
    assert_int_equal(o.out_len, 0); // streamed, not in the exit
    assert_int_equal(o.x.stdout_bytes, len);
    assert_false(o.x.truncated);
    outcome_fini(&o);

    run_prog(&b, &o, &(tr_proc_opts){.argv = sh, .stream_output = true, .output_cap = 1000});
    wait_exit(&o);
    assert_int_equal(o.st_len[0], 1000);
    assert_memory_equal(o.st[0], want, 1000);
    assert_true(o.x.truncated);
    assert_int_equal(o.x.stdout_bytes, len);
    outcome_fini(&o);
    bg_stop(&b);
    free(want);
}

// An owner that does not read (its bounded mailbox full, its worker
// stuck in receive) never blocks the program: it writes far more than a
// pipe holds and exits; then the owner gets every byte, in order.
static void
test_proc_actor_slow_bounded_owner(void **state)
{
    (void)state;
    bg b;
    bg_start(&b, 2);
    outcome o;
    outcome_init(&o);
    tu_event gate;
    tu_event_init(&gate);
    o.gate = &gate;
    char *sh[] = {"/bin/sh", "-c", "head -c 500000 /dev/zero", NULL};
    run_prog_bounded(&b, &o, &(tr_proc_opts){.argv = sh, .stream_output = true}, 1);
    // The owner is stuck after ProcessStarted; the program exits anyway.
    assert_true(tu_event_wait(&o.started, TU_WAIT_MS));
    assert_true(gone_within(o.s_pid, TU_WAIT_MS));
    tu_event_set(&gate);
    wait_exit(&o);
    assert_int_equal(o.x.code, 0);
    assert_int_equal(o.st_len[0], 500000);
    assert_int_equal(o.x.stdout_bytes, 500000);
    outcome_fini(&o);
    tu_event_destroy(&gate);
    bg_stop(&b);
}

// cgroup_parent_make makes a cgroup v2 directory for the test below the
// cgroup2 mount (/proc/self/mounts) into out: false when there is no
// cgroup2 or we may not make one there.
static bool
cgroup_parent_make(char *out, size_t cap)
{
    FILE *f = setmntent("/proc/self/mounts", "r");
    if (f == NULL) {
        return false;
    }
    struct mntent *me;
    bool ok = false;
    while (!ok && (me = getmntent(f)) != NULL) {
        if (strcmp(me->mnt_type, "cgroup2") != 0) {
            continue;
        }
        snprintf(out, cap, "%s/troupe-test-%d", me->mnt_dir, (int)getpid());
        char procs[600];
        snprintf(procs, sizeof procs, "%s/cgroup.procs", out);
        ok = mkdir(out, 0755) == 0;
        if (ok && access(procs, W_OK) != 0) {
            rmdir(out);
            ok = false;
        }
    }
    endmntent(f);
    return ok;
}

// cgroup_parent_or_skip is cgroup_parent_make, or skips the test.
static void
cgroup_parent_or_skip(char *out, size_t cap)
{
    if (!cgroup_parent_make(out, cap)) {
        tu_skip("no writable cgroup v2 (no cgroup2 mount, or not allowed to mkdir there)");
    }
}

// A grandchild that made a session of its own (setsid) outlives its
// leader, unless the program runs in a cgroup: then it is killed when the
// leader exits, and the cgroup is gone by the ProcessExit. The shell reads
// its stdin first, so it forks only once it is in the cgroup.
static void
test_proc_actor_cgroup_kills_setsid_grandchild(void **state)
{
    (void)state;
    char parent[512];
    cgroup_parent_or_skip(parent, sizeof parent);
    bg b;
    bg_start(&b, 2);
    outcome o;
    char *sh[] = {"/bin/sh", "-c", "read x; setsid sleep 1000 & echo $!", NULL};
    tr_proc_opts po = {.argv = sh, .stdin_data = "go\n", .stdin_len = 3};
    // Without a cgroup it survives, in a session of its own.
    run_prog(&b, &o, &po);
    wait_exit(&o);
    pid_t g = (pid_t)atoi(o.out);
    assert_true(g > 0);
    assert_false(gone_within(g, 0));
    assert_true(TU_SPIN_UNTIL(tu_proc_stat_field(g, 6) == g, TU_WAIT_MS)); // setsid ran
    kill(g, SIGKILL);
    outcome_fini(&o);

    po.cgroup_parent = parent;
    run_prog(&b, &o, &po);
    wait_exit(&o);
    assert_int_equal(o.error, TR_OK);
    assert_int_equal(o.x.code, 0);
    assert_int_equal(o.starts, 1);
    assert_memory_equal(o.s_cgroup, parent, strlen(parent));
    assert_true(strncmp(o.s_cgroup + strlen(parent), "/troupe-", 8) == 0);
    g = (pid_t)atoi(o.out);
    assert_true(g > 0);
    assert_true(gone_within(g, 0)); // by the ProcessExit already
    assert_int_equal(access(o.s_cgroup, F_OK), -1);
    outcome_fini(&o);

    // A cgroup that cannot be made: nothing runs.
    po.cgroup_parent = "/nonexistent/cgroup";
    run_prog(&b, &o, &po);
    wait_exit(&o);
    assert_int_equal(o.error, TR_ENOENT);
    assert_int_equal(o.x.pid, 0);
    assert_int_equal(o.starts, 0);
    outcome_fini(&o);
    bg_stop(&b);
    assert_int_equal(rmdir(parent), 0);
}

// With cgroup_reuse, a cgroup found empty when its leader exits is kept
// and the next program below the same parent runs in it (and lives: a
// kept cgroup was never killed); one that had to be killed (a setsid
// grandchild outlived the leader) is removed, never handed on; and
// tr_proc_cgroup_release removes what is kept, so the parent can go.
static void
test_proc_actor_cgroup_reuse(void **state)
{
    (void)state;
    char parent[512];
    cgroup_parent_or_skip(parent, sizeof parent);
    char *echo[] = {"/bin/echo", "hi", NULL};
    tr_proc_opts po = {.argv = echo, .cgroup_parent = parent, .cgroup_reuse = true};
    outcome o;
    bg b;
    bg_start(&b, 2);
    run_prog(&b, &o, &po);
    wait_exit(&o);
    assert_int_equal(o.error, TR_OK);
    assert_int_equal(o.x.code, 0);
    char first[512];
    snprintf(first, sizeof first, "%s", o.s_cgroup);
    assert_memory_equal(first, parent, strlen(parent));
    assert_int_equal(access(first, F_OK), 0); // kept
    outcome_fini(&o);

    for (int i = 0; i < 3; i++) {
        run_prog(&b, &o, &po);
        wait_exit(&o);
        assert_int_equal(o.error, TR_OK);
        assert_false(o.x.killed);
        assert_int_equal(o.x.code, 0);
        assert_string_equal(o.out, "hi\n");
        assert_string_equal(o.s_cgroup, first);
        outcome_fini(&o);
    }

    // A grandchild in a session of its own: killed through the cgroup,
    // which is then removed rather than kept.
    char *sh[] = {"/bin/sh", "-c", "setsid sleep 1000 & echo $!", NULL};
    po.argv = sh;
    run_prog(&b, &o, &po);
    wait_exit(&o);
    assert_int_equal(o.error, TR_OK);
    assert_string_equal(o.s_cgroup, first);
    pid_t g = (pid_t)atoi(o.out);
    assert_true(g > 0);
    assert_true(gone_within(g, 0));
    assert_int_equal(access(first, F_OK), -1);
    outcome_fini(&o);

    // The next one gets a fresh cgroup, and runs.
    po.argv = echo;
    run_prog(&b, &o, &po);
    wait_exit(&o);
    assert_int_equal(o.x.code, 0);
    assert_string_not_equal(o.s_cgroup, first);
    char second[512];
    snprintf(second, sizeof second, "%s", o.s_cgroup);
    assert_int_equal(access(second, F_OK), 0);
    outcome_fini(&o);
    bg_stop(&b);

    assert_int_equal(rmdir(parent), -1); // the kept one is in it
    tr_proc_cgroup_release(parent);
    assert_int_equal(access(second, F_OK), -1);
    assert_int_equal(rmdir(parent), 0);
}

// fifo_line waits up to TU_WAIT_MS for a line on the FIFO fd (opened
// O_NONBLOCK before its writer started) and returns it in buf.
static void
fifo_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n == 0 || buf[n - 1] != '\n') {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int r;
        do {
            r = poll(&pf, 1, TU_WAIT_MS);
        } while (r < 0 && errno == EINTR);
        assert_int_equal(r, 1);
        ssize_t k = read(fd, buf + n, cap - 1 - n);
        if (k < 0 && errno == EAGAIN) {
            continue; // POLLHUP before any writer: wait for one
        }
        assert_true(k > 0);
        n += (size_t)k;
        assert_true(n < cap - 1);
    }
    buf[n] = '\0';
}

// A ProcessKill with a signal reaches, through the cgroup, a grandchild
// that made a session of its own (outside the group the signal goes to):
// here it traps SIGUSR1 and says so on a FIFO, while the leader ignores it.
static void
test_proc_actor_signal_reaches_cgroup(void **state)
{
    (void)state;
    char parent[512];
    cgroup_parent_or_skip(parent, sizeof parent);
    char dir[] = "/tmp/test_proc_sig_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char ready[64], got[64], script[512];
    snprintf(ready, sizeof ready, "%s/ready", dir);
    snprintf(got, sizeof got, "%s/got", dir);
    assert_int_equal(mkfifo(ready, 0600), 0);
    assert_int_equal(mkfifo(got, 0600), 0);
    int rfd = open(ready, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    int gfd = open(got, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    assert_true(rfd >= 0 && gfd >= 0);
    snprintf(script, sizeof script,
             "setsid sh -c 'trap \"echo usr1 > %s; exit 0\" USR1; echo ready > %s; "
             "while :; do sleep 0.01; done' </dev/null >/dev/null 2>&1 &\n"
             "trap '' USR1\nexec sleep 1000\n",
             got, ready);
    char *sh[] = {"/bin/sh", "-c", script, NULL};
    bg b;
    bg_start(&b, 2);
    outcome o;
    tr_actor_addr p = run_prog(
        &b, &o, &(tr_proc_opts){.argv = sh, .cgroup_parent = parent, .kill_grace_ms = 200});
    char line[64];
    fifo_line(rfd, line, sizeof line);
    assert_string_equal(line, "ready\n");
    Troupe__V1__ProcessKill *k;
    tr_msg *m = tr_msg_new(&troupe__v1__process_kill__descriptor, 0, (void **)&k);
    k->signal = SIGUSR1;
    assert_int_equal(tr_actor_send(NULL, p, m), TR_OK);
    fifo_line(gfd, line, sizeof line);
    assert_string_equal(line, "usr1\n");
    // The leader ignored it and runs on; a ProcessKill without a signal
    // ends it (SIGTERM to the group), and the cgroup with it.
    m = tr_msg_new(&troupe__v1__process_kill__descriptor, 0, (void **)&k);
    assert_int_equal(tr_actor_send(NULL, p, m), TR_OK);
    wait_exit(&o);
    assert_true(o.x.killed);
    assert_int_equal(o.x.signal, SIGTERM);
    outcome_fini(&o);
    bg_stop(&b);
    close(rfd);
    close(gfd);
    unlink(ready);
    unlink(got);
    rmdir(dir);
    assert_int_equal(rmdir(parent), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proc_actor_exit_codes_and_output),
        cmocka_unit_test(test_proc_actor_cap_and_missing_program),
        cmocka_unit_test(test_proc_actor_timeout_kills_the_group),
        cmocka_unit_test(test_proc_actor_exit_is_the_leaders),
        cmocka_unit_test(test_proc_actor_kill_and_stop),
        cmocka_unit_test(test_proc_actor_session_leader),
        cmocka_unit_test(test_proc_actor_started_and_start_time),
        cmocka_unit_test(test_proc_actor_rlimits),
        cmocka_unit_test(test_proc_actor_streaming),
        cmocka_unit_test(test_proc_actor_slow_bounded_owner),
        cmocka_unit_test(test_proc_actor_cgroup_kills_setsid_grandchild),
        cmocka_unit_test(test_proc_actor_signal_reaches_cgroup),
        cmocka_unit_test(test_proc_actor_cgroup_reuse),
    };
    return tu_run(tests);
}
