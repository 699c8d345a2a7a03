// test_store.c: the daemon's job store (daemon/store.h) and its state lock
// (daemon/state.h): data that outlives a close, ids and repeated request
// ids, group commit from several threads, state changes and the one final
// record, list filters and paging, recovery's scan, a schema-1 file
// migrated, groups' settings, the cap on unfinished jobs and its count, a
// corrupt, newer or locked file refused without a write, a kill -9 after
// an acknowledged Submit, a full disk, and a second daemon on the same
// state directory.
//
// The kill -9 and lock cases run this binary again as a child
// (argv[1] = "child-submit" or "child-lock"; see main).
#define _GNU_SOURCE // pipe2, nftw
#include "runtime/test_util.h"

#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>
#include <troupe/v1/job.pb-c.h>

#include "state.h"
#include "store.h"

extern char **environ;

// ---------------------------------------------------------------------------
// Helpers.

typedef struct tmp {
    char dir[64];
    char db[128];
} tmp;

static void
tmp_make(tmp *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/trd-store-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->db, sizeof t->db, "%s/jobs.db", t->dir);
}

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void
tmp_remove(tmp *t)
{
    assert_int_equal(nftw(t->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS), 0);
}

// A batch of n noop jobs named prefix-i, in group, with one label (key
// "env") when env is not NULL; job i > 0 runs after job i - 1 when chain.
typedef struct batch {
    uint8_t *b_buf;
    size_t b_len;
} batch;

static batch
batch_make(size_t n, const char *prefix, const char *group, const char *env, bool chain,
           size_t stdin_bytes)
{
    Troupe__V1__SubmitBatch b = TROUPE__V1__SUBMIT_BATCH__INIT;
    Troupe__V1__JobSpec *jobs = calloc(n ? n : 1, sizeof *jobs);
    Troupe__V1__JobSpec **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    Troupe__V1__NoopTask noop = TROUPE__V1__NOOP_TASK__INIT;
    Troupe__V1__Label label = TROUPE__V1__LABEL__INIT;
    Troupe__V1__Label *labels[1] = {&label};
    char(*names)[64] = calloc(n ? n : 1, sizeof *names);
    char **after = calloc(n ? n : 1, sizeof *after);
    uint8_t *in = calloc(stdin_bytes ? stdin_bytes : 1, 1);
    label.key = "env";
    label.value = (char *)env;
    for (size_t i = 0; i < n; i++) {
        Troupe__V1__JobSpec init = TROUPE__V1__JOB_SPEC__INIT;
        jobs[i] = init;
        snprintf(names[i], sizeof names[i], "%s-%zu", prefix, i);
        jobs[i].name = names[i];
        jobs[i].group = (char *)group;
        jobs[i].priority = (int32_t)i;
        jobs[i].task_case = TROUPE__V1__JOB_SPEC__TASK_NOOP;
        jobs[i].noop = &noop;
        if (env != NULL) {
            jobs[i].n_labels = 1;
            jobs[i].labels = labels;
        }
        if (chain && i > 0) {
            after[i] = names[i - 1];
            jobs[i].n_after_names = 1;
            jobs[i].after_names = &after[i];
        }
        jobs[i].stdin.len = stdin_bytes;
        jobs[i].stdin.data = in;
        ptrs[i] = &jobs[i];
    }
    b.n_jobs = n;
    b.jobs = ptrs;
    b.job_count = (uint32_t)n;
    batch out;
    out.b_len = troupe__v1__submit_batch__get_packed_size(&b);
    out.b_buf = malloc(out.b_len ? out.b_len : 1);
    troupe__v1__submit_batch__pack(&b, out.b_buf);
    free(in);
    free(after);
    free(names);
    free(ptrs);
    free(jobs);
    return out;
}

static void
batch_free(batch *b)
{
    free(b->b_buf);
}

// batch_groups returns b (freed) with ng GroupSpecs added: names[i] with
// parallel[i].
static batch
batch_groups(batch b, size_t ng, const char *const *names, const uint32_t *parallel)
{
    Troupe__V1__SubmitBatch *sb = troupe__v1__submit_batch__unpack(NULL, b.b_len, b.b_buf);
    assert_non_null(sb);
    assert_int_equal(sb->n_groups, 0);
    Troupe__V1__GroupSpec *gs = calloc(ng ? ng : 1, sizeof *gs);
    Troupe__V1__GroupSpec **ptrs = calloc(ng ? ng : 1, sizeof *ptrs);
    for (size_t i = 0; i < ng; i++) {
        Troupe__V1__GroupSpec init = TROUPE__V1__GROUP_SPEC__INIT;
        gs[i] = init;
        gs[i].name = (char *)names[i];
        gs[i].parallel = parallel[i];
        ptrs[i] = &gs[i];
    }
    sb->n_groups = ng;
    sb->groups = ptrs;
    batch out;
    out.b_len = troupe__v1__submit_batch__get_packed_size(sb);
    out.b_buf = malloc(out.b_len ? out.b_len : 1);
    troupe__v1__submit_batch__pack(sb, out.b_buf);
    // Ours, not the unpacker's: taken back before it frees the rest.
    sb->n_groups = 0;
    sb->groups = NULL;
    troupe__v1__submit_batch__free_unpacked(sb, NULL);
    free(ptrs);
    free(gs);
    batch_free(&b);
    return out;
}

// batch_unknown_after returns b (freed) with its first job made to run
// after job 999999, which no test stores: a Submit that fails on its own
// (TR_ENOTFOUND) after its groups and jobs went in.
static batch
batch_unknown_after(batch b)
{
    Troupe__V1__SubmitBatch *sb = troupe__v1__submit_batch__unpack(NULL, b.b_len, b.b_buf);
    assert_non_null(sb);
    assert_true(sb->n_jobs > 0);
    uint64_t unknown = 999999;
    sb->jobs[0]->n_after_ids = 1;
    sb->jobs[0]->after_ids = &unknown;
    batch out;
    out.b_len = troupe__v1__submit_batch__get_packed_size(sb);
    out.b_buf = malloc(out.b_len);
    troupe__v1__submit_batch__pack(sb, out.b_buf);
    // Ours, not the unpacker's: taken back before it frees the rest.
    sb->jobs[0]->n_after_ids = 0;
    sb->jobs[0]->after_ids = NULL;
    troupe__v1__submit_batch__free_unpacked(sb, NULL);
    batch_free(&b);
    return out;
}

// A write's outcome, for a test that waits for it.
typedef struct waiter {
    tu_event w_ev;
    tr_err w_err;
    trd_submit_result w_res;
    char w_detail[200];
} waiter;

static void
waiter_done(void *arg, tr_err err, const trd_submit_result *r)
{
    waiter *w = arg;
    w->w_err = err;
    w->w_res = *r;
    snprintf(w->w_detail, sizeof w->w_detail, "%s", r->r_detail);
    w->w_res.r_detail = w->w_detail;
    tu_event_set(&w->w_ev);
}

static void
waiter_wait(waiter *w)
{
    assert_true(tu_event_wait(&w->w_ev, TU_WAIT_MS));
    tu_event_destroy(&w->w_ev);
}

static tr_err
submit_wait(trd_store *s, const char *rid, const batch *b, trd_submit_result *res)
{
    waiter w;
    tu_event_init(&w.w_ev);
    trd_store_submit(s, rid, b->b_buf, b->b_len, waiter_done, &w);
    waiter_wait(&w);
    if (res != NULL) {
        *res = w.w_res;
    }
    return w.w_err;
}

static trd_store *
store_open(const char *path)
{
    trd_store *s = NULL;
    char err[256];
    tr_err e = trd_store_open(path, TRD_DURABLE_FULL, &s, err, sizeof err);
    if (e != TR_OK) {
        fail_msg("trd_store_open: %s: %s", tr_err_name(e), err);
    }
    return s;
}

// submit_jobs submits batch_make(n, prefix, group, env, false, 0) as rid
// and returns the result, asserting TR_OK.
static trd_submit_result
submit_jobs(trd_store *s, const char *rid, size_t n, const char *prefix, const char *group,
            const char *env)
{
    batch b = batch_make(n, prefix, group, env, false, 0);
    trd_submit_result r;
    assert_int_equal(submit_wait(s, rid, &b, &r), TR_OK);
    batch_free(&b);
    return r;
}

// A test's directory and its store.
typedef struct fx {
    tmp f_tmp;
    trd_store *f_s;
} fx;

static void
fx_open(fx *f)
{
    tmp_make(&f->f_tmp);
    f->f_s = store_open(f->f_tmp.db);
}

static void
fx_close(fx *f)
{
    trd_store_close(f->f_s);
    tmp_remove(&f->f_tmp);
}

static tr_err
update_wait(trd_store *s, const trd_job_update *u, char *detail, size_t len)
{
    waiter w;
    tu_event_init(&w.w_ev);
    trd_store_update(s, u, waiter_done, &w);
    waiter_wait(&w);
    if (detail != NULL) {
        snprintf(detail, len, "%s", w.w_detail);
    }
    return w.w_err;
}

static trd_job_state
state_of(trd_store *s, uint64_t id)
{
    trd_job_rec r;
    assert_int_equal(trd_store_get(s, id, &r), TR_OK);
    trd_job_state st = r.j_state;
    trd_job_rec_fini(&r);
    return st;
}

// The whole content of a file (the caller frees it), for "unchanged".
static uint8_t *
file_read(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    uint8_t *buf = malloc((size_t)sb.st_size + 1);
    assert_int_equal(read(fd, buf, (size_t)sb.st_size), sb.st_size);
    close(fd);
    *len = (size_t)sb.st_size;
    return buf;
}

static void
assert_file_is(const char *path, const uint8_t *want, size_t len)
{
    size_t got_len = 0;
    uint8_t *got = file_read(path, &got_len);
    assert_int_equal(got_len, len);
    assert_memory_equal(got, want, len);
    free(got);
}

static tr_err
set_group_wait(trd_store *s, const char *name, bool paused, uint32_t parallel, bool set_parallel)
{
    waiter w;
    tu_event_init(&w.w_ev);
    trd_store_set_group(s, name, paused, parallel, set_parallel, waiter_done, &w);
    waiter_wait(&w);
    return w.w_err;
}

// The stored groups (trd_store_groups), as one string: "name:paused/parallel "
// for each, so a test compares them all at once.
typedef struct groups_text {
    char g_text[512];
    size_t g_len;
} groups_text;

static void
groups_add(void *arg, const char *name, bool paused, uint32_t parallel)
{
    groups_text *g = arg;
    int n = snprintf(g->g_text + g->g_len, sizeof g->g_text - g->g_len, "%s:%d/%u ", name,
                     (int)paused, parallel);
    assert_true(n > 0 && (size_t)n < sizeof g->g_text - g->g_len);
    g->g_len += (size_t)n;
}

static const char *
groups_of(trd_store *s, groups_text *g)
{
    memset(g, 0, sizeof *g);
    assert_int_equal(trd_store_groups(s, groups_add, g), TR_OK);
    return g->g_text;
}

static uint64_t
unfinished_of(trd_store *s)
{
    trd_store_counters st;
    trd_store_stats(s, &st);
    return st.st_unfinished;
}

static tr_err
finish_wait(trd_store *s, uint64_t id)
{
    trd_job_update u = {.u_id = id, .u_kind = TRD_UPDATE_FINISH, .u_state = TRD_JOB_SUCCEEDED};
    return update_wait(s, &u, NULL, 0);
}

// A gate holds the store thread in an op's callback (a test-only block:
// callbacks must not block) so that the ops queued meanwhile go in one
// batch. The op is trd_store_set_max_size(max_bytes).
typedef struct gate {
    tu_event g_held;
    tu_event g_open;
} gate;

static void
gate_done(void *arg, tr_err err, const trd_submit_result *r)
{
    gate *g = arg;
    (void)r;
    TU_CHECK(err == TR_OK);
    tu_event_set(&g->g_held);
    TU_CHECK(tu_event_wait(&g->g_open, TU_WAIT_MS));
}

static void
gate_hold(trd_store *s, gate *g, uint64_t max_bytes)
{
    tu_event_init(&g->g_held);
    tu_event_init(&g->g_open);
    trd_store_set_max_size(s, max_bytes, gate_done, g);
    assert_true(tu_event_wait(&g->g_held, TU_WAIT_MS));
}

// gate_open lets the store thread go on and waits for the ops queued
// behind it (their waiters).
static void
gate_open(gate *g, waiter *w, size_t n)
{
    tu_event_set(&g->g_open);
    for (size_t i = 0; i < n; i++) {
        waiter_wait(&w[i]);
    }
    tu_checks_pass();
    tu_event_destroy(&g->g_held);
    tu_event_destroy(&g->g_open);
}

// Collects the ids an `each` callback sees.
typedef struct ids {
    uint64_t i_id[64];
    size_t i_n;
} ids;

static void
ids_add(void *arg, const trd_job_rec *r)
{
    ids *v = arg;
    if (v->i_n < sizeof v->i_id / sizeof v->i_id[0]) {
        v->i_id[v->i_n] = r->j_id;
    }
    v->i_n++;
}

// A child of this binary (main's child modes), its stdin and stdout piped.
typedef struct child {
    pid_t c_pid;
    int c_in;  // its stdin
    int c_out; // its stdout
} child;

static child
child_spawn(const char *mode, const char *arg)
{
    int in[2], out[2];
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    assert_true(n > 0);
    exe[n] = '\0';
    char *argv[] = {exe, (char *)mode, (char *)arg, NULL};
    child c = {0};
    assert_int_equal(posix_spawn(&c.c_pid, exe, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    c.c_in = in[1];
    c.c_out = out[0];
    return c;
}

// child_line reads one line from the child's stdout within TU_WAIT_MS.
static void
child_line(child *c, char *buf, size_t cap)
{
    size_t n = 0;
    uint64_t deadline = tu_now_ns() + (uint64_t)TU_WAIT_MS * 1000000u;
    while (n + 1 < cap) {
        uint64_t now = tu_now_ns();
        assert_true(now < deadline);
        struct pollfd p = {.fd = c->c_out, .events = POLLIN};
        int rc = poll(&p, 1, (int)((deadline - now) / 1000000u) + 1);
        if (rc < 0 && errno == EINTR) {
            continue;
        }
        assert_int_equal(rc, 1);
        ssize_t got = read(c->c_out, buf + n, 1);
        assert_int_equal(got, 1);
        if (buf[n] == '\n') {
            break;
        }
        n++;
    }
    buf[n] = '\0';
}

static int
child_wait(child *c)
{
    int status = 0;
    pid_t rc;
    do {
        rc = waitpid(c->c_pid, &status, 0);
    } while (rc < 0 && errno == EINTR);
    assert_int_equal(rc, c->c_pid);
    close(c->c_in);
    close(c->c_out);
    return status;
}

// ---------------------------------------------------------------------------
// Tests.

static void
test_store_reopen_keeps_data(void **state)
{
    (void)state;
    tmp t;
    tmp_make(&t);
    trd_store *s = store_open(t.db);
    batch b = batch_make(3, "keep", "g", "prod", true, 0);
    trd_submit_result r;
    assert_int_equal(submit_wait(s, "req-keep", &b, &r), TR_OK);
    assert_int_equal(r.r_count, 3);
    trd_store_close(s);

    s = store_open(t.db);
    for (uint32_t i = 0; i < 3; i++) {
        trd_job_rec rec;
        assert_int_equal(trd_store_get(s, r.r_first_id + i, &rec), TR_OK);
        char name[32];
        snprintf(name, sizeof name, "keep-%u", i);
        assert_string_equal(rec.j_name, name);
        assert_string_equal(rec.j_group, "g");
        assert_string_equal(rec.j_request_id, "req-keep");
        assert_int_equal(rec.j_state, TRD_JOB_QUEUED);
        assert_int_equal(rec.j_priority, (int)i);
        assert_true(rec.j_created_ms > 0);
        // The spec is the job as submitted.
        Troupe__V1__JobSpec *js = troupe__v1__job_spec__unpack(NULL, rec.j_spec_len, rec.j_spec);
        assert_non_null(js);
        assert_string_equal(js->name, name);
        assert_int_equal(js->task_case, TROUPE__V1__JOB_SPEC__TASK_NOOP);
        troupe__v1__job_spec__free_unpacked(js, NULL);
        trd_job_rec_fini(&rec);
    }
    trd_job_rec rec;
    assert_int_equal(trd_store_get(s, r.r_first_id + 3, &rec), TR_ENOTFOUND);
    trd_store_close(s);

    // The process mode opens the same file.
    char err[256];
    assert_int_equal(trd_store_open(t.db, TRD_DURABLE_PROCESS, &s, err, sizeof err), TR_OK);
    assert_int_equal(state_of(s, r.r_first_id), TRD_JOB_QUEUED);
    trd_store_close(s);
    batch_free(&b);
    tmp_remove(&t);
}

static void
test_store_submit_ids_and_repeated_request(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    trd_store *s = f.f_s;
    batch b2 = batch_make(2, "a", "", NULL, false, 0);
    batch b3 = batch_make(3, "b", "", NULL, false, 0);
    trd_submit_result r1, r2, again;
    assert_int_equal(submit_wait(s, "one", &b2, &r1), TR_OK);
    assert_int_equal(submit_wait(s, "two", &b3, &r2), TR_OK);
    assert_false(r1.r_repeated);
    assert_false(r2.r_repeated);
    assert_int_equal(r1.r_count, 2);
    assert_int_equal(r2.r_count, 3);
    assert_true(r1.r_first_id >= 1);
    assert_int_equal(r2.r_first_id, r1.r_first_id + 2);

    // The same id with another batch: the first reply, nothing inserted.
    assert_int_equal(submit_wait(s, "one", &b3, &again), TR_OK);
    assert_true(again.r_repeated);
    assert_int_equal(again.r_first_id, r1.r_first_id);
    assert_int_equal(again.r_count, 2);
    trd_job_rec rec;
    assert_int_equal(trd_store_get(s, r2.r_first_id + 3, &rec), TR_ENOTFOUND);
    trd_store_close(s);

    // And after a restart.
    s = f.f_s = store_open(f.f_tmp.db);
    assert_int_equal(submit_wait(s, "two", &b2, &again), TR_OK);
    assert_true(again.r_repeated);
    assert_int_equal(again.r_first_id, r2.r_first_id);
    assert_int_equal(again.r_count, 3);
    trd_submit_result r3;
    assert_int_equal(submit_wait(s, "three", &b2, &r3), TR_OK);
    assert_int_equal(r3.r_first_id, r2.r_first_id + 3);
    batch_free(&b2);
    batch_free(&b3);
    fx_close(&f);
}

static void
test_store_submit_bad_batch_alone_fails(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    trd_store *s = f.f_s;
    // Queued together (one batch, most likely): the bad ones fail, the
    // good one commits.
    Troupe__V1__JobSpec j = TROUPE__V1__JOB_SPEC__INIT;
    Troupe__V1__JobSpec *jp = &j;
    char *missing = "nobody";
    j.name = "lonely";
    j.n_after_names = 1;
    j.after_names = &missing;
    Troupe__V1__SubmitBatch sb = TROUPE__V1__SUBMIT_BATCH__INIT;
    sb.n_jobs = 1;
    sb.jobs = &jp;
    sb.job_count = 1;
    uint8_t bad_name[256];
    size_t bad_name_len = troupe__v1__submit_batch__pack(&sb, bad_name);
    uint64_t unknown = 999999;
    j.n_after_names = 0;
    j.n_after_ids = 1;
    j.after_ids = &unknown;
    uint8_t bad_id[256];
    size_t bad_id_len = troupe__v1__submit_batch__pack(&sb, bad_id);
    batch good = batch_make(2, "ok", "", NULL, true, 0);

    waiter w[4];
    for (int i = 0; i < 4; i++) {
        tu_event_init(&w[i].w_ev);
    }
    trd_store_submit(s, "bad-name", bad_name, bad_name_len, waiter_done, &w[0]);
    trd_store_submit(s, "bad-id", bad_id, bad_id_len, waiter_done, &w[1]);
    trd_store_submit(s, "garbage", "\xff\xff\xff", 3, waiter_done, &w[2]);
    trd_store_submit(s, "good", good.b_buf, good.b_len, waiter_done, &w[3]);
    for (int i = 0; i < 4; i++) {
        waiter_wait(&w[i]);
    }
    assert_int_equal(w[0].w_err, TR_EINVAL);
    assert_non_null(strstr(w[0].w_detail, "nobody"));
    assert_int_equal(w[1].w_err, TR_ENOTFOUND);
    assert_non_null(strstr(w[1].w_detail, "999999"));
    assert_int_equal(w[2].w_err, TR_EINVAL);
    assert_int_equal(w[3].w_err, TR_OK);
    assert_int_equal(w[3].w_res.r_count, 2);
    // A failed Submit stored no request id: the same id may come again.
    batch one = batch_make(1, "retry", "", NULL, false, 0);
    trd_submit_result r;
    assert_int_equal(submit_wait(s, "bad-name", &one, &r), TR_OK);
    assert_false(r.r_repeated);
    assert_int_equal(r.r_first_id, w[3].w_res.r_first_id + 2);
    batch_free(&good);
    batch_free(&one);
    fx_close(&f);
}

// Group commit: 4 threads queue 250 Submits each while the store thread
// is held in the callback of a first one, so that they pile up.
typedef struct gc {
    trd_store *g_store;
    batch g_batch;
    atomic_int g_done;
    atomic_int g_bad;
    tu_event g_gate;     // all queued: the first callback may return
    tu_event g_all_done; // 1000 callbacks ran
    int g_thread;
} gc;

typedef struct gc_thread {
    gc *t_gc;
    int t_no;
} gc_thread;

static void
gc_gate_done(void *arg, tr_err err, const trd_submit_result *r)
{
    gc *g = arg;
    (void)r;
    TU_CHECK(err == TR_OK);
    // A test-only block of the store thread (callbacks must not block):
    // bounded, and it is what lets the queue fill up deterministically.
    TU_CHECK(tu_event_wait(&g->g_gate, TU_WAIT_MS));
}

static void
gc_done(void *arg, tr_err err, const trd_submit_result *r)
{
    gc *g = arg;
    trd_store_counters st;
    trd_store_stats(g->g_store, &st);
    // After its commit: the commit is counted, and the read connection
    // sees the rows.
    trd_job_rec rec;
    bool ok = err == TR_OK && r->r_commit >= 1 && st.st_commits >= r->r_commit &&
              trd_store_get(g->g_store, r->r_first_id, &rec) == TR_OK;
    if (ok) {
        trd_job_rec_fini(&rec);
    } else {
        atomic_fetch_add(&g->g_bad, 1);
    }
    if (atomic_fetch_add(&g->g_done, 1) + 1 == 1000) {
        tu_event_set(&g->g_all_done);
    }
}

static void *
gc_main(void *arg)
{
    gc_thread *t = arg;
    for (int i = 0; i < 250; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "t%d-%d", t->t_no, i);
        trd_store_submit(t->t_gc->g_store, rid, t->t_gc->g_batch.b_buf, t->t_gc->g_batch.b_len,
                         gc_done, t->t_gc);
    }
    return NULL;
}

static void
test_store_group_commit_from_4_threads(void **state)
{
    (void)state;
    tmp t;
    tmp_make(&t);
    gc g;
    memset(&g, 0, sizeof g);
    g.g_store = store_open(t.db);
    g.g_batch = batch_make(1, "gc", "", NULL, false, 0);
    atomic_init(&g.g_done, 0);
    atomic_init(&g.g_bad, 0);
    tu_event_init(&g.g_gate);
    tu_event_init(&g.g_all_done);
    trd_store_submit(g.g_store, "gate", g.g_batch.b_buf, g.g_batch.b_len, gc_gate_done, &g);

    pthread_t th[4];
    gc_thread args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (gc_thread){&g, i};
        tu_thread_start(&th[i], gc_main, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        tu_thread_join(th[i]);
    }
    tu_event_set(&g.g_gate);
    assert_true(tu_event_wait(&g.g_all_done, TU_WAIT_MS));
    tu_checks_pass();
    assert_int_equal(atomic_load(&g.g_bad), 0);

    trd_store_counters st;
    trd_store_stats(g.g_store, &st);
    print_message("group commit: %llu ops in %llu commits (max %llu, mean %.1f), "
                  "commit p50 %llu us p99 %llu us\n",
                  (unsigned long long)st.st_ops, (unsigned long long)st.st_commits,
                  (unsigned long long)st.st_ops_max, st.st_ops_mean,
                  (unsigned long long)st.st_commit_p50_us, (unsigned long long)st.st_commit_p99_us);
    assert_int_equal(st.st_ops, 1001);
    assert_true(st.st_commits < st.st_ops);
    // Everything queued behind the gate goes in one or two transactions.
    assert_true(st.st_commits <= 4);
    assert_true(st.st_ops_max >= 500);
    assert_true(st.st_commit_p50_us > 0);
    assert_true(st.st_commit_p99_us >= st.st_commit_p50_us);
    assert_int_equal(st.st_failed, 0);
    // Ids: 1001 distinct, consecutive jobs.
    trd_job_rec rec;
    assert_int_equal(trd_store_get(g.g_store, 1001, &rec), TR_OK);
    trd_job_rec_fini(&rec);
    assert_int_equal(trd_store_get(g.g_store, 1002, &rec), TR_ENOTFOUND);
    trd_store_close(g.g_store);
    tu_event_destroy(&g.g_gate);
    tu_event_destroy(&g.g_all_done);
    batch_free(&g.g_batch);
    tmp_remove(&t);
}

static void
test_store_update_transitions_and_one_final(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    trd_store *s = f.f_s;
    uint64_t id = submit_jobs(s, "u", 2, "u", "", NULL).r_first_id;
    char detail[200];

    trd_job_update start = {.u_id = id,
                            .u_kind = TRD_UPDATE_START,
                            .u_attempt = 1,
                            .u_at_ms = 1000,
                            .u_leader_pid = 4242,
                            .u_leader_start = 987654};
    assert_int_equal(update_wait(s, &start, NULL, 0), TR_OK);
    trd_job_rec rec;
    assert_int_equal(trd_store_get(s, id, &rec), TR_OK);
    assert_int_equal(rec.j_state, TRD_JOB_RUNNING);
    assert_int_equal(rec.j_attempt, 1);
    assert_int_equal(rec.j_started_ms, 1000);
    assert_int_equal(rec.j_leader_pid, 4242);
    assert_int_equal(rec.j_leader_start, 987654);
    trd_job_rec_fini(&rec);
    // Running already: a second start is refused.
    assert_int_equal(update_wait(s, &start, detail, sizeof detail), TR_EINVAL);
    assert_non_null(strstr(detail, "running"));

    trd_job_update retry = {.u_id = id,
                            .u_kind = TRD_UPDATE_RETRY,
                            .u_attempt = 2,
                            .u_next_run_ms = 5000,
                            .u_exit_code = 3,
                            .u_error = "exit 3"};
    assert_int_equal(update_wait(s, &retry, NULL, 0), TR_OK);
    assert_int_equal(trd_store_get(s, id, &rec), TR_OK);
    assert_int_equal(rec.j_state, TRD_JOB_QUEUED);
    assert_int_equal(rec.j_attempt, 2);
    assert_int_equal(rec.j_next_run_ms, 5000);
    assert_int_equal(rec.j_leader_pid, 0);
    assert_string_equal(rec.j_error, "exit 3");
    trd_job_rec_fini(&rec);
    // A queued job cannot be retried.
    assert_int_equal(update_wait(s, &retry, NULL, 0), TR_EINVAL);

    start.u_attempt = 2;
    start.u_at_ms = 6000;
    assert_int_equal(update_wait(s, &start, NULL, 0), TR_OK);
    trd_job_update fin = {.u_id = id,
                          .u_kind = TRD_UPDATE_FINISH,
                          .u_state = TRD_JOB_SUCCEEDED,
                          .u_at_ms = 7000,
                          .u_stdout_bytes = 100,
                          .u_stderr_bytes = 7,
                          .u_truncated = true};
    assert_int_equal(update_wait(s, &fin, NULL, 0), TR_OK);
    assert_int_equal(trd_store_get(s, id, &rec), TR_OK);
    assert_int_equal(rec.j_state, TRD_JOB_SUCCEEDED);
    assert_int_equal(rec.j_ended_ms, 7000);
    assert_int_equal(rec.j_stdout_bytes, 100);
    assert_int_equal(rec.j_stderr_bytes, 7);
    assert_true(rec.j_truncated);
    assert_string_equal(rec.j_error, "");
    trd_job_rec_fini(&rec);

    // The one final record: a second one is refused and changes nothing,
    // as are a retry and a start of a finished job.
    trd_job_update fin2 = {.u_id = id,
                           .u_kind = TRD_UPDATE_FINISH,
                           .u_state = TRD_JOB_FAILED,
                           .u_exit_code = 1,
                           .u_error = "late"};
    assert_int_equal(update_wait(s, &fin2, detail, sizeof detail), TR_EINVAL);
    assert_non_null(strstr(detail, "final"));
    assert_int_equal(update_wait(s, &retry, NULL, 0), TR_EINVAL);
    assert_int_equal(update_wait(s, &start, NULL, 0), TR_EINVAL);
    assert_int_equal(trd_store_get(s, id, &rec), TR_OK);
    assert_int_equal(rec.j_state, TRD_JOB_SUCCEEDED);
    assert_int_equal(rec.j_exit_code, 0);
    assert_string_equal(rec.j_error, "");
    trd_job_rec_fini(&rec);

    // A queued job may end without running (cancelled, skipped); a
    // "final" state that is not final is refused; no such job.
    trd_job_update cancel = {
        .u_id = id + 1, .u_kind = TRD_UPDATE_FINISH, .u_state = TRD_JOB_RUNNING};
    assert_int_equal(update_wait(s, &cancel, NULL, 0), TR_EINVAL);
    cancel.u_state = TRD_JOB_CANCELLED;
    assert_int_equal(update_wait(s, &cancel, NULL, 0), TR_OK);
    assert_int_equal(state_of(s, id + 1), TRD_JOB_CANCELLED);
    cancel.u_id = 424242;
    assert_int_equal(update_wait(s, &cancel, NULL, 0), TR_ENOTFOUND);

    // Still final after a restart.
    trd_store_close(s);
    s = f.f_s = store_open(f.f_tmp.db);
    assert_int_equal(update_wait(s, &fin2, NULL, 0), TR_EINVAL);
    assert_int_equal(state_of(s, id), TRD_JOB_SUCCEEDED);
    fx_close(&f);
}

static void
list_all(trd_store *s, trd_list_query q, ids *out, unsigned *pages)
{
    memset(out, 0, sizeof *out);
    *pages = 0;
    for (;;) {
        uint64_t next = 0;
        assert_int_equal(trd_store_list(s, &q, ids_add, out, &next), TR_OK);
        (*pages)++;
        assert_true(*pages < 100);
        if (next == 0) {
            return;
        }
        q.q_after_id = next;
    }
}

static void
test_store_list_filters_and_paging(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    trd_store *s = f.f_s;
    trd_submit_result ra = submit_jobs(s, "a", 5, "a", "g1", "prod");
    trd_submit_result rb = submit_jobs(s, "b", 5, "b", "g2", "dev");
    // a-1 and b-2 run; b-4 is cancelled.
    trd_job_update u = {.u_kind = TRD_UPDATE_START, .u_attempt = 1};
    u.u_id = ra.r_first_id + 1;
    assert_int_equal(update_wait(s, &u, NULL, 0), TR_OK);
    u.u_id = rb.r_first_id + 2;
    assert_int_equal(update_wait(s, &u, NULL, 0), TR_OK);
    trd_job_update c = {
        .u_id = rb.r_first_id + 4, .u_kind = TRD_UPDATE_FINISH, .u_state = TRD_JOB_CANCELLED};
    assert_int_equal(update_wait(s, &c, NULL, 0), TR_OK);

    ids v;
    unsigned pages;
    list_all(s, (trd_list_query){.q_limit = 3}, &v, &pages);
    assert_int_equal(v.i_n, 10);
    assert_int_equal(pages, 4);
    for (size_t i = 0; i < 10; i++) {
        assert_int_equal(v.i_id[i], ra.r_first_id + i);
    }
    // Exactly a page's worth: no cursor to an empty page.
    list_all(s, (trd_list_query){.q_limit = 5}, &v, &pages);
    assert_int_equal(v.i_n, 10);
    assert_int_equal(pages, 2);

    list_all(s, (trd_list_query){.q_group = "g1"}, &v, &pages);
    assert_int_equal(v.i_n, 5);
    assert_int_equal(v.i_id[0], ra.r_first_id);
    list_all(s, (trd_list_query){.q_label_key = "env", .q_label_value = "dev", .q_limit = 2}, &v,
             &pages);
    assert_int_equal(v.i_n, 5);
    assert_int_equal(pages, 3);
    assert_int_equal(v.i_id[0], rb.r_first_id);
    assert_int_equal(v.i_id[4], rb.r_first_id + 4);
    list_all(s, (trd_list_query){.q_name_prefix = "b-"}, &v, &pages);
    assert_int_equal(v.i_n, 5);
    assert_int_equal(v.i_id[0], rb.r_first_id);
    list_all(s, (trd_list_query){.q_name_prefix = "a-3"}, &v, &pages);
    assert_int_equal(v.i_n, 1);
    assert_int_equal(v.i_id[0], ra.r_first_id + 3);
    list_all(s, (trd_list_query){.q_states = 1u << TRD_JOB_RUNNING}, &v, &pages);
    assert_int_equal(v.i_n, 2);
    assert_int_equal(v.i_id[0], ra.r_first_id + 1);
    assert_int_equal(v.i_id[1], rb.r_first_id + 2);
    list_all(s, (trd_list_query){.q_states = 1u << TRD_JOB_CANCELLED}, &v, &pages);
    assert_int_equal(v.i_n, 1);
    assert_int_equal(v.i_id[0], rb.r_first_id + 4);
    // Filters combine.
    list_all(s,
             (trd_list_query){.q_group = "g2",
                              .q_states = (1u << TRD_JOB_QUEUED) | (1u << TRD_JOB_RUNNING)},
             &v, &pages);
    assert_int_equal(v.i_n, 4);
    list_all(s, (trd_list_query){.q_group = "g2", .q_label_key = "env", .q_label_value = "prod"},
             &v, &pages);
    assert_int_equal(v.i_n, 0);
    list_all(s, (trd_list_query){.q_group = "nope"}, &v, &pages);
    assert_int_equal(v.i_n, 0);
    // The cursor starts after the given id.
    list_all(s, (trd_list_query){.q_after_id = rb.r_first_id + 3}, &v, &pages);
    assert_int_equal(v.i_n, 1);
    fx_close(&f);
}

static void
test_store_load_unfinished_is_queued_and_running(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    trd_store *s = f.f_s;
    uint64_t id0 = submit_jobs(s, "r", 6, "r", "", NULL).r_first_id;
    for (uint64_t i = 0; i < 3; i++) {
        trd_job_update u = {.u_id = id0 + i, .u_kind = TRD_UPDATE_START, .u_attempt = 1};
        assert_int_equal(update_wait(s, &u, NULL, 0), TR_OK);
    }
    trd_job_update done = {.u_id = id0 + 2, .u_kind = TRD_UPDATE_FINISH, .u_state = TRD_JOB_FAILED};
    assert_int_equal(update_wait(s, &done, NULL, 0), TR_OK);
    done.u_id = id0 + 3;
    done.u_state = TRD_JOB_SKIPPED;
    assert_int_equal(update_wait(s, &done, NULL, 0), TR_OK);
    trd_store_close(s);

    s = f.f_s = store_open(f.f_tmp.db);
    ids v = {0};
    assert_int_equal(trd_store_load_unfinished(s, ids_add, &v), TR_OK);
    assert_int_equal(v.i_n, 4);
    uint64_t want[] = {id0, id0 + 1, id0 + 4, id0 + 5};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(v.i_id[i], want[i]);
    }
    fx_close(&f);
}

// What a schema-1 trouped created, frozen here as it shipped (never edit
// it to follow store.c): the migration test's starting point.
static const char v1_schema[] =
    "CREATE TABLE schema_migrations(version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
    "  applied_ms INTEGER NOT NULL);"
    "CREATE TABLE requests(request_id TEXT PRIMARY KEY NOT NULL, first_job INTEGER NOT NULL,"
    "  job_count INTEGER NOT NULL, created_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE jobs(id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL,"
    "  name TEXT NOT NULL, grp TEXT NOT NULL, priority INTEGER NOT NULL,"
    "  state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 6), attempt INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL DEFAULT 0,"
    "  ended_ms INTEGER NOT NULL DEFAULT 0, next_run_ms INTEGER NOT NULL DEFAULT 0,"
    "  exit_code INTEGER NOT NULL DEFAULT 0, signal INTEGER NOT NULL DEFAULT 0,"
    "  error TEXT NOT NULL DEFAULT '', leader_pid INTEGER NOT NULL DEFAULT 0,"
    "  leader_start INTEGER NOT NULL DEFAULT 0, stdout_bytes INTEGER NOT NULL DEFAULT 0,"
    "  stderr_bytes INTEGER NOT NULL DEFAULT 0, truncated INTEGER NOT NULL DEFAULT 0,"
    "  spec BLOB NOT NULL);"
    "CREATE INDEX jobs_unfinished ON jobs(id) WHERE state < 2;"
    "CREATE INDEX jobs_group ON jobs(grp, id);"
    "CREATE INDEX jobs_created ON jobs(created_ms);"
    "CREATE TABLE job_labels(job INTEGER NOT NULL REFERENCES jobs(id), key TEXT NOT NULL,"
    "  value TEXT NOT NULL, PRIMARY KEY (job, key, value)) WITHOUT ROWID;"
    "CREATE INDEX job_labels_kv ON job_labels(key, value, job);"
    "CREATE TABLE deps(job INTEGER NOT NULL REFERENCES jobs(id),"
    "  after_job INTEGER NOT NULL REFERENCES jobs(id), PRIMARY KEY (job, after_job)) WITHOUT ROWID;"
    "CREATE INDEX deps_after ON deps(after_job);"
    "INSERT INTO schema_migrations VALUES (1, 'v1', 1);"
    "PRAGMA user_version = 1;";

// v1_make writes a schema-1 database at path, in WAL mode as a v1 trouped
// left it, holding request "old" with two jobs: 1 (succeeded) and 2
// (queued after 1, in group "g", with a label).
static void
v1_make(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, v1_schema, NULL, NULL, &msg);
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(
            db,
            "PRAGMA journal_mode = WAL; BEGIN;"
            "INSERT INTO requests VALUES ('old', 1, 2, 1000);"
            "INSERT INTO jobs(id, request_id, name, grp, priority, state, created_ms, ended_ms,"
            "  spec) VALUES (1, 'old', 'old-0', '', 0, 2, 1000, 2000, x'');"
            "INSERT INTO jobs(id, request_id, name, grp, priority, state, created_ms, spec)"
            "  VALUES (2, 'old', 'old-1', 'g', 3, 0, 1000, x'');"
            "INSERT INTO job_labels VALUES (2, 'env', 'prod');"
            "INSERT INTO deps VALUES (2, 1);"
            "COMMIT;",
            NULL, NULL, &msg);
    }
    if (rc != SQLITE_OK) {
        fail_msg("v1_make: %s", msg);
    }
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

// sql_int runs a query that returns one integer on its own connection.
static int64_t
sql_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return v;
}

static void
test_store_migrates_v1_to_v2(void **state)
{
    (void)state;
    tmp t;
    tmp_make(&t);
    v1_make(t.db);
    trd_store *s = store_open(t.db);
    // The v1 jobs are there, as they were.
    trd_job_rec rec;
    assert_int_equal(trd_store_get(s, 2, &rec), TR_OK);
    assert_string_equal(rec.j_name, "old-1");
    assert_string_equal(rec.j_group, "g");
    assert_int_equal(rec.j_priority, 3);
    assert_int_equal(rec.j_state, TRD_JOB_QUEUED);
    trd_job_rec_fini(&rec);
    assert_int_equal(state_of(s, 1), TRD_JOB_SUCCEEDED);
    ids v = {0};
    assert_int_equal(trd_store_load_unfinished(s, ids_add, &v), TR_OK);
    assert_int_equal(v.i_n, 1);
    assert_int_equal(v.i_id[0], 2);
    unsigned pages;
    list_all(s, (trd_list_query){.q_label_key = "env", .q_label_value = "prod"}, &v, &pages);
    assert_int_equal(v.i_n, 1);
    // Its request id is still answered with its first reply, and new jobs
    // take ids after the old ones.
    batch b = batch_make(1, "new", "", NULL, false, 0);
    trd_submit_result r;
    assert_int_equal(submit_wait(s, "old", &b, &r), TR_OK);
    assert_true(r.r_repeated);
    assert_int_equal(r.r_first_id, 1);
    assert_int_equal(r.r_count, 2);
    assert_int_equal(submit_wait(s, "new", &b, &r), TR_OK);
    assert_int_equal(r.r_first_id, 3);
    // The unfinished count took the v1 file's queued job.
    assert_int_equal(unfinished_of(s), 2);
    trd_store_close(s);
    batch_free(&b);

    assert_int_equal(sql_int(t.db, "PRAGMA user_version"), 2);
    assert_int_equal(sql_int(t.db, "SELECT count(*) FROM schema_migrations WHERE version = 2"), 1);
    assert_int_equal(sql_int(t.db, "SELECT count(*) FROM groups"), 0);
    // Opened again: nothing left to migrate, and the groups table works.
    s = store_open(t.db);
    groups_text g;
    assert_string_equal(groups_of(s, &g), "");
    assert_int_equal(set_group_wait(s, "g", true, 2, true), TR_OK);
    assert_string_equal(groups_of(s, &g), "g:1/2 ");
    trd_store_close(s);
    assert_int_equal(sql_int(t.db, "SELECT count(*) FROM schema_migrations"), 2);
    tmp_remove(&t);
}

static void
test_store_groups_from_submit_and_set_group(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    trd_store *s = f.f_s;
    groups_text g;
    assert_string_equal(groups_of(s, &g), "");

    // A Submit stores its groups' limits.
    const char *names[] = {"a", "b", ""};
    const uint32_t par[] = {1, 0, 4};
    batch b = batch_groups(batch_make(2, "j", "a", NULL, false, 0), 3, names, par);
    assert_int_equal(submit_wait(s, "g1", &b, NULL), TR_OK);
    assert_string_equal(groups_of(s, &g), ":0/4 a:0/1 b:0/0 ");

    // Pausing keeps the limit; a new group gets the default limit.
    assert_int_equal(set_group_wait(s, "a", true, 99, false), TR_OK);
    assert_int_equal(set_group_wait(s, "c", true, 0, false), TR_OK);
    assert_string_equal(groups_of(s, &g), ":0/4 a:1/1 b:0/0 c:1/0 ");
    // Setting both.
    assert_int_equal(set_group_wait(s, "b", true, 7, true), TR_OK);
    assert_int_equal(set_group_wait(s, "c", false, 2, true), TR_OK);
    assert_string_equal(groups_of(s, &g), ":0/4 a:1/1 b:1/7 c:0/2 ");

    // A later Submit changes a limit and keeps the paused flag.
    const char *a[] = {"a"};
    const uint32_t three[] = {3};
    batch b2 = batch_groups(batch_make(1, "k", "a", NULL, false, 0), 1, a, three);
    assert_int_equal(submit_wait(s, "g2", &b2, NULL), TR_OK);
    assert_string_equal(groups_of(s, &g), ":0/4 a:1/3 b:1/7 c:0/2 ");

    // A repeated request id stores nothing again (its groups were stored
    // with it), and a Submit that fails stores none of its groups.
    assert_int_equal(set_group_wait(s, "a", true, 5, true), TR_OK);
    assert_int_equal(submit_wait(s, "g2", &b2, NULL), TR_OK);
    const char *d[] = {"d", "a"};
    const uint32_t dpar[] = {1, 8};
    // It fails after its groups went in, and they are rolled back with it.
    batch bad =
        batch_unknown_after(batch_groups(batch_make(1, "x", "d", NULL, false, 0), 2, d, dpar));
    assert_int_equal(submit_wait(s, "bad", &bad, NULL), TR_ENOTFOUND);
    assert_string_equal(groups_of(s, &g), ":0/4 a:1/5 b:1/7 c:0/2 ");

    // All of it outlives a restart.
    trd_store_close(s);
    s = f.f_s = store_open(f.f_tmp.db);
    assert_string_equal(groups_of(s, &g), ":0/4 a:1/5 b:1/7 c:0/2 ");
    batch_free(&b);
    batch_free(&b2);
    batch_free(&bad);
    fx_close(&f);
}

static void
test_store_cap_on_unfinished_jobs(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    trd_store *s = f.f_s;
    assert_int_equal(unfinished_of(s), 0);
    trd_store_set_max_unfinished(s, 5);
    trd_submit_result r1 = submit_jobs(s, "r1", 3, "a", "", NULL);
    submit_jobs(s, "r2", 2, "b", "", NULL); // exactly up to the cap
    assert_int_equal(unfinished_of(s), 5);

    // Full: the next Submit inserts nothing and says why, precisely.
    batch one = batch_make(1, "c", "", NULL, false, 0);
    batch two = batch_make(2, "d", "", NULL, false, 0);
    waiter w[3];
    tu_event_init(&w[0].w_ev);
    trd_store_submit(s, "r3", one.b_buf, one.b_len, waiter_done, &w[0]);
    waiter_wait(&w[0]);
    assert_int_equal(w[0].w_err, TR_ENOSPC);
    print_message("full: %s\n", w[0].w_detail);
    assert_string_equal(w[0].w_detail, "too many unfinished jobs: 5 queued or running, "
                                       "this batch has 1, the cap is 5");
    trd_job_rec rec;
    assert_int_equal(trd_store_get(s, r1.r_first_id + 5, &rec), TR_ENOTFOUND);
    // A repeated request id is answered with its first reply even so.
    trd_submit_result again;
    assert_int_equal(submit_wait(s, "r1", &one, &again), TR_OK);
    assert_true(again.r_repeated);
    assert_int_equal(again.r_first_id, r1.r_first_id);
    assert_int_equal(again.r_count, 3);

    // Running jobs count; a finished one frees its room.
    trd_job_update start = {.u_id = r1.r_first_id, .u_kind = TRD_UPDATE_START, .u_attempt = 1};
    assert_int_equal(update_wait(s, &start, NULL, 0), TR_OK);
    assert_int_equal(unfinished_of(s), 5);
    assert_int_equal(finish_wait(s, r1.r_first_id), TR_OK);
    assert_int_equal(finish_wait(s, r1.r_first_id + 1), TR_OK);
    assert_int_equal(unfinished_of(s), 3);
    // A refused final record frees nothing.
    assert_int_equal(finish_wait(s, r1.r_first_id), TR_EINVAL);
    assert_int_equal(unfinished_of(s), 3);

    // In one batch: a Submit that fails on its own (an after_id that is
    // not stored) takes no room, and of two that each fit alone only the
    // first goes in.
    batch bad = batch_unknown_after(batch_make(1, "x", "", NULL, false, 0));
    gate g;
    gate_hold(s, &g, 0);
    for (int i = 0; i < 3; i++) {
        tu_event_init(&w[i].w_ev);
    }
    trd_store_submit(s, "bad", bad.b_buf, bad.b_len, waiter_done, &w[0]);
    trd_store_submit(s, "r4", two.b_buf, two.b_len, waiter_done, &w[1]);
    trd_store_submit(s, "r5", two.b_buf, two.b_len, waiter_done, &w[2]);
    gate_open(&g, w, 3);
    assert_int_equal(w[0].w_err, TR_ENOTFOUND);
    assert_int_equal(w[1].w_err, TR_OK);
    assert_int_equal(w[2].w_err, TR_ENOSPC);
    assert_string_equal(w[2].w_detail, "too many unfinished jobs: 5 queued or running, "
                                       "this batch has 2, the cap is 5");
    assert_int_equal(w[1].w_res.r_commit, w[2].w_res.r_commit);
    assert_int_equal(unfinished_of(s), 5);

    // The count is the same after a restart (the cap is the daemon's to
    // set again), and 0 means no cap.
    trd_store_close(s);
    s = f.f_s = store_open(f.f_tmp.db);
    assert_int_equal(unfinished_of(s), 5);
    trd_store_set_max_unfinished(s, 6);
    submit_jobs(s, "r6", 1, "e", "", NULL);
    tu_event_init(&w[0].w_ev);
    trd_store_submit(s, "r7", one.b_buf, one.b_len, waiter_done, &w[0]);
    waiter_wait(&w[0]);
    assert_int_equal(w[0].w_err, TR_ENOSPC);
    assert_non_null(strstr(w[0].w_detail, "6 queued or running"));
    trd_store_set_max_unfinished(s, 0);
    submit_jobs(s, "r7", 1, "e", "", NULL);
    assert_int_equal(unfinished_of(s), 7);
    batch_free(&one);
    batch_free(&two);
    batch_free(&bad);
    fx_close(&f);
}

// A batch that the disk-full path rolls back, a Submit and a FINISH in
// it, moves the count neither way.
static void
test_store_cap_count_unchanged_by_rolled_back_batch(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    trd_store *s = f.f_s;
    uint64_t id = submit_jobs(s, "small", 2, "s", "", NULL).r_first_id;
    waiter w[2];
    tu_event_init(&w[0].w_ev);
    trd_store_set_max_size(s, 96 * 1024, waiter_done, &w[0]);
    waiter_wait(&w[0]);
    assert_int_equal(w[0].w_err, TR_OK);
    batch big = batch_make(8, "big", "", NULL, false, 8192);
    tr_err e = TR_OK;
    char rid[32];
    for (int i = 0; i < 50 && e == TR_OK; i++) {
        snprintf(rid, sizeof rid, "big-%d", i);
        e = submit_wait(s, rid, &big, NULL);
    }
    assert_int_equal(e, TR_ENOSPC);
    uint64_t before = unfinished_of(s);
    assert_true(before >= 2);

    // The same Submit again, now with a FINISH before it in its batch.
    gate g;
    gate_hold(s, &g, 96 * 1024);
    trd_job_update fin = {.u_id = id, .u_kind = TRD_UPDATE_FINISH, .u_state = TRD_JOB_CANCELLED};
    tu_event_init(&w[0].w_ev);
    tu_event_init(&w[1].w_ev);
    trd_store_update(s, &fin, waiter_done, &w[0]);
    trd_store_submit(s, rid, big.b_buf, big.b_len, waiter_done, &w[1]);
    gate_open(&g, w, 2);
    print_message("rolled back: %s\n", w[1].w_detail);
    assert_int_equal(w[0].w_err, TR_ENOSPC);
    assert_int_equal(w[1].w_err, TR_ENOSPC);
    assert_non_null(strstr(w[1].w_detail, "rolled back"));
    assert_int_equal(unfinished_of(s), before);
    assert_int_equal(state_of(s, id), TRD_JOB_QUEUED);

    // With room again both commit, and the count follows.
    tu_event_init(&w[0].w_ev);
    trd_store_set_max_size(s, 0, waiter_done, &w[0]);
    waiter_wait(&w[0]);
    assert_int_equal(update_wait(s, &fin, NULL, 0), TR_OK);
    assert_int_equal(submit_wait(s, rid, &big, NULL), TR_OK);
    assert_int_equal(unfinished_of(s), before - 1 + 8);
    trd_store_close(s);
    s = f.f_s = store_open(f.f_tmp.db);
    assert_int_equal(unfinished_of(s), before - 1 + 8);
    batch_free(&big);
    fx_close(&f);
}

static void
test_store_corrupt_file_is_eio_and_untouched(void **state)
{
    (void)state;
    tmp t;
    tmp_make(&t);
    uint8_t junk[8192];
    for (size_t i = 0; i < sizeof junk; i++) {
        junk[i] = (uint8_t)("not a database, just bytes "[i % 27] ^ (i >> 8));
    }
    int fd = open(t.db, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    trd_store *s = (trd_store *)&s;
    char err[256];
    assert_int_equal(trd_store_open(t.db, TRD_DURABLE_FULL, &s, err, sizeof err), TR_EIO);
    assert_null(s);
    print_message("corrupt: %s\n", err);
    assert_non_null(strstr(err, "not a SQLite database"));
    assert_file_is(t.db, junk, sizeof junk);
    tmp_remove(&t);
}

static void
test_store_newer_schema_is_enotsup_and_untouched(void **state)
{
    (void)state;
    tmp t;
    tmp_make(&t);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(t.db, &db), SQLITE_OK);
    // One past this build's schema: the first version it does not know.
    char sql[80], want[80];
    snprintf(sql, sizeof sql, "CREATE TABLE jobs(x); PRAGMA user_version = %d",
             TRD_STORE_SCHEMA + 1);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    size_t len = 0;
    uint8_t *before = file_read(t.db, &len);
    trd_store *s = NULL;
    char err[256];
    assert_int_equal(trd_store_open(t.db, TRD_DURABLE_FULL, &s, err, sizeof err), TR_ENOTSUP);
    assert_null(s);
    print_message("newer: %s\n", err);
    snprintf(want, sizeof want, "database schema %d is newer than this trouped's %d",
             TRD_STORE_SCHEMA + 1, TRD_STORE_SCHEMA);
    assert_non_null(strstr(err, want));
    assert_file_is(t.db, before, len);
    free(before);

    // A SQLite file of someone else's (version 0, tables): refused too.
    assert_int_equal(sqlite3_open(t.db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 0", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    before = file_read(t.db, &len);
    assert_int_equal(trd_store_open(t.db, TRD_DURABLE_FULL, &s, err, sizeof err), TR_EINVAL);
    assert_non_null(strstr(err, "not trouped's"));
    assert_file_is(t.db, before, len);
    free(before);
    tmp_remove(&t);
}

static void
test_store_locked_is_ebusy_in_bounded_time(void **state)
{
    (void)state;
    tmp t;
    tmp_make(&t);
    trd_store_close(store_open(t.db)); // a store of ours, in WAL mode
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(t.db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    trd_store *s = NULL;
    char err[256];
    uint64_t t0 = tu_now_ns();
    assert_int_equal(trd_store_open(t.db, TRD_DURABLE_FULL, &s, err, sizeof err), TR_EBUSY);
    uint64_t ms = (tu_now_ns() - t0) / 1000000u;
    print_message("locked: %s (after %llu ms)\n", err, (unsigned long long)ms);
    assert_null(s);
    assert_non_null(strstr(err, "locked"));
    assert_true(ms >= TRD_STORE_BUSY_MS / 2);
    assert_true(ms < TRD_STORE_BUSY_MS + 5000);
    assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    trd_store_close(store_open(t.db));
    tmp_remove(&t);
}

static void
test_store_kill9_keeps_acknowledged_submit(void **state)
{
    (void)state;
    tmp t;
    tmp_make(&t);
    child c = child_spawn("child-submit", t.db);
    char line[128];
    child_line(&c, line, sizeof line);
    unsigned long long first = 0, count = 0;
    assert_int_equal(sscanf(line, "ids %llu %llu", &first, &count), 2);
    assert_int_equal(count, 3);
    assert_int_equal(kill(c.c_pid, SIGKILL), 0);
    int status = child_wait(&c);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    trd_store *s = store_open(t.db);
    ids v = {0};
    assert_int_equal(trd_store_load_unfinished(s, ids_add, &v), TR_OK);
    assert_int_equal(v.i_n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(v.i_id[i], first + i);
    }
    // The client re-sends the Submit it got no reply for: one job, not two.
    batch b = batch_make(3, "crash", "", NULL, true, 0);
    trd_submit_result r;
    assert_int_equal(submit_wait(s, "crash-1", &b, &r), TR_OK);
    assert_true(r.r_repeated);
    assert_int_equal(r.r_first_id, first);
    assert_int_equal(r.r_count, 3);
    trd_store_close(s);
    batch_free(&b);
    tmp_remove(&t);
}

static void
test_store_disk_full_fails_batch_then_recovers(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    trd_store *s = f.f_s;
    batch small = batch_make(1, "s", "", NULL, false, 0);
    assert_int_equal(submit_wait(s, "before", &small, NULL), TR_OK);
    waiter w;
    tu_event_init(&w.w_ev);
    trd_store_set_max_size(s, 96 * 1024, waiter_done, &w);
    waiter_wait(&w);
    assert_int_equal(w.w_err, TR_OK);

    // 8 jobs of 8 KiB each a batch: the cap is reached within a few.
    batch big = batch_make(8, "big", "", NULL, false, 8192);
    tr_err e = TR_OK;
    char rid[32];
    int i;
    for (i = 0; i < 50 && e == TR_OK; i++) {
        snprintf(rid, sizeof rid, "big-%d", i);
        tu_event_init(&w.w_ev);
        trd_store_submit(s, rid, big.b_buf, big.b_len, waiter_done, &w);
        waiter_wait(&w);
        e = w.w_err;
    }
    print_message("full after %d batches: %s: %s\n", i, tr_err_name(e), w.w_detail);
    assert_int_equal(e, TR_ENOSPC);
    trd_store_counters st;
    trd_store_stats(s, &st);
    assert_true(st.st_failed >= 1);

    // Still running: reads work, and once there is room the same request
    // (rolled back, so not stored) goes in as new.
    assert_int_equal(state_of(s, 1), TRD_JOB_QUEUED);
    tu_event_init(&w.w_ev);
    trd_store_set_max_size(s, 0, waiter_done, &w);
    waiter_wait(&w);
    assert_int_equal(w.w_err, TR_OK);
    trd_submit_result r;
    assert_int_equal(submit_wait(s, rid, &big, &r), TR_OK);
    assert_false(r.r_repeated);
    assert_int_equal(r.r_count, 8);
    batch_free(&small);
    batch_free(&big);
    fx_close(&f);
}

static void
test_state_lock_second_process_is_ebusy(void **state)
{
    (void)state;
    tmp t;
    tmp_make(&t);
    char dir[128];
    snprintf(dir, sizeof dir, "%s/state", t.dir);
    child c = child_spawn("child-lock", dir);
    char line[64];
    child_line(&c, line, sizeof line);
    assert_string_equal(line, "locked");

    struct stat sb;
    assert_int_equal(stat(dir, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    int fd = -1;
    char err[512];
    assert_int_equal(trd_state_lock(dir, &fd, err, sizeof err), TR_EBUSY);
    assert_int_equal(fd, -1);
    print_message("second lock: %s\n", err);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %d ", (int)c.c_pid);
    assert_non_null(strstr(err, pid));

    // The holder goes: the lock is free (the kernel drops it), and ours
    // now, with our pid in the file.
    close(c.c_in);
    c.c_in = open("/dev/null", O_RDONLY);
    int status = child_wait(&c);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(trd_state_lock(dir, &fd, err, sizeof err), TR_OK);
    assert_true(fd >= 0);
    assert_true((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    char path[160];
    snprintf(path, sizeof path, "%s/lock", dir);
    size_t len = 0;
    uint8_t *text = file_read(path, &len);
    char want[32];
    snprintf(want, sizeof want, "%d\n", (int)getpid());
    assert_int_equal(len, strlen(want));
    assert_memory_equal(text, want, len);
    free(text);
    close(fd);
    tmp_remove(&t);
}

// ---------------------------------------------------------------------------
// Child modes.

static void
child_submit_done(void *arg, tr_err err, const trd_submit_result *r)
{
    (void)arg;
    if (err != TR_OK) {
        _exit(3);
    }
    char line[64];
    int n =
        snprintf(line, sizeof line, "ids %llu %u\n", (unsigned long long)r->r_first_id, r->r_count);
    if (write(1, line, (size_t)n) != n) {
        _exit(4);
    }
}

// child-submit DB: submits 3 jobs as request "crash-1", reports their ids
// once acknowledged, and waits to be killed.
static int
child_submit(const char *db)
{
    trd_store *s = NULL;
    char err[256];
    if (trd_store_open(db, TRD_DURABLE_FULL, &s, err, sizeof err) != TR_OK) {
        fprintf(stderr, "child: %s\n", err);
        return 2;
    }
    batch b = batch_make(3, "crash", "", NULL, true, 0);
    trd_store_submit(s, "crash-1", b.b_buf, b.b_len, child_submit_done, NULL);
    for (;;) {
        pause();
    }
}

// child-lock DIR: takes the state lock, says so, and holds it until its
// stdin closes.
static int
child_lock(const char *dir)
{
    int fd = -1;
    char err[512];
    if (trd_state_lock(dir, &fd, err, sizeof err) != TR_OK) {
        fprintf(stderr, "child: %s\n", err);
        return 2;
    }
    if (write(1, "locked\n", 7) != 7) {
        return 4;
    }
    char c;
    while (read(0, &c, 1) > 0) {
    }
    close(fd);
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "child-submit") == 0) {
        return child_submit(argv[2]);
    }
    if (argc == 3 && strcmp(argv[1], "child-lock") == 0) {
        return child_lock(argv[2]);
    }
    // A child killed or gone must not kill the parent through its pipe.
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_reopen_keeps_data),
        cmocka_unit_test(test_store_submit_ids_and_repeated_request),
        cmocka_unit_test(test_store_submit_bad_batch_alone_fails),
        cmocka_unit_test(test_store_group_commit_from_4_threads),
        cmocka_unit_test(test_store_update_transitions_and_one_final),
        cmocka_unit_test(test_store_list_filters_and_paging),
        cmocka_unit_test(test_store_load_unfinished_is_queued_and_running),
        cmocka_unit_test(test_store_migrates_v1_to_v2),
        cmocka_unit_test(test_store_groups_from_submit_and_set_group),
        cmocka_unit_test(test_store_cap_on_unfinished_jobs),
        cmocka_unit_test(test_store_cap_count_unchanged_by_rolled_back_batch),
        cmocka_unit_test(test_store_corrupt_file_is_eio_and_untouched),
        cmocka_unit_test(test_store_newer_schema_is_enotsup_and_untouched),
        cmocka_unit_test(test_store_locked_is_ebusy_in_bounded_time),
        cmocka_unit_test(test_store_kill9_keeps_acknowledged_submit),
        cmocka_unit_test(test_store_disk_full_fails_batch_then_recovers),
        cmocka_unit_test(test_state_lock_second_process_is_ebusy),
    };
    return tu_run(tests);
}
